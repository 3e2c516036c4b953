#!/bin/sh
# The reboot case: the persistent emulated image across a power-off.
#
# run-vm.sh boots the guest twice with one persistent (not zoned) disk,
# the second NVMe controller's namespace, holding a btrfs file system
# with the plugin's emulated zone image on it:
#
#   sh /guest-reboot.sh write   first boot: make the file system and the
#       image, stream encrypted writes into three zones with a flush
#       every few writes, keep writing unflushed, then power off at once
#       (no sync, no unmount, nbdkit still running): what the kernel had
#       not been told to make durable is lost, as in a power cut.
#       Prints "reboot-flushed ZONE END" for each zone's last flushed end
#       and "reboot-written ZONE END" for what was sent, on the TAP port;
#       run-vm.sh passes them to the second boot.
#   sh /guest-reboot.sh check   second boot: serve the image again, and
#       for each zone check the crash invariant of DESIGN.md: the WP is
#       at least the last flushed end, at most what was written, and
#       every byte below it reads back as written.  One TAP line.
#
# Expectations reach the second boot on the kernel command line as
# zoned.expect=ZONE:FLUSHED:WRITTEN,...

ZONED=/opt/zoned
PLUGIN=$ZONED/lib/nbdkit-zbd-plugin.so
FILTER=$ZONED/lib/nbdkit-cryptinline-filter.so
CLIENT=$ZONED/bin/zone-client
TAPDEV=/dev/ttyS1
MNT=/mnt/persist
ZONE_SIZE=$((16 << 20))
NAME="reboot: flushed writes and write pointers of the emulated image survive a power-off"

tap () { echo "$*"; echo "$*" > $TAPDEV; }
fail ()
{
    echo "FAIL: $*"
    [ -s /tmp/srv.log ] && tail -n 8 /tmp/srv.log
    tap "not ok 1 - $NAME ($*)"
    tap "1..1"
    exit 1
}

# The persistent disk: the NVMe namespace that is not zoned.
persistent_disk ()
{
    local b
    for b in /sys/block/nvme*n*; do
        [ "$(cat $b/queue/zoned)" = none ] && { basename $b; return 0; }
    done
    return 1
}

serve ()
{
    local i=0
    rm -f /tmp/srv.sock
    nbdkit -f -U /tmp/srv.sock -P /tmp/srv.pid --filter=$FILTER $PLUGIN \
        emulate=$MNT/zoned.img size=256M zone-size=16M conventional-zones=1 \
        crypt-key-file=$MNT/key 2>>/tmp/srv.log &
    while [ ! -S /tmp/srv.sock ]; do
        i=$((i + 1)); [ $i -gt 300 ] && fail "nbdkit did not start"
        sleep 0.1
    done
}
URI="nbd+unix:///?socket=/tmp/srv.sock"

write_phase ()
{
    local disk z pids= i
    disk=$(persistent_disk) || fail "no persistent disk"
    mkfs.btrfs -f /dev/$disk > /tmp/mkfs.out 2>&1 || { cat /tmp/mkfs.out; fail "mkfs.btrfs"; }
    mkdir -p $MNT
    mount -t btrfs /dev/$disk $MNT || fail "mount"
    dd if=/dev/urandom of=$MNT/key bs=64 count=1 status=none
    sync
    serve
    # The first client that writes creates the image; make it durable
    # (with its key) before the streams start.
    $CLIENT flush "$URI" || fail "flush"
    sync
    for z in 1 2 3; do
        # 64K chunks, a flush every 4, 20 ms apart: a stream of a few
        # seconds, cut by the power-off below.
        $CLIENT stream "$URI" $((z * ZONE_SIZE)) $((12 << 20)) $((70 + z)) 65536 4 20 \
            > /tmp/stream$z.out 2>&1 &
        pids="$pids $!"
    done
    # Power off once every zone has flushed at least 1 MiB, writes still
    # in flight.
    i=0
    while :; do
        ok=1
        for z in 1 2 3; do
            f=$(sed -n 's/^flushed //p' /tmp/stream$z.out | tail -n 1)
            [ -n "$f" ] && [ $f -ge $((z * ZONE_SIZE + (1 << 20))) ] || ok=
        done
        [ -n "$ok" ] && break
        i=$((i + 1)); [ $i -gt 1200 ] && fail "the streams flushed nothing in 120 s"
        sleep 0.1
    done
    for z in 1 2 3; do
        f=$(sed -n 's/^flushed //p' /tmp/stream$z.out | tail -n 1)
        echo "reboot-flushed $z $f" > $TAPDEV
        echo "reboot-flushed $z $f"
        # What may have been sent: the end of the stream.
        echo "reboot-written $z $((z * ZONE_SIZE + (12 << 20)))" > $TAPDEV
    done
    echo "reboot-poweroff" > $TAPDEV
    # No sync: the kernel's dirty pages, btrfs's unflushed state and
    # nbdkit's unflushed writes are lost, as in a power cut.
    poweroff -n -f
}

check_phase ()
{
    local disk expect e z flushed written wp start
    disk=$(persistent_disk) || fail "no persistent disk"
    mkdir -p $MNT
    mount -t btrfs /dev/$disk $MNT || fail "mount after the power-off"
    [ -s $MNT/zoned.img ] || fail "no image after the power-off"
    expect=$(sed -n 's/.*zoned\.expect=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
    [ -n "$expect" ] || fail "no expectations from the first boot"
    serve
    nbdinfo --map "$URI" > /tmp/map || fail "nbdinfo --map"
    for e in $expect; do
        z=${e%%:*}; e=${e#*:}; flushed=${e%%:*}; written=${e#*:}
        start=$((z * ZONE_SIZE))
        # The WP: where the zone's data extent ends (block status).
        wp=$(awk -v s=$start -v e=$((start + ZONE_SIZE)) \
                '$1 >= s && $1 < e && $3 == 3 { print $1; exit }' /tmp/map)
        [ -n "$wp" ] || wp=$((start + ZONE_SIZE))
        echo "zone $z: WP $((wp - start)), flushed $((flushed - start)), written $((written - start))"
        [ $wp -ge $flushed ] || fail "zone $z: WP $((wp - start)) is below the flushed $((flushed - start))"
        [ $wp -le $written ] || fail "zone $z: WP $((wp - start)) is beyond what was written"
        $CLIENT verify "$URI" $start $((wp - start)) $((70 + z)) ||
            fail "zone $z: data below the WP differs"
    done
    # The image takes writes at the WP again.
    $CLIENT write "$URI" $wp 65536 $((70 + z)) || fail "write at the WP after the power-off"
    kill "$(cat /tmp/srv.pid)"
    tap "ok 1 - $NAME"
    tap "1..1"
}

case "${1:-}" in
    write) write_phase ;;
    check) check_phase ;;
    *) echo "usage: guest-reboot.sh write|check" >&2; exit 2 ;;
esac
