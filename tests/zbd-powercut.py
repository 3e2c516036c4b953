# Power cut at any point on the emulated image (after ALICE and
# CrashMonkey): the plugin's writes, hole punches and syncs on the image
# are recorded (crash-recorder.so) during a workload of writes,
# pipelined writes, flushes, FUA writes, resets, finishes and a reset of
# every zone; then, for many crash points, every image a power cut
# could leave is built and reopened with the plugin, and DESIGN.md's
# invariant is checked on it.
#
#   zbd-powercut.py workload URI TRACE SEED
#       run the workload (deterministic from SEED) against URI; before
#       each request append "B i" to TRACE, after its reply "A i"
#   zbd-powercut.py check IMAGE0 TRACE SEED NBDKIT [MAX_STATES [WORKDIR]]
#       IMAGE0 is the image before the workload; NBDKIT the command
#       that runs nbdkit with this tree's plugin; the crash images are
#       built in WORKDIR, which keeps the failing ones
#
# The crash model: at a crash point, everything up to the last fsync or
# fdatasync is durable; of the operations after it, any subset may have
# reached the disk (a write torn at 4096-byte pages, at 512-byte sectors
# in the header and zone table).  Subsets are applied in program order:
# the page cache never lets an older version of a page overwrite a newer
# one.  All subsets are built when there are few, else a deterministic
# sample (seeded): nothing, everything, each in-order prefix, each
# "everything but one", and random subsets.
#
# On each image, opened read-only by the plugin, for every sequential
# zone with write pointer W:
#   - the image opens (nothing refused that should open);
#   - [start, W) holds exactly the data the client sent to that zone
#     since a reset that may have happened (no WP beyond durable data;
#     data discarded by a reset never reappears under a WP);
#   - W is at least what the last acknowledged flush, FUA write, reset
#     or finish promised (no WP behind an acknowledged durable point).
# Every 8th image is also served read-write: a write at each zone's WP
# succeeds and, flushed, is there after reopening.
import array
import functools
import hashlib
import os
import random
import shutil
import struct
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import check, connect, fail, wp  # noqa: E402
import nbd  # noqa: E402

# Must match the geometry test-zbd-powercut.sh creates the image with.
ZONE_SIZE = 256 * 1024
ZONE_CAP = 192 * 1024
NR_ZONES = 8
NR_CONV = 1
SEQ_ZONES = list(range(NR_CONV, NR_ZONES))
NR_OPS = 60

REC = struct.Struct("<4sIQQQIi")
REC_WRITE, REC_FALLOCATE, REC_FSYNC, REC_FDATASYNC, REC_SFR, \
    REC_FTRUNCATE, REC_MARK = range(1, 8)
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


def data_for(zone, gen, off, n):
    """The bytes of a write: zone, generation and offset in each word,
    so that data of an older generation (before a reset) never matches."""
    base = zone | gen << 16
    return array.array("Q", (base | (pos & 0xffffffff) << 32
                             for pos in range(off, off + n, 8))).tobytes()

# ---------------------------------------------------------------- #
# The workload: a list of operations, generated from the seed against
# a model of the zones, so that every operation is valid.

@functools.lru_cache(maxsize=None)
def workload(seed):
    rng = random.Random(seed)
    wps = {z: 0 for z in SEQ_ZONES}
    ops = []

    def write_op(kind):
        open_z = [z for z in SEQ_ZONES if wps[z] < ZONE_CAP]
        if not open_z:
            return None
        z = rng.choice(open_z)
        if kind == "batch":
            ns = [4096 * rng.randint(1, 4) for _ in range(4)]
            while sum(ns) > ZONE_CAP - wps[z]:
                ns.pop()
            if not ns:
                return None
            wps[z] += sum(ns)
            return ("batch", z, ns)
        n = min(4096 * rng.randint(1, 12), ZONE_CAP - wps[z])
        wps[z] += n
        return ("write", z, n, kind == "fua")

    kinds = (["write"] * 8 + ["fua"] * 2 + ["batch"] * 2 + ["flush"] * 2 +
             ["reset"] * 2 + ["finish"] * 2)
    while len(ops) < NR_OPS:
        if len(ops) == NR_OPS // 4:
            # A zone filled to its capacity, not flushed, then finished.
            z = min(SEQ_ZONES, key=lambda z: wps[z])
            while wps[z] < ZONE_CAP:
                n = min(49152, ZONE_CAP - wps[z])
                ops.append(("write", z, n, False))
                wps[z] += n
            ops.append(("finish", z))
            continue
        if len(ops) == NR_OPS // 2:
            ops.append(("resetall",))
            for z in SEQ_ZONES:
                wps[z] = 0
            continue
        kind = rng.choice(kinds)
        op = None
        if kind in ("write", "fua", "batch"):
            op = write_op(kind)
        elif kind == "flush":
            op = ("flush",)
        elif kind == "reset":
            z = rng.choice(SEQ_ZONES)
            wps[z] = 0
            op = ("reset", z)
        elif kind == "finish":
            # Any zone, also one already full by its writes.
            z = rng.choice(SEQ_ZONES)
            wps[z] = ZONE_CAP
            op = ("finish", z)
        if op:
            ops.append(op)
    return tuple(ops)


class Model:
    """What the client has sent and been promised, zone by zone.

    gen[z]: generation (count of resets); content[z]: the bytes sent
    since the last reset (a finish pads it with zeros to the capacity);
    promised[z]: the WP the last acknowledged durable point guarantees.
    """

    def __init__(self):
        self.gen = {z: 0 for z in SEQ_ZONES}
        self.content = {z: bytearray() for z in SEQ_ZONES}
        self.promised = {z: 0 for z in SEQ_ZONES}

    def copy(self):
        m = Model()
        m.gen = dict(self.gen)
        m.content = {z: bytearray(c) for z, c in self.content.items()}
        m.promised = dict(self.promised)
        return m

    def writes(self, op):
        """(zone, offset in zone, data) of each write of OP."""
        if op[0] == "write":
            return [(op[1], len(self.content[op[1]]), op[2])]
        if op[0] == "batch":
            out, pos = [], len(self.content[op[1]])
            for n in op[2]:
                out.append((op[1], pos, n))
                pos += n
            return out
        return []

    def apply(self, op, acked):
        """Apply OP; ACKED: its reply came, so its promise holds."""
        for (z, pos, n) in self.writes(op):
            self.content[z] += data_for(z, self.gen[z], pos, n)
        kind = op[0]
        if kind in ("reset", "resetall"):
            for z in ([op[1]] if kind == "reset" else SEQ_ZONES):
                self.gen[z] += 1
                self.content[z] = bytearray()
                self.promised[z] = 0
        elif kind == "finish":
            z = op[1]
            self.content[z] += bytes(ZONE_CAP - len(self.content[z]))
            if acked:
                self.promised[z] = ZONE_CAP
        elif acked and kind == "flush":
            for z in SEQ_ZONES:
                self.promised[z] = len(self.content[z])
        elif acked and kind == "write" and op[3]:
            self.promised[op[1]] = len(self.content[op[1]])


def background_flusher(uri, stop):
    """A second connection flushing while the workload runs, so that
    table writes of flushes interleave with resets and finishes.  Its
    flushes promise nothing the checker relies on (what they cover
    depends on timing), which only makes the check weaker, never wrong."""
    h = connect(uri)
    count = 0
    while not stop.wait(0.002):
        h.flush()
        count += 1
    h.shutdown()
    print("background flushes: %d" % count)


def run_workload(uri, trace, seed):
    h = connect(uri)
    fd = os.open(trace, os.O_WRONLY | os.O_APPEND)
    model = Model()
    stop = threading.Event()
    flusher = threading.Thread(target=background_flusher, args=(uri, stop))
    flusher.start()

    def mark(text):
        b = text.encode()
        os.write(fd, REC.pack(b"CREC", REC_MARK, 0, 0, len(b), 0, 0) + b)

    for i, op in enumerate(workload(seed)):
        mark("B %d" % i)
        kind = op[0]
        if kind in ("write", "batch"):
            flags = nbd.CMD_FLAG_FUA if kind == "write" and op[3] else 0
            cookies = []
            for (z, pos, n) in model.writes(op):
                buf = data_for(z, model.gen[z], pos, n)
                cookies.append(h.aio_pwrite(buf, z * ZONE_SIZE + pos,
                                            flags=flags))
            for c in cookies:
                while not h.aio_command_completed(c):
                    h.poll(-1)
        elif kind == "flush":
            h.flush()
        elif kind == "reset":
            h.trim(ZONE_SIZE, op[1] * ZONE_SIZE)
        elif kind == "resetall":
            h.trim(ZONE_SIZE * NR_ZONES, 0)
        elif kind == "finish":
            z = op[1]
            pos = len(model.content[z])
            h.zero(ZONE_SIZE - pos, z * ZONE_SIZE + pos)
        model.apply(op, True)
        mark("A %d" % i)
    stop.set()
    flusher.join()
    os.close(fd)
    h.shutdown()
    print("workload: %d operations" % len(workload(seed)))


# ---------------------------------------------------------------- #
# The trace

def read_trace(path):
    """Operations on the image, and for each position in that list the
    markers seen before it: (ops, begun_before, acked_before)."""
    data = open(path, "rb").read()
    ops, begun, acked = [], [], []
    last_b, last_a = -1, -1
    pos = 0
    while pos < len(data):
        magic, typ, off, extent, dlen, mode, res = \
            REC.unpack_from(data, pos)
        check(magic == b"CREC", "trace corrupt at byte %d" % pos)
        payload = data[pos + REC.size:pos + REC.size + dlen]
        pos += REC.size + dlen
        if typ == REC_MARK:
            what, num = payload.decode().split()
            if what == "B":
                last_b = int(num)
            else:
                last_a = int(num)
            continue
        begun.append(last_b)
        acked.append(last_a)
        ops.append((typ, off, extent, mode, res, payload))
    begun.append(last_b)
    acked.append(last_a)
    return ops, begun, acked


def units_of(op, data_offset):
    """Split a recorded operation into the pieces a power cut may keep or
    lose independently: (offset, bytes or None for zeros, new size)."""
    typ, off, extent, mode, res, payload = op
    if res != 0:
        return []
    if typ == REC_WRITE:
        out = []
        pos = off
        end = off + len(payload)
        while pos < end:
            grain = 512 if pos < data_offset else 4096
            nxt = min(end, (pos // grain + 1) * grain)
            out.append((pos, payload[pos - off:nxt - off], None))
            pos = nxt
        return out
    if typ == REC_FALLOCATE and mode & (FALLOC_FL_PUNCH_HOLE |
                                        FALLOC_FL_ZERO_RANGE):
        return [(off, None, extent)]
    if typ == REC_FTRUNCATE:
        return [(off, "truncate", None)]
    return []


def apply_unit(img, unit):
    off, data, extent = unit
    if data is None:
        end = min(off + extent, len(img))
        img[off:end] = bytes(end - off)
    elif data == "truncate":
        if off < len(img):
            del img[off:]
        else:
            img.extend(bytes(off - len(img)))
    else:
        if off + len(data) > len(img):
            img.extend(bytes(off + len(data) - len(img)))
        img[off:off + len(data)] = data


def subsets(groups, rng, limit):
    """Which pending units a crash keeps: lists of unit indices.  GROUPS
    holds the units of each pending operation.  Whole operations are
    kept or lost: every combination when there are few, else each
    in-order prefix, each operation alone, each "all but one", and
    random ones; then some operations torn (a random part of their
    units kept), up to LIMIT sets."""
    k = len(groups)
    if 1 << k <= limit:
        picks = [[i for i in range(k) if mask >> i & 1]
                 for mask in range(1 << k)]
    else:
        picks = [list(range(j)) for j in range(k + 1)]
        picks += [[j] for j in range(k)]
        picks += [[i for i in range(k) if i != j] for j in range(k)]
        picks += [[i for i in range(k) if rng.random() < 0.5]
                  for _ in range(limit)]
    out = []
    for pick in picks:
        out.append([u for i in pick for u in groups[i]])
    torn = [i for i in range(k) if len(groups[i]) > 1]
    for _ in range(limit):
        if not torn:
            break
        j = rng.choice(torn)
        before = [u for i in range(j) for u in groups[i]
                  if rng.random() < 0.5 or i < j - 1]
        out.append(before + [u for u in groups[j] if rng.random() < 0.5])
    seen = set()
    for c in out:
        key = tuple(c)
        if key not in seen:
            seen.add(key)
            yield c
        if len(seen) >= limit:
            return

# ---------------------------------------------------------------- #
# Checking one crash image

@functools.lru_cache(maxsize=None)
def model_after(seed, acked):
    """The model after requests 0..ACKED, all acknowledged."""
    if acked < 0:
        return Model()
    m = model_after(seed, acked - 1).copy()
    m.apply(workload(seed)[acked], True)
    return m


@functools.lru_cache(maxsize=None)
def expectations(seed, begun, acked):
    """Per zone, the states a crash may show, given requests 0..ACKED
    acknowledged and request BEGUN maybe in progress: a list of
    (content, promised WP, finish_from).  FINISH_FROM, for a finish in
    progress, is the WP before it: the WP is either at most that or the
    capacity, never in between."""
    wl = workload(seed)
    m = model_after(seed, acked)
    out = {z: [(bytes(m.content[z]), m.promised[z], None)] for z in SEQ_ZONES}
    if begun > acked:
        op = wl[begun]
        after = m.copy()
        after.apply(op, False)
        for z in SEQ_ZONES:
            if after.gen[z] != m.gen[z]:
                # A reset in progress: the zone may be in either generation.
                out[z].append((b"", 0, None))
            elif after.content[z] != m.content[z]:
                # Writes or a finish in progress: any prefix of them.
                out[z] = [(bytes(after.content[z]), m.promised[z],
                           len(m.content[z]) if op[0] == "finish" else None)]
    return out


def check_image(h, expect):
    """None if the open image satisfies the invariant, else why not."""
    for z in SEQ_ZONES:
        start = z * ZONE_SIZE
        w = wp(h, start, ZONE_CAP) - start
        got = h.pread(w, start) if w else b""
        why = []
        for (content, promised, finish_from) in expect[z]:
            if w > len(content):
                why.append("WP %d beyond the %d bytes sent" % (w, len(content)))
            elif got != content[:w]:
                bad = next(i for i in range(w) if got[i] != content[i])
                why.append("WP %d but the data differs at byte %d "
                           "(WP beyond durable data)" % (w, bad))
            elif w < promised:
                why.append("WP %d behind the acknowledged %d" % (w, promised))
            elif finish_from is not None and finish_from < w < ZONE_CAP:
                why.append("WP %d inside a finish from %d" % (w, finish_from))
            else:
                why = None
                break
        if why:
            return "zone %d: %s" % (z, "; or ".join(why))
    return None


def open_image(nbdkit, path, readonly=True):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_command(nbdkit + ["-s", "--exit-with-parent"] +
                      (["-r"] if readonly else []) +
                      ["zbd", "emulate=" + path])
    return h


def check_writable(nbdkit, img, path):
    """The image serves writes after the crash: each zone that is not
    full takes a write at its WP, which a flush makes durable."""
    with open(path, "wb") as f:
        f.write(img)
    h = open_image(nbdkit, path, readonly=False)
    wps = {}
    for z in SEQ_ZONES:
        start = z * ZONE_SIZE
        w = wp(h, start, ZONE_CAP)
        if w < start + ZONE_CAP:
            h.pwrite(b"\xa5" * 4096, w)
            wps[z] = w + 4096
    h.flush()
    h.shutdown()
    del h
    h = open_image(nbdkit, path)
    for z, w in wps.items():
        got = wp(h, z * ZONE_SIZE, ZONE_CAP)
        if got != w or h.pread(4096, w - 4096) != b"\xa5" * 4096:
            return "zone %d: a write at the WP after the crash was not " \
                "kept (WP %d, expected %d)" % (z, got, w)
    h.shutdown()
    return None


def run_check(image0, trace, seed, nbdkit, max_states, workdir=None):
    wl = workload(seed)
    ops, begun, acked = read_trace(trace)
    check(acked[-1] == len(wl) - 1,
          "the trace ends at request %d of %d" % (acked[-1], len(wl)))
    base = bytearray(open(image0, "rb").read())
    data_offset = struct.unpack_from("<Q", base, 80)[0]
    syncs = [i for i, o in enumerate(ops)
             if o[0] in (REC_FSYNC, REC_FDATASYNC) and o[4] == 0]
    counts = {}
    for o in ops:
        counts[o[0]] = counts.get(o[0], 0) + 1
    print("trace: %d operations on the image (%d writes, %d fallocate, "
          "%d fsync, %d fdatasync), %d requests" %
          (len(ops), counts.get(REC_WRITE, 0), counts.get(REC_FALLOCATE, 0),
           counts.get(REC_FSYNC, 0), counts.get(REC_FDATASYNC, 0), len(wl)))

    rng = random.Random(seed)
    # Crash points: before each operation, and at the end.  The states of
    # a crash just before a sync include those of every earlier point
    # since the previous sync, so most of the budget goes there.
    points = list(range(len(ops) + 1))
    heavy = set(syncs) | {len(ops)}
    light = 3
    per_heavy = max(8, (max_states - light * len(points)) // len(heavy))
    # The crash images are built in WORKDIR (kept after a failure, with
    # the failing images), else in a directory removed at the end.
    tmpdir = workdir or tempfile.mkdtemp()
    path = os.path.join(tmpdir, "crash.img")
    durable = bytearray(base)       # everything up to the last sync
    durable_upto = 0                # ops[:durable_upto] are in DURABLE
    seen = set()
    checked = failures = writable = 0
    # The file holds DURABLE as of WRITTEN_UPTO, changed only in ranges of
    # operations after it.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    written_upto = None
    for p in points:
        last_sync = max([s for s in syncs if s < p], default=-1)
        while durable_upto <= last_sync:
            for u in units_of(ops[durable_upto], data_offset):
                apply_unit(durable, u)
            durable_upto += 1
        groups, pending = [], []
        for o in ops[durable_upto:p]:
            us = units_of(o, data_offset)
            if us:
                groups.append(list(range(len(pending),
                                         len(pending) + len(us))))
                pending += us
        expect = expectations(seed, begun[p], acked[p])
        limit = per_heavy if p in heavy else light
        # Every state of this point differs from DURABLE only inside
        # these ranges: hash and write just them.
        ranges = [(u[0], u[0] + (u[2] if u[1] is None else len(u[1])))
                  for u in pending if u[1] != "truncate"]
        whole = any(u[1] == "truncate" for u in pending)
        for keep in subsets(groups, rng, limit):
            img = bytearray(durable)
            for i in keep:
                apply_unit(img, pending[i])
            digest = hashlib.blake2b(digest_size=16)
            if whole:
                digest.update(img)
            for (a, b) in ranges:
                digest.update(img[a:b])
            key = (durable_upto, digest.digest(), begun[p], acked[p])
            if key in seen:
                continue
            seen.add(key)
            if whole or written_upto != durable_upto:
                os.ftruncate(fd, 0)
                os.pwrite(fd, img, 0)
                written_upto = None if whole else durable_upto
            else:
                for (a, b) in ranges:
                    os.pwrite(fd, img[a:b], a)
            try:
                h = open_image(nbdkit, path)
            except nbd.Error as e:
                why = "the plugin refused the image: %s" % e
            else:
                why = check_image(h, expect)
                h.shutdown()
                del h
            # Every 8th image is also served read-write, and written.
            if not why and checked % 8 == 0:
                try:
                    why = check_writable(nbdkit, img,
                                         os.path.join(tmpdir, "rw.img"))
                except nbd.Error as e:
                    why = "read-write after the crash: %s" % e
                writable += 1
            checked += 1
            if why:
                failures += 1
                if failures <= 5:
                    keep_path = os.path.join(tmpdir, "fail-%d.img" % failures)
                    with open(keep_path, "wb") as f:
                        f.write(img)
                    print("FAIL: crash before trace operation %d (request %d "
                          "begun, %d acknowledged), %d of %d pending pieces "
                          "kept: %s [image kept: %s]" %
                          (p, begun[p], acked[p], len(keep), len(pending),
                           why, keep_path), file=sys.stderr)
    os.close(fd)
    print("power cut: %d crash points, %d distinct crash images checked "
          "(%d also written after reopening), %d violate the invariant" %
          (len(points), checked, writable, failures))
    if not workdir:
        shutil.rmtree(tmpdir)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "workload":
        run_workload(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "check":
        run_check(sys.argv[2], sys.argv[3], int(sys.argv[4]),
                  sys.argv[5].split(),
                  int(sys.argv[6]) if len(sys.argv) > 6 else 4000,
                  sys.argv[7] if len(sys.argv) > 7 else None)
    else:
        fail("usage: zbd-powercut.py workload|check ...")
