#!/usr/bin/env bash
# Key bytes are protected in the process that serves.  nbdkit's default
# mode forks to the background after reading its configuration, and memory
# locks do not survive fork(2): the serving process must hold the key (and
# every key schedule made from it) in locked memory that a core dump
# leaves out.  Checked on the background server itself: its VmLck, and a
# core dump of it taken with gcore while a client is connected and every
# kind of thread (request and pool threads) has keyed its cipher handle.
source "$srcdir/cryptinline-lib.sh"
requires gdb --version
requires command -v gcore

make_key "$tmp/key" 64
sock="$tmp/sock"
pidfile="$tmp/pid"

# Background mode: no -f, no --run.
crypt_nbdkit -P "$pidfile" -U "$sock" --threads 4 --filter=cryptinline memory 16M \
    crypt-key-file="$tmp/key" crypt-mode=pool crypt-threads=3 ||
    fail "the background server did not start"
for ((i = 0; i < 100; i++)); do
    [ -s "$pidfile" ] && [ -S "$sock" ] && break
    sleep 0.1
done
[ -s "$pidfile" ] || fail "no pid file from the background server"
pid="$(cat "$pidfile")"
cleanup_fn kill "$pid"

# A client writes and reads (pool-sized requests, so the pool threads and
# a request thread key their handles), then stays connected until told.
"$PYTHON3" - "$sock" "$tmp/ready" "$tmp/done" <<'PY' &
import nbd, os, sys, time
sock, ready, done = sys.argv[1:]
h = nbd.NBD()
h.connect_unix(sock)
data = os.urandom(4 * 1024 * 1024)
h.pwrite(data, 0)
assert h.pread(len(data), 0) == data
open(ready, "w").close()
for _ in range(600):
    if os.path.exists(done):
        break
    time.sleep(0.1)
h.shutdown()
PY
client=$!
cleanup_fn "touch $tmp/done; wait $client"
for ((i = 0; i < 600; i++)); do
    [ -e "$tmp/ready" ] && break
    kill -0 $client 2>/dev/null || fail "the client failed"
    sleep 0.1
done
[ -e "$tmp/ready" ] || fail "the client did not get ready"

locked="$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status")"
echo "serving process $pid: VmLck ${locked} kB"
if [ "$(id -u)" = 0 ] || [ "$(ulimit -l)" = unlimited ] ||
   [ "$(ulimit -l)" -ge 1024 ]; then
    [ "$locked" -gt 0 ] ||
        fail "the serving (background) process holds no locked memory"
else
    echo "memory lock limit $(ulimit -l) kB: locked memory not checked"
fi

gcore -o "$tmp/core" "$pid" > "$tmp/gcore.log" 2>&1 ||
    { cat "$tmp/gcore.log"; fail "gcore failed"; }
core="$tmp/core.$pid"
[ -s "$core" ] || fail "gcore wrote no core file"

# Each 16-byte quarter of the key: XTS keys its data and tweak ciphers
# with one half each, and AES's key schedule begins with the key itself.
# The key file's path, which is in nbdkit's argv, must be found: the
# search itself works.
"$PYTHON3" - "$core" "$tmp/key" <<'PY'
import mmap, sys
with open(sys.argv[1], "rb") as f:
    core = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
key = open(sys.argv[2], "rb").read()
if core.find(sys.argv[2].encode()) == -1:
    sys.exit("the core dump lacks the key file's path: the search is broken")
found = [i for i in range(0, len(key), 16) if core.find(key[i:i + 16]) != -1]
if found:
    sys.exit("key bytes %s found in the core dump of the serving process"
             % ", ".join("%d-%d" % (i, i + 15) for i in found))
print("core dump of %d bytes holds no 16-byte piece of the key" % len(core))
PY
