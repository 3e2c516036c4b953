#!/usr/bin/env bash
# The libzbd backend refuses, before serving and with one clear line,
# a regular file, /dev/null, a missing path, and emulation parameters.
# (Real zoned devices are tested in the VM.)
source "$srcdir/functions.sh"
requires nbdkit --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
truncate -s 1M "$tmp/regular"

nbdkit zbd --dump-plugin > "$tmp/dump" || fail "--dump-plugin"
grep -qx 'zbd_libzbd=yes' "$tmp/dump" || fail "--dump-plugin: no zbd_libzbd=yes"
grep -qx 'zbd_emulate=yes' "$tmp/dump" || fail "--dump-plugin: no zbd_emulate=yes"
grep -qx 'zbd_parameters=device,emulate,dir,size,zone-size,zone-capacity,conventional-zones,max-open-zones,max-active-zones,block-size,reorder-timeout' "$tmp/dump" \
    || fail "--dump-plugin: no zbd_parameters= list"

refused ()
{
    local what="$1" expect="$2"; shift 2
    local status=0
    # Status 1, nothing else: a timeout (124) or a crash (139) after the
    # line is not a clean refusal.
    timeout 30 nbdkit -U - "$@" --run true 2>"$tmp/err" || status=$?
    [ $status -ne 0 ] || fail "$what: nbdkit served anyway"
    [ $status -eq 1 ] || {
        cat "$tmp/err"; fail "$what: exit status $status, expected 1"; }
    [ "$(grep -c error "$tmp/err")" -eq 1 ] || {
        cat "$tmp/err"; fail "$what: expected exactly one error line"; }
    grep -qF -- "$expect" "$tmp/err" || {
        cat "$tmp/err"; fail "$what: no message \"$expect\""; }
    echo "refused ($what): $(cat "$tmp/err")"
}

refused "regular file" \
        "device=$tmp/regular: is a regular file, not a zoned block device; for an emulated zoned disk use emulate=$tmp/regular" \
        zbd "$tmp/regular"
refused "/dev/null" "device=/dev/null: is not a block device" zbd /dev/null
refused "missing path" "device=$tmp/missing: No such file or directory" \
        zbd device="$tmp/missing"
refused "no backend" "give exactly one of device=PATH" zbd
refused "both backends" "give exactly one of device=PATH" \
        zbd /dev/null emulate=memory
refused "geometry with a device" \
        "size, zone and limit parameters are for emulate= only" \
        zbd /dev/null zone-size=1M
refused "unknown parameter" "unknown parameter 'zonesize'" \
        zbd emulate=memory zonesize=1M
