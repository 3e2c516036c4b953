#!/usr/bin/env bash
# What a client that reconnects compares (nbdzone attach --reconnect):
# the plugin's disk-id and the filter's key-check in the export
# description.
#   - an image keeps its disk-id across restarts, and a copy of it has
#     the same one (the write pointers tell an old copy apart), a new
#     image has another;
#   - memory has another disk-id at every start (its data dies with it);
#   - key-check is HMAC-SHA256 under the XTS key of the documented text,
#     computed here independently; it changes with the key and with the
#     format (sector size, IV offset), not with a restart, and without
#     the filter there is none.
source "$srcdir/functions.sh"
requires "$PYTHON3" --version
requires nbdkit --version
requires nbdinfo --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
geom="size=8M zone-size=1M"
head -c 64 /dev/urandom > "$tmp/key"
head -c 64 /dev/urandom > "$tmp/key2"

# word KEY NBDKIT-ARGS...: the value of KEY= in the description ("" if none).
word ()
{
    local key="$1"; shift
    nbdkit -U - "$@" --run 'nbdinfo --json "$uri"' |
        "$PYTHON3" -c '
import json, sys
d = json.load(sys.stdin)["exports"][0].get("description", "")
v = [w.split("=", 1)[1] for w in d.split() if w.startswith(sys.argv[1] + "=")]
print(v[0] if v else "")' "$key"
}

# Images.
img="$tmp/img"
a="$(word disk-id zbd emulate="$img" $geom)"
echo "new image: disk-id=$a"
[[ $a =~ ^image-[0-9a-f]{16}$ ]] || fail "an image's disk-id is \"$a\""
b="$(word disk-id zbd emulate="$img")"
[ "$a" = "$b" ] || fail "the image's disk-id changed across a restart: $a, then $b"
cp "$img" "$tmp/copy"
c="$(word disk-id zbd emulate="$tmp/copy")"
[ "$a" = "$c" ] || fail "a copy of the image has another disk-id: $c, not $a"
d="$(word disk-id zbd emulate="$tmp/img2" $geom)"
[ "$d" != "$a" ] || fail "two new images have the same disk-id $a"

# An image made before images had an id (zero at offset 88, which the
# header's checksum covers): known by its file instead.
"$PYTHON3" - "$tmp/copy" <<'EOF'
import struct, sys, zlib
with open(sys.argv[1], "r+b") as f:
    h = bytearray(f.read(4096))
    h[88:96] = bytes(8)
    h[96:100] = struct.pack("<I", zlib.crc32(bytes(h[:96])))
    f.seek(0)
    f.write(h)
EOF
e="$(word disk-id zbd emulate="$tmp/copy")"
echo "image without an id: disk-id=$e"
[[ $e =~ ^image-file-[0-9a-f]+-[0-9a-f]+$ ]] || fail "an old image's disk-id is \"$e\""

# Memory.
m1="$(word disk-id zbd emulate=memory $geom)"
m2="$(word disk-id zbd emulate=memory $geom)"
echo "memory: disk-id=$m1, then $m2"
[[ $m1 =~ ^memory-[0-9a-f]{16}$ ]] || fail "memory's disk-id is \"$m1\""
[ "$m1" != "$m2" ] || fail "two memory servers have the same disk-id"

# key-check.
expected ()
{
    "$PYTHON3" - "$@" <<'EOF'
import hmac, hashlib, sys
key = open(sys.argv[1], "rb").read()
text = ("nbdkit-cryptinline key-check 1: aes-xts-plain64 key-bits=%d "
        "sector-size=%s iv-offset=%s iv-large-sectors=%s"
        % (len(key) * 8, sys.argv[2], sys.argv[3], sys.argv[4]))
print(hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:32])
EOF
}
crypt () { word key-check --filter=cryptinline zbd emulate=memory $geom "$@"; }

k="$(crypt crypt-key-file="$tmp/key")"
echo "key-check=$k"
[ "$k" = "$(expected "$tmp/key" 4096 0 0)" ] ||
    fail "key-check $k is not HMAC-SHA256 of the documented text: $(expected "$tmp/key" 4096 0 0)"
[ "$(crypt crypt-key-file="$tmp/key")" = "$k" ] || fail "key-check changed across a restart"
k2="$(crypt crypt-key-file="$tmp/key2")"
[ "$k2" != "$k" ] || fail "another key has the same key-check"
[ "$k2" = "$(expected "$tmp/key2" 4096 0 0)" ] || fail "key-check of the second key is wrong"
k3="$(crypt crypt-key-file="$tmp/key" crypt-sector-size=512)"
[ "$k3" = "$(expected "$tmp/key" 512 0 0)" ] && [ "$k3" != "$k" ] ||
    fail "key-check does not follow the sector size: $k3"
k4="$(crypt crypt-key-file="$tmp/key" crypt-iv-offset=8)"
[ "$k4" = "$(expected "$tmp/key" 4096 8 0)" ] && [ "$k4" != "$k" ] ||
    fail "key-check does not follow the IV offset: $k4"
# The key itself never shows.
desc="$(nbdkit -U - --filter=cryptinline zbd emulate=memory $geom \
        crypt-key-file="$tmp/key" --run 'nbdinfo --json "$uri"')"
hexkey="$(od -An -tx1 -v "$tmp/key" | tr -d ' \n')"
! grep -qi "${hexkey:0:16}" <<<"$desc" || fail "key bytes in the description"
[ -z "$(word key-check zbd emulate=memory $geom)" ] ||
    fail "a key-check without the filter"
echo "ok"
