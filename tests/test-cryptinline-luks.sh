#!/usr/bin/env bash
# crypt-header: headers made by cryptsetup luksFormat --header open
# through the filter with each of their key slots, and the data is
# dm-crypt's: what the filter writes decrypts, with the volume key that
# cryptsetup itself reports, through the independent AES-XTS code
# (cryptinline_check.py), and what that code encrypts reads back through
# the filter.  LUKS2 with Argon2id, Argon2i and PBKDF2 (sha1, sha256,
# sha512), LUKS1, sector sizes 512 and 4096, AES-128/256-XTS, a key file
# slot, and a wrong passphrase.
source "$srcdir/luks-lib.sh"

disk="$tmp/disk.img"
hdr="$tmp/disk.hdr"
printf 'first passphrase' > "$tmp/pass0"
printf 'second-passphrase' > "$tmp/pass1"
# A key file is used whole: newlines and NUL bytes are part of it.  Its
# first 100 bytes hold neither, so that read as a passphrase (+FILE,
# which ends at the first NUL or newline) it is never empty: an empty
# passphrase is refused with another message, 1 run in 128 before.
{ head -c 400 /dev/urandom | tr -d '\0\n' | head -c 100
  printf '\n\0tail\n'; } > "$tmp/keyfile"

# name | cryptsetup options | crypt sector size
configs=(
    "luks2-argon2id-512bit-4k|--type luks2 --pbkdf argon2id $LUKS_ARGON2 --sector-size 4096 --key-size 512|4096"
    "luks2-argon2i-256bit-512|--type luks2 --pbkdf argon2i $LUKS_ARGON2 --sector-size 512 --key-size 256|512"
    "luks2-pbkdf2-sha256-256bit-4k|--type luks2 --pbkdf pbkdf2 --hash sha256 $LUKS_PBKDF2 --sector-size 4096 --key-size 256|4096"
    "luks2-pbkdf2-sha512-512bit-512|--type luks2 --pbkdf pbkdf2 --hash sha512 $LUKS_PBKDF2 --sector-size 512 --key-size 512|512"
    "luks2-pbkdf2-sha1-512bit-4k|--type luks2 --pbkdf pbkdf2 --hash sha1 $LUKS_PBKDF2 --sector-size 4096 --key-size 512|4096"
    "luks1-sha256-512bit|--type luks1 --hash sha256 $LUKS_PBKDF2 --key-size 512|512"
    "luks1-sha1-256bit|--type luks1 --hash sha1 $LUKS_PBKDF2 --key-size 256|512"
)

seed=500
for c in "${configs[@]}"; do
    IFS='|' read -r name opts ss <<<"$c"
    echo "== $name"
    rm -f "$disk"; truncate -s 1M "$disk"
    # shellcheck disable=SC2086
    luks_format "$hdr" "$disk" "$tmp/pass0" $opts
    # Slot 1: a second passphrase; slot 2: a key file.  LUKS2 slots get
    # the other KDF, so one header mixes them.
    case "$opts" in
        *luks2*argon2*) more="--pbkdf pbkdf2 $LUKS_PBKDF2" ;;
        *luks2*) more="--pbkdf argon2id $LUKS_ARGON2" ;;
        *) more="$LUKS_PBKDF2" ;;
    esac
    # shellcheck disable=SC2086
    luks_add_key "$hdr" "$disk" "$tmp/pass0" "$tmp/pass1" $more
    # shellcheck disable=SC2086
    luks_add_key "$hdr" "$disk" "$tmp/pass0" "$tmp/keyfile" $more
    volume_key "$hdr" "$tmp/pass0" "$tmp/vk"
    cp "$hdr" "$tmp/hdr.orig"

    # Each slot opens, and it is that slot which opened.
    for slot in "0 crypt-passphrase=+$tmp/pass0" \
                "1 crypt-passphrase=second-passphrase" \
                "2 crypt-key-file=$tmp/keyfile"; do
        read -r n key <<<"$slot"
        luks_serve "$disk" "$hdr" "$key" true -v 2> "$tmp/log" ||
            { cat "$tmp/log"; fail "$name: slot $n did not open"; }
        grep -q "key slot $n opened" "$tmp/log" ||
            { cat "$tmp/log"; fail "$name: expected key slot $n to open"; }
        grep -q "sector size $ss, IV offset 0" "$tmp/log" ||
            fail "$name: the header's sector size $ss was not used"
    done

    # Filter -> independent decryption with cryptsetup's volume key.
    seed=$((seed + 2))
    luks_serve "$disk" "$hdr" "crypt-passphrase=+$tmp/pass0" \
        "$PYTHON3 $check_py write-random \"\$uri\" $seed" ||
        fail "$name: writing through the filter"
    "$PYTHON3" "$check_py" check-image "$disk" "$tmp/vk" "$ss" 0 false $seed ||
        fail "$name: data written through the filter does not decrypt with cryptsetup's volume key"

    # Independent encryption -> filter, opened by the second slot.
    rm -f "$disk"; truncate -s 1M "$disk"
    "$PYTHON3" "$check_py" make-image "$disk" "$tmp/vk" "$ss" 0 false $((seed + 1))
    luks_serve "$disk" "$hdr" "crypt-key-file=$tmp/keyfile" \
        "$PYTHON3 $check_py read-check \"\$uri\" $((seed + 1))" ||
        fail "$name: data encrypted with cryptsetup's volume key does not read back"

    # A wrong passphrase: every slot tried once, then one clear line.
    expect_refusal "crypt-header $hdr: no key slot opened with this passphrase" \
        "$hdr" "$disk" "crypt-passphrase=wrong-passphrase"
    # The header is only read.
    cmp -s "$hdr" "$tmp/hdr.orig" || fail "$name: the header was written"
done

# The key file slot takes the file's every byte, as cryptsetup --key-file
# does; as a passphrase (+FILE) the same file is not the same secret.
expect_refusal "no key slot opened with this passphrase" "$hdr" "$disk" \
    "crypt-passphrase=+$tmp/keyfile"
# And a passphrase file with a final newline: crypt-passphrase=+FILE
# drops it (as typing does), crypt-key-file keeps it.
printf 'first passphrase\n' > "$tmp/pass0nl"
luks_serve "$disk" "$hdr" "crypt-passphrase=+$tmp/pass0nl" true ||
    fail "crypt-passphrase=+FILE did not drop the final newline"
expect_refusal "no key slot opened with this passphrase" "$hdr" "$disk" \
    "crypt-key-file=$tmp/pass0nl"

# iv_tweak is not dm-crypt's iv_offset for a single-segment header:
# cryptsetup activates it with IV offset 0 (only reencryption reads the
# tweak), so the data must be encrypted with IV offset 0 here too, or
# cryptsetup open --header could not read it.  (check-vm case 7 proves
# it against dm-crypt.)
rm -f "$disk"; truncate -s 1M "$disk"
# shellcheck disable=SC2086
luks_format "$hdr" "$disk" "$tmp/pass0" --type luks2 --pbkdf pbkdf2 $LUKS_PBKDF2 --sector-size 4096
"$PYTHON3" "$header_py" edit "$hdr" both 'j["segments"]["0"]["iv_tweak"] = "123456"'
volume_key "$hdr" "$tmp/pass0" "$tmp/vk"
luks_serve "$disk" "$hdr" "crypt-key-file=$tmp/pass0" \
    "$PYTHON3 $check_py write-random \"\$uri\" 900" -v 2> "$tmp/log" ||
    fail "iv_tweak: writing through the filter"
grep -q "sector size 4096, IV offset 0" "$tmp/log" ||
    { grep crypt-header "$tmp/log"; fail "iv_tweak 123456: the IV offset is not 0"; }
"$PYTHON3" "$check_py" check-image "$disk" "$tmp/vk" 4096 0 false 900 ||
    fail "iv_tweak 123456: the data is not encrypted with IV offset 0, as cryptsetup activates it"

# Slots are tried in cryptsetup's order: "prefer" first, then by number,
# "ignore" never.  Two slots with the same passphrase tell which opened.
rm -f "$disk"; truncate -s 1M "$disk"
# shellcheck disable=SC2086
luks_format "$hdr" "$disk" "$tmp/pass0" --type luks2 --pbkdf pbkdf2 $LUKS_PBKDF2
# shellcheck disable=SC2086
luks_add_key "$hdr" "$disk" "$tmp/pass0" "$tmp/pass0" --pbkdf pbkdf2 $LUKS_PBKDF2
opened_slot ()
{
    luks_serve "$disk" "$hdr" "crypt-key-file=$tmp/pass0" true -v 2> "$tmp/log" ||
        { grep -v debug: "$tmp/log"; fail "priority: did not open"; }
    sed -n 's/.*key slot \([0-9]*\) opened.*/\1/p' "$tmp/log"
}
priority () { cryptsetup config --header "$hdr" --key-slot "$1" --priority "$2" "$disk"; }
[ "$(opened_slot)" = 0 ] || fail "priority: slot 0 should open first"
priority 1 prefer
[ "$(opened_slot)" = 1 ] || fail "priority: the preferred slot 1 should open first"
priority 1 ignore
[ "$(opened_slot)" = 0 ] || fail "priority: slot 1 is ignored, slot 0 should open"
priority 0 ignore
expect_refusal "every key slot has priority ignore" "$hdr" "$disk" "crypt-key-file=$tmp/pass0"

echo "crypt-header checks passed"
