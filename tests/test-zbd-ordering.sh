#!/usr/bin/env bash
# Ordering stress: 4 connections x 8 writes in flight, shuffled within
# each window, thousands of writes into the same zones: all succeed and
# read back right, on memory and file (the plugin alone).
source "$srcdir/functions.sh"
requires nbdkit --version
requires test -x ./zone-writer

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
head -c 64 /dev/urandom > "$tmp/key"
geometry="size=64M zone-size=1M conventional-zones=2 reorder-timeout=20s"

run ()
{
    local what="$1"; shift
    echo "ordering: $what"
    nbdkit -U - "$@" --run 'timeout 150 ./zone-writer "$uri" 2 40 4 8' \
        || fail "ordering stress: $what"
}

# shellcheck disable=SC2086
run "memory" zbd emulate=memory $geometry
# shellcheck disable=SC2086
run "file" zbd emulate="$tmp/img" $geometry
