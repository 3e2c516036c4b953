#!/usr/bin/env bash
# The demo command, "make serve": serve-demo itself (on a Unix socket,
# its defaults otherwise) serves an encrypted, emulated host-managed
# disk.  It creates a 64-byte key on first use; nbdzone report shows the
# zones; pipelined out-of-order writes land in WP order; a restart finds
# zones and data as they were; no plaintext reaches the image.
source "$srcdir/functions.sh"
PATH="$top_builddir/tools:$PATH"
requires nbdkit --version
requires nbdzone --help
requires test -x ./zone-writer
requires test -x "$top_srcdir/serve-demo"
requires "$PYTHON3" -c 'import nbd'

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
img="$tmp/demo.img"
key="$tmp/demo.key"
sock="$tmp/demo.sock"
uri="nbd+unix:///?socket=$sock"
demo_pid=
cleanup_fn 'if [ -n "$demo_pid" ]; then kill $demo_pid 2>/dev/null; wait $demo_pid; fi'

# demo COMMANDS: start serve-demo as make serve does, run COMMANDS
# against it, stop it (SIGTERM, as Ctrl-C would), which must end it
# cleanly.
demo ()
{
    local i status=0
    rm -f "$sock"
    IMAGE="$img" KEY="$key" SOCKET="$sock" BUILDDIR="$top_builddir" \
        "$top_srcdir/serve-demo" > "$tmp/demo.out" 2>&1 &
    demo_pid=$!
    for ((i = 0; i < 300; i++)); do
        [ -S "$sock" ] && break
        kill -0 $demo_pid 2>/dev/null || break
        sleep 0.1
    done
    [ -S "$sock" ] || { cat "$tmp/demo.out"; fail "serve-demo did not start"; }
    bash -c "set -e; $1" || status=$?
    kill $demo_pid
    wait $demo_pid || { cat "$tmp/demo.out"; fail "serve-demo: exit status $? after SIGTERM"; }
    demo_pid=
    return $status
}

cat > "$tmp/digest.py" <<'EOS'
import hashlib, sys
sys.path.insert(0, sys.argv[2])
from zbd_helpers import connect
h = connect(sys.argv[1])
for z in range(2, 6):
    print(z, hashlib.sha256(h.pread(2 * 1048576, z * 64 * 1048576)).hexdigest())
EOS

demo "
    nbdzone report '$uri' > '$tmp/report0'
    timeout 150 ./zone-writer '$uri' 2 4 4 8 1 2097152
    nbdzone report '$uri' > '$tmp/report1'
    '$PYTHON3' '$tmp/digest.py' '$uri' '$srcdir' > '$tmp/digest1'
" || fail "the demo command"
cat "$tmp/demo.out"
grep -qF "Created a new random 64-byte AES-256-XTS key in $key" "$tmp/demo.out" ||
    fail "serve-demo did not say it created the key"
[ "$(stat -c '%s %a' "$key")" = "64 600" ] ||
    fail "the demo key is not 64 bytes readable by its owner only: $(stat -c '%s %a' "$key")"
cp "$key" "$tmp/key.first"

cat "$tmp/report1"
[ "$(wc -l < "$tmp/report0")" -eq 16 ] || fail "expected 16 zones"
[ "$(grep -c 'zcond: 0(nw) \[type: 1(CONVENTIONAL)\]' "$tmp/report0")" -eq 2 ] \
    || fail "expected 2 conventional zones"
[ "$(grep -c 'zcond: 1(em)' "$tmp/report0")" -eq 14 ] || fail "expected 14 empty zones"
for z in 2 3 4 5; do
    start=$(printf '0x%09x' $((z * 64 * 2048)))
    grep -qF "start: $start, len 0x020000, cap 0x020000, wptr 0x001000 reset:0 non-seq:0, zcond: 2(oi)" \
         "$tmp/report1" || fail "zone $z WP after the writes"
done

# Restart: the same key, zones and data as they were (geometry given
# again: it matches).
demo "
    nbdzone report '$uri' > '$tmp/report2'
    '$PYTHON3' '$tmp/digest.py' '$uri' '$srcdir' > '$tmp/digest2'
" || fail "the demo command after a restart"
cmp "$key" "$tmp/key.first" || fail "serve-demo changed the key on restart"
cmp "$tmp/report1" "$tmp/report2" || fail "zones changed across a restart"
cmp "$tmp/digest1" "$tmp/digest2" || fail "data changed across a restart"
# And the data on disk is not in clear: the zero-filled pattern words
# of zone 2 do not appear in the image.
if "$PYTHON3" -c '
import sys
f = open(sys.argv[1], "rb")
f.seek(80)
f.seek(int.from_bytes(f.read(8), "little") + 2 * 64 * 1048576)
d = f.read(4096)
w = ((2 * 64 * 1048576 + 8) * 0x9e3779b97f4a7c15 % 2**64).to_bytes(8, "little")
if d == bytes(4096):
    print("zone 2 of the image is empty", file=sys.stderr)
    sys.exit(2)
sys.exit(0 if d.find(w) >= 0 else 1)
' "$img"; then
    fail "plaintext found in the image"
elif [ $? -ne 1 ]; then
    fail "the image could not be checked"
fi

# Through the filter: nbdzone finish writes encrypted zeros to the
# capacity end (the zone becomes full, its data stays); reset empties.
demo "
    nbdzone finish '$uri' 128M
    nbdzone reset '$uri' 192M
    nbdzone report '$uri' > '$tmp/report3'
    '$PYTHON3' '$tmp/digest.py' '$uri' '$srcdir' > '$tmp/digest3'
" || fail "nbdzone finish/reset through the filter"
grep -qF "start: 0x000040000, len 0x020000, cap 0x020000, wptr 0x020000 reset:0 non-seq:0, zcond:14(fu)" \
     "$tmp/report3" || fail "zone 2 must be full after finish"
grep -qF "start: 0x000060000, len 0x020000, cap 0x020000, wptr 0x000000 reset:0 non-seq:0, zcond: 1(em)" \
     "$tmp/report3" || fail "zone 3 must be empty after reset"
[ "$(sed -n 1p "$tmp/digest3")" = "$(sed -n 1p "$tmp/digest1")" ] \
    || fail "finish changed the data of zone 2"
