#!/bin/bash
# Build (or fetch from the cache) the Hull microVM guest kernel.
#
# Usage: build-kernel.sh OUTPUT_VMLINUX
#
# Environment:
#   HULL_CACHE      cache root (default /var/cache/hull); results live in
#                   $HULL_CACHE/kernel/<key>/{vmlinux,config,build.log}
#   KERNEL_TARBALL  kernel source (default /usr/src/linux-source-6.1.tar.xz)
#   KERNEL_SOURCE_PACKAGE  Debian package that ships it (default linux-source-6.1)
#   KERNEL_SOURCE_VERSION  source version for the key (default: asked from dpkg)
#   JOBS            parallel make jobs (default: nproc)
#
# Patches: every guest-rootfs/kernel/patches/*.patch, in name order, applied with
# `patch -p1` to the extracted source before the build (a patch that does not apply fails it).
# The cache key is the sha256 of: the config fragment's settings (its CONFIG_
# lines and "# CONFIG_X is not set" lines; other comments do not count), the
# source package version, the gcc version, the patches and the build scripts themselves.
# A cache entry is created in a temp dir and renamed into place, so it is
# either complete or absent. Builds are serialised with flock on
# $HULL_CACHE/kernel/.lock. On a cache hit the script only hardlinks (or
# copies) the cached vmlinux to OUTPUT_VMLINUX and its .config next to it.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rootfs_dir=$(dirname "$script_dir")
fragment="$rootfs_dir/kernel/hull-microvm.config"
checker="$script_dir/check-kernel-config.sh"
patch_dir="$rootfs_dir/kernel/patches"

cache_root=${HULL_CACHE:-/var/cache/hull}
tarball=${KERNEL_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
source_package=${KERNEL_SOURCE_PACKAGE:-linux-source-6.1}
jobs=${JOBS:-$(nproc)}

log() { echo "guest-kernel: $*"; }
die() { echo "guest-kernel: error: $*" >&2; exit 1; }

[ "$#" -eq 1 ] || die "usage: $0 OUTPUT_VMLINUX"
output=$1

[ -f "$fragment" ] || die "config fragment $fragment is missing"
[ -f "$tarball" ] || die "kernel source $tarball is missing (apt-get install $source_package)"
source_version=${KERNEL_SOURCE_VERSION:-}
if [ -z "$source_version" ]; then
    source_version=$(dpkg-query -W -f='${Version}' "$source_package" 2>/dev/null) ||
        die "package $source_package is not installed (apt-get install $source_package)"
fi
gcc_version=$(gcc --version | head -n 1) || die "gcc is not installed"

# Everything that changes the resulting vmlinux goes into the key.
# The fragment's settings, without comments and blank lines.
fragment_settings() {
    sed -n -e 's/[[:space:]]*$//' -e '/^CONFIG_/p' -e '/^# CONFIG_[A-Za-z0-9_]* is not set$/p' "$fragment"
}

# Sets the array `patches` to the patch files in name order (the glob sorts). Listed once and
# used both for the cache key and for applying them, so the two cannot disagree.
list_patches() {
    local patch_file
    patches=()
    for patch_file in "$patch_dir"/*.patch; do
        [ -f "$patch_file" ] || continue
        patches+=("$patch_file")
    done
}
list_patches

cache_key=$({
    echo "fragment"; fragment_settings | sha256sum
    echo "source $source_package $source_version"
    echo "compiler $gcc_version"
    echo "build-script"; sha256sum <"$script_dir/build-kernel.sh"
    echo "check-script"; sha256sum <"$checker"
    for patch_file in "${patches[@]}"; do
        echo "patch $(basename "$patch_file")"; sha256sum <"$patch_file"
    done
} | sha256sum | cut -d' ' -f1)

kernel_cache="$cache_root/kernel"
entry="$kernel_cache/$cache_key"

# Verify that an ELF vmlinux carries the Xen PVH entry note (type 0x12).
has_pvh_note() {
    local notes
    notes=$(readelf -nW "$1") || return 1
    grep -E '^[[:space:]]*Xen[[:space:]]' <<<"$notes" | grep -iE 'type: \(0x0*12\)|PHYS32_ENTRY' >/dev/null
}

# The kernel's bss ends on a 2 MiB boundary and the guest clears all of it at boot, so the
# padding after its last symbol is host memory every pod pays (see hull-microvm.config, "kernel
# image size"). Prints it; prints nothing when the symbols are not there.
report_bss_padding() {
    local syms stop last
    syms=$(nm -n -S "$1" 2>/dev/null) || return 0
    stop=$(awk '$NF == "__bss_stop" { print $1; exit }' <<<"$syms")
    [ -n "$stop" ] || return 0
    last=$(awk -v stop="$stop" 'NF == 4 && ($3 == "b" || $3 == "B") && $1 < stop { a = $1; s = $2 } END { if (a != "") print a, s }' <<<"$syms")
    [ -n "$last" ] || return 0
    set -- $last
    local padding=$(( 16#$stop - 16#$1 - 16#$2 ))
    log "bss padding to its 2 MiB boundary: $(( padding / 1024 )) KiB (the guest clears it: host memory per pod)"
}

# Place the cached vmlinux at $output: hardlink when possible, else copy.
install_output() {
    mkdir -p "$(dirname "$output")"
    rm -f "$output"
    if ! ln "$entry/vmlinux" "$output" 2>/dev/null; then
        cp "$entry/vmlinux" "$output"
    fi
    rm -f "$output.config"
    cp "$entry/config" "$output.config"
    chmod 0644 "$output.config"
    log "$output ($(stat -c %s "$output") bytes) from cache entry $entry"
    report_bss_padding "$output"
}

if [ -f "$entry/vmlinux" ]; then
    log "cache hit (key $cache_key)"
    install_output
    exit 0
fi

mkdir -p "$kernel_cache"
exec 9>"$kernel_cache/.lock"
log "waiting for the kernel build lock $kernel_cache/.lock"
flock 9

# Another build may have produced the entry while we waited.
if [ -f "$entry/vmlinux" ]; then
    log "cache hit after waiting for the lock (key $cache_key)"
    install_output
    exit 0
fi

# We hold the lock, so any temp dir left behind is from a killed build.
for stale in "$kernel_cache"/tmp-*; do
    [ -e "$stale" ] || continue
    log "removing stale temp dir $stale"
    rm -rf "$stale"
done

work=$(mktemp -d "$kernel_cache/tmp-XXXXXX")
heartbeat_pid=""
stop_heartbeat() {
    if [ -n "$heartbeat_pid" ]; then
        kill "$heartbeat_pid" 2>/dev/null || true
        wait "$heartbeat_pid" 2>/dev/null || true
        heartbeat_pid=""
    fi
}
trap 'stop_heartbeat; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
build_log="$work/build.log"
start=$(date +%s)

log "cache miss (key $cache_key): building from $source_package $source_version with $jobs jobs"
log "build log: $build_log (kept in the cache entry on success)"

{
    echo "key: $cache_key"
    echo "source: $source_package $source_version ($tarball)"
    echo "compiler: $gcc_version"
    echo "fragment settings sha256: $(fragment_settings | sha256sum | cut -d' ' -f1)"
} >"$build_log"

# Print a progress line every minute so a long step is visibly alive.
heartbeat() {
    while sleep 60 </dev/null >/dev/null 2>&1; do
        log "  ... $(($(date +%s) - start)) s: $(tail -n 1 "$build_log" 2>/dev/null)"
    done
}

# Run a step with its output appended to the build log; show the tail on failure.
run_step() {
    local name=$1 status=0
    shift
    log "step: $name"
    echo "==== $name: $*" >>"$build_log"
    # fd 9 (the lock) is closed so a still-sleeping heartbeat never holds it.
    heartbeat 9>&- &
    heartbeat_pid=$!
    "$@" >>"$build_log" 2>&1 || status=$?
    stop_heartbeat
    if [ "$status" -ne 0 ]; then
        echo "---- last 40 lines of $build_log ----" >&2
        tail -n 40 "$build_log" >&2
        cp "$build_log" "$kernel_cache/last-failed-build.log"
        echo "full log: $kernel_cache/last-failed-build.log" >&2
        die "step '$name' failed"
    fi
}

run_step "extract source" tar -xJf "$tarball" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'linux-*' | head -n 1)
[ -n "$src" ] || die "no linux-* directory in $tarball"
for patch_file in "${patches[@]}"; do
    run_step "patch $(basename "$patch_file")" patch -p1 -d "$src" --forward --batch -i "$patch_file"
done

# Fixed build identity so the banner does not depend on who built it.
export KBUILD_BUILD_USER=hull KBUILD_BUILD_HOST=hull KBUILD_BUILD_VERSION=1
export KBUILD_BUILD_TIMESTAMP="$source_package $source_version"

run_step "allnoconfig" make -C "$src" allnoconfig KCONFIG_ALLCONFIG="$fragment"
# Fail with the list of options allnoconfig dropped (unmet dependencies).
if ! "$checker" "$fragment" "$src/.config" 2>&1 | tee -a "$build_log"; then
    cp "$build_log" "$kernel_cache/last-failed-build.log"
    die "kernel config check failed: fix $fragment (see the list above)"
fi
run_step "build vmlinux" make -C "$src" -j"$jobs" vmlinux

has_pvh_note "$src/vmlinux" || die "$src/vmlinux has no Xen PVH entry note (type 0x12)"
log "PVH entry note present"

mkdir "$work/entry"
mv "$src/vmlinux" "$work/entry/vmlinux"
cp "$src/.config" "$work/entry/config"
chmod 0444 "$work/entry/vmlinux" "$work/entry/config"
echo "built in $(($(date +%s) - start)) s" >>"$build_log"
mv "$build_log" "$work/entry/build.log"
# Atomic publish: the entry appears complete or not at all.
mv -T "$work/entry" "$entry"
log "built in $(($(date +%s) - start)) s, cached as $entry"

install_output
