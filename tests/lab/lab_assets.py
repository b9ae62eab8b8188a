"""Builds and caches what the lab's L1 VM boots from.

Cached under HULL_CACHE/lab/ (survives clean clones, keyed by content):
  kernel-<pkg>_<ver>/   Debian cloud kernel (vmlinuz) + the modules L1 needs
  busybox-<ver>/        static busybox
  l1-initramfs-<key>.cpio.gz
  qroot-<key>/          QEMU for the in-L1 peer: binary, its shared libraries, firmware
  labwatch-<key>        static build of labwatch.c
Rebuilt per checkout (cheap) under BUILD_DIR/lab/:
  l1-data.ext4          read-only data disk: run.sh, labwatch, hull-vmm, guest image, qroot
"""

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent

# Modules L1 loads at boot to see its virtio disks, and the KVM set run.sh loads.
BOOT_MODULES = ["virtio_pci", "virtio_blk"]
KVM_MODULES = ["kvm_amd"]
# The pod step (run.sh lab_pod): the CNI bridge and veths, and what the shim wires a pod's veth
# to its VM's tap with (tun, ingress qdisc, u32 filter, mirred action).
NET_MODULES = ["bridge", "veth", "tun", "sch_ingress", "cls_u32", "act_mirred"]
# The quickstart step (run.sh lab_quickstart): overlayfs, the snapshotter of containerd's default config.
FS_MODULES = ["overlay"]
# The pod step's CNI plugins (Debian's containernetworking-plugins; containerd adds loopback).
CNI_PLUGINS = ["bridge", "host-local", "loopback"]
CNI_DIRS = ["/usr/lib/cni", "/opt/cni/bin"]


class AssetError(Exception):
    """A lab asset could not be found or built."""


@dataclass
class L1Assets:
    """Paths of everything one L1 boot needs."""

    kernel: Path
    kernel_release: str
    initramfs: Path
    data_disk: Path
    has_hull_vmm: bool
    has_guest: bool
    has_containerd: bool = False  # containerd, ctr, virtiofsd, the shim and the busybox image are on the disk
    has_suite: bool = False  # the agent suite executables, fsbench, hull, virtiofsd (`make lab-suite-bins`)
    has_pods: bool = False  # containerd step + CNI plugins, pause image and the lab-pod CRI client
    has_pmem_image: bool = False  # the pmem root image (build/guest/rootfs.img) is on the disk
    has_firecracker: bool = False  # a static Firecracker (lab.py --firecracker) is on the disk, the bench's peer


def run(cmd, **kw):
    """Run a command, raising AssetError with its output on failure."""
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise AssetError(f"{' '.join(map(str, cmd))} failed ({res.returncode}): {res.stderr.strip()[-800:]}")
    return res.stdout


def sha256_file(path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def short_key(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def find_tool(name):
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if not path:
        raise AssetError(f"{name} not found (install its Debian package)")
    return path


class Cache:
    """The lab's part of HULL_CACHE, with atomic publication of built entries."""

    def __init__(self, root):
        self.root = Path(root) / "lab"
        self.root.mkdir(parents=True, exist_ok=True)
        # Leftovers of builds that were killed half-way.
        for tmp in self.root.glob("tmp-*"):
            if time.time() - tmp.stat().st_mtime > 3600:
                shutil.rmtree(tmp, ignore_errors=True)

    def path(self, name):
        return self.root / name

    def tempdir(self):
        return Path(tempfile.mkdtemp(prefix="tmp-", dir=self.root))

    def prune(self, prefix, keep):
        """Remove older entries of one kind (same name prefix), keeping `keep`."""
        for old in self.root.glob(prefix + "*"):
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)

    def publish(self, tmp, name):
        """Move a finished temp file/dir to its final name (first writer wins)."""
        final = self.root / name
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True) if Path(tmp).is_dir() else os.unlink(tmp)
        return final


# ---------------------------------------------------------------- Debian packages


def apt_versions(package):
    """All (version, depends) stanzas apt knows for a package (newest first)."""
    try:
        out = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    stanzas = []
    for block in out.split("\n\n"):
        ver = re.search(r"^Version: (\S+)", block, re.M)
        dep = re.search(r"^Depends: (.*)$", block, re.M)
        if ver:
            stanzas.append((ver.group(1), dep.group(1) if dep else ""))
    return stanzas


def resolve_cloud_kernel(cache):
    """(package, version) of the Debian cloud kernel for L1.

    The version that matches the installed linux-source-6.1 (what the guest
    kernel is built from) when apt knows it, else the newest one apt knows;
    with no apt lists at all, the newest kernel already in the cache.
    """
    forced = os.environ.get("LAB_L1_KERNEL_PKG")  # "name=version"
    if forced and "=" in forced:
        return tuple(forced.split("=", 1))
    src = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "linux-source-6.1"], capture_output=True, text=True
    ).stdout.strip()
    stanzas = apt_versions("linux-image-cloud-amd64")
    chosen = next((s for s in stanzas if s[0] == src), None) or (stanzas[0] if stanzas else None)
    if chosen:
        m = re.search(r"(linux-image-[^\s,(]+-cloud-amd64)\s*\(= ([^)]+)\)", chosen[1])
        if m:
            return m.group(1), m.group(2)
    cached = sorted(cache.root.glob("kernel-*/.complete"), key=os.path.getmtime)
    if cached:
        name, ver = cached[-1].read_text().split()[:2]
        return name, ver
    raise AssetError("cannot resolve linux-image-cloud-amd64 (run apt-get update)")


def apt_download(package, version, into):
    """apt-get download one package into a directory; returns the .deb path."""
    spec = f"{package}={version}" if version else package
    run(["apt-get", "download", "-q", spec], cwd=into)
    debs = list(Path(into).glob("*.deb"))
    if len(debs) != 1:
        raise AssetError(f"apt-get download {spec}: expected one .deb, found {debs}")
    return debs[0]


# ---------------------------------------------------------------- kernel and modules


def module_depends(ko_path):
    """Module names a .ko depends on (its modinfo 'depends=' field)."""
    data = Path(ko_path).read_bytes()
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


def modules_in_load_order(modules_root, wanted):
    """Relative paths of the wanted modules and their dependencies, dependencies first.

    Modules built into the kernel (modules.builtin) are left out.
    """
    root = Path(modules_root)
    index = {}
    for ko in (root / "kernel").rglob("*.ko"):
        index[ko.stem.replace("-", "_")] = ko
    builtin = set()
    builtin_list = root / "modules.builtin"
    if builtin_list.exists():
        for line in builtin_list.read_text().split():
            builtin.add(Path(line).stem.replace("-", "_"))
    order, visiting = [], set()

    def visit(name):
        name = name.replace("-", "_")
        if name in builtin or any(p.stem.replace("-", "_") == name for p in order):
            return
        if name in visiting:
            raise AssetError(f"module dependency cycle at {name}")
        if name not in index:
            raise AssetError(f"module {name} not found under {root}")
        visiting.add(name)
        for dep in module_depends(index[name]):
            visit(dep)
        visiting.discard(name)
        order.append(index[name])

    for w in wanted:
        visit(w)
    return [p.relative_to(root) for p in order]


def cloud_kernel(cache):
    """Directory with vmlinuz, release, modules/*.ko, boot.order, kvm.order (cached)."""
    package, version = resolve_cloud_kernel(cache)
    # The module lists are part of the key: a new list means a new entry.
    lists = short_key(*BOOT_MODULES, "|", *KVM_MODULES, "|", *NET_MODULES, "|", *FS_MODULES)
    name = f"kernel-{package}_{version}-m{lists[:8]}"
    final = cache.path(name)
    if (final / ".complete").exists():
        return final
    cache.prune("kernel-", keep=name)
    tmp = cache.tempdir()
    try:
        deb = apt_download(package, version, tmp)
        tree = tmp / "tree"
        run(["dpkg-deb", "-x", str(deb), str(tree)])
        releases = list((tree / "lib/modules").iterdir())
        if len(releases) != 1:
            raise AssetError(f"{deb.name}: expected one module tree, found {releases}")
        release = releases[0].name
        out = tmp / "out"
        (out / "modules").mkdir(parents=True)
        shutil.copy(tree / f"boot/vmlinuz-{release}", out / "vmlinuz")
        shutil.copy(tree / f"boot/config-{release}", out / "config")
        (out / "release").write_text(release + "\n")
        for list_name, wanted in (("boot.order", BOOT_MODULES), ("kvm.order", KVM_MODULES), ("net.order", NET_MODULES),
                                  ("fs.order", FS_MODULES)):  # fmt: skip
            rels = modules_in_load_order(releases[0], wanted)
            for rel in rels:
                shutil.copy(releases[0] / rel, out / "modules" / rel.name)
            (out / "modules" / list_name).write_text("".join(r.name + "\n" for r in rels))
        (out / ".complete").write_text(f"{package} {version}\n")
        return cache.publish(out, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def static_busybox(cache):
    """Path of a static busybox from the busybox-static package (cached)."""
    stanzas = apt_versions("busybox-static")
    cached = sorted(cache.root.glob("busybox-*/busybox"), key=os.path.getmtime)
    if not stanzas:
        if cached:
            return cached[-1]
        raise AssetError("cannot resolve busybox-static (run apt-get update)")
    version = stanzas[0][0]
    name = "busybox-" + version.replace(":", "_")
    final = cache.path(name) / "busybox"
    if final.exists():
        return final
    cache.prune("busybox-", keep=name)
    tmp = cache.tempdir()
    try:
        deb = apt_download("busybox-static", version, tmp)
        run(["dpkg-deb", "-x", str(deb), str(tmp / "tree")])
        out = tmp / "out"
        out.mkdir()
        shutil.copy(tmp / "tree/bin/busybox", out / "busybox")
        return cache.publish(out, name) / "busybox"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- initramfs


class CpioWriter:
    """Minimal writer of the 'newc' cpio format the kernel unpacks as initramfs.

    Written by hand so that device nodes (/dev/console) need no mknod and no root.
    """

    def __init__(self):
        self.chunks = []
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.chunks.append(header + name_b)
        self._pad()
        self.chunks.append(data)
        self._pad()

    def _pad(self):
        size = sum(len(c) for c in self.chunks)
        self.chunks.append(b"\0" * (-size % 4))

    def directory(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, executable=False):
        self._entry(name, 0o100755 if executable else 0o100644, data)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def char_device(self, name, major, minor, perm=0o600):
        self._entry(name, 0o020000 | perm, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return b"".join(self.chunks)


def l1_initramfs(cache, kernel_dir, busybox):
    """gzip'ed initramfs: busybox, the L1 modules, l1-init.sh as /init (cached)."""
    init = (LAB_DIR / "l1-init.sh").read_bytes()
    key = short_key(kernel_dir.name, sha256_file(busybox).hexdigest(), init)
    name = f"l1-initramfs-{key}.cpio.gz"
    final = cache.path(name)
    if final.exists():
        return final
    cache.prune("l1-initramfs-", keep=name)
    applets = run([str(busybox), "--list"]).split()
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "tmp", "lab", "lib", "lib/modules"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    cpio.char_device("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), executable=True)
    for applet in applets:
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    for f in sorted((kernel_dir / "modules").iterdir()):
        cpio.file(f"lib/modules/{f.name}", f.read_bytes())
    cpio.file("init", init, executable=True)
    tmp = cache.tempdir()
    try:
        out = tmp / name
        out.write_bytes(gzip.compress(cpio.finish(), 6))
        return cache.publish(out, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- in-L1 helpers


def labwatch(cache):
    """Static labwatch binary built from labwatch.c (cached by source hash)."""
    src = LAB_DIR / "labwatch.c"
    name = "labwatch-" + short_key(src.read_bytes())
    final = cache.path(name)
    if final.exists():
        return final
    cache.prune("labwatch-", keep=name)
    tmp = cache.tempdir()
    try:
        out = tmp / "labwatch"
        run([shutil.which("cc") or "gcc", "-static", "-O2", "-Wall", "-o", str(out), str(src)])
        return cache.publish(out, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def qemu_root(cache, qemu):
    """QEMU for the in-L1 peer: the binary, its loader and libraries, small firmware files."""
    qemu = Path(shutil.which(qemu) or qemu).resolve()
    ldd = run(["ldd", str(qemu)])
    # The key: QEMU and every library it loads, by content (ldd's load addresses vary per run).
    h = sha256_file(qemu)
    for lib in sorted(set(re.findall(r"(/\S+) \(0x", ldd))):
        h.update(lib.encode())
        sha256_file(lib, h)
    name = f"qroot-{h.hexdigest()[:16]}"
    final = cache.path(name)
    if (final / ".complete").exists():
        return final
    cache.prune("qroot-", keep=name)
    tmp = cache.tempdir()
    try:
        out = tmp / "qroot"
        (out / "lib").mkdir(parents=True)
        (out / "firmware").mkdir()
        shutil.copy(qemu, out / "qemu-system-x86_64")
        for line in ldd.splitlines():
            m = re.search(r"=>\s*(/\S+)", line)
            if m:
                shutil.copy(m.group(1), out / "lib" / Path(m.group(1)).name)
            elif re.match(r"\s*(/\S*ld-linux\S*)", line):
                shutil.copy(line.split()[0], out / "ld.so")
        if not (out / "ld.so").exists():
            raise AssetError(f"no dynamic loader in ldd output of {qemu}")
        share = qemu.parent.parent / "share/qemu"
        for f in share.iterdir():
            if f.is_file() and f.stat().st_size <= 256 * 1024:
                shutil.copy(f, out / "firmware" / f.name)
        (out / ".complete").write_text(str(qemu) + "\n")
        return cache.publish(out, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the data disk


def data_disk(build_lab, inputs):
    """Read-only ext4 image with `inputs` ({path on disk: host path}), rebuilt on change."""
    h = hashlib.sha256()
    for dest in sorted(inputs):
        src = Path(inputs[dest])
        h.update(dest.encode())
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    h.update(str(f.relative_to(src)).encode())
                    sha256_file(f, h)
        else:
            sha256_file(src, h)
    key = h.hexdigest()
    image = build_lab / "l1-data.ext4"
    stamp = build_lab / "l1-data.key"
    if image.exists() and stamp.exists() and stamp.read_text() == key:
        return image
    staging = build_lab / "disk"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for dest, src in inputs.items():
        target = staging / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(src).is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copy(src, target)
    size = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())
    size_mib = size * 13 // 10 // (1 << 20) + 32
    tmp_image = build_lab / "l1-data.ext4.tmp"
    run([find_tool("mkfs.ext4"), "-q", "-F", "-L", "labdata", "-d", str(staging), str(tmp_image), f"{size_mib}M"])
    os.replace(tmp_image, image)
    stamp.write_text(key)
    shutil.rmtree(staging, ignore_errors=True)
    return image


# ---------------------------------------------------------------- containerd in L1


def find_virtiofsd():
    """The virtiofsd the product uses (cargo install puts it in ~/.cargo/bin)."""
    for cand in (os.environ.get("HULL_VIRTIOFSD"), shutil.which("virtiofsd"),
                 str(Path.home() / ".cargo/bin/virtiofsd"), "/usr/libexec/virtiofsd"):  # fmt: skip
        if cand and os.access(cand, os.X_OK):
            return Path(cand)
    return None


def sysroot(build_lab, binaries):
    """A directory with the shared libraries (and loader) of `binaries`, at their real paths.

    L1's root is a tmpfs, so run.sh copies this over / and Debian's dynamic
    containerd/ctr and cargo's virtiofsd run as they are.
    """
    out = Path(build_lab) / "sysroot"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for binary in binaries:
        for lib in sorted(set(re.findall(r"(/\S+) \(0x", run(["ldd", str(binary)])))):
            target = out / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, target)
    return out


def busybox_image(build_lab, busybox, reference="lab.local/busybox:lab", file="busybox-image.tar", cmd=None):
    """OCI image tar (`reference`) of a static busybox rootfs, for `ctr image import`; `cmd`: the
    image's command as a JSON list (the pause image: busybox sleeping)."""
    image = Path(build_lab) / file
    stamp = image.with_suffix(".key")
    maker = LAB_DIR.parent / "shim/mk_oci_image.py"
    key = short_key(sha256_file(busybox).hexdigest(), maker.read_bytes(), reference, cmd or "")
    if image.exists() and stamp.exists() and stamp.read_text() == key:
        return image
    tmp = Path(tempfile.mkdtemp(prefix="busybox-rootfs-", dir=build_lab))
    try:
        rootfs = tmp / "rootfs"
        for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
            (rootfs / d).mkdir(parents=True)
        shutil.copy(busybox, rootfs / "bin/busybox")
        for applet in run([str(busybox), "--list"]).split():
            if applet != "busybox":
                (rootfs / "bin" / applet).symlink_to("busybox")
        run(["python3", str(maker), str(rootfs), str(tmp / "image.tar"), reference] + ([cmd] if cmd else []))
        os.replace(tmp / "image.tar", image)
        stamp.write_text(key)
        return image
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_cni_plugins():
    """{name: path} of the pod step's CNI plugins, or {} when one is missing."""
    found = {}
    for plugin in CNI_PLUGINS:
        path = next((Path(d) / plugin for d in CNI_DIRS if os.access(Path(d) / plugin, os.X_OK)), None)
        if path is None:
            return {}
        found[plugin] = path
    return found


def containerd_inputs(build_lab, busybox, pod_client=None):
    """Data-disk entries for the containerd step, or {} when containerd, ctr or virtiofsd is missing.

    With the CNI plugins installed and the CRI client built (`pod_client`, build/bin/lab-pod),
    also what the pod step needs: the plugins in cni/ (Debian's are dynamic: their libraries
    go into the sysroot too), the pause image and the client.
    """
    tools = {"containerd": shutil.which("containerd"), "ctr": shutil.which("ctr"), "virtiofsd": find_virtiofsd()}
    if not all(tools.values()):
        return {}
    # The bench's peer: runc through Debian's runc shim, when installed.
    peer = {"runc": shutil.which("runc"), "containerd-shim-runc-v2": shutil.which("containerd-shim-runc-v2")}
    if all(peer.values()):
        tools.update(peer)
    inputs = {f"bin/{name}": Path(path) for name, path in tools.items()}
    cni = find_cni_plugins() if pod_client and Path(pod_client).exists() else {}
    binaries = list(tools.values()) + list(cni.values())
    inputs["sysroot"] = sysroot(build_lab, [p for p in binaries if _is_dynamic(p)])
    inputs["images/busybox.tar"] = busybox_image(build_lab, busybox)
    if cni:
        inputs.update({f"cni/{name}": path for name, path in cni.items()})
        # CRI kills the sandbox container with SIGKILL: sleeping is all a pause needs here.
        inputs["images/pause.tar"] = busybox_image(
            build_lab, busybox, "lab.local/pause:lab", "pause-image.tar", '["/bin/sleep","2147483647"]'
        )
        inputs["bin/lab-pod"] = Path(pod_client)
    return inputs


def _is_dynamic(path):
    """Whether an executable has an ELF interpreter (Go's static CNI builds have none); a file
    that is no ELF executable has none either."""
    try:
        return file_has_elf_interpreter(path)
    except AssetError:
        return False


def has_elf_interpreter(data):
    """Whether the 64-bit little-endian ELF `data` names a program interpreter (PT_INTERP),
    i.e. needs a dynamic loader; static and static-pie executables have none."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise AssetError("not a 64-bit little-endian ELF executable")
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 4 > len(data):
            raise AssetError("program header table past the bytes read")
        if int.from_bytes(data[at : at + 4], "little") == 3:  # PT_INTERP
            return True
    return False


# How much of an executable is read for its headers (the program headers follow the ELF header).
ELF_HEAD_BYTES = 64 << 10


def file_has_elf_interpreter(path):
    """[has_elf_interpreter] of the executable at `path`, from its first ELF_HEAD_BYTES."""
    with open(path, "rb") as f:
        return has_elf_interpreter(f.read(ELF_HEAD_BYTES))


def static_executable(path, flag):
    """`path` if it is a static executable L1 can run; an AssetError naming `flag` otherwise."""
    if not path.is_file():
        raise AssetError(f"{flag} {path}: no such file")
    try:
        dynamic = file_has_elf_interpreter(path)
    except AssetError as e:
        raise AssetError(f"{flag} {path}: {e}") from None
    if dynamic:
        raise AssetError(
            f"{flag} {path}: dynamically linked; L1 runs static executables only "
            "(build with RUSTFLAGS='-C target-feature=+crt-static' or for a musl target)"
        )
    return path


def build(cache_root, build_dir, qemu, guest_kernel, guest_initramfs, firecracker=None):
    """Build (or find cached) all L1 assets; returns L1Assets.

    hull-vmm and the guest image go on the data disk when they exist; the
    caller decides whether their absence is an error. `firecracker`: a statically
    linked Firecracker binary for the bench's boot comparison (L1 has no C library
    of its own to run a dynamic one); it must exist when given.
    """
    cache = Cache(cache_root)
    build_lab = Path(build_dir) / "lab"
    build_lab.mkdir(parents=True, exist_ok=True)
    kernel_dir = cloud_kernel(cache)
    busybox = static_busybox(cache)
    initramfs = l1_initramfs(cache, kernel_dir, busybox)
    inputs = {
        "run.sh": LAB_DIR / "run.sh",
        "bin/labwatch": labwatch(cache),
        "qroot": qemu_root(cache, qemu),
    }
    hull_vmm = Path(build_dir) / "bin/hull-vmm"
    vmlinux = Path(guest_kernel)
    guest_initramfs = Path(guest_initramfs)
    if hull_vmm.exists():
        inputs["bin/hull-vmm"] = hull_vmm
    # The `hull` CLI (vsock Health from L1) and the shim, when built (`make static-bins`).
    # hull-agent: the bench's plain-Unix-socket peer of the vsock Health figure.
    for tool in ("hull", "containerd-shim-hull-v2", "hull-agent"):
        if (Path(build_dir) / "bin" / tool).exists():
            inputs[f"bin/{tool}"] = Path(build_dir) / "bin" / tool
    has_guest = vmlinux.exists() and guest_initramfs.exists()
    if has_guest:
        inputs["guest/vmlinux"] = vmlinux
        inputs["guest/initramfs.cpio"] = guest_initramfs
        # The pmem root image beside it (`make guest-image`), for runs given
        # --hull-config 'image="/lab/guest/rootfs.img"'.
        if (guest_initramfs.parent / "rootfs.img").exists():
            inputs["guest/rootfs.img"] = guest_initramfs.parent / "rootfs.img"
    if firecracker:
        inputs["bin/firecracker"] = static_executable(Path(firecracker), "--firecracker")
    ctr_inputs = containerd_inputs(build_lab, busybox, Path(build_dir) / "bin/lab-pod")
    inputs.update(ctr_inputs)
    # The agent's own test suite run against a microVM, and fsbench (`make lab-suite-bins`).
    suite_dir, fsbench = Path(build_dir) / "bin/agent-suite", Path(build_dir) / "bin/fsbench"
    if (suite_dir / "ORDER").exists() and fsbench.exists():
        inputs["bin/agent-suite"] = suite_dir
        inputs["bin/fsbench"] = fsbench
    disk = data_disk(build_lab, inputs)
    return L1Assets(
        kernel=kernel_dir / "vmlinuz",
        kernel_release=(kernel_dir / "release").read_text().strip(),
        initramfs=initramfs,
        data_disk=disk,
        has_hull_vmm=hull_vmm.exists(),
        has_guest=has_guest,
        has_containerd=bool(ctr_inputs) and "bin/containerd-shim-hull-v2" in inputs,
        has_suite="bin/agent-suite" in inputs and "bin/hull" in inputs and "bin/virtiofsd" in inputs,
        has_pods=bool(ctr_inputs) and "bin/containerd-shim-hull-v2" in inputs and "bin/lab-pod" in inputs,
        has_pmem_image="guest/rootfs.img" in inputs,
        has_firecracker="bin/firecracker" in inputs,
    )
