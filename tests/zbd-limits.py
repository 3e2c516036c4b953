# Open and active zone limits, as Linux null_blk applies them.
#
#   zbd-limits.py URI
#
# Export: size=16M zone-size=1M max-open-zones=2 max-active-zones=3
import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import (check, connect, expect_error, geometry,  # noqa
                         pattern, wp)

M = 1024 * 1024
h = connect(sys.argv[1])
g = geometry(h)
check(g["max-open"] == 2 and g["max-active"] == 3, "limits in description")

# Zones 0 and 1 open implicitly; zone 2 is a third open zone: one of
# the implicitly open zones is closed to make room (still active).
for z in (0, 1, 2):
    h.pwrite(pattern(z * M, 4096), z * M)
check(all(wp(h, z * M, M) == z * M + 4096 for z in (0, 1, 2)),
      "three zones written with max-open 2 (implicit close)")
# A fourth active zone exceeds max-active: ENOSPC, nothing written.
expect_error(lambda: h.pwrite(pattern(3 * M, 4096), 3 * M), errno.ENOSPC,
             "write opening a 4th active zone")
check(wp(h, 3 * M, M) == 3 * M, "refused write must not move the WP")
# Zone 0 was closed to open zone 2 (round robin from zone 0).  With
# every active slot taken, null_blk closes no open zone to reopen a
# closed one: ENOSPC, nothing written; the open zones take writes.
expect_error(lambda: h.pwrite(pattern(4096, 4096), 4096), errno.ENOSPC,
             "reopening a closed zone at the active limit")
check(wp(h, 0, M) == 4096, "refused reopen must not move the WP")
for z in (1, 2):
    h.pwrite(pattern(z * M + 4096, 4096), z * M + 4096)
# Finishing a zone releases its resources.
h.zero(M - 4096, 4096)
check(wp(h, 0, M) == M, "zone 0 finished")
h.pwrite(pattern(3 * M, 4096), 3 * M)
check(wp(h, 3 * M, M) == 3 * M + 4096, "write after finish freed a slot")
expect_error(lambda: h.pwrite(pattern(4 * M, 4096), 4 * M), errno.ENOSPC,
             "active limit again")
# Resetting a zone releases its resources too.
h.trim(M, M)
h.pwrite(pattern(4 * M, 4096), 4 * M)
check(wp(h, 4 * M, M) == 4 * M + 4096, "write after reset freed a slot")
# Zone 2 was closed to open zone 4, zones 3 and 4 are open.  Filling a
# zone to capacity makes it full and releases it.
h.pwrite(pattern(3 * M + 4096, M - 4096), 3 * M + 4096)
check(wp(h, 3 * M, M) == 4 * M, "zone 3 full")
h.pwrite(pattern(5 * M, 4096), 5 * M)
# Zones 2, 4, 5 active: finishing an empty zone would make a fourth
# active for a moment on a real device: ENOSPC, the zone stays empty.
expect_error(lambda: h.zero(M, 6 * M), errno.ENOSPC,
             "finish of an empty zone at the active limit")
check(wp(h, 6 * M, M) == 6 * M, "refused finish must not move the WP")
h.shutdown()
print("zbd-limits: all passed")
