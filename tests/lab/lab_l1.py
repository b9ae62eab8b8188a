"""Boots the lab's L1 VM once, feeds it a plan and collects its results.

Safety nets (a TCG L1 can freeze without a word, see shared/FACTS.md):
  * `timeout -s KILL` around QEMU, sized from the plan;
  * QEMU writes a pidfile; every exit path (normal, exception, atexit,
    SIGINT/SIGTERM/SIGHUP) kills the process group and the pidfile's PID;
  * a stall watchdog: L1 prints LAB-HB every 3 s; no serial output for
    STALL_S seconds (or no init within BOOT_S) means L1 hung: its vCPU state
    is dumped through the HMP monitor into the log, then it is killed.
"""

import atexit
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BOOT_S = 120  # QEMU start to "LAB-L1 event=init" (about 5 s normally)
STALL_S = 25  # silence after init that counts as an L1 freeze (heartbeat is 3 s)

_live = {}  # pid of the process group leader -> pidfile, for cleanup


def _kill_all():
    for pgid, pidfile in list(_live.items()):
        kill_l1(pgid, pidfile)


def _on_signal(signum, _frame):
    _kill_all()
    raise SystemExit(128 + signum)


atexit.register(_kill_all)
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


def kill_l1(pgid, pidfile):
    """Kill the `timeout` group and the QEMU named by the pidfile (if it is still ours)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        pid = int(Path(pidfile).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if str(pidfile).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    _live.pop(pgid, None)


@dataclass
class RunSpec:
    """One L2 boot request: run by run.sh's lab_run inside L1."""

    name: str
    vmm: str  # "hull" or "qemu"
    mem_mib: int
    vcpus: int
    cmdline: str
    timeout_s: int
    attempts: int
    kind: str = "boot"  # boot: lab_run; health: lab_health (vsock); ctr: lab_ctr (containerd); pod: lab_pod (CRI);
    # quickstart: lab_quickstart (the README's Kubernetes quick start: hull install, CRI pod, hull uninstall)
    options: str = ""  # pod: the CRI client's options (--full, --bench N)


# run.sh function per RunSpec.kind
PLAN_FUNCTIONS = {"boot": "lab_run", "health": "lab_health", "ctr": "lab_ctr", "suite": "lab_suite", "pod": "lab_pod",
                  "quickstart": "lab_quickstart"}  # fmt: skip
# A suite run's timeout_s bounds each of its test executables; the run as a whole (boot, 4
# executables, fsbench, power-off) gets this many times that in L1's budget.
SUITE_BUDGET_FACTOR = 5
# A pod (or quickstart) run's attempt also starts containerd and imports two images first (not in
# its timeout); a quickstart attempt also runs hull install, hull check and hull uninstall.
POD_SETUP_S = 40
SETUP_KINDS = ("pod", "quickstart")


@dataclass
class RunResult:
    """One attempt of a RunSpec, parsed from a LAB-RESULT line."""

    name: str
    attempt: int
    vmm: str
    status: str  # ok | fail | hang
    rc: int
    wall_ms: float
    agent_ms: float
    boot_ms: float
    kmsg_s: float  # guest kernel time stamp of its last console message
    rss_kib: int
    agent: str
    kind: str = "boot"
    detail: str = ""  # health: hull's answer; ctr: the container's output (';'-joined lines)
    fields: dict = field(default_factory=dict)  # every key=value of the LAB-RESULT line
    tail: list = field(default_factory=list)


@dataclass
class L1Outcome:
    """What one L1 boot produced."""

    status: str  # done | hang (L1 froze or never reached init) | error
    detail: str
    kernel_release: str = ""
    kvm: str = ""
    init_s: float = -1  # host wall time from QEMU start to L1 init
    results: list = field(default_factory=list)
    log: Path = None


# `hull bench` in the ctr step (issue 15): start, stages, exec, work and 1 + 5 idle pods, hull and runc.
HULL_BENCH_BUDGET_S = 1500
# The soak in the ctr step (issue 14): per cycle (one `ctr run --rm ... true` under TCG) and for
# the four faults with their settling waits.
SOAK_CYCLE_BUDGET_S = 45
SOAK_FAULTS_BUDGET_S = 900


def soak_budget_s(cycles):
    """Seconds the soak adds to L1's hard timeout (0 without one)."""
    return cycles * SOAK_CYCLE_BUDGET_S + SOAK_FAULTS_BUDGET_S if cycles else 0


def plan_script(runs, kvm_amd_options, pin_cpu=None, show_lines=0, health_peer=False, ctr_bench=0,
                fsbench_args="", hull_bench=0, soak=0, hull_bench_groups="", hull_config=(),
                hull_bench_pods=""):  # fmt: skip
    """The plan run.sh sources: load KVM, then one lab_run (lab_health, lab_ctr, lab_suite) line per RunSpec."""
    lines = ["# written by tests/lab/lab.py", f"lab_kvm {shlex.quote(kvm_amd_options)}"]
    if fsbench_args:
        lines.append(f"LAB_FSBENCH_ARGS={shlex.quote(fsbench_args)}")
    if health_peer:
        lines.append("LAB_HEALTH_PEER=1")
    if ctr_bench:
        lines.append(f"LAB_CTR_BENCH={int(ctr_bench)}")
    if hull_bench:
        lines.append(f"LAB_HULL_BENCH={int(hull_bench)}")
        if hull_bench_groups:
            lines.append(f"LAB_HULL_BENCH_GROUPS={shlex.quote(hull_bench_groups)}")
        if hull_bench_pods:
            lines.append(f"LAB_HULL_BENCH_PODS={shlex.quote(hull_bench_pods)}")
    if hull_config:
        lines.append(f"LAB_HULL_CONFIG={shlex.quote(chr(10).join(hull_config))}")
    if soak:
        lines.append(f"LAB_SOAK={int(soak)}")
    if pin_cpu is not None:
        lines.append(f"LAB_PIN_CPU={int(pin_cpu)}")
    if show_lines:
        lines.append(f"LAB_SHOW_LINES={int(show_lines)}")
    for r in runs:
        if r.kind == "boot":
            args = [r.name, r.vmm, r.timeout_s, r.attempts, r.mem_mib, r.vcpus, r.cmdline]
        else:  # lab_health / lab_ctr / lab_suite / lab_pod: hull-vmm only
            args = [r.name, r.timeout_s, r.attempts, r.mem_mib, r.vcpus, r.cmdline]
        if r.kind == "pod":
            args.append(r.options)
        lines.append(PLAN_FUNCTIONS[r.kind] + " " + " ".join(shlex.quote(str(a)) for a in args))
    return "\n".join(lines) + "\n"


_FIELD = re.compile(r'(\w+)=("(?:[^"]*)"|\S*)')


def parse_fields(text):
    """key=value pairs of a LAB- line; values may be double-quoted."""
    return {k: v[1:-1] if v.startswith('"') else v for k, v in _FIELD.findall(text)}


def _num(value, kind=float):
    try:
        return kind(float(value))
    except (TypeError, ValueError):
        return kind(-1)


def parse_result(text):
    """RunResult from the part of a console line after 'LAB-RESULT '."""
    f = parse_fields(text)
    return RunResult(
        name=f.get("name", "?"),
        attempt=_num(f.get("attempt"), int),
        vmm=f.get("vmm", "?"),
        status=f.get("status", "fail"),
        rc=_num(f.get("rc"), int),
        wall_ms=_num(f.get("wall_ms")),
        agent_ms=_num(f.get("agent_ms")),
        boot_ms=_num(f.get("boot_ms")),
        kmsg_s=_num(f.get("kmsg_s")),
        rss_kib=_num(f.get("rss_kib"), int),
        agent=f.get("agent", ""),
        kind=f.get("kind", "boot"),
        detail=f.get("detail", ""),
        fields=f,
    )


class L1Config:
    """How L1 is started."""

    def __init__(self, qemu="qemu-system-x86_64", accel="tcg,thread=single", cpu="EPYC,+svm,+npt", smp=1, mem_mib=4096,
                 kvm_amd_options="", pin_cpu=None, append="", show_lines=0, health_peer=False,
                 ctr_bench=0, fsbench_args="", hull_bench=0, soak=0, hull_bench_groups="", hull_config=(),
                 hull_bench_pods=""):  # fmt: skip
        self.qemu = qemu
        self.accel = accel
        self.cpu = cpu
        self.smp = smp
        self.mem_mib = mem_mib
        self.kvm_amd_options = kvm_amd_options
        self.pin_cpu = pin_cpu
        self.append = append
        self.show_lines = show_lines  # guest console lines shown for good runs too (demo)
        self.health_peer = health_peer  # health runs also time hull-agent on a plain Unix socket in L1 (bench)
        self.ctr_bench = ctr_bench  # ctr runs also time N x `ctr run --rm IMG true`, hull vs runc (bench)
        self.hull_bench = hull_bench  # ctr runs also run `hull bench --n N` (issue 15)
        self.hull_bench_groups = hull_bench_groups  # its --groups (run.sh's default when empty)
        self.hull_bench_pods = hull_bench_pods  # its --pods (run.sh's default when empty)
        self.hull_config = tuple(hull_config)  # ctr runs: `key = value` lines added to hull.toml
        self.soak = soak  # ctr runs also run N create/delete cycles and the SIGKILL faults (issue 14)
        self.fsbench_args = fsbench_args  # suite runs: fsbench's arguments (default: run.sh's)


def monitor_dump(sock_path, commands=("info status", "info registers -a", "info lapic", "info pic")):
    """Ask L1's HMP monitor for its vCPU state (for the log of a frozen L1)."""
    out = []
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(str(sock_path))
            buf = b""
            for cmd in ("",) + tuple(commands):
                if cmd:
                    s.sendall(cmd.encode() + b"\n")
                buf = b""
                deadline = time.monotonic() + 3
                while not buf.endswith(b"(qemu) ") and time.monotonic() < deadline:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                if cmd:
                    out.append(f"### {cmd}\n{buf.decode(errors='replace')}")
    except OSError as e:
        out.append(f"monitor dump failed: {e}")
    return "\n".join(out)


def boot(assets, config, runs, work_dir, tag, on_line=None):
    """Boot L1 once with `runs` as its plan; returns L1Outcome. Never leaves QEMU running."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "logs").mkdir(exist_ok=True)
    plan = plan_script(
        runs, config.kvm_amd_options, config.pin_cpu, config.show_lines, config.health_peer, config.ctr_bench,
        config.fsbench_args, config.hull_bench, config.soak, config.hull_bench_groups, config.hull_config,
        config.hull_bench_pods,
    ).encode()
    plan_img = work_dir / f"plan-{tag}.img"
    # A raw disk: whole sectors; l1-init.sh drops the zero padding.
    plan_img.write_bytes(plan + b"\0" * (4096 - len(plan) % 4096))
    pidfile = work_dir / f"l1-{tag}.pid"
    monitor = work_dir / f"l1-{tag}.mon"
    log_path = work_dir / "logs" / f"{tag}.log"
    for p in (pidfile, monitor):
        p.unlink(missing_ok=True)
    budget = BOOT_S + 30 + sum(
        r.attempts
        * (r.timeout_s * (SUITE_BUDGET_FACTOR if r.kind == "suite" else 1) + 15 + (POD_SETUP_S if r.kind in SETUP_KINDS else 0))
        for r in runs
    ) + (HULL_BENCH_BUDGET_S if config.hull_bench else 0) + soak_budget_s(config.soak)
    append = " ".join(p for p in ("console=ttyS0 panic=-1 quiet", config.append) if p)
    cmd = [
        "timeout", "-s", "KILL", str(budget), config.qemu,
        "-M", "q35", "-accel", config.accel, "-cpu", config.cpu,
        "-smp", str(config.smp), "-m", str(config.mem_mib),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
        "-pidfile", str(pidfile), "-monitor", f"unix:{monitor},server,nowait",
        "-kernel", str(assets.kernel), "-initrd", str(assets.initramfs),
        "-drive", f"id=labdata,file={assets.data_disk},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-pci,drive=labdata,serial=labdata",
        "-drive", f"id=labplan,file={plan_img},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-pci,drive=labplan,serial=labplan",
        "-append", append,
    ]  # fmt: skip
    outcome = L1Outcome(status="error", detail="not started", log=log_path)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        log.write("# " + " ".join(shlex.quote(c) for c in cmd) + "\n# plan:\n")
        log.write("".join("#   " + line + "\n" for line in plan.decode().splitlines()))
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        _live[proc.pid] = pidfile
        try:
            _watch(proc, log, t0, monitor, outcome, on_line)
        finally:
            kill_l1(proc.pid, pidfile)
            proc.wait()
            for p in (plan_img, pidfile, monitor):
                p.unlink(missing_ok=True)
    return outcome


def _watch(proc, log, t0, monitor, outcome, on_line):
    fd = proc.stdout.fileno()
    pending = b""
    last_output = t0
    seen_init = False
    tails = {}
    while True:
        now = time.monotonic()
        if not seen_init and now - t0 > BOOT_S:
            outcome.status, outcome.detail = "hang", f"L1 did not reach init within {BOOT_S} s"
            break
        if seen_init and now - last_output > STALL_S:
            outcome.status, outcome.detail = "hang", f"L1 silent for {STALL_S} s (no heartbeat): frozen"
            break
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            rc = proc.wait()
            if outcome.status != "done":
                killed = rc in (-9, 137)
                outcome.status = "hang" if killed else "error"
                outcome.detail = "L1 killed by its hard timeout" if killed else f"L1 QEMU exited ({rc}) before LAB-DONE"
            return
        last_output = time.monotonic()
        stamp = f"[{last_output - t0:8.3f}] "
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip("\r")
            log.write(stamp + line + "\n")
            seen_init |= _handle(line, outcome, tails, last_output - t0)
            if on_line:
                on_line(line)
        log.flush()
    # Only reached on a hang: keep the evidence, then the caller kills.
    log.write(f"# LAB HANG: {outcome.detail}\n{monitor_dump(monitor)}\n")
    log.flush()


def _handle(line, outcome, tails, at_s):
    """Parse one console line into `outcome`; returns True for the init marker."""
    idx = line.find("LAB-")
    if idx < 0:
        return False
    tag, _, rest = line[idx:].partition(" ")
    if tag == "LAB-L1":
        f = parse_fields(rest)
        if f.get("event") == "init":
            outcome.kernel_release = f.get("kernel", "")
            outcome.init_s = at_s
            return True
        if f.get("event") == "error":
            outcome.detail = f.get("reason", rest)
    elif tag == "LAB-KVM":
        outcome.kvm = rest
    elif tag == "LAB-TAIL":
        head, _, text = rest.partition(" | ")
        f = parse_fields(head)
        tails.setdefault((f.get("name"), f.get("attempt")), []).append(f"{f.get('stream', '?')}: {text}")
    elif tag == "LAB-RESULT":
        result = parse_result(rest)
        result.tail = tails.setdefault((result.name, str(result.attempt)), [])
        outcome.results.append(result)
    elif tag == "LAB-DONE":
        outcome.status, outcome.detail = "done", "plan finished"
    return False
