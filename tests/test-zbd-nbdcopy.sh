#!/usr/bin/env bash
# An ordinary NBD client that pipelines: nbdcopy (several connections,
# many requests in flight each) copies a disk image into zoned exports,
# with and without the filter; the copy reads back identical and every
# sequential zone ends full.
source "$srcdir/functions.sh"
PATH="$top_builddir/tools:$PATH"
requires nbdkit --version
requires nbdcopy --version
requires nbdzone --help

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
head -c 32M /dev/urandom > "$tmp/src"
head -c 64 /dev/urandom > "$tmp/key"

for filter in "" cryptinline; do
    for backend in memory "$tmp/img"; do
        rm -f "$tmp/img" "$tmp/out"
        what="${filter:-plugin} on ${backend##*/}"
        nbdkit -U - ${filter:+--filter=$filter} zbd emulate="$backend" \
               size=32M zone-size=8M conventional-zones=1 \
               ${filter:+crypt-key-file="$tmp/key"} \
               --run "set -e
                      timeout 120 nbdcopy \"$tmp/src\" \"\$uri\"
                      timeout 120 nbdcopy \"\$uri\" \"$tmp/out\"
                      nbdzone report \"\$uri\" > \"$tmp/report\"" \
            || fail "nbdcopy into the zoned export ($what)"
        cmp "$tmp/src" "$tmp/out" || fail "copy differs ($what)"
        [ "$(grep -c 'zcond:14(fu)' "$tmp/report")" -eq 3 ] \
            || { cat "$tmp/report"; fail "sequential zones not full ($what)"; }
        echo "nbdcopy: $what: ok"
    done
done
