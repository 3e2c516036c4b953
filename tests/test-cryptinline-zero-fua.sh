#!/usr/bin/env bash
# Write-zeroes over many chunks is written as plain writes, then one
# flush if the client asked for FUA: what the layer below sees (nbdkit's
# log filter between the filter and the plugin).  A zone of 256 MiB
# zeroed with FUA must cost one flush, not one per 1 MiB chunk (the zbd
# plugin emulates FUA with a flush).  Without FUA, no flush at all.  The
# data still reads back as zeros.
source "$srcdir/cryptinline-lib.sh"

make_key "$tmp/key" 64
for fua in 1 0; do
    rm -f "$tmp/log"
    crypt_nbdkit -U - --filter=cryptinline --filter=log memory 8M \
        crypt-key-file="$tmp/key" logfile="$tmp/log" \
        --run "$PYTHON3 -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b\"\\xff\" * (8 << 20), 0)
h.zero(4 << 20, 1 << 20, nbd.CMD_FLAG_FUA if $fua else 0)
assert h.pread(4 << 20, 1 << 20) == bytes(4 << 20), \"not zeros\"
' \"\$uri\"" || fail "fua=$fua: the zero request failed"
    # Only what the zero request caused: its 1 MiB chunks.
    zw=$(grep -c 'Write id=.* count=0x100000 ' "$tmp/log" || :)
    fuaw=$(grep -c 'Write id=.*fua=1' "$tmp/log" || :)
    flushes=$(grep -c ' Flush id=' "$tmp/log" || :)
    echo "fua=$fua: $zw chunk writes, $fuaw with FUA, $flushes flushes"
    [ "$zw" -ge 4 ] || { cat "$tmp/log"; fail "fua=$fua: expected 4 chunk writes below"; }
    [ "$fuaw" = 0 ] || fail "fua=$fua: $fuaw chunks written with FUA, expected none"
    if [ $fua = 1 ]; then
        [ "$flushes" = 1 ] || fail "FUA zero: $flushes flushes below, expected exactly 1"
    else
        [ "$flushes" = 0 ] || fail "zero without FUA: $flushes flushes below, expected none"
    fi
done
echo "write-zeroes: plain chunks, one flush for FUA"
