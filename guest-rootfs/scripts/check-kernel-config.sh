#!/bin/sh
# Check that a resolved kernel .config honours a Kconfig fragment.
#
# Usage: check-kernel-config.sh FRAGMENT DOTCONFIG
#
# Every "CONFIG_X=y" line of FRAGMENT must appear as "CONFIG_X=y" in DOTCONFIG,
# and every "# CONFIG_X is not set" line must not be "=y"/"=m" there.
# allnoconfig silently drops options whose dependencies are unmet; this turns
# that into an error listing the dropped options.
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 FRAGMENT DOTCONFIG" >&2
    exit 2
fi
fragment=$1
dotconfig=$2

missing=""
for opt in $(sed -n 's/^\(CONFIG_[A-Za-z0-9_]*\)=y[[:space:]]*$/\1/p' "$fragment"); do
    if ! grep -qx "$opt=y" "$dotconfig"; then
        actual=$(grep -E "^$opt=|^# $opt is not set" "$dotconfig" || true)
        missing="$missing
  $opt (wanted y, got: ${actual:-absent})"
    fi
done

unwanted=""
for opt in $(sed -n 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set[[:space:]]*$/\1/p' "$fragment"); do
    if grep -qE "^$opt=[ym]$" "$dotconfig"; then
        unwanted="$unwanted
  $opt (wanted off, got: $(grep -E "^$opt=" "$dotconfig"))"
    fi
done

if [ -n "$missing$unwanted" ]; then
    echo "kernel config check FAILED for $dotconfig" >&2
    if [ -n "$missing" ]; then
        echo "options dropped by allnoconfig (unmet dependencies?):$missing" >&2
    fi
    if [ -n "$unwanted" ]; then
        echo "options that should be off but are on:$unwanted" >&2
    fi
    exit 1
fi
count=$(grep -c '^CONFIG_[A-Za-z0-9_]*=y' "$fragment")
echo "kernel config check ok: all $count =y options of $(basename "$fragment") are set"
