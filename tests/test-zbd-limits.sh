#!/usr/bin/env bash
# Open/active zone limits (null_blk semantics): implicit close at the
# open limit, ENOSPC with a log line at the active limit.
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
done
