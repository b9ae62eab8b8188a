# Hull: the commands a developer (and CI) runs. See README.md.
#   make setup       install what building and testing needs (Debian 12; idempotent); demo and test run it first
#   make test        Tier 1 tests (unit, tiny guests on KVM/PVM, agent on the host), lint, then the lab smoke test
#   make demo        boot our guest kernel + agent with hull-vmm (directly on real KVM; on PVM in the nested lab,
#                    followed by `ctr run --runtime io.containerd.hull.v2` of a busybox container in a microVM)
#   make guest       guest kernel + initramfs into build/guest/
#   make bench       benchmarks (print figures, assert nothing)
#   make bench-hull  `hull bench` hull vs runc through a real containerd, hull in host-agent mode
#                    (no VM); tables, build/bench/bench.json and SVG plots (HULL_BENCH_N=10)
#   make fuzz        libFuzzer targets (fuzz/, nightly + cargo-fuzz) for FUZZ_SECONDS each; fuzz-smoke in make test
#   make soak        500 container create/delete cycles (SOAK_CYCLES=N) + SIGKILL faults through a real containerd,
#                    host-agent mode; counts before/after must match (not in make test)

SHELL := /bin/bash
BUILD_DIR ?= build
HULL_CACHE ?= /var/cache/hull
CARGO ?= cargo
export BUILD_DIR HULL_CACHE

.PHONY: all build setup setup-selftest test test-tier1 lint fmt bench bench-hull demo clean

all: build

build:
	$(CARGO) build --workspace

include guest-rootfs/guest.mk
include tests/lab/lab.mk
include fuzz/fuzz.mk

# The one set-up step (packages, rustup components, virtiofsd): installs what is missing, says
# what; does nothing when all is there. `make demo`, `make test` and CI all start with it.
setup:
	scripts/setup-host.sh

# The set-up step run again installs nothing and says so.
setup-selftest:
	@out=$$(scripts/setup-host.sh) && echo "$$out" && grep -q "nothing to install" <<< "$$out" \
		|| { echo "setup-selftest: a second set-up run still wanted to install something"; exit 1; }

# Tier 1: everything that runs on this machine, then the nested-lab smoke test (Tier 2).
test: setup lint test-tier1 guest-image-test fuzz-smoke setup-selftest lab-smoke

test-tier1:
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) test --release -p hull-vmm --test bench -- --ignored --nocapture --test-threads=1

# hull vs runc on this host with hull in host-agent mode (labelled so: no VM figures here).
bench-hull:
	$(CARGO) build --release -p hull-agent -p hull-runtime
	HULL_BENCH_OUT=$(abspath $(BUILD_DIR))/bench $(CARGO) test --release -p hull-runtime --test bench \
		-- --ignored --nocapture bench_hull_host_agent_full

# On a host with real KVM boot directly; on a PVM host (or without KVM) go through the nested lab.
demo: setup static-bins guest
	@if [ -e /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then \
		echo "== real KVM: booting $(BUILD_DIR)/guest/vmlinux with hull-vmm"; \
		$(BUILD_DIR)/bin/hull-vmm --kernel $(BUILD_DIR)/guest/vmlinux --initrd $(BUILD_DIR)/guest/initramfs.cpio \
			--mem-mib 256 --cmdline "console=ttyS0 reboot=k panic=-1 quiet hull.poweroff=1"; \
	else \
		echo "== this host's /dev/kvm is PVM (or absent): running the demo inside the nested lab"; \
		$(MAKE) --no-print-directory lab-demo && \
		echo "== containerd in the lab: ctr run --rm --runtime io.containerd.hull.v2 busybox uname -r" && \
		$(LAB_PY) ctr $(LAB_ARGS); \
	fi

# The soak: runtime-shim/tests/soak.rs (ignored in the default run).
.PHONY: soak
soak:
	$(CARGO) build -p hull-agent -p hull-runtime
	$(CARGO) test -p hull-runtime --test soak -- --ignored --nocapture --test-threads=1

clean:
	$(CARGO) clean
	rm -rf $(BUILD_DIR)
