# Check the order of the image's system calls recorded by strace:
# the zone table is only written after the data is synced, and is
# synced before the flush, reset or finish is acknowledged.
#
#   zbd-flush-order.py TRACE DATA-OFFSET
import re
import sys

trace, data_offset = sys.argv[1], int(sys.argv[2])
events = []
for line in open(trace):
    m = re.search(r"(pwrite64|fdatasync|fallocate)\((\d+)(.*)\)\s+=\s+(-?\d+)",
                  line)
    if not m:
        continue
    call, args = m.group(1), m.group(3)
    if call == "fdatasync":
        events.append("S")
    elif call == "fallocate":
        events.append("P")                 # discard (punch hole)
    else:
        offset = int(args.rsplit(",", 1)[1])
        events.append("D" if offset >= data_offset else "T")

seq = "".join(events)
print("events:", seq)
if seq.count("T") < 4:
    sys.exit("FAIL: expected at least 4 table writes, saw %r" % seq)
for i, e in enumerate(seq):
    if e != "T":
        continue
    if i == 0 or seq[i - 1] != "S":
        sys.exit("FAIL: table write %d not preceded by a data sync: %r" %
                 (i, seq))
    if i + 1 >= len(seq) or seq[i + 1] != "S":
        sys.exit("FAIL: table write %d not followed by a sync: %r" % (i, seq))
# Data writes and discards are covered by a sync before the next table.
last_t = seq.rfind("T")
for i, e in enumerate(seq[:last_t]):
    if e in "DP" and "S" not in seq[i:seq.index("T", i)]:
        sys.exit("FAIL: data event %d reaches a table write unsynced: %r" %
                 (i, seq))
print("flush order: data synced before every table write, table synced after")
