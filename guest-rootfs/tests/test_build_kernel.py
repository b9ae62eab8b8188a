"""Tests for the caching, locking and checking logic of scripts/build-kernel.sh.

The real kernel build takes 5+ minutes, so these tests give the script a small
source tarball (the seam the script really crosses: KERNEL_TARBALL) whose
Makefile implements `allnoconfig` and `vmlinux` in a few lines: allnoconfig
copies the fragment's =y lines (minus $FAKE_DROP) and vmlinux assembles a tiny
ELF with (or without, $FAKE_NO_NOTE) a Xen PVH note. Everything else (cache
key, lock, temp dir, atomic publish, config check, PVH check, hardlinking) is
the real script. The real build is `make guest-kernel`.
Run: python3 -m unittest discover -s guest-rootfs/tests -v
"""

import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "scripts")

FAKE_MAKEFILE = r"""
allnoconfig:
	sed -n 's/^\(CONFIG_[A-Za-z0-9_]*=y\)$$/\1/p' "$(KCONFIG_ALLCONFIG)" | grep -v -x "$${FAKE_DROP:-none}" > .config

vmlinux:
	echo built >> "$$FAKE_COUNTER"
	if [ -f PATCHED ]; then cp PATCHED "$$FAKE_PATCHED"; fi
	sleep "$${FAKE_SLEEP:-0}"
	if [ -n "$$FAKE_NO_NOTE" ]; then cp note.s.off note.s; else cp note.s.on note.s; fi
	as note.s -o note.o
	ld -o vmlinux note.o -e 0
"""

NOTE_ON = """
.section .note.Xen, "a", @note
.balign 4
.long 4
.long 4
.long 18
.asciz "Xen"
.balign 4
.long 0x1000000
"""

NOTE_OFF = """
.section .text
nop
"""

# A patch that creates the file PATCHED in the source (the fake build copies it out).
GOOD_PATCH = """A test patch.

--- /dev/null
+++ b/PATCHED
@@ -0,0 +1 @@
+patched
"""

# A patch against a file the fake source does not have.
BAD_PATCH = """--- a/no-such-file.c
+++ b/no-such-file.c
@@ -1 +1 @@
-old
+new
"""

FRAGMENT = """# test fragment
# ---- group ----
CONFIG_64BIT=y
CONFIG_PVH=y
# CONFIG_MODULES is not set
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


class BuildKernelTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = self.tmp.name
        # A copy of guest-rootfs/{scripts,kernel} so the test can edit the fragment.
        self.rootfs = os.path.join(root, "guest-rootfs")
        os.makedirs(os.path.join(self.rootfs, "scripts"))
        for name in ["build-kernel.sh", "check-kernel-config.sh"]:
            shutil.copy2(os.path.join(SCRIPTS, name), os.path.join(self.rootfs, "scripts", name))
        self.fragment = os.path.join(self.rootfs, "kernel", "hull-microvm.config")
        write(self.fragment, FRAGMENT)

        source = os.path.join(root, "src", "linux-fake")
        write(os.path.join(source, "Makefile"), FAKE_MAKEFILE)
        write(os.path.join(source, "note.s.on"), NOTE_ON)
        write(os.path.join(source, "note.s.off"), NOTE_OFF)
        self.tarball = os.path.join(root, "linux-fake.tar.xz")
        with tarfile.open(self.tarball, "w:xz") as tar:
            tar.add(source, arcname="linux-fake")

        self.cache = os.path.join(root, "cache")
        self.counter = os.path.join(root, "builds")
        self.output = os.path.join(root, "build", "guest", "vmlinux")

    def tearDown(self):
        self.tmp.cleanup()

    def run_build(self, **extra_env):
        env = dict(os.environ)
        env.update(
            HULL_CACHE=self.cache,
            KERNEL_TARBALL=self.tarball,
            KERNEL_SOURCE_VERSION="1.0-test",
            FAKE_COUNTER=self.counter,
            FAKE_PATCHED=os.path.join(self.tmp.name, "patched-out"),
            JOBS="1",
        )
        env.update(extra_env)
        script = os.path.join(self.rootfs, "scripts", "build-kernel.sh")
        return subprocess.run([script, self.output], env=env, capture_output=True, text=True)

    def builds(self):
        if not os.path.exists(self.counter):
            return 0
        with open(self.counter, encoding="utf-8") as handle:
            return len(handle.read().splitlines())

    def entries(self):
        kernel = os.path.join(self.cache, "kernel")
        return sorted(e for e in os.listdir(kernel) if not e.startswith("."))

    def test_cold_build_publishes_entry_and_links_output(self):
        result = self.run_build()
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("config check ok", result.stdout)
        self.assertIn("PVH entry note present", result.stdout)
        entries = self.entries()
        self.assertEqual(len(entries), 1, entries)  # no tmp-* left behind
        entry = os.path.join(self.cache, "kernel", entries[0])
        self.assertEqual(sorted(os.listdir(entry)), ["build.log", "config", "vmlinux"])
        self.assertTrue(os.path.samefile(self.output, os.path.join(entry, "vmlinux")))
        with open(self.output + ".config", encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "CONFIG_64BIT=y\nCONFIG_PVH=y\n")
        self.assertEqual(self.builds(), 1)

    def test_second_run_is_a_cache_hit(self):
        self.assertEqual(self.run_build().returncode, 0)
        os.unlink(self.output)
        result = self.run_build()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("cache hit", result.stdout)
        self.assertTrue(os.path.exists(self.output))
        self.assertEqual(self.builds(), 1)

    def test_key_ignores_comments_but_not_settings(self):
        self.assertEqual(self.run_build().returncode, 0)
        write(self.fragment, "# another comment\n" + FRAGMENT + "\n# trailing\n")
        self.assertIn("cache hit", self.run_build().stdout)
        self.assertEqual(self.builds(), 1)
        write(self.fragment, FRAGMENT + "CONFIG_SMP=y\n")
        result = self.run_build()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.builds(), 2)
        self.assertEqual(len(self.entries()), 2)
        # A different source version is a different key too.
        result = self.run_build(KERNEL_SOURCE_VERSION="2.0-test")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.builds(), 3)

    def test_patches_are_applied_and_are_part_of_the_key(self):
        self.assertEqual(self.run_build().returncode, 0)
        write(os.path.join(self.rootfs, "kernel", "patches", "0001-test.patch"), GOOD_PATCH)
        result = self.run_build()
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("step: patch 0001-test.patch", result.stdout)
        with open(os.path.join(self.tmp.name, "patched-out"), encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "patched\n")
        self.assertEqual(len(self.entries()), 2, "a new patch is a new cache key")
        self.assertEqual(self.builds(), 2)

    def test_a_patch_that_does_not_apply_fails_with_its_name(self):
        write(os.path.join(self.rootfs, "kernel", "patches", "0002-bad.patch"), BAD_PATCH)
        result = self.run_build()
        self.assertEqual(result.returncode, 1)
        self.assertIn("step 'patch 0002-bad.patch' failed", result.stderr)
        self.assertEqual(self.entries(), ["last-failed-build.log"])
        self.assertEqual(self.builds(), 0)

    def test_dropped_option_fails_with_its_name(self):
        result = self.run_build(FAKE_DROP="CONFIG_PVH=y")
        self.assertEqual(result.returncode, 1)
        self.assertIn("CONFIG_PVH (wanted y, got: absent)", result.stdout + result.stderr)
        self.assertEqual(self.entries(), ["last-failed-build.log"])
        self.assertFalse(os.path.exists(self.output))
        self.assertEqual(self.builds(), 0)

    def test_missing_pvh_note_fails_and_caches_nothing(self):
        result = self.run_build(FAKE_NO_NOTE="1")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no Xen PVH entry note", result.stderr)
        self.assertEqual(self.entries(), [])
        self.assertFalse(os.path.exists(self.output))

    def test_failed_step_keeps_log_and_no_entry(self):
        os.unlink(self.tarball)
        with open(self.tarball, "wb") as handle:
            handle.write(b"not an xz tarball")
        result = self.run_build()
        self.assertEqual(result.returncode, 1)
        self.assertIn("step 'extract source' failed", result.stderr)
        self.assertEqual(self.entries(), ["last-failed-build.log"])

    def test_concurrent_builds_build_once(self):
        results = []

        def build():
            results.append(self.run_build(FAKE_SLEEP="2"))

        threads = [threading.Thread(target=build) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results:
            self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.builds(), 1)
        self.assertEqual(sum("cache hit" in r.stdout for r in results), 1)
        self.assertEqual(len(self.entries()), 1)

    def test_stale_temp_dir_is_removed(self):
        stale = os.path.join(self.cache, "kernel", "tmp-stale1")
        os.makedirs(stale)
        result = self.run_build()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("removing stale temp dir", result.stdout)
        self.assertFalse(os.path.exists(stale))


if __name__ == "__main__":
    unittest.main()
