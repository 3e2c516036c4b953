# shellcheck shell=bash
# Run zbd-profile.py against one backend, with or without the filter.
#   zbd-profile.sh memory|file [filter]
# Sourced by the test-zbd-profile-*.sh wrappers.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd, cryptography'
requires nbdkit --version

backend="$1"
with_filter="${2:-}"
tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"

geometry="size=64M zone-size=4M zone-capacity=3M conventional-zones=2 reorder-timeout=1s"
image=
if [ "$backend" = file ]; then
    image="$tmp/zoned.img"
    emulate="emulate=$image"
else
    emulate="emulate=memory"
fi
filter_args=()
key=
if [ -n "$with_filter" ]; then
    key="$tmp/key"
    head -c 64 /dev/urandom > "$key"
    filter_args=(--filter=cryptinline)
fi

# shellcheck disable=SC2086
status=0
nbdkit -U - "${filter_args[@]}" zbd $emulate $geometry \
       ${key:+crypt-key-file=$key} \
       --run "timeout 120 \"$PYTHON3\" \"$srcdir/zbd-profile.py\" \"\$uri\" \"$image\" $key" \
       2>"$tmp/log" || status=$?
cat "$tmp/log" >&2
[ $status -eq 0 ] || fail "zoned NBD profile ($backend${with_filter:+ + cryptinline})"
# Without the filter the plugin itself refused the misaligned writes
# (at and just above the WP of zone 5), each with its log line.
if [ -z "$with_filter" ]; then
    for w in "write of 100 bytes at 20979712" "write of 4096 bytes at 20979968"; do
        grep -qF "error: $w is not aligned to the 512-byte block size: EINVAL" "$tmp/log" ||
            fail "no log line from the plugin for the misaligned $w"
    done
fi
