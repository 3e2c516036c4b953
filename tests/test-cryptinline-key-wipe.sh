#!/usr/bin/env bash
# crypt-key-dir: an export's key leaves the serving process when the
# export's last connection closes, as the manual promises.  The running
# server's memory (/proc/PID/mem, every readable mapping) is searched
# for the two halves of the key (each also begins every AES key
# schedule made from it): found while a connection is open (so the
# search reads the right memory), gone after it closed, in the pool
# threads' cipher handles too.  In each crypt mode.
source "$srcdir/cryptinline-lib.sh"
requires test -r /proc/self/mem

d="$tmp/drives" k="$tmp/keys"
mkdir "$d" "$k"
make_zone_images "$d" a
make_key "$k/a" 64

cat > "$tmp/scan.py" <<'EOF'
# scan.py PID SOCKET KEYFILE ZONE: write and read zone ZONE of export a
# (1 MiB), then
# search the memory of the server (the nbdkit below PID) for the key
# while connected and after.
import os
import re
import sys
import time

import nbd

run_pid, sock, keyfile, zone = sys.argv[1:5]
offset = int(zone) << 20
key = open(keyfile, "rb").read()


def server_pid():
    # nbdkit --run: the process that runs this command forked the one
    # that serves, its child named nbdkit.
    for p in os.listdir("/proc"):
        try:
            stat = open("/proc/%s/stat" % p).read()
        except (OSError, ValueError):
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = stat[stat.rindex(")") + 2:].split()[1]
        if ppid == run_pid and comm == "nbdkit":
            return p
    sys.exit("FAIL: no serving nbdkit below process %s" % run_pid)


pid = server_pid()
needles = (key[:16], key[32:48])


def found():
    hits = 0
    with open("/proc/%s/maps" % pid) as maps, \
            open("/proc/%s/mem" % pid, "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
            if not m or "[vsyscall]" in line or "[vvar]" in line:
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue
            hits += sum(data.count(n) for n in needles)
    return hits


h = nbd.NBD()
h.connect_uri("nbd+unix:///a?socket=%s" % sock)
data = bytes(range(256)) * 4096
h.pwrite(data, offset)
h.flush()
if h.pread(len(data), offset) != data:
    sys.exit("FAIL: export a does not read back")
open_hits = found()
print("key halves found while connected: %d" % open_hits)
if open_hits == 0:
    sys.exit("FAIL: the key is not found in the server while in use: "
             "the search does not read the server's memory")
h.shutdown()
del h
# The server closes the connection after the client's goodbye.
for _ in range(50):
    left = found()
    if left == 0:
        break
    time.sleep(0.1)
print("key halves found after the last connection closed: %d" % left)
if left:
    sys.exit("FAIL: %d copies of the key's halves left in the server "
             "after the export's last connection closed" % left)
EOF

zone=0
for mode in $CRYPT_MODES; do
    echo "== crypt-mode=$mode"
    crypt_nbdkit -U - --filter=cryptinline zbd dir="$d" crypt-key-dir="$k" \
        crypt-mode=$mode crypt-threads=2 crypt-pool-threshold=64K \
        --run "\"$PYTHON3\" \"$tmp/scan.py\" \$PPID \"\$unixsocket\" \"$k/a\" $zone" ||
        fail "crypt-mode=$mode: the key stayed in the server"
    zone=$((zone + 1))
done
echo "crypt-key-dir: keys wiped: ok"
