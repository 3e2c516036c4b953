#!/usr/bin/env bash
# Every harness's seeds and every input that once crashed it, replayed
# through the harness built with the ordinary compiler.
set -eu
for t in $FUZZ_TARGETS; do
    inputs=( "$srcdir/seeds/$t"/* )
    [ -e "${inputs[0]}" ] || { echo "$0: no seeds for $t" >&2; exit 1; }
    for f in "$srcdir/regressions/$t"/*; do
        [ "$(basename "$f")" = README ] || inputs+=( "$f" )
    done
    "./$t-replay" "${inputs[@]}" || {
        echo "$0: FAIL: $t crashes on one of its inputs" >&2; exit 1; }
    echo "$t: ${#inputs[@]} inputs replayed"
done
