# The write gate on a slow device: its timeout measures lack of
# progress, not queueing.
#
#   zbd-slow.py URI DELAY_MS TIMEOUT_MS CASE
#
# Export: size=8M zone-size=1M conventional-zones=1, every write delayed
# DELAY_MS at the device (-D zbd.write_delay_ms), reorder-timeout of
# TIMEOUT_MS.  CASE:
#   inorder  three in-order writes pipelined into one zone all succeed,
#            though together they take longer than the timeout;
#   gap      behind a slow write, a write beyond a gap nobody fills fails
#            with EIO one timeout after the WP last moved, not before.
import errno
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zbd_helpers import check, connect, pattern, wp  # noqa: E402
import nbd  # noqa: E402

M = 1024 * 1024
B = 4096
uri, delay, timeout, case = (sys.argv[1], int(sys.argv[2]) / 1000,
                             int(sys.argv[3]) / 1000, sys.argv[4])
h = connect(uri)


def wait_all(cookies, limit):
    """Poll until every cookie completes; return {cookie: (error, time)}."""
    done = {}
    t0 = time.monotonic()
    while len(done) < len(cookies):
        check(time.monotonic() - t0 < limit,
              "requests did not complete within %ss" % limit)
        for c in cookies:
            if c in done:
                continue
            try:
                if h.aio_command_completed(c):
                    done[c] = (None, time.monotonic() - t0)
            except nbd.Error as e:
                done[c] = (e, time.monotonic() - t0)
        h.poll(50)
    return done


if case == "inorder":
    z = 1 * M
    t0 = time.monotonic()
    cookies = [h.aio_pwrite(pattern(z + i * B, B), z + i * B)
               for i in range(3)]
    done = wait_all(cookies, 30)
    el = time.monotonic() - t0
    for i, c in enumerate(cookies):
        err, t = done[c]
        check(err is None, "in-order write %d (at %d) failed after %.2fs: %s"
              % (i, z + i * B, t, err))
    check(el >= 3 * delay * 0.95,
          "three writes took %.2fs: the %.1fs delay was not applied"
          % (el, delay))
    check(el > timeout, "the writes took %.2fs, not longer than the "
          "timeout: the test proves nothing" % el)
    check(wp(h, z, M) == z + 3 * B, "WP after three in-order writes")
    check(h.pread(3 * B, z) == b"".join(pattern(z + i * B, B)
                                        for i in range(3)),
          "data read back")
    print("inorder: 3 writes of %.1fs each, timeout %.1fs: all succeeded "
          "in %.2fs" % (delay, timeout, el))
elif case == "gap":
    z = 2 * M
    t0 = time.monotonic()
    first = h.aio_pwrite(pattern(z, B), z)
    gap = h.aio_pwrite(pattern(z + 2 * B, B), z + 2 * B)
    done = wait_all([first, gap], 30)
    check(done[first][0] is None, "write at the WP failed: %s"
          % (done[first][0],))
    err, t = done[gap]
    check(err is not None and err.errnum == errno.EIO,
          "write beyond a gap: expected EIO, got %r" % (err,))
    # The WP last moved when the first write completed (after DELAY);
    # the gap write may fail only one timeout after that.
    check(t >= delay + timeout * 0.95,
          "write beyond the gap failed after %.2fs, before the WP had "
          "stood still for the %.1fs timeout (it moved at %.1fs)"
          % (t, timeout, delay))
    check(t < delay + timeout + 2,
          "write beyond the gap failed only after %.2fs" % t)
    check(wp(h, z, M) == z + B, "WP after the gap write failed")
    print("gap: failed with EIO after %.2fs (WP moved at %.1fs, timeout "
          "%.1fs)" % (t, delay, timeout))
else:
    check(False, "unknown case " + case)
