#!/usr/bin/env bash
# crypt-key-dir=KEYDIR with the zbd plugin's dir=: each export is
# encrypted with its own raw key, KEYDIR/NAME (dm-crypt's format, each
# checked here against its own key and no other); its key-check is the
# one a single-drive server with that key shows; an export whose key is
# missing or has the wrong size is refused with a line naming the export
# and the file, while the others go on; a key is read by the first
# connection to its export and dropped after the last; with
# crypt-file-prefix=P the key of NAME is KEYDIR/PNAME.
source "$srcdir/cryptinline-lib.sh"

d="$tmp/drives" k="$tmp/keys"
mkdir "$d" "$k"
make_zone_images "$d" a b c d
make_key "$k/a" 64
make_key "$k/b" 32
head -c 10 /dev/urandom > "$k/d"
serve ()
{
    crypt_nbdkit -U - -v --filter=cryptinline zbd dir="$d" crypt-key-dir="$k" \
        "$@"
}

serve --run "\"$PYTHON3\" \"$srcdir/cryptinline-key-dir.py\" write \"\$unixsocket\"" \
    >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err"; fail "crypt-key-dir: serving"; }
cat "$tmp/out"
grep -q "export \"c\": crypt-key-dir key $k/c cannot be read: No such file or directory" "$tmp/err" ||
    { cat "$tmp/err"; fail "no line naming c's missing key"; }
grep -q "export \"d\": crypt-key-dir key $k/d is 10 bytes: a raw key must be exactly 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS)" "$tmp/err" ||
    { cat "$tmp/err"; fail "no line naming d's short key"; }
# Neither c nor d was opened below: no key, no drive.
if grep -q 'zbd: [cd]: file backend' "$tmp/err"; then
    fail "a drive without a key was opened"
fi
# The key-checks are those of the keys: a single-drive server with the
# same key shows the same one.
# key_check_of N: export N's key-check= as the write phase printed it.
key_check_of () { sed -n "s/^key-check .*\b$1=\([0-9a-f]*\).*/\1/p" "$tmp/out"; }
# served_key_check EXPORT PARAMS...: the key-check= the filter serves
# EXPORT with (the default export for ""), given PARAMS.
served_key_check ()
{
    local name="$1"; shift
    crypt_nbdkit -U - --filter=cryptinline zbd "$@" \
        --run "nbdinfo --json \"nbd+unix:///$name?socket=\$unixsocket\"" |
        "$PYTHON3" -c 'import json, sys
d = json.load(sys.stdin)["exports"][0]["description"]
print([w for w in d.split() if w.startswith("key-check=")][0][10:])'
}
for n in a b; do
    want="$(key_check_of $n)"
    one="$(served_key_check "" emulate="$d/$n" crypt-key-file="$k/$n")"
    [ -n "$want" ] && [ "$want" = "$one" ] ||
        fail "export $n's key-check \"$want\" is not the one of crypt-key-file=$k/$n ($one)"
done
# Two connections to a at once read its key once; a connection after
# both closed reads it again (it was dropped).
loads="$(grep -c "export \"a\": key from $k/a: AES-256-XTS" "$tmp/err")"
[ "$loads" -eq 1 ] || { cat "$tmp/err"; fail "a's key read $loads times by connections open together"; }
serve --run 'nbdinfo "nbd+unix:///a?socket=$unixsocket" >/dev/null &&
             nbdinfo "nbd+unix:///a?socket=$unixsocket" >/dev/null' 2>"$tmp/err" ||
    { cat "$tmp/err"; fail "crypt-key-dir: two connections in turn"; }
loads="$(grep -c "export \"a\": key from $k/a: AES-256-XTS" "$tmp/err")"
[ "$loads" -ge 2 ] || { cat "$tmp/err"; fail "a's key kept after its last connection closed ($loads reads)"; }

# crypt-file-prefix: the same keys under the names systemd gives the
# credentials of a directory (LoadCredential=key:DIR gives key_NAME).
kp="$tmp/prefixed"
mkdir "$kp"
cp "$k/a" "$kp/key_a"
cp "$k/b" "$kp/key_b"
cp "$k/a" "$kp/b"       # an unprefixed file is not b's key
for n in a b; do
    want="$(key_check_of $n)"
    got="$(served_key_check $n dir="$d" crypt-key-dir="$kp" crypt-file-prefix=key_)"
    [ -n "$want" ] && [ "$want" = "$got" ] ||
        fail "crypt-file-prefix=key_: export $n's key-check \"$got\" is not that of $kp/key_$n ($want)"
done
crypt_nbdkit -U - --filter=cryptinline zbd dir="$d" crypt-key-dir="$kp" \
    crypt-file-prefix=key_ \
    --run 'nbdinfo "nbd+unix:///c?socket=$unixsocket"' 2>"$tmp/err" &&
    fail "crypt-file-prefix=key_: c served with no key_c"
grep -q "export \"c\": crypt-key-dir key $kp/key_c cannot be read: No such file or directory" "$tmp/err" ||
    { cat "$tmp/err"; fail "crypt-file-prefix: no line naming key_c"; }

# What is on the drives: each decrypts with its own key only.
nbdkit -U - zbd dir="$d" --run "\"$PYTHON3\" \"$srcdir/cryptinline-key-dir.py\" raw \"\$unixsocket\" \"$k\"" ||
    fail "crypt-key-dir: the ciphertext"

# Refusals at start.
refused_dir "$d" "crypt-key-file given, but a key was already given by crypt-key-dir" \
    crypt-key-dir="$k" crypt-key-file="$k/a"
refused_dir "$d" "crypt-key-size cannot be used with crypt-key-dir" \
    crypt-key-dir="$k" crypt-key-size=256
refused_dir "$d" "crypt-key-dir=$k/a: not a directory" crypt-key-dir="$k/a"
refused_dir "$d" "crypt-key-dir=$tmp/none: No such file or directory" crypt-key-dir="$tmp/none"
refused_dir "$d" "crypt-file-prefix=x/: a prefix of file names in crypt-key-dir or crypt-header-dir cannot hold a slash" \
    crypt-key-dir="$k" crypt-file-prefix=x/
refused_dir "$d" "crypt-file-prefix=key_ names files in crypt-key-dir or crypt-header-dir, and neither is given" \
    crypt-key-file="$k/a" crypt-file-prefix=key_
echo "crypt-key-dir: ok"
