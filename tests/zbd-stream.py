# A write stream for the restart and crash tests, and its checker.
#
#   zbd-stream.py write URI LOG [ZONES]   write zones round robin, flush
#                                         every few writes, log progress
#   zbd-stream.py check URI LOG           check the export against LOG
#
# The log has one line per event, synced before the next request:
#   sent OFFSET LENGTH     a write is about to be sent
#   flushed Z:WP ...       a flush completed; the WPs it covers
# After a crash, for every zone: WP >= the last flushed WP, WP <= the
# end of the last write sent, and [start, WP) holds exactly the data.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import check, connect, geometry, pattern, wp  # noqa: E402
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


def write(uri, logpath, nzones):
    h = connect(uri)
    g = geometry(h)
    zs, cap = g["zone-size"], g["zone-capacity"]
    zones = seq_zones(g, nzones)
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
        except nbd.Error as e:
            print("zbd-stream: stream stopped: %s" % e)
            return
    h.flush()
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
        elif w and w[0] == "flushed":
            for item in w[1:]:
                z, p = item.split(":")
                flushed[int(z)] = int(p)
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
    write(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4
          else 4)
else:
    check_log(sys.argv[2], sys.argv[3])
