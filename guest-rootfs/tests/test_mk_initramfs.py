"""Tests for guest-rootfs/scripts/mk-initramfs.py.

The archives are read back with GNU cpio (the same newc reader family the
kernel implements), not with our own parser.
Run: python3 -m unittest discover -s guest-rootfs/tests -v
"""

import importlib.util
import os
import stat
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "scripts", "mk-initramfs.py")
REAL_LAYOUT = os.path.join(HERE, "..", "initramfs", "layout.txt")
DEBUG_LAYOUT = os.path.join(HERE, "..", "initramfs", "debug-layout.txt")

spec = importlib.util.spec_from_file_location("mk_initramfs", SCRIPT)
mk_initramfs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mk_initramfs)


def cpio_listing(archive_path):
    """(mode string, owner, group, size-or-device, name) per member, via `cpio -itv`."""
    with open(archive_path, "rb") as handle:
        result = subprocess.run(
            ["cpio", "-itv", "--quiet"], stdin=handle, capture_output=True, text=True, check=True
        )
    rows = []
    for line in result.stdout.splitlines():
        fields = line.split()
        if fields[0][0] in "cb":
            # crw-------   1 root root 5,   1 Jan  1  1970 dev/console
            rows.append((fields[0], fields[2], fields[3], fields[4] + fields[5], fields[-1]))
        else:
            rows.append((fields[0], fields[2], fields[3], fields[4], fields[-1]))
    return rows


class MkInitramfsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.agent = os.path.join(self.dir, "agent")
        with open(self.agent, "wb") as handle:
            handle.write(b"\x7fELF fake agent bytes, 37 long......")

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, layout_text, *extra):
        layout = os.path.join(self.dir, "layout.txt")
        with open(layout, "w", encoding="utf-8") as handle:
            handle.write(layout_text)
        output = os.path.join(self.dir, "out.cpio")
        result = subprocess.run(
            ["python3", SCRIPT, layout, output, *extra], capture_output=True, text=True
        )
        return result, output

    def test_real_layout_lists_init_devices_and_dirs(self):
        output = os.path.join(self.dir, "initramfs.cpio")
        result = subprocess.run(
            ["python3", SCRIPT, REAL_LAYOUT, output, "--set", f"AGENT={self.agent}"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = {row[-1]: row for row in cpio_listing(output)}
        self.assertEqual(rows["init"][0], "-rwxr-xr-x")
        self.assertEqual(rows["init"][3], str(os.path.getsize(self.agent)))
        self.assertEqual(rows["dev/console"][:4], ("crw-------", "root", "root", "5,1"))
        self.assertEqual(rows["dev/null"][:4], ("crw-rw-rw-", "root", "root", "1,3"))
        for directory in ["dev", "proc", "sys", "run", "tmp", "mnt", "sbin"]:
            self.assertTrue(rows[directory][0].startswith("d"), directory)
        self.assertEqual(rows["tmp"][0], "drwxrwxrwt")

    def test_file_content_round_trips(self):
        result, output = self.run_script(
            "dir /sbin 0755\nfile /sbin/tool 0700 @TOOL@\n", "--set", f"TOOL={self.agent}"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        extract = os.path.join(self.dir, "extract")
        os.mkdir(extract)
        with open(output, "rb") as handle:
            subprocess.run(["cpio", "-id", "--quiet"], stdin=handle, cwd=extract, check=True)
        with open(os.path.join(extract, "sbin", "tool"), "rb") as got, open(self.agent, "rb") as want:
            self.assertEqual(got.read(), want.read())
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(extract, "sbin", "tool")).st_mode), 0o700)

    def test_output_is_sorted_and_deterministic(self):
        layout = "dir /b 0755\nfile /b/x 0644 @A@\ndir /a 0755\nnod /a/c 0600 c 5 1\n"
        first, output = self.run_script(layout, "--set", f"A={self.agent}")
        self.assertEqual(first.returncode, 0, first.stderr)
        with open(output, "rb") as handle:
            first_bytes = handle.read()
        os.utime(self.agent, (1_000_000, 1_000_000))
        second, output = self.run_script(layout, "--set", f"A={self.agent}")
        self.assertEqual(second.returncode, 0, second.stderr)
        with open(output, "rb") as handle:
            self.assertEqual(handle.read(), first_bytes)
        self.assertEqual([row[-1] for row in cpio_listing(output)], ["a", "a/c", "b", "b/x"])

    def test_rejects_bad_layouts(self):
        cases = {
            "nod /dev/console 0600 c 5 1\n": "parent directory /dev",
            "dir /a 0755\ndir /a 0755\n": "listed twice",
            "file /init 0755 @AGENT@\n": "@AGENT@ is not set",
            "dir /a/../b 0755\n": "'..'",
            "dir relative 0755\n": "absolute",
            "dir /a 999\n": "octal",
            "nod /a 0600 x 1 1\n": "c or b",
            "link /a /b\n": "cannot parse",
            "file /init 0755 /nonexistent/agent\n": "cannot read",
        }
        for layout, message in cases.items():
            with self.subTest(layout=layout):
                result, output = self.run_script(layout)
                self.assertEqual(result.returncode, 1)
                self.assertIn(message, result.stderr)
                self.assertFalse(os.path.exists(output))

    def test_newc_header_fields(self):
        entries = mk_initramfs.parse_layout(["dir /dev 0755", "nod /dev/console 0600 c 5 1"], {})
        archive = mk_initramfs.build_archive(entries)
        # Second member (dev/console) starts after the 110-byte header + "dev\0" (pads to 116).
        header = archive[116 : 116 + 110].decode()
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmajor, rminor, namesize, _ = fields
        self.assertEqual(header[:6], "070701")
        self.assertEqual((ino, uid, gid, nlink, mtime, size), (2, 0, 0, 1, 0, 0))
        self.assertEqual(mode, stat.S_IFCHR | 0o600)
        self.assertEqual((rmajor, rminor), (5, 1))
        self.assertEqual(namesize, len("dev/console") + 1)
        self.assertTrue(archive.rstrip(b"\0").endswith(b"TRAILER!!!"))
        self.assertEqual(len(archive) % 4, 0)

    def test_default_image_has_no_shell_and_debug_layout_adds_one(self):
        busybox = os.path.join(self.dir, "busybox")
        with open(busybox, "wb") as handle:
            handle.write(b"\x7fELF fake busybox")
        plain = os.path.join(self.dir, "plain.cpio")
        debug = os.path.join(self.dir, "debug.cpio")
        base = ["python3", SCRIPT, REAL_LAYOUT]
        for output, extra in [
            (plain, []),
            (debug, ["--extra", DEBUG_LAYOUT, "--set", f"BUSYBOX={busybox}"]),
        ]:
            result = subprocess.run(
                [*base, output, "--set", f"AGENT={self.agent}", *extra],
                capture_output=True,
                text=True,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
        plain_names = {row[-1] for row in cpio_listing(plain)}
        self.assertFalse({"bin", "bin/sh"} & plain_names, plain_names)
        rows = {row[-1]: row for row in cpio_listing(debug)}
        self.assertEqual(rows["bin/sh"][0], "-rwxr-xr-x")
        self.assertEqual(rows["bin/sh"][3], str(os.path.getsize(busybox)))
        self.assertTrue(rows["bin"][0].startswith("d"))
        self.assertEqual(set(rows) - {"bin", "bin/sh"}, plain_names)

    def test_extra_layouts_share_parents_and_refuse_duplicates(self):
        entries = mk_initramfs.parse_layouts(
            [("a", ["dir /etc 0755"]), ("b", ["dir /etc/x 0755"])], {}
        )
        self.assertEqual(sorted(e.path for e in entries), ["/etc", "/etc/x"])
        with self.assertRaisesRegex(mk_initramfs.LayoutError, "b:1: /etc is listed twice"):
            mk_initramfs.parse_layouts([("a", ["dir /etc 0755"]), ("b", ["dir /etc 0755"])], {})


if __name__ == "__main__":
    unittest.main()
