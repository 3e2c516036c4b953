#!/usr/bin/env python3
"""Benchmarks of the cryptinline filter and the zbd plugin.

Run by `make bench`.  For every case it starts this tree's ./nbdkit on a
Unix socket (one server per configuration and run, data on tmpfs),
drives it with bench-io (libnbd, a fixed number of requests in flight)
and reads the server's CPU time from /proc.  Candidates and their
baselines alternate run by run (the order rotates every run) because the
machine is shared and noisy; every ratio is the median of the ratios of
the same runs, every figure the median of all runs.

Environment:
  BENCH_RUNS=5           runs of every configuration (plus one warm-up)
  BENCH_SIZE=512M        size of the export
  BENCH_CASES=1,2,3,4,5  which cases to run; add "nbdcopy" for case 1's
                         cross-check with nbdcopy (slow: whole-disk copies)
  BENCH_RANDREAD_OPS     4 KiB random reads per run (default 65536), or
  BENCH_RANDREAD_SECONDS as many as fit in this time (default 3)
  BENCH_CRYPT_SECTOR     the filter's crypt sector size (default 4096,
                         the filter's default)
  BENCH_TMPDIR           where the data lives (default /dev/shm: tmpfs)

A configuration that cannot start (a module or mode that is not built
yet) is reported as "not available" and the rest still runs.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
GiB = 1 << 30


def parse_size(s):
    units = {"k": 1 << 10, "m": MiB, "g": GiB}
    s = s.strip()
    if s[-1].lower() in units:
        return int(s[:-1]) * units[s[-1].lower()]
    return int(s)


TOP = os.environ.get("top_builddir", os.path.join(os.path.dirname(__file__), ".."))
BENCHDIR = os.environ.get("benchdir", os.path.dirname(os.path.abspath(__file__)))
SRCDIR = os.environ.get("srcdir", os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("BENCH_OUT", os.path.join(BENCHDIR, "out"))
NBDKIT = os.path.join(TOP, "nbdkit")
BENCH_IO = os.path.join(BENCHDIR, "bench-io")
BENCH_XTS = os.path.join(BENCHDIR, "bench-xts")

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SIZE = parse_size(os.environ.get("BENCH_SIZE", "512M"))
CASES = set(os.environ.get("BENCH_CASES", "1,2,3,4,5").split(","))
RANDREAD_OPS = int(os.environ.get("BENCH_RANDREAD_OPS", "65536"))
RANDREAD_SECONDS = float(os.environ.get("BENCH_RANDREAD_SECONDS", "3"))
CRYPT_SECTOR = int(os.environ.get("BENCH_CRYPT_SECTOR", "4096"))
TMPBASE = os.environ.get("BENCH_TMPDIR", "/dev/shm" if os.path.isdir("/dev/shm") else None)

# One zone of the emulated device is the unit of the zoned cases.
ZONE_SIZE = min(256 * MiB, SIZE // 2)
# Every connection is warmed up (untimed, bench-io -w) with this much I/O
# first: nbdkit starts a connection's threads when it connects, and a
# fresh thread's first requests pay for allocating and touching its
# buffers, which in this virtual machine costs about as much as the I/O.
WARM = min(32 * MiB, ZONE_SIZE)
SEQ_QD = 16          # "many requests in flight"
LUKS_PASSPHRASE = "bench"



class NotAvailable(Exception):
    """A configuration that cannot run here (module or mode missing)."""


# ---------------------------------------------------------------- server

class Server:
    """One nbdkit process on a private Unix socket, in the foreground so
    that its PID is ours to read CPU time from and to stop."""

    def __init__(self, workdir, args):
        self.workdir = workdir
        self.args = args
        self.proc = None

    def __enter__(self):
        sockdir = tempfile.mkdtemp(prefix="srv", dir=self.workdir)
        self.sockdir = sockdir
        sock = os.path.join(sockdir, "sock")
        pidfile = os.path.join(sockdir, "pid")
        self.log = open(os.path.join(sockdir, "log"), "w+")
        cmd = [NBDKIT, "-f", "--exit-with-parent", "-U", sock, "-P", pidfile] + self.args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while not os.path.exists(pidfile):
            if self.proc.poll() is not None:
                self.log.seek(0)
                reason = first_error_line(self.log.read())
                self._cleanup()
                raise NotAvailable(reason)
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise NotAvailable("nbdkit did not start within 60 s")
            time.sleep(0.01)
        self.uri = "nbd+unix://?socket=" + sock
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._cleanup()

    def _cleanup(self):
        self.log.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def first_error_line(text):
    """The line of nbdkit's output that says why it did not start."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for l in lines:
        if "error" in l.lower():
            return l
    return lines[0] if lines else "nbdkit exited"


def bench_io(server, *args):
    """Run bench-io against the server; returns seconds, bytes, ops and
    the CPU seconds the server and the client spent in the timed part
    (bench-io reads the server's process CPU clock itself, so the
    connection's warm-up and handshake stay outside)."""
    r = subprocess.run([BENCH_IO, "-P", str(server.proc.pid)]
                       + [str(a) for a in args] + [server.uri],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise NotAvailable("bench-io: " + (r.stderr.strip().splitlines() or ["failed"])[-1])
    kv = dict(w.split("=", 1) for w in r.stdout.split())
    return {"seconds": float(kv["seconds"]), "bytes": int(kv["bytes"]),
            "ops": int(kv["ops"]), "cpu": float(kv["server_cpu"]),
            "client_cpu": float(kv["client_cpu"])}


def cores_busy(x):
    """CPUs kept busy by the server and the client together: how close a
    run came to the machine's limit."""
    return (x["cpu"] + x["client_cpu"]) / x["seconds"]


# ---------------------------------------------------------------- configurations

class Setup:
    """Backing data on tmpfs, created once for the whole run."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="nbdkit-zoned-bench.", dir=TMPBASE)
        self.key = os.path.join(self.dir, "key")
        with open(self.key, "wb") as f:
            f.write(os.urandom(64))          # AES-256-XTS, like the luks peer
        self.passfile = os.path.join(self.dir, "passphrase")
        with open(self.passfile, "w") as f:
            f.write(LUKS_PASSPHRASE)
        self.plain = os.path.join(self.dir, "plain.img")
        fd = os.open(self.plain, os.O_CREAT | os.O_RDWR, 0o600)
        os.posix_fallocate(fd, 0, SIZE)    # allocated once: no tmpfs page faults in the runs
        os.close(fd)
        self.zbd_pristine = None           # made when a zoned case first needs it
        self.luks = os.path.join(self.dir, "luks.img")
        self.luks_error = self._make_luks()

    def _make_luks(self):
        """A LUKS1 image like the luks filter's man page makes, AES-256-XTS.
        qemu-img times its PBKDF2 iterations and gives up ("Unable to get
        accurate CPU usage") when a busy machine makes the timing
        meaningless: try again a few times."""
        if shutil.which("qemu-img") is None:
            return "qemu-img not installed"
        for _ in range(5):
            r = subprocess.run(
                ["qemu-img", "create", "-q", "-f", "luks",
                 "--object", "secret,id=sec0,data=" + LUKS_PASSPHRASE,
                 "-o", "key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,"
                       "ivgen-alg=plain64,hash-alg=sha256,iter-time=100",
                 self.luks, str(SIZE)], capture_output=True, text=True)
            if r.returncode == 0:
                return None
        return "qemu-img: " + r.stderr.strip()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def crypt_params(setup, mode):
    """The filter's parameters (they follow the plugin and its own)."""
    return ["crypt-key-file=" + setup.key,
            "crypt-sector-size=%d" % CRYPT_SECTOR,
            "crypt-mode=" + mode]


def with_filter(plugin_args, setup, mode):
    if mode is None:
        return plugin_args
    return ["--filter=cryptinline"] + plugin_args + crypt_params(setup, mode)


def file_config(setup, mode=None, extents=True):
    """The file plugin on tmpfs, with or without the filter.  With
    extents=False, nbdkit's noextents filter sits below cryptinline: the
    file plugin answers extents with lseek SEEK_DATA/SEEK_HOLE, which on
    tmpfs scans the page cache up to the next hole (the end of a full
    file), and the filter asks for extents on every read; without them it
    treats everything as data, which shows the filter's own cost."""
    plugin = ["file", setup.plain]
    if not extents:
        plugin = ["--filter=noextents"] + plugin
    return with_filter(plugin, setup, mode)


def luks_config(setup):
    if setup.luks_error:
        raise NotAvailable(setup.luks_error)
    return ["--filter=luks", "file", setup.luks, "passphrase=+" + setup.passfile]


def zbd_config(setup, mode=None):
    """The zbd plugin's emulated zones, every zone empty, in an image file
    on tmpfs whose pages are all allocated already.  (emulate=memory
    would time the kernel's first-touch page faults, about 14 ms per MiB
    in this virtual machine, instead of the gate and the filter.)"""
    geometry = ["size=%d" % SIZE, "zone-size=%d" % ZONE_SIZE]
    if setup.zbd_pristine is None:
        setup.zbd_pristine = os.path.join(setup.dir, "zbd-pristine.img")
        with Server(setup.dir, ["zbd", "emulate=" + setup.zbd_pristine] +
                    geometry) as srv:
            # The first connection for writing creates the image, all
            # zones empty.
            subprocess.run(["nbdinfo", srv.uri], check=True,
                           stdout=subprocess.DEVNULL)
        preallocate(setup.zbd_pristine)
    image = os.path.join(setup.dir, "zbd.img")
    shutil.copyfile(setup.zbd_pristine, image)    # writes every page
    return with_filter(["zbd", "emulate=" + image] + geometry, setup, mode)


def preallocate(path):
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- running

def rotated(items, r):
    k = r % len(items)
    return items[k:] + items[:k]


def warm_zone():
    """bench-io options for an untimed warm-up in the second zone."""
    return ("-w", WARM, "-x", ZONE_SIZE)


RAW = {}      # every run of every configuration, for out/runs.json


def alternate(configs, measure):
    """configs: [(name, args_fn)].  Runs measure(name, server) once per
    configuration as a warm-up, then RUNS times, rotating the order every
    run.  Returns {name: [result per run]} or {name: NotAvailable}."""
    results = {name: [] for name, _ in configs}
    for r in range(-1, RUNS):
        for name, args_fn in rotated(configs, max(r, 0)):
            if isinstance(results[name], NotAvailable):
                continue
            try:
                with Server(SETUP.dir, args_fn()) as srv:
                    res = measure(name, srv)
            except NotAvailable as e:
                results[name] = e
                log("  %s: not available: %s" % (name, e))
                continue
            if r >= 0:
                results[name].append(res)
        if r >= 0:
            log("  run %d/%d done" % (r + 1, RUNS))
    for name, runs in results.items():
        RAW.setdefault(measure.__qualname__.split(".")[0], {})[name] = (
            str(runs) if isinstance(runs, NotAvailable) else runs)
    return results


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def median_of(runs, key):
    return statistics.median(key(x) for x in runs)


def paired_ratio(cand, base, key):
    """Median over runs of key(candidate run i) / key(baseline run i)."""
    return statistics.median(key(c) / key(b) for c, b in zip(cand, base))


def mibs(x):
    return x["bytes"] / MiB / x["seconds"]


# ---------------------------------------------------------------- table

ROWS = []     # (case, measurement, config, value, ratio, target, verdict)
CHART = {}    # panel -> [(label, [values])]


def row(case, what, config, value="", ratio="", target="", verdict=""):
    ROWS.append((case, what, config, value, ratio, target, verdict))


def verdict(ratio, target_op, target):
    ok = ratio <= target if target_op == "<=" else ratio >= target
    return "MET" if ok else "MISSED"


def ratio_row(case, what, config, value, ratio, op, target, explain):
    row(case, what, config, value, "%.2fx %s" % (ratio, explain),
        "%s %.2f" % (op, target), verdict(ratio, op, target))


def na_row(case, what, config, e):
    row(case, what, config, "not available", "", "", without_paths(str(e))[:80])


def without_paths(text):
    """Paths of this machine say nothing to the reader of the table."""
    return re.sub(r"/[^\s':]*/", "", text)


# ---------------------------------------------------------------- cases

MODES = ["inline", "pool", "auto"]


def case1():
    """Sequential 1 MiB writes then reads, SEQ_QD in flight."""
    def measure(name, srv):
        w = bench_io(srv, "-o", "write", "-b", "1M", "-q", SEQ_QD, "-w", WARM)
        rd = bench_io(srv, "-o", "read", "-b", "1M", "-q", SEQ_QD, "-w", WARM)
        return {"write": w, "read": rd}

    configs = [("baseline", lambda: file_config(SETUP))]
    configs += [(m, lambda m=m: file_config(SETUP, m)) for m in MODES]
    configs += [("auto noextents", lambda: file_config(SETUP, "auto", False))]
    configs += [("luks", lambda: luks_config(SETUP))]
    log("case 1: sequential 1 MiB, %d in flight" % SEQ_QD)
    res = alternate(configs, measure)
    CASE1.update(res)

    base = res["baseline"]
    luks = res["luks"]
    panel = []
    for d in ("write", "read"):
        what = "seq 1M %s QD%d" % (d, SEQ_QD)
        for name, _ in configs:
            runs = res[name]
            if isinstance(runs, NotAvailable):
                na_row(1, what, name, runs)
                continue
            value = "%.0f MiB/s, %.1f CPUs busy" % (
                median_of(runs, lambda x: mibs(x[d])),
                median_of(runs, lambda x: cores_busy(x[d])))
            if name == "baseline" or isinstance(base, NotAvailable):
                row(1, what, name, value)
                continue
            t = paired_ratio(runs, base, lambda x: x[d]["seconds"])
            if name == "luks":
                row(1, what, name, value, "%.2fx baseline time" % t)
                continue
            ratio_row(1, what, name, value, t, "<=", 1.15, "baseline time")
            if not isinstance(luks, NotAvailable):
                s = paired_ratio(luks, runs, lambda x: x[d]["seconds"])
                ratio_row(1, what, name + " vs luks", "", s, ">=", 2.4, "faster than luks")
    for name, _ in configs:
        runs = res[name]
        if isinstance(runs, NotAvailable):
            panel.append((name, [float("nan"), float("nan")]))
        else:
            panel.append((name, [median_of(runs, lambda x: mibs(x["write"])),
                                 median_of(runs, lambda x: mibs(x["read"]))]))
    CHART["seq"] = panel


def nbdcopy(src, dst):
    """Wall time of one nbdcopy with its defaults (what a user gets)."""
    start = time.monotonic()
    r = subprocess.run(["nbdcopy", src, dst], capture_output=True, text=True,
                       timeout=600)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        raise NotAvailable("nbdcopy: " + (r.stderr.strip().splitlines() or ["failed"])[-1])
    return {"seconds": seconds, "bytes": SIZE}


def case1_nbdcopy():
    """Case 1 again with nbdcopy, an independent libnbd client, in its
    default settings: a cross-check of bench-io's figures."""
    if shutil.which("nbdcopy") is None:
        row(1, "nbdcopy", "all", "not available", "", "", "nbdcopy not installed")
        return
    source = os.path.join(SETUP.dir, "source.img")
    if not os.path.exists(source):
        block = os.urandom(MiB)
        with open(source, "wb") as f:
            for _ in range(SIZE // MiB):
                f.write(block)

    def measure(name, srv):
        nbdcopy(source, srv.uri)                  # warm-up and the data to read
        w = nbdcopy(source, srv.uri)
        rd = nbdcopy(srv.uri, "null:")
        return {"write": w, "read": rd}

    configs = [("baseline", lambda: file_config(SETUP)),
               ("auto", lambda: file_config(SETUP, "auto"))]
    log("case 1 cross-check: nbdcopy, default settings")
    res = alternate(configs, measure)
    base = res["baseline"]
    for d in ("write", "read"):
        what = "nbdcopy %s" % ("file to NBD" if d == "write" else "NBD to null:")
        for name, _ in configs:
            runs = res[name]
            if isinstance(runs, NotAvailable):
                na_row(1, what, name, runs)
                continue
            value = "%.0f MiB/s" % median_of(runs, lambda x: mibs(x[d]))
            if name == "baseline" or isinstance(base, NotAvailable):
                row(1, what, name, value)
            else:
                ratio_row(1, what, name, value,
                          paired_ratio(runs, base, lambda x: x[d]["seconds"]),
                          "<=", 1.15, "baseline time")


def case2():
    """QD1 sequential 1 MiB writes filling one zone."""
    def measure(name, srv):
        return bench_io(srv, "-o", "write", "-b", "1M", "-q", 1, "-s", 0, "-l", ZONE_SIZE,
                        *warm_zone())

    configs = [("zbd alone", lambda: zbd_config(SETUP))]
    configs += [(m, lambda m=m: zbd_config(SETUP, m)) for m in MODES]
    log("case 2: QD1 1 MiB writes into one zone")
    res = alternate(configs, measure)
    what = "zone QD1 1M write"
    inline = res["inline"]
    panel = []
    for name, _ in configs:
        runs = res[name]
        if isinstance(runs, NotAvailable):
            na_row(2, what, name, runs)
            panel.append((name, [float("nan")]))
            continue
        value = "%.0f MiB/s, %.1f CPUs busy" % (median_of(runs, mibs),
                                                median_of(runs, cores_busy))
        panel.append((name, [median_of(runs, mibs)]))
        if name in ("pool", "auto") and not isinstance(inline, NotAvailable):
            ratio_row(2, what, name, value, paired_ratio(runs, inline, mibs),
                      ">=", 1.4, "inline throughput")
        else:
            row(2, what, name, value)
    alone = res["zbd alone"]
    if not isinstance(alone, NotAvailable) and not isinstance(inline, NotAvailable):
        # Even a filter that cost nothing could not beat the plugin alone:
        # the most any mode can gain over inline at QD1.
        row(2, what, "ceiling", "", "%.2fx inline throughput (zbd alone)"
            % paired_ratio(alone, inline, mibs))
    CHART["zoneqd1"] = panel


def case3():
    """4 KiB random reads, 16 in flight, over data written before."""
    def measure(name, srv):
        return bench_io(srv, "-o", "read", "-p", "rand", "-b", "4k", "-q", 16,
                        "-n", RANDREAD_OPS, "-t", RANDREAD_SECONDS, "-w", 16 * MiB)

    if "1" not in CASES:        # make sure there is data to read
        with Server(SETUP.dir, file_config(SETUP)) as srv:
            bench_io(srv, "-o", "write", "-b", "1M", "-q", SEQ_QD)
    configs = [("baseline", lambda: file_config(SETUP)),
               ("auto", lambda: file_config(SETUP, "auto")),
               ("inline", lambda: file_config(SETUP, "inline")),
               ("auto noextents", lambda: file_config(SETUP, "auto", False))]
    log("case 3: 4 KiB random reads, 16 in flight")
    res = alternate(configs, measure)
    what = "rand 4K read QD16"
    panel = []

    def iops(x):
        return x["ops"] / x["seconds"]
    for name, _ in configs:
        runs = res[name]
        if isinstance(runs, NotAvailable):
            na_row(3, what, name, runs)
            panel.append((name, [float("nan")]))
            continue
        value = "%.0f IOPS" % median_of(runs, iops)
        panel.append((name, [median_of(runs, iops) / 1000]))
        base = res["baseline"]
        if name == "baseline" or isinstance(base, NotAvailable):
            row(3, what, name, value)
        else:
            ratio_row(3, what, name, value, paired_ratio(runs, base, iops),
                      ">=", 0.85, "baseline IOPS")
    CHART["randread"] = panel


def case4():
    """64 KiB writes filling one zone: 8 in flight against 1."""
    def measure(name, srv):
        qd = int(name.rsplit("QD", 1)[1])     # the queue depth is in the name
        return bench_io(srv, "-o", "write", "-b", "64k", "-q", qd,
                        "-s", 0, "-l", ZONE_SIZE, *warm_zone())

    # The file plugin has no gate: what pipelining gains on this machine
    # when nothing waits for a write pointer, the reference for the others.
    servers = [("zbd", lambda: zbd_config(SETUP)),
               ("auto+zbd", lambda: zbd_config(SETUP, "auto")),
               ("file, no gate", lambda: file_config(SETUP))]
    configs = []
    for name, fn in servers:
        configs += [(name + " QD1", fn), (name + " QD8", fn)]
    log("case 4: 64 KiB writes into one zone, QD8 against QD1")
    res = alternate(configs, measure)
    what = "zone 64K write"
    panel = []
    for name, _ in servers:
        q1, q8 = res[name + " QD1"], res[name + " QD8"]
        if isinstance(q1, NotAvailable) or isinstance(q8, NotAvailable):
            e = q1 if isinstance(q1, NotAvailable) else q8
            na_row(4, what, name, e)
            panel.append((name, [float("nan"), float("nan")]))
            continue
        row(4, what, name + " QD1", "%.0f MiB/s, %.1f CPUs busy" %
            (median_of(q1, mibs), median_of(q1, cores_busy)))
        value = "%.0f MiB/s, %.1f CPUs busy" % (median_of(q8, mibs),
                                                median_of(q8, cores_busy))
        gain = paired_ratio(q8, q1, mibs)
        if name.startswith("file"):
            row(4, what, name + " QD8", value, "%.2fx QD1 throughput" % gain)
        else:
            ratio_row(4, what, name + " QD8", value, gain, ">=", 3.0, "QD1 throughput")
        panel.append((name, [median_of(q1, mibs), median_of(q8, mibs)]))
    CHART["zone64k"] = panel


XTS_PAIRS = 16   # the honest reference: 16 rotating 1 MiB buffer pairs


def raw_xts():
    """CPU seconds per GiB of AES-256-XTS in the filter's cipher layer,
    one thread, 1 MiB requests: the median of RUNS runs, keyed by
    (op, pairs): one hot buffer pair (pairs 1, the best case) and
    XTS_PAIRS pairs in turn (cache-cold, as a server's buffers are)."""
    runs = {}
    for _ in range(RUNS):
        r = subprocess.run([BENCH_XTS, "-k", "64", "-S", str(CRYPT_SECTOR),
                            "-b", str(MiB), "-p", str(XTS_PAIRS)],
                           capture_output=True, text=True, check=True)
        for line in r.stdout.splitlines():
            kv = dict(w.split("=", 1) for w in line.split())
            runs.setdefault((kv["op"], int(kv["pairs"])), []).append(
                float(kv["cpu_s_per_gib"]))
    return {k: statistics.median(v) for k, v in runs.items()}


def case5():
    """The filter's added CPU per GiB against raw libgcrypt."""
    log("case 5: raw AES-256-XTS, %d-byte sectors" % CRYPT_SECTOR)
    allraw = raw_xts()
    what = "CPU s/GiB"
    for op in ("encrypt", "decrypt"):
        for pairs, how in ((1, "1 hot buffer pair"),
                           (XTS_PAIRS, "%d rotating pairs: the reference" % XTS_PAIRS)):
            v = allraw[(op, pairs)]
            row(5, what, "raw xts %s (1 thread, %s)" % (op, how),
                "%.3f s/GiB (%.0f MiB/s)" % (v, 1024 / v))
    raw = {op: allraw[(op, XTS_PAIRS)] for op in ("encrypt", "decrypt")}
    hot = {op: allraw[(op, 1)] for op in ("encrypt", "decrypt")}
    if "1" not in CASES:
        row(5, what, "filter", "not available", "", "", "needs case 1")
        return
    base = CASE1.get("baseline")
    if not isinstance(base, NotAvailable):
        for d in ("write", "read"):
            row(5, what, "baseline server", "%.3f s/GiB (%s, whole server)" %
                (median_of(base, lambda x: x[d]["cpu"] / (x[d]["bytes"] / GiB)), d))
    for mode in MODES + ["auto noextents", "luks"]:
        runs = CASE1.get(mode)
        if isinstance(runs, NotAvailable) or isinstance(base, NotAvailable):
            na_row(5, what, mode, runs if isinstance(runs, NotAvailable) else base)
            continue
        for d, op in (("write", "encrypt"), ("read", "decrypt")):
            added = statistics.median(
                (c[d]["cpu"] - b[d]["cpu"]) / (c[d]["bytes"] / GiB)
                for c, b in zip(runs, base))
            value = "%.3f s/GiB added (%s)" % (added, d)
            value += ", %.2fx the hot pair" % (added / hot[op])
            target = 1.25 if op == "encrypt" else 1.1
            if mode == "luks":
                row(5, what, mode, value, "%.2fx raw %s" % (added / raw[op], op))
            else:
                ratio_row(5, what, mode, value, added / raw[op], "<=", target,
                          "raw %s (%d pairs)" % (op, XTS_PAIRS))


# ---------------------------------------------------------------- output

def filesystem_type(path):
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return r.stdout.strip() or "unknown file system"


def package_version(name):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def machine():
    model, flags = "unknown", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    # What libgcrypt's AES-XTS can use on this CPU.
    cipher_flags = [f for f in ("aes", "vaes", "vpclmulqdq", "avx2", "avx512f")
                    if f in flags]
    nbdkit_version = subprocess.run(["nbdkit", "--version"], capture_output=True,
                                    text=True).stdout.strip()
    return [
        "command: " + " ".join(["%s=%s" % kv for kv in sorted(os.environ.items())
                                if kv[0].startswith("BENCH_") and kv[0] != "BENCH_OUT"]
                               + ["make bench"]),
        "date: " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu: %s, %d online, flags: %s" % (model, os.cpu_count(),
                                           " ".join(cipher_flags)),
        "libgcrypt: " + package_version("libgcrypt20"),
        "kernel: " + os.uname().release,
        "nbdkit: " + nbdkit_version,
        "load average at start: %.2f %.2f %.2f" % os.getloadavg(),
        "runs: %d (+1 warm-up) per configuration, export %d MiB, data on %s"
        % (RUNS, SIZE // MiB, filesystem_type(TMPBASE or tempfile.gettempdir())),
    ]


def table():
    head = ("case", "measurement", "config", "median", "ratio (same runs)",
            "target", "status")
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for r in ROWS:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def write_chart():
    """One data file per panel; chart.gp draws them into throughput.png."""
    files = {"seq": "seq.dat", "zoneqd1": "zoneqd1.dat",
             "randread": "randread.dat", "zone64k": "zone64k.dat"}
    for panel, name in files.items():
        with open(os.path.join(OUT, name), "w") as f:
            bars = CHART.get(panel, []) or [("not run", [float("nan")] * 2)]
            for label, values in bars:
                # A configuration that did not run keeps its place, at zero.
                if any(v != v for v in values):
                    label, values = label + " (n/a)", [0.0] * len(values)
                f.write('"%s" %s\n' % (label, " ".join("%.1f" % v for v in values)))
    if shutil.which("gnuplot") is None:
        log("gnuplot not installed: no chart")
        return
    png = os.path.join(OUT, "throughput.png")
    r = subprocess.run(["gnuplot", "-e", "outdir='%s'" % OUT,
                        os.path.join(SRCDIR, "chart.gp")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr.strip())
    else:
        log("chart: " + png)


CASE1 = {}
SETUP = None


def main():
    global SETUP
    os.makedirs(OUT, exist_ok=True)
    for prog in (NBDKIT, BENCH_IO, BENCH_XTS):
        if not os.access(prog, os.X_OK):
            sys.exit("bench: %s not built (run make first)" % prog)
    info = machine()
    for line in info:
        log(line)
    # Interrupted or killed, still remove the data from tmpfs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    SETUP = Setup()
    try:
        for n, fn in (("1", case1), ("nbdcopy", case1_nbdcopy), ("2", case2),
                      ("3", case3), ("4", case4),
                      ("5", case5)):
            if n in CASES:
                fn()
    finally:
        SETUP.remove()
    info.append("load average at end: %.2f %.2f %.2f" % os.getloadavg())
    text = "\n".join(info) + "\n\n" + table() + "\n"
    print(text)
    with open(os.path.join(OUT, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT, "runs.json"), "w") as f:
        json.dump(RAW, f, indent=1)
    write_chart()


RESULTS_BEGIN = "<!-- bench.py --record: from here -->"
RESULTS_END = "<!-- bench.py --record: to here -->"


def record():
    """Copy the last run's table and chart into RESULTS.md (between its
    markers) and throughput.png, next to this script."""
    with open(os.path.join(OUT, "table.md")) as f:
        table_md = f.read()
    results = os.path.join(SRCDIR, "RESULTS.md")
    with open(results) as f:
        text = f.read()
    head, rest = text.split(RESULTS_BEGIN, 1)
    _, tail = rest.split(RESULTS_END, 1)
    info, table_rows = table_md.split("\n\n", 1)
    block = "\n```\n" + info.strip() + "\n```\n\n" + table_rows.strip() + "\n\n"
    with open(results, "w") as f:
        f.write(head + RESULTS_BEGIN + block + RESULTS_END + tail)
    shutil.copyfile(os.path.join(OUT, "throughput.png"),
                    os.path.join(SRCDIR, "throughput.png"))
    log("recorded the last run in RESULTS.md and throughput.png")


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record()
    else:
        main()
