#!/usr/bin/env bash
# The NBD stream after the filter carries plaintext, so it is served with
# TLS: nbdkit --tls=require with a PSK file serves the filter to a libnbd
# client holding the key; a client without TLS, or with the wrong key,
# is refused.
source "$srcdir/cryptinline-lib.sh"
requires psktool --version

make_key "$tmp/key" 64
psktool -u alice -p "$tmp/keys.psk" >/dev/null
psktool -u alice -p "$tmp/wrong.psk" >/dev/null

cat > "$tmp/tls.py" <<'PY'
import errno
import sys
import nbd

sock, psk, wrong = sys.argv[1:4]

def connect(tls, pskfile):
    h = nbd.NBD()
    h.set_tls(tls)
    if tls != nbd.TLS_DISABLE:
        h.set_tls_psk_file(pskfile)
        h.set_tls_username("alice")
    h.connect_unix(sock)
    return h

data = b"over TLS, encrypted at rest" + bytes(4096 - 27)


def right_client():
    """The client holding the key connects, over TLS, and reads back."""
    h = connect(nbd.TLS_REQUIRE, psk)
    assert h.get_tls_negotiated(), "TLS was not negotiated"
    assert h.pread(4096, 8192) == data, "read back over TLS differs"
    h.shutdown()


h = connect(nbd.TLS_REQUIRE, psk)
assert h.get_tls_negotiated(), "TLS was not negotiated"
h.pwrite(data, 8192)
assert h.pread(4096, 8192) == data, "read back over TLS differs"
h.shutdown()

# Each refusal must be the server refusing for that reason (not a dead
# server or a wrong socket, which fail differently), and the server
# must still serve the right client afterwards.
for what, tls, pskfile, errnum, message in [
        ("plaintext client", nbd.TLS_DISABLE, None, errno.ENOTSUP,
         "server requires TLS encryption first"),
        ("wrong PSK", nbd.TLS_REQUIRE, wrong, None, "gnutls_handshake: ")]:
    try:
        h = connect(tls, pskfile)
        h.pread(4096, 8192)
    except nbd.Error as e:
        if message not in (e.string or "") or \
           (errnum is not None and e.errnum != errnum):
            sys.exit("FAIL: %s: expected a refusal (%s%s), got: %s (errno %s)"
                     % (what, message, errnum and ", " +
                        errno.errorcode[errnum] or "", e.string, e.errnum))
        print("refused as expected (%s): %s" % (what, e))
        right_client()
        print("the right client still connects after the %s" % what)
        continue
    sys.exit("FAIL: the server served a %s" % what)
PY

for mode in $CRYPT_MODES; do
    echo "tls: mode=$mode"
    crypt_nbdkit -U - --tls=require --tls-psk="$tmp/keys.psk" \
        --filter=cryptinline memory 1M crypt-key-file="$tmp/key" \
        crypt-mode=$mode \
        --run "$PYTHON3 $tmp/tls.py \"\$unixsocket\" $tmp/keys.psk $tmp/wrong.psk" ||
        fail "TLS, mode=$mode"
done
echo "TLS checks passed"
