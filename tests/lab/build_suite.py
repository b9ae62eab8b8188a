#!/usr/bin/env python3
"""Builds what the lab's agent-suite step runs in L1 (see run.sh, lab_agent_suite):

- the hull-agent integration tests named in SUITE, as static test executables
  (`cargo test --no-run`, crt-static like the guest binaries), in BUILD_DIR/bin/agent-suite/;
- fsbench (tests/lab/fsbench.c), static, in BUILD_DIR/bin/fsbench;
- the pod step's CRI client (runtime-shim/examples/lab_pod.rs, static), in BUILD_DIR/bin/lab-pod.

usage: build_suite.py BUILD_DIR
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
REPO = LAB_DIR.parent.parent
TARGET = "x86_64-unknown-linux-gnu"
# The agent's own suite, run against the agent as PID 1 of a microVM. Order matters: oom ends
# with PowerOff (its long-poll test), which stops the VM.
SUITE = ["containers", "limits", "shared_fs", "oom"]


def is_static(path):
    info = subprocess.run(["file", "-L", str(path)], capture_output=True, text=True, check=True).stdout
    return "statically linked" in info or ("static-pie" in info and "interpreter" not in info), info


def build_tests(out_dir):
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static", LIBSECCOMP_LINK_TYPE="static")
    cmd = [os.environ.get("CARGO", "cargo"), "test", "--no-run", "--release", "--target", TARGET,
           "-p", "hull-agent", "--message-format=json-render-diagnostics"]  # fmt: skip
    for name in SUITE:
        cmd += ["--test", name]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"build_suite: cargo test --no-run failed (exit {proc.returncode})")
    found = {}
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        target = msg.get("target", {})
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and target.get("kind") == ["test"]:
            found[target["name"]] = Path(msg["executable"])
    missing = [n for n in SUITE if n not in found]
    if missing:
        sys.exit(f"build_suite: cargo produced no executable for {missing}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for name in SUITE:
        static, info = is_static(found[name])
        if not static:
            sys.exit(f"build_suite: {found[name]} is not static: {info.strip()}")
        shutil.copy(found[name], out_dir / name)
    (out_dir / "ORDER").write_text("\n".join(SUITE) + "\n")


def build_pod_client(out):
    """The CRI client the pod step runs in L1 (an example of hull-runtime: it uses the CRI test
    client, a dev-dependency)."""
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static", LIBSECCOMP_LINK_TYPE="static")
    cmd = [os.environ.get("CARGO", "cargo"), "build", "--release", "--target", TARGET,
           "-p", "hull-runtime", "--example", "lab_pod", "--message-format=json-render-diagnostics"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"build_suite: cargo build --example lab_pod failed (exit {proc.returncode})")
    exe = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "lab_pod":
            exe = msg.get("executable")
    if not exe:
        sys.exit("build_suite: cargo produced no lab_pod executable")
    static, info = is_static(exe)
    if not static:
        sys.exit(f"build_suite: {exe} is not static: {info.strip()}")
    tmp = out.with_suffix(".tmp")
    shutil.copy(exe, tmp)
    tmp.replace(out)


def build_fsbench(out):
    cc = shutil.which("cc") or "gcc"
    tmp = out.with_suffix(".tmp")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-static", "-o", str(tmp), str(LAB_DIR / "fsbench.c")], check=True)
    tmp.replace(out)


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    bin_dir = Path(argv[1]) / "bin"
    build_tests(bin_dir / "agent-suite")
    build_fsbench(bin_dir / "fsbench")
    build_pod_client(bin_dir / "lab-pod")
    print(f"build_suite: {', '.join(SUITE)}, fsbench and lab-pod in {bin_dir}")


if __name__ == "__main__":
    main(sys.argv)
