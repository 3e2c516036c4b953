# Shared by the tests of the cryptinline filter's crypt-header (LUKS
# headers made by cryptsetup):  source "$srcdir/luks-lib.sh"
source "$srcdir/cryptinline-lib.sh"

requires cryptsetup --version

header_py="$srcdir/luks_header.py"

# Cheap key derivation, so the tests stay fast: what matters here is the
# format, not the cost.  (A real header's slot takes about a second.)
LUKS_ARGON2="--pbkdf-memory 32 --pbkdf-force-iterations 4 --pbkdf-parallel 1"
LUKS_PBKDF2="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"

# luks_format HEADER DISK KEYFILE cryptsetup-options...
# A detached header for DISK (a regular file, left untouched), slot 0
# opened by the bytes of KEYFILE.  Small metadata and key slot areas keep
# the header file small.
luks_format ()
{
    local hdr="$1" disk="$2" kf="$3"; shift 3
    local small=()
    case " $* " in
        *" --type luks1 "*) ;;
        *) small=(--luks2-metadata-size 16k --luks2-keyslots-size 1m) ;;
    esac
    rm -f "$hdr"
    cryptsetup luksFormat --batch-mode --header "$hdr" --key-file "$kf" \
        "${small[@]}" "$@" "$disk" 2> "$tmp/cryptsetup.err" || {
        cat "$tmp/cryptsetup.err" >&2
        fail "cryptsetup luksFormat $* failed"
    }
}

# luks_add_key HEADER DISK OLD_KEYFILE NEW_KEYFILE cryptsetup-options...
luks_add_key ()
{
    local hdr="$1" disk="$2" old="$3" new="$4"; shift 4
    cryptsetup luksAddKey --batch-mode --header "$hdr" --key-file "$old" \
        "$@" "$disk" "$new" ||
        fail "cryptsetup luksAddKey $* failed"
}

# volume_key HEADER KEYFILE OUT: the volume key as cryptsetup itself
# reports it (older versions spell the options "master key").
volume_key ()
{
    local hdr="$1" kf="$2" out="$3"
    rm -f "$out"
    if cryptsetup luksDump --help 2>&1 | grep -q -- --dump-volume-key; then
        cryptsetup luksDump --dump-volume-key --batch-mode --key-file "$kf" \
            --volume-key-file "$out" "$hdr" > /dev/null
    else
        cryptsetup luksDump --dump-master-key --batch-mode --key-file "$kf" \
            --master-key-file "$out" "$hdr" > /dev/null
    fi || fail "cryptsetup cannot dump the volume key of $hdr"
    [ -s "$out" ] || fail "cryptsetup wrote no volume key for $hdr"
}

# luks_serve DISK HEADER "key params" COMMAND [nbdkit options]: run
# COMMAND against the filter opening HEADER over the file plugin on DISK.
luks_serve ()
{
    local disk="$1" hdr="$2" key="$3" cmd="$4"; shift 4
    # shellcheck disable=SC2086
    crypt_nbdkit "$@" -U - --filter=cryptinline file "$disk" \
        crypt-header="$hdr" $key --run "$cmd"
}

# expect_refusal "expected message" HEADER DISK "key params" [more params]:
# the server opening HEADER must not start (see expect_refused_start).
expect_refusal ()
{
    local want="$1" hdr="$2" disk="$3" key="$4"; shift 4
    # shellcheck disable=SC2086
    expect_refused_start "$want" "$disk" crypt-header="$hdr" $key "$@"
}
