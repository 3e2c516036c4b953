#!/usr/bin/env bash
# nbdzone against the zbd plugin: report matches geometry and WPs;
# reset and finish change them; clear errors for a non-zoned export,
# an offset not at a zone start, a conventional zone, and an
# unreachable server.
source "$srcdir/functions.sh"
requires nbdkit --version
PATH="$top_builddir/tools:$PATH"
requires nbdzone --help
requires "$PYTHON3" -c 'import nbd'

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"

cat > "$tmp/script" <<'EOS'
set -e
uri="$1"
out="$tmp/out"
# Zone 2 gets 12 KiB, zone 3 is filled to its capacity (768K).
"$PYTHON3" -c '
import sys; sys.path.insert(0, sys.argv[2])
from zbd_helpers import *
h = connect(sys.argv[1])
h.pwrite(bytes(12288), 2*1048576)
h.pwrite(b"x" * 786432, 3*1048576)
' "$uri" "$srcdir"
nbdzone report "$uri" > "$out"
cat "$out"
[ "$(wc -l < "$out")" -eq 8 ] || { echo "expected 8 zones"; exit 1; }
# Lines like blkzone: sectors of 512 bytes.
grep -qxF '  start: 0x000000000, len 0x000800, cap 0x000800, wptr 0x000000 reset:0 non-seq:0, zcond: 0(nw) [type: 1(CONVENTIONAL)]' "$out"
grep -qxF '  start: 0x000000800, len 0x000800, cap 0x000800, wptr 0x000000 reset:0 non-seq:0, zcond: 0(nw) [type: 1(CONVENTIONAL)]' "$out"
grep -qxF '  start: 0x000001000, len 0x000800, cap 0x000600, wptr 0x000018 reset:0 non-seq:0, zcond: 2(oi) [type: 2(SEQ_WRITE_REQUIRED)]' "$out"
grep -qxF '  start: 0x000001800, len 0x000800, cap 0x000600, wptr 0x000600 reset:0 non-seq:0, zcond:14(fu) [type: 2(SEQ_WRITE_REQUIRED)]' "$out"
grep -qxF '  start: 0x000002000, len 0x000800, cap 0x000600, wptr 0x000000 reset:0 non-seq:0, zcond: 1(em) [type: 2(SEQ_WRITE_REQUIRED)]' "$out"
# OFFSET and LENGTH select zones.
[ "$(nbdzone report "$uri" 2M 2M | wc -l)" -eq 2 ]
nbdzone report "$uri" 3M 1 | grep -q 'start: 0x000001800'

# finish zone 2, reset zone 3, then reset all.
nbdzone finish "$uri" 2M
nbdzone report "$uri" 2M 1 | grep -qF 'wptr 0x000600 reset:0 non-seq:0, zcond:14(fu)'
nbdzone reset "$uri" 3145728
nbdzone report "$uri" 3M 1 | grep -qF 'wptr 0x000000 reset:0 non-seq:0, zcond: 1(em)'
nbdzone finish "$uri" 4M
nbdzone report "$uri" 4M 1 | grep -qF 'zcond:14(fu)'
nbdzone reset "$uri" all
[ "$(nbdzone report "$uri" | grep -c 'zcond: 1(em)')" -eq 6 ]

# Errors: one line each, non-zero exit, no zone and no byte changed.
state () {
    nbdzone report "$uri"
    "$PYTHON3" -c '
import hashlib, sys; sys.path.insert(0, sys.argv[2])
from zbd_helpers import *
h = connect(sys.argv[1])
print(hashlib.sha256(h.pread(h.get_size(), 0)).hexdigest())
' "$uri" "$srcdir"
}
state > "$tmp/state-before"
expect_err () {
    if nbdzone "$@" 2>"$tmp/err"; then echo "nbdzone $* succeeded"; exit 1; fi
    cat "$tmp/err"
    [ "$(wc -l < "$tmp/err")" -eq 1 ]
}
expect_err reset "$uri" 4096
grep -qF 'offset 4096 is not at a zone start (zones are 1048576 bytes; the nearest zone starts are 0 and 1048576)' "$tmp/err"
expect_err finish "$uri" 1M
grep -qF 'zone 1 at offset 1048576 is conventional' "$tmp/err"
expect_err reset "$uri" 64M
grep -qF 'offset 67108864 is beyond the end of the export' "$tmp/err"
expect_err report "$uri" 12Q
grep -qF 'OFFSET "12Q" is not a byte count' "$tmp/err"
expect_err frobnicate "$uri"
grep -qF 'unknown command "frobnicate"' "$tmp/err"
expect_err reset "$uri"
grep -qF 'nbdzone: reset takes one OFFSET (or all), not 0 arguments (see nbdzone --help)' "$tmp/err"
expect_err finish "$uri" 2M 3M
grep -qF 'nbdzone: finish takes one OFFSET, not 2 arguments (see nbdzone --help)' "$tmp/err"
expect_err report "$uri" 0 1M 2M
grep -qF 'nbdzone: report takes at most OFFSET and LENGTH, not 3 arguments (see nbdzone --help)' "$tmp/err"
state > "$tmp/state-after"
cmp "$tmp/state-before" "$tmp/state-after" || { echo "a refused command changed the export"; exit 1; }
EOS

export tmp      # the script reads it
nbdkit -U - zbd emulate=memory size=8M zone-size=1M \
       zone-capacity=768K conventional-zones=2 \
       --run "timeout 60 bash -x \"$tmp/script\" \"\$uri\"" 2>"$tmp/log" \
    || { cat "$tmp/log"; fail "nbdzone against the plugin"; }
grep -v '^+' "$tmp/log" || :

# A non-zoned export.
nbdkit -U - memory 1M --run "nbdzone report \"\$uri\"" 2>"$tmp/err" \
    && fail "nbdzone accepted a non-zoned export"
cat "$tmp/err"
grep -qF 'is not a zoned export' "$tmp/err" || fail "non-zoned export message"

# An unreachable server.
if timeout 30 nbdzone report "nbd+unix:///?socket=$tmp/nosuchsocket" 2>"$tmp/err"; then
    fail "nbdzone reached a server that does not exist"
fi
cat "$tmp/err"
grep -qF "nbdzone: cannot connect to nbd+unix:///?socket=$tmp/nosuchsocket" "$tmp/err" \
    || fail "unreachable server message"

# Destructive commands take decimal byte counts only: a leading zero is
# not octal (0100000000 is 100000000, beyond this 32 MiB export, not
# 16 MiB, the start of zone 16, which must keep its data), and 0x... is
# refused.
cat > "$tmp/numbers" <<'EOS'
set -e
uri="$1"
"$PYTHON3" -c '
import sys; sys.path.insert(0, sys.argv[2])
from zbd_helpers import *
h = connect(sys.argv[1])
h.pwrite(b"y" * 65536, 16 * 1048576)
' "$uri" "$srcdir"
before="$(nbdzone report "$uri" 16M 1)"
echo "$before" | grep -qF 'wptr 0x000080 ' || { echo "zone 16 not written"; exit 1; }
expect_refusal () {
    local want="$1"; shift
    if nbdzone "$@" 2>"$tmp/err"; then echo "nbdzone $* succeeded"; exit 1; fi
    cat "$tmp/err"
    [ "$(wc -l < "$tmp/err")" -eq 1 ] || { echo "not one line: nbdzone $*"; exit 1; }
    grep -qF -- "$want" "$tmp/err" || { echo "message lacks \"$want\""; exit 1; }
    [ "$(nbdzone report "$uri" 16M 1)" = "$before" ] ||
        { echo "zone 16 changed by: nbdzone $*"; exit 1; }
}
expect_refusal 'offset 100000000 is beyond the end of the export (33554432 bytes)' reset "$uri" 0100000000
expect_refusal 'offset 100000000 is beyond the end of the export' finish "$uri" 0100000000
for bad in 0x1000000 0X1000000 " 16M" "16M " 16MB 16.0M -16M +16M 1e6 \
           18446744073709551616 16777216T ""; do
    expect_refusal "OFFSET \"$bad\" is not a byte count" reset "$uri" "$bad"
done
expect_refusal 'OFFSET "0x1000000" is not a byte count' finish "$uri" 0x1000000
expect_refusal 'LENGTH "010x" is not a byte count' report "$uri" 0 010x
# Decimal with a leading zero, and suffixes, are fine.
nbdzone report "$uri" 016777216 1 | grep -qF 'start: 0x000008000'
nbdzone reset "$uri" 16m
nbdzone report "$uri" 16M 1 | grep -qF 'wptr 0x000000 reset:0 non-seq:0, zcond: 1(em)'
EOS
nbdkit -U - zbd emulate=memory size=32M zone-size=1M \
       --run "timeout 60 bash -x \"$tmp/numbers\" \"\$uri\"" 2>"$tmp/log" \
    || { cat "$tmp/log"; fail "nbdzone number parsing"; }

# Strings from the server are printed with control characters escaped:
# a hostile export description cannot drive the terminal.
requires nbdkit eval --version
for desc in 'zoned=host-managed zone-size=1\033]0;owned\007 zones=4' \
            'model=\033[2J\033[31mred zones=4'; do
    nbdkit -U - eval get_size='echo 4194304' pread='head -c $3 /dev/zero' \
        export_description="printf '$desc'" \
        --run 'nbdzone report "$uri"' > "$tmp/out" 2> "$tmp/err" &&
        fail "nbdzone accepted a bad description"
    cat -v "$tmp/err"
    grep -q 'is not a zoned export' "$tmp/err" || fail "no message for a bad description"
    ! LC_ALL=C grep -q "$(printf '[\001-\037\177]')" "$tmp/err" ||
        fail "a control character from the server reached the terminal"
    grep -qF '\x1b' "$tmp/err" || fail "the escape character is not shown escaped"
done
# A device whose size is not a multiple of its zone size ends in a short
# zone (60 MiB in zones of 8 MiB): the report ends with it, its length
# and capacity 4 MiB, empty and then full.  The scan of write pointers
# looped for ever at the export's end.
short=(eval get_size='echo 62914560' pread='head -c $3 /dev/zero'
       export_description="echo zoned=host-managed zone-size=8388608 zone-capacity=8388608 zones=8 conventional=0 block-size=4096"
       can_extents='exit 0')
nbdkit -U - "${short[@]}" extents='echo 0 62914560 hole,zero' \
    --run 'timeout 20 nbdzone report "$uri"' > "$tmp/out" ||
    fail "nbdzone report of a device with a short last zone"
[ "$(wc -l < "$tmp/out")" = 8 ] || { cat "$tmp/out"; fail "not 8 zones"; }
tail -n 1 "$tmp/out" | grep -qF 'start: 0x00001c000, len 0x002000, cap 0x002000, wptr 0x000000 reset:0 non-seq:0, zcond: 1(em)' ||
    { cat "$tmp/out"; fail "the short last zone is not reported empty, 4 MiB long"; }
nbdkit -U - "${short[@]}" extents='echo 0 58720256 hole,zero; echo 58720256 4194304 0' \
    --run 'timeout 20 nbdzone report "$uri" 56M' > "$tmp/out" ||
    fail "nbdzone report of a full short last zone"
grep -qF 'len 0x002000, cap 0x002000, wptr 0x002000 reset:0 non-seq:0, zcond:14(fu)' "$tmp/out" ||
    { cat "$tmp/out"; fail "the short last zone, written to its end, is not full"; }

# A zoned= model the profile does not define is refused, not guessed at.
nbdkit -U - eval get_size='echo 4194304' pread='head -c $3 /dev/zero' \
    export_description="echo zoned=host-magic zone-size=1048576 zones=4" \
    --run 'nbdzone report "$uri"' > "$tmp/out" 2> "$tmp/err" &&
    fail "nbdzone accepted zoned=host-magic"
cat "$tmp/err"
grep -qF 'is not a zoned export: bad value for zoned in the export description: "host-magic"' "$tmp/err" ||
    fail "no message for an unknown zoned= model"
# Zones too large for one NBD request (8 GiB): reset and finish refuse
# with a line saying so, and send no trim or write-zeroes at all.
big=(eval get_size='echo 17179869184' pread='head -c $3 /dev/zero'
     export_description="echo zoned=host-managed zone-size=8589934592 zones=2"
     can_trim='exit 0' can_zero='exit 0' can_extents='exit 0'
     extents='echo 0 17179869184 hole,zero'
     trim="touch $tmp/sent" zero="touch $tmp/sent")
nbdkit -U - "${big[@]}" --run 'nbdzone reset "$uri" 0' 2> "$tmp/err" &&
    fail "nbdzone reset of an 8 GiB zone succeeded"
cat "$tmp/err"
grep -qF 'zones of 8589934592 bytes are too large for one NBD request' "$tmp/err" ||
    fail "no message for a zone too large to reset"
nbdkit -U - "${big[@]}" --run 'nbdzone finish "$uri" 8G' 2> "$tmp/err" &&
    fail "nbdzone finish of an 8 GiB zone succeeded"
cat "$tmp/err"
grep -qF 'zone 1 has more than 4 GiB left, too much for one NBD request' "$tmp/err" ||
    fail "no message for a zone too large to finish"
[ ! -e "$tmp/sent" ] || fail "a refused reset or finish sent a request"

# Zones the device turned read-only or offline, as the plugin names them
# in the export description: the report shows blkzone's conditions
# 13(ro) and 15(of), not a condition guessed from block status; a
# range beyond the zones is refused.
states=(eval get_size='echo 4194304' pread='head -c $3 /dev/zero'
        can_extents='exit 0' extents='echo 0 4194304 data'
        export_description="echo zoned=host-managed zone-size=1048576 zone-capacity=1048576 zones=4 conventional=none block-size=512 readonly=1 offline=2")
nbdkit -U - "${states[@]}" --run 'nbdzone report "$uri"' > "$tmp/out" 2> "$tmp/err" ||
    { cat "$tmp/err"; fail "nbdzone report of read-only/offline zones"; }
cat "$tmp/out"
sed -n 1p "$tmp/out" | grep -qF 'zcond:14(fu)' || fail "zone 0 is not full"
sed -n 2p "$tmp/out" | grep -qF 'zcond:13(ro)' || fail "zone 1 is not shown read-only"
sed -n 3p "$tmp/out" | grep -qF 'zcond:15(of)' || fail "zone 2 is not shown offline"
sed -n 4p "$tmp/out" | grep -qF 'zcond:14(fu)' || fail "zone 3 is not full"
nbdkit -U - eval get_size='echo 4194304' pread='head -c $3 /dev/zero' \
       export_description="echo zoned=host-managed zone-size=1048576 zones=4 block-size=512 offline=4" \
       --run 'nbdzone report "$uri"' > /dev/null 2> "$tmp/err" &&
    fail "nbdzone accepted an offline zone beyond the zones"
grep -qF 'offline zone 4 in the export description is beyond its 4 zones' "$tmp/err" ||
    { cat "$tmp/err"; fail "no message for an offline zone beyond the zones"; }

# A full zone whose capacity is its size, followed by a partly written
# one: one scan over all zones must end the full zone at its end (the
# next zone's start), not skip it.
cat > "$tmp/full" <<'EOS'
set -e
"$PYTHON3" -c '
import sys; sys.path.insert(0, sys.argv[2])
from zbd_helpers import *
h = connect(sys.argv[1])
h.pwrite(b"x" * 1048576, 1*1048576)
h.pwrite(bytes(8192), 2*1048576)
' "$1" "$srcdir"
nbdzone report "$1" > "$tmp/out"
cat "$tmp/out"
grep -qxF '  start: 0x000000800, len 0x000800, cap 0x000800, wptr 0x000800 reset:0 non-seq:0, zcond:14(fu) [type: 2(SEQ_WRITE_REQUIRED)]' "$tmp/out"
grep -qxF '  start: 0x000001000, len 0x000800, cap 0x000800, wptr 0x000010 reset:0 non-seq:0, zcond: 2(oi) [type: 2(SEQ_WRITE_REQUIRED)]' "$tmp/out"
EOS
nbdkit -U - zbd emulate=memory size=4M zone-size=1M \
       --run "timeout 60 bash -x \"$tmp/full\" \"\$uri\"" 2>"$tmp/log" \
    || { cat "$tmp/log"; fail "a full zone of capacity = size before a partial one"; }
echo "nbdzone checks passed"
