# Write-order checks for the cryptinline filter, with nbdkit's log filter
# below it recording what reaches the plugin.
#
#   cryptinline_order.py client URI    drive the filter (two connections)
#   cryptinline_order.py check LOGFILE check what the log filter saw
#
# Connection 1 issues requests one at a time; connection 2 keeps many
# writes in flight.  The filter must turn each client write into exactly
# one write below with the same offset, length and FUA flag, and do
# write-zeroes as 1 MiB writes in ascending order, each one completed
# before the next one starts.  A read is one read below, followed by a
# block-status question only when it met unwritten (all-zero) sectors.

import random
import re
import sys

M = 1024 * 1024
K = 1024

# What connection 1 must produce below, in this order.
SEQUENTIAL = [
    ("Write", 0, M, 1),
    ("Write", M, 4 * K, 0),
    # Write-zeroes with FUA: plain 1 MiB writes in ascending order, then
    # one flush (not FUA on each chunk: a flush each where FUA is emulated).
    ("Write", 2 * M, M, 0), ("Write", 3 * M, M, 0), ("Write", 4 * M, M, 0),
    ("Write", 5 * M, 8 * K, 0), ("Flush", None, None, None),
    # Reading data: one read below, no block-status question.
    ("Read", 0, M, None),
    # Reading unwritten space (zeros below): the filter then asks.
    ("Read", 16 * M, 64 * K, None), ("Extents", 16 * M, 64 * K, None),
    ("Trim", 0, 64 * K, 0),
    ("Flush", None, None, None),
]
PIPELINED = 64


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def pipelined_writes():
    """Offsets and lengths of connection 2's writes: disjoint, in 8..16M."""
    rnd = random.Random(42)
    off, out = 8 * M, []
    for _ in range(PIPELINED):
        n = rnd.choice([4 * K, 8 * K, 64 * K, 256 * K])
        out.append((off, n))
        off += n
    rnd.shuffle(out)
    return out


def client(uri):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(b"\x11" * M, 0, nbd.CMD_FLAG_FUA)
    h.pwrite(b"\x22" * 4 * K, M)
    h.zero(3 * M + 8 * K, 2 * M, nbd.CMD_FLAG_FUA)
    if h.pread(M, 0) != b"\x11" * M:
        fail("data did not read back")
    if h.pread(64 * K, 16 * M) != bytes(64 * K):
        fail("unwritten space did not read as zeros")
    h.trim(64 * K, 0)
    h.flush()

    h2 = nbd.NBD()
    h2.connect_uri(uri)
    cookies = []
    for off, n in pipelined_writes():
        cookies.append(h2.aio_pwrite(nbd.Buffer.from_bytearray(
            bytearray([off // K % 251]) * n), off))
    for _ in range(600):            # bounded: at most 60 s
        if h2.aio_in_flight() == 0:
            break
        h2.poll(100)
    else:
        fail("pipelined writes did not complete")
    for c in cookies:               # raises if a write failed
        if not h2.aio_command_completed(c):
            fail("a pipelined write did not complete")
    for off, n in pipelined_writes():
        if h2.pread(n, off) != bytearray([off // K % 251]) * n:
            fail("pipelined write at %d did not read back" % off)
    h2.shutdown()
    h.shutdown()


CALL = re.compile(r"connection=(\d+) (Read|Write|Trim|Zero|Flush|Extents)"
                  r" id=(\d+)(?: offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)"
                  r"(?: fua=(\d))?)?")
RETURN = re.compile(r"connection=(\d+) \.\.\.(\w+) id=(\d+)\b.* return=(-?\d+)")


def check(logfile):
    calls = {"1": [], "2": []}
    open_ids = {}
    with open(logfile) as f:
        for line in f:
            m = CALL.search(line)
            if m:
                conn, op, ident, off, cnt, fua = m.groups()
                if conn == "1" and open_ids.get(conn):
                    fail("connection 1: %s started while an earlier request "
                         "below was still running" % op)
                open_ids.setdefault(conn, set()).add(ident)
                calls.setdefault(conn, []).append(
                    (op, int(off, 16) if off else None,
                     int(cnt, 16) if cnt else None,
                     int(fua) if fua else None))
                continue
            m = RETURN.search(line)
            if m:
                conn, op, ident, ret = m.groups()
                open_ids[conn].discard(ident)
                if ret != "0":
                    fail("request below failed: " + line.strip())

    if calls["1"] != SEQUENTIAL:
        fail("connection 1 below: %s\nexpected: %s" % (calls["1"], SEQUENTIAL))
    writes = sorted((o, n) for op, o, n, _ in calls["2"] if op == "Write")
    if writes != sorted(pipelined_writes()):
        fail("pipelined writes below do not match the client's one to one")
    if any(op == "Zero" for c in calls.values() for op, *_ in c):
        fail("a zero request reached the plugin unencrypted")


if sys.argv[1] == "client":
    client(sys.argv[2])
else:
    check(sys.argv[2])
