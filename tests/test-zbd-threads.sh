#!/usr/bin/env bash
# The limit of the ordering guarantee (documented in the man page):
# writes sent out of order on one connection, more of them than its
# nbdkit --threads, time out; writes sent in order never do.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

log="$(mktemp)"
cleanup_fn rm -f "$log"
nbdkit -v -D zbd.gate=1 -U - --threads=2 zbd emulate=memory size=8M \
       zone-size=1M conventional-zones=1 reorder-timeout=1s \
       --run 'timeout 60 "$PYTHON3" "$srcdir/zbd-threads.py" "$uri"' \
       2>"$log" || { cat "$log"; fail "threads limit"; }
grep 'zbd.gate\|gate:' "$log" | head -5
grep -q 'gate: write at 1060864 waits in zone 1 (WP 1048576)' "$log" \
    || fail "-D zbd.gate=1 did not log the waiting write"
