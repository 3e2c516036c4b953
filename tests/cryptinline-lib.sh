# Shared by the cryptinline filter's shell tests:
#   source "$srcdir/cryptinline-lib.sh"
source "$srcdir/functions.sh"

requires "$PYTHON3" -c 'import nbd, cryptography'
requires nbdkit --version

# The crypt modes every correctness test runs in.
CRYPT_MODES="${CRYPT_MODES:-inline pool auto}"

# Per-test scratch directory, removed at exit.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/cryptinline.XXXXXX")"
cleanup_fn rm -rf "$tmp"

check_py="$srcdir/cryptinline_check.py"

# Every server this test starts is bounded in time, so no test can hang.
CRYPT_TIMEOUT="${CRYPT_TIMEOUT:-300}"

# nbdkit with this tree's filter.  Under "make check-tsan",
# CRYPTINLINE_FILTER names the ThreadSanitizer build of the filter and
# CRYPTINLINE_PRELOAD the ThreadSanitizer runtime, which must be loaded
# into nbdkit before the filter.
crypt_nbdkit ()
{
    local args=() a
    for a in "$@"; do
        case "$a" in
            --filter=cryptinline) args+=("--filter=${CRYPTINLINE_FILTER:-cryptinline}") ;;
            *) args+=("$a") ;;
        esac
    done
    if [ -n "${CRYPTINLINE_PRELOAD:-}" ]; then
        LD_PRELOAD="$CRYPTINLINE_PRELOAD" \
            timeout -k 10 "$CRYPT_TIMEOUT" nbdkit "${args[@]}"
    else
        timeout -k 10 "$CRYPT_TIMEOUT" nbdkit "${args[@]}"
    fi
}

# A fresh random raw key of $2 bytes in file $1.
make_key () { head -c "$2" /dev/urandom > "$1"; }
