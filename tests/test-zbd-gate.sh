#!/usr/bin/env bash
# The write gate: gap timeout while other zones work, gap filled in
# time, reset while writes wait, spanning writes; the log names zone,
# offset and WP of a write that timed out.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

log="$(mktemp)"
cleanup_fn rm -f "$log"
nbdkit -U - zbd emulate=memory size=32M zone-size=1M conventional-zones=1 \
       reorder-timeout=2s \
       --run 'timeout 120 "$PYTHON3" "$srcdir/zbd-gate.py" "$uri"' 2>"$log" \
    || { cat "$log"; fail "write gate"; }
cat "$log"
grep -q 'write at 1052672 waited 2000 ms for zone 1 whose write pointer stayed at 1048576 (reorder-timeout): EIO' "$log" \
    || fail "no log line naming the zone, offset and WP of the timed-out write"
