# Every row of the zoned NBD profile, against a running export.
#
#   zbd-profile.py URI [IMAGE [KEY]]
#
# The export has size=64M zone-size=4M zone-capacity=3M
# conventional-zones=2 reorder-timeout=1s.  With IMAGE the bytes
# stored in the image file are checked too; with KEY the export runs
# through the cryptinline filter and what is stored must be the
# AES-XTS (dm-crypt aes-xts-plain64, 4096-byte sectors, IV in 512-byte
# units) encryption of what was written.
import errno
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import (check, connect, expect_error, extents,  # noqa
                         geometry, pattern, wp)
import nbd  # noqa: E402

uri = sys.argv[1]
image = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
key = sys.argv[3] if len(sys.argv) > 3 else None

M = 1024 * 1024
ZS, CAP = 4 * M, 3 * M
h = connect(uri)

# ---- geometry in the export description
g = geometry(h)
check(g["zoned"] == "host-managed", "model: %r" % g)
check(g["zone-size"] == ZS and g["zone-capacity"] == CAP and
      g["zones"] == 16 and g["conventional"] == "0-1" and
      g["max-open"] == 0 and g["max-active"] == 0, "geometry: %r" % g)
check(h.get_size() == 64 * M, "size %d" % h.get_size())
check(h.can_multi_conn() and h.can_trim() and h.can_zero() and
      h.can_flush() and h.can_fua(), "capabilities")

# ---- block status: conventional data, empty sequential zones a hole
ext = extents(h, 0, 3 * ZS)
check(ext[0][0] == 0 and ext[0][2] == 0 and ext[0][1] >= 2 * ZS,
      "conventional zones must be data: %r" % ext[:3])
check(wp(h, 2 * ZS, CAP) == 2 * ZS, "zone 2 must be empty")
hole = [e for e in ext if e[0] <= 2 * ZS < e[0] + e[1]][0]
check(hole[2] == nbd.STATE_HOLE | nbd.STATE_ZERO,
      "empty zone must be hole+zero: %r" % (hole,))


def stored(offset, length):
    with open(image, "rb") as f:
        f.seek(80)
        data_offset = int.from_bytes(f.read(8), "little")
        f.seek(data_offset + offset)
        return f.read(length)


def xts_encrypt(offset, data):
    from cryptography.hazmat.primitives.ciphers import (Cipher, algorithms,
                                                        modes)
    k = open(key, "rb").read()
    out = b""
    for s in range(0, len(data), 4096):
        iv = ((offset + s) // 512).to_bytes(16, "little")
        enc = Cipher(algorithms.AES(k), modes.XTS(iv)).encryptor()
        out += enc.update(data[s:s + 4096]) + enc.finalize()
    return out


def check_stored(offset, data, what):
    if not image:
        return
    h.flush()
    raw = stored(offset, len(data))
    if key:
        check(raw != data, "%s: stored in clear through the filter" % what)
        check(raw == xts_encrypt(offset, data),
              "%s: stored bytes are not AES-XTS of the data" % what)
    else:
        check(raw == data, "%s: image bytes differ" % what)


# ---- write at the WP, WP advances, data reads back
z2 = 2 * ZS
a = pattern(z2, 64 * 1024, 1)
h.pwrite(a, z2)
check(wp(h, z2, CAP) == z2 + len(a), "WP after first write")
b = pattern(z2 + len(a), 8192, 2)
h.pwrite(b, z2 + len(a), nbd.CMD_FLAG_FUA)
check(wp(h, z2, CAP) == z2 + len(a) + len(b), "WP after FUA write")
check(h.pread(len(a) + len(b), z2) == a + b, "read back zone 2")
check_stored(z2, a + b, "zone 2")
ext = extents(h, z2, ZS)
check(ext[0] == (z2, len(a) + len(b), 0) and
      ext[1][0] == z2 + len(a) + len(b) and
      ext[1][2] == nbd.STATE_HOLE | nbd.STATE_ZERO,
      "block status must show [start,WP) data, [WP,end) hole: %r" % ext[:2])

# ---- reads above the WP and past capacity are zeros
check(h.pread(8192, z2 + M) == bytes(8192), "read above WP must be zeros")
check(h.pread(4096, z2 + CAP) == bytes(4096), "read past capacity")
mixed = h.pread(16384, z2 + len(a) + len(b) - 8192)
check(mixed == b + bytes(8192), "read across the WP")
if image:
    # Stale bytes above the WP in the image (as after a crash) are not
    # read: the plugin returns zeros without touching the data there.
    with open(image, "r+b") as f:
        f.seek(80)
        data_offset = int.from_bytes(f.read(8), "little")
        f.seek(data_offset + z2 + M)
        f.write(b"\xaa" * 8192)
    check(h.pread(8192, z2 + M) == bytes(8192),
          "stale data above the WP must read as zeros")

# ---- below the WP: EIO; past capacity: ENOSPC; both at once
t = time.monotonic()
expect_error(lambda: h.pwrite(bytes(4096), z2), errno.EIO, "write below WP")
expect_error(lambda: h.pwrite(bytes(8192), z2 + CAP - 4096), errno.ENOSPC,
             "write past capacity")
check(time.monotonic() - t < 0.9, "below-WP/past-capacity must fail at once")
check(wp(h, z2, CAP) == z2 + len(a) + len(b), "failed writes moved the WP")

# ---- ahead of the WP: waits for reorder-timeout (1s), then EIO
t = time.monotonic()
expect_error(lambda: h.pwrite(bytes(4096), z2 + M), errno.EIO,
             "write ahead of WP (gap never filled)")
el = time.monotonic() - t
check(0.9 <= el < 4, "gap write failed after %.2fs, expected ~1s" % el)

# ---- conventional zones: random writes anywhere
for off in (ZS + 3 * 4096, 4096, ZS + 8192, 0):
    d = pattern(off, 4096, 3)
    h.pwrite(d, off)
    check(h.pread(4096, off) == d, "conventional write at %d" % off)
check_stored(0, h.pread(4096, 0), "conventional zone 0")

# ---- a write spanning two sequential zones is split in order
z3, z4 = 3 * ZS, 4 * ZS
fill = pattern(z3, CAP - 8192, 4)
h.pwrite(fill, z3)
expect_error(lambda: h.pwrite(bytes(16384), z3 + CAP - 8192), errno.ENOSPC,
             "span over the capacity gap")
check(wp(h, z3, CAP) == z3 + CAP - 8192, "failed span must not move WP")
# A span with no capacity gap: from the end of a conventional zone
# into the first sequential zone.
span = pattern(2 * ZS - 8192, 16384, 5)
h.trim(ZS, z2)                                # reset zone 2 first
check(wp(h, z2, CAP) == z2, "reset of zone 2 for the span")
h.pwrite(span, 2 * ZS - 8192)
check(h.pread(16384, 2 * ZS - 8192) == span, "span read back")
check(wp(h, z2, CAP) == z2 + 8192, "span WP")

# ---- trim: whole zones reset, partial trims are no-ops
h.trim(8192, z3)                              # partial: no-op
check(wp(h, z3, CAP) == z3 + CAP - 8192, "partial trim must not reset")
check(h.pread(4096, z3) == fill[:4096], "partial trim kept data")
h.trim(ZS, z3)
check(wp(h, z3, CAP) == z3, "trim of a whole zone must reset it")
check(h.pread(4096, z3) == bytes(4096), "a reset zone reads zeros")
h.pwrite(pattern(z3, 4096, 6), z3)            # writable again at start
check(wp(h, z3, CAP) == z3 + 4096, "write after reset")
if image:
    h.flush()
    check(stored(z3 + 4096, 4096) == bytes(4096),
          "reset must discard the zone's old data in the image")

# ---- write zeroes from the WP to the zone end finishes the zone
if image:
    # Stale bytes above the WP must not appear once the zone is full.
    with open(image, "r+b") as f:
        f.seek(80)
        data_offset = int.from_bytes(f.read(8), "little")
        f.seek(data_offset + z3 + 2 * M)
        f.write(b"\xaa" * 8192)
h.zero(CAP - 4096, z3 + 4096)
check(wp(h, z3, CAP) == z3 + CAP, "write-zeroes WP->capacity end: full")
check(h.pread(8192, z3 + 2 * M) == bytes(8192),
      "a finished zone must read zeros where nothing was written")
check(h.pread(8192, z3 + CAP - 8192) == bytes(8192), "finished tail zeros")
expect_error(lambda: h.pwrite(bytes(4096), z3 + CAP - 4096), errno.EIO,
             "write into a full zone")
h.trim(2 * ZS, z3)                            # zones 3 and 4 reset
check(wp(h, z3, CAP) == z3, "reset after finish")
if not key:
    # Without the filter: WP to the zone end (past capacity) also
    # finishes, without writing anything.
    h.pwrite(pattern(z4, 4096, 7), z4)
    h.zero(ZS - 4096, z4 + 4096)
    check(wp(h, z4, CAP) == z4 + CAP, "write-zeroes WP->zone end: full")
    # Zeroes elsewhere in a sequential zone are plain writes of zeros.
    z5 = 5 * ZS
    h.zero(8192, z5)
    check(wp(h, z5, CAP) == z5 + 8192, "write-zeroes at WP writes zeros")
    expect_error(lambda: h.zero(4096, z5), errno.EIO, "zeroes below WP")
    # Misaligned requests are refused by the plugin, never
    # read-modify-written.  libnbd's strict mode would refuse them before
    # sending; turn that off for this one request, so that the plugin's
    # own check is what answers (its log line is checked by
    # zbd-profile.sh), and the WP must not have moved.
    strict = h.get_strict_mode()
    h.set_strict_mode(strict & ~nbd.STRICT_ALIGN)
    expect_error(lambda: h.pwrite(bytes(100), z5 + 8192), errno.EINVAL,
                 "misaligned write")
    expect_error(lambda: h.pwrite(bytes(4096), z5 + 8192 + 256),
                 errno.EINVAL, "write at a misaligned offset")
    h.set_strict_mode(strict)
    check(wp(h, z5, CAP) == z5 + 8192, "a refused misaligned write moved the WP")
    h.zero(8192, ZS)                          # conventional: zeros
    check(h.pread(8192, ZS) == bytes(8192), "zeroes in a conventional zone")

# ---- flush reaches the backend
h.flush()
h.shutdown()
print("zbd-profile: all rows passed for", "filter" if key else "plugin",
      "on", "file" if image else "memory")
