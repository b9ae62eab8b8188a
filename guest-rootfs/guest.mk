# Guest image: the microVM kernel and the initramfs holding hull-agent.
# Included by the top-level Makefile (`include guest-rootfs/guest.mk`); make runs
# from the repository root. See guest-rootfs/README.md.
#
#   make guest-kernel     $(BUILD_DIR)/guest/vmlinux (cached in $(HULL_CACHE)/kernel/<key>/)
#   make static-bins      $(BUILD_DIR)/bin/: hull-agent, hull-vmm, hull, containerd-shim-hull-v2 (static;
#                         the agent with the size-optimized `guest-agent` profile: make static-agent)
#   make guest-initramfs  $(BUILD_DIR)/guest/initramfs.cpio (uncompressed newc; the agent stripped of
#                         its symbol tables: every byte of /init is guest memory the host pays for, twice)
#                         DEBUG_IMAGE=1: plus a shell (static busybox as /bin/sh) for `hull console`
#   make guest-image      $(BUILD_DIR)/guest/rootfs.img: the same files as a virtio-pmem root (PFN
#                         info block + ext4, mounted with DAX: /init runs from the host's page cache,
#                         shared by all VMs). Needs mke2fs/debugfs/e2fsck (e2fsprogs). DEBUG_IMAGE=1 too.
#   make guest            the kernel and both root images, then prints their sizes
#   make guest-rootfs-test  tests of the initramfs and pmem image writers and of build-kernel.sh (fake source)
#   make guest-image-test   the image writers' tests only (in make test)

BUILD_DIR ?= build
HULL_CACHE ?= /var/cache/hull

GUEST_ROOTFS_DIR := guest-rootfs
GUEST_OUT_DIR := $(BUILD_DIR)/guest
GUEST_BIN_DIR := $(BUILD_DIR)/bin
GUEST_VMLINUX := $(GUEST_OUT_DIR)/vmlinux
GUEST_INITRAMFS := $(GUEST_OUT_DIR)/initramfs.cpio
GUEST_PMEM_IMAGE := $(GUEST_OUT_DIR)/rootfs.img
# The agent both roots carry as /init, stripped once for both.
GUEST_AGENT_STRIPPED := $(GUEST_OUT_DIR)/hull-agent.stripped
GUEST_LAYOUT := $(GUEST_ROOTFS_DIR)/initramfs/layout.txt
# DEBUG_IMAGE=1 adds debug-layout.txt: /bin/sh (a static busybox, $(BUSYBOX)) for the debug
# console. The default image has no shell.
DEBUG_IMAGE ?= 0
BUSYBOX ?= /bin/busybox
GUEST_DEBUG_LAYOUT := $(GUEST_ROOTFS_DIR)/initramfs/debug-layout.txt
ifeq ($(DEBUG_IMAGE),1)
GUEST_LAYOUT_ARGS := --extra "$(GUEST_DEBUG_LAYOUT)" --set BUSYBOX="$(BUSYBOX)"
else
GUEST_LAYOUT_ARGS :=
endif

# DEBUG_IMAGE=1 needs a static busybox ($1: the target saying so).
define guest_check_debug_busybox
	@info=$$(file -L "$(BUSYBOX)" 2>&1); case "$$info" in \
	  *"statically linked"*|*"static-pie linked"*) ;; \
	  *) echo "DEBUG_IMAGE=1 needs a static busybox at BUSYBOX=$(BUSYBOX) (Debian: apt-get install busybox-static): $$info" >&2; exit 1 ;; \
	esac
	@echo "$(1): DEBUG IMAGE: adds $(BUSYBOX) as /bin/sh for the debug console (not for production)"
endef

# Static Rust binaries: an explicit --target keeps crt-static away from build
# scripts and proc macros; LIBSECCOMP_LINK_TYPE makes a libseccomp dependency
# link statically instead of silently dynamically.
CARGO ?= cargo
GUEST_RUST_TARGET := x86_64-unknown-linux-gnu
GUEST_CARGO_TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
GUEST_RELEASE_DIR := $(GUEST_CARGO_TARGET_DIR)/$(GUEST_RUST_TARGET)/release
GUEST_STATIC_ENV := RUSTFLAGS="-C target-feature=+crt-static" LIBSECCOMP_LINK_TYPE=static
GUEST_STATIC_CARGO := $(GUEST_STATIC_ENV) $(CARGO) build --release --target $(GUEST_RUST_TARGET)
# The agent with the workspace's `guest-agent` profile (built for size: Cargo.toml says why).
GUEST_AGENT_DIR := $(GUEST_CARGO_TARGET_DIR)/$(GUEST_RUST_TARGET)/guest-agent
GUEST_AGENT_CARGO := $(GUEST_STATIC_ENV) $(CARGO) build --profile guest-agent --target $(GUEST_RUST_TARGET)

# Copy a cargo-built binary ($1, from directory $2: default the release one) to
# $(GUEST_BIN_DIR), failing unless it is static.
define guest_install_static
	@info=$$(file -L "$(or $(2),$(GUEST_RELEASE_DIR))/$(1)"); \
	case "$$info" in \
	  *"dynamically linked"*|*"interpreter"*) echo "static-bins: $(1) is NOT static: $$info" >&2; exit 1 ;; \
	  *static*) ;; \
	  *) echo "static-bins: cannot tell whether $(1) is static: $$info" >&2; exit 1 ;; \
	esac
	@mkdir -p "$(GUEST_BIN_DIR)"
	cp "$(or $(2),$(GUEST_RELEASE_DIR))/$(1)" "$(GUEST_BIN_DIR)/$(1).tmp"
	mv -f "$(GUEST_BIN_DIR)/$(1).tmp" "$(GUEST_BIN_DIR)/$(1)"
endef

.PHONY: guest guest-kernel guest-agent-stripped guest-initramfs guest-image static-bins static-agent guest-rootfs-test guest-image-test

guest-kernel:
	HULL_CACHE="$(HULL_CACHE)" $(GUEST_ROOTFS_DIR)/scripts/build-kernel.sh "$(GUEST_VMLINUX)"

static-bins: static-agent
	$(GUEST_STATIC_CARGO) -p hull-vmm -p hull-runtime
	$(call guest_install_static,hull-vmm)
	$(call guest_install_static,hull)
	$(call guest_install_static,containerd-shim-hull-v2)
	@ls -l "$(GUEST_BIN_DIR)/hull-agent" "$(GUEST_BIN_DIR)/hull-vmm" "$(GUEST_BIN_DIR)/hull" \
		"$(GUEST_BIN_DIR)/containerd-shim-hull-v2"

# The initramfs needs only the agent; this builds it alone so a broken VMM
# does not block the guest image.
static-agent:
	$(GUEST_AGENT_CARGO) -p hull-agent
	$(call guest_install_static,hull-agent,$(GUEST_AGENT_DIR))

# The agent without its symbol tables: every byte of /init is memory the host pays for (in each
# guest's RAM from the initramfs, in the page cache from the pmem image).
guest-agent-stripped: static-agent
	@mkdir -p "$(GUEST_OUT_DIR)"
	strip --strip-all -o "$(GUEST_AGENT_STRIPPED)" "$(GUEST_BIN_DIR)/hull-agent"

guest-initramfs: guest-agent-stripped
ifeq ($(DEBUG_IMAGE),1)
	$(call guest_check_debug_busybox,guest-initramfs)
endif
	@mkdir -p "$(dir $(GUEST_INITRAMFS))"
	python3 $(GUEST_ROOTFS_DIR)/scripts/mk-initramfs.py "$(GUEST_LAYOUT)" "$(GUEST_INITRAMFS)" \
		--set AGENT="$(GUEST_AGENT_STRIPPED)" $(GUEST_LAYOUT_ARGS)
	@cpio -itv --quiet < "$(GUEST_INITRAMFS)"

# The virtio-pmem root: same layout, same stripped agent; the VMM maps the file into the guest
# and the kernel mounts it with root=/dev/pmem0 rootfstype=ext4 rootflags=dax ro.
guest-image: guest-agent-stripped
ifeq ($(DEBUG_IMAGE),1)
	$(call guest_check_debug_busybox,guest-image)
endif
	@mkdir -p "$(dir $(GUEST_PMEM_IMAGE))"
	python3 $(GUEST_ROOTFS_DIR)/scripts/mk-pmem-image.py "$(GUEST_LAYOUT)" "$(GUEST_PMEM_IMAGE)" --list \
		--set AGENT="$(GUEST_AGENT_STRIPPED)" $(GUEST_LAYOUT_ARGS)

guest: guest-kernel guest-initramfs guest-image
	@echo "guest images:"
	@ls -l "$(GUEST_VMLINUX)" "$(GUEST_INITRAMFS)" "$(GUEST_PMEM_IMAGE)" | awk '{ printf "  %-40s %10d bytes (%.1f MiB)\n", $$9, $$5, $$5 / 1048576 }'

guest-rootfs-test:
	python3 -m unittest discover -s $(GUEST_ROOTFS_DIR)/tests -v

# The image writers' tests alone (part of make test): build-kernel.sh's fake-source tests are
# left to guest-rootfs-test, they fail now and then on a loaded machine (guest-rootfs/README.md).
guest-image-test:
	python3 -B -m unittest discover -s $(GUEST_ROOTFS_DIR)/tests -p 'test_mk_*.py'
