#!/bin/sh
# make check: every saved regression input of every harness (each crash
# ever found), then a short fuzzing run of each from its seeds.
set -e
for t in $FUZZ_TARGETS; do
    short=${t#fuzz-}
    [ -x "./$t" ] || { echo "$0: $t is not built" >&2; exit 1; }
    inputs=$(ls "$srcdir/regress/$short"/* "$srcdir/corpus/$short"/* 2>/dev/null || :)
    [ -n "$inputs" ] || { echo "$0: no inputs for $t" >&2; exit 1; }
    echo "== $t: $(echo "$inputs" | wc -l) saved inputs"
    # shellcheck disable=SC2086
    ./$t $inputs > "$short-regress.log" 2>&1 ||
        { cat "$short-regress.log"; echo "$0: $t fails on a saved input" >&2; exit 1; }
    "$srcdir/run-fuzz.sh" "$t" "$srcdir" "$FUZZ_CHECK_SECONDS"
done
