#!/usr/bin/env bash
# The one set-up step of `make demo`, `make test` and CI: checks what this machine lacks for
# building and testing Hull, says what it installs, installs it, and does nothing when all is
# present. Debian 12 only; elsewhere it lists what to install and stops.
#
#   scripts/setup-host.sh            check and install
#   scripts/setup-host.sh --check    only say what is missing (exit 1 if anything is)
set -euo pipefail

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

# Debian packages, by what needs them.
packages=(
  # Rust crates that build C, the static agent, tiny test guests
  build-essential file python3 pkg-config
  # guest kernel build (guest-rootfs/): ~5 min once, cached in $HULL_CACHE
  linux-source-6.1 flex bison bc libelf-dev libssl-dev cpio kmod xz-utils patch
  # nested lab (tests/lab/)
  qemu-system-x86 busybox-static e2fsprogs
  # containerd shim and CRI tests (runtime-shim/tests/): containerd, runc, the CNI plugins,
  # `ip`, and protoc for the k8s-cri crate's build script
  containerd runc bsdutils containernetworking-plugins iproute2 protobuf-compiler
  # virtiofsd (built from crates.io)
  libcap-ng-dev libseccomp-dev
)
rust_components=(clippy rustfmt)

say() { echo "setup: $*"; }

if [ ! -r /etc/debian_version ] || ! command -v dpkg-query > /dev/null; then
  say "this is not a Debian machine; Hull's set-up knows Debian 12 only."
  say "install the equivalents of these Debian packages, then run again:"
  printf '  %s\n' "${packages[@]}"
  say "and: rustup component add ${rust_components[*]}; cargo install virtiofsd --locked"
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
done
missing_components=()
for c in "${rust_components[@]}"; do
  rustup component list --installed 2> /dev/null | grep -q "^$c" || missing_components+=("$c")
done
export PATH="$HOME/.cargo/bin:$PATH"
need_virtiofsd=0
command -v virtiofsd > /dev/null 2>&1 || need_virtiofsd=1

if [ ${#missing[@]} -eq 0 ] && [ ${#missing_components[@]} -eq 0 ] && [ $need_virtiofsd -eq 0 ]; then
  say "nothing to install: every package, rustup component and virtiofsd is present"
  exit 0
fi
[ ${#missing[@]} -gt 0 ] && say "missing Debian packages: ${missing[*]}"
[ ${#missing_components[@]} -gt 0 ] && say "missing rustup components: ${missing_components[*]}"
[ $need_virtiofsd -eq 1 ] && say "missing: virtiofsd (cargo install virtiofsd --locked, ~4 min once)"
if [ $check_only -eq 1 ]; then
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  say "installing needs root (apt-get); run again as root"
  exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} with apt-get (a minute or two)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ${#missing_components[@]} -gt 0 ]; then
  say "installing rustup components ${missing_components[*]}"
  rustup component add "${missing_components[@]}"
fi
if [ $need_virtiofsd -eq 1 ]; then
  say "building virtiofsd from crates.io (cargo install virtiofsd --locked; ~4 min on 2 cores)"
  cargo install virtiofsd --locked
fi
say "done"
