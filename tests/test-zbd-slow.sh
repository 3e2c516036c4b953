#!/usr/bin/env bash
# The write gate on a slow device (every write delayed at the device by
# -D zbd.write_delay_ms): writes sent in order never time out, however
# long the queue in front of them; a write at the device longer than
# the timeout does not fail the writes behind it; a gap nobody fills
# fails one timeout after the WP last moved, and the log line names the
# WP as it really stood.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

log="$(mktemp)"
cleanup_fn rm -f "$log"

# $1 = write delay (ms), $2 = reorder-timeout (ms), $3 = case
slow ()
{
    nbdkit -U - -D zbd.write_delay_ms="$1" zbd emulate=memory size=8M \
           zone-size=1M conventional-zones=1 reorder-timeout="$2"ms \
           --run "timeout 60 \"\$PYTHON3\" \"\$srcdir/zbd-slow.py\" \"\$uri\" $1 $2 $3" \
           2>"$log" || { cat "$log"; fail "slow device: $3 (delay $1 ms, timeout $2 ms)"; }
    cat "$log"
}

# Each write 0.7 s at the device, reorder-timeout=1s: the third write
# queues 1.4 s.
slow 700 1000 inorder
# One write at the device longer than the timeout: the gate does not
# count it against the writes queued behind it.
slow 1500 1000 inorder
# A real gap still fails, within the bound, with a true log line.
slow 700 1000 gap
grep -q 'write at 2105344 waited 1000 ms for zone 2 whose write pointer stayed at 2101248 (reorder-timeout): EIO' "$log" \
    || fail "no true log line for the write that timed out (WP 2101248)"
