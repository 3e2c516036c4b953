#!/usr/bin/env bash
# Every thread's cipher handle (its key schedule) stays in locked memory,
# however many connections and threads there are: with many connections
# x threads the key memory grows, still locked; where the memory lock
# limit forbids more, a request that would need a new handle fails with
# ENOMEM and a log line saying why, instead of keying a handle in
# swappable memory silently; a refused write changes nothing.  On the
# background (forked) server.
source "$srcdir/cryptinline-lib.sh"

make_key "$tmp/key" 64
chmod 755 "$tmp"; chmod 644 "$tmp/key"
CONNS=32

# serve NAME -f|--log=null [PREFIX...]: a server in the foreground (its
# log in $tmp/NAME.log) or forked to the background (a background nbdkit
# sends its stderr to /dev/null); the pid in $tmp/NAME.pid.
serve ()
{
    local name=$1 how=$2 i
    shift 2
    # A sparse file: a block never written stays a hole and reads as
    # zeros (the memory plugin's pages would read as noise around it).
    truncate -s 64M "$tmp/$name.img"; chmod 666 "$tmp/$name.img"
    "$@" "$(command -v nbdkit)" $how -P "$tmp/$name.pid" -U "$tmp/$name.sock" \
        --threads 16 --filter="${CRYPTINLINE_FILTER:-cryptinline}" \
        file "$tmp/$name.img" crypt-key-file="$tmp/key" crypt-mode=inline \
        2> "$tmp/$name.log" &
    [ "$how" = -f ] || wait $! || fail "$name did not start"
    for ((i = 0; i < 100; i++)); do
        [ -s "$tmp/$name.pid" ] && [ -S "$tmp/$name.sock" ] && break
        sleep 0.1
    done
    [ -s "$tmp/$name.pid" ] || fail "$name wrote no pid file"
    cleanup_fn kill "$(cat "$tmp/$name.pid")"
}

# load NAME: $CONNS connections at once, 64 writes in flight on each, a
# few rounds, so that each of the server's 16 threads per connection
# keys a handle; prints how many writes failed and with which errno, and
# the server's VmLck while all connections are still open.
load ()
{
    "$PYTHON3" - "$tmp/$1.sock" "$(cat "$tmp/$1.pid")" "$CONNS" <<'PY'
import collections, sys
import nbd
sock, pid, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
hs = []
for _ in range(conns):
    h = nbd.NBD()
    h.connect_unix(sock)
    hs.append(h)
errors = collections.Counter()
done = 0
want = {}                       # offset: what its last successful write wrote
for r in range(4):
    cookies = []
    for i, h in enumerate(hs):
        for j in range(64):
            off = (i * 64 + j) * 4096
            buf = nbd.Buffer.from_bytearray(bytearray([r + 1] * 4096))
            cookies.append((h, off, h.aio_pwrite(buf, off)))
    for h, off, c in cookies:
        while True:
            try:
                if h.aio_command_completed(c):
                    done += 1
                    want[off] = bytes([r + 1] * 4096)
                    break
            except nbd.Error as e:
                errors[e.errno] += 1
                break
            h.poll(-1)
with open("/proc/%s/status" % pid) as f:
    vmlck = [l.split()[1] for l in f if l.startswith("VmLck:")][0]
for h in hs:
    h.shutdown()
# A write that failed changed nothing: every block holds what its last
# successful write wrote (zeros if none did).  Read on a fresh connection
# once the others' threads, and their handles, are gone.
check = nbd.NBD()
check.connect_unix(sock)
for off in range(0, conns * 64 * 4096, 4096):
    got = check.pread(4096, off)
    if got != want.get(off, bytes(4096)):
        sys.exit("block at %d holds %s..., its last successful write wrote "
                 "%s..." % (off, got[:4].hex(),
                            want.get(off, bytes(4096))[:4].hex()))
check.shutdown()
print(done, sum(errors.values()), ",".join(map(str, errors)) or "-", vmlck)
PY
}

# With no memory lock limit (root): all succeed, all handles locked.
if [ "$(id -u)" = 0 ]; then
    serve free --log=null
    read -r ok failed errnos locked < <(load free)
    echo "no lock limit: $ok writes ok, $failed failed ($errnos), VmLck $locked kB"
    [ "$failed" = 0 ] || { cat "$tmp/free.log"; fail "writes failed without a lock limit"; }
    # Hundreds of threads keyed a handle of a few KiB each: far more than
    # the first 256 KiB of key memory, and all of it locked.
    [ "$locked" -ge 1024 ] ||
        fail "VmLck $locked kB: the cipher handles of $((CONNS * 16)) threads are not all in locked memory"
fi

# Under a 512 KiB memory lock limit (an unprivileged user): handles
# beyond it are refused, loudly, never keyed in swappable memory.
if [ "$(id -u)" = 0 ]; then
    requires setpriv --version
    chmod 777 "$tmp"
    limited=(setpriv --reuid=nobody --regid=nogroup --clear-groups
             bash -c 'ulimit -l 512; exec "$0" "$@"')
else
    limited=(bash -c 'ulimit -l 512; exec "$0" "$@"')
fi
serve limited -f "${limited[@]}"
read -r ok failed errnos locked < <(load limited)
echo "lock limit 512 KiB: $ok writes ok, $failed failed ($errnos), VmLck $locked kB"
[ "$locked" -le 512 ] || fail "VmLck $locked kB above the limit?"
[ "$ok" -gt 0 ] || { cat "$tmp/limited.log"; fail "no write succeeded under the lock limit"; }
[ "$failed" -gt 0 ] ||
    fail "all $ok writes succeeded: the handles beyond the lock limit were keyed in swappable memory, silently"
[ "$errnos" = ENOMEM ] || fail "writes failed with $errnos, expected ENOMEM"
grep -q "no locked memory left for this thread's AES-XTS key schedule" "$tmp/limited.log" ||
    { tail -5 "$tmp/limited.log"; fail "no log line says why the writes failed"; }
echo "cipher handles stay in locked memory or are refused loudly"
