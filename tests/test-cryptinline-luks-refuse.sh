#!/usr/bin/env bash
# crypt-header: every header the filter cannot serve as dm-crypt would is
# refused at startup with exactly one line that says why, and damaged
# LUKS2 header copies are handled as cryptsetup handles them: the good
# copy is used (the newer one if both are good), and neither good means
# no start.  Headers are made by cryptsetup where it can make them on this
# machine, otherwise edited by luks_header.py with the checksums fixed.
source "$srcdir/luks-lib.sh"

disk="$tmp/disk.img"
truncate -s 1M "$disk"
pass="$tmp/pass"
printf 'the-passphrase' > "$pass"
key="crypt-key-file=$pass"

# A fresh LUKS2 header with one PBKDF2 slot, copied to $2.
fresh () { luks_format "$tmp/base.hdr" "$disk" "$pass" --type luks2 --pbkdf pbkdf2 $LUKS_PBKDF2 "$@"; }
fresh
base="$tmp/base.hdr"
h="$tmp/h.hdr"

# ---- What cryptsetup can make ------------------------------------------
luks_format "$h" "$disk" "$pass" --type luks2 --pbkdf pbkdf2 $LUKS_PBKDF2 --cipher aes-cbc-essiv:sha256
expect_refusal "data cipher aes-cbc-essiv:sha256 is not supported: only aes-xts-plain64" "$h" "$disk" "$key"
luks_format "$h" "$disk" "$pass" --type luks2 --pbkdf pbkdf2 $LUKS_PBKDF2 --cipher aes-xts-plain
expect_refusal "data cipher aes-xts-plain is not supported" "$h" "$disk" "$key"
luks_format "$h" "$disk" "$pass" --type luks1 $LUKS_PBKDF2 --cipher aes-cbc-essiv:sha256
expect_refusal "cipher aes-cbc-essiv:sha256 is not supported: only aes-xts-plain64" "$h" "$disk" "$key"
luks_format "$h" "$disk" "$pass" --type luks2 --pbkdf pbkdf2 $LUKS_PBKDF2 --offset 2048
expect_refusal "data offset of 1048576 bytes is not supported: only 0, a detached header" "$h" "$disk" "$key"
luks_format "$h" "$disk" "$pass" --type luks1 $LUKS_PBKDF2 --offset 4096
expect_refusal "data offset of 4096 sectors is not supported" "$h" "$disk" "$key"
cp "$base" "$h"
cryptsetup reencrypt --init-only --batch-mode --header "$h" --key-file "$pass" --key-slot 0 "$disk" ||
    fail "cryptsetup reencrypt --init-only failed"
expect_refusal "a reencryption is in progress (requirement online-reencrypt-v2): finish it with cryptsetup reencrypt first" "$h" "$disk" "$key"

# A slot reachable only through a token (clevis binds a random secret):
# a passphrase that opens no slot says so.  The right bytes still open
# it, as with cryptsetup.
cp "$base" "$h"
echo '{"type":"clevis","keyslots":["0"],"jwe":{}}' > "$tmp/token.json"
cryptsetup token import --header "$h" --json-file "$tmp/token.json" "$disk" ||
    fail "cryptsetup token import failed"
expect_refusal "no key slot opened with this passphrase: every key slot is bound to a token (clevis), the only way in" \
    "$h" "$disk" "crypt-passphrase=not-it"
luks_serve "$disk" "$h" "$key" true || fail "the token-bound slot did not open with its bytes"

# ---- What cryptsetup cannot make here: edited copies ---------------------
edited ()
{
    local want="$1" code="$2"
    cp "$base" "$h"
    "$PYTHON3" "$header_py" edit "$h" both "$code"
    expect_refusal "$want" "$h" "$disk" "$key"
}
edited "data segment 0 has integrity protection (dm-integrity): not supported" \
    'j["segments"]["0"]["integrity"] = {"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}'
edited "the header has 2 data segments (a reencryption or a layered layout): only one is supported" \
    'j["segments"]["0"]["size"] = "1048576"; j["segments"]["1"] = dict(j["segments"]["0"], offset="1048576", size="dynamic"); j["digests"]["0"]["segments"].append("1")'
edited "data segment 0 has a fixed size of 524288 bytes: only \"dynamic\"" \
    'j["segments"]["0"]["size"] = "524288"'
edited "data segment 0 has flag in-reencryption" \
    'j["segments"]["0"]["flags"] = ["in-reencryption"]'
edited "data segment 0 is of type linear: only crypt is supported" \
    'j["segments"]["0"]["type"] = "linear"'
edited "the header requires feature opal, which is not supported" \
    'j["config"]["requirements"] = {"mandatory": ["opal"]}'
edited "key slot 0 uses KDF scrypt: only pbkdf2, argon2i and argon2id are supported" \
    'j["keyslots"]["0"]["kdf"]["type"] = "scrypt"'
edited "key slot 0 is encrypted with serpent-xts-plain64" \
    'j["keyslots"]["0"]["area"]["encryption"] = "serpent-xts-plain64"'
edited "digest 0 is of type argon2: only pbkdf2 is supported" \
    'j["digests"]["0"]["type"] = "argon2"'
edited "no valid LUKS2 header copy: primary: its metadata is invalid: config: header size 8192 is not a LUKS2 size" \
    'j["config"]["json_size"] = "4096"'
# Bytes from the header never break the one-line message.
edited "data cipher aes?xts-plain64?? is not supported" \
    'j["segments"]["0"]["encryption"] = "aes\nxts-plain64\u00e9"'
for obj in keyslots segments digests; do
    edited "its metadata is invalid: no digests, keyslots or segments object" "del j[\"$obj\"]"
done
# No tokens object: cryptsetup refuses that copy too (see
# test-cryptinline-luks-validate.sh).
edited "its metadata is invalid: no tokens object" 'del j["tokens"]'

# ---- Not a header, unreadable, parameters the header sets ---------------
head -c 65536 /dev/urandom > "$tmp/random.hdr"
expect_refusal "crypt-header $tmp/random.hdr: not a LUKS header" "$tmp/random.hdr" "$disk" "$key"
expect_refusal "crypt-header $tmp/missing: cannot be read: No such file or directory" "$tmp/missing" "$disk" "$key"
for p in crypt-sector-size=4096 crypt-key-size=512 crypt-iv-offset=0 \
         crypt-cipher=aes-xts-plain64 crypt-iv-large-sectors=false; do
    expect_refusal "${p%%=*} cannot be used with crypt-header: the LUKS header sets it" \
        "$base" "$disk" "$key" "$p"
done
expect_refusal "no key given to open crypt-header $base: use crypt-passphrase" "$base" "$disk" ""
: > "$tmp/empty"
expect_refusal "crypt-key-file $tmp/empty is empty" "$base" "$disk" "crypt-key-file=$tmp/empty"
truncate -s $((8 * 1024 * 1024 + 1)) "$tmp/huge"
expect_refusal "crypt-key-file $tmp/huge is larger than 8388608 bytes" "$base" "$disk" "crypt-key-file=$tmp/huge"

# ---- Damaged copies: as cryptsetup would ---------------------------------
volume_key "$base" "$pass" "$tmp/vk"
seed=700

# cryptsetup_reads HEADER: true if cryptsetup accepts the header (on a
# copy: cryptsetup repairs what it reads, this filter never writes).
cryptsetup_reads () { cp "$1" "$tmp/cs.hdr"; cryptsetup luksDump "$tmp/cs.hdr" > "$tmp/cs.dump" 2>&1; }

# hp ARGS: luks_header.py on the header under test.
hp () { "$PYTHON3" "$header_py" "$1" "$h" "${@:2}"; }

# damaged "what" "expected copy" "hp commands": the filter must open
# the header with that copy, cryptsetup must agree that it opens, the
# header must stay as it was, and the data must be the volume key's.
damaged ()
{
    local what="$1" copy="$2" cmds="$3"
    cp "$base" "$h"
    eval "$cmds"
    cp "$h" "$tmp/h.before"
    echo "== damaged: $what"
    cryptsetup_reads "$h" || { cat "$tmp/cs.dump"; fail "$what: cryptsetup refuses it, the test is wrong"; }
    seed=$((seed + 1))
    luks_serve "$disk" "$h" "$key" "$PYTHON3 $check_py write-random \"\$uri\" $seed" -v 2> "$tmp/log" ||
        { grep -v debug: "$tmp/log"; fail "$what: did not open"; }
    grep -q "LUKS2, $copy, key slot 0 opened" "$tmp/log" ||
        { grep crypt-header "$tmp/log"; fail "$what: expected the $copy copy to be used"; }
    "$PYTHON3" "$check_py" check-image "$disk" "$tmp/vk" 4096 0 false $seed ||
        fail "$what: data is not encrypted with the volume key"
    cmp -s "$h" "$tmp/h.before" || fail "$what: the header was written"
}
cbc='j["segments"]["0"]["encryption"] = "aes-cbc-plain"'
damaged "primary checksum" secondary 'hp damage primary checksum'
damaged "secondary checksum" primary 'hp damage secondary checksum'
damaged "primary JSON text" secondary 'hp damage primary json'
damaged "secondary JSON text" primary 'hp damage secondary json'
damaged "primary magic" secondary 'hp damage primary magic'
damaged "primary JSON not JSON (checksum right)" secondary 'hp bad-json primary'
# Both good but different: the higher sequence id wins.
damaged "newer secondary" secondary 'hp edit primary "$cbc"; hp edit secondary pass 1'
damaged "newer primary" primary 'hp edit secondary "$cbc"; hp edit primary pass 1'

# refused "what" "expected message" "hp commands": cryptsetup refuses
# the header too.
refused ()
{
    local what="$1" want="$2" cmds="$3"
    cp "$base" "$h"
    eval "$cmds"
    echo "== refused: $what"
    ! cryptsetup_reads "$h" || fail "$what: cryptsetup reads it, the test is wrong"
    expect_refusal "$want" "$h" "$disk" "$key"
}
refused "both checksums" "no valid LUKS2 header copy: primary: checksum (sha256) mismatch; secondary: checksum (sha256) mismatch" \
    'hp damage both checksum'
refused "both JSON areas not JSON" "no valid LUKS2 header copy: primary: the JSON area does not parse" \
    'hp bad-json both'
refused "both magics" "not a LUKS header" 'hp damage both magic'
# The newer copy names a cipher the filter refuses: no falling back to
# the older one, as cryptsetup takes the newer one too.
cp "$base" "$h"
hp edit secondary "$cbc" 1
cryptsetup_reads "$h" && grep -q "cipher: aes-cbc-plain" "$tmp/cs.dump" ||
    fail "cryptsetup does not take the newer copy, the test is wrong"
expect_refusal "data cipher aes-cbc-plain is not supported" "$h" "$disk" "$key"

echo "crypt-header refusals passed"
