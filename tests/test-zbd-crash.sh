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
