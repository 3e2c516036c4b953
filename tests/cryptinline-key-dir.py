# Driven by test-cryptinline-key-dir.sh: crypt-key-dir gives every
# export of dir= its own key.
#   cryptinline-key-dir.py write SOCKET   through the filter: a and b
#       written, read back, their key-checks printed; c and d refused
#       while a goes on
#   cryptinline-key-dir.py raw SOCKET KEYDIR [SECTOR-A SECTOR-B]
#       without the filter: the ciphertext on a and b decrypts with their
#       own key (KEYDIR/a, KEYDIR/b) only, in crypt sectors of SECTOR-A
#       and SECTOR-B bytes (4096)
import os
import sys

import nbd

sys.path.insert(0, os.environ["srcdir"])
from cryptinline_check import xts  # noqa: E402
from zbd_helpers import check, connect, fail, pattern  # noqa: E402

MiB = 1024 * 1024
LEN = 64 * 1024
cmd, sock = sys.argv[1], sys.argv[2]


def uri(name):
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def key_check(h):
    words = [w for w in h.get_export_description().split()
             if w.startswith("key-check=")]
    check(len(words) == 1, "no key-check= in %r" % h.get_export_description())
    return words[0].split("=", 1)[1]


if cmd == "write":
    ha, hb = connect(uri("a")), connect(uri("b"))
    ha.pwrite(pattern(MiB, LEN, 1), MiB)
    hb.pwrite(pattern(MiB, LEN, 2), MiB)
    for h in (ha, hb):
        h.flush()
    check(ha.pread(LEN, MiB) == pattern(MiB, LEN, 1), "a does not read back")
    check(hb.pread(LEN, MiB) == pattern(MiB, LEN, 2), "b does not read back")
    check(key_check(ha) != key_check(hb), "a and b have the same key-check")
    for bad in ("c", "d"):
        h = nbd.NBD()
        try:
            h.connect_uri(uri(bad))
            fail("export %s was served without a usable key" % bad)
        except nbd.Error:
            pass
    check(ha.pread(LEN, MiB) == pattern(MiB, LEN, 1),
          "a stopped working after c and d were refused")
    print("key-check a=%s b=%s" % (key_check(ha), key_check(hb)))
elif cmd == "raw":
    keydir = sys.argv[3]
    sector = dict(zip(("a", "b"), map(int, sys.argv[4:6] or (4096, 4096))))
    keys = {}
    for n in ("a", "b"):
        with open(os.path.join(keydir, n), "rb") as f:
            keys[n] = f.read()
    for n, seed in (("a", 1), ("b", 2)):
        h = connect(uri(n))
        raw = h.pread(LEN, MiB)
        check(raw != pattern(MiB, LEN, seed), "%s holds plaintext" % n)
        other = "b" if n == "a" else "a"
        check(xts(keys[n], sector[n], 0, False, MiB, False, raw) ==
              pattern(MiB, LEN, seed),
              "%s does not decrypt with its own key" % n)
        check(xts(keys[other][:len(keys[n])] if len(keys[other]) >= len(keys[n])
                  else keys[other] * 2, sector[n], 0, False, MiB, False,
                  raw) !=
              pattern(MiB, LEN, seed), "%s decrypts with %s's key" % (n, other))
else:
    fail("unknown command " + cmd)
print("cryptinline-key-dir.py %s: ok" % cmd)
