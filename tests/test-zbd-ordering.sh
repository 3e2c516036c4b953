#!/usr/bin/env bash
# Ordering stress: 4 connections x 8 writes in flight, shuffled within
# each window, thousands of writes into the same zones: all succeed and
# read back right, on memory and file (the plugin alone).
source "$srcdir/functions.sh"
source "$srcdir/zbd-ordering-lib.sh"

# shellcheck disable=SC2086
run "memory" zbd emulate=memory $geometry
# shellcheck disable=SC2086
run "file" zbd emulate="$tmp/img" $geometry
