#!/usr/bin/env bash
# Ordering stress: 4 connections x 8 writes in flight, shuffled within
# each window, thousands of writes into the same zones: all succeed and
# read back right, on memory and file, through the cryptinline filter.
source "$srcdir/functions.sh"
source "$srcdir/zbd-ordering-lib.sh"

# shellcheck disable=SC2086
run "memory + cryptinline" --filter=cryptinline zbd emulate=memory \
    $geometry crypt-key-file="$tmp/key"
# shellcheck disable=SC2086
run "file + cryptinline" --filter=cryptinline zbd emulate="$tmp/img2" \
    $geometry crypt-key-file="$tmp/key"
