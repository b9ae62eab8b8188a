#!/usr/bin/env python3
"""Write the Hull guest root as a virtio-pmem image: a PFN info block, then ext4.

Usage: mk-pmem-image.py LAYOUT OUTPUT [--extra LAYOUT ...] [--set NAME=VALUE ...]

The layout files are the initramfs ones (guest-rootfs/initramfs/layout.txt, read
with mk-initramfs.py's reader), so both images hold the same files and
directories; device nodes are left out (with a disk root the kernel mounts
devtmpfs on /dev itself, CONFIG_DEVTMPFS_MOUNT), their directories are kept.

hull-vmm maps the image into guest-physical memory as a virtio-pmem device and
the guest mounts it with `root=/dev/pmem0 rootfstype=ext4 rootflags=dax ro`, so
the guest runs /init straight from the host's page cache of this file, shared
by every VM, instead of from a copy in each VM's RAM. Layout of the file:

  [0, DATAOFF)    metadata, all zero except a PFN info block (struct nd_pfn_sb,
                  drivers/nvdimm/pfn.h) at 4096: it turns the label-less
                  namespace into an fsdax one whose struct pages live in guest
                  RAM (mode "ram"), so the guest never writes to the image
  [DATAOFF, end)  ext4, 4096-byte blocks (DAX needs block size == page size),
                  no journal, made by `mke2fs -d` from a staging directory

DATAOFF is 2 MiB and the file size a multiple of 2 MiB: the guest hotplugs the
region's struct pages in 2 MiB subsections (memremap_compat_align() on x86).
The output is deterministic: fixed UUIDs and hash seed, owner 0:0, every
inode timestamp 0 (fixed by debugfs after mke2fs, which copies the staging
files' ctimes), file system times 1 (E2FSPROGS_FAKE_TIME; 0 means unset).
Needs mke2fs, debugfs and e2fsck (Debian: e2fsprogs).
"""

import argparse
import importlib.util
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("mk_initramfs", os.path.join(HERE, "mk-initramfs.py"))
mk_initramfs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mk_initramfs)
LayoutError = mk_initramfs.LayoutError

MIB = 1 << 20
PAGE_SIZE = 4096
# The file's size and DATAOFF are multiples of this: memremap_compat_align() on x86
# (SUBSECTION_SIZE); also the info block's `align`.
ALIGN = 2 * MIB
# Where the file system starts: aligned to ALIGN and past the 8 KiB the kernel reserves for
# the info block (nd_info_block_reserve(); __nvdimm_setup_pfn refuses a smaller dataoff).
DATAOFF = 2 * MIB
INFO_BLOCK_OFFSET = 4096
INFO_RESERVE = 8192

# struct nd_pfn_sb (drivers/nvdimm/pfn.h), little endian, 4096 bytes.
PFN_SIG = b"NVDIMM_PFN_INFO\0"
PFN_MODE_RAM = 1  # enum nd_pfn_mode { PFN_MODE_NONE, PFN_MODE_RAM, PFN_MODE_PMEM }
PFN_SB = struct.Struct("<16s16s16sIHHQQIIIIIH3994sQ")
PFN_SB_CHECKSUM_OFFSET = PFN_SB.size - 8
# Version 1.4: align (1.2), zeroed padding and flags (1.3), page_size and page_struct_size (1.4).
PFN_VERSION = (1, 4)
STRUCT_PAGE_SIZE = 64  # MAX_STRUCT_PAGE_SIZE; what nd_pfn_init writes

# Fixed identities so equal inputs give an equal image.
PFN_UUID = uuid.UUID("4875cc11-9e3e-4d2a-8f0c-70d5a6f00001")
FS_UUID = uuid.UUID("4875cc11-9e3e-4d2a-8f0c-70d5a6f00002")
FS_HASH_SEED = uuid.UUID("4875cc11-9e3e-4d2a-8f0c-70d5a6f00003")
FS_LABEL = "hull-root"
FS_BLOCK_SIZE = 4096
FS_INODE_SIZE = 256
# Inodes 1-10 are reserved, 11 is lost+found; a few spare ones cost 256 bytes each.
FS_RESERVED_INODES = 11
FS_SPARE_INODES = 16
# Room for what mke2fs adds to the files' blocks: superblock and group descriptors,
# bitmaps, lost+found (16 KiB) and the odd extent block. The inode table is added apart.
FS_OVERHEAD = 128 * 1024
# mke2fs runs out of room: grow the file system by ALIGN and try again, this many times.
FS_GROW_ATTEMPTS = 8
FAKE_TIME = "1"

E2FS_TOOLS_HINT = "(Debian: apt-get install e2fsprogs)"


class ImageError(Exception):
    """Something that stops the image from being built (tool missing or failing)."""


def fletcher64(data):
    """nd_fletcher64(data, len, le=true) of drivers/nvdimm/core.c: 32-bit little-endian
    words; lo32 wraps at 32 bits, hi32 sums lo32 and only its low 32 bits survive the shift."""
    if len(data) % 4:
        raise ValueError("fletcher64 wants a multiple of 4 bytes")
    lo32 = 0
    hi32 = 0
    for (word,) in struct.iter_unpack("<I", data):
        lo32 = (lo32 + word) & 0xFFFFFFFF
        hi32 += lo32
    return ((hi32 << 32) | lo32) & 0xFFFFFFFFFFFFFFFF


def nd_sb_checksum(block):
    """nd_sb_checksum() of drivers/nvdimm/claim.c: fletcher64 of the 4 KiB block with its
    checksum field (the last 8 bytes) read as zero."""
    if len(block) != PFN_SB.size:
        raise ValueError(f"an info block is {PFN_SB.size} bytes, got {len(block)}")
    return fletcher64(bytes(block[:PFN_SB_CHECKSUM_OFFSET]) + bytes(8))


def round_up(value, alignment):
    return -(-value // alignment) * alignment


def image_size(fs_bytes):
    """Total file size for a file system of fs_bytes: DATAOFF plus the file system,
    rounded up to ALIGN (both ends of the pmem region on 2 MiB boundaries)."""
    return round_up(DATAOFF + fs_bytes, ALIGN)


def pfn_info_block(total_size, pfn_uuid=PFN_UUID):
    """The 4 KiB PFN info block for an image of total_size bytes, as nd_pfn_init() would
    write it for mode "ram" on a label-less namespace (parent_uuid zero), with the
    data starting at DATAOFF and nothing padded or truncated."""
    if total_size % ALIGN or total_size <= DATAOFF:
        raise ValueError(f"image size {total_size} must be a multiple of {ALIGN} above {DATAOFF}")
    npfns = (total_size - DATAOFF) // PAGE_SIZE
    fields = [
        PFN_SIG,
        pfn_uuid.bytes,
        bytes(16),  # parent_uuid: nd_dev_to_uuid() of a label-less (io) namespace is null
        0,  # flags
        PFN_VERSION[0],
        PFN_VERSION[1],
        DATAOFF,
        npfns,
        PFN_MODE_RAM,
        0,  # start_pad (deprecated)
        0,  # end_trunc
        ALIGN,
        PAGE_SIZE,
        STRUCT_PAGE_SIZE,
        bytes(3994),
        0,  # checksum, filled in below
    ]
    block = bytearray(PFN_SB.pack(*fields))
    struct.pack_into("<Q", block, PFN_SB_CHECKSUM_OFFSET, nd_sb_checksum(block))
    return bytes(block)


def metadata_area(total_size, pfn_uuid=PFN_UUID):
    """Bytes [0, DATAOFF) of the image: zeros with the info block at INFO_BLOCK_OFFSET."""
    area = bytearray(DATAOFF)
    area[INFO_BLOCK_OFFSET : INFO_BLOCK_OFFSET + PFN_SB.size] = pfn_info_block(total_size, pfn_uuid)
    return bytes(area)


def find_tool(name):
    """A tool from PATH or the sbin directories (not in a normal user's PATH on Debian)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        raise ImageError(f"{name} not found {E2FS_TOOLS_HINT}")
    return path


def tool_env():
    env = dict(os.environ)
    # LC_ALL=C: mke2fs -d sorts directory entries (inode numbers follow) with the locale's
    # collation. E2FSPROGS_FAKE_TIME: fixed file system times (creation, write, check).
    env.update(LC_ALL="C", E2FSPROGS_FAKE_TIME=FAKE_TIME)
    return env


def run_tool(argv, what):
    result = subprocess.run(argv, capture_output=True, text=True, env=tool_env())
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip() or "(no output)")
        raise ImageError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{output}")
    return result


def stage(entries, staging):
    """Fill `staging` from the layout entries; returns the paths staged (sorted).
    Device nodes are skipped. Modes are set after everything exists (a 0555 parent)."""
    staged = []
    for entry in sorted(entries, key=lambda e: e.path):
        target = staging + entry.path
        if stat.S_ISDIR(entry.mode):
            os.mkdir(target)
        elif stat.S_ISREG(entry.mode):
            with open(target, "wb") as handle:
                handle.write(entry.data)
        else:
            continue
        staged.append(entry)
    for entry in reversed(staged):
        target = staging + entry.path
        os.chmod(target, stat.S_IMODE(entry.mode))
        os.utime(target, (0, 0))
    os.chmod(staging, 0o755)
    os.utime(staging, (0, 0))
    return [entry.path for entry in staged]


def fs_size_estimate(entries):
    """A first guess at the file system's size in bytes (files' blocks, one block per
    directory, the inode table and FS_OVERHEAD); image_size() rounds it up to ALIGN."""
    blocks = 1  # the root directory
    for entry in entries:
        if stat.S_ISDIR(entry.mode):
            blocks += 1
        elif stat.S_ISREG(entry.mode):
            blocks += round_up(len(entry.data), FS_BLOCK_SIZE) // FS_BLOCK_SIZE
    inode_table = round_up(inode_count(entries) * FS_INODE_SIZE, FS_BLOCK_SIZE)
    return blocks * FS_BLOCK_SIZE + inode_table + FS_OVERHEAD


def inode_count(entries):
    return FS_RESERVED_INODES + len(entries) + FS_SPARE_INODES


NO_SPACE = re.compile(r"Could not allocate (block|inode)|No space left|Not enough space|too small", re.I)


def make_fs(mke2fs, staging, fs_path, fs_bytes, entries):
    """mke2fs -d the staging dir into fs_path (fs_bytes long). Returns False when the
    file system was too small (the caller grows it); raises ImageError on other failures."""
    with open(fs_path, "wb") as handle:
        handle.truncate(fs_bytes)
    argv = [
        mke2fs, "-q", "-F",
        "-t", "ext4",
        "-b", str(FS_BLOCK_SIZE),
        "-I", str(FS_INODE_SIZE),
        "-N", str(inode_count(entries)),
        "-m", "0",  # read-only: no blocks reserved for root
        "-O", "^has_journal,^resize_inode",  # read-only: no journal, no room to grow
        "-L", FS_LABEL,
        "-U", str(FS_UUID),
        "-E", f"root_owner=0:0,hash_seed={FS_HASH_SEED},nodiscard",
        "-d", staging,
        fs_path,
        str(fs_bytes // FS_BLOCK_SIZE),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=tool_env())
    if result.returncode == 0:
        return True
    output = (result.stderr.strip() or result.stdout.strip() or "(no output)")
    if NO_SPACE.search(output):
        return False
    raise ImageError(f"mke2fs failed (exit {result.returncode}): {' '.join(argv)}\n{output}")


def normalize_inodes(debugfs, fs_path, paths, work):
    """Owner 0:0 and timestamps 0 on every inode mke2fs -d made (it copies the staging
    files' owner, atime and ctime, which depend on who built the image and when)."""
    commands = []
    for path in ["/", "/lost+found", *paths]:
        for field in ["uid", "gid", "atime", "ctime", "mtime", "crtime"]:
            commands.append(f'sif "{path}" {field} 0')
    command_file = os.path.join(work, "normalize.debugfs")
    with open(command_file, "w", encoding="utf-8") as handle:
        handle.write("\n".join(commands) + "\n")
    result = run_tool([debugfs, "-w", "-f", command_file, fs_path], "debugfs")
    # debugfs exits 0 even when a command fails; its errors are on stderr after the banner.
    errors = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("debugfs ")]
    if errors:
        raise ImageError("debugfs could not normalise the inodes:\n" + "\n".join(errors))


def listing(debugfs, image_path, directories):
    """`ls -l` of / and `directories` in the finished image, through debugfs (offset=DATAOFF)."""
    out = []
    for directory in ["/", *directories]:
        result = run_tool([debugfs, "-R", f'ls -l "{directory}"', f"{image_path}?offset={DATAOFF}"], "debugfs")
        out.append(f"{directory}:\n{result.stdout.rstrip()}")
    return "\n".join(out)


def build_image(entries, output, pfn_uuid=PFN_UUID, log=print):
    """Build the image at `output` (atomically). Returns (total size, fs size)."""
    mke2fs = find_tool("mke2fs")
    debugfs = find_tool("debugfs")
    e2fsck = find_tool("e2fsck")
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pmem-image-", dir=directory) as work:
        staging = os.path.join(work, "root")
        os.mkdir(staging)
        paths = stage(entries, staging)
        skipped = len(entries) - len(paths)
        fs_path = os.path.join(work, "fs.ext4")
        total = image_size(fs_size_estimate(entries))
        for _ in range(FS_GROW_ATTEMPTS):
            if make_fs(mke2fs, staging, fs_path, total - DATAOFF, entries):
                break
            total += ALIGN
        else:
            raise ImageError(f"mke2fs ran out of space even at {total - ALIGN - DATAOFF} bytes")
        normalize_inodes(debugfs, fs_path, paths, work)
        run_tool([e2fsck, "-fn", fs_path], "e2fsck -fn (check of the new file system)")

        tmp_image = os.path.join(work, "rootfs.img")
        with open(tmp_image, "wb") as out, open(fs_path, "rb") as fs:
            out.write(metadata_area(total, pfn_uuid))
            shutil.copyfileobj(fs, out, 1 << 20)
        if os.path.getsize(tmp_image) != total:
            raise ImageError(f"{tmp_image}: {os.path.getsize(tmp_image)} bytes, expected {total}")
        os.chmod(tmp_image, 0o644)
        os.replace(tmp_image, output)
    if skipped:
        log(f"mk-pmem-image: left out {skipped} device node(s): devtmpfs provides /dev")
    return total, total - DATAOFF


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mk_initramfs.add_layout_arguments(parser)
    parser.add_argument("--list", action="store_true", help="print `ls -l` of the image's non-empty directories")
    args = parser.parse_args(argv)

    try:
        entries = mk_initramfs.entries_from_arguments(parser, args)
        total, fs_bytes = build_image(entries, args.output)
        print(
            f"mk-pmem-image: {args.output}: {total} bytes ({total / MIB:.0f} MiB): "
            f"PFN info block, ext4 of {fs_bytes} bytes at offset {DATAOFF}, {len(entries)} layout entries"
        )
        if args.list:
            # The root and every directory that holds something (empty ones say nothing).
            held = [e for e in entries if stat.S_ISDIR(e.mode) or stat.S_ISREG(e.mode)]
            directories = sorted({os.path.dirname(e.path) for e in held} - {"/"})
            print(listing(find_tool("debugfs"), args.output, directories))
    except (OSError, LayoutError, ImageError) as err:
        print(f"mk-pmem-image: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
