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
grep -qxF '  start: 0x000001000, len 0x000800, cap 0x000600, wptr 0x000018 reset:0 non-seq:0, zcond: 2(ac) [type: 2(SEQ_WRITE_REQUIRED)]' "$out"
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

# Errors: one line each, non-zero exit.
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
grep -qxF '  start: 0x000001000, len 0x000800, cap 0x000800, wptr 0x000010 reset:0 non-seq:0, zcond: 2(ac) [type: 2(SEQ_WRITE_REQUIRED)]' "$tmp/out"
EOS
nbdkit -U - zbd emulate=memory size=4M zone-size=1M \
       --run "timeout 60 bash -x \"$tmp/full\" \"\$uri\"" 2>"$tmp/log" \
    || { cat "$tmp/log"; fail "a full zone of capacity = size before a partial one"; }
