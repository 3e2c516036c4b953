#!/usr/bin/env bash
# Crash consistency of the emulated image: kill -9 nbdkit during a
# write stream (at several points), restart, and check that every
# flushed write is intact and every WP lies between the last flushed
# WP and the end of the data sent.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
pid=
cleanup_fn 'if [ -n "$pid" ]; then kill -9 $pid 2>/dev/null; fi'

for delay in 0 0.2 0.5 1.2; do
    img="$tmp/img-$delay"
    log="$tmp/log-$delay"
    sock="$tmp/sock"
    rm -f "$sock" "$tmp/pid"
    nbdkit -f -U "$sock" -P "$tmp/pid" zbd emulate="$img" size=32M \
           zone-size=1M conventional-zones=1 2>"$tmp/nbdkit.err" &
    pid=$!
    # nbdkit writes its pidfile once it accepts connections.
    for _ in $(seq 200); do [ -s "$tmp/pid" ] && break; sleep 0.1; done
    [ -s "$tmp/pid" ] || { cat "$tmp/nbdkit.err"; fail "nbdkit did not start"; }
    uri="nbd+unix:///?socket=$sock"

    timeout 60 "$PYTHON3" "$srcdir/zbd-stream.py" write "$uri" "$log" 6 &
    writer=$!
    # Count the delay from the first write sent, not from start-up.
    for _ in $(seq 300); do
        grep -q '^sent' "$log" 2>/dev/null && break; sleep 0.1
    done
    sleep "$delay"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || :
    pid=
    wait "$writer" || fail "writer failed at kill point $delay"
    grep -q '^sent' "$log" || fail "no writes before the kill at $delay s"
    echo "kill point $delay s: $(grep -c '^sent' "$log") writes sent," \
         "$(grep -c '^flushed' "$log") flushes"

    nbdkit -U - zbd emulate="$img" \
           --run "timeout 60 \"$PYTHON3\" \"$srcdir/zbd-stream.py\" check \"\$uri\" \"$log\"" \
        || fail "crash consistency at kill point $delay s"
done

# A FUA write is durable with its WP, without a flush; a write without
# FUA or flush may be lost, but only as a whole (the WP is never above
# data).  Then a reset, acknowledged, is durable too.
img="$tmp/img-fua"
sock="$tmp/sock"
rm -f "$sock" "$tmp/pid"
nbdkit -f -U "$sock" -P "$tmp/pid" zbd emulate="$img" size=8M \
       zone-size=1M 2>"$tmp/nbdkit.err" &
pid=$!
for _ in $(seq 200); do [ -s "$tmp/pid" ] && break; sleep 0.1; done
[ -s "$tmp/pid" ] || { cat "$tmp/nbdkit.err"; fail "nbdkit did not start"; }
timeout 60 "$PYTHON3" -c '
import sys; sys.path.insert(0, sys.argv[2])
from zbd_helpers import *
import nbd
M = 1048576
h = connect(sys.argv[1])
h.pwrite(pattern(M, 8192, 7), M)                       # zone 1: filled,
h.flush()                                              # flushed,
h.trim(M, M)                                           # then reset
h.pwrite(pattern(2 * M, 4096, 7), 2 * M)               # zone 2: no flush
h.pwrite(pattern(0, 8192, 7), 0, nbd.CMD_FLAG_FUA)   # zone 0: FUA, last
' "nbd+unix:///?socket=$sock" "$srcdir" || fail "FUA/reset stream"
kill -9 "$pid"
wait "$pid" 2>/dev/null || :
pid=
nbdkit -U - zbd emulate="$img" --run "timeout 60 \"$PYTHON3\" -c '
import sys; sys.path.insert(0, sys.argv[2])
from zbd_helpers import *
M = 1048576
h = connect(sys.argv[1])
check(wp(h, 0, M) == 8192, \"the FUA write must survive with its WP\")
check(h.pread(8192, 0) == pattern(0, 8192, 7), \"FUA data\")
check(wp(h, M, M) == M, \"an acknowledged reset must survive\")
p = wp(h, 2 * M, M)
check(p in (2 * M, 2 * M + 4096), \"zone 2 WP %d\" % p)
if p > 2 * M:
    check(h.pread(4096, 2 * M) == pattern(2 * M, 4096, 7), \"zone 2 data\")
print(\"FUA write and reset durable across kill -9\")
' \"\$uri\" \"$srcdir\"" || fail "FUA and reset durability"
