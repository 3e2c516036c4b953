# The open limit with a write in flight in every open zone.
#
#   zbd-limits-busy.py URI
#
# Export: size=16M zone-size=1M max-open-zones=2, every write taking
# 500 ms at the device (-D zbd.write_delay_ms=500).  A drive closes an
# implicitly open zone by its condition alone, write in flight or not,
# so writes into three zones at once all succeed; the plugin used to
# refuse the third with ENOSPC.
import os
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import check, connect, pattern, wp  # noqa

M = 1024 * 1024
h = connect(sys.argv[1])
errors = {}


def done(z):
    def cb(error):
        errors[z] = error.value if hasattr(error, "value") else error
        return 1
    return cb


# Three zones written at once, then a second block in each (a zone
# closed while its write was in flight is opened again by the next).
for block in (0, 1):
    errors.clear()
    for z in (0, 1, 2):
        off = z * M + block * 4096
        h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(pattern(off, 4096))),
                     off, completion=done(z))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    check(all(errors.get(z) == 0 for z in (0, 1, 2)),
          "writes in flight in three zones with max-open 2: errors %s"
          % errors)
for z in (0, 1, 2):
    check(wp(h, z * M, M) == z * M + 8192, "zone %d WP" % z)
    check(h.pread(8192, z * M) == pattern(z * M, 8192),
          "zone %d reads back" % z)
h.shutdown()
print("zbd-limits-busy: all passed")
