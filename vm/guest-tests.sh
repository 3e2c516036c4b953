#!/bin/sh
# The tests that run inside the VM on real kernel zoned devices.
#
# Run by /init as "sh /guest-tests.sh": creates the devices, runs every
# case in its own process under a timeout, prints one TAP line per case
# on the second serial port (/dev/ttyS1, read by the host) and
# everything, case output included, on the console.
#
# "sh /guest-tests.sh case FUNCTION ARGS..." runs one case; a case
# succeeds when its function returns 0.

ZONED=/opt/zoned
PLUGIN=$ZONED/lib/nbdkit-zbd-plugin.so
FILTER=$ZONED/lib/nbdkit-cryptinline-filter.so
NBDZONE=$ZONED/bin/nbdzone
CLIENT=$ZONED/bin/zone-client
W=/tmp/work
TAPDEV=/dev/ttyS1

# The devices and their geometry (null_blk sizes are in MiB).
NULLB0_ZONE_MB=8       # 16 zones, 2 conventional, 4K blocks
NULLB1_ZONE_MB=8       # 8 zones, capacity 6 MiB, at most 2 open
NULLB1_CAP_MB=6
NULLB1_MAX_OPEN=2
NVME_DEV=nvme0n1       # QEMU ZNS: 16 MiB zones, capacity 12 MiB (run-vm.sh)
ZONED_DEVICES="nullb0 nullb1 $NVME_DEV"

# ---- helpers for cases ---------------------------------------------------

say () { echo "$*"; }
# die MESSAGE: fail the running case.
die () { echo "FAIL: $*"; exit 1; }

# Zone geometry from sysfs, in bytes.
zone_bytes () { echo $(( $(cat /sys/block/$1/queue/chunk_sectors) * 512 )); }
nr_zones () { cat /sys/block/$1/queue/nr_zones; }

# zone_field DEV ZONE FIELD: one field of blkzone's report of zone number
# ZONE, in bytes for start/len/cap/wptr (wptr relative to the zone start),
# as printed for cond and type.
zone_field ()
{
    local dev=$1 zone=$2 field=$3 zs line v
    zs=$(cat /sys/block/$dev/queue/chunk_sectors)
    line=$(blkzone report -o $((zone * zs)) -c 1 /dev/$dev) ||
        die "blkzone report $dev zone $zone"
    case $field in
        start|len|cap|wptr)
            v=$(echo "$line" | sed -n "s/.*$field:\{0,1\} \(0x[0-9a-f]*\).*/\1/p")
            [ -n "$v" ] || die "no $field in: $line"
            echo $((v * 512)) ;;
        cond) echo "$line" | sed -n 's/.*zcond: *\([0-9]*\).*/\1/p' ;;
        type) echo "$line" | sed -n 's/.*type: *\([0-9]*\).*/\1/p' ;;
    esac
}

# The first sequential zone's number (after the conventional ones).
first_seq_zone ()
{
    local z=0 n
    n=$(nr_zones $1)
    while [ $z -lt $n ]; do
        [ "$(zone_field $1 $z type)" = 2 ] && { echo $z; return 0; }
        z=$((z + 1))
    done
    die "$1 has no sequential zone"
}

# gen_file FILE BYTES: random data.
gen_file () { dd if=/dev/urandom of="$1" bs=4096 count=$(($2 / 4096)) status=none; }

# start_nbdkit NAME NBDKIT-ARGS...: start nbdkit in the background on the
# socket $W/NAME.sock, logging to $W/NAME.log; its pid goes to $W/NAME.pid.
start_nbdkit ()
{
    local name=$1 i=0
    shift
    rm -f $W/$name.sock
    nbdkit -f --exit-with-parent -v -U $W/$name.sock -P $W/$name.pid "$@" \
        2>>$W/$name.log &
    while [ ! -S $W/$name.sock ] || [ ! -s $W/$name.pid ]; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 $! 2>/dev/null; then
            tail -n 20 $W/$name.log
            die "nbdkit $name did not start"
        fi
        sleep 0.1
    done
}
uri () { echo "nbd+unix:///?socket=$W/$1.sock"; }
stop_nbdkit ()
{
    local pid i=0
    [ -s $W/$1.pid ] || return 0
    pid=$(cat $W/$1.pid)
    kill $pid 2>/dev/null || :
    while kill -0 $pid 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 100 ] && { kill -9 $pid; break; }
        sleep 0.1
    done
    rm -f $W/$1.pid
}

# nbd_attach NAME [ARGS]: attach /dev/nbd0 to nbdkit NAME.
nbd_attach ()
{
    local name=$1
    shift
    timeout 30 nbd-client -unix $W/$name.sock /dev/nbd0 -b 4096 -N zoned "$@" ||
        die "nbd-client could not attach /dev/nbd0"
    [ "$(cat /sys/block/nbd0/size)" -gt 0 ] || die "/dev/nbd0 has no size"
}
nbd_detach () { timeout 30 nbd-client -d /dev/nbd0 >/dev/null 2>&1 || :; }

# dm_sysfs NAME: the sysfs directory of device-mapper device NAME (no
# udev here, so /dev/mapper/NAME is a plain device node, not a link).
dm_sysfs ()
{
    local mm
    mm=$(stat -L -c '%t %T' /dev/mapper/$1) || die "no /dev/mapper/$1"
    set -- $mm
    echo /sys/dev/block/$((0x$1)):$((0x$2))
}

# ---- infrastructure cases --------------------------------------------------

case_modules ()
{
    local m
    for m in configfs null_blk nbd nvme nvme_core dm_mod dm_crypt xts; do
        [ -d /sys/module/$m ] || die "module $m not loaded"
    done
    [ -d /sys/kernel/config/nullb ] || die "no null_blk configfs"
}

# make_nullb NAME ATTR=VALUE...: a null_blk device through configfs.
make_nullb ()
{
    local d=/sys/kernel/config/nullb/$1 kv
    shift
    mkdir $d || die "mkdir $d"
    for kv in "$@"; do
        echo "${kv#*=}" > $d/${kv%%=*} || die "$d: ${kv%%=*}=${kv#*=}"
    done
    echo 1 > $d/power || die "$d: power on"
}

case_create_devices ()
{
    make_nullb nullb0 blocksize=4096 memory_backed=1 size=128 \
        zoned=1 zone_size=$NULLB0_ZONE_MB zone_nr_conv=2
    make_nullb nullb1 blocksize=512 memory_backed=1 size=64 \
        zoned=1 zone_size=$NULLB1_ZONE_MB zone_capacity=$NULLB1_CAP_MB \
        zone_nr_conv=0 zone_max_open=$NULLB1_MAX_OPEN zone_max_active=3
    local dev
    for dev in $ZONED_DEVICES; do
        [ -b /dev/$dev ] || die "no /dev/$dev"
        [ "$(cat /sys/block/$dev/queue/zoned)" = host-managed ] ||
            die "$dev is $(cat /sys/block/$dev/queue/zoned), not host-managed"
        say "$dev: $(nr_zones $dev) zones of $(zone_bytes $dev) bytes," \
            "block $(cat /sys/block/$dev/queue/logical_block_size)," \
            "max open $(cat /sys/block/$dev/queue/max_open_zones)"
    done
}

# The geometry each device was given shows in blkzone's report.
case_geometry ()
{
    local dev=$1 zones conv cap len max_open
    zones=$(nr_zones $dev)
    blkzone report /dev/$dev > $W/report || die "blkzone report /dev/$dev"
    [ "$(wc -l < $W/report)" = "$zones" ] || die "report has not $zones lines"
    conv=$(grep -c 'CONVENTIONAL' $W/report || :)
    len=$(zone_field $dev $((zones - 1)) len)
    cap=$(zone_field $dev $((zones - 1)) cap)
    max_open=$(cat /sys/block/$dev/queue/max_open_zones)
    say "$dev: $zones zones, $conv conventional, len $len cap $cap max_open $max_open"
    case $dev in
        nullb0) [ $zones = 16 ] && [ $conv = 2 ] && [ $cap = $len ] ;;
        nullb1) [ $zones = 8 ] && [ $conv = 0 ] && [ $cap = $((NULLB1_CAP_MB << 20)) ] &&
                [ $max_open = $NULLB1_MAX_OPEN ] ;;
        $NVME_DEV) [ $zones = 8 ] && [ $len = $((16 << 20)) ] && [ $cap = $((12 << 20)) ] &&
                [ $max_open = 4 ] ;;
    esac || die "$dev: unexpected geometry"
}

# Direct writes at the write pointer advance it; a reset rewinds it.
case_raw_zone_io ()
{
    local dev=$1 z zs start wp
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    gen_file $W/data 65536
    dd if=$W/data of=/dev/$dev bs=65536 seek=$((start / 65536)) oflag=direct conv=notrunc status=none ||
        die "write at the WP of zone $z failed"
    wp=$(zone_field $dev $z wptr)
    [ "$wp" = 65536 ] || die "wptr $wp after a 64K write, expected 65536"
    dd if=/dev/$dev of=$W/back bs=65536 skip=$((start / 65536)) count=1 iflag=direct status=none
    cmp $W/data $W/back || die "read back differs"
    if dd if=$W/data of=/dev/$dev bs=65536 seek=$((start / 65536)) oflag=direct conv=notrunc status=none 2>/dev/null; then
        die "a write below the WP succeeded on the raw device"
    fi
    blkzone reset -o $((start / 512)) -c 1 /dev/$dev || die "blkzone reset"
    wp=$(zone_field $dev $z wptr)
    [ "$wp" = 0 ] || die "wptr $wp after reset"
}

# The kernel NBD client attaches an nbdkit export over a Unix socket.
case_nbd_client_memory ()
{
    start_nbdkit mem memory 64M
    nbd_attach mem
    [ "$(cat /sys/block/nbd0/queue/logical_block_size)" = 4096 ] ||
        die "nbd0 block size is not 4096"
    gen_file $W/data 1048576
    dd if=$W/data of=/dev/nbd0 bs=1M seek=4 oflag=direct status=none || die "write to /dev/nbd0"
    dd if=/dev/nbd0 of=$W/back bs=1M skip=4 count=1 iflag=direct status=none || die "read /dev/nbd0"
    cmp $W/data $W/back || die "/dev/nbd0 read back differs"
    nbd_detach
    # The data is in nbdkit, not only in the kernel's cache.
    nbdcopy "$(uri mem)" $W/whole || die "nbdcopy"
    dd if=$W/whole of=$W/back bs=1M skip=4 count=1 status=none
    cmp $W/data $W/back || die "nbdkit holds other data than was written"
    stop_nbdkit mem
}

# dm-crypt maps a zoned device and round-trips data written at a WP.
case_dmcrypt_available ()
{
    local dev=$1 z zs start
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    dd if=/dev/urandom of=$W/key bs=64 count=1 status=none
    timeout 60 cryptsetup open --type plain --cipher aes-xts-plain64 \
        --key-file $W/key --key-size 512 --sector-size 4096 \
        --disable-locks /dev/$dev zt-check || die "cryptsetup open $dev"
    [ "$(cat "$(dm_sysfs zt-check)/queue/zoned")" = host-managed ] ||
        die "the dm-crypt device is not host-managed"
    gen_file $W/data 65536
    dd if=$W/data of=/dev/mapper/zt-check bs=65536 seek=$((start / 65536)) oflag=direct status=none ||
        die "write through dm-crypt"
    dd if=/dev/mapper/zt-check of=$W/back bs=65536 skip=$((start / 65536)) count=1 iflag=direct status=none
    cmp $W/data $W/back || die "dm-crypt read back differs"
    dd if=/dev/$dev of=$W/raw bs=65536 skip=$((start / 65536)) count=1 iflag=direct status=none
    cmp -s $W/data $W/raw && die "the raw device holds plaintext"
    timeout 60 cryptsetup close zt-check || die "cryptsetup close"
    blkzone reset -o $((start / 512)) -c 1 /dev/$dev
}

# ---- running cases -----------------------------------------------------------

if [ "${1:-}" = case ]; then
    shift
    set -e
    mkdir -p $W
    "$@"
    exit 0
fi

export PATH=/usr/sbin:/usr/bin
tap_n=0
tap_fail=0
tap () { echo "$*"; echo "$*" > $TAPDEV; }

# Cases chosen on the kernel command line (zoned.cases=PATTERN,...).
selected=$(sed -n 's/.*zoned\.cases=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
wanted ()
{
    local p
    [ -z "$selected" ] && return 0
    for p in $selected; do
        case "$1" in $p) return 0 ;; esac
    done
    return 1
}

# Leave nothing behind a case for the next one: nbdkit, nbd, dm devices.
cleanup_case ()
{
    local p
    for p in $W/*.pid; do
        [ -s "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null
    done
    [ -e /sys/block/nbd0/pid ] && timeout 30 nbd-client -d /dev/nbd0 >/dev/null 2>&1
    timeout 30 dmsetup remove_all >/dev/null 2>&1
    rm -rf $W
}

# run SECONDS NAME FUNCTION ARGS...: one TAP line.
run ()
{
    local t=$1 name=$2 rc began
    shift 2
    wanted "$name" || return 0
    began=$(date +%s)
    echo "==== $name"
    rm -rf $W; mkdir -p $W
    { timeout -k 5 $t sh /guest-tests.sh case "$@" 2>&1; echo $? > /tmp/rc; } |
        tee /tmp/case.log | sed 's/^/    /'
    rc=$(cat /tmp/rc)
    cleanup_case
    tap_n=$((tap_n + 1))
    if [ "$rc" = 0 ]; then
        tap "ok $tap_n - $name # $(( $(date +%s) - began ))s"
    else
        tap_fail=$((tap_fail + 1))
        [ "$rc" = 124 ] && why="timed out after ${t}s" || why="exit status $rc"
        tap "not ok $tap_n - $name ($why)"
        tail -n 5 /tmp/case.log | sed 's/^/# /' > $TAPDEV
    fi
}

run 30 "kernel modules loaded" case_modules
run 60 "zoned devices created" case_create_devices
for dev in $ZONED_DEVICES; do
    run 60 "$dev: geometry in blkzone report" case_geometry $dev
    run 60 "$dev: raw writes at the WP, reset" case_raw_zone_io $dev
done
run 120 "nbd-client attaches nbdkit memory over a Unix socket" case_nbd_client_memory
for dev in $ZONED_DEVICES; do
    run 120 "$dev: dm-crypt maps the zoned device" case_dmcrypt_available $dev
done

tap "1..$tap_n"
echo "guest-tests: $tap_fail of $tap_n failed"
[ $tap_fail = 0 ]
