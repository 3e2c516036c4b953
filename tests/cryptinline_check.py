# Helpers for the cryptinline filter's tests: drive the filter with libnbd
# and check what it stores against an independent AES-XTS implementation
# (the "cryptography" package), in dm-crypt's aes-xts-plain64 format.
#
#   cryptinline_check.py roundtrip URI SEED
#   cryptinline_check.py write-random URI SEED          fill the disk
#   cryptinline_check.py read-check URI SEED            compare with SEED's data
#   cryptinline_check.py check-image IMG KEYFILE SECTOR IVOFF LARGE SEED
#   cryptinline_check.py make-image IMG KEYFILE SECTOR IVOFF LARGE SEED
#   cryptinline_check.py plain-key PASSPHRASE BITS OUTFILE
#
# Exit status 0 on success; a mismatch prints where and exits 1.

import hashlib
import random
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Request sizes that take the pool path (>= 64 KiB) and the inline path.
REQUEST_SIZES = [1, 2, 3, 16, 64, 256]   # in crypt sectors, cycled


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def file_sum(path):
    """SHA-256 of a whole file: did a refused request change the disk?"""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def expect_errno(what, err, fn, *args):
    """Call FN(*ARGS), which must fail with errno ERR."""
    import errno
    import nbd
    try:
        fn(*args)
    except nbd.Error as e:
        # libnbd gives the errno name (or number on older versions).
        got = getattr(errno, e.errno, None) if isinstance(e.errno, str) \
            else e.errno
        if got != err:
            fail("%s: errno %s, expected %s" % (what, e.errno, err))
        return
    fail("%s succeeded" % what)


def plaintext(seed, size):
    """Deterministic data for a seed (SHAKE-128 is fast enough for MiBs)."""
    return hashlib.shake_128(b"cryptinline test %d" % seed).digest(size)


def connect(uri):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def requests(size, sector, seed):
    """Cut [0, size) into aligned requests of varied sizes."""
    rnd = random.Random(seed + 1)
    off = 0
    while off < size:
        n = min(rnd.choice(REQUEST_SIZES) * sector, size - off)
        yield off, n
        off += n


def sector_size(h):
    return h.get_block_size(0)          # nbd.SIZE_MINIMUM


def write_random(uri, seed):
    h = connect(uri)
    size, ss = h.get_size(), sector_size(h)
    data = plaintext(seed, size)
    for off, n in requests(size, ss, seed):
        h.pwrite(data[off:off + n], off)
    h.flush()
    h.shutdown()


def read_check(uri, seed):
    h = connect(uri)
    size, ss = h.get_size(), sector_size(h)
    data = plaintext(seed, size)
    for off, n in requests(size, ss, seed + 7):
        got = h.pread(n, off)
        if got != data[off:off + n]:
            fail("read at offset %d length %d differs from what was written"
                 % (off, n))
    h.shutdown()


def roundtrip(uri, seed):
    """Fill, read back in other request sizes, overwrite and zero some
    ranges, check the whole disk against a model."""
    h = connect(uri)
    size, ss = h.get_size(), sector_size(h)
    model = bytearray(plaintext(seed, size))
    for off, n in requests(size, ss, seed):
        h.pwrite(bytes(model[off:off + n]), off)
    rnd = random.Random(seed + 2)
    for _ in range(20):
        n = rnd.choice(REQUEST_SIZES) * ss
        off = rnd.randrange(0, size - n + 1, ss)
        if rnd.random() < 0.25:
            h.zero(n, off)
            model[off:off + n] = bytes(n)
        else:
            buf = plaintext(rnd.randrange(2**32), n)
            h.pwrite(buf, off, nbd_fua() if rnd.random() < 0.2 else 0)
            model[off:off + n] = buf
    for off, n in requests(size, ss, seed + 3):
        if h.pread(n, off) != model[off:off + n]:
            fail("read at offset %d length %d differs from the model"
                 % (off, n))
    h.shutdown()


def nbd_fua():
    import nbd
    return nbd.CMD_FLAG_FUA


def iv_number(sector, ivoff, large, n):
    """The plain64 IV of crypt sector n of the device, written here from
    dm-crypt's documentation (Documentation/admin-guide/device-mapper/
    dm-crypt.rst), not from the filter's code:
      - plain64: "the initial vector is the 64-bit little-endian version
        of the sector number, padded with zeros if necessary";
      - the sector number counts 512-byte sectors, unless
        iv_large_sectors: "IV generators will use sector number counted in
        <sector_size> units instead of default 512 bytes sectors.  For
        example, if <sector_size> is 4096 bytes, plain64 IV for the second
        sector will be 8 (without flag) and 1 if iv_large_sectors is
        present";
      - <iv_offset> (cryptsetup --skip): "the IV offset is a sector count
        that is added to the sector number before creating the IV", in
        512-byte sectors, and it "must be multiple of <sector_size> (in
        512 bytes units)" with iv_large_sectors (the kernel refuses any
        other value for any sector size)."""
    per = sector // 512
    if ivoff % per:
        fail("iv offset %d is not a multiple of %d: dm-crypt refuses it"
             % (ivoff, per))
    if large:
        number = n + ivoff // per
    else:
        number = n * per + ivoff
    if number >= 2**64:
        if large:
            fail("IV number beyond 64 bits with iv_large_sectors: not "
                 "defined by dm-crypt's documentation")
        number %= 2**64             # a 64-bit sector counter wraps
    return number


def xts(key, sector, ivoff, large, offset, encrypt, data):
    """dm-crypt aes-xts-plain64: one XTS data unit per crypt sector, the
    two key halves as data and tweak keys (the cryptography package)."""
    out = bytearray()
    for pos in range(0, len(data), sector):
        n = (offset + pos) // sector
        tweak = iv_number(sector, ivoff, large, n).to_bytes(8, "little") \
            + bytes(8)
        c = Cipher(algorithms.AES(key), modes.XTS(tweak))
        op = c.encryptor() if encrypt else c.decryptor()
        out += op.update(data[pos:pos + sector]) + op.finalize()
    return bytes(out)


def image_args(argv):
    img, keyfile, sector, ivoff, large, seed = argv
    with open(keyfile, "rb") as f:
        key = f.read()
    return (img, key, int(sector), int(ivoff), large == "true", int(seed))


def check_image(argv):
    img, key, ss, ivoff, large, seed = image_args(argv)
    with open(img, "rb") as f:
        raw = f.read()
    size = len(raw) - len(raw) % ss
    data = plaintext(seed, size)
    if raw[:size] == data:
        fail("the image holds plaintext")
    got = xts(key, ss, ivoff, large, 0, False, raw[:size])
    for pos in range(0, size, ss):
        if got[pos:pos + ss] != data[pos:pos + ss]:
            fail("sector at offset %d of the image does not decrypt to "
                 "what was written" % pos)


def make_image(argv):
    img, key, ss, ivoff, large, seed = image_args(argv)
    with open(img, "r+b") as f:
        size = len(f.read())
        size -= size % ss
        f.seek(0)
        f.write(xts(key, ss, ivoff, large, 0, True, plaintext(seed, size)))


def plain_key(passphrase, bits, outfile):
    """cryptsetup --type plain --hash sha256: round i hashes 'A'*i ||
    passphrase; digests concatenated, truncated to the key size."""
    want = int(bits) // 8
    key = b""
    i = 0
    while len(key) < want:
        key += hashlib.sha256(b"A" * i + passphrase.encode()).digest()
        i += 1
    with open(outfile, "wb") as f:
        f.write(key[:want])


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "roundtrip":
        roundtrip(args[0], int(args[1]))
    elif cmd == "write-random":
        write_random(args[0], int(args[1]))
    elif cmd == "read-check":
        read_check(args[0], int(args[1]))
    elif cmd == "check-image":
        check_image(args)
    elif cmd == "make-image":
        make_image(args)
    elif cmd == "plain-key":
        plain_key(*args)
    else:
        fail("unknown command " + cmd)


if __name__ == "__main__":
    main()
