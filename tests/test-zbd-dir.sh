#!/usr/bin/env bash
# One server for a directory of drives (dir=DIR): every zone image (or
# link to one) in DIR is an export of its name, listed with its
# geometry; each has its own data, WPs and sync state; a drive added
# later is served without a restart; a name that is not an export is
# refused with a log line that names the exports; a drive held by
# another server is refused alone.  The same on null_blk and ZNS
# drives side by side: make check-vm.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
d="$tmp/drives"
mkdir "$d" "$d/sub"
for n in a b c; do
    nbdkit -U - zbd emulate="$d/$n" size=8M zone-size=1M \
        --run 'nbdinfo "$uri" >/dev/null'
done
ln -s a "$d/link-to-a"
ln -s missing "$d/dangling"
echo "not an image" > "$d/notes.txt"
cp "$d/c" "$d/.hidden"
serve ()
{
    nbdkit -U - "$@" zbd dir="$d" \
        --run "\"$PYTHON3\" \"$srcdir/zbd-dir.py\" \"\$unixsocket\" $phase"
}

phase=serve
serve 2>"$tmp/err" || { cat "$tmp/err"; fail "dir=: $phase"; }
grep -q 'dir=.*: no export "nope" (No such file or directory); the exports are: a, b, c, link-to-a$' "$tmp/err" ||
    { cat "$tmp/err"; fail "no line naming the exports for an unknown name"; }
grep -q 'export ""  *(none given) is not a drive name; the exports are: a, b, c, link-to-a$' "$tmp/err" ||
    { cat "$tmp/err"; fail "no line naming the exports for an empty name"; }
grep -q 'no export "sub" (neither a block device nor a file)' "$tmp/err" ||
    { cat "$tmp/err"; fail "no line saying what sub is"; }

# Added while serving: the listing and the connection find it.
phase=added
nbdkit -U - zbd dir="$d" --run "
    nbdkit -U - zbd emulate=\"$d/d\" size=8M zone-size=1M \
        --run 'nbdinfo \"\$uri\" >/dev/null' &&
    \"$PYTHON3\" \"$srcdir/zbd-dir.py\" \"\$unixsocket\" added" ||
    fail "dir=: a drive added while serving"

phase=restart
serve || fail "dir=: after a restart"

# b held by another server.
phase=held
nbdkit -U - zbd emulate="$d/b" --run "
    nbdkit -U - zbd dir=\"$d\" --run '\"$PYTHON3\" \"$srcdir/zbd-dir.py\" \"\$unixsocket\" held' 2>\"$tmp/err\"" ||
    { cat "$tmp/err"; fail "dir=: a drive held by another server"; }
grep -q 'emulate=.*/b: the image is in use by another server' "$tmp/err" ||
    { cat "$tmp/err"; fail "no line saying b is in use"; }

phase=sync-fail
serve -D zbd.fail_sync=1 2>"$tmp/err" || { cat "$tmp/err"; fail "dir=: $phase"; }
[ "$(grep -c 'fdatasync failed' "$tmp/err")" -eq 1 ] ||
    { cat "$tmp/err"; fail "not one line for the failed sync"; }

phase=closing
ZBD_LOG="$tmp/err" serve -v -D zbd.close_delay_ms=1500 2>"$tmp/err" || { cat "$tmp/err"; fail "dir=: $phase"; }
grep 'in use by another server' "$tmp/err" && fail "dir=: a drive closing refused its next connection"

# Refusals at start.
if nbdkit -U - zbd dir="$d" size=8M --run true 2>"$tmp/err"; then
    fail "dir= with size= started"
fi
grep -q 'dir=.*: size, zone and limit parameters are for emulate= only' "$tmp/err" ||
    { cat "$tmp/err"; fail "no line refusing size= with dir="; }
if nbdkit -U - zbd dir="$d/notes.txt" --run true 2>"$tmp/err"; then
    fail "dir= on a file started"
fi
grep -q 'dir=.*notes.txt: not a directory' "$tmp/err" ||
    { cat "$tmp/err"; fail "no line refusing a file as dir="; }
if nbdkit -U - zbd dir="$d" emulate=memory --run true 2>"$tmp/err"; then
    fail "dir= with emulate= started"
fi
grep -q 'give exactly one of device=PATH' "$tmp/err" ||
    { cat "$tmp/err"; fail "no line refusing dir= with emulate="; }
echo "dir=: ok"
