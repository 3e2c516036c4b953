# Shared by the shell tests: source "$srcdir/functions.sh".
set -e
set -u

# Fail (never skip) when a tool the test needs is missing: a skipped test
# must not pass for a passed one.
requires ()
{
    if ! "$@" >/dev/null 2>&1; then
        echo "$0: required tool missing or not working: $*" >&2
        exit 1
    fi
}

# Remove files and run commands when the test exits, whatever the reason.
cleanup_fns=()
cleanup_fn () { cleanup_fns+=("$*"); }
_run_cleanup ()
{
    local status=$?
    local i
    for ((i=${#cleanup_fns[@]}-1; i>=0; i--)); do
        eval "${cleanup_fns[$i]}" || :
    done
    exit $status
}
trap _run_cleanup EXIT INT TERM

# Print a message and fail.
fail () { echo "$0: FAIL: $*" >&2; exit 1; }
