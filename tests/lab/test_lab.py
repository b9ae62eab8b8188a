"""Host-side tests of the lab's own pieces (no VM needed, a few seconds).

Run: python3 -B -m unittest discover -s tests/lab -p 'test_*.py'
"""

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

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

    def run_plan(self, vmm_script, plan):
        vmm = self.dir / "lab/bin/hull-vmm"
        vmm.write_text(
            "#!/bin/sh\nn=$(cat %s/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > %s/count\n%s\n"
            % (self.dir, self.dir, vmm_script)
        )
        vmm.chmod(0o755)
        (self.dir / "plan.sh").write_text(plan)
        env = {"PATH": "/usr/bin:/bin", "LAB": str(self.dir / "lab"), "TMP": str(self.dir / "tmp")}
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

    def test_exit_zero_without_agent_line_is_a_failure(self):
        results = self.run_plan("echo booted; exit 0", "lab_run a hull 5 3 256 1 c\n")
        self.assertEqual([(r.status, r.rc) for r in results], [("fail", 0)])
        self.assertIn("console: booted", results[0].tail)


if __name__ == "__main__":
    unittest.main()
