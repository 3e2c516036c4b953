# Helpers for the zbd plugin tests: geometry from the export
# description, write pointers from block status, assertions that name
# what went wrong.
import errno
import sys

import nbd


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def connect(uri):
    h = nbd.NBD()
    h.set_full_info(True)
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    return h


def geometry(h):
    """The key=value words of the export description, as a dict."""
    desc = h.get_export_description()
    g = {}
    for word in desc.split():
        k, _, v = word.partition("=")
        g[k] = v
    for k in ("zone-size", "zone-capacity", "zones", "max-open",
              "max-active", "block-size"):
        g[k] = int(g[k])
    return g


def extents(h, offset, count):
    """List of (offset, length, flags) from block status."""
    out = []

    def cb(meta, off, entries, err):
        if meta != nbd.CONTEXT_BASE_ALLOCATION:
            return 0
        pos = off
        for i in range(0, len(entries), 2):
            out.append((pos, entries[i], entries[i + 1]))
            pos += entries[i]
        return 0

    end = offset + count
    pos = offset
    rounds = 0
    while pos < end and rounds < 10000:
        rounds += 1
        before = len(out)
        h.block_status(end - pos, pos, cb)
        check(len(out) > before, "block status made no progress at %d" % pos)
        pos = out[-1][0] + out[-1][1]
    return out


def wp(h, start, cap):
    """Write pointer of the sequential zone at START: the first hole."""
    for (off, length, flags) in extents(h, start, cap):
        if off + length <= start:
            continue
        if flags & nbd.STATE_HOLE:
            return max(off, start)
    return start + cap


def expect_error(fn, errnum, what):
    """Call FN, which must fail with ERRNUM."""
    try:
        fn()
    except nbd.Error as e:
        check(e.errnum == errnum,
              "%s: expected %s, got %s (%s)" %
              (what, errno.errorcode[errnum],
               errno.errorcode.get(e.errnum, e.errnum), e))
        return
    fail("%s: succeeded, expected %s" % (what, errno.errorcode[errnum]))


def pattern(offset, length, seed=0):
    """Recognisable bytes: each 8-byte word holds its offset and seed."""
    out = bytearray()
    for pos in range(offset, offset + length, 8):
        out += ((pos ^ (seed << 48)) & 0xffffffffffffffff).to_bytes(8, "little")
    return bytes(out[:length])
