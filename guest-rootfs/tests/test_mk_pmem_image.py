"""Tests for guest-rootfs/scripts/mk-pmem-image.py (the virtio-pmem root image).

The PFN info block is read back field by field at the offsets of struct nd_pfn_sb
(drivers/nvdimm/pfn.h in Linux 6.1), not through the script's own struct, and its
checksum is recomputed with a differently written fletcher64. The file system
part is checked with e2fsprogs (e2fsck -fn, debugfs, dumpe2fs) on a copy cut at
DATAOFF. Those tests need e2fsprogs; they are skipped only when mke2fs is absent.
Run: python3 -m unittest discover -s guest-rootfs/tests -v
"""

import importlib.util
import itertools
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "scripts", "mk-pmem-image.py")
REAL_LAYOUT = os.path.join(HERE, "..", "initramfs", "layout.txt")
DEBUG_LAYOUT = os.path.join(HERE, "..", "initramfs", "debug-layout.txt")

spec = importlib.util.spec_from_file_location("mk_pmem_image", SCRIPT)
mk_pmem_image = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mk_pmem_image)

MIB = 1 << 20
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
HAVE_MKE2FS = shutil.which("mke2fs", path=SBIN_PATH) is not None


def tool(name):
    return shutil.which(name, path=SBIN_PATH)


def le(data, offset, size):
    return int.from_bytes(data[offset : offset + size], "little")


def fletcher64_by_prefix_sums(data):
    """The same sum as nd_fletcher64, written differently: lo32 after word k is the
    prefix sum mod 2^32, hi32 is the sum of those, of which the shift keeps 32 bits."""
    words = struct.unpack(f"<{len(data) // 4}I", data)
    prefixes = [total % (1 << 32) for total in itertools.accumulate(words)]
    return ((sum(prefixes) % (1 << 32)) << 32) | prefixes[-1]


class InfoBlockTest(unittest.TestCase):
    def test_fletcher64_hand_worked(self):
        # words 1, 2, 3: lo32 = 1, 3, 6; hi32 = 1, 4, 10  ->  10 << 32 | 6
        self.assertEqual(mk_pmem_image.fletcher64(struct.pack("<3I", 1, 2, 3)), 0x0000000A_00000006)
        # Little endian: the bytes 01 00 00 00 are the word 1, not 0x01000000.
        self.assertEqual(mk_pmem_image.fletcher64(b"\x01\x00\x00\x00"), (1 << 32) | 1)
        # Wrap: lo32 = 0xffffffff, then 0x1fffffffe -> 0xfffffffe (u32);
        # hi32 = 0xffffffff + 0xfffffffe = 0x1fffffffd, of which << 32 keeps 0xfffffffd.
        self.assertEqual(
            mk_pmem_image.fletcher64(struct.pack("<2I", 0xFFFFFFFF, 0xFFFFFFFF)), 0xFFFFFFFD_FFFFFFFE
        )
        self.assertEqual(mk_pmem_image.fletcher64(b""), 0)

    def test_info_block_fields_at_nd_pfn_sb_offsets(self):
        size = 8 * MIB
        block = mk_pmem_image.pfn_info_block(size)
        self.assertEqual(len(block), 4096)
        self.assertEqual(block[0:16], b"NVDIMM_PFN_INFO\0")  # signature
        self.assertNotEqual(block[16:32], bytes(16))  # uuid
        self.assertEqual(block[32:48], bytes(16))  # parent_uuid: label-less namespace
        self.assertEqual(le(block, 48, 4), 0)  # flags
        self.assertEqual((le(block, 52, 2), le(block, 54, 2)), (1, 4))  # version_major, _minor
        dataoff = le(block, 56, 8)
        self.assertEqual(dataoff, 2 * MIB)
        self.assertEqual(le(block, 64, 8), (size - 2 * MIB) // 4096)  # npfns
        self.assertEqual(le(block, 72, 4), 1)  # mode: PFN_MODE_RAM
        self.assertEqual(le(block, 76, 4), 0)  # start_pad
        self.assertEqual(le(block, 80, 4), 0)  # end_trunc
        align = le(block, 84, 4)
        self.assertEqual(align, 2 * MIB)
        self.assertEqual(le(block, 88, 4), 4096)  # page_size
        self.assertEqual(le(block, 92, 2), 64)  # page_struct_size
        self.assertEqual(block[94:4088], bytes(3994))  # padding
        # What nd_pfn_validate / __nvdimm_setup_pfn require of dataoff.
        self.assertEqual(dataoff % align, 0)
        self.assertEqual(dataoff % 4096, 0)
        self.assertGreaterEqual(dataoff, 8192)  # nd_info_block_reserve()

    def test_checksum_matches_an_independent_fletcher64(self):
        for size in [4 * MIB, 8 * MIB, 1024 * MIB]:
            block = mk_pmem_image.pfn_info_block(size)
            stored = le(block, 4088, 8)
            zeroed = block[:4088] + bytes(8)
            self.assertEqual(stored, fletcher64_by_prefix_sums(zeroed), size)
            self.assertNotEqual(stored, 0)
        # A different npfns gives a different checksum.
        self.assertNotEqual(
            mk_pmem_image.pfn_info_block(4 * MIB)[4088:], mk_pmem_image.pfn_info_block(6 * MIB)[4088:]
        )

    def test_metadata_area_is_zero_but_the_info_block(self):
        area = mk_pmem_image.metadata_area(6 * MIB)
        self.assertEqual(len(area), 2 * MIB)
        self.assertEqual(area[:4096], bytes(4096))
        self.assertEqual(area[4096:8192], mk_pmem_image.pfn_info_block(6 * MIB))
        self.assertEqual(area[8192:], bytes(2 * MIB - 8192))

    def test_size_rounding(self):
        self.assertEqual(mk_pmem_image.image_size(1), 4 * MIB)
        self.assertEqual(mk_pmem_image.image_size(2 * MIB), 4 * MIB)
        self.assertEqual(mk_pmem_image.image_size(2 * MIB + 1), 6 * MIB)
        self.assertEqual(mk_pmem_image.image_size(5516800 + 300 * 1024), 8 * MIB)
        for bad in [2 * MIB, 3 * MIB, 4 * MIB + 4096, 0]:
            with self.subTest(size=bad), self.assertRaises(ValueError):
                mk_pmem_image.pfn_info_block(bad)


@unittest.skipUnless(HAVE_MKE2FS, "mke2fs not installed (Debian: e2fsprogs)")
class BuildImageTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.agent = os.path.join(self.dir, "agent")
        with open(self.agent, "wb") as handle:
            handle.write(b"\x7fELF fake agent " + bytes(range(256)) * 40)
        self.tool = os.path.join(self.dir, "tool")
        with open(self.tool, "wb") as handle:
            handle.write(b"#!/bin/sh\necho tool\n")

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, layout_text, *extra, output_name="rootfs.img", env=None):
        layout = os.path.join(self.dir, "layout.txt")
        with open(layout, "w", encoding="utf-8") as handle:
            handle.write(layout_text)
        output = os.path.join(self.dir, "out", output_name)
        result = subprocess.run(
            ["python3", SCRIPT, layout, output, *extra], capture_output=True, text=True, env=env
        )
        return result, output

    def fs_part(self, image):
        """A copy of the image's file system part (cut at DATAOFF)."""
        path = image + ".ext4"
        with open(image, "rb") as src, open(path, "wb") as dst:
            src.seek(2 * MIB)
            shutil.copyfileobj(src, dst)
        return path

    def debugfs(self, fs, request):
        result = subprocess.run(
            [tool("debugfs"), "-R", request, fs], capture_output=True, text=True, check=True
        )
        return result.stdout

    def ls(self, fs, directory):
        """name -> (inode mode as octal string, uid, gid, size) from `debugfs ls -l`."""
        rows = {}
        for line in self.debugfs(fs, f"ls -l {directory}").splitlines():
            fields = line.split()
            if len(fields) >= 9:
                rows[fields[-1]] = (fields[1], fields[3], fields[4], fields[5])
        return rows

    TINY_LAYOUT = (
        "file /init 0755 @AGENT@\n"
        "dir /dev 0755\n"
        "nod /dev/console 0600 c 5 1\n"
        "dir /tmp 1777\n"
        "dir /proc 0555\n"
        "dir /sbin 0700\n"
        "file /sbin/tool 0640 @TOOL@\n"
    )

    def build_tiny(self, output_name="rootfs.img"):
        result, output = self.run_script(
            self.TINY_LAYOUT,
            "--set", f"AGENT={self.agent}", "--set", f"TOOL={self.tool}",
            output_name=output_name,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result, output

    def test_tiny_layout_builds_a_checked_ext4_behind_the_info_block(self):
        result, output = self.build_tiny()
        size = os.path.getsize(output)
        self.assertEqual(size % (2 * MIB), 0)
        self.assertEqual(size, 4 * MIB)  # a few KiB of files: the smallest image
        self.assertIn("left out 1 device node", result.stdout)
        with open(output, "rb") as handle:
            self.assertEqual(handle.read(2 * MIB), mk_pmem_image.metadata_area(size))

        fs = self.fs_part(output)
        fsck = subprocess.run([tool("e2fsck"), "-fn", fs], capture_output=True, text=True)
        self.assertEqual(fsck.returncode, 0, fsck.stdout + fsck.stderr)

        root = self.ls(fs, "/")
        self.assertEqual(root["init"], ("100755", "0", "0", str(os.path.getsize(self.agent))))
        self.assertEqual(root["dev"][:3], ("40755", "0", "0"))
        self.assertEqual(root["tmp"][0], "41777")
        self.assertEqual(root["proc"][0], "40555")
        self.assertEqual(root["sbin"][0], "40700")
        self.assertEqual(self.ls(fs, "/sbin")["tool"][:3], ("100640", "0", "0"))
        self.assertEqual(set(self.ls(fs, "/dev")), {".", ".."})  # no device nodes
        # Content round trip.
        dumped = os.path.join(self.dir, "init.out")
        self.debugfs(fs, f"dump /init {dumped}")
        with open(dumped, "rb") as got, open(self.agent, "rb") as want:
            self.assertEqual(got.read(), want.read())
        # 4 KiB blocks (DAX), no journal, the whole part is the file system.
        header = subprocess.run(
            [tool("dumpe2fs"), "-h", fs], capture_output=True, text=True, check=True
        ).stdout
        fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
        self.assertEqual(fields["Block size"].strip(), "4096")
        self.assertEqual(int(fields["Block count"]) * 4096, size - 2 * MIB)
        self.assertNotIn("has_journal", fields["Filesystem features"])
        # Timestamps normalised (mke2fs -d copied the staging files' ctime and atime).
        for path in ["/", "/init", "/sbin/tool", "/lost+found"]:
            info = self.debugfs(fs, f"stat {path}")
            for name in ["ctime", "atime", "mtime", "crtime"]:
                self.assertIn(f"{name}: 0x00000000:00000000", info, (path, name))

    def test_output_is_deterministic(self):
        _, first = self.build_tiny("first.img")
        os.utime(self.agent, (1_000_000, 1_000_000))
        _, second = self.build_tiny("second.img")
        with open(first, "rb") as a, open(second, "rb") as b:
            self.assertTrue(a.read() == b.read(), "two builds of one layout differ")

    def test_real_layout_and_debug_layout(self):
        busybox = os.path.join(self.dir, "busybox")
        with open(busybox, "wb") as handle:
            handle.write(b"\x7fELF fake busybox")
        output = os.path.join(self.dir, "debug.img")
        result = subprocess.run(
            [
                "python3", SCRIPT, REAL_LAYOUT, output, "--set", f"AGENT={self.agent}",
                "--extra", DEBUG_LAYOUT, "--set", f"BUSYBOX={busybox}", "--list",
            ],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("/bin:", result.stdout)  # --list shows the non-empty directories
        fs = self.fs_part(output)
        root = self.ls(fs, "/")
        for directory in ["dev", "proc", "sys", "run", "tmp", "mnt", "sbin", "etc", "bin"]:
            self.assertTrue(stat.S_ISDIR(int(root[directory][0], 8)), directory)
        self.assertEqual(root["init"][0], "100755")
        self.assertEqual(self.ls(fs, "/bin")["sh"][0], "100755")

    def test_grows_the_file_system_when_mke2fs_runs_out_of_room(self):
        # No overhead allowance: the first try (a 2 MiB file system for ~2 MiB of
        # file) cannot hold the metadata as well, so it must grow to 4 MiB.
        with open(self.agent, "wb") as handle:
            handle.write(b"\x01" * (2 * MIB - 16 * 1024))
        entries = mk_pmem_image.mk_initramfs.parse_layout(
            ["file /init 0755 @AGENT@"], {"AGENT": self.agent}
        )
        output = os.path.join(self.dir, "grown.img")
        with mock.patch.object(mk_pmem_image, "FS_OVERHEAD", 0):
            self.assertEqual(mk_pmem_image.image_size(mk_pmem_image.fs_size_estimate(entries)), 4 * MIB)
            total, fs_bytes = mk_pmem_image.build_image(entries, output, log=lambda _: None)
        self.assertEqual((total, fs_bytes), (6 * MIB, 4 * MIB))
        self.assertEqual(os.path.getsize(output), 6 * MIB)
        fsck = subprocess.run([tool("e2fsck"), "-fn", self.fs_part(output)], capture_output=True, text=True)
        self.assertEqual(fsck.returncode, 0, fsck.stdout + fsck.stderr)

    def test_bad_input_fails_with_a_clear_error(self):
        cases = {
            "file /init 0755 /nonexistent/agent\n": "cannot read /nonexistent/agent",
            "link /a /b\n": "cannot parse",
            "file /init 0755 @AGENT@\n": "@AGENT@ is not set",
            f"file /sbin/x 0755 {self.agent}\n": "parent directory /sbin",
        }
        for layout, message in cases.items():
            with self.subTest(layout=layout):
                result, output = self.run_script(layout)
                self.assertEqual(result.returncode, 1)
                self.assertIn("mk-pmem-image: error:", result.stderr)
                self.assertIn(message, result.stderr)
                self.assertFalse(os.path.exists(output))

    def test_mke2fs_failure_shows_its_stderr(self):
        fake_bin = os.path.join(self.dir, "fake-bin")
        os.mkdir(fake_bin)
        fake = os.path.join(fake_bin, "mke2fs")
        with open(fake, "w", encoding="utf-8") as handle:
            handle.write("#!/bin/sh\necho 'mke2fs: fake failure: bad option' >&2\nexit 1\n")
        os.chmod(fake, 0o755)
        env = dict(os.environ, PATH=fake_bin + os.pathsep + os.environ.get("PATH", ""))
        result, output = self.run_script(
            self.TINY_LAYOUT, "--set", f"AGENT={self.agent}", "--set", f"TOOL={self.tool}", env=env
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("mke2fs failed (exit 1)", result.stderr)
        self.assertIn("fake failure: bad option", result.stderr)
        self.assertFalse(os.path.exists(output))
        self.assertEqual(os.listdir(os.path.dirname(output)), [])  # no temp dir left


if __name__ == "__main__":
    unittest.main()
