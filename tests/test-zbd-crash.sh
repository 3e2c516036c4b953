#!/usr/bin/env bash
# Consistency after a process crash: kill -9 nbdkit in the middle of a
# write stream (at several points), restart, and check that every zone
# is consistent: its WP lies between the last flushed WP and the end of
# the data sent, and everything below the WP is the data written.
#
# This is not a durability test: the page cache survives a killed
# process, so what the plugin handed to the kernel without a sync is
# still there after kill -9.  Durability across a power cut (data synced
# before the zone table, FUA, flush) is what test-zbd-powercut.sh and
# test-zbd-flush-order.sh prove.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
pid=
cleanup_fn 'if [ -n "$pid" ]; then kill -9 $pid 2>/dev/null; fi'

# Kill points, counted in writes sent (not in seconds, which on a fast
# machine can land after the end of the stream).  The stream fills 12
# zones of 1 MiB in 544 writes, the first zone full at the 184th: the
# last kill point (320) has full and partial zones and is well inside
# the stream; one that is not (the writer finished first) fails the test.
for kill_at in 1 40 200 320; do
    img="$tmp/img-$kill_at"
    log="$tmp/log-$kill_at"
    sock="$tmp/sock"
    rm -f "$sock" "$tmp/pid"
    nbdkit -f -U "$sock" -P "$tmp/pid" zbd emulate="$img" size=32M \
           zone-size=1M conventional-zones=1 2>"$tmp/nbdkit.err" &
    pid=$!
    # nbdkit writes its pidfile once it accepts connections.
    for _ in $(seq 200); do [ -s "$tmp/pid" ] && break; sleep 0.1; done
    [ -s "$tmp/pid" ] || { cat "$tmp/nbdkit.err"; fail "nbdkit did not start"; }
    uri="nbd+unix:///?socket=$sock"

    timeout 120 "$PYTHON3" "$srcdir/zbd-stream.py" write "$uri" "$log" 12 \
        --until-killed &
    writer=$!
    for _ in $(seq 6000); do
        [ "$(grep -c '^sent' "$log" 2>/dev/null)" -ge "$kill_at" ] && break
        kill -0 "$writer" 2>/dev/null || break
        sleep 0.01
    done
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || :
    pid=
    wait "$writer" || fail "writer failed at kill point $kill_at"
    if grep -q '^complete' "$log"; then
        fail "the writer had finished before the kill at $kill_at writes: this kill point tests nothing"
    fi
    sent=$(grep -c '^sent' "$log" || :)
    [ "$sent" -ge "$kill_at" ] ||
        fail "only $sent writes sent before the kill at $kill_at writes"
    echo "kill point $kill_at writes: $sent writes sent," \
         "$(grep -c '^flushed' "$log") flushes"

    nbdkit -U - zbd emulate="$img" \
           --run "timeout 60 \"$PYTHON3\" \"$srcdir/zbd-stream.py\" check \"\$uri\" \"$log\"" \
        || fail "consistency after a process crash at kill point $kill_at writes"
done

# After kill -9 (a process crash, not a power cut): a FUA write is there
# with its WP, without a flush; a write without FUA or flush is there or
# not, but only as a whole (the WP is never above data); an acknowledged
# reset is kept.
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
check(wp(h, 0, M) == 8192, \"the FUA write must be kept with its WP\")
check(h.pread(8192, 0) == pattern(0, 8192, 7), \"FUA data\")
check(wp(h, M, M) == M, \"an acknowledged reset must be kept\")
p = wp(h, 2 * M, M)
check(p in (2 * M, 2 * M + 4096), \"zone 2 WP %d\" % p)
if p > 2 * M:
    check(h.pread(4096, 2 * M) == pattern(2 * M, 4096, 7), \"zone 2 data\")
print(\"FUA write and reset kept across a process crash (kill -9)\")
' \"\$uri\" \"$srcdir\"" || fail "FUA write and reset after a process crash"
