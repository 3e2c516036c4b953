#!/usr/bin/env bash
# Open/active zone limits (null_blk semantics): implicit close at the
# open limit (of a zone with a write in flight too), ENOSPC with a log
# line at the active limit and for reopening a closed zone there.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
log="$tmp/log"
# The same rules on the memory backend and on the image file (whose
# zone operations are its own, for crash consistency).
for backend in memory "$tmp/img"; do
    nbdkit -U - zbd emulate="$backend" size=16M zone-size=1M \
           max-open-zones=2 max-active-zones=3 \
           --run 'timeout 60 "$PYTHON3" "$srcdir/zbd-limits.py" "$uri"' \
           2>"$log" || { cat "$log"; fail "zone limits ($backend)"; }
    cat "$log"
    grep -q 'write at 3145728 to zone 3: too many active zones (3, max-active-zones=3): ENOSPC' "$log" \
        || fail "no log line for the active-zone limit ($backend)"
    grep -q 'finish of zone 6: too many active zones (3, max-active-zones=3): ENOSPC' "$log" \
        || fail "no log line for a finish at the active-zone limit ($backend)"
    grep -q 'write at 4096 to closed zone 0: too many open zones (2, max-open-zones=2), and with every active slot taken (max-active-zones=3) none is closed to reopen it: ENOSPC' "$log" \
        || fail "no log line for the refused reopen of a closed zone ($backend)"
done

# Every open zone with a write in flight: one is closed all the same.
nbdkit -U - -D zbd.write_delay_ms=500 zbd emulate=memory size=16M zone-size=1M \
       max-open-zones=2 \
       --run 'timeout 60 "$PYTHON3" "$srcdir/zbd-limits-busy.py" "$uri"' \
       2>"$log" || { cat "$log"; fail "open limit with writes in flight"; }
cat "$log"
! grep -q 'too many open zones' "$log" ||
    fail "a write was refused at the open limit with writes in flight"
