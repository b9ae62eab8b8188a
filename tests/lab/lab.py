#!/usr/bin/env python3
"""Host driver of the nested lab: real SVM KVM inside a QEMU TCG L1 VM.

  lab.py smoke     boot L1 once, hull-vmm boots our guest (L2 hangs retried)
  lab.py test      the smoke, containerd + our shim running `uname -r` in a microVM, the full pod
                   scenario (two pods in two microVMs, pod start hull vs runc), the README's Kubernetes
                   quick start (below), 5 boots with 2 vCPUs
  lab.py ctr       only the containerd step
  lab.py pod       only the pod step (CRI, one pod with two containers; --full: the full scenario)
  lab.py quickstart  README's Kubernetes quick start in L1 as the node: hull install, containerd's
                   CRI with handler hull, the pod hello-hull (the lab's CRI client in kubelet's
                   place), hull check, hull uninstall
  lab.py bench     hull-vmm vs QEMU microvm booting the same guest in the same L1
  lab.py hangrate  N single-attempt L2 boots, to measure how often the lab hangs
  lab.py demo      boot our guest with hull-vmm in the lab, show its console and figures
  lab.py assets    only build/refresh the cached L1 assets

Exit status: 0 pass, 1 product failure, 2 lab hang (retries used up), 3 lab
setup error. See tests/lab/README.md.
"""

import argparse
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab_assets  # noqa: E402
import lab_l1  # noqa: E402
from lab_l1 import RunSpec  # noqa: E402
from lab_figures import _num, fmt_num, median, net_bench_lines, pod_bench_lines  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

EXIT_OK, EXIT_PRODUCT, EXIT_LAB_HANG, EXIT_SETUP = 0, 1, 2, 3

# The guest's kernel command line: hull-vmm exits on the i8042 reset (reboot=k);
# QEMU microvm has no i8042, so the peer exits on a triple fault (reboot=t +
# -no-reboot). DEFAULT_EXTRA is the lab's choice from its reliability runs.
HULL_CMDLINE = "console=ttyS0 reboot=k panic=-1 hull.poweroff=1"
# Without hull.poweroff the agent serves its API on vsock port 1024 until the VMM is stopped.
SERVE_CMDLINE = "console=ttyS0 reboot=k panic=-1"
# How the shim boots the pmem root image (runtime-shim/src/config.rs PMEM_ROOT_PARAMS), for the
# bench's direct hull-vmm boots of it.
PMEM_ROOT_PARAMS = "root=/dev/pmem0 rootfstype=ext4 rootflags=dax ro init=/init"
HEALTH_EXTRA_S = 15  # a health run boots, waits for the agent, then makes calls: more time than a boot
CTR_TIMEOUT_S = 90  # containerd -> shim -> virtiofsd + hull-vmm boot -> container -> teardown
SUITE_TIMEOUT_S = 300  # per agent-suite test executable run in L1 against the microVM
# The pod step's CRI client, whole run (its pods' boots are bounded by the shim's own 45 s).
POD_SMOKE_TIMEOUT_S = 180
POD_FULL_TIMEOUT_S = 900  # two pods, the CRI checks, pod start and network benchmarks, on a loaded host
POD_BENCH_N = 3  # pod starts per runtime in the full pod scenario
QUICKSTART_TIMEOUT_S = 180  # the quick start's CRI client: one pod, started, logs, deleted
# What a passing quick start has checked (run.sh's and the client's LAB-POD check names).
QUICKSTART_CHECKS = ("install", "containerd", "hull-check", "cri-ready", "qs-image", "pod-start", "logs", "vm-size",
                     "pod-remove", "nothing-left", "uninstall")  # fmt: skip
# fsbench in the smoke (CI) is small; in `test` a third of run.sh's default (64 MiB, 10000 files):
# at the default it took close to the suite's 300 s step timeout when the host was busy, and a
# slow benchmark is no product failure. The figures are rates, comparable across sizes.
SMOKE_FSBENCH_ARGS = "--mib 8 --files 500"
TEST_FSBENCH_ARGS = "--mib 32 --files 3000"
PEER_CMDLINE = "console=ttyS0 reboot=t panic=-1 hull.poweroff=1"
DEFAULT_EXTRA = ""
KEEP_LOGS = 40
DEMO_CONSOLE_LINES = 12


def log(msg=""):
    print(msg, flush=True)


class Lab:
    """Assets + L1 configuration + the loop that re-boots L1 after it hangs."""

    def __init__(self, args):
        self.args = args
        self.build_dir = (REPO / args.build_dir).resolve()
        self.work_dir = self.build_dir / "lab"
        self.config = lab_l1.L1Config(
            qemu=args.qemu,
            accel=args.accel,
            cpu=args.l1_cpu,
            smp=args.l1_smp,
            kvm_amd_options=args.kvm_amd,
            pin_cpu=args.pin_cpu,
            append=args.l1_append,
        )
        self.assets = None
        self.l1_boots = []  # L1Outcome per boot
        self.ctr_bench = {}  # runtime -> [wall ms or None] from LAB-CTR-BENCH lines
        self.hull_bench = []  # the output of `hull bench` in L1 (LAB-HULLBENCH lines)
        self.soak = None  # fields of the LAB-SOAK line (ctr --soak N, issue 14)
        self.ctr_pss = {}  # runtime -> PSS KiB of one idle container (shim and descendants), LAB-CTR-PSS
        self.suite = []  # fields of LAB-SUITE lines (one per test executable)
        self.fsbench = {}  # where (guest | l1) -> fields of its LAB-FSBENCH line
        self.pod_checks = []  # fields of LAB-POD lines (one per check and attempt)
        self.pod_times = []  # fields of LAB-POD-TIME lines
        self.pod_bench = {}  # (name, runtime) -> fields of its LAB-POD-BENCH line
        self.net_bench = {}  # (name, runtime) -> fields of its LAB-NET-BENCH line
        self.qs_check = {}  # (name, attempt) -> the lines of `hull check` in the quickstart step
        self.tag = time.strftime("%Y%m%d-%H%M%S")
        prune_logs(self.work_dir / "logs", keep=KEEP_LOGS)

    def prepare(self, need_hull):
        if self.assets is not None:  # `test` prepares before `smoke` does
            return
        t0 = time.monotonic()
        self.assets = lab_assets.build(
            self.args.cache, self.build_dir, self.args.peer_qemu, self.args.guest_kernel, self.args.guest_initramfs,
            firecracker=self.args.firecracker,
        )
        log(
            f"lab: assets ready in {time.monotonic() - t0:.1f} s (L1 kernel {self.assets.kernel_release}, "
            f"data disk {self.assets.data_disk})"
        )
        missing = []
        if not self.assets.has_guest:
            missing.append("the guest image (build/guest/vmlinux, build/guest/initramfs.cpio: `make guest`)")
        if need_hull and not self.assets.has_hull_vmm:
            missing.append("build/bin/hull-vmm (`make static-bins`)")
        if missing:
            raise lab_assets.AssetError("missing " + " and ".join(missing))

    def cmdline(self, vmm):
        # Firecracker ends on the guest's i8042 reset as hull-vmm does; QEMU's microvm on a triple fault.
        base = {
            "hull": HULL_CMDLINE, "hull-pmem": f"{HULL_CMDLINE} {PMEM_ROOT_PARAMS}", "firecracker": HULL_CMDLINE,
        }.get(vmm, PEER_CMDLINE)  # fmt: skip
        return " ".join(p for p in (base, self.args.extra) if p)

    def spec(self, name, vmm, vcpus=1, mem_mib=256, attempts=None):
        return RunSpec(
            name=name, vmm=vmm, mem_mib=mem_mib, vcpus=vcpus, cmdline=self.cmdline(vmm),
            timeout_s=self.args.l2_timeout, attempts=attempts or self.args.l2_attempts,
        )  # fmt: skip

    def health_spec(self, name):
        """hull-vmm with a hybrid vsock device, the agent serving; `hull agent health` from L1."""
        cmdline = " ".join(p for p in (SERVE_CMDLINE, self.args.extra) if p)
        return RunSpec(
            name=name, vmm="hull", mem_mib=256, vcpus=1, cmdline=cmdline,
            timeout_s=self.args.l2_timeout + HEALTH_EXTRA_S, attempts=self.args.l2_attempts, kind="health",
        )  # fmt: skip

    def ctr_spec(self, name):
        """containerd + our shim in L1: `ctr run --rm --runtime io.containerd.hull.v2 IMG ID uname -r`."""
        return RunSpec(
            name=name, vmm="hull", mem_mib=256, vcpus=1, cmdline=self.args.extra,
            timeout_s=CTR_TIMEOUT_S, attempts=self.args.l2_attempts, kind="ctr",
        )  # fmt: skip

    def suite_spec(self, name):
        """The agent's own test suite from L1 against hull-agent as PID 1 of a microVM (issues 5, 6)."""
        cmdline = " ".join(p for p in (SERVE_CMDLINE, self.args.extra) if p)
        return RunSpec(
            name=name, vmm="hull", mem_mib=512, vcpus=1, cmdline=cmdline,
            timeout_s=SUITE_TIMEOUT_S, attempts=self.args.l2_attempts, kind="suite",
        )  # fmt: skip

    def pod_spec(self, name, full=False, bench=0, pool=False):
        """containerd's CRI + CNI bridge in L1, the pod scenario in microVMs (issues 12, 13);
        with `pool`, its first pod takes a VM from `hull pool run` and a later one boots its own (issue 15)."""
        flags = ("--full" if full else "", f"--bench {bench}" if bench else "", "--pool" if pool else "")
        options = " ".join(p for p in flags if p)
        return RunSpec(
            name=name, vmm="hull", mem_mib=256, vcpus=1, cmdline=self.args.extra,
            timeout_s=POD_FULL_TIMEOUT_S if full else POD_SMOKE_TIMEOUT_S, attempts=self.args.l2_attempts,
            kind="pod", options=options,
        )  # fmt: skip

    def quickstart_spec(self, name):
        """The README's Kubernetes quick start with L1 as the node (issue 16)."""
        return RunSpec(
            name=name, vmm="hull", mem_mib=256, vcpus=1, cmdline=self.args.extra,
            timeout_s=QUICKSTART_TIMEOUT_S, attempts=self.args.l2_attempts, kind="quickstart",
        )  # fmt: skip

    def execute(self, runs, max_l1_boots):
        """Run all specs, re-booting L1 (with the runs not finished yet) after an L1 hang.

        Returns {name: [RunResult per attempt]}; runs never finished have fewer
        results than attempts and a final status that is not ok/fail.
        """
        results = {r.name: [] for r in runs}
        pending = list(runs)
        for boot_no in range(1, max_l1_boots + 1):
            if not pending:
                break
            specs = [replace(r, attempts=r.attempts - len(results[r.name])) for r in pending]
            log(
                f"lab: L1 boot {boot_no} ({self.config.accel}, -cpu {self.config.cpu}, -smp {self.config.smp}): "
                f"{len(specs)} run(s)"
            )
            outcome = lab_l1.boot(
                self.assets, self.config, specs, self.work_dir, f"{self.tag}-{boot_no}", self.progress
            )
            self.l1_boots.append(outcome)
            for res in outcome.results:
                if res.name in results:
                    results[res.name].append(res)
            pending = [r for r in pending if not finished(results[r.name], r.attempts)]
            if outcome.status == "hang":
                log(f"lab: LAB HANG (L1): {outcome.detail}; log {outcome.log}")
                continue
            if outcome.status != "done" or "status=ok" not in outcome.kvm:
                detail = outcome.detail if outcome.status != "done" else f"kvm-amd did not load: {outcome.kvm}"
                raise lab_assets.AssetError(f"L1 setup failed: {detail} (log {outcome.log})")
        return results

    def progress(self, line):
        idx = line.find("LAB-")
        if idx < 0:
            return
        text = line[idx:]
        if text.startswith("LAB-CTR-BENCH "):
            f = lab_l1.parse_fields(text)
            walls = f.get("wall_ms", "").split()
            self.ctr_bench[f.get("runtime", "?")] = [None if w == "fail" else _num(w) for w in walls]
        if text.startswith(("LAB-HULLBENCH |", "LAB-HULLBENCH-ERR |")):
            self.hull_bench.append(text.split("| ", 1)[1] if "| " in text else "")
        if text.startswith("LAB-SOAK "):
            self.soak = lab_l1.parse_fields(text)
        if text.startswith("LAB-CTR-PSS "):
            f = lab_l1.parse_fields(text)
            self.ctr_pss[f.get("runtime", "?")] = _num(f.get("pss_kib"))
        if text.startswith("LAB-SUITE "):
            self.suite.append(lab_l1.parse_fields(text))
        if text.startswith("LAB-FSBENCH "):
            f = lab_l1.parse_fields(text)
            self.fsbench[f.get("where", "?")] = f
        if text.startswith("LAB-POD "):
            self.pod_checks.append(lab_l1.parse_fields(text))
        if text.startswith("LAB-POD-TIME "):
            self.pod_times.append(lab_l1.parse_fields(text))
        if text.startswith("LAB-POD-BENCH "):
            f = lab_l1.parse_fields(text)
            self.pod_bench[(f.get("name"), f.get("runtime"))] = f
        if text.startswith("LAB-NET-BENCH "):
            f = lab_l1.parse_fields(text)
            self.net_bench[(f.get("name"), f.get("runtime"))] = f
        if text.startswith("LAB-QS-CHECK "):
            head, _, screen = text.partition(" | ")
            f = lab_l1.parse_fields(head)
            self.qs_check.setdefault((f.get("name"), f.get("attempt")), []).append(screen)
        if text.startswith(("LAB-RESULT", "LAB-KVM", "LAB-CTR", "LAB-SOAK", "LAB-SUITE", "LAB-FSBENCH", "LAB-POD", "LAB-QS-CHECK",
                            "LAB-L1 event=init", "LAB-L1 event=error")):  # fmt: skip
            log("  " + text)

    def l1_summary(self):
        inits = [o.init_s for o in self.l1_boots if o.init_s >= 0]
        hangs = sum(1 for o in self.l1_boots if o.status == "hang")
        return (
            f"L1: {len(self.l1_boots)} boot(s), {hangs} L1 hang(s), QEMU start to L1 init "
            f"{fmt_stats([s * 1000 for s in inits], 'ms')}, {self.config.accel}"
        )


def host_kvm_kind():
    """What the host's /dev/kvm is, in words (the lab itself runs on TCG either way)."""
    if Path("/sys/module/kvm_pvm").exists():
        return "PVM (kvm_pvm: Linux guests cannot boot on it directly)"
    if not Path("/dev/kvm").exists():
        return "absent"
    return "real KVM (the lab is not needed here; it still works)"


def prune_logs(log_dir, keep):
    """Delete all but the newest `keep` L1 console logs."""
    logs = sorted(Path(log_dir).glob("*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-keep] if len(logs) > keep else []:
        old.unlink(missing_ok=True)


def finished(attempts, allowed):
    return bool(attempts) and (attempts[-1].status != "hang" or len(attempts) >= allowed)


def fmt_stats(values, unit):
    if not values:
        return "n/a"
    return f"min {min(values):.0f} / median {median(values):.0f} / max {max(values):.0f} {unit} (n={len(values)})"


def check_boot(lab, name, attempts, allowed, require_boot_ms=True):
    """Judge one run's attempts. Returns (exit code, message)."""
    if attempts and attempts[-1].kind == "ctr":
        return check_ctr(name, attempts, allowed)
    if attempts and attempts[-1].kind == "suite":
        return check_suite(lab, name, attempts, allowed)
    if attempts and attempts[-1].kind == "pod":
        return check_pod(lab, name, attempts, allowed)
    if attempts and attempts[-1].kind == "quickstart":
        return check_quickstart(lab, name, attempts, allowed)
    code, msg = check_guest(lab, name, attempts, allowed, require_boot_ms)
    if code != EXIT_OK or attempts[-1].kind != "health":
        return code, msg
    last = attempts[-1]
    answer = parse_health(last.detail)
    if answer.get("health") != "SERVING_STATUS_SERVING":
        return EXIT_PRODUCT, f"{name}: PRODUCT FAILURE: agent did not answer SERVING over vsock: '{last.detail}'"
    call_ms = last.fields.get("call_ms", "-1")
    per_call = f"; then {call_ms} ms per `hull agent health` run (process start + connect + 2 calls)"
    return EXIT_OK, (
        f"{name}: ok: `hull agent health` over hybrid vsock answered from inside the microVM: "
        f"health={answer.get('health')} agent_version={answer.get('agent_version')} "
        f"api_version={answer.get('api_version')}; VMM stopped by SIGTERM, exit {last.rc}\n"
        f"    first answer {last.fields.get('health_ms', '?')} ms after the VMM started "
        f"(guest_boot_ms={last.boot_ms:.0f}){per_call if call_ms != '-1' else ''}"
    )


def check_ctr(name, attempts, allowed):
    """`ctr run ... uname -r` must print a kernel release that is not L1's."""
    last = attempts[-1]
    hangs = sum(1 for a in attempts if a.status == "hang")
    if last.status == "hang":
        return EXIT_LAB_HANG, (
            f"{name}: LAB HANG: `ctr run` did not finish in any of {len(attempts)} of {allowed} attempts\n"
            + tail_text(last)
        )
    if last.status != "ok":
        return EXIT_PRODUCT, f"{name}: PRODUCT FAILURE: `ctr run` exit {last.rc}: '{last.detail}'\n" + tail_text(last)
    guest_release = last.detail.split(";")[0].strip()
    l1_release = last.fields.get("l1_kernel", "")
    if not guest_release or guest_release == l1_release:
        return EXIT_PRODUCT, (
            f"{name}: PRODUCT FAILURE: the container printed '{guest_release}', L1's own kernel is "
            f"'{l1_release}': it did not run in our microVM"
        )
    console = last.fields.get("console", "")
    if console.startswith("fail"):
        return EXIT_PRODUCT, f"{name}: PRODUCT FAILURE: `hull console` with debug_console = true: {console}\n" + tail_text(last)
    note = f" (after {hangs} lab hang(s))" if hangs else ""
    rootfs = last.fields.get("rootfs", "")
    return EXIT_OK, (
        f"{name}: ok{note}: `ctr run --rm --runtime io.containerd.hull.v2 ... uname -r` printed "
        f"'{guest_release}' (the guest's kernel; L1 runs '{l1_release}'), {last.wall_ms:.0f} ms\n"
        f"    container's / in the guest: {rootfs or 'unknown (second container gave no answer)'}"
        + (" (virtio-fs share from L1)" if " virtiofs " in f" {rootfs} " else "")
        + f"\n    hull console: {console or 'not run'}"
    )


FSBENCH_KEYS = (("write_mib_s", "seq write MiB/s"), ("read_mib_s", "seq read MiB/s"),
                ("create_per_s", "create/s"), ("stat_per_s", "stat/s"), ("unlink_per_s", "unlink/s"))  # fmt: skip


def fsbench_lines(fsbench):
    """fsbench in the guest (virtio-fs) vs in L1 on the directory behind the share, with ratios."""
    guest, l1 = fsbench.get("guest"), fsbench.get("l1")
    if not guest or not l1:
        return [f"    fsbench: no figures (guest: {bool(guest)}, L1: {bool(l1)})"]
    lines = [f"    fsbench ({guest.get('mib')} MiB, {guest.get('files')} files; guest on virtio-fs vs L1 on the "
             "shared directory; emulated, so the ratio matters more than the number):"]  # fmt: skip
    for key, label in FSBENCH_KEYS:
        g, h = _num(guest.get(key)), _num(l1.get(key))
        ratio = f"{g / h:.3g}x" if g and h and g > 0 and h > 0 else "?"
        lines.append(f"      {label:<16} guest {fmt_num(g):>10}  L1 {fmt_num(h):>10}  guest/L1 {ratio}")
    return lines


def check_suite(lab, name, attempts, allowed):
    """Every agent-suite executable passed against the microVM, and hull-vmm exited 0 after PowerOff."""
    last = attempts[-1]
    if last.status == "hang":
        return EXIT_LAB_HANG, (
            f"{name}: LAB HANG: the guest never served its API in any of {len(attempts)} of {allowed} attempts\n"
            + tail_text(last)
        )
    per_test = ", ".join(
        f"{s.get('test')} {s.get('status')} ({s.get('passed')} passed, {s.get('failed')} failed, {s.get('ms')} ms)"
        for s in lab.suite
    )
    if last.status != "ok":
        return EXIT_PRODUCT, (
            f"{name}: PRODUCT FAILURE: agent suite against the microVM: {per_test or 'no test ran'}; "
            f"setup '{last.detail}', hull-vmm exit {last.rc}\n" + tail_text(last)
        )
    lines = [
        f"{name}: ok: the agent's test suite ran from L1 against hull-agent as PID 1 of the microVM "
        f"(hybrid vsock + virtio-fs share): {last.fields.get('passed')} tests passed; hull-vmm exit {last.rc} "
        f"after PowerOff",
        f"    {per_test}",
        f"    guest served its API {last.fields.get('ready_ms')} ms after the VMM started",
    ]
    return EXIT_OK, "\n".join(lines + fsbench_lines(lab.fsbench))


def check_pod(lab, name, attempts, allowed):
    """Every check of the CRI client passed (figures are printed, never judged)."""
    last = attempts[-1]
    hangs = sum(1 for a in attempts if a.status == "hang")
    checks = [c for c in lab.pod_checks if c.get("name") == name and c.get("attempt") == str(last.attempt)]
    listed = [f"    {c.get('check')}: {c.get('status')}: {c.get('detail')}" for c in checks]
    if last.status == "hang":
        return EXIT_LAB_HANG, "\n".join(
            [f"{name}: LAB HANG: a pod's guest never reached its agent (or the run outlived its timeout) in all "
             f"{len(attempts)} of {allowed} attempts (TCG SVM lab hang, or a product hang if this repeats)"]
            + listed + [tail_text(last)]
        )  # fmt: skip
    if last.status != "ok":
        why = last.fields.get("failed") or last.detail or f"lab-pod exit {last.rc}"
        return EXIT_PRODUCT, "\n".join(
            [f"{name}: PRODUCT FAILURE: pod scenario in microVMs (CRI, handler hull): failed: {why}"]
            + listed + [tail_text(last)]
        )
    note = f" (after {hangs} lab hang(s))" if hangs else ""
    lines = [f"{name}: ok{note}: pod scenario through containerd's CRI with runtime handler hull (VM mode) and the "
             f"CNI bridge in L1: {sum(1 for c in checks if c.get('status') == 'ok')} checks passed, "
             f"{last.wall_ms / 1000:.1f} s"] + listed  # fmt: skip
    for t in (t for t in lab.pod_times if t.get("name") == name and t.get("attempt") == str(last.attempt)):
        lines.append(
            f"    pod start (hull, pod {t.get('pod')}, 2 containers): RunPodSandbox {t.get('run_ms')} ms + "
            f"CreateContainer {t.get('create_ms')} ms + StartContainer {t.get('start_ms')} ms = {t.get('total_ms')} ms"
        )
    lines += pod_bench_lines(lab.pod_bench, name)
    lines += net_bench_lines(lab.net_bench, name)
    return EXIT_OK, "\n".join(lines)


def check_quickstart(lab, name, attempts, allowed):
    """The README's Kubernetes quick start: every one of QUICKSTART_CHECKS ran and passed."""
    if not attempts:
        return EXIT_LAB_HANG, f"{name}: LAB HANG: never ran (L1 hung every time)"
    last = attempts[-1]
    hangs = sum(1 for a in attempts if a.status == "hang")
    checks = [c for c in lab.pod_checks if c.get("name") == name and c.get("attempt") == str(last.attempt)]
    listed = [f"    {c.get('check')}: {c.get('status')}: {c.get('detail')}" for c in checks]
    if last.status == "hang":
        return EXIT_LAB_HANG, "\n".join(
            [f"{name}: LAB HANG: the quick start's pod never reached its agent (or the client outlived its "
             f"timeout) in all {len(attempts)} of {allowed} attempts (TCG SVM lab hang, or a product hang if "
             f"this repeats)"] + listed + [tail_text(last)]
        )  # fmt: skip
    passed = {c.get("check") for c in checks if c.get("status") == "ok"}
    missing = [c for c in QUICKSTART_CHECKS if c not in passed]
    if last.status != "ok" or missing:
        why = last.fields.get("failed") or last.detail or f"lab-pod exit {last.rc}"
        if last.status == "ok":
            why = f"checks not passed or not run: {' '.join(missing)}"
        screen = lab.qs_check.get((name, str(last.attempt)), [])
        return EXIT_PRODUCT, "\n".join(
            [f"{name}: PRODUCT FAILURE: README's Kubernetes quick start (hull install, CRI handler hull, pod "
             f"hello-hull, hull uninstall): failed: {why}"]
            + listed + (["    hull check said:"] + [f"      {s}" for s in screen] if screen else [])
            + [tail_text(last)]
        )  # fmt: skip
    note = f" (after {hangs} lab hang(s))" if hangs else ""
    lines = [f"{name}: ok{note}: README's Kubernetes quick start followed in L1 as the node (no kubelet: the lab's "
             f"CRI client sent the pod as kubelet does): {len(passed)} checks passed, client "
             f"{last.wall_ms / 1000:.1f} s",
             f"    hull check: {last.fields.get('runtime', '?')}"] + listed  # fmt: skip
    return EXIT_OK, "\n".join(lines)


def parse_health(detail):
    """`hull agent health` output ('key: value' lines joined by ';') as a dict."""
    pairs = (part.split(":", 1) for part in detail.split(";") if ":" in part)
    return {k.strip(): v.strip() for k, v in pairs}


def check_guest(lab, name, attempts, allowed, require_boot_ms=True):
    """Judge that a run's guest booted (agent line, guest kernel, boot marker)."""
    if not attempts:
        return EXIT_LAB_HANG, f"{name}: LAB HANG: never ran (L1 hung every time)"
    last = attempts[-1]
    hangs = sum(1 for a in attempts if a.status == "hang")
    if last.status == "hang":
        return EXIT_LAB_HANG, (
            f"{name}: LAB HANG: all {len(attempts)} of {allowed} attempts timed out "
            f"(TCG SVM lab hang, or a product hang if this repeats)\n" + tail_text(last)
        )
    if last.status != "ok":
        return EXIT_PRODUCT, (
            f"{name}: PRODUCT FAILURE: {last.vmm} exit code {last.rc}, "
            f"agent line: {last.agent or 'none'}\n" + tail_text(last)
        )
    fields = lab_l1.parse_fields(last.agent)
    release = fields.get("kernel", "")
    l1_release = next((o.kernel_release for o in lab.l1_boots if o.kernel_release), "")
    if not release or release == l1_release:
        return (
            EXIT_PRODUCT,
            f"{name}: PRODUCT FAILURE: agent kernel '{release}' is not a guest kernel (L1 runs '{l1_release}')",
        )
    if require_boot_ms and last.boot_ms < 0:
        return EXIT_PRODUCT, f"{name}: PRODUCT FAILURE: no guest_boot_ms in hull-vmm's log\n" + tail_text(last)
    note = f" (after {hangs} lab hang(s))" if hangs else ""
    return EXIT_OK, (
        f"{name}: ok{note}: guest_boot_ms={last.boot_ms:.0f} vmm_start_to_agent={last.agent_ms:.0f} ms "
        f"vmm_wall={last.wall_ms:.0f} ms rss={last.rss_kib / 1024:.1f} MiB | {last.agent}"
    )


def tail_text(result):
    if not result.tail:
        return "    (no output captured)"
    return "\n".join("    " + t for t in result.tail)


def boot_runs(lab, runs, max_l1_boots, require_boot_ms):
    results = lab.execute(runs, max_l1_boots)
    codes, lines = [], []
    for r in runs:
        code, msg = check_boot(lab, r.name, results[r.name], r.attempts, require_boot_ms)
        codes.append(code)
        lines.append(msg)
    # A product failure outranks a lab hang: it is a real finding.
    worst = EXIT_PRODUCT if EXIT_PRODUCT in codes else max(codes, default=EXIT_OK)
    return worst, lines, results


def cmd_smoke(lab, extra_runs=()):
    vmm = lab.args.vmm
    lab.prepare(need_hull=vmm == "hull")
    runs = [lab.spec("smoke", vmm)]
    if vmm == "hull" and not lab.args.no_health:
        runs.append(lab.health_spec("vsock-health"))
    if vmm == "hull" and not lab.args.no_suite:
        if not lab.assets.has_suite:
            raise lab_assets.AssetError(
                "the agent-suite step needs build/bin/agent-suite and build/bin/fsbench (`make lab-suite-bins`), "
                "build/bin/hull (`make static-bins`) and virtiofsd (cargo install virtiofsd); or pass --no-suite"
            )
        # The smoke (CI) runs a small fsbench, `test` (the smoke plus extra runs) a larger one.
        lab.config.fsbench_args = TEST_FSBENCH_ARGS if extra_runs else SMOKE_FSBENCH_ARGS
        runs.append(lab.suite_spec("agent-suite"))
    if vmm == "hull" and not lab.args.no_pod and not any(r.kind == "pod" for r in extra_runs):
        require_pods(lab)
        runs.append(lab.pod_spec("pod-smoke", pool=not lab.args.no_pool))
    runs += list(extra_runs)
    code, lines, results = boot_runs(lab, runs, lab.args.l1_boots, require_boot_ms=vmm == "hull")
    log("")
    log(f"==== LAB SUMMARY (nested lab: QEMU TCG L1 with real SVM KVM; host /dev/kvm: {host_kvm_kind()}) ====")
    log(lab.l1_summary())
    for line in lines:
        log(line)
    ok = [a for r in runs for a in results[r.name]
          if a.status == "ok" and a.kind not in ("ctr", "suite", "pod", "quickstart")]  # fmt: skip
    if ok:
        log(f"guest_boot_ms: {fmt_stats([a.boot_ms for a in ok if a.boot_ms >= 0], 'ms')}")
        log(
            f"VMM start to agent line: {fmt_stats([a.agent_ms for a in ok], 'ms')}; "
            f"VMM wall: {fmt_stats([a.wall_ms for a in ok], 'ms')}"
        )
    verdict = {EXIT_OK: "PASS", EXIT_PRODUCT: "PRODUCT FAILURE", EXIT_LAB_HANG: "LAB HANG (not a product failure)"}
    log(f"LAB {'TEST' if extra_runs else 'SMOKE'}: {verdict[code]}")
    return code


def cmd_demo(lab):
    """For a newcomer: our kernel booted by hull-vmm, its version, boot time and a Health call over vsock."""
    lab.config.show_lines = DEMO_CONSOLE_LINES
    lab.prepare(need_hull=True)
    log(f"lab: host /dev/kvm: {host_kvm_kind()}; booting the guest inside the nested lab (takes ~30 s)")
    runs = [lab.health_spec("demo")]
    results = lab.execute(runs, lab.args.l1_boots)
    code, msg = check_boot(lab, "demo", results["demo"], runs[0].attempts, require_boot_ms=True)
    last = results["demo"][-1] if results["demo"] else None
    log("")
    if code != EXIT_OK:
        log(msg)
        return code
    log(f"---- guest console (last {DEMO_CONSOLE_LINES} lines) ----")
    for line in last.tail:
        log("  " + line.removeprefix("console: "))
    l1_release = next((o.kernel_release for o in lab.l1_boots if o.kernel_release), "?")
    agent = lab_l1.parse_fields(last.agent)
    answer = parse_health(last.detail)
    log("---- what happened ----")
    log(f"  hull-vmm booted our guest kernel {agent.get('kernel')} on real SVM KVM inside the lab's L1 VM")
    log(f"  (L1 runs {l1_release}; this host's KVM cannot boot Linux guests itself)")
    log(f"  guest boot time:   {last.boot_ms:.0f} ms (kernel entry to the agent's boot marker)")
    log(f"  agent:             hull-agent {agent.get('version')}, API {agent.get('api')}, running as PID 1")
    log(
        f"  health over vsock: {answer.get('health')} (agent {answer.get('agent_version')}, API "
        f"{answer.get('api_version')}), asked by `hull agent health` through hull-vmm's vsock socket"
    )
    log(f"  VMM peak RSS:      {last.rss_kib / 1024:.1f} MiB; stopped by SIGTERM, exit {last.rc}")
    return code


def cmd_test(lab):
    vmm = lab.args.vmm
    more = [lab.spec(f"boot-2cpu-{i}", vmm, vcpus=2, mem_mib=1024) for i in range(1, 6)]
    if vmm == "hull":
        lab.prepare(need_hull=True)
        if not lab.assets.has_containerd:
            raise lab_assets.AssetError(
                "the containerd step needs containerd and ctr (apt-get install containerd), virtiofsd "
                "(cargo install virtiofsd) and build/bin/containerd-shim-hull-v2 (`make static-bins`)"
            )
        more.insert(0, lab.ctr_spec("ctr-run"))
        if not lab.args.no_pod:
            require_pods(lab)
            more.insert(1, lab.pod_spec("pod-full", full=True, bench=lab.args.pod_bench))
            if not lab.args.no_quickstart:
                require_quickstart(lab)
                more.insert(2, lab.quickstart_spec("quickstart"))
    return cmd_smoke(lab, more)


def require_pods(lab):
    if not lab.assets.has_pods:
        raise lab_assets.AssetError(
            "the pod step needs the containerd step's inputs, the CNI plugins bridge, host-local and loopback "
            "(apt-get install containernetworking-plugins) and build/bin/lab-pod (`make lab-suite-bins`); "
            "or pass --no-pod"
        )


def require_quickstart(lab):
    require_pods(lab)
    if not (lab.build_dir / "bin/hull").exists():
        raise lab_assets.AssetError("the quickstart step needs build/bin/hull (`make static-bins`); or pass --no-quickstart")


def cmd_quickstart(lab):
    """Only the quickstart step (issue 16): README's Kubernetes quick start with L1 as the node."""
    lab.prepare(need_hull=True)
    require_quickstart(lab)
    runs = [lab.quickstart_spec("quickstart")]
    results = lab.execute(runs, lab.args.l1_boots)
    code, msg = check_boot(lab, "quickstart", results["quickstart"], runs[0].attempts)
    log("")
    log(lab.l1_summary())
    log(msg)
    return code


def cmd_pod(lab):
    """Only the pod step (issues 12, 13): CRI pods in microVMs with the CNI bridge in L1; with
    --hull-bench also `hull bench`'s pod and network groups against the same containerd."""
    lab.prepare(need_hull=True)
    require_pods(lab)
    take_hull_bench_args(lab)
    lab.config.hull_config = tuple(hull_config_line(kv) for kv in lab.args.hull_config)
    full = lab.args.full
    runs = [lab.pod_spec("pod-full" if full else "pod-smoke", full=full, bench=lab.args.pod_bench if full else 0,
                         pool=not lab.args.no_pool)]  # fmt: skip
    results = lab.execute(runs, lab.args.l1_boots)
    code, msg = check_boot(lab, runs[0].name, results[runs[0].name], runs[0].attempts)
    log("")
    log(lab.l1_summary())
    log(msg)
    show_hull_bench(lab)
    return code


def hull_config_line(key_value):
    """`KEY=VALUE` from --hull-config as a line of hull.toml's top level (VALUE is TOML)."""
    key, sep, value = key_value.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not re.fullmatch(r"[a-z_]+", key) or not value or "\n" in value:
        raise ValueError(f"--hull-config wants KEY=VALUE with a top-level hull.toml key, got {key_value!r}")
    return f"{key} = {value}"


def pod_counts(text):
    """--hull-bench-pods: a comma-separated list of pod counts, e.g. 1,5,10."""
    if not re.fullmatch(r"[1-9][0-9]*(,[1-9][0-9]*)*", text):
        raise argparse.ArgumentTypeError(f"want pod counts like 1,5,10, got {text!r}")
    return text


def take_hull_bench_args(lab):
    """--hull-bench [--hull-bench-groups G] [--hull-bench-pods P]: `hull bench --n N` in L1 after the step."""
    if lab.args.hull_bench:
        lab.config.hull_bench = lab.args.n
        lab.config.hull_bench_groups = lab.args.hull_bench_groups
        lab.config.hull_bench_pods = lab.args.hull_bench_pods or ""


def show_hull_bench(lab):
    """The tables `hull bench` printed in L1 (LAB-HULLBENCH lines), if it ran."""
    if lab.hull_bench:
        log("`hull bench` in L1 (hull in VM mode vs runc, same containerd):")
        for line in lab.hull_bench:
            log("    " + line)


def cmd_ctr(lab):
    """Only the containerd step (issue 7): a container in a microVM through containerd and our shim;
    with --ctr-bench also the `ctr run` timing (--n runs each) and PSS of hull vs runc; with --soak N
    also N create/delete cycles and SIGKILL faults with leak counts (judged by check_soak)."""
    lab.prepare(need_hull=True)
    if lab.args.ctr_bench:
        lab.config.ctr_bench = lab.args.n
    take_hull_bench_args(lab)
    if lab.args.soak:
        lab.config.soak = lab.args.soak
    lab.config.hull_config = tuple(hull_config_line(kv) for kv in lab.args.hull_config)
    if not lab.assets.has_containerd:
        raise lab_assets.AssetError("containerd, ctr, virtiofsd or build/bin/containerd-shim-hull-v2 missing")
    runs = [lab.ctr_spec("ctr-run")]
    results = lab.execute(runs, lab.args.l1_boots)
    code, msg = check_boot(lab, "ctr-run", results["ctr-run"], runs[0].attempts)
    if code == EXIT_OK and lab.args.console_shell:
        code, msg = check_console_shell("ctr-run", results["ctr-run"][-1], msg)
    log("")
    log(lab.l1_summary())
    log(msg)
    bench_ctr_runtimes(lab.ctr_bench)
    bench_ctr_pss(lab.ctr_pss)
    show_hull_bench(lab)
    if lab.args.soak and code == EXIT_OK:
        l1_hung = bool(lab.l1_boots) and lab.l1_boots[-1].status == "hang"
        code, msg = check_soak(lab.soak, lab.args.soak, l1_hung)
        log(msg)
    return code


def check_console_shell(name, last, ok_msg):
    """--console-shell (make lab-console, a debug image): `hull console` must have reached a shell
    in the guest; the default image's 'no /bin/sh' answer is then a failure."""
    console = last.fields.get("console", "")
    if console.startswith("ok: a shell"):
        return EXIT_OK, ok_msg
    return EXIT_PRODUCT, (
        f"{name}: PRODUCT FAILURE: a debug image was booted but `hull console` reached no shell: "
        f"{console or 'not run'}"
    )


def check_soak(fields, cycles, l1_hung=False):
    """The ctr step's soak (issue 14): every cycle and fault ended well and the counts came back."""
    if fields is None:
        if l1_hung:
            return EXIT_LAB_HANG, f"ctr-soak: LAB HANG: L1 stopped before the soak ({cycles} cycles) reported"
        return EXIT_PRODUCT, f"ctr-soak: PRODUCT FAILURE: no LAB-SOAK line ({cycles} cycles asked for)"
    figures = (
        f"{fields.get('ok', '?')} of {fields.get('cycles', '?')} cycles ok, `ctr run --rm ... true` "
        f"min {fields.get('min_ms', '?')} / median {fields.get('median_ms', '?')} / max {fields.get('max_ms', '?')} ms\n"
        f"    faults (SIGKILL): {fields.get('faults', '')}\n"
        f"    counts before: {fields.get('before', '')}\n"
        f"    after cycles + vmm/virtiofsd/shim faults: {fields.get('mid', '')}\n"
        f"    after the containerd restart: {fields.get('after', '')}"
    )
    if fields.get("status") != "ok" or fields.get("cycles") != str(cycles):
        why = fields.get("detail") or f"status={fields.get('status')}"
        return EXIT_PRODUCT, f"ctr-soak: PRODUCT FAILURE: {why}\n    " + figures
    return EXIT_OK, "ctr-soak: ok: " + figures


def cmd_bench(lab):
    lab.prepare(need_hull=True)
    n = lab.args.n
    # hull-vmm with the initramfs (the same guest QEMU and Firecracker boot) and, when built, with
    # the pmem root image the shim boots by default (QEMU's microvm has no virtio-pmem on MMIO).
    vmms = ["hull", "hull-pmem", "qemu"] if lab.assets.has_pmem_image else ["hull", "qemu"]
    if lab.assets.has_firecracker:
        vmms.append("firecracker")
    # One unmeasured boot each first: the first start reads the VMM from disk.
    runs = [lab.spec(f"{v}-warmup", v) for v in vmms]
    for i in range(1, n + 1):
        runs += [lab.spec(f"{v}-{i}", v) for v in vmms]
    # The agent API through the vsock device vs the same client and agent on a plain Unix socket.
    lab.config.health_peer = True
    lab.config.ctr_bench = n
    extra = [lab.health_spec("bench-health")]
    if lab.assets.has_containerd:
        extra.append(lab.ctr_spec("bench-ctr"))
    runs += extra
    results = lab.execute(runs, lab.args.l1_boots)
    ok = {v: [] for v in vmms}
    for r in runs:
        if r in extra:
            continue
        if results[r.name] and results[r.name][-1].status == "ok" and not r.name.endswith("warmup"):
            ok[r.vmm].append(results[r.name][-1])
    hangs = sum(1 for r in runs for a in results[r.name] if a.status == "hang")
    fails = [r.name for r in runs if results[r.name] and results[r.name][-1].status == "fail"]
    log("")
    log("==== LAB BENCH (measured in the nested lab: QEMU TCG L1 with SVM KVM; figures, not asserts) ====")
    log(lab.l1_summary())
    log(
        f"guest: {size_mib(lab.args.guest_kernel)} vmlinux, {size_mib(lab.args.guest_initramfs)} initramfs; "
        f"1 vCPU, 256 MiB; {n} boots per VMM, interleaved; {hangs} lab hang(s) retried; failed: {fails or 'none'}"
    )
    log(bench_table(ok))
    for vmm in vmms:
        log(f"  {vmm} agent lines: {sorted({a.agent for a in ok[vmm]})}")
    bench_extras(results, extra)
    bench_ctr_runtimes(lab.ctr_bench)
    bench_ctr_pss(lab.ctr_pss)
    return EXIT_OK if ok["hull"] and not fails else EXIT_PRODUCT


BENCH_PEERS = {"qemu": "QEMU", "firecracker": "FC"}


def bench_table(ok):
    """The boot figures per VMM (`ok`: the ok results by VMM), with each peer's (QEMU,
    Firecracker) over each hull's."""
    # A figure a run does not have (QEMU has no boot marker: boot_ms -1) is None and left out.
    metrics = [
        ("guest_boot_ms (boot marker, hull-vmm)", lambda a: a.boot_ms if a.boot_ms >= 0 else None),
        ("VMM start -> agent line (ms)", lambda a: a.agent_ms),
        ("VMM start -> VMM exit (ms)", lambda a: a.wall_ms),
        ("guest clock at last kernel message (ms)", lambda a: a.kmsg_s * 1000 if a.kmsg_s >= 0 else None),
        ("VMM peak RSS (MiB)", lambda a: a.rss_kib / 1024),
    ]
    names = {"hull": "hull-vmm", "hull-pmem": "hull pmem", "qemu": "QEMU microvm", "firecracker": "Firecracker"}
    hulls = [v for v in ok if v not in BENCH_PEERS]
    ratios = [(p, v) for p in BENCH_PEERS if p in ok for v in hulls]
    head = f"{'metric (median)':40}" + "".join(f" {names[v]:>12}" for v in ok)
    head += "".join(f" {BENCH_PEERS[p] + '/' + names[v]:>18}" for p, v in ratios)
    lines = [head]
    for label, value in metrics:
        med = {v: median([x for x in map(value, ok[v]) if x is not None]) for v in ok}
        row = f"{label:40}" + "".join(f" {fmt_num(med[v]):>12}" for v in ok)
        for p, v in ratios:
            q, h = med[p], med[v]
            row += f" {(f'{q / h:.2f}x' if h and q else '-'):>18}"
        lines.append(row)
    return "\n".join(lines)


def bench_extras(results, extra):
    """Prints the Health-over-vsock and `ctr run` figures of the bench."""
    done = {r.name: results[r.name][-1] for r in extra if results[r.name] and results[r.name][-1].status == "ok"}
    health = done.get("bench-health")
    if health:
        vsock = _num(health.fields.get("call_ms"))
        plain = _num(health.fields.get("peer_call_ms"))
        ratio = f"{vsock / plain:.2f}x" if vsock > 0 and plain > 0 else "-"
        log(
            "`hull agent health` run (process start + connect + Health + Version), mean of 10, in L1: "
            f"through hull-vmm's vsock device {fmt_num(vsock if vsock > 0 else None)} ms, "
            f"hull-agent on a plain Unix socket in L1 {fmt_num(plain if plain > 0 else None)} ms, ratio {ratio}"
        )
    else:
        log("Health over vsock: no result (see the log)")
    ctr = done.get("bench-ctr")
    if ctr:
        log(f"`ctr run --rm --runtime io.containerd.hull.v2 IMG ID uname -r` (whole run): {ctr.wall_ms:.0f} ms")
    elif "bench-ctr" in {r.name for r in extra}:
        log("ctr run: no result (see the log)")


def bench_ctr_runtimes(walls):
    """`ctr run --rm IMG ID true`: hull (a microVM per run) vs runc, median and ratio."""
    if not walls:
        return
    ok = {rt: [w for w in ws if w is not None and w > 0] for rt, ws in walls.items()}
    fails = {rt: sum(1 for w in ws if w is None) for rt, ws in walls.items()}
    h, r = median(ok.get("hull", [])), median(ok.get("runc", []))
    ratio = f"{h / r:.1f}x" if h and r else "-"
    log(
        f"`ctr run --rm IMG ID true` in L1, median: hull {fmt_num(h)} ms (n={len(ok.get('hull', []))}, "
        f"failed {fails.get('hull', 0)}), runc {fmt_num(r)} ms (n={len(ok.get('runc', []))}, "
        f"failed {fails.get('runc', 0)}), hull/runc {ratio}"
    )


def bench_ctr_pss(pss):
    """Host memory per idle container: PSS of the shim and everything under it."""
    if not pss:
        return
    h, r = pss.get("hull", -1), pss.get("runc", -1)
    ratio = f"{h / r:.1f}x" if h > 0 and r > 0 else "-"
    log(
        "one idle container (`sleep 1000`), PSS of its shim and all its descendants in L1: "
        f"hull {fmt_num(h / 1024 if h > 0 else None)} MiB (shim + hull-vmm with the guest's touched memory + "
        f"virtiofsd), runc {fmt_num(r / 1024 if r > 0 else None)} MiB (shim + container), hull/runc {ratio}"
    )


def cmd_hangrate(lab):
    vmm = lab.args.vmm
    lab.prepare(need_hull=vmm == "hull")
    runs = [
        lab.spec(f"rate-{i}", vmm, vcpus=lab.args.vcpus, mem_mib=lab.args.mem, attempts=1)
        for i in range(1, lab.args.n + 1)
    ]
    results = lab.execute(runs, lab.args.l1_boots)
    attempts = [a for r in runs for a in results[r.name]]
    by_status = {s: [a for a in attempts if a.status == s] for s in ("ok", "hang", "fail")}
    never = sum(1 for r in runs if not results[r.name])
    log("")
    log(f"==== LAB HANG RATE: {vmm}, {lab.args.vcpus} vCPU(s), {lab.args.mem} MiB, cmdline '{lab.cmdline(vmm)}' ====")
    log(lab.l1_summary())
    log(
        f"L2 boots: {len(attempts)} ran, ok {len(by_status['ok'])}, hang {len(by_status['hang'])}, "
        f"fail {len(by_status['fail'])}, not run (L1 hung) {never}"
    )
    oks = by_status["ok"]
    log(f"VMM start -> agent line: {fmt_stats([a.agent_ms for a in oks], 'ms')}")
    log(f"VMM wall: {fmt_stats([a.wall_ms for a in oks], 'ms')}")
    if vmm == "hull":
        log(f"guest_boot_ms: {fmt_stats([a.boot_ms for a in oks if a.boot_ms >= 0], 'ms')}")
    for a in by_status["fail"][:3]:
        log(f"fail {a.name}: rc={a.rc}\n{tail_text(a)}")
    return EXIT_OK


def cmd_assets(lab):
    lab.assets = lab_assets.build(
        lab.args.cache, lab.build_dir, lab.args.peer_qemu, lab.args.guest_kernel, lab.args.guest_initramfs,
        firecracker=lab.args.firecracker,
    )
    for k, v in vars(lab.assets).items():
        log(f"{k}: {v}")
    return EXIT_OK


def size_mib(path):
    p = Path(path)
    return f"{p.stat().st_size / (1 << 20):.1f} MiB" if p.exists() else "missing"


def parse_args(argv):
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["smoke", "test", "ctr", "pod", "quickstart", "bench", "hangrate", "demo", "assets"])
    ap.add_argument("--build-dir", default=env("BUILD_DIR", "build"))
    ap.add_argument("--cache", default=env("HULL_CACHE", "/var/cache/hull"))
    ap.add_argument("--qemu", default=env("LAB_QEMU", "qemu-system-x86_64"), help="QEMU that runs L1")
    ap.add_argument("--peer-qemu", default="qemu-system-x86_64", help="QEMU copied into L1 as the microvm peer")
    ap.add_argument("--firecracker", default=env("LAB_FIRECRACKER", ""),
                    help="bench: a static Firecracker binary (its release build) copied into L1 as a second peer")
    # Defaults chosen by the reliability runs in README.md: one L1 vCPU, single-threaded TCG.
    ap.add_argument("--accel", default=env("LAB_ACCEL", "tcg,thread=single"), help="L1 -accel")
    ap.add_argument("--l1-cpu", default="EPYC,+svm,+npt")
    ap.add_argument("--l1-smp", type=int, default=int(env("LAB_L1_SMP", "1")), help="L1 vCPUs (2+ makes L2 hang)")
    ap.add_argument("--l1-append", default=env("LAB_L1_APPEND", ""), help="extra L1 kernel cmdline")
    ap.add_argument("--pin-cpu", type=int, default=None, help="pin the L2 VMM to this L1 CPU (taskset)")
    ap.add_argument("--kvm-amd", default="", help="kvm-amd module options in L1, e.g. npt=0")
    ap.add_argument("--l1-boots", type=int, default=3, help="L1 boots allowed (L1 hangs are retried)")
    ap.add_argument("--l2-timeout", type=int, default=30, help="seconds per L2 boot before it counts as a hang")
    ap.add_argument("--l2-attempts", type=int, default=3, help="attempts per L2 boot (hangs are retried)")
    ap.add_argument("--extra", default=env("LAB_L2_EXTRA", DEFAULT_EXTRA), help="appended to the guest cmdline")
    ap.add_argument("--vmm", choices=["hull", "qemu"], default="hull", help="L2 VMM for smoke/test/hangrate")
    ap.add_argument("--n", type=int, default=5, help="bench: boots per VMM; hangrate: L2 boots")
    ap.add_argument("--vcpus", type=int, default=1, help="hangrate: L2 vCPUs")
    ap.add_argument("--mem", type=int, default=256, help="hangrate: L2 MiB")
    ap.add_argument("--no-health", action="store_true", help="smoke/test: skip the vsock Health run")
    ap.add_argument("--ctr-bench", action="store_true", help="ctr: also time `ctr run` and measure PSS, vs runc")
    ap.add_argument("--hull-bench", action="store_true",
                    help="ctr, pod: also run `hull bench --n N` in L1 (VM mode vs runc; pod: its CRI groups)")
    ap.add_argument("--hull-bench-groups", default="",
                    help="--hull-bench: its --groups (default: run.sh's list for the step)")
    ap.add_argument("--hull-bench-pods", default=None, type=pod_counts,
                    help="--hull-bench: its --pods, the idle pod counts of the memory group (default 1,5)")
    ap.add_argument("--hull-config", action="append", default=[], metavar="KEY=VALUE",
                    help="ctr, pod: a top-level key of the step's hull.toml, e.g. free_page_reporting=false (repeatable)")
    ap.add_argument("--console-shell", action="store_true",
                    help="ctr: the guest image is a debug image; `hull console` must reach its shell")
    ap.add_argument("--soak", type=int, default=0, metavar="N",
                    help="ctr: also N create/delete cycles, SIGKILL faults and leak counts (issue 14)")  # fmt: skip
    ap.add_argument("--no-suite", action="store_true", help="smoke/test: skip the agent suite against a microVM")
    ap.add_argument("--no-pod", action="store_true", help="smoke/test: skip the pod (CRI) step")
    ap.add_argument("--no-quickstart", action="store_true", help="test: skip the README quick start step")
    ap.add_argument("--no-pool", action="store_true",
                    help="smoke/pod: the pod step without `hull pool run` (its first pod boots its own VM)")
    ap.add_argument("--full", action="store_true", help="pod: the full pod scenario (two pods, bench) instead of the smoke")
    ap.add_argument("--pod-bench", type=int, default=POD_BENCH_N, help="full pod scenario: pod starts per runtime")
    ap.add_argument("--guest-kernel", default=None)
    ap.add_argument("--guest-initramfs", default=None)
    args = ap.parse_args(argv)
    build = (REPO / args.build_dir).resolve()
    args.guest_kernel = Path(args.guest_kernel or build / "guest/vmlinux").resolve()
    args.guest_initramfs = Path(args.guest_initramfs or build / "guest/initramfs.cpio").resolve()
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not shutil.which(args.qemu):
        log(f"lab: SETUP ERROR: {args.qemu} not found (apt-get install qemu-system-x86)")
        return EXIT_SETUP
    lab = Lab(args)
    commands = {
        "smoke": cmd_smoke,
        "test": cmd_test,
        "ctr": cmd_ctr,
        "pod": cmd_pod,
        "quickstart": cmd_quickstart,
        "bench": cmd_bench,
        "hangrate": cmd_hangrate,
        "demo": cmd_demo,
        "assets": cmd_assets,
    }
    try:
        return commands[args.command](lab)
    except lab_assets.AssetError as e:
        log(f"lab: SETUP ERROR: {e}")
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
