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
# scsi_debug as a host-managed ZBC disk through the sd driver, the
# command set of a real SMR drive: 64 zones of 8 MiB, 8 conventional,
# 4K sectors, zone capacity equal to the zone size, as on SMR; large
# enough for btrfs through nbdzone attach.
SCSI_ZONE_MB=8
SCSI_ZBC_PARAMS="zbc=managed sector_size=4096 dev_size_mb=512 zone_size_mb=$SCSI_ZONE_MB zone_nr_conv=8 delay=0"

# The disk scsi_debug made (sda...), once it is loaded.
scsi_debug_disk ()
{
    ls /sys/bus/pseudo/drivers/scsi_debug/adapter0/host*/target*/*:*/block 2>/dev/null | head -n 1
}
zoned_devices () { echo "nullb0 nullb1 $NVME_DEV $(scsi_debug_disk)"; }
ZONED_DEVICES=$(zoned_devices)

# ---- helpers for cases ---------------------------------------------------

say () { echo "$*"; }
# die MESSAGE: fail the running case, showing what nbdkit logged.  On
# stderr, so that a die inside $(...) is seen too.
die ()
{
    local log
    {
        for log in $W/*.log; do
            [ -s "$log" ] || continue
            echo "---- last lines of nbdkit's log $(basename $log):"
            tail -n 8 "$log"
        done
        echo "FAIL: $*"
    } >&2
    exit 1
}

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
    nbdkit -f --exit-with-parent -U $W/$name.sock -P $W/$name.pid "$@" \
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
# gone PID: wait (at most 10 s) until process PID has exited, so that the
# drive it held (a lock, an exclusive open) is free for the next server.
# A zombie has closed its descriptors already: it counts as gone.
gone ()
{
    local i=0
    while [ -e /proc/$1 ] && ! grep -q '^State:.*Z' /proc/$1/status 2>/dev/null &&
            [ $i -lt 100 ]; do
        i=$((i + 1)); sleep 0.1
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
    for m in configfs null_blk nbd nvme nvme_core dm_mod dm_crypt dm_flakey xts sd_mod \
             veth sch_netem; do
        [ -d /sys/module/$m ] || die "module $m not loaded"
    done
    [ -d /sys/kernel/config/nullb ] || die "no null_blk configfs"
    grep -q '/scsi_debug\.ko' /etc/modules-load || die "no scsi_debug module in the image"
}

# load_scsi_debug PARAMS...: load scsi_debug (left out at boot, its
# parameters are the device's geometry) and wait for its disk.
load_scsi_debug ()
{
    local ko i=0
    ko=$(grep '/scsi_debug\.ko' /etc/modules-load) || die "no scsi_debug module"
    insmod "$ko" "$@" || die "insmod scsi_debug $*"
    while [ -z "$(scsi_debug_disk)" ] || [ ! -b /dev/$(scsi_debug_disk) ]; do
        i=$((i + 1)); [ $i -gt 100 ] && die "scsi_debug made no disk ($*)"
        sleep 0.1
    done
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
    load_scsi_debug $SCSI_ZBC_PARAMS
    local dev
    ZONED_DEVICES=$(zoned_devices)
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
        sd*) [ $zones = 64 ] && [ $conv = 8 ] && [ $len = $((SCSI_ZONE_MB << 20)) ] &&
                [ $cap = $len ] &&
                [ "$(cat /sys/block/$dev/queue/logical_block_size)" = 4096 ] &&
                [ -e /sys/block/$dev/device/scsi_disk ] ;;
        *) false ;;
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
    # Ahead of the WP is refused too: this is why the plugin must order
    # writes that reach it out of order.
    if dd if=$W/data of=/dev/$dev bs=65536 seek=$((start / 65536 + 2)) oflag=direct conv=notrunc status=none 2>/dev/null; then
        die "a write ahead of the WP succeeded on the raw device"
    fi
    wp=$(zone_field $dev $z wptr)
    [ "$wp" = 65536 ] || die "wptr $wp after refused writes, expected 65536"
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
    # dm-crypt refuses an IV offset (--skip) that is not a whole number of
    # crypt sectors, as the filter refuses such a crypt-iv-offset.
    if timeout 60 cryptsetup open --type plain --cipher aes-xts-plain64 \
        --key-file $W/key --key-size 512 --sector-size 4096 --skip 4 \
        --disable-locks /dev/$dev zt-skip 2>$W/skip.err; then
        timeout 60 cryptsetup close zt-skip
        die "dm-crypt accepted --skip 4 with 4096-byte sectors"
    fi
    say "dm-crypt refuses --skip 4 with 4096-byte sectors: $(cat $W/skip.err)"
}

# ---- the product on real zoned devices --------------------------------------

# need_product: the plugin, filter and tools built into this image.
need_product ()
{
    local f
    for f in $PLUGIN $FILTER $NBDZONE $CLIENT; do
        [ -e $f ] || die "$f is not in the VM image (not built?)"
    done
}

# A fresh raw AES-256-XTS key for the filter and dm-crypt.
make_key () { dd if=/dev/urandom of=$W/key bs=64 count=1 status=none; }

# serve NAME DEV [crypt] [NBDKIT-ARGS...]: nbdkit with the zbd plugin on
# /dev/DEV, through the filter with $W/key when the third word is "crypt".
serve ()
{
    local name=$1 dev=$2
    shift 2
    [ $# -gt 0 ] && [ -z "$1" ] && shift
    need_product
    if [ "${1:-}" = crypt ]; then
        shift
        [ -s $W/key ] || make_key
        start_nbdkit $name "$@" --filter=$FILTER $PLUGIN device=/dev/$dev \
            crypt-key-file=$W/key crypt-sector-size=4096
    else
        start_nbdkit $name "$@" $PLUGIN device=/dev/$dev
    fi
}

# The expected-error check of case 4: "expect_error ERRNOS LOGWORD CMD..."
# runs CMD, which must fail with one of ERRNOS (e.g. "EIO ENOSPC"), and
# the nbdkit log must have gained an error line containing LOGWORD.
# nbdkit's error lines in LOG, not its debug lines (with -v, "sending
# error reply" follows every error).
error_lines () { grep 'error' "$1" | grep -v ': debug: ' || :; }

expect_error ()
{
    local errnos=$1 word=$2 log=$W/srv.log before e
    shift 2
    before=$(error_lines $log | wc -l)
    if "$@" > $W/err.out 2>&1; then
        cat $W/err.out
        die "expected $errnos, but it succeeded: $*"
    fi
    cat $W/err.out
    for e in $errnos; do
        grep -q "errno=$e)" $W/err.out && break
        e=
    done
    [ -n "$e" ] ||
        die "expected one of $errnos, got $(sed -n 's/.*(errno=\(.*\))$/\1/p' $W/err.out) from: $*"
    [ "$(error_lines $log | wc -l)" -gt "$before" ] &&
        error_lines $log | tail -n 1 | grep -q -- "$word" ||
        die "no nbdkit error line mentioning \"$word\" (last: $(error_lines $log | tail -n 1))"
    say "got $e; log: $(error_lines $log | tail -n 1)"
}

# assert_zone DEV ZONE WP [COND]: blkzone's write pointer (bytes from the
# zone start) and condition number of a zone.
assert_zone ()
{
    local wp cond
    wp=$(zone_field $1 $2 wptr)
    [ "$wp" = "$3" ] || die "$1 zone $2: device WP $wp, expected $3"
    if [ -n "${4:-}" ]; then
        cond=$(zone_field $1 $2 cond)
        [ "$cond" = "$4" ] || die "$1 zone $2: condition $cond, expected $4"
    fi
}

# normalise_report: blkzone-style lines to "start len cap wptr cond type"
# in decimal bytes.  What NBD cannot show, or the zone model leaves
# undefined, is folded: an open (implicitly or explicitly) and a closed
# zone are both "partial"; conventional and full zones have no valid write
# pointer (Linux reports a full zone's as the zone end, nbdzone as the
# capacity end).
normalise_report ()
{
    local start len cap wp cond type
    sed -n 's/.*start: *\(0x[0-9a-f]*\), len \(0x[0-9a-f]*\), cap \(0x[0-9a-f]*\), wptr \(0x[0-9a-f]*\).*zcond: *\([0-9]*([a-z0-9]*)\).*type: *\([0-9]*\).*/\1 \2 \3 \4 \5 \6/p' |
    while read -r start len cap wp cond type; do
        # The condition with blkzone's name, "14(fu)".
        case $cond in '2(oi)'|'3(oe)'|'4(cl)') cond=partial ;; esac
        if [ "$type" = 1 ] || [ "$cond" = '14(fu)' ]; then wp=-; else wp=$((wp * 512)); fi
        echo "$((start * 512)) $((len * 512)) $((cap * 512)) $wp $cond $type"
    done
}

# report_matches_device DEV RAW LABEL: the zone report in file X.raw
# (blkzone's format, from LABEL) equals blkzone report of /dev/DEV, once
# normalise_report has folded what NBD cannot carry.  The normalised
# reports stay in X.norm and dev.norm for the caller.
report_matches_device ()
{
    local dev=$1 raw=$2 label=$3 norm=${2%.raw}.norm
    blkzone report /dev/$dev > $W/dev.raw || die "blkzone report /dev/$dev failed"
    normalise_report < $raw > $norm
    normalise_report < $W/dev.raw > $W/dev.norm
    [ "$(wc -l < $W/dev.norm)" = "$(nr_zones $dev)" ] ||
        die "could not read blkzone's report of /dev/$dev"
    if ! cmp -s $W/dev.norm $norm; then
        echo "device (blkzone):"; cat $W/dev.raw
        echo "$label:"; cat $raw
        diff $W/dev.norm $norm
        die "the zone report of $label differs from blkzone's report of /dev/$dev"
    fi
}

# compare_reports DEV URI: nbdzone's report equals the device's.
compare_reports ()
{
    timeout 60 $NBDZONE report "$2" > $W/nbd.raw || die "nbdzone report failed"
    report_matches_device $1 $W/nbd.raw "nbdzone report"
}

# Put zones of DEV into every state a report can show, on the raw device:
# ZONE partly written (open), ZONE+1 full (finished), ZONE+2 partly
# written then closed; the rest empty.
shape_zones ()
{
    local dev=$1 z=$2 zs
    zs=$(zone_bytes $dev)
    gen_file $W/shape 131072
    dd if=$W/shape of=/dev/$dev bs=65536 seek=$((z * zs / 65536)) oflag=direct status=none ||
        die "shaping zone $z"
    blkzone finish -o $(((z + 1) * zs / 512)) -c 1 /dev/$dev || die "finish zone $((z + 1))"
    dd if=$W/shape of=/dev/$dev bs=65536 count=1 seek=$(((z + 2) * zs / 65536)) oflag=direct status=none ||
        die "shaping zone $((z + 2))"
    blkzone close -o $(((z + 2) * zs / 512)) -c 1 /dev/$dev || die "close zone $((z + 2))"
}

# Case 1: nbdzone report through nbdkit (with or without the filter)
# equals blkzone report, before and after a write through NBD.
case_report ()
{
    local dev=$1 mode=${2:-} z zs wp
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    shape_zones $dev $z
    serve srv $dev $mode
    compare_reports $dev "$(uri srv)"
    wp=$(zone_field $dev $z wptr)
    $CLIENT write "$(uri srv)" $((z * zs + wp)) 65536 11 || die "write at the WP"
    assert_zone $dev $z $((wp + 65536))
    compare_reports $dev "$(uri srv)"
    say "reports equal: $(wc -l < $W/nbd.norm) zones"
}

# Case 2: the kernel NBD client on the encrypted export.
case_nbd_kernel ()
{
    local dev=$1 z zs start
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    serve srv $dev crypt
    nbd_attach srv
    gen_file $W/data 1048576
    # Sequential direct writes, 64K each, from the zone start.
    dd if=$W/data of=/dev/nbd0 bs=65536 seek=$((start / 65536)) oflag=direct status=none ||
        die "dd to /dev/nbd0"
    assert_zone $dev $z 1048576
    # More at the new write pointer.
    dd if=$W/data of=/dev/nbd0 bs=65536 count=4 seek=$(((start + 1048576) / 65536)) oflag=direct status=none ||
        die "dd at the new WP"
    assert_zone $dev $z $((1048576 + 262144))
    dd if=/dev/nbd0 of=$W/back bs=65536 count=16 skip=$((start / 65536)) iflag=direct status=none ||
        die "dd from /dev/nbd0"
    cmp $W/data $W/back || die "/dev/nbd0 read back differs"
    dd if=/dev/$dev of=$W/raw bs=65536 count=16 skip=$((start / 65536)) iflag=direct status=none
    cmp -s $W/data $W/raw && die "the device holds plaintext"
    timeout 60 blkdiscard -o $start -l $zs /dev/nbd0 || die "blkdiscard on /dev/nbd0"
    assert_zone $dev $z 0 1
    # Above the WP reads as zeros through the filter, not decrypted noise.
    dd if=/dev/nbd0 of=$W/back bs=65536 count=1 skip=$((start / 65536)) iflag=direct status=none
    dd if=/dev/zero of=$W/zero bs=65536 count=1 status=none
    cmp $W/zero $W/back || die "a reset zone does not read as zeros"
    nbd_detach
}

# Case 3: pipelined, shuffled writes on several connections land in WP
# order on the device.
case_pipelined ()
{
    local dev=$1 z zs start len=4194304
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    serve srv $dev crypt --threads 16
    timeout 300 $CLIENT shuffle "$(uri srv)" $start $len 21 65536 4 16 7 ||
        die "shuffled writes failed"
    assert_zone $dev $z $len
    $CLIENT verify "$(uri srv)" $start $len 21 || die "data differs"
    # And a second zone at once, interleaved windows of another order.
    timeout 300 $CLIENT shuffle "$(uri srv)" $((start + zs)) 1048576 22 16384 3 12 8 ||
        die "shuffled small writes failed"
    assert_zone $dev $((z + 1)) 1048576
    $CLIENT verify "$(uri srv)" $((start + zs)) 1048576 22 || die "data differs (zone 2)"
}

# Case 4: errors reach the client and leave the device untouched.
case_errors ()
{
    local dev=$1 z zs start cap lim open_lim i
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    cap=$(zone_field $dev $z cap)
    # Zone z+1 is filled on the raw device up to 64K below its capacity
    # before nbdkit starts (it reads the zone table then).
    dd if=/dev/zero of=/dev/$dev bs=65536 count=$(((cap - 65536) / 65536)) \
        seek=$(((start + zs) / 65536)) oflag=direct status=none || die "filling zone $((z + 1))"
    serve srv $dev crypt
    $CLIENT write "$(uri srv)" $start 131072 31 || die "write at the WP"

    say "-- below the write pointer"
    expect_error "EIO ENOSPC" $start $CLIENT write "$(uri srv)" $start 65536 32
    assert_zone $dev $z 131072
    $CLIENT verify "$(uri srv)" $start 131072 31 || die "data below the WP changed"

    if [ $cap -lt $zs ]; then
        say "-- past the zone capacity"
        expect_error "ENOSPC EIO" $((start + zs + cap - 65536)) \
            $CLIENT write "$(uri srv)" $((start + zs + cap - 65536)) 131072 33
        assert_zone $dev $((z + 1)) $((cap - 65536))
    else
        # A write past the end of a zone whose capacity is its size is a
        # write into the next zone, which is not an error in itself.
        say "-- $dev: zone capacity is the zone size"
    fi

    say "-- misaligned to the 4096-byte crypt sector"
    expect_error "EINVAL" misaligned env ZONE_CLIENT_UNALIGNED=1 \
        $CLIENT write "$(uri srv)" $((start + 131072)) 2048 34
    expect_error "EINVAL" misaligned env ZONE_CLIENT_UNALIGNED=1 \
        $CLIENT write "$(uri srv)" $((start + 131072 + 512)) 4096 34
    assert_zone $dev $z 131072

    lim=$(cat /sys/block/$dev/queue/max_active_zones)
    open_lim=$(cat /sys/block/$dev/queue/max_open_zones)
    if [ "$lim" = 0 ] && [ -e /sys/block/$dev/device/scsi_disk ] && [ "$open_lim" -gt 0 ]; then
        # ZBC has an open limit and no active one, and a drive at its open
        # limit closes an implicitly open zone to open another: a write
        # to one zone more than the limit succeeds, through the plugin too.
        say "-- $dev (ZBC): more implicitly open zones than its open limit ($open_lim)"
        i=2
        while [ $i -le $open_lim ]; do
            $CLIENT write "$(uri srv)" $((start + i * zs)) 4096 35 ||
                die "write to zone $((z + i)) (implicit opens past the limit are the drive's to close)"
            assert_zone $dev $((z + i)) 4096
            i=$((i + 1))
        done
        return 0
    fi
    [ "$lim" -gt 0 ] || lim=$open_lim
    if [ "$lim" -gt 0 ]; then
        say "-- beyond the device's active-zone limit ($lim)"
        # z and z+1 are active already; open more up to the limit.
        i=2
        while [ $i -lt $lim ]; do
            $CLIENT write "$(uri srv)" $((start + i * zs)) 4096 35 ||
                die "write to zone $((z + i)) within the limit"
            i=$((i + 1))
        done
        # ENOSPC, as the plugin's own emulated zones answer.  The kernel
        # reports the device's refusal as EOVERFLOW
        # (BLK_STS_ZONE_ACTIVE_RESOURCE), which nbdkit would send as
        # EINVAL, the answer to a malformed request: the plugin must
        # translate it.
        expect_error "ENOSPC" "too many active zones" \
            $CLIENT write "$(uri srv)" $((start + lim * zs)) 4096 36
        assert_zone $dev $((z + lim)) 0 1
        # The same for a write the kernel splits into several bios: Linux
        # 6.12 fails the ones after the refused first with EIO, and the
        # write as a whole may come back EIO; nothing of it was written.
        expect_error "ENOSPC" "too many active zones" \
            $CLIENT write "$(uri srv)" $((start + lim * zs)) 1048576 36 1048576
        assert_zone $dev $((z + lim)) 0 1
        # Resetting an active zone makes room again.
        $CLIENT trim "$(uri srv)" $((start + 2 * zs)) $zs || die "reset zone $((z + 2))"
        $CLIENT write "$(uri srv)" $((start + lim * zs)) 4096 36 ||
            die "write after a reset made room"
        assert_zone $dev $((z + lim)) 4096
    else
        say "-- $dev has no open or active zone limit"
    fi
}

# dm_open DEV NAME key|passphrase: dm-crypt on the raw device, the same
# format the filter writes.
# dm_open DEV NAME key|passphrase [SECTOR IV-LARGE-SECTORS SKIP]: dm-crypt
# plain aes-xts-plain64 on DEV, by default 4K sectors, IVs in 512-byte
# units, no skip.
dm_open ()
{
    local dev=$1 name=$2 how=$3 ss=${4:-4096} large=${5:-false} skip=${6:-0}
    set -- --type plain --cipher aes-xts-plain64 --key-size 512 \
        --sector-size $ss --skip $skip --disable-locks
    [ "$large" = true ] && set -- "$@" --iv-large-sectors
    if [ "$how" = key ]; then
        timeout 60 cryptsetup open "$@" --key-file $W/key /dev/$dev $name
    else
        # A passphrase on stdin is hashed (a key file would not be).
        timeout 60 cryptsetup open "$@" --hash sha256 /dev/$dev $name < $W/pass
    fi || die "cryptsetup open $dev ($how, sector $ss, large $large, skip $skip)"
    # The table dm-crypt runs is the format asked for: start length crypt
    # cipher key iv_offset device offset [options].
    dmsetup table $name > $W/table || die "dmsetup table $name"
    set -- $(cat $W/table)
    [ "$3 $4 $6" = "crypt aes-xts-plain64 $skip" ] ||
        die "unexpected dm-crypt table: $(cat $W/table)"
    if [ $ss -gt 512 ]; then
        grep -q " sector_size:$ss" $W/table
    else
        ! grep -q sector_size $W/table
    fi || die "dm-crypt table without sector size $ss: $(cat $W/table)"
    if [ "$large" = true ]; then
        grep -q iv_large_sectors $W/table
    else
        ! grep -q iv_large_sectors $W/table
    fi || die "dm-crypt table: iv_large_sectors should be $large: $(cat $W/table)"
}
dm_close () { timeout 60 cryptsetup close $1 || die "cryptsetup close $1"; }

# serve_with NAME DEV key|passphrase [SECTOR IV-LARGE-SECTORS SKIP]: the
# filter keyed the same way, in the same format as dm_open.
serve_with ()
{
    if [ "$3" = key ] && [ -n "${4:-}" ]; then
        need_product
        start_nbdkit $1 --filter=$FILTER $PLUGIN device=/dev/$2 \
            crypt-key-file=$W/key crypt-sector-size=$4 \
            crypt-iv-large-sectors=$5 crypt-iv-offset=$6
    elif [ "$3" = key ]; then
        serve $1 $2 crypt
    else
        need_product
        start_nbdkit $1 --filter=$FILTER $PLUGIN device=/dev/$2 \
            crypt-passphrase=+$W/pass crypt-key-size=512 crypt-sector-size=4096
    fi
}

# Case 5: dm-crypt reads what the filter wrote, and the filter reads
# what dm-crypt wrote, on the zoned device itself; in dm-crypt's default
# format or with SECTOR IV-LARGE-SECTORS SKIP (raw key).
case_dmcrypt_interop ()
{
    local dev=$1 how=$2 fmt="${3:-} ${4:-} ${5:-}" z zs a b len=1048576
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    a=$((z * zs)) b=$(((z + 1) * zs))
    make_key
    printf '%s' "correct horse battery staple $dev" > $W/pass

    serve_with srv $dev $how $fmt
    $CLIENT write "$(uri srv)" $a $len 51 || die "write through the filter"
    if [ "$(zone_field $dev 0 type)" = 1 ]; then
        # A conventional zone too: any aligned offset.
        $CLIENT write "$(uri srv)" 65536 $len 52 || die "write to a conventional zone"
    fi
    $CLIENT flush "$(uri srv)" || die "flush"
    stop_nbdkit srv

    dm_open $dev zt-interop $how $fmt
    $CLIENT gen 51 $a $len > $W/want
    dd if=/dev/mapper/zt-interop of=$W/got bs=65536 count=$((len / 65536)) \
        skip=$((a / 65536)) iflag=direct status=none || die "read through dm-crypt"
    cmp $W/want $W/got || die "dm-crypt reads other data than the filter wrote"
    if [ "$(zone_field $dev 0 type)" = 1 ]; then
        $CLIENT gen 52 65536 $len > $W/want
        dd if=/dev/mapper/zt-interop of=$W/got bs=65536 count=$((len / 65536)) \
            skip=1 iflag=direct status=none
        cmp $W/want $W/got || die "dm-crypt differs in the conventional zone"
    fi
    $CLIENT gen 53 $b $len > $W/dmdata
    dd if=$W/dmdata of=/dev/mapper/zt-interop bs=65536 seek=$((b / 65536)) \
        oflag=direct status=none || die "write through dm-crypt"
    dm_close zt-interop
    assert_zone $dev $((z + 1)) $len

    serve_with srv $dev $how $fmt
    $CLIENT verify "$(uri srv)" $b $len 53 || die "the filter reads other data than dm-crypt wrote"
    # The filter continues at the WP dm-crypt left.
    $CLIENT write "$(uri srv)" $((b + len)) 65536 53 || die "write after dm-crypt's data"
    $CLIENT verify "$(uri srv)" $b $((len + 65536)) 53 || die "mixed zone differs"
}

# luks_format DEV luks2|luks1: a detached header for the zoned device,
# made by cryptsetup in the guest, with a second slot; passphrases in
# $W/pass and $W/pass2.  LUKS2: 4K sectors, AES-256-XTS, cheap Argon2id
# (the format is tested, not the cost); LUKS1: 512-byte sectors,
# AES-128-XTS, PBKDF2.
luks_format ()
{
    local dev=$1 type=$2
    printf '%s' "first passphrase $dev" > $W/pass
    printf '%s' "second passphrase $dev" > $W/pass2
    if [ $type = luks2 ]; then
        set -- --pbkdf argon2id --pbkdf-memory 64 --pbkdf-force-iterations 4 \
            --pbkdf-parallel 2
        set -- "$@" --sector-size 4096 --key-size 512 \
            --luks2-metadata-size 16k --luks2-keyslots-size 1m
    else
        set -- --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-size 256
    fi
    timeout 120 cryptsetup luksFormat --batch-mode --disable-locks \
        --header $W/hdr --type $type --cipher aes-xts-plain64 \
        --key-file $W/pass "$@" /dev/$dev ||
        die "cryptsetup luksFormat --type $type --header on /dev/$dev"
    timeout 120 cryptsetup luksAddKey --batch-mode --disable-locks \
        --header $W/hdr --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --key-file $W/pass /dev/$dev $W/pass2 ||
        die "cryptsetup luksAddKey --header"
    cp $W/hdr $W/hdr.orig
}

# serve_luks NAME DEV PASSFILE: the filter opening the header.
serve_luks ()
{
    need_product
    start_nbdkit $1 --filter=$FILTER $PLUGIN device=/dev/$2 \
        crypt-header=$W/hdr crypt-passphrase=+$3
}

# Case 7: a LUKS header made by cryptsetup opens through the filter, and
# cryptsetup open --header on the zoned device reads what the filter
# wrote; the filter reads what dm-crypt wrote.
# set_iv_tweak HEADER: the data segment's iv_tweak of both LUKS2 copies
# (16 KiB each, made by luks_format) set from "0" to "8" (a whole 4 KiB
# sector), each copy's sha256 checksum (64 bytes at 448) made right again.
set_iv_tweak ()
{
    local hdr=$1 off at sum
    for off in 0 16384; do
        # The JSON text starts at 4096 in the copy and ends at a NUL.
        at=$(dd if=$hdr bs=1 skip=$((off + 4096)) count=12288 status=none |
            tr '\0' '\n' | head -n 1 |
            awk '{ print index($0, "\"iv_tweak\":\"0\"") }')
        [ "${at:-0}" -gt 0 ] || die "no iv_tweak \"0\" in the copy at $off"
        at=$((4096 + at - 1))
        printf '8' | dd of=$hdr bs=1 seek=$((off + at + 12)) conv=notrunc status=none
        dd if=/dev/zero of=$hdr bs=1 seek=$((off + 448)) count=64 conv=notrunc status=none
        sum=$(dd if=$hdr bs=16384 skip=$((off / 16384)) count=1 status=none |
            sha256sum | cut -c1-64)
        printf "$(echo $sum | sed 's/../\\x&/g')" |
            dd of=$hdr bs=1 seek=$((off + 448)) conv=notrunc status=none
    done
    cp $hdr $W/hdr.orig
    timeout 60 cryptsetup luksDump --disable-locks $hdr > $W/dump ||
        die "cryptsetup does not read the header with iv_tweak 8"
}

case_luks_interop ()
{
    local dev=$1 type=$2 z zs a b len=1048576
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    a=$((z * zs)) b=$(((z + 1) * zs))
    luks_format $dev $type
    # iv_tweak: a header whose data segment says iv_tweak 8 must be
    # activated as cryptsetup does, with IV offset 0 (the table check
    # below), and the filter's data must be what dm-crypt reads.
    [ "${3:-}" = tweak ] && set_iv_tweak $W/hdr

    serve_luks srv $dev $W/pass
    $CLIENT write "$(uri srv)" $a $len 71 || die "write through the filter"
    $CLIENT flush "$(uri srv)" || die "flush"
    stop_nbdkit srv
    assert_zone $dev $z $len

    timeout 120 cryptsetup open --header $W/hdr --key-file $W/pass2 \
        --disable-locks /dev/$dev zt-luks || die "cryptsetup open --header $dev"
    dmsetup table zt-luks > $W/table || die "dmsetup table zt-luks"
    say "dm-crypt table: $(cat $W/table)"
    # What the filter implements: IV offset 0, data offset 0, IVs in
    # 512-byte units; 4K sectors for LUKS2, 512 bytes for LUKS1.
    grep -q ' crypt aes-xts-plain64 [^ ]* 0 [^ ]* 0' $W/table &&
        ! grep -q iv_large_sectors $W/table ||
        die "unexpected dm-crypt table"
    if [ $type = luks2 ]; then
        grep -q 'sector_size:4096' $W/table || die "not 4K sectors"
    else
        ! grep -q 'sector_size:' $W/table || die "not 512-byte sectors"
    fi
    $CLIENT gen 71 $a $len > $W/want
    dd if=/dev/mapper/zt-luks of=$W/got bs=65536 count=$((len / 65536)) \
        skip=$((a / 65536)) iflag=direct status=none || die "read through dm-crypt"
    cmp $W/want $W/got || die "cryptsetup open --header reads other data than the filter wrote"
    $CLIENT gen 72 $b $len > $W/dmdata
    dd if=$W/dmdata of=/dev/mapper/zt-luks bs=65536 seek=$((b / 65536)) \
        oflag=direct status=none || die "write through dm-crypt"
    dm_close zt-luks
    assert_zone $dev $((z + 1)) $len

    # The second slot this time.
    serve_luks srv $dev $W/pass2
    grep -q 'error' $W/srv.log && die "errors in the log: $(grep error $W/srv.log)"
    $CLIENT verify "$(uri srv)" $b $len 72 || die "the filter reads other data than dm-crypt wrote"
    $CLIENT write "$(uri srv)" $((b + len)) 65536 72 || die "write after dm-crypt's data"
    $CLIENT verify "$(uri srv)" $b $((len + 65536)) 72 || die "mixed zone differs"
    $CLIENT verify "$(uri srv)" $a $len 71 || die "the first zone differs"
    stop_nbdkit srv
    cmp -s $W/hdr $W/hdr.orig || die "the filter changed the header"

    # A wrong passphrase is refused with its line.
    printf 'wrong' > $W/wrong
    if nbdkit -U $W/bad.sock --filter=$FILTER $PLUGIN device=/dev/$dev \
            crypt-header=$W/hdr crypt-passphrase=+$W/wrong --run true 2> $W/bad.err; then
        die "a wrong passphrase was accepted"
    fi
    grep -q 'no key slot opened with this passphrase' $W/bad.err ||
        die "wrong passphrase message: $(cat $W/bad.err)"
}

# Case 6: kill -9 during a write stream; restart; the device is the truth.
case_crash ()
{
    local dev=$1 z zs start cap len flushed i wp
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    cap=$(zone_field $dev $z cap)
    len=$((cap / 2))
    serve srv $dev crypt
    : > $W/stream.out
    # 10 ms between 64K chunks: the stream lasts at least half a second
    # even under KVM, so the kill lands mid-stream.
    timeout 300 $CLIENT stream "$(uri srv)" $start $len 61 65536 4 10 > $W/stream.out 2>&1 &
    i=0
    while :; do
        flushed=$(sed -n 's/^flushed //p' $W/stream.out | tail -n 1)
        [ -n "$flushed" ] && [ "$flushed" -ge $((start + 524288)) ] && break
        i=$((i + 1))
        [ $i -gt 1200 ] && die "the stream flushed nothing in 120s"
        sleep 0.1
    done
    kill -9 "$(cat $W/srv.pid)"
    gone "$(cat $W/srv.pid)"
    wait $! || :
    rm -f $W/srv.pid
    flushed=$(sed -n 's/^flushed //p' $W/stream.out | tail -n 1)
    cat $W/stream.out | tail -n 3
    [ "$flushed" -lt $((start + len)) ] || die "the stream ended before the kill"
    say "killed with $((flushed - start)) bytes flushed"

    serve srv $dev crypt
    # The restarted server's zone table comes from the device.
    compare_reports $dev "$(uri srv)"
    wp=$(awk -v s=$start '$1 == s { print $4 }' $W/nbd.norm)
    case "$wp" in
        ''|*[!0-9]*) die "nbdzone reports no write pointer for the zone at $start" ;;
    esac
    [ $((start + wp)) -ge $flushed ] || die "WP $wp is below the flushed $((flushed - start))"
    [ $wp -le $len ] || die "WP $wp beyond what was written"
    # Everything the device holds, not only the flushed part, decrypts.
    $CLIENT verify "$(uri srv)" $start $wp 61 || die "data below the WP differs"
    $CLIENT write "$(uri srv)" $((start + wp)) 65536 61 || die "write at the reported WP"
    assert_zone $dev $z $((wp + 65536))
    $CLIENT verify "$(uri srv)" $start $((wp + 65536)) 61 || die "data differs after restart"
}

# ---- faults of a real device: slow, read-only/offline zones, bad blocks ----

# fault_nullb NAME ATTR=VALUE...: a null_blk of 8 zones of 8 MiB, zone 0
# conventional, 4K blocks, with extra attributes, for one case (removed
# by cleanup_case).
fault_nullb ()
{
    local name=$1
    shift
    make_nullb $name blocksize=4096 memory_backed=1 size=64 zoned=1 \
        zone_size=8 zone_nr_conv=1 "$@"
    [ -b /dev/$name ] || die "no /dev/$name"
}

# extent_type_at MAPFILE OFFSET: the type nbdinfo --map gives the byte at
# OFFSET (0 data, 3 hole and zero).
extent_type_at () { awk -v x=$2 '$1 <= x && x < $1 + $2 { print $3 }' $1; }

# Milliseconds since boot.
now_ms () { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# A device whose size is not a multiple of its zone size ends in a short
# zone (null_blk: 60 MiB in zones of 8 MiB, the last 4 MiB long).  Its
# length is not the zones' capacity: the description gives the full
# zones' capacity (it gave the short zone's, and every client then
# used half of every zone), nbdzone report equals blkzone, and the
# short zone takes writes to its end, full, and reads them back.
case_short_last_zone ()
{
    local dev=nullbshort desc
    make_nullb $dev blocksize=4096 memory_backed=1 size=60 zoned=1 \
        zone_size=8 zone_nr_conv=1
    [ -b /dev/$dev ] || die "no /dev/$dev"
    [ "$(zone_field $dev 7 len)" = $((4 << 20)) ] ||
        die "null_blk's last zone is $(zone_field $dev 7 len) bytes, not 4 MiB"
    start_nbdkit srv $PLUGIN device=/dev/$dev
    nbdinfo --no-content "$(uri srv)" > $W/info || die "nbdinfo"
    desc=$(sed -n 's/^[[:space:]]*description: //p' $W/info)
    say "description: $desc"
    echo "$desc" | grep -q ' zone-size=8388608 zone-capacity=8388608 zones=8 ' ||
        die "the description does not give the full zones' capacity"
    compare_reports $dev "$(uri srv)"
    $CLIENT write "$(uri srv)" $((56 << 20)) $((4 << 20)) 12 ||
        die "write the short zone to its end"
    assert_zone $dev 7 $((4 << 20)) 14
    $CLIENT verify "$(uri srv)" $((56 << 20)) $((4 << 20)) 12 ||
        die "the short zone does not read back"
    compare_reports $dev "$(uri srv)"
}

# Zones of two capacities on one device: device-mapper joins a null_blk
# whose zones hold 6 MiB of their 8 to one whose zones hold all 8.  NBD
# describes one zone-capacity for every zone, so whichever the server
# gave, a client would write past the end of some zones or never fill
# the others: the server refuses the device at start, naming the first
# zone that differs, and writes nothing.  Linux 6.10 and later refuse
# such a device themselves; 6.1 builds it.
case_mixed_capacity ()
{
    local half dm d
    make_nullb nullbcapa blocksize=4096 memory_backed=1 size=32 zoned=1 \
        zone_size=8 zone_capacity=6 zone_nr_conv=0
    make_nullb nullbcapb blocksize=4096 memory_backed=1 size=32 zoned=1 \
        zone_size=8 zone_nr_conv=0
    half=$(blockdev --getsz /dev/nullbcapa) || die "blockdev --getsz"
    printf '0 %d linear /dev/nullbcapa 0\n%d %d linear /dev/nullbcapb 0\n' \
        $half $half $half | dmsetup create zt-mixed || die "dmsetup create"
    # The kernel's name (devtmpfs makes it): udev's /dev/mapper link
    # points there, and libzbd finds the zoned model through it.
    dm=dm-$(dmsetup info -c --noheadings -o minor zt-mixed | tr -d ' ')
    d=/dev/$dm
    [ -b $d ] || die "no $d"
    [ "$(zone_field $dm 0 cap)" = $((6 << 20)) ] &&
        [ "$(zone_field $dm 4 cap)" = $((8 << 20)) ] ||
        die "zt-mixed's zones 0 and 4 do not hold 6 and 8 MiB"
    if timeout 30 nbdkit -U $W/mixed.sock $PLUGIN device=$d --run true 2> $W/mixed.err; then
        die "a server started on a device whose zones differ in capacity"
    fi
    cat $W/mixed.err
    grep -q "device=$d: zone 4 has a capacity of 8388608 bytes, the first writable sequential zone 6291456: zones of different capacities cannot be described to NBD clients" $W/mixed.err ||
        die "the refusal does not name the zone whose capacity differs"
    [ "$(zone_field $dm 0 wptr)" = 0 ] || die "the refused server wrote to zone 0"
    dmsetup remove zt-mixed || die "dmsetup remove"
}

# A failing drive with read-only and offline zones all over it: 4096
# zones of 1 MiB, every other zone of the first half offline and of the
# second half read-only.  Listed one by one they need about 10 KB, and
# nbdkit sends no description at all past 4096 bytes, so every client
# saw an unzoned disk.  Now the description stays within 4096 bytes:
# the offline zones first, as many of them and then of the read-only
# ones as fit, whole and in order, and states-omitted counts the rest;
# nbdzone says that some are not listed.
case_many_zone_states ()
{
    local dev=nullbmany d=/sys/kernel/config/nullb/nullbmany z desc off ro
    local noff nro omitted
    make_nullb $dev blocksize=4096 memory_backed=0 size=4096 zoned=1 \
        zone_size=1 zone_nr_conv=0
    [ -b /dev/$dev ] || die "no /dev/$dev"
    [ -e $d/zone_offline ] || die "this kernel's null_blk has no zone_offline"
    z=1
    while [ $z -lt 4096 ]; do
        if [ $z -lt 2048 ]; then
            echo $((z * 2048)) > $d/zone_offline || die "zone $z offline"
        else
            echo $((z * 2048)) > $d/zone_readonly || die "zone $z read-only"
        fi
        z=$((z + 2))
    done
    blkzone report /dev/$dev > $W/blkzone
    [ "$(grep -c 'zcond:15' $W/blkzone)" = 1024 ] &&
        [ "$(grep -c 'zcond:13' $W/blkzone)" = 1024 ] ||
        die "the device does not have 1024 offline and 1024 read-only zones"

    start_nbdkit srv $PLUGIN device=/dev/$dev
    nbdinfo --no-content "$(uri srv)" > $W/info || die "nbdinfo"
    desc=$(sed -n 's/^[[:space:]]*description: //p' $W/info)
    [ -n "$desc" ] ||
        die "the export has no description (nbdkit drops one longer than 4096 bytes)"
    say "description: ${#desc} bytes: $(echo "$desc" | cut -c 1-120)..."
    [ ${#desc} -le 4096 ] || die "the description is ${#desc} bytes"
    echo "$desc" | grep -q 'zoned=host-managed .*zones=4096 ' ||
        die "the description lost its geometry"
    off=$(echo "$desc" | sed -n 's/.* offline=\([^ ]*\).*/\1/p')
    ro=$(echo "$desc" | sed -n 's/.* readonly=\([^ ]*\).*/\1/p')
    omitted=$(echo "$desc" | sed -n 's/.* states-omitted=\([0-9]*\).*/\1/p')
    noff=$(echo "$off" | tr , '\n' | grep -c '^[0-9][0-9]*$' || :)
    nro=$(echo "$ro" | tr , '\n' | grep -c '^[0-9][0-9]*$' || :)
    say "listed: $noff offline, $nro read-only; states-omitted=$omitted"
    [ -n "$omitted" ] && [ $((noff + nro + omitted)) = 2048 ] ||
        die "$noff offline + $nro read-only listed + ${omitted:-no} omitted is not 2048"
    [ $noff -gt 0 ] && { [ $nro = 0 ] || [ $noff = 1024 ]; } ||
        die "the offline zones are not listed first"
    # The listed offline zones are the first ones, in order: 1, 3, 5...
    [ "$(echo "$off" | tr , '\n' | awk '$1 != 2 * NR - 1' | wc -l)" = 0 ] ||
        die "the listed offline zones are not 1, 3, 5...: $(echo "$off" | cut -c 1-80)"

    timeout 120 $NBDZONE report "$(uri srv)" > $W/report 2> $W/report.err ||
        { cat $W/report.err; die "nbdzone report"; }
    cat $W/report.err
    grep -q "$omitted more do not fit" $W/report.err ||
        die "nbdzone did not warn that $omitted zones are not listed"
    sed -n 2p $W/report | grep -q 'zcond:15(of)' ||
        die "nbdzone report does not show zone 1 offline: $(sed -n 2p $W/report)"
    sed -n 1p $W/report | grep -q 'zcond: *1(em)' ||
        die "nbdzone report does not show zone 0 empty: $(sed -n 1p $W/report)"
}

# Every write takes 0.7 s at the device (completion_nsec), the gate's
# timeout is 1 s: pipelined writes into one zone, together much longer
# than the timeout, all succeed (the timeout measures lack of progress);
# a gap that nobody fills still fails about 1 s after the WP last moved,
# with a log line naming the WP as it stood.
case_slow_device ()
{
    local dev=nullbslow zs start t0 el
    fault_nullb $dev irqmode=2 completion_nsec=700000000
    zs=$(zone_bytes $dev)
    start=$zs
    # The device really is slow: one raw 4K write in the last zone.
    t0=$(now_ms)
    dd if=/dev/zero of=/dev/$dev bs=4096 count=1 seek=$((7 * zs / 4096)) \
        oflag=direct status=none || die "raw write"
    el=$(($(now_ms) - t0))
    say "one raw 4K write took $el ms"
    [ $el -ge 600 ] || die "the device is not slow ($el ms per write)"

    start_nbdkit srv --threads 16 $PLUGIN device=/dev/$dev reorder-timeout=1s
    t0=$(now_ms)
    timeout 120 $CLIENT shuffle "$(uri srv)" $start 24576 71 4096 1 6 3 ||
        die "pipelined writes on a slow device failed"
    el=$(($(now_ms) - t0))
    say "6 pipelined writes (shuffled within one window) took $el ms"
    [ $el -ge 3500 ] || die "6 writes took only $el ms: not slow enough to prove anything"
    assert_zone $dev 1 24576
    $CLIENT verify "$(uri srv)" $start 24576 71 || die "data differs"

    say "-- a gap nobody fills"
    t0=$(now_ms)
    expect_error "EIO" "reorder-timeout" \
        $CLIENT write "$(uri srv)" $((start + 24576 + 8192)) 4096 72
    el=$(($(now_ms) - t0))
    say "the write beyond the gap failed after $el ms"
    [ $el -ge 950 ] && [ $el -lt 5000 ] || die "gap write failed after $el ms (timeout 1 s)"
    grep -q "write at $((start + 32768)) waited 1000 ms for zone 1 whose write pointer stayed at $((start + 24576)) (reorder-timeout): EIO" $W/srv.log ||
        die "no true log line for the timed-out write"
    assert_zone $dev 1 24576
}

# Read-only zones stay readable (that is when data is rescued), offline
# zones fail reads with EIO, writes to both fail without touching the
# device, and block status and the export description say so.
case_zone_states ()
{
    local dev=nullbstate d=/sys/kernel/config/nullb/nullbstate zs x ublk
    fault_nullb $dev
    [ -e $d/zone_readonly ] && [ -e $d/zone_offline ] ||
        die "this kernel's null_blk has no zone_readonly/zone_offline" \
            "(features: $(cat /sys/kernel/config/nullb/features))"
    zs=$(zone_bytes $dev)
    $CLIENT gen 81 $zs 65536 > $W/z1 || die "gen"
    $CLIENT gen 82 $((2 * zs)) 65536 > $W/z2 || die "gen"
    dd if=$W/z1 of=/dev/$dev bs=65536 seek=$((zs / 65536)) oflag=direct status=none || die "write zone 1"
    dd if=$W/z2 of=/dev/$dev bs=65536 seek=$((2 * zs / 65536)) oflag=direct status=none || die "write zone 2"
    echo $((zs / 512)) > $d/zone_readonly || die "zone_readonly"
    echo $((2 * zs / 512)) > $d/zone_offline || die "zone_offline"
    say "device: $(blkzone report -o $((zs / 512)) -c 2 /dev/$dev)"
    [ "$(zone_field $dev 1 cond)" = 13 ] || die "zone 1 is not read-only"
    [ "$(zone_field $dev 2 cond)" = 15 ] || die "zone 2 is not offline"

    start_nbdkit srv $PLUGIN device=/dev/$dev
    $CLIENT verify "$(uri srv)" $zs 65536 81 ||
        die "a read-only zone does not read back its data"
    expect_error "EIO" "offline" $CLIENT verify "$(uri srv)" $((2 * zs)) 4096 82
    expect_error "EIO" "read-only" $CLIENT write "$(uri srv)" $((zs + 65536)) 4096 83
    expect_error "EIO" "offline" $CLIENT write "$(uri srv)" $((2 * zs + 65536)) 4096 83
    dd if=/dev/$dev of=$W/back bs=65536 count=1 skip=$((zs / 65536)) iflag=direct status=none
    cmp $W/z1 $W/back || die "the read-only zone changed"
    nbdinfo --map "$(uri srv)" > $W/map || die "nbdinfo --map"
    cat $W/map
    # Zone 1 (read-only) is data to its end, zone 2 (offline) is not zeros.
    for x in $zs $((2 * zs - 4096)) $((2 * zs)) $((3 * zs - 4096)); do
        [ "$(extent_type_at $W/map $x)" = 0 ] ||
            die "block status at $x: type $(extent_type_at $W/map $x), not data"
    done
    nbdinfo "$(uri srv)" > $W/info
    grep -q "readonly=1 offline=2" $W/info ||
        die "the export description does not name the read-only and offline zones: $(grep -i descr $W/info)"
    # A client's zone report says what blkzone says of the device.
    timeout 60 $NBDZONE report "$(uri srv)" > $W/nbdzone.out || die "nbdzone report"
    sed -n 2,3p $W/nbdzone.out
    sed -n 2p $W/nbdzone.out | grep -q 'zcond:13(ro)' ||
        die "nbdzone report does not show zone 1 read-only"
    sed -n 3p $W/nbdzone.out | grep -q 'zcond:15(of)' ||
        die "nbdzone report does not show zone 2 offline"

    # Resetting every zone passes over them, as the device's own reset-all
    # does; resetting one of them fails, saying why.
    $CLIENT write "$(uri srv)" $((3 * zs)) 4096 84 || die "write to zone 3"
    if ! timeout 60 $NBDZONE reset "$(uri srv)" $zs 2> $W/reset.err; then
        cat $W/reset.err
        grep -q "zone 1 at offset $zs is read-only" $W/reset.err ||
            die "nbdzone reset of the read-only zone did not say why"
    else
        die "nbdzone reset of the read-only zone succeeded"
    fi
    timeout 60 $NBDZONE reset "$(uri srv)" all || die "nbdzone reset all"
    assert_zone $dev 3 0 1
    [ "$(zone_field $dev 1 cond)" = 13 ] && [ "$(zone_field $dev 2 cond)" = 15 ] ||
        die "reset all changed the read-only or offline zone"
    kernel_at_least 6 6 || return 0
    need_ublk
    $CLIENT write "$(uri srv)" $((3 * zs)) 4096 85 || die "write to zone 3"
    ublk=$(ublk_attach "$(uri srv)")
    blkzone report -o $((zs / 512)) -c 3 $ublk
    if blkzone reset -o $((zs / 512)) -c 1 $ublk 2> $W/reset.err; then
        die "blkzone reset of the read-only zone through $ublk succeeded"
    fi
    cat $W/reset.err
    grep -q "zone 1 is read-only or offline" $W/attach.log ||
        die "attach did not log why the reset failed"
    timeout 60 blkzone reset $ublk || die "blkzone reset (all zones) through $ublk"
    assert_zone $dev 3 0 1
    [ "$(zone_field $dev 1 cond)" = 13 ] && [ "$(zone_field $dev 2 cond)" = 15 ] ||
        die "reset all through $ublk changed the read-only or offline zone"
    # Finishing them fails too, through the device and nbdzone finish.
    for x in 1 2; do
        if blkzone finish -o $((x * zs / 512)) -c 1 $ublk 2> $W/finish.err; then
            die "blkzone finish of zone $x (read-only or offline) through $ublk succeeded"
        fi
        cat $W/finish.err
        grep -q "zone $x is read-only or offline on the server's device: it cannot be finished" \
            $W/attach.log || die "attach did not log why the finish of zone $x failed"
    done
    if timeout 60 $NBDZONE finish "$(uri srv)" $zs 2> $W/finish.err; then
        die "nbdzone finish of the read-only zone succeeded"
    fi
    cat $W/finish.err
    grep -q "zone 1 at offset $zs is read-only on the server's device: it cannot be finished" \
        $W/finish.err || die "nbdzone finish of the read-only zone did not say why"
    [ "$(zone_field $dev 1 cond)" = 13 ] && [ "$(zone_field $dev 2 cond)" = 15 ] ||
        die "a finish changed the read-only or offline zone"
    ublk_detach $ublk
}

# Bad blocks in the middle of a zone during pipelined write streams in
# two zones: the failing write gets EIO, the zone's WP is re-read and
# true, the writes behind it fail in time, the other zone is unaffected,
# and once the blocks are good again writing resumes at the WP.
case_badblocks ()
{
    local dev=nullbbad d=/sys/kernel/config/nullb/nullbbad zs z1 z2 bad rc1 rc2 wp
    fault_nullb $dev
    zs=$(zone_bytes $dev)
    z1=$zs
    z2=$((2 * zs))
    bad=$((z1 + 262144 + 4096))
    echo "+$((bad / 512))-$((bad / 512 + 7))" > $d/badblocks || die "badblocks"
    say "bad blocks: $(cat $d/badblocks)"
    start_nbdkit srv -v --threads 16 $PLUGIN device=/dev/$dev reorder-timeout=2s
    timeout 120 $CLIENT shuffle "$(uri srv)" $z1 524288 91 16384 2 8 5 > $W/s1 2>&1 &
    p1=$!
    timeout 120 $CLIENT shuffle "$(uri srv)" $z2 524288 92 16384 2 8 6 > $W/s2 2>&1 &
    p2=$!
    rc1=0; wait $p1 || rc1=$?
    rc2=0; wait $p2 || rc2=$?
    tail -n 5 $W/s1
    [ $rc1 = 1 ] || die "the stream through bad blocks ended with $rc1 (1 expected: failed writes, no hang)"
    [ $rc2 = 0 ] || { cat $W/s2; die "the stream in the other zone failed"; }
    grep -q "errno=EIO" $W/s1 || die "no EIO reached the client"
    grep -q "write of 16384 bytes at $((z1 + 262144)) (zone 1) failed: Input/output error (EIO)" $W/srv.log ||
        die "no log line for the failing device write"
    grep -q "zone 1 re-read from the device: WP $((z1 + 262144))" $W/srv.log ||
        die "the zone was not re-read after the error"
    assert_zone $dev 1 262144
    # The server's WP (block status) is the device's.
    wp=$(nbdinfo --map "$(uri srv)" | awk -v s=$z1 -v e=$((z1 + zs)) '$1 >= s && $1 < e && $3 == 3 { print $1 - s; exit }')
    [ "$wp" = 262144 ] || die "block status shows WP $wp, the device 262144"
    $CLIENT verify "$(uri srv)" $z1 262144 91 || die "data before the bad blocks"
    $CLIENT verify "$(uri srv)" $z2 524288 92 || die "data of the other zone"
    echo "-$((bad / 512))-$((bad / 512 + 7))" > $d/badblocks || die "clearing badblocks"
    $CLIENT write "$(uri srv)" $((z1 + 262144)) 262144 91 16384 || die "writing on at the WP"
    assert_zone $dev 1 524288
    $CLIENT verify "$(uri srv)" $z1 524288 91 || die "data after the bad blocks healed"
}

# ---- SCSI ZBC faults (scsi_debug) ------------------------------------------

# Medium-error ranges off, and every error injected on the disk removed.
reset_scsi_debug_faults ()
{
    local f
    [ -w /sys/bus/pseudo/drivers/scsi_debug/opts ] &&
        echo 0 > /sys/bus/pseudo/drivers/scsi_debug/opts
    for f in /sys/kernel/debug/scsi_debug/*/error; do
        [ -e "$f" ] || continue
        echo "- 2 0x8a" > $f 2>/dev/null
    done
}

SDEBUG_PARAMS=/sys/module/scsi_debug/parameters
SDEBUG_OPT_MEDIUM_ERR=2

# An unreadable sector on the SCSI disk (scsi_debug's medium error on a
# range of LBAs, in reads): the kernel reports it as ENODATA, which NBD
# cannot carry; the client gets EIO, the log names the real error, and
# the data around it and the write pointer are as they were.
case_scsi_read_medium_error ()
{
    local dev z zs start lba
    dev=$(scsi_debug_disk); [ -n "$dev" ] || die "no scsi_debug disk"
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    start_nbdkit srv -v $PLUGIN device=/dev/$dev
    $CLIENT write "$(uri srv)" $start 262144 41 16384 || die "write at the WP"
    lba=$(( (start + 131072) / 4096 ))
    echo $lba > $SDEBUG_PARAMS/medium_error_start || die "medium_error_start"
    echo 1 > $SDEBUG_PARAMS/medium_error_count || die "medium_error_count"
    echo $SDEBUG_OPT_MEDIUM_ERR > /sys/bus/pseudo/drivers/scsi_debug/opts || die "opts"
    expect_error "EIO" "No data available\|ENODATA" \
        $CLIENT verify "$(uri srv)" $((start + 131072)) 16384 41
    echo 0 > /sys/bus/pseudo/drivers/scsi_debug/opts
    grep -q "read of 16384 bytes at $((start + 131072)) (zone $z) failed: No data available (ENODATA); the client is told EIO" $W/srv.log ||
        die "the log line does not name the offset, the zone and ENODATA"
    $CLIENT verify "$(uri srv)" $start 262144 41 || die "data around the bad sector"
    assert_zone $dev $z 262144
}

# A write that fails with a medium error in the middle of a pipelined
# stream into one zone (scsi_debug's per-device error injection, Linux
# 6.7 and later: fail the next WRITE(16) once): the failing write gets
# EIO, the zone is re-read and its WP is true, the data before it is
# intact, and writing on at the WP works.
case_scsi_write_medium_error ()
{
    local dev z zs start hctl err rc wp
    dev=$(scsi_debug_disk); [ -n "$dev" ] || die "no scsi_debug disk"
    hctl=$(basename "$(readlink -f /sys/block/$dev/device)")
    grep -q ' /sys/kernel/debug debugfs ' /proc/mounts ||
        mount -t debugfs debugfs /sys/kernel/debug || die "mount debugfs"
    err=/sys/kernel/debug/scsi_debug/$hctl/error
    [ -e $err ] || die "no $err on $(uname -r)"
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    start_nbdkit srv -v --threads 16 $PLUGIN device=/dev/$dev reorder-timeout=2s
    $CLIENT write "$(uri srv)" $start 262144 42 16384 || die "write at the WP"
    # Type 2 (fail the command), once (-1), WRITE(16) (0x8a, which ZBC
    # disks are always sent): CHECK CONDITION (status 0x2), MEDIUM ERROR
    # (sense key 3), RECORDED ENTITY NOT FOUND (asc 0x14), what libata
    # makes of an ATA drive's IDNF on a write.  The SCSI layer does not
    # retry it (a WRITE ERROR, asc 0x0c, would be retried and succeed);
    # the kernel reports it as ENODATA.
    echo "2 -1 0x8a 0 0 0x2 0x3 0x14 0x0" > $err || die "arming $err"
    rc=0
    timeout 120 $CLIENT shuffle "$(uri srv)" $((start + 262144)) 262144 42 16384 1 8 5 > $W/s1 2>&1 || rc=$?
    cat $W/s1 | tail -n 5
    say "injected: $(cat $err)"
    [ $rc = 1 ] || die "the stream through the failing write ended with $rc (1 expected)"
    grep -q "errno=EIO" $W/s1 || die "no EIO reached the client"
    grep -q "zone $z re-read from the device: WP $((start + 262144))" $W/srv.log ||
        die "the zone was not re-read after the error"
    assert_zone $dev $z 262144
    wp=$(nbdinfo --map "$(uri srv)" | awk -v s=$start -v e=$((start + zs)) '$1 >= s && $1 < e && $3 == 3 { print $1 - s; exit }')
    [ "$wp" = 262144 ] || die "block status shows WP $wp, the device 262144"
    $CLIENT verify "$(uri srv)" $start 262144 42 || die "data before the failed write"
    $CLIENT write "$(uri srv)" $((start + 262144)) 262144 42 16384 || die "writing on at the WP"
    assert_zone $dev $z 524288
    $CLIENT verify "$(uri srv)" $start 524288 42 || die "data after the failed write"
}

# A host-aware ZBC disk.  Linux 6.1 shows it as host-aware, and the
# plugin serves it as host-managed zones (sequential-write-preferred
# zones written only at their write pointer, as the man page says);
# from Linux 6.10 on the kernel treats host-aware disks as regular ones
# (queue/zoned "none"), and the plugin refuses it as a zoned device with
# one line saying what the kernel reports.
case_scsi_host_aware ()
{
    local dev z zs start
    rmmod scsi_debug || die "rmmod scsi_debug"
    load_scsi_debug zbc=aware sector_size=4096 dev_size_mb=64 zone_size_mb=8 zone_nr_conv=1 delay=0
    dev=$(scsi_debug_disk)
    say "$dev: queue/zoned $(cat /sys/block/$dev/queue/zoned) on $(uname -r)"
    if [ "$(cat /sys/block/$dev/queue/zoned)" = host-aware ]; then
        serve srv $dev
        nbdinfo "$(uri srv)" > $W/info || die "nbdinfo"
        grep -q 'zoned=host-aware' $W/info || die "the description does not say host-aware: $(grep description $W/info)"
        z=$(first_seq_zone_or_swp $dev)
        zs=$(zone_bytes $dev)
        start=$((z * zs))
        $CLIENT write "$(uri srv)" $start 65536 43 || die "write at the WP"
        expect_error "EIO" "below the write pointer" \
            $CLIENT write "$(uri srv)" $start 65536 44
        assert_zone $dev $z 65536
        $CLIENT verify "$(uri srv)" $start 65536 43 || die "data"
    else
        [ "$(cat /sys/block/$dev/queue/zoned)" = none ] || die "unexpected zoned model"
        if timeout 30 nbdkit -f -U $W/ha.sock $PLUGIN device=/dev/$dev > $W/ha.log 2>&1; then
            die "the plugin served a disk the kernel does not treat as zoned"
        fi
        cat $W/ha.log
        grep -q "not a zoned block device\|reports its zoned model as \"none\"" $W/ha.log ||
            die "no clear refusal line"
    fi
    rmmod scsi_debug || die "rmmod scsi_debug (aware)"
    load_scsi_debug $SCSI_ZBC_PARAMS
}

# The first zone that is not conventional (type 2 or 3).
first_seq_zone_or_swp ()
{
    local z=0 n t
    n=$(nr_zones $1)
    while [ $z -lt $n ]; do
        t=$(zone_field $1 $z type)
        [ "$t" = 2 ] || [ "$t" = 3 ] && { echo $z; return 0; }
        z=$((z + 1))
    done
    die "$1 has no sequential zone"
}

# The device is reopened read-write by the first writer: through the
# descriptor opened at start, not the path.  Here the path is made to
# name another device before that: the write must reach the served one,
# and the other device must not change.
case_reopen_device ()
{
    local zs start other
    zs=$(zone_bytes nullb0)
    start=$(( $(first_seq_zone nullb0) * zs ))
    # A name that can be pointed elsewhere (udev's /dev/disk/by-* links
    # are such names, and follow a hot-swapped disk).
    ln -s /dev/nullb0 $W/disk || die "ln"
    start_nbdkit srv $PLUGIN device=$W/disk
    ln -sfn /dev/nullb1 $W/disk || die "ln"
    other=$(zone_field nullb1 $((start / $(zone_bytes nullb1))) wptr)
    $CLIENT write "$(uri srv)" $start 65536 95 || die "write"
    assert_zone nullb0 $((start / zs)) 65536
    [ "$(zone_field nullb1 $((start / $(zone_bytes nullb1))) wptr)" = "$other" ] ||
        die "the write went to the device now at the path (nullb1)"
}

# One server per drive: a second server on a drive in use is refused at
# start, naming the first; once the first has a writer it holds the
# drive with O_EXCL, so programs that open it exclusively (blkdiscard)
# are refused too; and a drive someone else holds exclusively (here a
# device-mapper table) is refused at start to a server that may write,
# while a read-only one still serves it.
case_one_server ()
{
    local dev=$1 zs start sectors pid
    zs=$(zone_bytes $dev)
    start=$(( $(first_seq_zone $dev) * zs ))
    need_product
    start_nbdkit srv $PLUGIN device=/dev/$dev
    pid=$(cat $W/srv.pid)
    if timeout 30 nbdkit -U $W/two.sock $PLUGIN device=/dev/$dev --run true 2> $W/two.err; then
        die "a second server started on a drive in use"
    fi
    cat $W/two.err
    grep -q "device=/dev/$dev: the drive is in use by another server (process $pid, nbdkit)" $W/two.err ||
        die "the refusal does not name the first server"
    $CLIENT write "$(uri srv)" $start 65536 96 || die "write"
    if timeout 30 blkdiscard -o $((start + zs)) -l $zs /dev/$dev 2> $W/discard.err; then
        die "blkdiscard opened the drive exclusively while a server writes to it"
    fi
    cat $W/discard.err
    grep -q "Device or resource busy" $W/discard.err ||
        die "blkdiscard failed, but not because the drive was busy"
    assert_zone $dev $((start / zs)) 65536
    stop_nbdkit srv

    sectors=$(blockdev --getsz /dev/$dev) || die "blockdev --getsz"
    dmsetup create zt-hold --table "0 $sectors linear /dev/$dev 0" || die "dmsetup create"
    if timeout 30 nbdkit -U $W/two.sock $PLUGIN device=/dev/$dev --run true 2> $W/two.err; then
        die "a server that may write started on a drive device-mapper holds"
    fi
    cat $W/two.err
    grep -q "device=/dev/$dev: the drive is in exclusive use (O_EXCL) (no process has it open: mounted, or held by device-mapper or md, see /sys/block/$dev/holders)" $W/two.err ||
        die "the refusal does not say that the drive is held exclusively"
    start_nbdkit ro -r $PLUGIN device=/dev/$dev
    $CLIENT verify "$(uri ro)" $start 65536 96 || die "a read-only server cannot read a held drive"
    stop_nbdkit ro
    dmsetup remove zt-hold || die "dmsetup remove"
}

# dir_uri NAME EXPORT: the export EXPORT of nbdkit NAME.
dir_uri () { echo "nbd+unix:///$2?socket=$W/$1.sock"; }

# One server for a shelf of drives (dir=): null_blk, the ZNS namespace
# and a null_blk drive that fails, each a link in the drives directory,
# each with its own raw key (crypt-key-dir).  Pipelined streams into all
# three at once: the failing drive's stream gets EIO at its bad blocks,
# the others land whole; each drive then decrypts with its own key alone
# (a single-drive server with that key file reads it back); a drive
# removed while the server runs is no longer offered, and the others go
# on.
case_dir_drives ()
{
    local d=$W/drives k=$W/keys n dev z start rc_a rc_b rc_c bad
    fault_nullb nullbbad
    mkdir -p $d $k
    ln -s /dev/nullb0 $d/nullb0
    ln -s /dev/$NVME_DEV $d/zns
    ln -s /dev/nullbbad $d/bad
    for n in nullb0 zns bad; do head -c 64 /dev/urandom > $k/$n; done
    # bad blocks 256 KiB into bad's first sequential zone.
    z=$(( $(first_seq_zone nullbbad) * $(zone_bytes nullbbad) ))
    bad=$((z + 262144))
    echo "+$((bad / 512))-$((bad / 512 + 7))" > /sys/kernel/config/nullb/nullbbad/badblocks ||
        die "badblocks"
    need_product
    start_nbdkit dir -v --threads 16 --filter=$FILTER $PLUGIN dir=$d crypt-key-dir=$k
    nbdinfo --list "$(uri dir)" > $W/list || die "nbdinfo --list"
    for n in bad nullb0 zns; do
        grep -q "^export=\"$n\":" $W/list || { cat $W/list; die "export $n not listed"; }
    done
    [ "$(grep -c '^export=' $W/list)" = 3 ] || { cat $W/list; die "not three exports"; }
    say "listed: $(grep '^export=' $W/list | tr '\n' ' ')"
    grep -q 'description: zoned=host-managed zone-size=16777216 zone-capacity=12582912' $W/list ||
        { cat $W/list; die "zns is not described with its own geometry"; }
    start_of () { echo $(( $(first_seq_zone $1) * $(zone_bytes $1) )); }
    timeout 180 $CLIENT shuffle "$(dir_uri dir nullb0)" $(start_of nullb0) 1048576 61 16384 2 8 1 \
        > $W/a.out 2>&1 &
    pa=$!
    timeout 180 $CLIENT shuffle "$(dir_uri dir zns)" $(start_of $NVME_DEV) 1048576 62 16384 2 8 2 \
        > $W/b.out 2>&1 &
    pb=$!
    timeout 180 $CLIENT shuffle "$(dir_uri dir bad)" $z 524288 63 16384 2 8 3 \
        > $W/c.out 2>&1 &
    pc=$!
    rc_a=0; wait $pa || rc_a=$?
    rc_b=0; wait $pb || rc_b=$?
    rc_c=0; wait $pc || rc_c=$?
    [ $rc_a = 0 ] || { cat $W/a.out; die "the stream into nullb0 failed ($rc_a)"; }
    [ $rc_b = 0 ] || { cat $W/b.out; die "the stream into zns failed ($rc_b)"; }
    [ $rc_c = 1 ] || { cat $W/c.out; die "the stream through bad blocks ended with $rc_c, not 1 (failed writes)"; }
    grep -q "errno=EIO" $W/c.out || die "no EIO reached bad's client"
    say "bad's stream: $(grep -m1 errno=EIO $W/c.out)"
    grep -q "device=$d/bad: write of 16384 bytes at $bad (zone 1) failed: Input/output error (EIO)" $W/dir.log ||
        die "no log line naming bad's failing write"
    assert_zone nullb0 $(first_seq_zone nullb0) 1048576
    assert_zone $NVME_DEV $(first_seq_zone $NVME_DEV) 1048576
    assert_zone nullbbad 1 262144
    $CLIENT verify "$(dir_uri dir nullb0)" $(start_of nullb0) 1048576 61 || die "nullb0 reads back"
    $CLIENT verify "$(dir_uri dir zns)" $(start_of $NVME_DEV) 1048576 62 || die "zns reads back"

    # bad gone while serving: unlisted, refused, the others go on.
    echo 0 > /sys/kernel/config/nullb/nullbbad/power
    rmdir /sys/kernel/config/nullb/nullbbad
    nbdinfo --list "$(uri dir)" > $W/list || die "nbdinfo --list after bad was removed"
    grep -q '^export="bad":' $W/list && die "a removed drive is still listed"
    if nbdinfo "$(dir_uri dir bad)" > /dev/null 2>&1; then die "a removed drive was served"; fi
    grep -q 'no export "bad" (No such file or directory); the exports are: nullb0, zns' $W/dir.log ||
        die "no log line naming the exports left"
    say "bad removed: $(grep -m1 'no export "bad"' $W/dir.log)"
    $CLIENT verify "$(dir_uri dir zns)" $(start_of $NVME_DEV) 1048576 62 ||
        die "zns stopped working after bad was removed"
    stop_nbdkit dir

    # Each drive holds what dm-crypt's format makes with its own key: a
    # server of that drive alone with that key reads it back, with the
    # other drive's key it does not.
    start_nbdkit one --filter=$FILTER $PLUGIN device=/dev/$NVME_DEV crypt-key-file=$k/zns
    $CLIENT verify "$(uri one)" $(start_of $NVME_DEV) 1048576 62 || die "zns with its own key"
    stop_nbdkit one
    start_nbdkit other --filter=$FILTER $PLUGIN device=/dev/$NVME_DEV crypt-key-file=$k/nullb0
    if $CLIENT verify "$(uri other)" $(start_of $NVME_DEV) 1048576 62 > /dev/null 2>&1; then
        die "zns reads back with nullb0's key"
    fi
    stop_nbdkit other
}

# swap_table NAME TABLE: replace a device-mapper table under an open
# device, without freezing the filesystem on it (that would write its
# dirty pages first).
swap_table ()
{
    dmsetup suspend --nolockfs $1 && dmsetup load $1 --table "$2" &&
        dmsetup resume $1 || die "dmsetup: cannot swap $1 to $2"
}

# A failed sync latches.  The image lives on ext2 on a device-mapper
# device over a plain null_blk; with a write to zone 2 acknowledged but
# still in the page cache, the table is swapped to dm-error: the flush
# fails (writeback failed; a kernel NBD client holds a writable
# connection open throughout, so that no disconnect flushes before the
# swap).  With the good table back, the kernel's next
# fdatasync would succeed (it reports a writeback error once), and a
# flush that then wrote the zone table would durably claim the lost
# data.  So every flush and write after it must fail with EIO, the log
# says so once, and after a remount (the page cache gone) zone 2's WP
# covers only data that reached the disk.
case_sync_fail ()
{
    local d=/dev/mapper/zt-img M=1048576 sectors expire wp n
    need_product
    make_nullb nullbimg blocksize=4096 memory_backed=1 size=64
    sectors=$(blockdev --getsz /dev/nullbimg) || die "blockdev --getsz"
    dmsetup create zt-img --table "0 $sectors linear /dev/nullbimg 0" || die "dmsetup create"
    # No udev here: dmsetup makes the node itself.
    [ -b $d ] || dmsetup mknodes zt-img
    [ -b $d ] || die "no $d"
    mke2fs -q -b 4096 $d > /dev/null || die "mke2fs"
    mkdir -p /mnt/img
    mount -t ext2 $d /mnt/img || die "mount ext2 (ext4 module?)"
    # The kernel's own writeback must not write zone 2 before the swap.
    expire=$(cat /proc/sys/vm/dirty_expire_centisecs)
    echo 360000 > /proc/sys/vm/dirty_expire_centisecs
    start_nbdkit srv $PLUGIN emulate=/mnt/img/disk.img size=16M zone-size=1M
    # A writable connection that stays (the kernel NBD client): the last
    # writer leaving would flush (an orderly stop keeps every write), and
    # zone 2 must stay in the page cache until the swap.
    nbd_attach srv
    $CLIENT write "$(uri srv)" $M 65536 97 || die "write zone 1"
    $CLIENT flush "$(uri srv)" || die "flush with a good disk"
    $CLIENT write "$(uri srv)" $((2 * M)) 65536 98 || die "write zone 2"
    swap_table zt-img "0 $sectors error"
    expect_error "EIO" "fdatasync" $CLIENT flush "$(uri srv)"
    swap_table zt-img "0 $sectors linear /dev/nullbimg 0"
    # The disk is good again: the latch, not the disk, refuses these.
    $CLIENT flush "$(uri srv)" > $W/f.out 2>&1 &&
        die "a flush after the failed sync succeeded (the disk is good again)"
    grep -q "errno=EIO" $W/f.out || die "a flush after the failed sync: $(cat $W/f.out)"
    $CLIENT write "$(uri srv)" $((3 * M)) 65536 99 > $W/w.out 2>&1 &&
        die "a write after the failed sync succeeded"
    grep -q "errno=EIO" $W/w.out || die "a write after the failed sync: $(cat $W/w.out)"
    n=$(grep -c "fdatasync failed" $W/srv.log)
    [ "$n" = 1 ] || die "the failed sync is logged $n times, not once"
    grep "fdatasync failed" $W/srv.log
    nbd_detach
    stop_nbdkit srv
    echo $expire > /proc/sys/vm/dirty_expire_centisecs

    umount /mnt/img || die "umount"
    echo 3 > /proc/sys/vm/drop_caches
    mount -t ext2 $d /mnt/img || die "mount ext2 again"
    start_nbdkit chk $PLUGIN emulate=/mnt/img/disk.img
    $CLIENT verify "$(uri chk)" $M 65536 97 || die "the flushed write to zone 1 is lost"
    # The WP: 0 if zone 2 starts in a hole, else where its data extent
    # ends (extents merge across zones, so look at the one covering it).
    nbdinfo --map "$(uri chk)" > $W/map || die "nbdinfo --map"
    wp=$(awk -v s=$((2 * M)) '$1 <= s && s < $1 + $2 {
             if ($3 == 3) print 0; else print ($1 + $2 - s > 1048576 ? 1048576 : $1 + $2 - s)
             exit }' $W/map)
    say "zone 2 WP after the remount: $wp"
    [ -n "$wp" ] || { cat $W/map; die "no extent at zone 2"; }
    [ "$wp" = 0 ] || $CLIENT verify "$(uri chk)" $((2 * M)) $wp 98 ||
        die "zone 2's WP $wp is over data that never reached the disk"
    stop_nbdkit chk
    umount /mnt/img
}

# Write zeroes from the WP to the zone end finishes the zone: full on
# the device, zeros read back above the old WP.
case_zeroes_finish ()
{
    local dev=$1 z zs start cap
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    cap=$(zone_field $dev $z cap)
    start_nbdkit srv $PLUGIN device=/dev/$dev
    $CLIENT write "$(uri srv)" $start 65536 97 || die "write"
    $CLIENT zero "$(uri srv)" $((start + 65536)) $((zs - 65536)) ||
        die "write zeroes to the zone end"
    [ "$(zone_field $dev $z cond)" = 14 ] || die "the zone is not full"
    $CLIENT verify "$(uri srv)" $start 65536 97 || die "data below the old WP"
    $CLIENT verify "$(uri srv)" $((start + 65536)) $((cap - 65536)) zero ||
        die "the finished zone does not read zeros above the old WP"
    dd if=/dev/$dev of=$W/raw bs=65536 count=1 skip=$(((start + cap) / 65536 - 1)) iflag=direct status=none
    dd if=/dev/zero of=$W/zero bs=65536 count=1 status=none
    cmp $W/zero $W/raw || die "the device itself does not read zeros at the end of the zone"
}

# ---- the kernel ----------------------------------------------------------------

# kernel_at_least MAJOR MINOR: is the running kernel that version or later?
kernel_at_least ()
{
    local v major minor
    v=$(uname -r)
    major=${v%%.*}; minor=${v#*.}; minor=${minor%%[!0-9]*}
    [ "$major" -gt "$1" ] || { [ "$major" -eq "$1" ] && [ "$minor" -ge "$2" ]; }
}

# Zoned ublk (nbdzone attach) needs 6.6 or later: Debian 12's backports
# kernel.  The programs a zoned client runs on it are in the image too.
case_zoned_client_tools ()
{
    local m t
    for m in ublk_drv btrfs f2fs; do
        [ -d /sys/module/$m ] || die "module $m not loaded"
    done
    [ -c /dev/ublk-control ] || die "no /dev/ublk-control"
    for t in fio mkfs.btrfs btrfs mkfs.f2fs; do
        command -v $t >/dev/null || die "$t is not in the image"
    done
    say "$(fio --version), $(mkfs.btrfs --version | head -n 1), ublk_drv loaded"
}

# nbdzone attach's cases (vm/guest-attach.sh), where the image has them.
[ -f /guest-attach.sh ] && . /guest-attach.sh
# And its reconnect cases (vm/guest-reconnect.sh).
[ -f /guest-reconnect.sh ] && . /guest-reconnect.sh
# And its recovery cases (vm/guest-recover.sh).
[ -f /guest-recover.sh ] && . /guest-recover.sh

# Sourced for its helpers only (the benchmark, guest-bench.sh): stop here.
[ -n "${GUEST_HELPERS_ONLY:-}" ] && return 0

# ---- running cases -----------------------------------------------------------

# Whatever the cases did (killed servers, dead connections, I/O errors,
# hung servers), the kernel never warned, oopsed or saw a task blocked.
case_kernel_log ()
{
    dmesg > $W/dmesg
    if grep -E "WARNING:|BUG:|Oops|general protection|Call Trace|blocked for more than|hung_task" \
            $W/dmesg > $W/bad; then
        cat $W/bad
        grep -B 5 -A 30 -m 1 -E "WARNING:|BUG:|Oops|general protection|blocked for more than" $W/dmesg
        die "the kernel log has warnings, oopses or blocked tasks"
    fi
    say "$(wc -l < $W/dmesg) kernel log lines, none a warning, oops or blocked task"
}

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
    # The patterns are for case names, not files: without set -f,
    # "*attach*" would expand to /guest-attach.sh and match no case.
    set -f
    for p in $selected; do
        case "$1" in $p) set +f; return 0 ;; esac
    done
    set +f
    return 1
}

# Leave nothing behind a case for the next one: nbdkit, nbd, dm devices.
cleanup_case ()
{
    local p dev
    for p in $W/*.pid; do
        [ -s "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null
    done
    for p in $W/*.pid; do
        [ -s "$p" ] && gone "$(cat "$p")"
    done
    [ -e /sys/block/nbd0/pid ] && timeout 30 nbd-client -d /dev/nbd0 >/dev/null 2>&1
    grep -q ' /mnt/img ' /proc/mounts && umount /mnt/img
    echo 3000 > /proc/sys/vm/dirty_expire_centisecs
    timeout 30 dmsetup remove_all >/dev/null 2>&1
    rm -rf $W
    # The devices a case made for itself.
    for p in /sys/kernel/config/nullb/*/; do
        case $p in */nullb0/|*/nullb1/) continue ;; esac
        [ -d "$p" ] || continue
        echo 0 > ${p}power 2>/dev/null
        rmdir $p
    done
    # No scsi_debug fault outlives its case.
    reset_scsi_debug_faults
    # Every case starts from empty sequential zones.
    for dev in $ZONED_DEVICES; do
        [ -b /dev/$dev ] && timeout 60 blkzone reset /dev/$dev
    done
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
        tail -n 12 /tmp/case.log | sed 's/^/# /' > $TAPDEV
    fi
}

# run_interop_format DEV SECTOR IV-LARGE-SECTORS SKIP: case 5 in one format.
run_interop_format ()
{
    run 180 "$1: case 5: dm-crypt interoperability (sector $2, iv-large-sectors $3, skip $4)" \
        case_dmcrypt_interop $1 key $2 $3 $4
}

run 30 "kernel modules loaded" case_modules
run 60 "zoned devices created" case_create_devices
# The SCSI disk's name is known once scsi_debug is loaded.
ZONED_DEVICES=$(zoned_devices)
for dev in $ZONED_DEVICES; do
    run 60 "$dev: geometry in blkzone report" case_geometry $dev
    run 60 "$dev: raw writes at the WP, reset" case_raw_zone_io $dev
done
run 120 "nbd-client attaches nbdkit memory over a Unix socket" case_nbd_client_memory
for dev in $ZONED_DEVICES; do
    run 120 "$dev: dm-crypt maps the zoned device" case_dmcrypt_available $dev
done

for dev in $ZONED_DEVICES; do
    run 120 "$dev: case 1: nbdzone report equals blkzone (plugin)" case_report $dev
    run 120 "$dev: case 1: nbdzone report equals blkzone (filter)" case_report $dev crypt
done
for dev in $ZONED_DEVICES; do
    run 180 "$dev: case 2: nbd-client, dd at the WP, blkdiscard resets" case_nbd_kernel $dev
done
for dev in $ZONED_DEVICES; do
    run 400 "$dev: case 3: pipelined shuffled writes land in WP order" case_pipelined $dev
done
for dev in $ZONED_DEVICES; do
    run 180 "$dev: case 4: errors reach the client, device untouched" case_errors $dev
done
for dev in $ZONED_DEVICES; do
    run 180 "$dev: case 5: dm-crypt interoperability (raw key)" case_dmcrypt_interop $dev key
    run 180 "$dev: case 5: dm-crypt interoperability (passphrase, sha256)" case_dmcrypt_interop $dev passphrase
    # Sector sizes, iv_large_sectors and IV offsets (cryptsetup --skip).
    for fmt in "512 false 3" "1024 true 0" "2048 false 8" "4096 true 16"; do
        run_interop_format $dev $fmt
    done
done
for dev in $ZONED_DEVICES; do
    run 400 "$dev: case 6: kill -9 during a write stream, restart" case_crash $dev
done
for dev in $ZONED_DEVICES; do
    run 300 "$dev: case 7: LUKS2 detached header, cryptsetup open --header interoperability" case_luks_interop $dev luks2
done
run 300 "nullb1: case 7: LUKS1 detached header, cryptsetup open --header interoperability" case_luks_interop nullb1 luks1
run 300 "nullb0: case 7: LUKS2 detached header with iv_tweak 8, read as cryptsetup open --header reads it" case_luks_interop nullb0 luks2 tweak

run 120 "slow device: in-order pipelined writes beat the gate's timeout" case_slow_device
run 120 "read-only and offline zones" case_zone_states
run 180 "2048 scattered read-only and offline zones: the description fits in 4096 bytes" \
    case_many_zone_states
run 180 "bad blocks mid-zone during pipelined writes" case_badblocks
run 120 "a short last zone: full zones' capacity described, written to its end" \
    case_short_last_zone
# From 6.10 the kernel itself refuses such a device ("Invalid variable
# zone capacity"); before, as in Debian 12's 6.1, the server must.
if ! kernel_at_least 6 10; then
    run 60 "zones of two capacities on one device: refused at start, nothing written" \
        case_mixed_capacity
fi
run 60 "reopening for writing keeps the device" case_reopen_device
for dev in nullb0 $(scsi_debug_disk); do
    run 120 "$dev: one server per drive: lock, O_EXCL, a held drive refused" \
        case_one_server $dev
done
run 120 "a failed sync under the image latches EIO (dm-error)" case_sync_fail
run 300 "dir=: null_blk, ZNS and a failing drive served by one server, a key each" \
    case_dir_drives
run 180 "SCSI ZBC: a medium error on read: EIO to the client, ENODATA in the log" \
    case_scsi_read_medium_error
if kernel_at_least 6 7; then
    run 180 "SCSI ZBC: a medium error mid-stream on write: EIO, WP re-read, nothing else lost" \
        case_scsi_write_medium_error
fi
for dev in $ZONED_DEVICES; do
    run 180 "$dev: write zeroes to the zone end finishes it, zeros read back" case_zeroes_finish $dev
done

# The client side: the export as a zoned block device (zoned ublk, 6.6+).
if kernel_at_least 6 6; then
    run 30 "zoned client: ublk_drv, btrfs, f2fs, fio present" case_zoned_client_tools
fi
if command -v attach_cases >/dev/null 2>&1; then
    attach_cases
fi
if command -v reconnect_cases >/dev/null 2>&1; then
    reconnect_cases
fi
if command -v recover_cases >/dev/null 2>&1; then
    recover_cases
fi

if kernel_at_least 6 10; then
    run 120 "SCSI ZBC host-aware: refused as not zoned where the kernel treats it as a regular disk" \
        case_scsi_host_aware
fi
run 30 "kernel log: no warning, oops or blocked task after all cases" case_kernel_log

tap "1..$tap_n"
echo "guest-tests: $tap_fail of $tap_n failed"
[ $tap_fail = 0 ]
