# Shared by the ordering stress tests (test-zbd-ordering*.sh): 4
# connections x 8 writes in flight, shuffled within each window, thousands
# of writes into the same zones; every write must succeed and read back.
# Source after functions.sh.  Sets $tmp (with a 64-byte key in $tmp/key)
# and $geometry, and defines: run DESCRIPTION NBDKIT-ARGS...
requires nbdkit --version
requires test -x ./zone-writer

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
head -c 64 /dev/urandom > "$tmp/key"
# shellcheck disable=SC2034
geometry="size=64M zone-size=1M conventional-zones=2 reorder-timeout=20s"

run ()
{
    local what="$1"; shift
    echo "ordering: $what"
    nbdkit -U - "$@" --run 'timeout 150 ./zone-writer "$uri" 2 40 4 8' \
        || fail "ordering stress: $what"
}
