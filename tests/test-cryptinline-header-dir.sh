#!/usr/bin/env bash
# crypt-header-dir=HDRDIR with the zbd plugin's dir=: the detached LUKS
# header of export NAME is HDRDIR/NAME (LUKS2 and LUKS1 side by side,
# with different sector sizes), each opened with the one passphrase
# when its export's first connection opens; what is written decrypts
# with the volume key cryptsetup itself dumps from that header, in that
# header's sector size; an export whose header is missing or does not
# open with the passphrase is refused alone, with a line naming it.
source "$srcdir/luks-lib.sh"

d="$tmp/drives" h="$tmp/headers" v="$tmp/volume-keys"
mkdir "$d" "$h" "$v"
make_zone_images "$d" a b c d
printf 'shelf passphrase' > "$tmp/pass"
printf 'another one' > "$tmp/other"
luks_format "$h/a" "$d/a" "$tmp/pass" --type luks2 --sector-size 4096 $LUKS_ARGON2
luks_format "$h/b" "$d/b" "$tmp/pass" --type luks1 $LUKS_PBKDF2
luks_format "$h/c" "$d/c" "$tmp/other" --type luks2 $LUKS_ARGON2
volume_key "$h/a" "$tmp/pass" "$v/a"
volume_key "$h/b" "$tmp/pass" "$v/b"
serve ()
{
    crypt_nbdkit -U - -v --filter=cryptinline zbd dir="$d" crypt-header-dir="$h" \
        crypt-passphrase=+"$tmp/pass" "$@"
}

serve --run "\"$PYTHON3\" \"$srcdir/cryptinline-key-dir.py\" write \"\$unixsocket\"" \
    2>"$tmp/err" || { cat "$tmp/err"; fail "crypt-header-dir: serving"; }
grep -q "export \"a\": crypt-header $h/a: LUKS2, primary, key slot 0 opened: AES-256-XTS, sector size 4096" "$tmp/err" ||
    { cat "$tmp/err"; fail "a's LUKS2 header was not opened"; }
grep -q "export \"b\": crypt-header $h/b: LUKS1, key slot 0 opened: AES-256-XTS, sector size 512" "$tmp/err" ||
    { cat "$tmp/err"; fail "b's LUKS1 header was not opened"; }
grep -q "export \"c\": crypt-header $h/c: no key slot opened with this passphrase" "$tmp/err" ||
    { cat "$tmp/err"; fail "no line saying c's header does not open"; }
grep -q "export \"d\": crypt-header $h/d.*No such file or directory" "$tmp/err" ||
    { cat "$tmp/err"; fail "no line naming d's missing header"; }
if grep -q 'zbd: [cd]: file backend' "$tmp/err"; then
    fail "a drive whose header did not open was opened"
fi
# What is on the drives: each decrypts with its own header's volume key,
# in that header's sector size.
nbdkit -U - zbd dir="$d" --run "\"$PYTHON3\" \"$srcdir/cryptinline-key-dir.py\" raw \"\$unixsocket\" \"$v\" 4096 512" ||
    fail "crypt-header-dir: the ciphertext against cryptsetup's volume keys"

refused_dir "$d" "crypt-sector-size cannot be used with crypt-header-dir: the LUKS header sets it" \
    crypt-header-dir="$h" crypt-passphrase=+"$tmp/pass" crypt-sector-size=512
refused_dir "$d" "no key given to open crypt-header-dir $h" crypt-header-dir="$h"
refused_dir "$d" "crypt-header and crypt-header-dir cannot be used together" \
    crypt-header-dir="$h" crypt-header="$h/a" crypt-passphrase=+"$tmp/pass"
refused_dir "$d" "crypt-key-dir and crypt-header-dir cannot be used together" \
    crypt-header-dir="$h" crypt-key-dir="$h"
refused_dir "$d" "crypt-header-dir=$h/a: not a directory" \
    crypt-header-dir="$h/a" crypt-passphrase=+"$tmp/pass"
echo "crypt-header-dir: ok"
