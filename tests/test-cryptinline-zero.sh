#!/usr/bin/env bash
# Unwritten regions read as zeros; write-zeroes stores encrypted zeros and
# reads back zeros; fast zero is refused with ENOTSUP; trim passes through;
# misaligned requests fail with EINVAL, out-of-range ones with EINVAL or
# ENOSPC, errors from below with their errno: a log line each, and
# nothing written;
# the block size advertised and the size rounding.  All crypt modes.
source "$srcdir/cryptinline-lib.sh"

make_key "$tmp/key" 64
cat > "$tmp/zero.py" <<'PY'
import errno, hashlib, os, sys
import nbd

uri, img, sector, keyfile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, os.environ["srcdir"])
from cryptinline_check import xts, file_sum, expect_errno
h = nbd.NBD()
h.connect_uri(uri)
K = 1024

def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def raw(off, n):
    with open(img, "rb") as f:
        f.seek(off)
        return f.read(n)

def image_sum():
    return file_sum(img)

# The image is 4 MiB + 1000 bytes: only whole crypt sectors are served.
served = (4 * K * K + 1000) // sector * sector
if h.get_size() != served:
    fail("size %d, expected %d (rounded down to whole sectors)"
         % (h.get_size(), served))
if h.get_block_size(nbd.SIZE_MINIMUM) != sector or \
   h.get_block_size(nbd.SIZE_PREFERRED) < sector:
    fail("block size minimum %d preferred %d, expected >= %d"
         % (h.get_block_size(nbd.SIZE_MINIMUM),
            h.get_block_size(nbd.SIZE_PREFERRED), sector))

# A fresh sparse image reads as zeros, not decrypted zeros.
if h.pread(4 * K * K, 0) != bytes(4 * K * K):
    fail("unwritten image does not read as zeros")

# Data between holes.
pattern = b"\xa5" * (64 * K)
h.pwrite(pattern, 64 * K)
got = h.pread(256 * K, 0)
if got != bytes(64 * K) + pattern + bytes(128 * K):
    fail("hole / data / hole did not read back")
if raw(64 * K, 64 * K) == pattern:
    fail("plaintext on the image")

# Write-zeroes over data: reads zeros, stored encrypted (not a hole of
# zeros, which could not be told from noise by dm-crypt).
h.zero(32 * K, 64 * K)
if h.pread(64 * K, 64 * K) != bytes(32 * K) + pattern[:32 * K]:
    fail("write-zeroes did not read back as zeros")
stored = raw(64 * K, 32 * K)
if stored == bytes(32 * K):
    fail("write-zeroes stored plaintext zeros")
# Encrypted zeros of different sectors differ (the IV is in the tweak).
if stored[:sector] == stored[sector:2 * sector]:
    fail("two sectors of encrypted zeros are equal")

# A large write-zeroes, cut into chunks below: 3 MiB over written data.
h.pwrite(b"\x5a" * (3 * K * K), K * K)
h.zero(3 * K * K, K * K, nbd.CMD_FLAG_FUA)
if h.pread(3 * K * K, K * K) != bytes(3 * K * K):
    fail("large write-zeroes did not read back as zeros")

# Fast zero cannot be fast here: ENOTSUP, nothing changed.
h.pwrite(pattern, 0)
expect_errno("fast zero", errno.ENOTSUP, h.zero, 64 * K, 0,
             nbd.CMD_FLAG_FAST_ZERO)
if h.pread(64 * K, 0) != pattern:
    fail("a refused fast zero changed data")

# Trim passes through: the file plugin punches a hole, which reads zeros.
h.trim(64 * K, 0)
if h.pread(64 * K, 0) != bytes(64 * K):
    fail("trimmed range does not read as zeros")
h.pwrite(pattern, 0)

# Zeros written to the image directly (allocated, not a hole) are stored
# data: they decrypt as dm-crypt decrypts them, not to zeros.
with open(img, "r+b") as f:
    f.seek(512 * K)
    f.write(bytes(64 * K))
    f.flush()
    os.fsync(f.fileno())
with open(keyfile, "rb") as f:
    key = f.read()
want = xts(key, sector, 0, False, 512 * K, False, bytes(64 * K))
if h.pread(64 * K, 512 * K) != want:
    fail("raw zeros that are data did not decrypt as dm-crypt would")

# Misaligned requests: EINVAL, and the image is untouched.
h.set_strict_mode(0)            # let the server judge alignment
before = image_sum()
half = sector // 2
for what, fn, args in [
        ("read", h.pread, (sector, half)),
        ("read", h.pread, (half, 0)),
        ("write", h.pwrite, (b"x" * sector, half)),
        ("write", h.pwrite, (b"x" * (sector + half), 0)),
        ("zero", h.zero, (sector, half)),
        ("zero", h.zero, (100, 0)),
        ("trim", h.trim, (sector, half)),
        ("trim", h.trim, (half, sector))]:
    expect_errno("misaligned " + what, errno.EINVAL, fn, *args)
if image_sum() != before:
    fail("a misaligned request changed the image")
if h.pread(64 * K, 0) != pattern:
    fail("data changed by misaligned requests")

# Out of range (the image's tail that is not a whole sector is not
# served): nbdkit answers EINVAL for reads and trims, ENOSPC for writes
# and zeroes; the image, its unserved tail included, is untouched.
before = image_sum()
for what, err, fn, args in [
        ("read past the end", errno.EINVAL, h.pread, (sector, served)),
        ("read across the end", errno.EINVAL, h.pread,
         (2 * sector, served - sector)),
        ("write past the end", errno.ENOSPC, h.pwrite,
         (b"x" * sector, served)),
        ("write across the end", errno.ENOSPC, h.pwrite,
         (b"x" * (2 * sector), served - sector)),
        ("zero past the end", errno.ENOSPC, h.zero, (sector, served)),
        ("trim past the end", errno.EINVAL, h.trim, (sector, served))]:
    expect_errno(what, err, fn, *args)
if image_sum() != before:
    fail("an out-of-range request changed the image")
h.shutdown()
PY

for mode in $CRYPT_MODES; do
    for ss in 4096 512; do
        echo "zero/sparse/alignment: mode=$mode sector=$ss"
        rm -f "$tmp/img"; truncate -s $((4*1024*1024 + 1000)) "$tmp/img"
        crypt_nbdkit -U - --filter=cryptinline file "$tmp/img" \
            crypt-key-file="$tmp/key" crypt-sector-size=$ss crypt-mode=$mode \
            --run "$PYTHON3 $tmp/zero.py \"\$uri\" $tmp/img $ss $tmp/key" \
            2> "$tmp/err" || { cat "$tmp/err"; fail "mode=$mode sector=$ss"; }
        cat "$tmp/err"
        # One line per misaligned request, naming offset, length and sector.
        half=$((ss / 2))
        for line in \
            "misaligned read rejected: offset $half length $ss must both be multiples of the crypt sector size $ss" \
            "misaligned write rejected: offset 0 length $((ss + half)) must both be multiples of the crypt sector size $ss" \
            "misaligned zero rejected: offset 0 length 100 must both be multiples of the crypt sector size $ss" \
            "misaligned trim rejected: offset $ss length $half must both be multiples of the crypt sector size $ss"
        do
            grep -qF "$line" "$tmp/err" || fail "log lacks: $line"
        done
        [ "$(grep -c misaligned "$tmp/err")" -eq 8 ] ||
            fail "expected 8 misaligned log lines"
        [ "$(grep -c 'offset and count are out of range' "$tmp/err")" -eq 6 ] ||
            fail "expected 6 out-of-range log lines"
    done
done

# Errors from the layer below reach the client with their errno, and a
# failed write or zero changes nothing: nbdkit's error filter below the
# filter fails each kind of call while its trigger file exists.
cat > "$tmp/below.py" <<'PY'
import errno, hashlib, os, sys
import nbd
uri, img, tmp = sys.argv[1:]
sys.path.insert(0, os.environ["srcdir"])
from cryptinline_check import fail, file_sum, expect_errno
h = nbd.NBD()
h.connect_uri(uri)
K = 1024
def image_sum():
    return file_sum(img)
def inject(kind, on):
    path = os.path.join(tmp, "inject-" + kind)
    if on:
        open(path, "w").close()
    else:
        os.unlink(path)

pattern = b"\x3c" * (64 * K)
h.pwrite(pattern, 0)
before = image_sum()
inject("pwrite", True)
expect_errno("write failing below", errno.ENOSPC, h.pwrite, b"\x77" * (64 * K), 0)
expect_errno("zero failing below", errno.ENOSPC, h.zero, 64 * K, 0)
inject("pwrite", False)
if image_sum() != before or h.pread(64 * K, 0) != pattern:
    fail("a write or zero that failed below changed data")
inject("pread", True)
expect_errno("read failing below", errno.EIO, h.pread, 64 * K, 0)
inject("pread", False)
# A hole: reading it asks block status below; if that fails, the read
# fails (it must not return decrypted zeros as data).
inject("extents", True)
expect_errno("read of a hole, block status failing below", errno.EIO,
             h.pread, 64 * K, 512 * K)
inject("extents", False)
if h.pread(64 * K, 512 * K) != bytes(64 * K):
    fail("hole does not read as zeros once block status works")
if h.pread(64 * K, 0) != pattern:
    fail("data changed")
h.shutdown()
PY
for mode in $CRYPT_MODES; do
    echo "errors from below: mode=$mode"
    rm -f "$tmp/img" "$tmp"/inject-*; truncate -s 1M "$tmp/img"
    crypt_nbdkit -U - --filter=cryptinline --filter=error file "$tmp/img" \
        crypt-key-file="$tmp/key" crypt-mode=$mode \
        error-pwrite=ENOSPC error-pwrite-rate=1 error-pwrite-file="$tmp/inject-pwrite" \
        error-pread=EIO error-pread-rate=1 error-pread-file="$tmp/inject-pread" \
        error-extents=EIO error-extents-rate=1 error-extents-file="$tmp/inject-extents" \
        --run "$PYTHON3 $tmp/below.py \"\$uri\" $tmp/img $tmp" 2> "$tmp/err" ||
        { cat "$tmp/err"; fail "errors from below, mode=$mode"; }
done

# The memory plugin: unwritten reads as zeros too; the size is rounded.
for mode in $CRYPT_MODES; do
    crypt_nbdkit -U - --filter=cryptinline memory $((1024*1024 + 4095)) \
        crypt-key-file="$tmp/key" crypt-mode=$mode \
        --run 'nbdsh -u "$uri" -c "
assert h.get_size() == 1024 * 1024, h.get_size()
assert h.pread(1024 * 1024, 0) == bytes(1024 * 1024)
"' || fail "memory plugin: size rounding / zeros, mode=$mode"
done
echo "zero, sparse and alignment checks passed"
