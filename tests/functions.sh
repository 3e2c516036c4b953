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
# The cleanup runs on EXIT only: a test stopped by SIGINT or SIGTERM
# exits 130 or 143 (and so fails), never with the status of whatever
# command happened to finish last, which is usually 0.
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
trap _run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Print a message and fail.
fail () { echo "$0: FAIL: $*" >&2; exit 1; }

# nbdsh runs whichever "python3" comes first in PATH; make that the
# configured $PYTHON3 (the one with the nbd and cryptography modules), by a
# directory holding only a python3 link, so nothing else in PATH changes.
if [ -n "${PYTHON3:-}" ] && [ "$(command -v python3 || :)" != "$PYTHON3" ]; then
    _python3_dir="$(mktemp -d)"
    ln -s "$PYTHON3" "$_python3_dir/python3"
    PATH="$_python3_dir:$PATH"
    export PATH
    cleanup_fn rm -rf "$_python3_dir"
fi
