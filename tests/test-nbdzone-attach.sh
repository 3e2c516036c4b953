#!/usr/bin/env bash
# nbdzone attach: the refusals that need no ublk device.  Each is one
# clear line and a non-zero exit, before any device is created:
# geometries a zoned ublk device cannot have, bad options, a non-zoned
# export, and a machine without the ublk driver (the real devices are
# tested in the VM on Linux 6.12, vm/guest-attach.sh).
source "$srcdir/functions.sh"
requires nbdkit --version
PATH="$top_builddir/tools:$PATH"
requires nbdzone --help

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"

# expect_refusal MESSAGE NBDKIT-ARGS... -- NBDZONE-ATTACH-ARGS...
expect_refusal () {
    local msg="$1" args=() attach=()
    shift
    while [ "$1" != -- ]; do args+=("$1"); shift; done
    shift
    attach=("$@")
    local status=0
    nbdkit -U - "${args[@]}" \
           --run "timeout 60 nbdzone attach \"\$uri\" ${attach[*]}" \
           2>"$tmp/err" || status=$?
    cat "$tmp/err"
    # Status 1, nothing else: a timeout (124) or a crash (139) after the
    # line is not a clean refusal.
    [ $status -ne 0 ] || fail "attach succeeded with ${args[*]} ${attach[*]}"
    [ $status -eq 1 ] ||
        fail "attach with ${args[*]} ${attach[*]}: exit status $status, expected 1"
    grep -v '^nbdkit:' "$tmp/err" > "$tmp/ours" || :
    [ "$(wc -l < "$tmp/ours")" -eq 1 ] || fail "not one line: $(cat "$tmp/ours")"
    grep -qF -e "$msg" "$tmp/ours" || fail "expected \"$msg\""
}

# The kernel's zoned ublk devices need power-of-two zone sizes.
expect_refusal 'the zone size, 3145728 bytes, is not a power of two sectors, which zoned ublk devices need' \
    zbd emulate=memory size=24M zone-size=3M -- --foreground
# Zones an NBD request (a reset or finish: under 4 GiB) cannot cover.
expect_refusal 'zones of 8589934592 bytes are too large: an NBD request (a zone reset or finish) holds less than 4 GiB' \
    zbd emulate=memory size=16G zone-size=8G -- --foreground
# Several queues are several connections: a flush on one must cover the
# others, which the server promises with multi-conn.
expect_refusal 'does not allow several connections to share its cache (multi-conn), which --queues 2 needs; use --queues 1' \
    --filter=multi-conn zbd emulate=memory size=8M zone-size=1M \
    multi-conn-mode=disable -- --queues 2 --foreground
# An export without zones.
expect_refusal 'is not a zoned export' memory 8M -- --foreground
# Options.
expect_refusal '--queues "0" is not a number from 1 to 64' \
    zbd emulate=memory size=8M zone-size=1M -- --queues 0
expect_refusal '--depth "x" is not a number from 1 to 4096' \
    zbd emulate=memory size=8M zone-size=1M -- --depth x
expect_refusal 'attach: unknown or incomplete option "--frob"' \
    zbd emulate=memory size=8M zone-size=1M -- --frob
expect_refusal '--reconnect "-1" is not a number from 0 to 86400' \
    zbd emulate=memory size=8M zone-size=1M -- --reconnect -1

# A zoned export that does not say which disk it is (here the memory
# plugin with a zoned description of its own): --reconnect cannot tell
# whether the server it reaches again is the same disk, so it is off,
# and attach says so, before anything else (here: no ublk driver).
zoned_desc='zoned=host-managed zone-size=1048576 zone-capacity=1048576 zones=8 conventional=none max-open=0 max-active=0 block-size=512'
status=0
NBDZONE_UBLK_CONTROL="$tmp/no-ublk-control" \
    nbdkit -U - --filter=exportname memory 8M exportdesc="fixed:$zoned_desc" \
    --run 'timeout 60 nbdzone attach "$uri" --foreground' 2>"$tmp/err" || status=$?
cat "$tmp/err"
[ $status -eq 1 ] || fail "attach without ublk: exit status $status"
grep -qF 'does not say which disk it serves (no disk-id in its export description: not the zbd plugin, or an older one), so a broken connection cannot be resumed safely: --reconnect is off' "$tmp/err" ||
    fail "no warning that --reconnect is off without a disk-id"
status=0
NBDZONE_UBLK_CONTROL="$tmp/no-ublk-control" \
    nbdkit -U - --filter=exportname memory 8M exportdesc="fixed:$zoned_desc" \
    --run 'timeout 60 nbdzone attach "$uri" --foreground --reconnect 0' \
    2>"$tmp/err" || status=$?
! grep -qF 'reconnect is off' "$tmp/err" || fail "the warning with --reconnect 0"

# No ublk driver: the control device is missing.  What the message says
# depends on this kernel: older than 6.6, or 6.6+ without ublk_drv.
release="$(uname -r)"
major="${release%%.*}"; minor="${release#*.}"; minor="${minor%%[!0-9]*}"
if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 6 ]; }; then
    msg="this kernel (Linux $release) is older than 6.6: zoned ublk devices need Linux 6.6 or later"
else
    msg="$tmp/no-ublk-control does not exist: the ublk_drv module is not loaded (modprobe ublk_drv)"
fi
for mode in --foreground ""; do
    NBDZONE_UBLK_CONTROL="$tmp/no-ublk-control" expect_refusal "$msg" \
        zbd emulate=memory size=8M zone-size=1M conventional-zones=1 -- $mode
    grep -qF "cannot attach nbd+unix:" "$tmp/ours" || fail "no URI in the message"
done
# --recover: a device name that is not one, and no ublk driver to take
# a device over from: one line naming the device and the export.
expect_refusal '"/dev/sda" is not a ublk device (use /dev/ublkbN)' \
    zbd emulate=memory size=8M zone-size=1M -- --recover /dev/sda
NBDZONE_UBLK_CONTROL="$tmp/no-ublk-control" expect_refusal "$msg" \
    zbd emulate=memory size=8M zone-size=1M -- --recover /dev/ublkb3 --foreground
grep -qF "cannot recover /dev/ublkb3 with nbd+unix:" "$tmp/ours" ||
    fail "the --recover refusal does not name the device and the export"
grep -qF "; nothing was sent" "$tmp/ours" ||
    fail "the --recover refusal does not say that nothing was sent"
# The same check guards detach: status 1 and one line.
status=0
NBDZONE_UBLK_CONTROL="$tmp/no-ublk-control" nbdzone detach /dev/ublkb0 \
    2>"$tmp/err" || status=$?
cat "$tmp/err"
[ $status -ne 0 ] || fail "detach succeeded without ublk"
[ $status -eq 1 ] || fail "detach without ublk: exit status $status, expected 1"
[ "$(wc -l < "$tmp/err")" -eq 1 ] || fail "detach without ublk: not one line"
grep -qF "cannot detach /dev/ublkb0: " "$tmp/err" || fail "detach message"
status=0
nbdzone detach /dev/sda 2>"$tmp/err" || status=$?
[ $status -eq 1 ] || fail "detach /dev/sda: exit status $status, expected 1"
[ "$(wc -l < "$tmp/err")" -eq 1 ] || fail "detach /dev/sda: not one line: $(cat "$tmp/err")"
grep -qF '"/dev/sda" is not a ublk device (use /dev/ublkbN)' "$tmp/err" ||
    fail "detach of a non-ublk device: $(cat "$tmp/err")"
