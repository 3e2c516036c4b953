#!/usr/bin/env bash
# After a failed fdatasync, Linux reports the writeback error once and
# marks the lost pages clean: the next fdatasync succeeds.  A flush that
# then wrote the zone table would durably claim data that never reached
# the disk.  So the plugin latches the first failure: every flush,
# write, write-zeroes and trim after it fails with EIO until restart,
# reads still work, and the failure is logged once.  Here the failing
# sync is simulated (-D zbd.fail_sync=1: the first sync fails, later
# ones succeed, as Linux does); vm/guest-tests.sh does it with real
# writeback failing under the image (dm-error).
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
img="$tmp/img"
M=1048576
export srcdir

nbdkit -U - zbd emulate="$img" size=8M zone-size=1M conventional-zones=1 \
       --run 'nbdinfo "$uri" >/dev/null' || fail "creating the image"

nbdkit -U - -D zbd.fail_sync=1 zbd emulate="$img" 2>"$tmp/err" --run "\"$PYTHON3\" -c '
import errno, sys; sys.path.insert(0, sys.argv[1])
from zbd_helpers import *
M = $M
h = connect(sys.argv[2])
h.pwrite(pattern(M, 4096, 1), M)
expect_error(lambda: h.flush(), errno.EIO, \"the flush whose sync fails\")
# The next sync would succeed: the latch must refuse it all the same.
expect_error(lambda: h.flush(), errno.EIO, \"a flush after the failed sync\")
expect_error(lambda: h.pwrite(pattern(M + 4096, 4096, 1), M + 4096), errno.EIO,
             \"a write after the failed sync\")
expect_error(lambda: h.pwrite(b\"c\" * 4096, 0), errno.EIO,
             \"a conventional-zone write after the failed sync\")
expect_error(lambda: h.zero(M - 4096, M + 4096), errno.EIO,
             \"write zeroes (finish) after the failed sync\")
expect_error(lambda: h.trim(M, 2 * M), errno.EIO, \"a reset after the failed sync\")
check(h.pread(4096, M) == pattern(M, 4096, 1), \"reads still work\")
' \"\$srcdir\" \"\$uri\"" || { cat "$tmp/err"; fail "requests after a failed sync"; }
cat "$tmp/err"
[ "$(grep -c 'fdatasync failed' "$tmp/err")" = 1 ] ||
    fail "the failed sync is not logged exactly once"
grep -q "emulate=$img: fdatasync failed (Input/output error): .* every write and flush now fails with EIO until nbdkit is restarted" "$tmp/err" ||
    fail "the log line does not say what happened and what follows"

# The zone table was never written after the failure: zone 1 is empty
# after a restart (the write's WP was never made durable).
nbdkit -U - zbd emulate="$img" --run "\"$PYTHON3\" -c '
import sys; sys.path.insert(0, sys.argv[1])
from zbd_helpers import *
M = $M
h = connect(sys.argv[2])
w = wp(h, M, M)
check(w == M, \"zone 1: WP %d after restart; the table was written after the failed sync\" % (w - M))
' \"\$srcdir\" \"\$uri\"" || fail "the zone table after a failed sync"
echo "sync failure latched"
