# The documented limit of the ordering guarantee: on one connection,
# out-of-order writes beyond nbdkit's --threads time out.
#
#   zbd-threads.py URI      (nbdkit --threads=2, reorder-timeout=1s)
import errno
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import check, connect, pattern, wp  # noqa: E402
import nbd  # noqa: E402

M = 1024 * 1024
h = connect(sys.argv[1])
z = 1 * M
# Four writes in reverse order: the first two occupy both threads,
# waiting for a gap that the last two (unread, queued behind them)
# would fill.
offsets = [z + 12288, z + 8192, z + 4096, z]
cookies = [h.aio_pwrite(pattern(o, 4096), o) for o in offsets]
results = {}
end = time.monotonic() + 20
while len(results) < 4 and time.monotonic() < end:
    h.poll(100)
    for o, c in zip(offsets, cookies):
        if o in results:
            continue
        try:
            if h.aio_command_completed(c):
                results[o] = 0
        except nbd.Error as e:
            results[o] = e.errnum
check(len(results) == 4, "requests did not complete: %r" % results)
check(results[z + 12288] == errno.EIO and results[z + 8192] == errno.EIO,
      "writes holding the only threads must time out: %r" % results)
check(results[z + 4096] == 0 and results[z] == 0,
      "the writes read after the timeout must succeed: %r" % results)
check(wp(h, z, M) == z + 8192, "WP after the threads-limit scenario")
# The same four writes in order on one connection all succeed.
base = 2 * M
cookies = [h.aio_pwrite(pattern(base + i * 4096, 4096), base + i * 4096)
           for i in range(32)]
while h.aio_in_flight() > 0:
    h.poll(1000)
for c in cookies:
    check(h.aio_command_completed(c), "in-order pipelined write")
check(wp(h, base, M) == base + 32 * 4096, "32 in-order writes, 2 threads")
print("zbd-threads: out-of-order beyond --threads times out, in order does not")
