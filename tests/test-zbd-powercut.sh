#!/usr/bin/env bash
# Power cut at any point on the emulated image: record the plugin's
# writes, hole punches and syncs on the image during a workload of
# writes, pipelined writes, flushes, FUA writes, resets, finishes and a
# reset of every zone; then build the images a power cut could leave at
# every crash point and check that each opens and keeps DESIGN.md's
# invariant (zbd-powercut.py says how).  kill -9 cannot show this: the
# page cache survives the process.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version
requires nbdinfo --version
recorder="$top_builddir/tests/.libs/crash-recorder.so"
[ -f "$recorder" ] || fail "$recorder was not built"

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
img="$tmp/zoned.img"
seed="${POWERCUT_SEED:-9}"
states="${POWERCUT_STATES:-4000}"

# The image is created when the first client connects for writing.
nbdkit -U - zbd emulate="$img" size=2M zone-size=256K zone-capacity=192K \
       conventional-zones=1 --run 'nbdinfo "$uri" >/dev/null' \
    || fail "creating the image"
cp "$img" "$tmp/image0"

CRASHREC_FILE="$img" CRASHREC_TRACE="$tmp/trace" LD_PRELOAD="$recorder" \
    nbdkit -U - zbd emulate="$img" \
    --run "env -u LD_PRELOAD \"$PYTHON3\" \"$srcdir/zbd-powercut.py\" workload \"\$uri\" \"$tmp/trace\" $seed" \
    || fail "the recorded workload failed"
[ -s "$tmp/trace" ] || fail "nothing was recorded"

# POWERCUT_KEEP=DIR keeps the trace and the failing crash images there.
work="${POWERCUT_KEEP:-$tmp/work}"
mkdir -p "$work"
cp "$tmp/image0" "$tmp/trace" "$work/"
"$PYTHON3" "$srcdir/zbd-powercut.py" check "$tmp/image0" "$tmp/trace" \
           "$seed" "$top_builddir/nbdkit" "$states" "$work" \
    || fail "a power cut can leave an image that breaks the invariant (seed $seed; POWERCUT_KEEP=DIR keeps the images)"
