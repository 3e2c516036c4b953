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

h = connect(nbd.TLS_REQUIRE, psk)
assert h.get_tls_negotiated(), "TLS was not negotiated"
data = b"over TLS, encrypted at rest" + bytes(4096 - 27)
h.pwrite(data, 8192)
assert h.pread(4096, 8192) == data, "read back over TLS differs"
h.shutdown()

for what, tls, pskfile in [("plaintext client", nbd.TLS_DISABLE, None),
                           ("wrong PSK", nbd.TLS_REQUIRE, wrong)]:
    try:
        h = connect(tls, pskfile)
        h.pread(4096, 8192)
    except nbd.Error as e:
        print("refused as expected (%s): %s" % (what, e))
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
