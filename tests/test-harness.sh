#!/usr/bin/env bash
# The test harness itself, so that no test can pass by accident:
# - a test stopped by SIGTERM (automake's or CI's timeout) or SIGINT
#   (Ctrl-C) in the middle of its work exits 143 or 130 and runs its
#   cleanup (functions.sh);
# - under NBDKIT_PRELOAD (how make check-tsan runs nbdkit) the ./nbdkit
#   wrapper fails a run whose server is still there after SIGTERM
#   (a shutdown deadlock), and passes one whose server ends.
source "$srcdir/functions.sh"
requires nbdkit --version
requires nbdinfo --version
requires test -f .libs/hang-at-exit.so

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"

# The victim is busy in a foreground command when the signal comes, so
# bash runs the trap after that command, whose status is 0.
cat > "$tmp/victim.sh" <<EOF2
source "$srcdir/functions.sh"
cleanup_fn touch "$tmp/cleaned"
touch "$tmp/started"
sleep 2
echo "victim: finished its work"
EOF2
# Job control: a background job of a script ignores SIGINT otherwise.
set -m
for sig in TERM:143 INT:130; do
    rm -f "$tmp/started" "$tmp/cleaned"
    bash "$tmp/victim.sh" &
    victim=$!
    for _ in $(seq 100); do [ -e "$tmp/started" ] && break; sleep 0.05; done
    [ -e "$tmp/started" ] || fail "the victim test did not start"
    kill -"${sig%:*}" "$victim"
    status=0
    wait "$victim" || status=$?
    [ "$status" -eq "${sig#*:}" ] ||
        fail "a test sent SIG${sig%:*} exited with status $status, expected ${sig#*:}"
    [ -e "$tmp/cleaned" ] || fail "a test sent SIG${sig%:*} did not run its cleanup"
    echo "a test sent SIG${sig%:*}: status $status, cleanup run"
done
set +m

# The wrapper under a harmless preload: the server ends, the run passes.
NBDKIT_PRELOAD=libc.so.6 NBDKIT_STOP_TIMEOUT=5 \
    nbdkit -U - memory 1M --run 'nbdinfo "$uri" >/dev/null' ||
    fail "the ./nbdkit wrapper failed a run whose server ended"
echo "preloaded server that ends on SIGTERM: run passed"

# A server that hangs in an exit handler: the run fails, with the line.
status=0
NBDKIT_PRELOAD="$PWD/.libs/hang-at-exit.so" NBDKIT_STOP_TIMEOUT=2 \
    nbdkit -U - memory 1M --run 'nbdinfo "$uri" >/dev/null' \
    2>"$tmp/err" || status=$?
cat "$tmp/err"
[ "$status" -eq 1 ] ||
    fail "a server hanging after SIGTERM: wrapper status $status, expected 1"
grep -qF "still running 2 s after SIGTERM (a shutdown deadlock); killed with SIGKILL" "$tmp/err" ||
    fail "a server hanging after SIGTERM: no failure line from the wrapper"
echo "preloaded server hanging after SIGTERM: run failed as it must"
