#!/usr/bin/env bash
# An orderly stop keeps every acknowledged write of the emulated image,
# flushed or not, as a drive does when it is shut down in order: the
# write pointers are saved when the last writer disconnects and when
# nbdkit unloads the plugin.  Three stops: the captive --run command
# ending after its client disconnected; SIGTERM after the client
# disconnected; SIGTERM with the client still connected.  Each time the
# zone's write pointer and bytes must be there after a restart.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
pid=
cleanup_fn 'if [ -n "$pid" ]; then kill -9 $pid 2>/dev/null; fi'
geom="size=8M zone-size=1M conventional-zones=1"
export srcdir

# write URI ZONE [linger]: 4 KiB of a zone's pattern at its start, no
# flush, no FUA; with "linger", stay connected until nbdkit goes away.
write_py='
import sys, time; sys.path.insert(0, sys.argv[1])
from zbd_helpers import *
M = 1048576
zone = int(sys.argv[3])
h = connect(sys.argv[2])
h.pwrite(pattern(zone * M, 4096, zone), zone * M)
if len(sys.argv) > 4:
    print("written", flush=True)
    try:
        while True:
            h.pread(512, 0)
            time.sleep(0.05)
    except nbd.Error:
        pass
'
# check IMG ZONE...: after a restart, each zone holds its 4 KiB.
check ()
{
    local img="$1"; shift
    nbdkit -U - zbd emulate="$img" --run "\"$PYTHON3\" -c '
import sys; sys.path.insert(0, sys.argv[1])
from zbd_helpers import *
M = 1048576
h = connect(sys.argv[2])
for z in map(int, sys.argv[3:]):
    w = wp(h, z * M, M)
    check(w == z * M + 4096, \"zone %d: WP %d after a clean stop, expected %d\"
          % (z, w - z * M, 4096))
    check(h.pread(4096, z * M) == pattern(z * M, 4096, z),
          \"zone %d: the bytes written before the stop differ\" % z)
' \"\$srcdir\" \"\$uri\" $*" || fail "$img: acknowledged writes lost by a clean stop"
}

# start IMG: nbdkit in the foreground of a background job, on $tmp/sock.
start ()
{
    rm -f "$tmp/sock" "$tmp/pid"
    nbdkit -f -U "$tmp/sock" -P "$tmp/pid" zbd emulate="$1" $geom \
           2>"$tmp/nbdkit.err" &
    pid=$!
    for _ in $(seq 200); do [ -s "$tmp/pid" ] && break; sleep 0.1; done
    [ -s "$tmp/pid" ] || { cat "$tmp/nbdkit.err"; fail "nbdkit did not start"; }
}
stop ()
{
    kill -TERM "$pid"
    wait "$pid" || { cat "$tmp/nbdkit.err"; fail "nbdkit exited with $? on SIGTERM"; }
    pid=
}
uri="nbd+unix:///?socket=$tmp/sock"

# 1. Captive: the --run command ends after its client disconnected.
# shellcheck disable=SC2086
nbdkit -U - zbd emulate="$tmp/run.img" $geom \
       --run "\"$PYTHON3\" -c '$write_py' \"\$srcdir\" \"\$uri\" 1 &&
              \"$PYTHON3\" -c '$write_py' \"\$srcdir\" \"\$uri\" 2" \
    || fail "writing before the captive stop"
check "$tmp/run.img" 1 2
echo "captive --run end: both zones kept"

# 2. SIGTERM after the client disconnected.
start "$tmp/term.img"
"$PYTHON3" -c "$write_py" "$srcdir" "$uri" 3 || fail "writing before SIGTERM"
stop
check "$tmp/term.img" 3
echo "SIGTERM after disconnect: zone kept"

# 3. SIGTERM while the client is still connected.
start "$tmp/live.img"
"$PYTHON3" -c "$write_py" "$srcdir" "$uri" 4 linger > "$tmp/client.out" &
client=$!
for _ in $(seq 100); do grep -q written "$tmp/client.out" && break; sleep 0.1; done
grep -q written "$tmp/client.out" || fail "the lingering client did not write"
stop
wait "$client" || fail "the lingering client failed"
check "$tmp/live.img" 4
echo "SIGTERM with a client connected: zone kept"
