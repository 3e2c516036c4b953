#!/usr/bin/env python3
# make -C bench bench-shelf: one server for a shelf of drives (the zbd
# plugin's dir= with the filter's crypt-key-dir), on emulated drives:
#
#   memory per drive   the server's RSS with every drive open (a
#                      connection to each), less its RSS with none, per
#                      drive; and per zone, from one drive of many zones
#   time to list       nbdinfo --list over all drives (each is opened
#                      to be described), against listing one
#   time to first I/O  connect to a drive not open yet, write 4 KiB,
#                      flush: the drive's and its key's opening included
#   throughput         fio (its nbd engine) writing to 16 drives at
#                      once, against one drive alone in the same run:
#                      the aggregate and the per-drive ratio
#
# Images and keys live in a directory under $BENCH_TMP (default
# /dev/shm): sparse, so 64 drives cost only what is written.  Ratios are
# within one run (absolute times on a shared machine mean little).
# SHELF_DRIVES (64), SHELF_WRITERS (16), SHELF_MB (64: MiB fio writes to
# each drive), SHELF_RUNS (3: the throughput pair is run this often,
# median taken).
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import nbd

top = os.environ.get("top_builddir", os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
NBDKIT = os.path.join(top, "nbdkit")
DRIVES = int(os.environ.get("SHELF_DRIVES", "64"))
WRITERS = int(os.environ.get("SHELF_WRITERS", "16"))
MB = int(os.environ.get("SHELF_MB", "64"))
RUNS = int(os.environ.get("SHELF_RUNS", "3"))
ZONE = 4 << 20                  # 256 zones of 4 MiB per 1 GiB drive


def run(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def make_drives(d, k):
    os.makedirs(d)
    os.makedirs(k)
    for i in range(DRIVES):
        name = "d%02d" % i
        run(NBDKIT, "-U", "-", "zbd", "emulate=%s/%s" % (d, name), "size=1G",
            "zone-size=%d" % ZONE, "--run", 'nbdinfo "$uri" >/dev/null')
        with open(os.path.join(k, name), "wb") as f:
            f.write(os.urandom(64))
    # One drive of many zones, for the memory per zone.
    run(NBDKIT, "-U", "-", "zbd", "emulate=%s/many" % d, "size=64G",
        "zone-size=1M", "--run", 'nbdinfo "$uri" >/dev/null')
    with open(os.path.join(k, "many"), "wb") as f:
        f.write(os.urandom(64))


class Server:
    def __init__(self, tmp, d, k):
        self.sock = os.path.join(tmp, "sock")
        self.pidfile = os.path.join(tmp, "pid")
        self.p = subprocess.Popen(
            [NBDKIT, "-f", "-U", self.sock, "-P", self.pidfile,
             "--threads", "16", "--filter=cryptinline", "zbd", "dir=" + d,
             "crypt-key-dir=" + k], stderr=subprocess.DEVNULL)
        for _ in range(300):
            if os.path.exists(self.pidfile) and os.path.getsize(self.pidfile):
                break
            time.sleep(0.05)
        with open(self.pidfile) as f:
            self.pid = int(f.read())

    def uri(self, name=""):
        return "nbd+unix:///%s?socket=%s" % (name, self.sock)

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.p.terminate()
        self.p.wait()


def timed(fn):
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def list_all(srv):
    run("nbdinfo", "--list", "--json", srv.uri(), stdout=subprocess.DEVNULL)


def first_io(srv, name):
    h = nbd.NBD()
    h.connect_uri(srv.uri(name))
    h.pwrite(b"\1" * 4096, 0)
    h.flush()
    h.shutdown()


def fio(srv, names, offset_mb):
    """fio writing MB MiB sequentially into each of NAMES at once;
    aggregate MiB/s."""
    jobs = []
    for n in names:
        jobs += ["--name=" + n, "--uri=" + srv.uri(n)]
    out = subprocess.run(
        ["fio", "--output-format=json", "--ioengine=nbd", "--rw=write",
         "--bs=1M", "--iodepth=4", "--size=%dM" % MB,
         "--offset=%dM" % offset_mb] + jobs,
        check=True, capture_output=True, text=True).stdout
    r = json.loads(out[out.index("{"):])    # after "fio: connected ..."
    return sum(j["write"]["bw"] for j in r["jobs"]) / 1024.0


def main():
    base = os.environ.get("BENCH_TMP", "/dev/shm")
    tmp = tempfile.mkdtemp(prefix="shelf.", dir=base)
    try:
        d, k = os.path.join(tmp, "drives"), os.path.join(tmp, "keys")
        make_drives(d, k)
        names = ["d%02d" % i for i in range(DRIVES)]
        srv = Server(tmp, d, k)
        time.sleep(0.5)
        rss0 = srv.rss_kib()
        t_list = statistics.median(timed(lambda: list_all(srv))
                                   for _ in range(3))
        # Every drive open at once (one connection each, held).
        hs = []
        for n in names:
            h = nbd.NBD()
            h.connect_uri(srv.uri(n))
            hs.append(h)
        rss_all = srv.rss_kib()
        for h in hs:
            h.shutdown()
        h = nbd.NBD()
        h.connect_uri(srv.uri("many"))
        rss_many = srv.rss_kib()
        h.shutdown()
        t_first = statistics.median(timed(lambda n=n: first_io(srv, n))
                                    for n in names[:9])
        one, many = [], []
        for r in range(RUNS):
            off = 2 * r * MB + 8    # fresh zones each run, past first_io's
            one.append(fio(srv, [names[WRITERS]], off))
            many.append(fio(srv, names[:WRITERS], off))
        srv.stop()
    finally:
        shutil.rmtree(tmp)
    per_drive = (rss_all - rss0) / DRIVES
    per_zone = (rss_many - rss0) * 1024.0 / 65536
    m1, mn = statistics.median(one), statistics.median(many)
    print("shelf: %d emulated drives of 1 GiB (256 zones of 4 MiB), "
          "filter with crypt-key-dir, %d writers" % (DRIVES, WRITERS))
    print("  server RSS, no drive open        %8.0f KiB" % rss0)
    print("  memory per open drive            %8.1f KiB" % per_drive)
    print("  memory per zone (65536-zone drive) %6.0f bytes" % per_zone)
    print("  time to list %d drives          %8.0f ms" % (DRIVES, t_list * 1000))
    print("  time to first I/O (new drive)    %8.1f ms" % (t_first * 1000))
    print("  fio, 1 drive alone               %8.0f MiB/s (median of %d)"
          % (m1, RUNS))
    print("  fio, %d drives at once           %8.0f MiB/s aggregate: "
          "%.2fx one drive; %.2fx per drive"
          % (WRITERS, mn, mn / m1, mn / m1 / WRITERS))
    print("  runs: one=%s many=%s" % (["%.0f" % x for x in one],
                                       ["%.0f" % x for x in many]))


if __name__ == "__main__":
    main()
