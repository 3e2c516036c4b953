#!/usr/bin/env bash
# The limit of the ordering guarantee (documented in the man page):
# writes sent out of order on one connection, more of them than its
# nbdkit --threads, time out; writes sent in order never do.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

nbdkit -U - --threads=2 zbd emulate=memory size=8M zone-size=1M \
       conventional-zones=1 reorder-timeout=1s \
       --run 'timeout 60 "$PYTHON3" "$srcdir/zbd-threads.py" "$uri"' \
    || fail "threads limit"
