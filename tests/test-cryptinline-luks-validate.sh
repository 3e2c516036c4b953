#!/usr/bin/env bash
# crypt-header against cryptsetup itself, header for header: each header
# here is made by cryptsetup and edited (luks_header.py), then handed to
# cryptsetup (open --test-passphrase --header) and to the filter.  They
# must agree on whether it opens, and where it opens the filter's data is
# encrypted with cryptsetup's volume key; except the documented cases
# where the filter is stricter on purpose (a digest or salt cut short,
# which cryptsetup 2.6 opens with any passphrase; Argon2 beyond what
# libgcrypt can compute), where cryptsetup is shown to open the header
# and the filter refuses it with one line.
source "$srcdir/luks-lib.sh"

disk="$tmp/disk.img"
truncate -s 1M "$disk"
pass="$tmp/pass"
printf 'the-passphrase' > "$pass"
printf 'not-the-passphrase' > "$tmp/wrong"
key="crypt-key-file=$pass"
h="$tmp/h.hdr"

luks_format "$tmp/l2.hdr" "$disk" "$pass" --type luks2 --pbkdf pbkdf2 $LUKS_PBKDF2
luks_format "$tmp/argon.hdr" "$disk" "$pass" --type luks2 --pbkdf argon2id $LUKS_ARGON2
luks_format "$tmp/l1.hdr" "$disk" "$pass" --type luks1 $LUKS_PBKDF2
volume_key "$tmp/l2.hdr" "$pass" "$tmp/vk2"
volume_key "$tmp/l1.hdr" "$pass" "$tmp/vk1"

# cryptsetup_opens HEADER KEYFILE: cryptsetup accepts the header and the
# key (on a copy: cryptsetup may repair what it reads).
cryptsetup_opens ()
{
    cp "$1" "$tmp/cs.hdr"
    cryptsetup open --test-passphrase --header "$tmp/cs.hdr" \
        --key-file "$2" "$disk" > "$tmp/cs.out" 2>&1
}

# prepare BASE CMDS: $h is a copy of BASE with the luks_header.py
# commands CMDS applied (hp ARGS runs luks_header.py on $h).
hp () { "$PYTHON3" "$header_py" "$1" "$h" "${@:2}"; }
prepare () { cp "$1" "$h"; eval "$2"; }

seed=300
# opens "what" BASE VK SECTOR CMDS: cryptsetup and the filter open it,
# and the filter's data decrypts with cryptsetup's volume key VK.
opens ()
{
    local what="$1"
    prepare "$2" "$5"
    echo "== opens: $what"
    cryptsetup_opens "$h" "$pass" ||
        { cat "$tmp/cs.out"; fail "$what: cryptsetup refuses it, the test is wrong"; }
    seed=$((seed + 1))
    luks_serve "$disk" "$h" "$key" "$PYTHON3 $check_py write-random \"\$uri\" $seed" ||
        fail "$what: cryptsetup opens it, the filter does not"
    "$PYTHON3" "$check_py" check-image "$disk" "$3" "$4" 0 false $seed ||
        fail "$what: the filter's data is not encrypted with cryptsetup's volume key"
}

# refused "what" "message" BASE CMDS: cryptsetup refuses it, and so does
# the filter, with the message.
refused ()
{
    local what="$1" want="$2"
    prepare "$3" "$4"
    echo "== refused: $what"
    ! cryptsetup_opens "$h" "$pass" || fail "$what: cryptsetup opens it, the test is wrong"
    expect_refusal "$want" "$h" "$disk" "$key"
}

# stricter "what" "message" BASE CMDS: cryptsetup opens it, even with a
# wrong passphrase where the digest is cut short; the filter refuses it
# on purpose (the man page's list).
stricter ()
{
    local what="$1" want="$2"
    prepare "$3" "$4"
    echo "== stricter: $what"
    cryptsetup_opens "$h" "$pass" ||
        { cat "$tmp/cs.out"; fail "$what: cryptsetup refuses it, the test is wrong"; }
    expect_refusal "$want" "$h" "$disk" "$key"
}

l2="$tmp/l2.hdr" argon="$tmp/argon.hdr" l1="$tmp/l1.hdr"
e () { echo "hp edit both '$1'"; }

# ---- Defect: a digest or salt cut short lets wrong passphrases in ------
cut_digest='d = j["digests"]["0"]; d["digest"] = "AA=="'
prepare "$l2" "$(e "$cut_digest")"
cryptsetup_opens "$h" "$tmp/wrong" ||
    fail "cryptsetup no longer opens a 1-byte digest with a wrong passphrase: revisit the man page"
stricter "1-byte digest" "digest 0 is 1 bytes, not the 32 of sha256 (or LUKS1's 20): refused" "$l2" "$(e "$cut_digest")"
stricter "16-byte digest salt" "digest 0 has a 16-byte salt, not 32: refused" "$l2" \
    "$(e 'j["digests"]["0"]["salt"] = "AAAAAAAAAAAAAAAAAAAAAA=="')"
stricter "no digest value" "digest 0 has no digest value: refused" "$l2" \
    "$(e 'del j["digests"]["0"]["digest"]')"
stricter "unknown digest hash" "digest 0: hash nosuch is unknown: refused" "$l2" \
    "$(e 'j["digests"]["0"]["hash"] = "nosuch"')"
refused "16-byte key slot salt" "key slot 0 has a 16-byte KDF salt: LUKS salts are 32 bytes" "$l2" \
    "$(e 'j["keyslots"]["0"]["kdf"]["salt"] = "AAAAAAAAAAAAAAAAAAAAAA=="')"
# A LUKS1 header converted by cryptsetup keeps its 20-byte digest.
cp "$l1" "$tmp/conv.hdr"
cryptsetup convert --batch-mode --type luks2 --header "$tmp/conv.hdr" "$disk" ||
    fail "cryptsetup convert failed"
opens "20-byte sha1 digest (converted from LUKS1)" "$tmp/conv.hdr" "$tmp/vk1" 512 true

# ---- Defect: Argon2 beyond what libgcrypt can compute ----------------------
# cryptsetup's own maximum memory cost: libgcrypt 1.10 computes 4 GiB in
# 32 bits (malloc (0), then a heap overflow: the server crashed).  Too
# costly to run cryptsetup on (17 s, 4 GB): the filter alone.
prepare "$argon" "$(e 'j["keyslots"]["0"]["kdf"]["memory"] = 4194304')"
expect_refusal "key slot 0 has an Argon2 memory cost of 4194304 KiB: libgcrypt computes 4 GiB or more in 32 bits" \
    "$h" "$disk" "$key"
refused "Argon2 memory 8 with 524288 cpus" "key slot 0 has Argon2 parameters that Argon2 refuses" "$argon" \
    "$(e 'j["keyslots"]["0"]["kdf"].update(memory=8, cpus=524288)')"
# cryptsetup cannot make a slot with 100 lanes (it writes at most 4),
# so this one is not opened by its passphrase; but cryptsetup runs its
# KDF and reaches the passphrase check (exit status 2), where the filter
# refuses the slot.
prepare "$argon" "$(e 'j["keyslots"]["0"]["kdf"].update(memory=1024, cpus=100)')"
cryptsetup_opens "$h" "$pass" || status=$?
[ "${status:-0}" = 2 ] || { cat "$tmp/cs.out"; fail "100 cpus: cryptsetup exits $status, expected 2 (a wrong passphrase)"; }
expect_refusal "key slot 0 has an Argon2 cpus value of 100: at most 64 are supported" "$h" "$disk" "$key"

# ---- LUKS2_hdr_validate's rules ------------------------------------------
refused "key slot id not a number" "key slot id \"a\" is not a number" "$l2" \
    "$(e 'j["keyslots"]["a"] = j["keyslots"].pop("0"); j["digests"]["0"]["keyslots"] = ["a"]')"
refused "key slot id past INT_MAX" "key slot 2147483648 is not bound to exactly one digest" "$l2" \
    "$(e 'j["keyslots"]["2147483648"] = j["keyslots"].pop("0"); j["digests"]["0"]["keyslots"] = ["2147483648"]')"
opens "key slot id 2147483647" "$l2" "$tmp/vk2" 4096 \
    "$(e 'j["keyslots"]["2147483647"] = j["keyslots"].pop("0"); j["digests"]["0"]["keyslots"] = ["2147483647"]')"
refused "key slot areas overlap" "key slot areas at 32768 and 32768 overlap" "$l2" \
    "$(e 'import copy; j["keyslots"]["1"] = copy.deepcopy(j["keyslots"]["0"]); j["digests"]["0"]["keyslots"].append("1")')"
refused "key slot area inside the header" "a key slot area at 16384 is inside the header" "$l2" \
    "$(e 'j["keyslots"]["0"]["area"]["offset"] = "16384"')"
refused "key slot area beyond keyslots_size" "ends beyond the key slots area" "$l2" \
    "$(e 'j["config"]["keyslots_size"] = "131072"')"
refused "keyslots_size not whole 4 KiB" "config: keyslots_size 1048577 is not a multiple of 4096" "$l2" \
    "$(e 'j["config"]["keyslots_size"] = "1048577"')"
refused "no tokens object" "no tokens object" "$l2" "$(e 'del j["tokens"]')"
refused "digest names a missing key slot" "digest 0: bad type, keyslots or segments" "$l2" \
    "$(e 'j["digests"]["0"]["keyslots"].append("7")')"
# cryptsetup merges 4000 stripes whatever the af object says.
opens "LUKS2 af stripes 3999" "$l2" "$tmp/vk2" 4096 "$(e 'j["keyslots"]["0"]["af"]["stripes"] = 3999')"

# ---- LUKS1: cryptsetup's LUKS_check_keyslots, on every slot -----------------
refused "LUKS1 inactive slot with 3999 stripes" "LUKS1 key slot 7 has 3999 stripes, not 4000" "$l1" \
    'hp luks1-slot 7 stripes 3999'
refused "LUKS1 inactive slot inside the header" "LUKS1 key slot 5's key material (sector 0) is inside the header" "$l1" \
    'hp luks1-slot 5 offset 0'
refused "LUKS1 slots overlap" "LUKS1 key slots" "$l1" 'hp luks1-slot 1 offset 8'
refused "LUKS1 header file truncated" "too short for its key slots" "$l1" 'truncate -s 100000 "$h"'

echo "crypt-header agrees with cryptsetup"
