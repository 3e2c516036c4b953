#!/usr/bin/env python3
# The table of make -C bench bench-attach: reads the benchmark's result
# lines (vm/guest-bench.sh, "bench MEASUREMENT CONFIG RUN MiB/s [NOTE]")
# from the VM's TAP file and prints, per measurement and configuration,
# the median and the median of the same-run ratios against the baseline.
#
#   attach-table.py TAP-LOG
#
# Exits non-zero when the VM printed no results (the run failed).
import re
import statistics
import sys

# measurement -> (baseline config, candidate config, target ratio or None)
PAIRS = {
    "seq-write": ("nbd", "ublk", 0.8),
    "seq-write-4z": ("nbd", "ublk", 0.8),
    "seq-read": ("nbd", "ublk", 0.8),
}
WHAT = {
    "seq-write": "seq write 1M, 1 job QD 4",
    "seq-write-4z": "seq write 1M, 4 jobs (1 per zone) QD 1",
    "seq-read": "seq read 1M, 1 job QD 4",
}
APPEND = ("append-qd1", "append-qd8")
LABEL = {
    "nbd": "kernel NBD client (/dev/nbd0)",
    "ublk": "nbdzone attach (/dev/ublkbN)",
}


def parse(path):
    results = {}   # (measurement, config) -> {run: (MiB/s, note)}
    info = []
    with open(path) as f:
        for line in f:
            words = line.split()
            if len(words) < 2 or words[0] != "bench":
                continue
            if words[1] == "info":
                info.append(" ".join(words[2:]))
                continue
            meas, config, run, mibs = words[1:5]
            results.setdefault((meas, config), {})[int(run)] = (
                float(mibs), " ".join(words[5:]))
    return info, results


def detail(data):
    """Median of the notes' figures: in flight at the driver, CPU s/GiB."""
    inflight, guest, attach, nbdkit = [], [], [], []
    for _, note in data.values():
        m = re.search(r"in flight at most (\d+)", note)
        if m:
            inflight.append(int(m.group(1)))
        m = re.search(r"guest ([\d.]+), attach ([\d.]+), nbdkit ([\d.]+)", note)
        if m:
            guest.append(float(m.group(1)))
            attach.append(float(m.group(2)))
            nbdkit.append(float(m.group(3)))
    if not inflight or not guest:
        return ""
    return "%d in flight; CPU s/GiB: guest %.1f, attach %.1f, nbdkit %.1f" % (
        max(inflight), statistics.median(guest), statistics.median(attach),
        statistics.median(nbdkit))


def row(cols):
    print("| " + " | ".join(cols) + " |")


def main():
    info, results = parse(sys.argv[1])
    if not results:
        print("bench-attach: no results in %s" % sys.argv[1], file=sys.stderr)
        return 1
    for i in info:
        print(i)
    print()
    row(["measurement", "config", "runs (MiB/s)", "median MiB/s",
         "ratio, same runs", "target", "status", "at the driver (most), CPU (median)"])
    row(["---"] * 8)
    for meas, (base, cand, target) in PAIRS.items():
        b = results.get((meas, base), {})
        c = results.get((meas, cand), {})
        if not b or not c:
            continue
        runs = sorted(set(b) & set(c))
        ratios = [c[r][0] / b[r][0] for r in runs if b[r][0] > 0]
        for config, data in ((base, b), (cand, c)):
            row([WHAT[meas], LABEL[config],
                 ", ".join("%.1f" % data[r][0] for r in sorted(data)),
                 "%.1f" % statistics.median(v for v, _ in data.values()),
                 "", "", "", detail(data)])
        ratio = statistics.median(ratios)
        row([WHAT[meas], "ublk / kernel client",
             ", ".join("%.2f" % x for x in ratios), "",
             "%.2fx" % ratio, ">= %.1fx" % target,
             "MET" if ratio >= target else "MISSED", ""])
    qd1 = results.get((APPEND[0], "ublk"), {})
    qd8 = results.get((APPEND[1], "ublk"), {})
    if qd1 and qd8:
        for meas, data in ((APPEND[0], qd1), (APPEND[1], qd8)):
            notes = sorted(set(n.split(" (")[0] for _, n in data.values() if n))
            row(["zone append (btrfs) " + meas.split("-")[1].upper(),
                 "ublk" + (": " + "; ".join(notes) if notes else ""),
                 ", ".join("%.1f" % data[r][0] for r in sorted(data)),
                 "%.1f" % statistics.median(v for v, _ in data.values()),
                 "", "", "", ""])
        runs = sorted(set(qd1) & set(qd8))
        ratios = [qd8[r][0] / qd1[r][0] for r in runs if qd1[r][0] > 0]
        row(["zone append (btrfs)", "QD 8 / QD 1",
             ", ".join("%.2f" % x for x in ratios), "",
             "%.2fx" % statistics.median(ratios), "", "", ""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
