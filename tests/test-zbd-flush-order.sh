#!/usr/bin/env bash
# Crash consistency by construction: strace the image file's writes and
# syncs during writes, flushes, a FUA write, a reset and a finish, and
# check the protocol (sync data, then write the table, then sync it).
# kill -9 (test-zbd-crash.sh) cannot show this: the page cache survives
# a killed process, not a power cut.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version
requires strace -V
requires nbdinfo --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
img="$tmp/img"
# The image is created when the first client connects for writing.
nbdkit -U - zbd emulate="$img" size=8M zone-size=1M --run 'nbdinfo "$uri" >/dev/null' \
    || fail "creating the image"
data_offset=$(( $(od -An -t u8 -j 80 -N 8 "$img") ))

strace -f -qq -e trace=pwrite64,fdatasync,fallocate -o "$tmp/trace" \
    nbdkit -U - zbd emulate="$img" --run "\"$PYTHON3\" -c '
import sys; sys.path.insert(0, sys.argv[2])
from zbd_helpers import *
import nbd
M = 1048576
h = connect(sys.argv[1])
h.pwrite(pattern(0, 8192), 0)
h.pwrite(pattern(8192, 4096), 8192)
h.flush()
h.pwrite(pattern(M, 4096), M, nbd.CMD_FLAG_FUA)
h.trim(M, 0)
h.zero(M - 4096, M + 4096)
h.pwrite(pattern(2 * M, 4096), 2 * M)
h.flush()
check(wp(h, 0, M) == 0 and wp(h, M, M) == 2 * M and wp(h, 2 * M, M) == 2 * M + 4096, \"WPs\")
' \"\$uri\" \"$srcdir\"" || fail "the traced run"
"$PYTHON3" "$srcdir/zbd-flush-order.py" "$tmp/trace" "$data_offset" \
    || fail "the image's write/sync order breaks the crash-consistency protocol"
