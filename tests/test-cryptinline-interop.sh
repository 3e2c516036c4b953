#!/usr/bin/env bash
# Interoperability with dm-crypt's aes-xts-plain64 format, checked against
# an independent AES-XTS implementation (Python's cryptography package):
#  1. data written through the filter onto a file is decrypted from the raw
#     image by the independent code and compared;
#  2. an image encrypted by the independent code reads back as plaintext
#     through the filter.
# Several sector sizes, both key sizes, IV offsets and iv-large-sectors;
# a passphrase key checked against cryptsetup's plain sha256 hashing
# computed independently; all crypt modes.
source "$srcdir/cryptinline-lib.sh"

# sector key-bytes iv-offset iv-large-sectors (the IV offset a multiple
# of sector/512, as dm-crypt requires)
configs=(
    "512 64 0 false"
    "512 32 7 false"
    "4096 64 0 false"
    "4096 32 0 true"
    "1024 32 6 false"
    "1024 64 6 true"
    "2048 64 123456788 true"
    "4096 64 18446744073709551608 false"
)
img="$tmp/disk.img"
seed=100
for mode in $CRYPT_MODES; do
    for c in "${configs[@]}"; do
        read -r ss kb ivoff large <<<"$c"
        seed=$((seed + 2))
        make_key "$tmp/key" "$kb"
        params=(crypt-key-file="$tmp/key" crypt-sector-size="$ss"
                crypt-iv-offset="$ivoff" crypt-iv-large-sectors="$large"
                crypt-mode="$mode")
        echo "interop: mode=$mode sector=$ss key=$kb bytes iv-offset=$ivoff iv-large-sectors=$large"

        rm -f "$img"; truncate -s 2M "$img"
        crypt_nbdkit -U - --filter=cryptinline file "$img" "${params[@]}" \
            --run "$PYTHON3 $check_py write-random \"\$uri\" $seed" ||
            fail "writing through the filter ($c, mode=$mode)"
        "$PYTHON3" "$check_py" check-image "$img" "$tmp/key" $ss $ivoff $large $seed ||
            fail "filter -> independent decryption ($c, mode=$mode)"

        rm -f "$img"; truncate -s 2M "$img"
        "$PYTHON3" "$check_py" make-image "$img" "$tmp/key" $ss $ivoff $large $((seed + 1)) ||
            fail "independent encryption ($c)"
        crypt_nbdkit -U - --filter=cryptinline file "$img" "${params[@]}" \
            --run "$PYTHON3 $check_py read-check \"\$uri\" $((seed + 1))" ||
            fail "independent encryption -> filter ($c, mode=$mode)"
    done

    # Passphrase: the filter's key must be cryptsetup's plain sha256 hash.
    for bits in 256 512; do
        pass='correct horse battery staple'
        "$PYTHON3" "$check_py" plain-key "$pass" $bits "$tmp/pkey"
        printf '%s' "$pass" > "$tmp/passfile"
        rm -f "$img"; truncate -s 1M "$img"
        seed=$((seed + 1))
        echo "interop: mode=$mode passphrase, crypt-key-size=$bits"
        crypt_nbdkit -U - --filter=cryptinline file "$img" \
            crypt-passphrase=+"$tmp/passfile" crypt-key-size=$bits \
            crypt-mode=$mode \
            --run "$PYTHON3 $check_py write-random \"\$uri\" $seed" ||
            fail "writing with a passphrase ($bits bits)"
        "$PYTHON3" "$check_py" check-image "$img" "$tmp/pkey" 4096 0 false $seed ||
            fail "passphrase key differs from cryptsetup plain sha256 ($bits bits)"
    done
done
echo "interoperability checks passed"
