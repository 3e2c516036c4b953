# The write gate: a gap that is never filled fails after the timeout
# while other zones keep working; a reset while writes wait; spanning
# writes between sequential zones.
#
#   zbd-gate.py URI
#
# Export: size=32M zone-size=1M conventional-zones=1 reorder-timeout=2s
import errno
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import (check, connect, expect_error, pattern,  # noqa: E402
                         wp)
import nbd  # noqa: E402

M = 1024 * 1024
h = connect(sys.argv[1])
other = connect(sys.argv[1])


def wait_done(cookie, limit):
    """Poll until COOKIE completes; return None or the nbd.Error."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if h.aio_command_completed(cookie):
                return None
        except nbd.Error as e:
            return e
        h.poll(100)
    check(False, "request did not complete within %ss" % limit)


# ---- a gap never filled: EIO after ~2s; other zones unaffected
z1 = 1 * M
t0 = time.monotonic()
gap = h.aio_pwrite(pattern(z1 + 4096, 4096), z1 + 4096)
for i in range(20):                       # zone 2 keeps working meanwhile
    off = 2 * M + i * 4096
    other.pwrite(pattern(off, 4096), off)
busy = time.monotonic() - t0
check(busy < 1.5, "other zone writes took %.2fs while a gap waited" % busy)
check(wp(other, 2 * M, M) == 2 * M + 20 * 4096, "zone 2 WP while gap waits")
err = wait_done(gap, 10)
el = time.monotonic() - t0
check(err is not None and err.errnum == errno.EIO,
      "gap write: expected EIO, got %r" % err)
check(1.8 <= el < 6, "gap write failed after %.2fs, timeout is 2s" % el)
check(wp(h, z1, M) == z1, "failed gap write must not move the WP")

# ---- a gap filled in time: the waiting write proceeds
c1 = h.aio_pwrite(pattern(z1 + 8192, 4096), z1 + 8192)
c2 = h.aio_pwrite(pattern(z1 + 4096, 4096), z1 + 4096)
time.sleep(0.3)
other.pwrite(pattern(z1, 4096), z1)
check(wait_done(c2, 5) is None and wait_done(c1, 5) is None,
      "writes waiting for a gap must succeed once it is filled")
check(wp(h, z1, M) == z1 + 12288, "WP after gap filled")
check(h.pread(12288, z1) == pattern(z1, 12288), "gap-filled data")

# ---- reset while writes wait
z3, z4 = 3 * M, 4 * M
# (a) zone 3 empty, a write waits at +4K; reset; then the write at the
#     start arrives: the waiter proceeds under the new WP.
w1 = h.aio_pwrite(pattern(z3 + 4096, 4096, 9), z3 + 4096)
time.sleep(0.2)
other.trim(M, z3)
other.pwrite(pattern(z3, 4096, 9), z3)
check(wait_done(w1, 5) is None, "waiter after reset + fill must succeed")
check(h.pread(8192, z3) == pattern(z3, 8192, 9), "zone 3 data")
# (b) zone 4 written to +8K, a write waits at +12K+4K; reset moves the
#     WP back to the start: the waiter cannot proceed and times out.
other.pwrite(pattern(z4, 8192), z4)
w2 = h.aio_pwrite(pattern(z4 + 16384, 4096), z4 + 16384)
time.sleep(0.2)
other.trim(M, z4)
check(wp(other, z4, M) == z4, "reset while a write waits")
err = wait_done(w2, 10)
check(err is not None and err.errnum == errno.EIO,
      "waiter beyond the reset WP must fail with EIO, got %r" % err)
check(wp(h, z4, M) == z4, "zone 4 stays empty")

# ---- a write spanning sequential zones: split and gated in order
z5, z6 = 5 * M, 6 * M
other.pwrite(pattern(z5, M - 8192, 5), z5)
span = pattern(z6 - 8192, 16384, 6)
other.pwrite(span, z6 - 8192)
check(wp(h, z5, M) == z6 and wp(h, z6, M) == z6 + 8192, "span WPs")
check(h.pread(16384, z6 - 8192) == span, "span data")
# A span whose second part is ahead of the next zone's WP fails there
# after the first part landed.
other.pwrite(pattern(7 * M, M - 8192, 7), 7 * M)
other.pwrite(pattern(8 * M, 4096, 8), 8 * M)
expect_error(lambda: other.pwrite(bytes(16384), 8 * M - 8192), errno.EIO,
             "span whose second part is below the next zone's WP")
check(wp(h, 7 * M, M) == 8 * M, "first part of the span landed")

h.shutdown()
other.shutdown()
print("zbd-gate: all passed")
