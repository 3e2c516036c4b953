#!/usr/bin/env bash
# Every bad configuration is refused before anything is served: exit
# status 1 and exactly one error line naming the problem.
source "$srcdir/cryptinline-lib.sh"

make_key "$tmp/k64" 64
make_key "$tmp/k32" 32
make_key "$tmp/k33" 33
make_key "$tmp/k1000" 1000
printf 'secret' > "$tmp/pass"
touch "$tmp/unreadable"; chmod 000 "$tmp/unreadable"

# The disk every refused configuration is given: it must not change.
head -c 1048576 /dev/urandom > "$tmp/disk"
disk_sum="$(sha256sum < "$tmp/disk")"

# expect_refusal "expected message" params...: refused, disk unchanged.
expect_refusal ()
{
    local want="$1"; shift
    expect_refused_start "$want" "$tmp/disk" "$@"
    [ "$(sha256sum < "$tmp/disk")" = "$disk_sum" ] ||
        fail "the disk changed since the test began: $*"
}

k64=crypt-key-file="$tmp/k64"
expect_refusal "no key given" crypt-sector-size=512
expect_refusal "use exactly one of crypt-key-file, crypt-passphrase and crypt-key-dir" \
    "$k64" crypt-passphrase=+"$tmp/pass"
expect_refusal "use exactly one of crypt-key-file, crypt-passphrase and crypt-key-dir" \
    crypt-passphrase=+"$tmp/pass" "$k64"
expect_refusal "crypt-key-file $tmp/missing cannot be read: No such file" \
    crypt-key-file="$tmp/missing"
expect_refusal "crypt-key-file $tmp cannot be read: Is a directory" \
    crypt-key-file="$tmp"
if [ "$(id -u)" != 0 ]; then        # root reads mode-000 files
    expect_refusal "cannot be read: Permission denied" \
        crypt-key-file="$tmp/unreadable"
fi
expect_refusal "crypt-key-file $tmp/k33 is 33 bytes: a raw key must be exactly 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS)" \
    crypt-key-file="$tmp/k33"
expect_refusal "is 1000 bytes" crypt-key-file="$tmp/k1000"
expect_refusal "crypt-key-file /dev/null gave 0 bytes" crypt-key-file=/dev/null
expect_refusal "crypt-key-size=256 does not match crypt-key-file $tmp/k64, which holds a 512-bit key" \
    "$k64" crypt-key-size=256
expect_refusal "crypt-key-size=128 is not accepted: use 256 (AES-128-XTS) or 512 (AES-256-XTS)" \
    crypt-passphrase=+"$tmp/pass" crypt-key-size=128
expect_refusal "crypt-cipher=aes-cbc-essiv:sha256 is not supported: the only accepted value is aes-xts-plain64" \
    "$k64" crypt-cipher=aes-cbc-essiv:sha256
for bad in 0 256 8192 4k 4096x ""; do
    expect_refusal "crypt-sector-size=$bad is not accepted: use 512, 1024, 2048 or 4096" \
        "$k64" crypt-sector-size="$bad"
done
expect_refusal "crypt-iv-large-sectors=maybe is not a boolean: use true or false" \
    "$k64" crypt-iv-large-sectors=maybe
for bad in -1 18446744073709551616 1.5 0x10 ""; do
    expect_refusal "crypt-iv-offset=$bad is not accepted: use a whole number from 0 to 18446744073709551615" \
        "$k64" crypt-iv-offset="$bad"
done
# dm-crypt refuses an IV offset that is not a whole number of crypt
# sectors (a multiple of crypt-sector-size/512), whatever the order of
# the parameters.
expect_refusal "crypt-iv-offset=1 is not a multiple of 8 (crypt-sector-size 4096 / 512): dm-crypt requires the IV offset to be a whole number of crypt sectors" \
    "$k64" crypt-iv-offset=1
expect_refusal "crypt-iv-offset=4 is not a multiple of 8" \
    "$k64" crypt-iv-offset=4 crypt-sector-size=4096
expect_refusal "crypt-iv-offset=6 is not a multiple of 4 (crypt-sector-size 2048 / 512)" \
    "$k64" crypt-sector-size=2048 crypt-iv-offset=6 crypt-iv-large-sectors=true
expect_refusal "crypt-iv-offset=18446744073709551615 is not a multiple of 2" \
    "$k64" crypt-iv-offset=18446744073709551615 crypt-sector-size=1024
expect_refusal "crypt-mode=fast is not accepted: use inline, pool or auto" \
    "$k64" crypt-mode=fast
for bad in 0 -2 1025 many; do
    expect_refusal "crypt-threads=$bad is not accepted: use a whole number from 1 to 1024" \
        "$k64" crypt-threads="$bad"
done
for bad in lots -1 "" 5G 4097M 1T 4k5 1.5M 0x100; do
    expect_refusal "crypt-pool-threshold=$bad is not accepted: use a size in bytes, optionally with a k, M or G suffix, up to 4G" \
        "$k64" crypt-pool-threshold="$bad"
done
# A key source or the key size given twice.
expect_refusal "crypt-key-file given, but a key was already given by crypt-key-file" \
    "$k64" crypt-key-file="$tmp/k32"
expect_refusal "crypt-passphrase given, but a key was already given by crypt-passphrase" \
    crypt-passphrase=a crypt-passphrase=b
expect_refusal "crypt-key-size was given twice: give it once" \
    crypt-passphrase=a crypt-key-size=256 crypt-key-size=512
expect_refusal "crypt-cipher was given twice" \
    "$k64" crypt-cipher=aes-xts-plain64 crypt-cipher=aes-xts-plain64
for p in crypt-iv-large-sectors=true crypt-iv-offset=0 crypt-mode=inline \
         crypt-threads=2 crypt-pool-threshold=1M; do
    expect_refusal "${p%%=*} was given twice: give it once" "$k64" "$p" "$p"
done
# A key file that never ends, and a 32-byte key asked to be 512 bits.
expect_refusal "crypt-key-file /dev/zero gave more than 64 bytes: a raw key must be exactly 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS)" \
    crypt-key-file=/dev/zero
expect_refusal "crypt-key-size=512 does not match crypt-key-file $tmp/k32, which holds a 256-bit key" \
    crypt-key-file="$tmp/k32" crypt-key-size=512
expect_refusal "crypt-sector-size was given twice" \
    "$k64" crypt-sector-size=512 crypt-sector-size=4096
expect_refusal "unknown parameter crypt-sectorsize" \
    "$k64" crypt-sectorsize=512

# An odd IV offset is fine with 512-byte sectors.
crypt_nbdkit -U - --filter=cryptinline memory 1M "$k64" crypt-sector-size=512 \
    crypt-iv-offset=18446744073709551615 --run 'nbdinfo --size "$uri"' \
    > "$tmp/out" 2> "$tmp/err" || { cat "$tmp/err"; fail "odd IV offset refused with 512-byte sectors"; }

# And the good configurations start.
for good in "$k64" "crypt-key-file=$tmp/k32" "crypt-passphrase=+$tmp/pass" \
            "crypt-passphrase=secret crypt-key-size=256"; do
    # shellcheck disable=SC2086
    crypt_nbdkit -U - --filter=cryptinline memory 1M $good \
        crypt-iv-large-sectors=on crypt-iv-offset=18446744073709551608 \
        crypt-mode=pool crypt-threads=1024 crypt-pool-threshold=1M \
        --run 'nbdinfo --size "$uri"' > "$tmp/out" 2> "$tmp/err" ||
        fail "a good configuration was refused: $good"
    [ "$(cat "$tmp/out")" = 1048576 ] || fail "wrong size served: $(cat "$tmp/out")"
    [ ! -s "$tmp/err" ] || { cat "$tmp/err"; fail "a good configuration printed on stderr: $good"; }
done

# An unprivileged user who may not lock memory (ulimit -l 0) still
# starts, without libgcrypt's "using insecure memory" warning.
if [ "$(id -u)" = 0 ]; then
    requires setpriv --version
    chmod 755 "$tmp"; chmod 644 "$tmp/k64"
    setpriv --reuid=nobody --regid=nogroup --clear-groups \
        bash -c 'ulimit -l 0; exec "$0" "$@"' \
        "$(command -v nbdkit)" -U - \
        --filter="${CRYPTINLINE_FILTER:-cryptinline}" memory 1M \
        crypt-key-file="$tmp/k64" crypt-mode=pool \
        --run 'nbdinfo --size "$uri"' > "$tmp/out" 2> "$tmp/err" ||
        { cat "$tmp/err"; fail "refused to start without lockable memory"; }
    [ "$(cat "$tmp/out")" = 1048576 ] || fail "unprivileged: wrong size"
    [ ! -s "$tmp/err" ] || { cat "$tmp/err"; fail "unprivileged start printed on stderr"; }
    chmod 700 "$tmp"
fi

# --help lists every parameter.
nbdkit --filter=cryptinline memory --help > "$tmp/help"
for p in crypt-key-file crypt-passphrase crypt-key-size crypt-cipher \
         crypt-sector-size crypt-iv-large-sectors crypt-iv-offset \
         crypt-mode crypt-threads crypt-pool-threshold; do
    grep -q "^$p=" "$tmp/help" || fail "--help does not list $p"
done
echo "startup checks passed"
