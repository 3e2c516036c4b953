# Driven by test-zbd-dir.sh: one server (dir=DIR) for every zone image
# in DIR.  Each export is its own drive: its own data and WPs, shared
# by every connection to it; a drive that cannot be opened, or whose
# sync failed, affects that export alone.
#   zbd-dir.py SOCKET PHASE
import errno
import os
import sys
import time

import nbd

sys.path.insert(0, os.environ["srcdir"])
from zbd_helpers import check, connect, expect_error, fail, geometry, \
    pattern, wp  # noqa: E402

sock, phase = sys.argv[1], sys.argv[2]
MiB = 1024 * 1024


def uri(name):
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def listing():
    """{name: description} as a client listing the exports sees it."""
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri("nbd+unix://?socket=%s" % sock)
    names = []
    h.opt_list(lambda name, desc: names.append((name, desc)) or 0)
    h.opt_abort()
    return dict(names)


def server_log():
    """What the server has logged so far (its stderr, ZBD_LOG)."""
    with open(os.environ["ZBD_LOG"]) as f:
        return f.read()


def write_zone(name, zone, seed, length):
    h = connect(uri(name))
    h.pwrite(pattern(zone * MiB, length, seed), zone * MiB)
    h.flush()
    return h


def check_shared_gate(h2, h1, start, what):
    """H2 is served the zone table and gate of H1: it sees the WP of
    the zone at START, a write below it is refused, one at it lands and
    H1 sees it."""
    at = wp(h1, start, MiB)
    check(wp(h2, start, MiB) == at, "%s does not see the WP %d" % (what, at))
    expect_error(lambda: h2.pwrite(b"\1" * 4096, start), errno.EIO,
                 "write below the WP through " + what)
    h2.pwrite(pattern(at, 4096, 1), at)
    check(wp(h1, start, MiB) == at + 4096,
          "the write through %s is not seen by the first" % what)


if phase == "serve":
    got = listing()
    check(sorted(got) == ["a", "b", "c", "link-to-a"],
          "the exports are %s, not a, b, c and link-to-a (no dot file, "
          "directory, non-image file or dangling link)" % sorted(got))
    for name, desc in got.items():
        check("zoned=host-managed" in desc and "disk-id=image-" in desc,
              "export %s: description %r is not its zoned geometry"
              % (name, desc))
    check(got["a"] == got["link-to-a"],
          "a link to a is described as another disk: %r, %r"
          % (got["a"], got["link-to-a"]))
    check(got["a"] != got["b"], "a and b have the same description")

    # Own data and WPs per export; two connections to one export share
    # its zone table.
    ha = write_zone("a", 1, 1, 64 * 1024)
    hb = write_zone("b", 1, 2, 192 * 1024)
    ha2 = connect(uri("a"))
    check(wp(ha2, 1 * MiB, MiB) == 1 * MiB + 64 * 1024,
          "a second connection to a sees WP %d" % wp(ha2, 1 * MiB, MiB))
    check(wp(hb, 1 * MiB, MiB) == 1 * MiB + 192 * 1024,
          "b's WP is %d" % wp(hb, 1 * MiB, MiB))
    check(ha2.pread(64 * 1024, MiB) == pattern(MiB, 64 * 1024, 1),
          "a does not read back what was written to it")
    check(hb.pread(192 * 1024, MiB) == pattern(MiB, 192 * 1024, 2),
          "b does not read back what was written to it")
    # The gate is shared: a write below the WP through the second
    # connection is refused.
    check_shared_gate(ha2, ha, MiB, "a second connection to a")
    ha.flush()
    c = connect(uri("c"))
    check(wp(c, 1 * MiB, MiB) == 1 * MiB, "c was written to")
    # Two names of one medium (as /dev/disk/by-id gives every disk
    # several) are one drive, served under both at once: one zone
    # table, one gate.  It was refused, as if another server held it.
    hl = connect(uri("link-to-a"))
    check_shared_gate(hl, ha, MiB, "link-to-a while a is connected")
    got = listing()
    check(got["a"] == got["link-to-a"] and
          not got["a"].startswith("unavailable"),
          "while both are in use, a and link-to-a are listed as %r, %r"
          % (got["a"], got["link-to-a"]))
    for h in (ha, hb, ha2, c, hl):
        h.shutdown()

    # A name that is not an export: refused, the log names the exports.
    for bad in ("nope", "", ".hidden", "../a", "sub"):
        h = nbd.NBD()
        try:
            h.connect_uri(uri(bad))
            fail("export %r was served" % bad)
        except nbd.Error:
            pass

elif phase == "added":
    # A drive added while the server runs is listed and served.
    got = listing()
    check("d" in got, "a drive added later is not listed: %s" % sorted(got))
    h = write_zone("d", 1, 4, 4096)
    check(wp(h, MiB, MiB) == MiB + 4096, "d's WP is wrong")
    h.shutdown()

elif phase == "restart":
    # After a restart: what each export was acknowledged is there.
    ha = connect(uri("a"))
    hb = connect(uri("b"))
    check(wp(ha, MiB, MiB) == MiB + 72 * 1024, "a's WP after a restart")
    check(wp(hb, MiB, MiB) == MiB + 192 * 1024, "b's WP after a restart")
    check(ha.pread(72 * 1024, MiB) == pattern(MiB, 72 * 1024, 1),
          "a's data after a restart")

elif phase == "held":
    # b is held by another server: listed as unavailable, a connection
    # to it refused, the others go on.
    got = listing()
    check(got.get("b", "").startswith("unavailable"),
          "b, held by another server, is listed as %r" % got.get("b"))
    h = nbd.NBD()
    try:
        h.connect_uri(uri("b"))
        fail("b was served while another server holds it")
    except nbd.Error:
        pass
    ha = write_zone("a", 2, 5, 4096)
    check(ha.pread(4096, 2 * MiB) == pattern(2 * MiB, 4096, 5),
          "a stopped working while b could not be opened")

elif phase == "sync-fail":
    # The first sync fails (on a): a's writes fail from then on, c's
    # go on.
    ha = connect(uri("a"))
    ha.pwrite(pattern(3 * MiB, 4096, 6), 3 * MiB)
    expect_error(ha.flush, errno.EIO, "a's flush whose sync failed")
    expect_error(lambda: ha.pwrite(b"\0" * 4096, 3 * MiB + 4096), errno.EIO,
                 "a write to a after its sync failed")
    hc = write_zone("c", 3, 7, 4096)
    check(hc.pread(4096, 3 * MiB) == pattern(3 * MiB, 4096, 7),
          "c stopped working after a's sync failed")
    check(ha.pread(4096, 3 * MiB) == pattern(3 * MiB, 4096, 6),
          "a's reads stopped after its sync failed")
    # The latch lasts until nbdkit restarts, not until a's last
    # connection closes: a reopened drive would read back WPs the failed
    # sync may have lost, and a later flush would call them durable.
    # The reconnection comes at once, while the drive may still be
    # closing, and is served (not refused as held by another server).
    ha.shutdown()
    ha = connect(uri("a"))
    expect_error(lambda: ha.pwrite(b"\0" * 4096, 3 * MiB + 4096), errno.EIO,
                 "a write to a reopened after its sync failed")
    expect_error(ha.flush, errno.EIO, "a flush of a reopened after its sync failed")

elif phase == "closing":
    # Closing a takes 1.5 s more (-D zbd.close_delay_ms): a connection
    # that arrives meanwhile waits for the close and is served the
    # drive as saved; it was refused, the image still locked by the
    # drive closing, as if another server held it.
    ha = write_zone("a", 4, 8, 4096)
    ha.flush()
    ha.shutdown()
    # Connect once the server has begun to close a (its debug log
    # says so): before that, the new connection would simply share
    # the drive still open.
    deadline = time.monotonic() + 30
    while "zbd: a: closing the drive" not in server_log():
        check(time.monotonic() < deadline, "a was not closed after its "
              "last connection went")
        time.sleep(0.01)
    began = time.monotonic()
    ha = connect(uri("a"))
    waited = time.monotonic() - began
    check(waited > 1.0, "the connection did not meet the drive closing "
          "(it took %.2f s)" % waited)
    check(wp(ha, 4 * MiB, MiB) == 4 * MiB + 4096,
          "a's WP after it was closed and opened again")
    check(ha.pread(4096, 4 * MiB) == pattern(4 * MiB, 4096, 8),
          "a's data after it was closed and opened again")

else:
    fail("unknown phase " + phase)
print("zbd-dir.py %s: ok" % phase)
