#!/usr/bin/env bash
# Key bytes are protected in the process that serves.  nbdkit's default
# mode forks to the background after reading its configuration, and memory
# locks do not survive fork(2): the serving process must hold the key (and
# every key schedule made from it) in locked memory that a core dump
# leaves out.  Checked on the background server itself: its VmLck, and a
# core dump of it taken with gcore while a client is connected and every
# kind of thread (request and pool threads) has keyed its cipher handle.
# Twice: with a raw key file, and with the volume key of a LUKS2 header
# made by cryptsetup (crypt-header=), where the passphrase must not be in
# the core dump either.
#
# Whether memory can be locked here is decided by the test, not by the
# server's own answer: an mlock probe (of more than the server locks)
# with RLIMIT_MEMLOCK reported.  Where it can, the serving process must
# hold locked memory.  Where it cannot, everything else is checked and
# the test exits 77 (skipped, never passed).
source "$srcdir/luks-lib.sh"
requires gdb --version
requires command -v gcore

# "yes WHY" or "no WHY": can this process (and so the server it starts,
# which inherits its limits) lock 1 MiB?
lock_probe="$("$PYTHON3" - <<'PY'
import ctypes, mmap, os, resource
libc = ctypes.CDLL(None, use_errno=True)
libc.mlock.argtypes = libc.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
n = 1 << 20
buf = mmap.mmap(-1, n)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
limit = "unlimited" if soft == resource.RLIM_INFINITY else "%d kB" % (soft // 1024)
if libc.mlock(addr, n) == 0:
    libc.munlock(addr, n)
    print("yes an mlock of 1 MiB works (RLIMIT_MEMLOCK %s, euid %d)"
          % (limit, os.geteuid()))
else:
    print("no an mlock of 1 MiB fails with %s (RLIMIT_MEMLOCK %s, euid %d)"
          % (os.strerror(ctypes.get_errno()), limit, os.geteuid()))
PY
)" || fail "the memory lock probe failed"
echo "memory locking: ${lock_probe#* }"

# check_serving_process KEY SECRET filter-params...: KEY holds the key
# the server must protect; SECRET a file whose bytes (a passphrase) must
# not be in the core dump either, or "".
check_serving_process ()
{
    local keyfile="$1" secret="$2"; shift 2
    local sock="$tmp/sock" pidfile="$tmp/pid" i pid client locked core
    rm -f "$sock" "$pidfile" "$tmp/ready" "$tmp/done"

    # Background mode: no -f, no --run.
    crypt_nbdkit -P "$pidfile" -U "$sock" --threads 4 --filter=cryptinline memory 16M \
        "$@" crypt-mode=pool crypt-threads=3 ||
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
    case "$lock_probe" in
        yes*)
            [ "$locked" -gt 0 ] ||
                fail "the serving (background) process holds no locked memory, but ${lock_probe#* }" ;;
        *)
            echo "memory cannot be locked here: locked memory not checked" ;;
    esac

    gcore -o "$tmp/core" "$pid" > "$tmp/gcore.log" 2>&1 ||
        { cat "$tmp/gcore.log"; fail "gcore failed"; }
    core="$tmp/core.$pid"
    [ -s "$core" ] || fail "gcore wrote no core file"

    # Each 16-byte quarter of the key: XTS keys its data and tweak ciphers
    # with one half each, and AES's key schedule begins with the key itself.
    # The key file's path, which is in nbdkit's argv, must be found: the
    # search itself works.
    "$PYTHON3" - "$core" "$keyfile" "$secret" "$*" <<'PY' || fail "secrets in the core dump ($*)"
import mmap, sys
with open(sys.argv[1], "rb") as f:
    core = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
key = open(sys.argv[2], "rb").read()
if core.find(sys.argv[4].split()[0].encode()) == -1:
    sys.exit("the core dump lacks the first parameter: the search is broken")
found = [i for i in range(0, len(key), 16) if core.find(key[i:i + 16]) != -1]
if found:
    sys.exit("key bytes %s found in the core dump of the serving process"
             % ", ".join("%d-%d" % (i, i + 15) for i in found))
if sys.argv[3] and core.find(open(sys.argv[3], "rb").read()) != -1:
    sys.exit("the passphrase is in the core dump of the serving process")
print("core dump of %d bytes holds no 16-byte piece of the key%s"
      % (len(core), " nor the passphrase" if sys.argv[3] else ""))
PY
    touch "$tmp/done"
    wait $client || fail "the client failed"
    kill "$pid"
    rm -f "$core"
}

make_key "$tmp/key" 64
check_serving_process "$tmp/key" "" crypt-key-file="$tmp/key"

truncate -s 16M "$tmp/disk"
printf 'a passphrase that must not be found in a core dump' > "$tmp/pass"
# shellcheck disable=SC2086
luks_format "$tmp/hdr" "$tmp/disk" "$tmp/pass" --type luks2 $LUKS_ARGON2
volume_key "$tmp/hdr" "$tmp/pass" "$tmp/vk"
check_serving_process "$tmp/vk" "$tmp/pass" \
    crypt-header="$tmp/hdr" crypt-passphrase=+"$tmp/pass"

case "$lock_probe" in
    yes*) ;;
    *) echo "SKIP: memory cannot be locked here (${lock_probe#* }): the core dumps passed, locking not checked"
       exit 77 ;;
esac
