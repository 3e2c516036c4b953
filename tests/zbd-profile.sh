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
nbdkit -U - "${filter_args[@]}" zbd $emulate $geometry \
       ${key:+crypt-key-file=$key} \
       --run "timeout 120 \"$PYTHON3\" \"$srcdir/zbd-profile.py\" \"\$uri\" \"$image\" $key" \
    || fail "zoned NBD profile ($backend${with_filter:+ + cryptinline})"
