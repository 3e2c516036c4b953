#!/usr/bin/env bash
# Several connections with many requests in flight through the filter, in
# every crypt mode, on the memory and file plugins; all data verified.
# Also run by "make check-tsan" against the ThreadSanitizer build.
source "$srcdir/cryptinline-lib.sh"
[ -x "$(command -v test-cryptinline-aio)" ] ||
    fail "test-cryptinline-aio was not built (make check builds it)"

make_key "$tmp/key" 64
for mode in $CRYPT_MODES; do
    for ss in 4096 512; do
        echo "concurrency: mode=$mode sector=$ss memory"
        crypt_nbdkit -U - --threads 16 --filter=cryptinline memory 48M \
            crypt-key-file="$tmp/key" crypt-sector-size=$ss \
            crypt-mode=$mode crypt-threads=3 crypt-pool-threshold=64k \
            --run 'test-cryptinline-aio "$uri" 4' ||
            fail "memory, mode=$mode sector=$ss"
    done
    echo "concurrency: mode=$mode file"
    rm -f "$tmp/img"; truncate -s 32M "$tmp/img"
    crypt_nbdkit -U - --filter=cryptinline file "$tmp/img" \
        crypt-key-file="$tmp/key" crypt-mode=$mode \
        --run 'test-cryptinline-aio "$uri" 3' ||
        fail "file, mode=$mode"
done
echo "concurrency checks passed"
