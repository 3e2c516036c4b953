#!/usr/bin/env python3
# The table of make -C bench bench-rtt: reads the round-trip benchmark's
# result lines (vm/guest-bench-rtt.sh, "bench MEASUREMENT rtt-MS RUN
# MiB/s") from the VM's TAP file and prints, per measurement and RTT,
# the median throughput and the median of the same-run ratios against
# the same measurement at 0 ms; then the goals, each from same-run
# ratios; and, with --chart PNG, throughput against RTT (gnuplot).
#
#   rtt-table.py TAP-LOG [--chart PNG]
#
# Exits non-zero when the VM printed no results (the run failed).
import statistics
import subprocess
import sys
import tempfile

WHAT = {
    "zone1-qd1": "attach, 1 zone, QD 1",
    "zone1-qd16": "attach, 1 zone, QD 16",
    "zone4-qd4": "attach, 4 zones, QD 4 each",
    "btrfs": "attach, btrfs zoned (appends)",
    "nbd-qd1": "kernel NBD client, 1 zone, QD 1",
    "nbd-qd16": "kernel NBD client, 1 zone, QD 16",
}


def parse(path):
    results = {}   # measurement -> rtt -> run -> MiB/s
    info = []
    with open(path) as f:
        for line in f:
            words = line.split()
            if len(words) < 2 or words[0] != "bench":
                continue
            if words[1] == "info":
                info.append(" ".join(words[2:]))
                continue
            meas, rtt, run, mibs = words[1:5]
            rtt = float(rtt[len("rtt-"):])
            results.setdefault(meas, {}).setdefault(rtt, {})[int(run)] = float(mibs)
    return info, results


def ratios(a, b):
    """Same-run ratios a/b over the runs both have."""
    return [a[r] / b[r] for r in a if r in b and b[r] > 0]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def chart(results, rtts, png):
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as dat:
        for meas in WHAT:
            if meas not in results:
                continue
            dat.write(f'"{WHAT[meas]}"\n')
            for rtt in rtts:
                if rtt in results[meas]:
                    dat.write(f"{rtt} {med(list(results[meas][rtt].values()))}\n")
            dat.write("\n\n")
    n = sum(1 for m in WHAT if m in results)
    plot = ", ".join(f"'{dat.name}' index {i} with linespoints title columnheader(1)"
                     for i in range(n))
    script = f"""set terminal png size 800,600
set output '{png}'
set title 'Sequential writes across a network round trip (VM, TCG)'
set xlabel 'added round trip (ms, netem on a veth pair)'
set ylabel 'MiB/s (median of the runs)'
set key below
set grid
plot {plot}
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    args = sys.argv[1:]
    png = None
    if "--chart" in args:
        i = args.index("--chart")
        png = args[i + 1]
        del args[i:i + 2]
    info, results = parse(args[0])
    if not results:
        print(f"rtt-table: no results in {args[0]}", file=sys.stderr)
        return 1
    for line in info:
        print(line)
    rtts = sorted({r for m in results.values() for r in m})
    print()
    head = "".join(f"{('%g ms' % r):>16}" for r in rtts)
    print(f"{'MiB/s (x its 0 ms, same run)':<36}{head}")
    for meas, label in WHAT.items():
        if meas not in results:
            continue
        cells = ""
        base = results[meas].get(0.0, {})
        for rtt in rtts:
            runs = results[meas].get(rtt)
            if not runs:
                cells += f"{'-':>16}"
                continue
            cells += f"{med(list(runs.values())):>8.1f} ({med(ratios(runs, base)):.2f}x)"
        print(f"{label:<36}{cells}")
    print()
    goals = []
    if "btrfs" in results and 1.0 in results["btrfs"]:
        r = med(ratios(results["btrfs"][1.0], results["btrfs"].get(0.0, {})))
        goals.append(("btrfs on attach at 1 ms >= 0.8x its 0 ms", r, 0.8))
    # (candidate, baseline, what, target at 1 ms): same-run ratios at each RTT.
    pairs = [
        ("zone4-qd4", "zone1-qd1", "4 zones QD 4 each >= 3x one zone (QD 1)", 3.0),
        ("zone1-qd16", "zone1-qd1",
         "one zone through attach (zone write plugging), QD 16 against QD 1", None),
        ("nbd-qd16", "nbd-qd1",
         "one zone, kernel NBD client (no plugging), QD 16 against QD 1", None),
    ]
    for cand, base, what, target in pairs:
        for rtt in rtts:
            if rtt in results.get(cand, {}) and rtt in results.get(base, {}):
                goals.append((f"{what} at {rtt:g} ms",
                              med(ratios(results[cand][rtt], results[base][rtt])),
                              target if rtt == 1.0 else None))
    for what, r, target in goals:
        verdict = "" if target is None else ("  MET" if r >= target else "  MISSED")
        print(f"{what}: {r:.2f}x{verdict}")
    if png:
        chart(results, rtts, png)
        print(f"\nchart: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
