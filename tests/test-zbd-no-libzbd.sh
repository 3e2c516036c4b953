#!/usr/bin/env bash
# A plugin built without libzbd (configure --without-libzbd) serves
# emulated zones, says so in --dump-plugin, and refuses device= with one
# line that says why and what to use instead.
source "$srcdir/functions.sh"
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"

nbdkit zbd --dump-plugin > "$tmp/dump" || fail "--dump-plugin"
grep -qx 'zbd_libzbd=no' "$tmp/dump" || fail "--dump-plugin: no zbd_libzbd=no"
grep -qx 'zbd_emulate=yes' "$tmp/dump" || fail "--dump-plugin: no zbd_emulate=yes"

if timeout 30 nbdkit -U - zbd device=/dev/null --run true 2>"$tmp/err"; then
    fail "device= served without libzbd"
fi
[ "$(grep -c error "$tmp/err")" -eq 1 ] || { cat "$tmp/err"; fail "not one error line"; }
grep -qF "device=/dev/null: this zbd plugin was built without libzbd, so it cannot serve real zoned devices; use emulate=FILE|memory" "$tmp/err" ||
    { cat "$tmp/err"; fail "no line saying the plugin has no libzbd"; }
nbdkit -U - zbd emulate=memory size=8M zone-size=1M --run 'nbdinfo "$uri" > /dev/null' ||
    fail "emulated zones without libzbd"
echo "without libzbd: $(cat "$tmp/err")"
