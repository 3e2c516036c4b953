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
# into nbdkit before the filter (see crypt_nbdkit_tsan).
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
        crypt_nbdkit_tsan "${args[@]}"
    else
        timeout -k 10 "$CRYPT_TIMEOUT" nbdkit "${args[@]}"
    fi
}

# The TSan runtime cannot follow nbdkit's --run (the forked shell
# crashes), so emulate it: serve "-U -" on a socket in $tmp in the
# foreground with the runtime preloaded, run the --run command without
# it, then stop nbdkit; a race report makes nbdkit exit non-zero.
_tsan_count=0
crypt_nbdkit_tsan ()
{
    local args=() run= prev= a pid status=0 i
    _tsan_count=$((_tsan_count + 1))
    local sock="$tmp/tsan$_tsan_count.sock"
    for a in "$@"; do
        if [ "$prev" = --run ]; then run="$a"; prev=; continue; fi
        if [ "$a" = --run ]; then prev=--run; continue; fi
        if [ "$prev" = -U ] && [ "$a" = - ]; then a="$sock"; fi
        prev="$a"
        args+=("$a")
    done
    # The system nbdkit itself (bash, as in the ./nbdkit wrapper, crashes
    # under the preloaded runtime); the filter is given by its path.
    LD_PRELOAD="$CRYPTINLINE_PRELOAD" "$CRYPTINLINE_NBDKIT" -f "${args[@]}" &
    pid=$!
    for ((i = 0; i < 600; i++)); do
        [ -S "$sock" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    if [ -S "$sock" ]; then
        uri="nbd+unix:///?socket=$sock" unixsocket="$sock" \
            timeout -k 10 "$CRYPT_TIMEOUT" sh -c "$run" || status=$?
        kill $pid 2>/dev/null || :
    fi
    wait $pid || { echo "nbdkit (ThreadSanitizer build) exited with $?" >&2; status=1; }
    return $status
}

# A fresh random raw key of $2 bytes in file $1.
make_key () { head -c "$2" /dev/urandom > "$1"; }

# expect_refused_start "expected message" DISK PARAMS...: nbdkit with the
# filter over the file plugin on DISK, given PARAMS, must not start: exit
# status 1, nothing served, exactly one error line and it holds the
# message, no libgcrypt warning, and DISK unchanged.
expect_refused_start ()
{
    local want="$1" disk="$2"; shift 2
    local status=0 before
    before="$(sha256sum < "$disk")"
    rm -f "$tmp/served"
    crypt_nbdkit -U - --filter=cryptinline file "$disk" "$@" \
        --run "touch $tmp/served" 2> "$tmp/err" || status=$?
    echo "refusal of: $*"
    cat "$tmp/err"
    [ $status -eq 1 ] || fail "exit status $status, expected 1, for: $*"
    [ ! -e "$tmp/served" ] || fail "served despite a bad configuration: $*"
    [ "$(grep -c 'error' "$tmp/err")" -eq 1 ] ||
        fail "expected exactly one error line for: $*"
    grep -qF -- "$want" "$tmp/err" || fail "message lacks \"$want\" for: $*"
    ! grep -q -- 'insecure memory' "$tmp/err" ||
        fail "libgcrypt's secure memory warning leaked for: $*"
    [ "$(sha256sum < "$disk")" = "$before" ] ||
        fail "the disk changed although the configuration was refused: $*"
}

# make_zone_images DIR NAME...: an emulated zone image DIR/NAME of 8
# zones of 1 MiB for each NAME, as a drives directory for dir=.
make_zone_images ()
{
    local dir="$1" n; shift
    for n in "$@"; do
        nbdkit -U - zbd emulate="$dir/$n" size=8M zone-size=1M \
            --run 'nbdinfo "$uri" >/dev/null' || fail "cannot make image $dir/$n"
    done
}

# refused_dir DRIVES "expected message" PARAMS...: the filter on the zbd
# plugin's dir=DRIVES, given PARAMS, must not start, and must say so.
refused_dir ()
{
    local drives="$1" want="$2"; shift 2
    if crypt_nbdkit -U - --filter=cryptinline zbd dir="$drives" "$@" --run true 2>"$tmp/err"; then
        fail "started with $*"
    fi
    grep -qF "$want" "$tmp/err" || { cat "$tmp/err"; fail "no line \"$want\" for $*"; }
}
