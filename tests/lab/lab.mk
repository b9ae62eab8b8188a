# The nested lab (tests/lab/README.md): included by the top-level Makefile,
# run from the repository root.
#
#   make lab-smoke     boot L1 once, hull-vmm boots our guest, vsock Health, agent suite, one
#                      CRI pod with two containers in a microVM (part of `make test`)
#   make lab-test      the smoke, `ctr run` through our shim, the full pod step (two pods in two
#                      microVMs, pod start hull vs runc), 5 boots with 2 vCPUs and 1 GiB
#   make lab-console   the ctr step with a debug guest image (DEBUG_IMAGE=1 initramfs in
#                      $(BUILD_DIR)/guest-debug/): `hull console` must reach the guest's shell
#   make lab-bench     hull-vmm vs QEMU microvm (and Firecracker: LAB_FIRECRACKER=static binary) in the
#                      same L1, then `hull bench` in VM mode (figures)
#   make lab-hangrate  LAB_ARGS="--n 20 --vmm qemu ..." (reliability measurements)
#   make lab-demo      for `make demo` on a PVM host: our guest booted by hull-vmm in the lab
#   make lab-assets    only build/refresh the cached L1 assets
#   make lab-suite-bins  the agent suite (static test executables), fsbench and the pod step's
#                        CRI client (lab-pod) for L1
#   make lab-selftest  host-side tests of the lab's own pieces (seconds)
#
# LAB_ARGS passes options to tests/lab/lab.py (see `python3 tests/lab/lab.py -h`).
# LAB_INPUTS names the targets that build hull-vmm and the guest image.

BUILD_DIR ?= build
HULL_CACHE ?= /var/cache/hull
LAB_INPUTS ?= static-bins guest lab-suite-bins
LAB_ARGS ?=
LAB_PY = python3 -B tests/lab/lab.py --build-dir $(BUILD_DIR) --cache $(HULL_CACHE)

.PHONY: lab-suite-bins lab-smoke lab-test lab-soak lab-console lab-bench lab-hangrate lab-demo lab-assets lab-selftest lab-clean

# The agent's test suite as static executables and fsbench, run in L1 against a microVM.
lab-suite-bins:
	python3 -B tests/lab/build_suite.py $(BUILD_DIR)

lab-selftest:
	python3 -B -m unittest discover -s tests/lab -p 'test_*.py'

lab-smoke: lab-selftest $(LAB_INPUTS)
	$(LAB_PY) smoke $(LAB_ARGS)

lab-test: lab-selftest $(LAB_INPUTS)
	$(LAB_PY) test $(LAB_ARGS)

lab-soak: $(LAB_INPUTS)
	$(LAB_PY) ctr --soak 50 $(LAB_ARGS)

# The default image has no shell (the ctr step then checks the agent's refusal); this builds the
# debug initramfs beside it, from the same agent, and wants the shell.
LAB_DEBUG_INITRAMFS = $(BUILD_DIR)/guest-debug/initramfs.cpio
lab-console: $(LAB_INPUTS)
	$(MAKE) --no-print-directory guest-initramfs DEBUG_IMAGE=1 GUEST_INITRAMFS=$(LAB_DEBUG_INITRAMFS)
	$(LAB_PY) ctr --guest-initramfs $(LAB_DEBUG_INITRAMFS) --console-shell $(LAB_ARGS)

lab-bench: $(LAB_INPUTS)
	$(LAB_PY) bench $(LAB_ARGS)
	$(LAB_PY) ctr --hull-bench --n 5

lab-hangrate: $(LAB_INPUTS)
	$(LAB_PY) hangrate $(LAB_ARGS)

# `quiet` like the direct demo; LAB_ARGS="--extra ''" shows the whole boot.
lab-demo: $(LAB_INPUTS)
	$(LAB_PY) demo --extra quiet $(LAB_ARGS)

lab-assets:
	$(LAB_PY) assets $(LAB_ARGS)

lab-clean:
	rm -rf $(BUILD_DIR)/lab
