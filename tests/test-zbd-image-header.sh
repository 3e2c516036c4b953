#!/usr/bin/env bash
# Crafted image headers and tables are refused at open with one clear
# line and exit status 1, never failing later: sizes whose sums
# overflow, a zone table somewhere this format does not put it, a WP
# off the block grid.  nbdkit -r never creates a missing image; a new
# image that could not be created is refused at start.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import zlib'
requires nbdkit --version
requires nbdinfo --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
img="$tmp/zoned.img"
nbdkit -U - zbd emulate="$img" size=8M zone-size=1M conventional-zones=1 \
       --run 'nbdinfo "$uri" >/dev/null' || fail "creating the image"
slot=$(( $(od -An -t u8 -j 72 -N 8 "$img") ))

# craft OFFSET FORMAT VALUE [WHERE]: a copy of the image with one field
# of the header (or, with WHERE=table, of the newest table slot) set,
# checksum recomputed.
craft ()
{
    "$PYTHON3" - "$img" "$tmp/bad.img" "$@" <<'PY'
import shutil, struct, sys, zlib
src, dst, off, fmt, val = sys.argv[1:6]
where = sys.argv[6] if len(sys.argv) > 6 else "header"
shutil.copyfile(src, dst)
with open(dst, "r+b") as f:
    b = bytearray(f.read(1 << 20))
    if where == "header":
        struct.pack_into(fmt, b, int(off), int(val, 0))
        struct.pack_into("<I", b, 96, zlib.crc32(bytes(b[:96])))
    else:
        slot = struct.unpack_from("<Q", b, 72)[0]
        nz = struct.unpack_from("<I", b, 40)[0]
        s = max((4096, 4096 + slot), key=lambda p: struct.unpack_from("<Q", b, p + 4)[0]
                if b[p:p + 4] == b"ZTBL" else -1)
        struct.pack_into(fmt, b, s + int(off), int(val, 0))
        struct.pack_into("<I", b, s + 16, 0)
        struct.pack_into("<I", b, s + 16, zlib.crc32(bytes(b[s:s + 24 + 8 * nz])))
    f.seek(0)
    f.write(b)
PY
}

refused ()
{
    local what="$1" expect="$2"; shift 2
    local status=0
    nbdkit -U - "$@" --run 'nbdinfo "$uri" >/dev/null' 2>"$tmp/err" || status=$?
    [ $status -eq 1 ] || { cat "$tmp/err"; fail "$what: exit status $status, expected 1"; }
    grep -qF -- "$expect" "$tmp/err" || {
        cat "$tmp/err"; fail "$what: no message \"$expect\""; }
    [ "$(grep -c 'error' "$tmp/err")" -eq 1 ] || {
        cat "$tmp/err"; fail "$what: more than one error line"; }
    echo "refused ($what): $(grep error "$tmp/err")"
}

# The untouched copy opens (the crafting itself is right).
craft 72 '<Q' "$slot"
nbdkit -U - zbd emulate="$tmp/bad.img" --run 'nbdinfo "$uri" >/dev/null' \
    || fail "an untouched copy must open"

# 2 * slot size overflows 64 bits: it wrapped to a small number that
# passed the check against the data offset.
craft 72 "<Q" 0x8000000000000000
refused "slot size overflow" \
        "emulate=$tmp/bad.img: the image header's two zone table slots (9223372036854775808 bytes each, from offset 4096) overlap the data at offset 1048576; refusing to use it" \
        zbd emulate="$tmp/bad.img"
craft 72 "<Q" 0x4000000000001000
refused "slot size beyond the data" \
        "zone table slots (4611686018427392000 bytes each, from offset 4096) overlap the data" \
        zbd emulate="$tmp/bad.img"

# data offset + size overflows: it wrapped below the file's size.
craft 80 "<Q" 0xffffffffffc00000
refused "data offset overflow" \
        "the image header's data area (offset 18446744073705357312, size 8388608) ends beyond 2^64 bytes; refusing to use it" \
        zbd emulate="$tmp/bad.img"

# The first slot field: this format has the table right after the header.
craft 64 '<Q' 8192
refused "first slot" \
        "the image header puts the zone table at offset 8192 (this format has it at 4096); refusing to use it" \
        zbd emulate="$tmp/bad.img"
craft 64 '<Q' 0
refused "first slot zero" "puts the zone table at offset 0" \
        zbd emulate="$tmp/bad.img"

# A WP inside a block.
craft 24 '<Q' 1000 table
refused "conventional WP" \
        "the zone table is inconsistent (zone 0 write pointer 1000" \
        zbd emulate="$tmp/bad.img"
craft 32 '<Q' 1000 table
refused "unaligned WP" \
        "zone 1 write pointer 1000 is not a multiple of the 512-byte block size" \
        zbd emulate="$tmp/bad.img"

# nbdkit -r with a missing image: refused, nothing created.
status=0
nbdkit -r -U - zbd emulate="$tmp/new.img" size=8M zone-size=1M \
       --run 'nbdinfo "$uri" >/dev/null' 2>"$tmp/err" || status=$?
[ ! -e "$tmp/new.img" ] || fail "nbdkit -r created a missing image"
[ $status -ne 0 ] || fail "nbdkit -r served a missing image"
grep -qF "emulate=$tmp/new.img: no such image, and a read-only server (nbdkit -r) does not create one; run once without -r (with size= and zone-size=) to create it" "$tmp/err" \
    || { cat "$tmp/err"; fail "-r with a missing image: no clear message"; }
echo "refused (-r, missing image): $(grep 'no such image' "$tmp/err")"
# Without -r the same command creates it, on the first connection.
nbdkit -U - zbd emulate="$tmp/new.img" size=8M zone-size=1M \
       --run 'nbdinfo "$uri" >/dev/null' || fail "creating without -r"
[ -s "$tmp/new.img" ] || fail "the image was not created without -r"
nbdkit -r -U - zbd emulate="$tmp/new.img" --run 'nbdinfo "$uri" >/dev/null' \
    || fail "-r must open the image once it exists"

# A new image that could never be created is refused at start, not at
# the first connection.
status=0
nbdkit -U - zbd emulate="$tmp/nodir/new.img" size=8M zone-size=1M \
       --run true 2>"$tmp/err" || status=$?
[ $status -eq 1 ] || { cat "$tmp/err"; fail "uncreatable image: exit status $status"; }
grep -qF "emulate=$tmp/nodir/new.img: no such image, and it cannot be created in $tmp/nodir: No such file or directory" "$tmp/err" \
    || { cat "$tmp/err"; fail "uncreatable image: no clear message"; }
echo "refused (uncreatable): $(grep error "$tmp/err")"
