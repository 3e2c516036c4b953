# A write stream for the restart and crash tests, and its checker.
#
#   zbd-stream.py write URI LOG [ZONES] [--until-killed]
#                          write ZONES zones round robin up to their
#                          capacity, flush every few writes, log progress
#   zbd-stream.py check URI LOG   check the export against LOG
#
# The writer fails on any error: a write refused before the zone's
# capacity (ENOSPC, EIO) is a bug, not the end of the stream.  Only with
# --until-killed (the crash test, which kills the server under it) is a
# lost connection the expected end; an error reply still fails.
#
# The log has one line per event, synced before the next request:
#   sent OFFSET LENGTH     a write is about to be sent
#   flushed Z:WP ...       a flush completed; the WPs it covers
#   complete Z:WP ...      every zone was written to its capacity, flushed
# After a crash, for every zone: WP >= the last flushed WP, WP <= the
# end of the last write sent, and [start, WP) holds exactly the data; a
# zone the log says complete must be full to its capacity.
import os
import errno
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import check, connect, fail, geometry, pattern, wp  # noqa: E402
import nbd  # noqa: E402


def log_line(f, line):
    f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())


def seq_zones(g, nzones):
    conv = set()
    for r in g["conventional"].split(","):
        if r != "none":
            a, _, b = r.partition("-")
            conv.update(range(int(a), int(b or a) + 1))
    return [z for z in range(g["zones"]) if z not in conv][:nzones]


def write(uri, logpath, nzones, until_killed):
    h = connect(uri)
    g = geometry(h)
    zs, cap = g["zone-size"], g["zone-capacity"]
    zones = seq_zones(g, nzones)
    check(len(zones) == nzones, "only %d sequential zones" % len(zones))
    pos = {z: z * zs for z in zones}
    sizes = [4096, 8192, 16384, 65536]
    n = 0
    with open(logpath, "a") as f:
        try:
            while any(pos[z] < z * zs + cap for z in zones):
                for z in zones:
                    end = z * zs + cap
                    if pos[z] >= end:
                        continue
                    ln = min(sizes[n % len(sizes)], end - pos[z])
                    log_line(f, "sent %d %d" % (pos[z], ln))
                    h.pwrite(pattern(pos[z], ln, 7), pos[z])
                    pos[z] += ln
                    n += 1
                    if n % 7 == 0:
                        h.flush()
                        log_line(f, "flushed " + " ".join(
                            "%d:%d" % (z2, pos[z2]) for z2 in zones))
            h.flush()
        except nbd.Error as e:
            # A killed server: the connection is gone (the handle is
            # dead).  An error reply leaves it alive: that is a failure.
            # libnbd may report the broken transport (ENOTCONN, EPIPE,
            # ECONNRESET) before the handle has moved to its dead state.
            # (python3-libnbd gives the errno by name.)
            lost = e.errno in ("ENOTCONN", "EPIPE", "ECONNRESET",
                               errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET)
            if until_killed and (h.aio_is_dead() or lost):
                print("zbd-stream: connection lost after %d writes: %s" %
                      (n, e))
                return
            fail("write stream: %s after %d writes (zones at %s)" %
                 (e, n, " ".join("%d:%d" % (z, pos[z]) for z in zones)))
        log_line(f, "complete " + " ".join("%d:%d" % (z, pos[z])
                                           for z in zones))
    print("zbd-stream: %d writes, all zones full" % n)


def check_log(uri, logpath):
    h = connect(uri)
    g = geometry(h)
    zs, cap = g["zone-size"], g["zone-capacity"]
    flushed, sent = {}, {}
    for line in open(logpath):
        w = line.split()
        if w and w[0] == "sent":
            off, ln = int(w[1]), int(w[2])
            z = off // zs
            sent[z] = max(sent.get(z, z * zs), off + ln)
        elif w and w[0] in ("flushed", "complete"):
            for item in w[1:]:
                z, p = item.split(":")
                flushed[int(z)] = int(p)
                if w[0] == "complete":
                    check(int(p) == int(z) * zs + cap,
                          "zone %s: the log says complete at %s, not at "
                          "its capacity end %d" % (z, p, int(z) * zs + cap))
    check(sent, "the log records no writes")
    for z in sorted(sent):
        p = wp(h, z * zs, cap)
        lo, hi = flushed.get(z, z * zs), sent[z]
        check(lo <= p <= hi,
              "zone %d: WP %d outside [last flushed %d, last sent %d]" %
              (z, p, lo, hi))
        if p > z * zs:
            check(h.pread(p - z * zs, z * zs) == pattern(z * zs, p - z * zs, 7),
                  "zone %d: data below the WP %d is wrong" % (z, p))
        check(h.pread(4096, p) == bytes(4096) if p < z * zs + cap else True,
              "zone %d: data above the WP must read as zeros" % z)
    print("zbd-stream: %d zones consistent (flushed WPs kept, no WP beyond "
          "written data)" % len(sent))


if sys.argv[1] == "write":
    args = [a for a in sys.argv[2:] if a != "--until-killed"]
    write(args[0], args[1], int(args[2]) if len(args) > 2 else 4,
          "--until-killed" in sys.argv)
else:
    check_log(sys.argv[2], sys.argv[3])
