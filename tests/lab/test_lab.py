"""Host-side tests of the lab's own pieces (no VM needed, a few seconds).

Run: python3 -B -m unittest discover -s tests/lab -p 'test_*.py'
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402
import lab_assets  # noqa: E402
import lab_l1  # noqa: E402

LAB_DIR = Path(__file__).resolve().parent


class CpioWriterTest(unittest.TestCase):
    @unittest.skipUnless(shutil.which("cpio"), "cpio not installed")
    def test_cpio_lists_what_was_written(self):
        w = lab_assets.CpioWriter()
        w.directory("dev")
        w.char_device("dev/console", 5, 1)
        w.file("init", b"#!/bin/sh\necho hi\n", executable=True)
        w.symlink("sh", "busybox")
        data = w.finish()
        self.assertEqual(len(data) % 4, 0)
        listing = subprocess.run(["cpio", "-tv"], input=data, capture_output=True).stdout.decode()
        lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing.splitlines()}
        self.assertTrue(lines["dev"].startswith("d"))
        self.assertTrue(lines["dev/console"].startswith("c"))
        self.assertIn("5,", lines["dev/console"])
        self.assertTrue(lines["init"].startswith("-rwxr-xr-x"))
        self.assertIn("sh -> busybox", listing)
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["cpio", "-id", "--quiet", "init"], input=data, cwd=d, check=True)
            self.assertEqual(Path(d, "init").read_bytes(), b"#!/bin/sh\necho hi\n")


class ModuleOrderTest(unittest.TestCase):
    def make_tree(self, root, modules, builtin=()):
        for rel, deps in modules.items():
            p = Path(root, "kernel", rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"\x7fELF junk\x00license=GPL\x00depends=" + ",".join(deps).encode() + b"\x00name=x\x00")
        Path(root, "modules.builtin").write_text("".join(f"kernel/{b}\n" for b in builtin))

    def test_dependencies_come_first_and_builtins_are_skipped(self):
        with tempfile.TemporaryDirectory() as d:
            self.make_tree(d, {
                "arch/x86/kvm/kvm-amd.ko": ["kvm"],
                "arch/x86/kvm/kvm.ko": ["irqbypass"],
                "virt/lib/irqbypass.ko": [],
                "drivers/block/virtio_blk.ko": ["virtio", "virtio_ring"],
                "drivers/virtio/virtio_ring.ko": [],
            }, builtin=["drivers/virtio/virtio.ko"])  # fmt: skip
            names = [p.name for p in lab_assets.modules_in_load_order(d, ["kvm_amd", "virtio_blk"])]
            self.assertEqual(names, ["irqbypass.ko", "kvm.ko", "kvm-amd.ko", "virtio_ring.ko", "virtio_blk.ko"])

    def test_missing_module_is_an_error(self):
        with tempfile.TemporaryDirectory() as d:
            self.make_tree(d, {"a.ko": ["nothere"]})
            with self.assertRaises(lab_assets.AssetError):
                lab_assets.modules_in_load_order(d, ["a"])


class ConsoleParsingTest(unittest.TestCase):
    def test_result_line(self):
        r = lab_l1.parse_result(
            "name=smoke attempt=2 vmm=hull status=ok rc=0 wall_ms=812.5 agent_ms=790.1 boot_ms=401 "
            'rss_kib=40212 agent="HULL-AGENT version=0.1.0 api=1 kernel=6.1.192-hull"'
        )
        self.assertEqual((r.name, r.attempt, r.vmm, r.status, r.rc), ("smoke", 2, "hull", "ok", 0))
        self.assertEqual((r.wall_ms, r.agent_ms, r.boot_ms, r.rss_kib), (812.5, 790.1, 401.0, 40212))
        self.assertEqual(lab_l1.parse_fields(r.agent)["kernel"], "6.1.192-hull")

    def test_garbage_numbers_become_minus_one(self):
        r = lab_l1.parse_result("name=x attempt=1 vmm=hull status=fail rc= wall_ms=abc")
        self.assertEqual((r.rc, r.wall_ms, r.boot_ms, r.kmsg_s), (-1, -1.0, -1.0, -1.0))

    def test_handle_collects_tails_and_results_after_kernel_noise(self):
        outcome = lab_l1.L1Outcome(status="error", detail="")
        tails = {}
        self.assertTrue(
            lab_l1._handle("LAB-L1 event=init uptime=4.0 kernel=6.1.0-56-cloud-amd64 cpus=2", outcome, tails, 7.0)
        )
        lab_l1._handle(
            '[  9.1] noise LAB-RESULT name=a attempt=1 vmm=hull status=fail rc=1 agent=""', outcome, tails, 9
        )
        lab_l1._handle("LAB-TAIL name=a attempt=1 stream=stderr | error: boom", outcome, tails, 9)
        lab_l1._handle("LAB-DONE uptime=9", outcome, tails, 9)
        self.assertEqual(outcome.kernel_release, "6.1.0-56-cloud-amd64")
        self.assertEqual(outcome.status, "done")
        self.assertEqual(outcome.results[0].tail, ["stderr: error: boom"])

    def test_plan_quotes_cmdline(self):
        spec = lab_l1.RunSpec("s", "hull", 256, 1, "console=ttyS0 it's", 30, 3)
        plan = lab_l1.plan_script([spec], "npt=1")
        self.assertIn("lab_kvm npt=1\n", plan)
        out = subprocess.run(
            ["sh", "-c", "lab_kvm() { :; }; lab_run() { printf '%s|' \"$@\"; }; . /dev/stdin"],
            input=plan, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        self.assertEqual(out, "s|hull|30|3|256|1|console=ttyS0 it's|")


@unittest.skipUnless(shutil.which("cc"), "no C compiler")
class LabwatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(tempfile.mkdtemp())
        cls.bin = cls.dir / "labwatch"
        subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", cls.bin, LAB_DIR / "labwatch.c"], check=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def watch(self, timeout, script, *markers):
        args = [self.bin, "-t", str(timeout), "-o", self.dir / "out", "-e", self.dir / "err"]
        for m in markers:
            args += ["-m", m]
        line = subprocess.run(args + ["--", "sh", "-c", script], capture_output=True, text=True, check=True).stdout
        self.assertTrue(line.startswith("LABWATCH "), line)
        return lab_l1.parse_fields(line)

    def test_exit_code_markers_and_captures(self):
        f = self.watch(
            10,
            "sleep 0.3; echo 'x HULL-AGENT kernel=1'; echo 'guest_boot_ms=5' >&2; exit 3",
            "agent=HULL-AGENT",
            "never=NOPE",
        )
        self.assertEqual((f["rc"], f["timedout"]), ("3", "0"))
        self.assertGreaterEqual(float(f["agent_ms"]), 250)
        self.assertEqual(f["never_ms"], "-1.0")
        self.assertEqual((self.dir / "out").read_text(), "x HULL-AGENT kernel=1\n")
        self.assertEqual((self.dir / "err").read_text(), "guest_boot_ms=5\n")

    def test_timeout_kills_the_process_group(self):
        f = self.watch(1, "sleep 30 & sleep 30")
        self.assertEqual((f["rc"], f["timedout"]), ("137", "1"))
        self.assertLess(float(f["wall_ms"]), 5000)

    def test_peak_rss_is_reported(self):
        f = self.watch(20, "python3 -c 'b = bytearray(64 << 20); b[::4096] = b\"x\" * len(b[::4096])'")
        self.assertGreater(int(f["maxrss_kib"]), 60 * 1024)


@unittest.skipUnless(shutil.which("cc") and shutil.which("busybox"), "needs cc and busybox")
class RunScriptTest(unittest.TestCase):
    """run.sh under busybox sh, with a scripted program in hull-vmm's place.

    The program behaves per attempt (read from a counter file): this checks
    run.sh's classification, retry of hangs and its result lines, not the VMM.
    """

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        (self.dir / "lab/bin").mkdir(parents=True)
        (self.dir / "tmp").mkdir()
        subprocess.run(["cc", "-O2", "-o", self.dir / "lab/bin/labwatch", LAB_DIR / "labwatch.c"], check=True)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def run_plan(self, vmm_script, plan, extra_env=None):
        vmm = self.dir / "lab/bin/hull-vmm"
        vmm.write_text(
            "#!/bin/sh\nn=$(cat %s/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > %s/count\n%s\n"
            % (self.dir, self.dir, vmm_script)
        )
        vmm.chmod(0o755)
        (self.dir / "plan.sh").write_text(plan)
        env = {"PATH": "/usr/bin:/bin", "LAB": str(self.dir / "lab"), "TMP": str(self.dir / "tmp")}
        env.update(extra_env or {})
        out = subprocess.run(
            ["busybox", "sh", LAB_DIR / "run.sh", self.dir / "plan.sh"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        outcome = lab_l1.L1Outcome(status="error", detail="")
        tails = {}
        for line in out.splitlines():
            lab_l1._handle(line, outcome, tails, 0)
        return outcome.results

    def test_hang_is_retried_then_ok_is_parsed(self):
        script = (
            '[ "$n" = 1 ] && sleep 30\n'
            'echo "\033[2mINFO\033[0m guest_boot_ms=412 done" >&2\n'
            'echo "[    0.000000] Linux version"; echo "[    1.250000] Run /init"\n'
            'echo "x HULL-AGENT version=1 api=1 kernel=6.1.192-hull \\"q\\""\nexit 0'
        )
        results = self.run_plan(script, "lab_run smoke hull 2 3 256 1 'console=ttyS0'\n")
        self.assertEqual([r.status for r in results], ["hang", "ok"])
        ok = results[1]
        self.assertEqual((ok.attempt, ok.rc, ok.boot_ms, ok.kmsg_s), (2, 0, 412.0, 1.25))
        self.assertEqual(ok.agent, "HULL-AGENT version=1 api=1 kernel=6.1.192-hull 'q'")
        self.assertGreater(ok.wall_ms, 0)
        self.assertTrue(results[0].tail, "a hang shows the tail of the output")

    def test_nonzero_exit_is_a_failure_with_stderr_tail_and_no_retry(self):
        results = self.run_plan('echo "boot failed: no kernel" >&2; exit 2', "lab_run a hull 5 3 256 1 c\n")
        self.assertEqual([(r.status, r.rc) for r in results], [("fail", 2)])
        self.assertIn("stderr: boot failed: no kernel", results[0].tail)

    def test_direct_boots_keep_guest_ram_on_l1s_tmpfs_when_it_has_one(self):
        show_args = 'echo "args: $*" >&2; exit 2'
        plan = "lab_run a hull 5 1 256 1 c\nlab_run b hull-pmem 5 1 256 1 c\n"
        with_dir = self.run_plan(show_args, plan, {"LAB_RAM_DIR": "/tmp/hull-ram"})
        self.assertEqual([r.vmm for r in with_dir], ["hull", "hull-pmem"])
        for result in with_dir:
            self.assertIn("--mem-dir /tmp/hull-ram --mem-mib 256", "\n".join(result.tail))
        (self.dir / "count").unlink()
        without = self.run_plan(show_args, plan)
        self.assertEqual(len(without), 2)
        for result in without:
            self.assertNotIn("--mem-dir", "\n".join(result.tail))
            self.assertIn("--mem-mib 256", "\n".join(result.tail))

    def test_exit_zero_without_agent_line_is_a_failure(self):
        results = self.run_plan("echo booted; exit 0", "lab_run a hull 5 3 256 1 c\n")
        self.assertEqual([(r.status, r.rc) for r in results], [("fail", 0)])
        self.assertIn("console: booted", results[0].tail)


    # A VMM that serves "vsock" (creates the --vsock-uds path) and stops on SIGTERM, and a `hull`
    # that answers when that path exists: checks lab_health's flow and classification.
    FAKE_HULL = (
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = --uds ] && uds=$2; shift; done\n'
        'for i in 1 2 3 4 5 6 7 8 9 10; do [ -e "$uds" ] && break; sleep 0.2; done\n'
        '[ -e "$uds" ] || { echo "hull: connecting to the agent: refused" >&2; exit 1; }\n'
        'grep -q broken "$uds" && { echo "hull: Health: closed" >&2; exit 1; }\n'
        'echo "health: SERVING_STATUS_SERVING"; echo "agent_version: 0.1.0"; echo "api_version: 1"\n'
    )
    SERVING_VMM = (
        'while [ $# -gt 0 ]; do [ "$1" = --vsock-uds ] && uds=$2; shift; done\n'
        "trap 'echo stopping >&2; exit 0' TERM\n"
        'echo "guest_boot_ms=300" >&2; echo "HULL-AGENT version=0.1.0 api=1 kernel=6.1.192"\n'
        "%s\n"
        "while :; do sleep 0.1; done"
    )

    def run_health(self, vmm_body, plan="lab_health h 6 2 256 1 'console=ttyS0'\n"):
        hull = self.dir / "lab/bin/hull"
        hull.write_text(self.FAKE_HULL)
        hull.chmod(0o755)
        return self.run_plan(vmm_body, "LAB_HEALTH_CALLS=2\n" + plan)

    def test_health_answer_and_sigterm_exit_are_parsed(self):
        results = self.run_health(self.SERVING_VMM % 'touch "$uds"')
        self.assertEqual([(r.status, r.kind, r.rc) for r in results], [("ok", "health", 0)])
        r = results[0]
        self.assertEqual(lab.parse_health(r.detail)["health"], "SERVING_STATUS_SERVING")
        self.assertEqual(r.boot_ms, 300.0)
        self.assertGreaterEqual(float(r.fields["call_ms"]), 0)

    def test_health_without_agent_line_is_a_hang_and_retried(self):
        script = '[ "$n" = 1 ] && { trap "exit 0" TERM; while :; do sleep 0.1; done; }\n' + (
            self.SERVING_VMM % 'touch "$uds"'
        )
        results = self.run_health(script)
        self.assertEqual([r.status for r in results], ["hang", "ok"])
        self.assertIn("hull: hull: connecting to the agent: refused", results[0].tail)

    def test_health_error_after_agent_line_is_a_failure(self):
        results = self.run_health(self.SERVING_VMM % 'echo broken > "$uds"')
        self.assertEqual([r.status for r in results], ["fail"])
        self.assertIn("hull: hull: Health: closed", results[0].tail)

    # containerd: binds the grpc address of its --config and waits; ctr: import ok, run per script.
    FAKE_CONTAINERD = (
        "#!/bin/sh\n"
        'addr=$(sed -n \'s/^ *address = "\\(.*\\)"/\\1/p\' "$2" | head -n1)\n'
        "echo \"$HULL_CONFIG\" > \"${addr%/*}/hull-config-seen\"\n"
        'exec python3 -c "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); '
        'time.sleep(60)" "$addr"\n'
    )

    def run_ctr(self, run_script, attempts=2):
        bins = self.dir / "lab/bin"
        (bins / "containerd").write_text(self.FAKE_CONTAINERD)
        (bins / "ctr").write_text(
            "#!/bin/sh\ncase \"$*\" in *' image import '*) exit 0 ;; esac\n"
            "n=$(cat %s/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > %s/count\n%s\n"
            % (self.dir, self.dir, run_script)
        )
        for b in ("containerd", "ctr"):
            (bins / b).chmod(0o755)
        (self.dir / "lab/sysroot").mkdir()
        plan = "lab_ctr c 3 %d 256 1 quiet\n" % attempts
        results = self.run_plan("exit 0", plan)
        hull_toml = (self.dir / "tmp/ctr/hull.toml").read_text()
        return results, hull_toml

    def test_ctr_output_is_reported_with_l1s_release(self):
        script = 'case "$*" in *"--runtime io.containerd.hull.v2"*"uname -r") echo 6.1.192 ;; esac'
        results, hull_toml = self.run_ctr(script)
        self.assertEqual([(r.status, r.kind) for r in results], [("ok", "ctr")])
        self.assertEqual(results[0].detail, "6.1.192")
        self.assertEqual(results[0].fields["l1_kernel"], os.uname().release)
        self.assertIn('mode = "vm"', hull_toml)
        self.assertIn('kernel_params = "quiet"', hull_toml)
        self.assertTrue((self.dir / "tmp/ctr/run/hull-config-seen").exists(), "containerd got HULL_CONFIG")

    def test_ctr_timeout_is_a_hang_and_retried(self):
        results, _ = self.run_ctr('[ "$n" = 1 ] && sleep 30\necho 6.1.192')
        self.assertEqual([r.status for r in results], ["hang", "ok"])

    def test_ctr_error_is_a_failure_with_its_stderr(self):
        results, _ = self.run_ctr('echo "ctr: failed to create shim task: boom" >&2; exit 1')
        self.assertEqual([(r.status, r.rc) for r in results], [("fail", 1)])
        self.assertIn("ctr: ctr: failed to create shim task: boom", results[0].tail)


    # lab-pod, scripted per attempt: prints what the real client prints (checks, figures, verdict).
    def run_pod(self, pod_script, attempts=2):
        bins = self.dir / "lab/bin"
        (bins / "containerd").write_text(self.FAKE_CONTAINERD)
        (bins / "ctr").write_text("#!/bin/sh\ncase \"$*\" in *' image import '*) exit 0 ;; esac\nexit 1\n")
        (bins / "lab-pod").write_text(
            "#!/bin/sh\necho \"$*\" > %s/lab-pod-args\nn=$(cat %s/count 2>/dev/null || echo 0); n=$((n+1)); "
            "echo $n > %s/count\n%s\n" % (self.dir, self.dir, self.dir, pod_script)
        )
        for b in ("containerd", "ctr", "lab-pod"):
            (bins / b).chmod(0o755)
        (self.dir / "lab/sysroot").mkdir()
        plan = "LAB_POD_NET=skip\nlab_pod p 5 %d 256 1 '' '--full --bench 2'\n" % attempts
        return self.run_plan("exit 0", plan)

    POD_OK = (
        'echo "LAB-POD name=p attempt=$n check=pod-start status=ok detail=\\"pod abc\\""\n'
        'echo "LAB-POD-END name=p attempt=$n status=ok failed=\\"\\""'
    )

    def test_pod_checks_pass_and_options_reach_the_client(self):
        results = self.run_pod(self.POD_OK)
        self.assertEqual([(r.status, r.kind, r.rc) for r in results], [("ok", "pod", 0)])
        args = (self.dir / "lab-pod-args").read_text()
        self.assertIn("--full --bench 2", args)
        self.assertIn("--run-dir %s/tmp/pod.1/hull" % self.dir, args)
        hull_toml = (self.dir / "tmp/pod.1/hull.toml").read_text()
        self.assertIn('mode = "vm"', hull_toml)
        config = (self.dir / "tmp/pod.1/config.toml").read_text()
        self.assertIn('runtime_type = "io.containerd.hull.v2"', config)
        self.assertIn('sandbox_image = "lab.local/pause:lab"', config)
        self.assertIn('"type": "bridge"', (self.dir / "tmp/pod.1/cni/net.d/10-labnet.conflist").read_text())

    def test_pod_hang_is_retried_with_a_fresh_containerd(self):
        script = (
            '[ "$n" = 1 ] && { echo "LAB-POD-END name=p attempt=1 status=hang failed=\\"pod-start\\""; exit 1; }\n'
            + self.POD_OK
        )
        results = self.run_pod(script)
        self.assertEqual([r.status for r in results], ["hang", "ok"])
        self.assertTrue((self.dir / "tmp/pod.2/config.toml").exists(), "attempt 2 has its own containerd dir")

    def test_pod_timeout_is_a_hang(self):
        results = self.run_pod('[ "$n" = 1 ] && sleep 30\n' + self.POD_OK)
        self.assertEqual([r.status for r in results], ["hang", "ok"])

    def test_pod_failed_check_is_a_failure_with_the_clients_stderr(self):
        script = (
            'echo "LAB-POD name=p attempt=$n check=l1-http status=fail detail=\\"no page\\""\n'
            'echo "lab-pod: something broke" >&2\n'
            'echo "LAB-POD-END name=p attempt=$n status=fail failed=\\"l1-http\\""; exit 1'
        )
        results = self.run_pod(script)
        self.assertEqual([(r.status, r.rc) for r in results], [("fail", 1)])
        self.assertEqual(results[0].fields["failed"], "l1-http")
        self.assertIn("lab-pod: lab-pod: something broke", results[0].tail)

    # The quick start with a scratch root (LAB_QS_ROOT) in place of L1's /: a `hull` that installs
    # a few files with a manifest, answers check and uninstalls by the manifest (as the real one
    # does), a containerd that binds the default socket under the root, a ctr that records its
    # calls, and lab-pod scripted per attempt.
    FAKE_QS_HULL = r"""#!/bin/sh
cmd=$1; shift
while [ $# -gt 0 ]; do [ "$1" = --prefix ] && R=$2; shift; done
m=$R/usr/share/hull/install-manifest
case $cmd in
install)
    [ -e "$m" ] && { echo "hull: Hull is already installed here" >&2; exit 1; }
    for d in usr/local usr/local/bin usr/share usr/share/hull etc/hull etc/containerd etc/containerd/conf.d; do
        [ -d "$R/$d" ] || { mkdir "$R/$d"; echo "dir $R/$d" >> "$R/dirs"; }
    done
    cp "$0" "$R/usr/local/bin/hull"
    echo 'kernel_params = ""' > "$R/etc/hull/config.toml"
    echo "version = 2" > "$R/etc/containerd/config.toml"
    echo "[plugins]" > "$R/etc/containerd/conf.d/hull.toml"
    { echo "# hull install manifest"; cat "$R/dirs"; rm "$R/dirs"
      for f in usr/local/bin/hull etc/hull/config.toml etc/containerd/config.toml etc/containerd/conf.d/hull.toml; do
          echo "file $(sha256sum "$R/$f" | cut -d' ' -f1) $R/$f"
      done; } > "$m"
    for f in usr/local/bin/hull etc/hull/config.toml etc/containerd/config.toml etc/containerd/conf.d/hull.toml; do
        echo "installed $R/$f"
    done
    printf '\n# Kubernetes: apply this RuntimeClass\napiVersion: node.k8s.io/v1\nkind: RuntimeClass\n'
    printf 'metadata:\n  name: hull\nhandler: hull\noverhead:\n  podFixed:\n    memory: "160Mi"\n    cpu: "250m"\n'
    printf '\nCheck the host with `hull check`.\n'
    ;;
check)
    printf '%-11s %-4s %s\n' kvm ok "real" runtime ok \
        "hull in $R/etc/containerd/conf.d/hull.toml, ConfigPath $R/etc/hull/config.toml (restart containerd after a change)"
    ;;
uninstall)
    grep '^file ' "$m" | while read -r _ sum p; do
        case $p in *@LEAVE@) continue ;; esac
        if [ "$(sha256sum "$p" | cut -d' ' -f1)" = "$sum" ]; then rm -f "$p"; echo "removed $p"
        else echo "kept $p (changed since install; remove it yourself if unwanted)"; fi
    done
    grep '^dir ' "$m" | sed -n '1!G;h;$p' > "$R/dirs.rev"
    rm -f "$m"
    while read -r _ d; do rmdir "$d" 2>/dev/null; done < "$R/dirs.rev"
    rm -f "$R/dirs.rev"
    ;;
esac
"""
    FAKE_QS_CONTAINERD = (
        "#!/bin/sh\n"
        'R=${2%%/etc/containerd/config.toml}\n'
        '[ "$3" = config ] && { echo \'    sandbox_image = "registry.k8s.io/pause:3.6"\'; exit 0; }\n'
        'mkdir -p "$R/run/containerd"\n'
        'exec python3 -c "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); '
        'time.sleep(60)" "$R/run/containerd/containerd.sock"\n'
    )
    QS_POD_OK = (
        'cp "$(echo "$*" | sed \'s/.*--runtime-class \\([^ ]*\\).*/\\1/\')" %(dir)s/runtime-class-seen\n'
        'echo "LAB-POD name=q attempt=$n check=pod-start status=ok detail=\\"pod abc\\""\n'
        'echo "LAB-POD-END name=q attempt=$n status=ok failed=\\"\\""'
    )

    def run_quickstart(self, pod_script, attempts=2, leave="/nothing", params=""):
        root = self.dir / "root"
        root.mkdir()
        bins = self.dir / "lab/bin"
        for name, text in (("hull", self.FAKE_QS_HULL.replace("@LEAVE@", leave)), ("containerd", self.FAKE_QS_CONTAINERD),
                           ("ctr", '#!/bin/sh\necho "$*" >> %s/ctr-calls\n' % self.dir), ("virtiofsd", "#!/bin/sh\n"),
                           ("lab-pod", "#!/bin/sh\necho \"$*\" > %s/lab-pod-args\nn=$(cat %s/count 2>/dev/null || "
                            "echo 0); n=$((n+1)); echo $n > %s/count\n%s\n"
                            % (self.dir, self.dir, self.dir, pod_script % {"dir": self.dir}))):  # fmt: skip
            (bins / name).write_text(text)
            (bins / name).chmod(0o755)
        for d in ("sysroot", "cni", "guest"):
            (self.dir / "lab" / d).mkdir()
        (self.dir / "lab/cni/bridge").write_text("")
        plan = "LAB_POD_NET=skip\nLAB_QS_ROOT=%s\nlab_quickstart q 5 %d 256 1 '%s'\n" % (root, attempts, params)
        return self.run_plan("exit 0", plan), root

    def test_quickstart_installs_runs_the_pod_and_uninstalls(self):
        results, root = self.run_quickstart(self.QS_POD_OK)
        self.assertEqual([(r.status, r.kind, r.rc) for r in results], [("ok", "quickstart", 0)], results[0].tail)
        self.assertIn(f"ConfigPath {root}/etc/hull/config.toml", results[0].fields["runtime"])
        args = (self.dir / "lab-pod-args").read_text()
        self.assertIn(f"--quickstart --socket {root}/run/containerd/containerd.sock --run-dir {root}/run/hull", args)
        self.assertIn(f"--hull-config {root}/etc/hull/config.toml", args)
        self.assertIn("handler: hull", (self.dir / "runtime-class-seen").read_text())
        calls = (self.dir / "ctr-calls").read_text()
        self.assertIn("--namespace k8s.io image tag lab.local/busybox:lab docker.io/library/busybox:latest", calls)
        self.assertIn("image tag lab.local/pause:lab registry.k8s.io/pause:3.6", calls)
        self.assertIn('"bridge": "cni0"', (root / "etc/cni/net.d/10-containerd-net.conflist").read_text())
        self.assertTrue((root / "usr/libexec/virtiofsd").exists(), "virtiofsd where Debian's package puts it")
        for gone in ("usr/local", "usr/share/hull", "etc/hull", "etc/containerd"):
            self.assertFalse((root / gone).exists(), f"{gone} left after hull uninstall")

    def test_quickstart_uninstall_leaving_a_file_fails_the_run(self):
        results, root = self.run_quickstart(self.QS_POD_OK, leave="conf.d/hull.toml")
        self.assertEqual([(r.status, r.fields["failed"]) for r in results], [("fail", "uninstall")])
        self.assertTrue((root / "etc/containerd/conf.d/hull.toml").exists())

    def test_quickstart_config_edit_is_kept_and_named_by_uninstall(self):
        results, root = self.run_quickstart(self.QS_POD_OK, params="panic=0")
        self.assertEqual([r.status for r in results], ["ok"], results[0].tail)
        self.assertFalse((root / "etc/hull").exists(), "the lab removes the file it changed after uninstall")

    def test_quickstart_hang_is_retried_from_a_fresh_install(self):
        script = (
            '[ "$n" = 1 ] && { echo "LAB-POD-END name=q attempt=1 status=hang failed=\\"pod-start\\""; exit 1; }\n'
            + self.QS_POD_OK
        )
        results, _ = self.run_quickstart(script)
        self.assertEqual([r.status for r in results], ["hang", "ok"], results[-1].tail)


class PmemRootParamsTest(unittest.TestCase):
    def test_the_lab_boots_the_image_as_the_shim_does(self):
        import re

        config_rs = Path(__file__).resolve().parents[2] / "runtime-shim/src/config.rs"
        shim = re.search(r'pub const PMEM_ROOT_PARAMS: &str = "([^"]*)";', config_rs.read_text())
        self.assertIsNotNone(shim, "PMEM_ROOT_PARAMS not found in runtime-shim/src/config.rs")
        self.assertEqual(lab.PMEM_ROOT_PARAMS, shim.group(1))


class BenchTableTest(unittest.TestCase):
    def test_each_hull_column_gets_its_qemu_ratio(self):
        import lab_l1

        def attempt(vmm, agent_ms, boot_ms):
            return lab_l1.parse_result(
                f"LAB-RESULT name=x attempt=1 vmm={vmm} status=ok rc=0 wall_ms={agent_ms + 100} "
                f"agent_ms={agent_ms} boot_ms={boot_ms} kmsg_s=1.5 rss_kib=2048 agent=\"a\""
            )

        ok = {
            "hull": [attempt("hull", 2000, 1500), attempt("hull", 2200, 1600)],
            "hull-pmem": [attempt("hull-pmem", 1600, 1200)],
            "qemu": [attempt("qemu", 1800, -1)],
        }
        table = lab.bench_table(ok).splitlines()
        self.assertIn("QEMU/hull-vmm", table[0])
        self.assertIn("QEMU/hull pmem", table[0])
        agent = next(line for line in table if line.startswith("VMM start -> agent line"))
        # hull median 2100, pmem 1600, QEMU 1800: 1800/2100 and 1800/1600.
        self.assertEqual(agent.split()[-5:], ["2100", "1600", "1800", "0.86x", "1.12x"])
        marker = next(line for line in table if line.startswith("guest_boot_ms"))
        self.assertEqual(marker.split()[-5:], ["1550", "1200", "-", "-", "-"])


    def test_firecracker_gets_its_own_ratio_columns(self):
        import lab_l1

        def attempt(vmm, agent_ms):
            return lab_l1.parse_result(
                f"LAB-RESULT name=x attempt=1 vmm={vmm} status=ok rc=0 wall_ms={agent_ms + 100} "
                f"agent_ms={agent_ms} boot_ms=-1 kmsg_s=1.5 rss_kib=2048 agent=\"a\""
            )

        ok = {
            "hull": [attempt("hull", 2000)],
            "hull-pmem": [attempt("hull-pmem", 1600)],
            "qemu": [attempt("qemu", 1800)],
            "firecracker": [attempt("firecracker", 2400)],
        }
        table = lab.bench_table(ok).splitlines()
        columns = ["QEMU/hull-vmm", "QEMU/hull pmem", "FC/hull-vmm", "FC/hull pmem"]
        self.assertEqual([c for c in columns if c in table[0]], columns, table[0])
        self.assertLess(table[0].index("QEMU/hull pmem"), table[0].index("FC/hull-vmm"))
        agent = next(line for line in table if line.startswith("VMM start -> agent line"))
        # hull 2000, pmem 1600, QEMU 1800, Firecracker 2400.
        self.assertEqual(agent.split()[-8:], ["2000", "1600", "1800", "2400", "0.90x", "1.12x", "1.20x", "1.50x"])


class StaticExecutableTest(unittest.TestCase):
    def elf(self, interp):
        """A minimal 64-bit ELF header and two program headers (PT_LOAD, then PT_INTERP or PT_NOTE)."""
        head = bytearray(64)
        head[:6] = b"\x7fELF\x02\x01"
        head[0x20:0x28] = (64).to_bytes(8, "little")
        head[0x36:0x38] = (56).to_bytes(2, "little")
        head[0x38:0x3A] = (2).to_bytes(2, "little")
        load = (1).to_bytes(4, "little") + bytes(52)
        second = (3 if interp else 4).to_bytes(4, "little") + bytes(52)
        return bytes(head) + load + second

    def test_an_interpreter_makes_it_dynamic(self):
        self.assertTrue(lab_assets.has_elf_interpreter(self.elf(True)))
        self.assertFalse(lab_assets.has_elf_interpreter(self.elf(False)))

    def test_bad_files_are_refused_by_name(self):
        with tempfile.TemporaryDirectory() as d:
            script = Path(d) / "fc"
            script.write_text("#!/bin/sh\n")
            with self.assertRaisesRegex(lab_assets.AssetError, r"--firecracker .*fc: not a 64-bit"):
                lab_assets.static_executable(script, "--firecracker")
            dynamic = Path(d) / "dyn"
            dynamic.write_bytes(self.elf(True))
            with self.assertRaisesRegex(lab_assets.AssetError, "dynamically linked"):
                lab_assets.static_executable(dynamic, "--firecracker")
            with self.assertRaisesRegex(lab_assets.AssetError, "no such file"):
                lab_assets.static_executable(Path(d) / "none", "--firecracker")
            static = Path(d) / "static"
            static.write_bytes(self.elf(False))
            self.assertEqual(lab_assets.static_executable(static, "--firecracker"), static)


class PodJudgementTest(unittest.TestCase):
    def lab_with(self, checks, bench=None, net=None):
        return type("FakeLab", (), {
            "pod_checks": [lab_l1.parse_fields(c) for c in checks], "pod_times": [], "pod_bench": bench or {},
            "net_bench": net or {}})  # fmt: skip

    def result(self, status="ok", failed="", attempt=1):
        line = f'name=p attempt={attempt} vmm=hull kind=pod status={status} rc=0 wall_ms=17400 failed="{failed}" detail=""'
        return lab_l1.parse_result(line)

    def test_passing_pod_lists_checks_and_bench_ratio(self):
        bench = {("p", "hull"): lab_l1.parse_fields('runtime=hull total_ms="9000 10000 11000"'),
                 ("p", "runc"): lab_l1.parse_fields('runtime=runc total_ms="2000 2500 3000"')}  # fmt: skip
        lab_ = self.lab_with(['name=p attempt=1 check=l1-http status=ok detail="got page"'], bench)
        code, msg = lab.check_boot(lab_, "p", [self.result()], 3)
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("l1-http: ok: got page", msg)
        self.assertIn("hull/runc 4.0x", msg)

    def test_network_figures_have_medians_and_ratios(self):
        net = {("p", "hull"): lab_l1.parse_fields(
                   'runtime=hull bulk_mib=16 down_mbit="100 200 300" up_mbit="50 60 70" req_ms="4 5 6 7"'),
               ("p", "runc"): lab_l1.parse_fields(
                   'runtime=runc bulk_mib=16 down_mbit="400 400 400" up_mbit="100 120 140" req_ms="2 2 3 3"')}  # fmt: skip
        lab_ = self.lab_with(['name=p attempt=1 check=net-bench status=ok detail="3 rounds"'], net=net)
        code, msg = lab.check_boot(lab_, "p", [self.result()], 3)
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("16 MiB transfers", msg)
        self.assertRegex(msg, r"download pod->L1 +hull median +200 Mbit/s .*runc median +400 Mbit/s .*hull/runc 0.50x")
        self.assertRegex(msg, r"upload L1->pod .*hull/runc 0.50x")
        self.assertRegex(msg, r"request latency +hull median +5.5 ms p90 7.0 .*runc median +2.5 ms .*hull/runc 2.20x")

    def test_failed_check_is_a_product_failure_naming_it(self):
        lab_ = self.lab_with(['name=p attempt=1 check=l1-http status=fail detail="no page"'])
        code, msg = lab.check_boot(lab_, "p", [self.result("fail", "l1-http")], 3)
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("failed: l1-http", msg)
        self.assertIn("l1-http: fail: no page", msg)

    def test_hangs_are_a_lab_hang(self):
        code, _ = lab.check_boot(self.lab_with([]), "p", [self.result("hang"), self.result("hang", attempt=2)], 2)
        self.assertEqual(code, lab.EXIT_LAB_HANG)

    def test_plan_line_carries_the_clients_options(self):
        runs = [lab_l1.RunSpec("p", "hull", 256, 1, "", 180, 3, kind="pod", options="--full --bench 3")]
        self.assertIn("lab_pod p 180 3 256 1 '' '--full --bench 3'\n", lab_l1.plan_script(runs, ""))


class QuickstartJudgementTest(unittest.TestCase):
    ALL_OK = [f'name=q attempt=1 check={c} status=ok detail="fine"' for c in lab.QUICKSTART_CHECKS]

    def lab_with(self, checks, screen=None):
        return type("FakeLab", (), {"pod_checks": [lab_l1.parse_fields(c) for c in checks],
                                    "qs_check": {("q", "1"): screen or []}})  # fmt: skip

    def result(self, status="ok", failed="", attempt=1):
        line = (f'name=q attempt={attempt} vmm=hull kind=quickstart status={status} rc=0 wall_ms=21000 '
                f'failed="{failed}" detail="" runtime="runtime ok hull in /etc/containerd/conf.d/hull.toml, '
                f'ConfigPath /etc/hull/config.toml"')  # fmt: skip
        return lab_l1.parse_result(line)

    def test_every_check_passed_is_ok_and_shows_the_runtime_line(self):
        code, msg = lab.check_boot(self.lab_with(self.ALL_OK), "q", [self.result()], 3)
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("hull check: runtime ok hull in /etc/containerd/conf.d/hull.toml, ConfigPath /etc/hull/config.toml", msg)
        self.assertIn("vm-size: ok: fine", msg)

    def test_failed_check_is_a_product_failure_with_hull_checks_screen(self):
        checks = self.ALL_OK[:7] + ['name=q attempt=1 check=vm-size status=fail detail="2 vCPU / 512 MiB"']
        lab_ = self.lab_with(checks, ["kvm ok real", "runtime FAIL no hull runtime"])
        code, msg = lab.check_boot(lab_, "q", [self.result("fail", "vm-size")], 3)
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("failed: vm-size", msg)
        self.assertIn("vm-size: fail: 2 vCPU / 512 MiB", msg)
        self.assertIn("runtime FAIL no hull runtime", msg)

    def test_ok_status_with_a_check_missing_is_a_product_failure(self):
        checks = [c for c in self.ALL_OK if "check=uninstall" not in c]
        code, msg = lab.check_boot(self.lab_with(checks), "q", [self.result()], 3)
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("not passed or not run: uninstall", msg)

    def test_hangs_are_a_lab_hang(self):
        code, msg = lab.check_boot(self.lab_with([]), "q", [self.result("hang"), self.result("hang", attempt=2)], 2)
        self.assertEqual(code, lab.EXIT_LAB_HANG, msg)

    def test_plan_line_and_budget(self):
        runs = [lab_l1.RunSpec("q", "hull", 256, 1, "", 180, 3, kind="quickstart")]
        self.assertIn("lab_quickstart q 180 3 256 1 ''\n", lab_l1.plan_script(runs, ""))


class HealthJudgementTest(unittest.TestCase):
    def result(self, detail, status="ok"):
        line = (
            f'name=h attempt=1 vmm=hull kind=health status={status} rc=0 wall_ms=9 agent_ms=5 boot_ms=4 '
            f'rss_kib=1 health_ms=6 call_ms=130.0 agent="HULL-AGENT version=0.1.0 api=1 kernel=6.1.192" '
            f'detail="{detail}"'
        )
        return lab_l1.parse_result(line)

    def judge(self, result):
        fake_lab = type("FakeLab", (), {"l1_boots": [lab_l1.L1Outcome("done", "", "6.1.0-56-cloud-amd64")]})
        return lab.check_boot(fake_lab, "h", [result], 3)

    def test_serving_answer_passes(self):
        code, msg = self.judge(self.result("health: SERVING_STATUS_SERVING;agent_version: 0.1.0;api_version: 1"))
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("130.0 ms per", msg)

    def test_not_serving_answer_is_a_product_failure(self):
        code, _ = self.judge(self.result("health: SERVING_STATUS_NOT_SERVING;agent_version: 0.1.0"))
        self.assertEqual(code, lab.EXIT_PRODUCT)

    def ctr_result(self, detail, status="ok", console=""):
        line = f'name=c attempt=1 vmm=hull kind=ctr status={status} rc=0 wall_ms=6511 l1_kernel=6.1.0-56 '
        line += f'detail="{detail}" console="{console}"'
        return lab_l1.parse_result(line)

    def test_ctr_reports_the_console(self):
        code, msg = lab.check_boot(None, "c", [self.ctr_result("6.1.192", console="ok: a shell: console-42;init")], 3)
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("hull console: ok: a shell: console-42;init", msg)

    def test_ctr_failed_console_is_a_product_failure(self):
        code, msg = lab.check_boot(None, "c", [self.ctr_result("6.1.192", console="fail: hull console printed: x")], 3)
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("hull console", msg)

    def test_console_shell_wanted_and_reached(self):
        last = self.ctr_result("6.1.192", console="ok: a shell in the guest: console-42;init")
        self.assertEqual(lab.check_console_shell("c", last, "fine"), (lab.EXIT_OK, "fine"))

    def test_console_shell_wanted_but_default_image_answer_fails(self):
        last = self.ctr_result("6.1.192", console="ok: default image, the agent says it has no shell: x")
        code, msg = lab.check_console_shell("c", last, "fine")
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("reached no shell", msg)

    def test_ctr_printing_the_guest_release_passes(self):
        code, msg = lab.check_boot(None, "c", [self.ctr_result("6.1.192")], 3)
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("'6.1.192'", msg)

    def test_ctr_printing_l1s_release_is_a_product_failure(self):
        code, msg = lab.check_boot(None, "c", [self.ctr_result("6.1.0-56")], 3)
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("did not run in our microVM", msg)

    def test_ctr_timeouts_are_a_lab_hang(self):
        code, _ = lab.check_boot(None, "c", [self.ctr_result("", "hang"), self.ctr_result("", "hang")], 2)
        self.assertEqual(code, lab.EXIT_LAB_HANG)

    def test_plan_carries_hull_bench_and_its_groups(self):
        runs = [lab_l1.RunSpec("c", "hull", 512, 1, "x", 90, 2, kind="ctr")]
        plan = lab_l1.plan_script(runs, "", hull_bench=3, hull_bench_groups="memory,start")
        self.assertIn("LAB_HULL_BENCH=3\n", plan)
        self.assertIn("LAB_HULL_BENCH_GROUPS=memory,start\n", plan)
        self.assertNotIn("LAB_HULL_BENCH_GROUPS", lab_l1.plan_script(runs, "", hull_bench=3))

    def test_plan_carries_the_hull_bench_pod_counts_checked(self):
        runs = [lab_l1.RunSpec("c", "hull", 512, 1, "x", 90, 2, kind="ctr")]
        plan = lab_l1.plan_script(runs, "", hull_bench=3, hull_bench_pods="1,5,10")
        self.assertIn("LAB_HULL_BENCH_PODS=1,5,10\n", plan)
        self.assertNotIn("LAB_HULL_BENCH_PODS", lab_l1.plan_script(runs, "", hull_bench=3))
        self.assertEqual(lab.pod_counts("1,5,10"), "1,5,10")
        for bad in ["", "0", "1,,5", "5;reboot", "1, 5"]:
            with self.assertRaises(argparse.ArgumentTypeError):
                lab.pod_counts(bad)

    def test_hull_config_lines_reach_the_plan_checked(self):
        self.assertEqual(lab.hull_config_line("free_page_reporting=false"), "free_page_reporting = false")
        for bad in ["nokey", "=1", "Bad-Key=1", "k=", "k=a\nb"]:
            with self.assertRaises(ValueError):
                lab.hull_config_line(bad)
        runs = [lab_l1.RunSpec("c", "hull", 512, 1, "x", 90, 2, kind="ctr")]
        plan = lab_l1.plan_script(runs, "", hull_config=("a = 1", "b = false"))
        self.assertIn("LAB_HULL_CONFIG='a = 1\nb = false'\n", plan)
        self.assertNotIn("LAB_HULL_CONFIG", lab_l1.plan_script(runs, ""))

    def test_plan_line_for_health_and_ctr(self):
        runs = [lab_l1.RunSpec("h", "hull", 256, 1, "a b", 45, 3, kind="health"),
                lab_l1.RunSpec("c", "hull", 512, 1, "x", 90, 2, kind="ctr")]  # fmt: skip
        plan = lab_l1.plan_script(runs, "")
        self.assertIn("lab_health h 45 3 256 1 'a b'\n", plan)
        self.assertIn("lab_ctr c 90 2 512 1 x\n", plan)


class SuiteJudgementTest(unittest.TestCase):
    def lab_with(self, suite, fsbench):
        return type("FakeLab", (), {"suite": suite, "fsbench": fsbench})

    def result(self, status="ok", rc=0):
        line = (
            f'name=s attempt=1 vmm=hull kind=suite status={status} rc={rc} wall_ms=9 agent_ms=5 ready_ms=4000 '
            f'rss_kib=1 passed=14 failed=0 agent="HULL-AGENT version=0.1.0" detail="sandbox suite created"'
        )
        return lab_l1.parse_result(line)

    def test_passing_suite_prints_counts_and_fsbench_ratios(self):
        fb = "write_mib_s=50.0 read_mib_s=100.0 create_per_s=500.0 stat_per_s=1000.0 unlink_per_s=800.0 mib=16 files=2000"
        lab_ = self.lab_with(
            [lab_l1.parse_fields("test=containers status=ok passed=6 failed=0 ms=9000")],
            {"guest": lab_l1.parse_fields("where=guest " + fb),
             "l1": lab_l1.parse_fields("where=l1 " + fb.replace("write_mib_s=50.0", "write_mib_s=200.0"))},
        )  # fmt: skip
        code, msg = lab.check_boot(lab_, "s", [self.result()], 3)
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("14 tests passed", msg)
        self.assertIn("containers ok (6 passed", msg)
        self.assertIn("guest/L1 0.25x", msg)
        self.assertIn("guest/L1 1x", msg)

    def test_failed_suite_is_a_product_failure_naming_the_executable(self):
        lab_ = self.lab_with([lab_l1.parse_fields("test=limits status=fail passed=0 failed=1 ms=900")], {})
        code, msg = lab.check_boot(lab_, "s", [self.result("fail")], 3)
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("limits fail (0 passed, 1 failed", msg)

    def test_setup_hangs_are_a_lab_hang(self):
        code, _ = lab.check_boot(self.lab_with([], {}), "s", [self.result("hang"), self.result("hang")], 2)
        self.assertEqual(code, lab.EXIT_LAB_HANG)

    def test_plan_sets_fsbench_args_and_the_suite_line(self):
        runs = [lab_l1.RunSpec("s", "hull", 512, 1, "console=ttyS0", 300, 2, kind="suite")]
        plan = lab_l1.plan_script(runs, "", fsbench_args="--mib 16 --files 2000")
        self.assertIn("LAB_FSBENCH_ARGS='--mib 16 --files 2000'\n", plan)
        self.assertIn("lab_suite s 300 2 512 1 console=ttyS0\n", plan)


if __name__ == "__main__":
    unittest.main()


class SoakScriptTest(unittest.TestCase):
    """run.sh's ctr_soak under busybox sh with a fake ctr, containerd and shim: the flow of the
    cycles, the four faults and the counts, not the product."""

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        (self.dir / "lab/bin").mkdir(parents=True)
        (self.dir / "tmp").mkdir()

    def tearDown(self):
        shutil.rmtree(self.dir)

    FAKE_CTR = (
        "#!/bin/sh\n"
        'shift 4; D=$(dirname "$SOAK_RUN")\n'
        'case "$1 $2" in\n'
        '"run --rm") exit 0 ;;\n'
        '"run -d") id=$(echo "$@" | awk \'{ print $(NF-2) }\')\n'
        '  mkdir -p "$D/hull/$id"; "$LAB/bin/containerd-shim-hull-v2" -id "$id" -address x < /dev/null > /dev/null 2>&1 &\n'
        '  printf "hull-vmm %s 1\\nvirtiofsd %s 1\\n" $! $! > "$D/hull/$id/pids"; echo $id > "$D/task" ;;\n'
        '"task ls") id=$(cat "$D/task" 2>/dev/null); [ -n "$id" ] || exit 0; pid=$(awk \'{ print $2; exit }\' "$D/hull/$id/pids")\n'
        '  if kill -0 "$pid" 2>/dev/null; then echo "$id $pid RUNNING"; else echo "$id 0 STOPPED"; fi ;;\n'
        '"task kill") id=$(cat "$D/task"); kill -KILL $(awk \'{ print $2; exit }\' "$D/hull/$id/pids") ;;\n'
        '"task delete") [ -s "$D/task" ] || exit 1; id=$(cat "$D/task"); kill -KILL $(awk \'{ print $2; exit }\' "$D/hull/$id/pids") 2>/dev/null\n'
        '  rm -rf "$D/hull/$id" "$D/task"; echo "task $id exit with non-zero exit code 137" >&2 ;;\n'
        '"container delete") exit 0 ;;\n'
        "esac\n"
    )
    FAKE_CONTAINERD = (
        "#!/usr/bin/env python3\n"
        "import os, socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(os.environ['SOAK_RUN'] + '/containerd.sock')\n"
        "time.sleep(600)\n"
    )

    def test_cycles_faults_and_counts_come_back(self):
        for name, text in (("ctr", self.FAKE_CTR), ("containerd", self.FAKE_CONTAINERD),
                           ("containerd-shim-hull-v2", "#!/bin/sh\nsleep 600\n")):  # fmt: skip
            (self.dir / "lab/bin" / name).write_text(text)
            (self.dir / "lab/bin" / name).chmod(0o755)
        run = self.dir / "tmp/ctr/run"
        plan = (
            f"export SOAK_RUN={run}\nD=$TMP/ctr; mkdir -p $D/hull $D/run $D/logs; timeout=20\n"
            "ctrd_start; ctr_soak 3; ctr_teardown\n"
        )
        (self.dir / "plan.sh").write_text(plan)
        env = {"PATH": "/usr/bin:/bin", "LAB": str(self.dir / "lab"), "TMP": str(self.dir / "tmp")}
        out = subprocess.run(["busybox", "sh", LAB_DIR / "run.sh", self.dir / "plan.sh"], env=env,
                             capture_output=True, text=True, timeout=120).stdout  # fmt: skip
        line = next((x for x in out.splitlines() if x.startswith("LAB-SOAK ")), None)
        self.assertIsNotNone(line, out)
        fields = lab_l1.parse_fields(line)
        self.assertEqual((fields["cycles"], fields["ok"], fields["failed"]), ("3", "3", "0"), line)
        self.assertEqual(
            fields["faults"],
            "vmm:ok(exit=137) virtiofsd:ok(exit=137) shim:ok(exit=137) containerd:ok(exit=137)",
            line,
        )
        self.assertEqual(fields["status"], "ok", line)
        self.assertEqual(lab.check_soak(fields, 3)[0], lab.EXIT_OK)


class SoakJudgementTest(unittest.TestCase):
    COUNTS = "procs=0 mounts=31 fds=24 taps=0 cgroups=0 rundir=0"

    def line(self, status="ok", ok=50, failed=0, detail="", after=COUNTS):
        text = (
            f'LAB-SOAK cycles=50 ok={ok} failed={failed} min_ms=2900 median_ms=3100 max_ms=4800 '
            f'faults="vmm:ok(exit=137) virtiofsd:ok(exit=137) shim:ok(exit=gone) containerd:ok(exit=137)" '
            f'before="{self.COUNTS}" mid="{self.COUNTS}" after="{after}" status={status} detail="{detail}"'
        )
        fake = type("FakeLab", (), {"soak": None})()
        lab.Lab.progress(fake, "[  12.0] " + text)
        return fake.soak

    def test_ok_line_passes_with_its_figures(self):
        code, msg = lab.check_soak(self.line(), 50)
        self.assertEqual(code, lab.EXIT_OK, msg)
        self.assertIn("50 of 50 cycles ok", msg)
        self.assertIn("median 3100", msg)
        self.assertIn("shim:ok(exit=gone)", msg)
        self.assertIn(f"counts before: {self.COUNTS}", msg)

    def test_failed_line_is_a_product_failure_naming_why(self):
        fields = self.line("fail", ok=48, failed=2, detail="2 of 50 cycles failed; counts after the containerd restart differ;",
                           after="procs=2 mounts=33 fds=24 taps=0 cgroups=0 rundir=1")  # fmt: skip
        code, msg = lab.check_soak(fields, 50)
        self.assertEqual(code, lab.EXIT_PRODUCT)
        self.assertIn("2 of 50 cycles failed", msg)
        self.assertIn("procs=2 mounts=33", msg)

    def test_fewer_cycles_than_asked_is_a_failure(self):
        code, _ = lab.check_soak(self.line(), 500)
        self.assertEqual(code, lab.EXIT_PRODUCT)

    def test_no_line_is_a_failure_or_a_lab_hang(self):
        self.assertEqual(lab.check_soak(None, 50)[0], lab.EXIT_PRODUCT)
        self.assertEqual(lab.check_soak(None, 50, l1_hung=True)[0], lab.EXIT_LAB_HANG)

    def test_plan_sets_lab_soak_and_the_budget_grows(self):
        runs = [lab_l1.RunSpec("c", "hull", 256, 1, "x", 90, 2, kind="ctr")]
        self.assertIn("LAB_SOAK=50\n", lab_l1.plan_script(runs, "", soak=50))
        self.assertNotIn("LAB_SOAK", lab_l1.plan_script(runs, ""))
        self.assertEqual(lab_l1.soak_budget_s(0), 0)
        self.assertGreater(lab_l1.soak_budget_s(50), 50 * 30)
        self.assertEqual(lab.parse_args(["ctr", "--soak", "50"]).soak, 50)
