#!/usr/bin/env bash
# Block status through the filter: a range reported as zero must read as
# zeros through the filter.  Below the filter, zero extents need not
# cover whole crypt sectors (a write pointer at a 512-byte boundary under
# 4096-byte crypt sectors); a crypt sector only partly zero below reads
# as decrypted noise, so it must be reported as data, and zero extents
# are rounded inward to whole crypt sectors.  The layer below is the eval
# plugin, whose extents are exactly the ones scripted here.
source "$srcdir/cryptinline-lib.sh"
requires nbdkit eval --version

make_key "$tmp/key" 64
# offset length type: the layer below's extents of a 64 KiB disk whose
# every byte reads as zero from below.
cat > "$tmp/extents" <<'EOF2'
0 512 0
512 11776 hole,zero
12288 512 0
12800 512 zero
13312 3072 hole,zero
16384 4096 0
20480 2048 zero
22528 2048 hole,zero
24576 1024 0
25600 40960 hole,zero
EOF2

for mode in $CRYPT_MODES; do
    crypt_nbdkit -U - --filter=cryptinline eval \
        get_size='echo 65536' \
        pread='head -c $3 /dev/zero' \
        can_extents='exit 0' \
        extents="cat $tmp/extents" \
        crypt-key-file="$tmp/key" crypt-sector-size=4096 crypt-mode=$mode \
        --run '$PYTHON3 - "$uri"' <<'PY' || fail "crypt-mode=$mode"
import sys
import nbd

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
got = []
def cb(meta, offset, entries, err):
    pos = offset
    for i in range(0, len(entries), 2):
        got.append((pos, entries[i], entries[i + 1]))
        pos += entries[i]
h.block_status(65536, 0, cb)

# Every range the filter calls zero reads as zeros through it.
S = 4096
for off, length, flags in got:
    a, b = off // S * S, (off + length + S - 1) // S * S
    if flags & nbd.STATE_ZERO and \
       h.pread(b - a, a)[off - a:off - a + length] != bytes(length):
        sys.exit("FAIL: [%d, %d) reported zero but does not read as zeros"
                 % (off, off + length))

# Zero only where whole crypt sectors are zero below: [4096, 12288),
# [20480, 24576) (two zero extents share that sector) and [28672, 65536).
zero = [(o, o + n) for o, n, f in got if f & nbd.STATE_ZERO]
merged = []
for a, b in zero:
    if merged and merged[-1][1] == a:
        merged[-1] = (merged[-1][0], b)
    else:
        merged.append((a, b))
want = [(4096, 12288), (20480, 24576), (28672, 65536)]
if merged != want:
    sys.exit("FAIL: zero ranges %s, expected %s (extents %s)"
             % (merged, want, got))
# The rest, and nothing else, is data.
covered = sum(n for o, n, f in got)
if covered != 65536 or got[0][0] != 0:
    sys.exit("FAIL: extents do not cover the disk: %s" % got)
print("extents:", got)
PY
done
echo "block status through the filter matches what reads return"
