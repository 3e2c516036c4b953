#!/usr/bin/env bash
# The filter is order-preserving: nbdkit's log filter under it records
# what reaches the plugin; every client write must be exactly one write
# below (same offset, length, FUA), write-zeroes ascending 1 MiB writes
# each completed before the next, trim and flush passed through.  All
# crypt modes; the pool mode with a small threshold so pool paths run.
source "$srcdir/cryptinline-lib.sh"

make_key "$tmp/key" 64
order_py="$srcdir/cryptinline_order.py"
for mode in $CRYPT_MODES; do
    echo "order: mode=$mode"
    rm -f "$tmp/log"
    crypt_nbdkit -U - --filter=cryptinline --filter=log memory 32M \
        logfile="$tmp/log" crypt-key-file="$tmp/key" crypt-mode=$mode \
        crypt-threads=3 crypt-pool-threshold=64k \
        --run "$PYTHON3 $order_py client \"\$uri\"" ||
        fail "client failed, mode=$mode"
    "$PYTHON3" "$order_py" check "$tmp/log" || {
        cat "$tmp/log"; fail "write order below, mode=$mode"; }
done
echo "order checks passed"
