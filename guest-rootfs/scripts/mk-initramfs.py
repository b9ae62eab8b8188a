#!/usr/bin/env python3
"""Write the Hull guest initramfs as an uncompressed newc cpio archive.

Usage: mk-initramfs.py LAYOUT OUTPUT [--extra LAYOUT ...] [--set NAME=VALUE ...]

LAYOUT lists directories, device nodes and files (see
guest-rootfs/initramfs/layout.txt); each --extra layout adds entries to it (a
path listed twice, in any of them, is an error; a parent directory may come
from any of them). Device nodes are written as cpio headers,
so neither root nor mknod is needed. The output is deterministic: entries are
sorted by path, owner 0:0, mtime 0, inode numbers assigned in order.
"""

import argparse
import os
import re
import stat
import sys
import tempfile

NEWC_MAGIC = "070701"
TRAILER = "TRAILER!!!"


class LayoutError(Exception):
    """A layout line that cannot be turned into an archive entry."""


class Entry:
    """One archive member: a directory, a device node or a regular file."""

    def __init__(self, path, mode, data=b"", rdev=(0, 0)):
        self.path = path
        self.mode = mode
        self.data = data
        self.rdev = rdev


def parse_mode(text, where):
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise LayoutError(f"{where}: mode must be octal like 0755, got {text!r}")
    return int(text, 8)


def check_path(path, where):
    if not path.startswith("/") or path == "/":
        raise LayoutError(f"{where}: path must be absolute and not /, got {path!r}")
    parts = path[1:].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise LayoutError(f"{where}: path {path!r} has an empty, '.' or '..' component")
    return path


def substitute(text, variables, where):
    def replace(match):
        name = match.group(1)
        if name not in variables:
            raise LayoutError(f"{where}: @{name}@ is not set (use --set {name}=...)")
        return variables[name]

    return re.sub(r"@([A-Za-z0-9_]+)@", replace, text)


def parse_layout(lines, variables, layout_name="layout"):
    """Turn layout lines into a list of Entry objects (unsorted)."""
    return parse_layouts([(layout_name, lines)], variables)


def parse_layouts(layouts, variables):
    """Entries of several (name, lines) layouts together (unsorted)."""
    entries = {}
    for layout_name, lines in layouts:
        add_entries(entries, lines, variables, layout_name)
    check_parents(entries)
    return list(entries.values())


def add_entries(entries, lines, variables, layout_name):
    """Parse one layout's lines into `entries` (path -> Entry)."""
    for number, raw in enumerate(lines, start=1):
        where = f"{layout_name}:{number}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        kind = fields[0]
        if kind == "dir" and len(fields) == 3:
            path = check_path(fields[1], where)
            entry = Entry(path, stat.S_IFDIR | parse_mode(fields[2], where))
        elif kind == "nod" and len(fields) == 6:
            path = check_path(fields[1], where)
            if fields[3] not in ("c", "b"):
                raise LayoutError(f"{where}: device type must be c or b, got {fields[3]!r}")
            if not (fields[4].isdigit() and fields[5].isdigit()):
                raise LayoutError(f"{where}: major and minor must be numbers")
            kind_bits = stat.S_IFCHR if fields[3] == "c" else stat.S_IFBLK
            entry = Entry(
                path,
                kind_bits | parse_mode(fields[2], where),
                rdev=(int(fields[4]), int(fields[5])),
            )
        elif kind == "file" and len(fields) == 4:
            path = check_path(fields[1], where)
            source = substitute(fields[3], variables, where)
            try:
                with open(source, "rb") as handle:
                    data = handle.read()
            except OSError as err:
                raise LayoutError(f"{where}: cannot read {source}: {err}") from err
            entry = Entry(path, stat.S_IFREG | parse_mode(fields[2], where), data=data)
        else:
            raise LayoutError(f"{where}: cannot parse {line!r}")
        if path in entries:
            raise LayoutError(f"{where}: {path} is listed twice")
        entries[path] = entry


def check_parents(entries):
    """Every entry's parent directory must be listed as a dir."""
    for path in entries:
        parent = os.path.dirname(path)
        if parent != "/" and (
            parent not in entries or not stat.S_ISDIR(entries[parent].mode)
        ):
            raise LayoutError(f"{path}: parent directory {parent} is not listed as a dir")


def pad4(length):
    return b"\0" * ((4 - length % 4) % 4)


def newc_member(name, ino, mode, nlink, data, rdev):
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
    header = (NEWC_MAGIC + "".join(f"{value:08x}" for value in fields)).encode()
    member = header + encoded
    member += pad4(len(member))
    member += data + pad4(len(data))
    return member


def build_archive(entries):
    """Return the bytes of a newc archive holding the entries, sorted by path."""
    out = bytearray()
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.path), start=1):
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        # Member names are relative (no leading slash), as the kernel and cpio expect.
        out += newc_member(entry.path[1:], ino, entry.mode, nlink, entry.data, entry.rdev)
    out += newc_member(TRAILER, 0, 0, 1, b"", (0, 0))
    return bytes(out)


def write_atomically(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".initramfs-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def add_layout_arguments(parser):
    """The arguments of both image writers (this one and mk-pmem-image.py): LAYOUT OUTPUT
    [--extra LAYOUT ...] [--set NAME=VALUE ...]."""
    parser.add_argument("layout")
    parser.add_argument("output")
    parser.add_argument("--extra", action="append", default=[], metavar="LAYOUT")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")


def entries_from_arguments(parser, args):
    """The entries of the layout files `args` names, with its --set variables (a malformed
    --set is a usage error). Raises OSError or LayoutError."""
    variables = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--set wants NAME=VALUE, got {item!r}")
        variables[name] = value
    layouts = []
    for path in [args.layout, *args.extra]:
        with open(path, encoding="utf-8") as handle:
            layouts.append((os.path.basename(path), handle.readlines()))
    return parse_layouts(layouts, variables)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_layout_arguments(parser)
    args = parser.parse_args(argv)

    try:
        entries = entries_from_arguments(parser, args)
    except (OSError, LayoutError) as err:
        print(f"mk-initramfs: error: {err}", file=sys.stderr)
        return 1
    archive = build_archive(entries)
    write_atomically(args.output, archive)
    print(f"mk-initramfs: {args.output}: {len(entries)} entries, {len(archive)} bytes (uncompressed newc)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
