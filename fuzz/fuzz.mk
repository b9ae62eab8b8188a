# libFuzzer targets (fuzz/, cargo-fuzz on the nightly toolchain; see fuzz/README.md).
#   make fuzz [FUZZ_SECONDS=600] [FUZZ_TARGETS="handshake mmio"]   each target for FUZZ_SECONDS (default 60)
#   make fuzz-smoke                                                 build all, ~15 s each (part of make test)
# fuzz/run.sh checks for the nightly toolchain (fails with a clear message if it is missing) and
# installs cargo-fuzz from crates.io (`cargo install cargo-fuzz`) when `cargo fuzz` is missing.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_TARGETS ?=

.PHONY: fuzz fuzz-smoke

fuzz:
	fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke:
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)
