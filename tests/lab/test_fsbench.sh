#!/bin/sh
# Tests tests/lab/fsbench.c on this machine: builds it, runs it on /tmp and on
# tmpfs mounts (needs root for mount), checks output format, exit codes and
# that nothing is left behind. Prints the figures it saw; asserts no timings.
# usage: sh tests/lab/test_fsbench.sh
set -u
src=$(cd "$(dirname "$0")" && pwd)/fsbench.c
tmp=$(mktemp -d /tmp/fsbench-test.XXXXXX)
failures=0
cleanup() {
    for m in "$tmp"/full "$tmp"/inodes "$tmp"/ro "$tmp"/fs; do
        mountpoint -q "$m" 2>/dev/null && umount "$m"
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

check() { # NAME CONDITION...
    name=$1; shift
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; failures=$((failures + 1)); fi
}
leftovers() { # DIR: true when DIR holds no fsbench.* entry
    [ -z "$(find "$1" -maxdepth 1 -name 'fsbench.*' -print -quit)" ]
}
# run DIR ARGS...: sets rc, out, err
run() {
    "$tmp/fsbench" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}
line_ok() { # DIR MIB FILES
    echo "$out" | grep -Eqx "FSBENCH dir=$1 write_mib_s=[0-9]+\.[0-9] read_mib_s=[0-9]+\.[0-9] create_per_s=[0-9]+\.[0-9] stat_per_s=[0-9]+\.[0-9] unlink_per_s=[0-9]+\.[0-9] mib=$2 files=$3" &&
        [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ]
}

check "builds warning-free" sh -c "gcc -O2 -Wall -Wextra -Werror -static -o '$tmp/fsbench' '$src'"
[ -x "$tmp/fsbench" ] || exit 1
check "is static" sh -c "file '$tmp/fsbench' | grep -q 'statically linked'"

mkdir "$tmp/plain"
run "$tmp/plain" --mib 4 --files 200
echo "     $out"
check "/tmp small run: rc 0" [ "$rc" -eq 0 ]
check "/tmp small run: one line" line_ok "$tmp/plain" 4 200
check "/tmp small run: nothing left" [ -z "$(ls -A "$tmp/plain")" ]

mkdir "$tmp/fs"
if mount -t tmpfs -o size=64m tmpfs "$tmp/fs" 2>/dev/null; then
    run "$tmp/fs" --files 300 --mib 16
    echo "     $out"
    check "tmpfs run: rc 0" [ "$rc" -eq 0 ]
    check "tmpfs run: one line" line_ok "$tmp/fs" 16 300
    check "tmpfs run: nothing left" [ -z "$(ls -A "$tmp/fs")" ]

    mkdir "$tmp/full" && mount -t tmpfs -o size=2m tmpfs "$tmp/full"
    run "$tmp/full" --mib 8 --files 10
    check "full disk: rc 1, write error" sh -c "[ $rc -eq 1 ] && echo '$err' | grep -q '^fsbench: write: .*/data: No space left on device$'"
    check "full disk: nothing left" [ -z "$(ls -A "$tmp/full")" ]

    mkdir "$tmp/inodes" && mount -t tmpfs -o nr_inodes=50 tmpfs "$tmp/inodes"
    run "$tmp/inodes" --mib 1 --files 100
    check "few inodes: rc 1, create error" sh -c "[ $rc -eq 1 ] && echo '$err' | grep -q '^fsbench: create: .*/f000000[0-9][0-9]: No space left on device$'"
    check "few inodes: nothing left" [ -z "$(ls -A "$tmp/inodes")" ]

    mkdir "$tmp/ro" && mount -t tmpfs -o ro tmpfs "$tmp/ro"
    run "$tmp/ro" --mib 1 --files 1
    check "read-only fs: rc 1, mkdir error" sh -c "[ $rc -eq 1 ] && echo '$err' | grep -q '^fsbench: mkdir: .*: Read-only file system$'"
else
    echo "skip tmpfs tests (mount failed, not root?)"
fi

run /nonexistent-dir --mib 1 --files 1
check "missing dir: rc 1, mkdir error" sh -c "[ $rc -eq 1 ] && [ -z '$out' ] && echo '$err' | grep -q '^fsbench: mkdir: /nonexistent-dir/fsbench\.[0-9]*: No such file or directory$'"
run /proc --mib 1 --files 1
check "/proc: rc 1, mkdir error" sh -c "[ $rc -eq 1 ] && echo '$err' | grep -q '^fsbench: mkdir: /proc/fsbench\.[0-9]*: '"
long=$(printf '/%0250d' 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17)
run "$long"
check "too long DIR: rc 1" sh -c "[ $rc -eq 1 ] && echo '$err' | grep -q 'File name too long$'"

for args in "" "--mib" "$tmp/plain --mib 0" "$tmp/plain --mib x" "$tmp/plain --files -3" \
    "$tmp/plain --files 5k" "$tmp/plain --bogus" "$tmp/plain $tmp/plain" "$tmp/plain --mib 99999999999999999999"; do
    # shellcheck disable=SC2086
    run $args
    check "bad args '$args': rc 2, usage" sh -c "[ $rc -eq 2 ] && [ -z '$out' ] && echo '$err' | grep -q '^usage: fsbench DIR'"
done
check "bad args: nothing left" [ -z "$(ls -A "$tmp/plain")" ]
check "no fsbench.* in /tmp or /" sh -c "! ls -d /tmp/fsbench.[0-9]* /fsbench.[0-9]* 2>/dev/null | grep -q ."

if [ "$failures" -ne 0 ]; then echo "$failures test(s) failed"; exit 1; fi
echo "all fsbench tests passed"
