#!/usr/bin/env bash
# The emulated image file: restart keeps zones and data; geometry
# parameters must match; a corrupt, truncated or foreign file is
# refused with one clear line; a torn newest table slot falls back to
# the previous one; -r opens it read-only.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version
requires nbdinfo --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
img="$tmp/zoned.img"
geom="size=16M zone-size=1M zone-capacity=768K conventional-zones=2 max-open-zones=4"
stream="$srcdir/zbd-stream.py"

# Create and fill some zones completely (the stream ends with a flush).
nbdkit -U - zbd emulate="$img" $geom \
       --run "timeout 60 \"$PYTHON3\" \"$stream\" write \"\$uri\" \"$tmp/log\" 3" \
    || fail "first run on a new image"
# A partial zone too, left without an explicit flush: nbdkit's clean
# shutdown does not flush, so only the first (flushed) write must be kept.
nbdkit -U - zbd emulate="$img" --run "\"$PYTHON3\" -c '
import sys; sys.path.insert(0, \"$srcdir\")
from zbd_helpers import *
h = connect(sys.argv[1])
h.pwrite(pattern(8*1048576, 8192, 7), 8*1048576)
h.flush()
' \"\$uri\"" || fail "writing a partial zone"
echo "sent $((8*1048576)) 8192" >> "$tmp/log"
echo "flushed 8:$((8*1048576+8192))" >> "$tmp/log"

# Restart without geometry: the image's geometry, zones and data.
desc="$(nbdkit -U - zbd emulate="$img" --run 'nbdinfo --json "$uri"' | \
        "$PYTHON3" -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["description"])')"
# The image's identity follows the geometry (test-zbd-identity.sh checks
# that it stays the same across restarts).
case "$desc" in
    "zoned=host-managed zone-size=1048576 zone-capacity=786432 zones=16 conventional=0-1 max-open=4 max-active=0 block-size=512 disk-id=image-"????????????????) ;;
    *) fail "geometry after restart: $desc" ;;
esac
nbdkit -U - zbd emulate="$img" \
       --run "timeout 60 \"$PYTHON3\" \"$stream\" check \"\$uri\" \"$tmp/log\"" \
    || fail "zones and data after restart"
# Same geometry given again: accepted.
nbdkit -U - zbd emulate="$img" $geom --run true \
    || fail "matching geometry refused"

# Every refusal is one clear line and exit status 1 before serving (a
# timeout, 124, or a crash, 139, after the line is not a clean refusal).
refused ()
{
    local what="$1" expect="$2"; shift 2
    local status=0
    timeout 30 nbdkit -U - "$@" --run true 2>"$tmp/err" || status=$?
    [ $status -ne 0 ] || fail "$what: nbdkit served anyway"
    [ $status -eq 1 ] || {
        cat "$tmp/err"; fail "$what: exit status $status, expected 1"; }
    grep -qF -- "$expect" "$tmp/err" || {
        cat "$tmp/err"; fail "$what: no message \"$expect\""; }
    [ "$(grep -c error "$tmp/err")" -eq 1 ] || {
        cat "$tmp/err"; fail "$what: expected exactly one error line"; }
    echo "refused ($what): $(grep error "$tmp/err" | head -1)"
}
refused "geometry mismatch" \
        "zone-size=2097152 does not match the existing image (zone-size=1048576)" \
        zbd emulate="$img" size=16M zone-size=2M
refused "conventional mismatch" \
        "conventional-zones=3 does not match the existing image (conventional-zones=2)" \
        zbd emulate="$img" conventional-zones=3

cp "$img" "$tmp/bad.img"
printf '\x55' | dd of="$tmp/bad.img" bs=1 seek=20 conv=notrunc status=none
refused "corrupt header" "the image header is corrupt (checksum mismatch)" \
        zbd emulate="$tmp/bad.img"

cp "$img" "$tmp/bad.img"
truncate -s 5M "$tmp/bad.img"
refused "truncated" "truncated image (5242880 bytes, expected" \
        zbd emulate="$tmp/bad.img"
truncate -s 100 "$tmp/bad.img"
refused "truncated header" "truncated image (100 bytes" \
        zbd emulate="$tmp/bad.img"

head -c 8192 /dev/urandom > "$tmp/bad.img"
refused "foreign file" "not a zbd emulation image (bad magic)" \
        zbd emulate="$tmp/bad.img"
refused "directory" "not a regular file" zbd emulate="$tmp"
refused "new image without geometry" "a new image needs size= and zone-size=" \
        zbd emulate="$tmp/new.img"
[ ! -e "$tmp/new.img" ] || fail "a refused new image was left behind"
refused "bad size" "size=10485760 must be a non-zero multiple of zone-size=4194304" \
        zbd emulate=memory size=10M zone-size=4M
refused "bad duration" "reorder-timeout=5x: not a duration" \
        zbd emulate=memory size=8M zone-size=1M reorder-timeout=5x
# Seconds and minutes that overflow 64 bits of milliseconds (this one
# wrapped to 384 ms): refused, not wrapped.
refused "overflowing duration" "reorder-timeout=18446744073709552: not a duration" \
        zbd emulate=memory size=8M zone-size=1M reorder-timeout=18446744073709552
refused "overflowing minutes" "reorder-timeout=307445734561826m: not a duration" \
        zbd emulate=memory size=8M zone-size=1M reorder-timeout=307445734561826m
refused "a day and a millisecond" "reorder-timeout=86400001ms: not a duration" \
        zbd emulate=memory size=8M zone-size=1M reorder-timeout=86400001ms

# Both table slots corrupt: refused.  Newest slot torn: the older one.
slot=$(( $(od -An -t u8 -j 72 -N 8 "$img") ))
cp "$img" "$tmp/bad.img"
printf '\x55' | dd of="$tmp/bad.img" bs=1 seek=$((4096 + 30)) conv=notrunc status=none
printf '\x55' | dd of="$tmp/bad.img" bs=1 seek=$((4096 + slot + 30)) conv=notrunc status=none
refused "both table slots corrupt" "both copies of the zone table are corrupt" \
        zbd emulate="$tmp/bad.img"
seq0=$(( $(od -An -t u8 -j 4100 -N 8 "$img") ))
seq1=$(( $(od -An -t u8 -j $((4096 + slot + 4)) -N 8 "$img") ))
cp "$img" "$tmp/bad.img"
if [ "$seq0" -gt "$seq1" ]; then newest=4096; else newest=$((4096 + slot)); fi
printf '\x55' | dd of="$tmp/bad.img" bs=1 seek=$((newest + 30)) conv=notrunc status=none
# The previous slot is the state before the partial-zone session:
# zones 2-4 full, zone 8 empty.
head -n -2 "$tmp/log" > "$tmp/log.prev"
nbdkit -U - zbd emulate="$tmp/bad.img" \
       --run "timeout 60 \"$PYTHON3\" \"$stream\" check \"\$uri\" \"$tmp/log.prev\" &&
              \"$PYTHON3\" -c '
import sys; sys.path.insert(0, \"$srcdir\")
from zbd_helpers import *
h = connect(sys.argv[1])
check(wp(h, 8*1048576, 786432) == 8*1048576, \"zone 8 must be empty in the older slot\")
' \"\$uri\"" \
    || fail "a torn newest table slot must fall back to the previous one"

# -r: served read-only, writes refused, the image unchanged.
sum="$(md5sum < "$img")"
nbdkit -r -U - zbd emulate="$img" --run "\"$PYTHON3\" -c '
import sys, errno; sys.path.insert(0, \"$srcdir\")
from zbd_helpers import *
h = connect(sys.argv[1])
check(h.is_read_only(), \"export must be read-only\")
expect_error(lambda: h.pwrite(bytes(4096), 2*1048576), errno.EPERM, \"write on -r\")
check(not h.can_trim() and not h.can_zero(), \"no trim or zero on -r\")
check(h.pread(4096, 2*1048576) == pattern(2*1048576, 4096, 7), \"read on -r\")
' \"\$uri\"" || fail "read-only"
[ "$(md5sum < "$img")" = "$sum" ] || fail "-r changed the image"
