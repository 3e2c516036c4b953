#!/usr/bin/env bash
# The image is opened read-only at start and read-write when the first
# writer connects: that must reopen the same file, not whatever the path
# names by then.  Here the image is renamed and another image put at its
# path before the first write: the write must land in the served image,
# and the other file must not change (it would otherwise be written
# with the served image's zone table).
source "$srcdir/functions.sh"
requires nbdkit --version
requires "$PYTHON3" -c 'import nbd'

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
img="$tmp/img"
geometry="size=8M zone-size=1M conventional-zones=1"

# shellcheck disable=SC2086
nbdkit -U - zbd emulate="$img" $geometry --run '"$PYTHON3" -m nbd -u "$uri" -c "h.pwrite(b\"o\" * 4096, 2097152); h.flush()"' \
    || fail "cannot create the image"
cp "$img" "$tmp/impostor"
cp "$img" "$tmp/impostor.orig"

export img tmp
nbdkit -U - zbd emulate="$img" --run '
    mv "$img" "$img.served" && mv "$tmp/impostor" "$img" &&
    "$PYTHON3" -m nbd -u "$uri" -c "h.pwrite(b\"s\" * 4096, 1048576); h.flush()"' \
    || fail "write after the image was renamed"

cmp "$img" "$tmp/impostor.orig" \
    || fail "the file now at the image's path was written to"
nbdkit -U - -r zbd emulate="$img.served" --run '"$PYTHON3" -m nbd -u "$uri" -c "
assert h.pread(4096, 1048576) == b\"s\" * 4096, \"the write is not in the served image\"
assert h.pread(4096, 2097152) == b\"o\" * 4096
"' || fail "the served image does not hold the write"
echo "reopen: the write went to the served image, the impostor is unchanged"
