# nbdzone attach in the VM: the export as a host-managed zoned block
# device (zoned ublk, Linux 6.6 or later), on real zoned devices.
#
# Sourced by guest-tests.sh, which calls attach_cases.  Each case serves
# a device with nbdkit (plugin and filter), attaches it with
# "nbdzone attach" over a Unix socket or TCP loopback, checks what the
# kernel and the programs on the ublk device see, and detaches.  On an
# older kernel the one case checks that attach says why it cannot.

ATTACH_PORT=10809
# A larger null_blk for filesystems: 8 MiB zones, 8 conventional ones
# (f2fs keeps its metadata there), the rest sequential.
FS_DEV=nullb2
FS_DEV_MB=512

# ---- helpers ---------------------------------------------------------------

# ublk_attach URI [ARGS...]: attach, and print the device (/dev/ublkbN).
ublk_attach ()
{
    local uri=$1 dev
    shift
    dev=$(timeout 60 $NBDZONE attach "$uri" "$@" 2>>$W/attach.log) ||
        die "nbdzone attach $uri failed: $(tail -n 3 $W/attach.log)"
    case $dev in /dev/ublkb[0-9]*) ;; *) die "attach printed \"$dev\"" ;; esac
    [ -b $dev ] || die "$dev is not a block device"
    echo $dev
}

# ublk_detach /dev/ublkbN: detach; the device must be gone after it.
ublk_detach ()
{
    timeout 60 $NBDZONE detach $1 >>$W/attach.log 2>&1 ||
        die "nbdzone detach $1 failed: $(tail -n 3 $W/attach.log)"
    [ ! -e /sys/block/${1#/dev/} ] || die "$1 still exists after detach"
}

# Whatever a case leaves: mounts, ublk devices.
ublk_cleanup ()
{
    local m b
    for m in /mnt/a /mnt/b; do
        grep -q " $m " /proc/mounts && umount -l $m
    done
    # By the character devices: a device whose server died has no disk.
    for b in /dev/ublkc*; do
        [ -e "$b" ] && timeout 60 $NBDZONE detach /dev/ublkb${b#/dev/ublkc} >/dev/null 2>&1
    done
    return 0
}

# The ublk side's zone report equals the device's.
compare_ublk_report ()
{
    blkzone report $2 > $W/ublk.raw || die "blkzone report $2"
    report_matches_device $1 $W/ublk.raw $2
}

# A storage host and a client joined by a network link: the server side
# in its own network namespace (held by a sleeping process, its pid in
# $W/netns.pid, so that cleanup_case ends it and the link with it), the
# client in this one, a veth pair between them: zc0 (10.77.0.1) here,
# zs0 (10.77.0.2) there.  Taking zc0 down is a network loss; tc netem on
# both ends is a network's round trip.
VETH_CLIENT=10.77.0.1
VETH_SERVER=10.77.0.2
# iproute2's ip and tc and util-linux's nsenter and unshare, not
# busybox's applets of those names, which the guest's shell (and
# busybox's own nsenter, for the command it runs) prefer whatever PATH
# says; busybox's ip and tc have no veth and no netem.
ip () { /usr/bin/ip "$@"; }
tc () { /usr/sbin/tc "$@"; }
NSENTER=/usr/bin/nsenter

veth_up ()
{
    local ns i=0
    [ -s $W/netns.pid ] && return 0
    # Its output not on the case's pipe, which would then stay open
    # until cleanup_case, which waits for the pipe to close.
    /usr/bin/unshare --net sleep 100000 < /dev/null > /dev/null 2>&1 &
    ns=$!
    echo $ns > $W/netns.pid
    # The pair of an earlier case's namespace goes with it, but not at once.
    ip link del zc0 2>/dev/null || :
    # unshare execs sleep once the namespace is made.
    until [ "$(readlink /proc/$ns/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do
        i=$((i + 1)); [ $i -gt 100 ] && die "no network namespace for the server"
        sleep 0.1
    done
    ip link add zc0 type veth peer name zs0 || die "ip link add veth"
    ip link set zs0 netns $ns || die "veth into the server's namespace"
    ip addr add $VETH_CLIENT/24 dev zc0 && ip link set zc0 up ||
        die "the client's end of the link"
    in_server_ns ip link set lo up || die "lo in the server's namespace"
    in_server_ns ip addr add $VETH_SERVER/24 dev zs0 &&
        in_server_ns ip link set zs0 up || die "the server's end of the link"
}

# in_server_ns COMMAND...: COMMAND in the server's network namespace.
in_server_ns () { $NSENTER -t $(cat $W/netns.pid) -n "$@"; }

# veth_rtt MS: the link's round trip made MS milliseconds longer (half
# each way; 0 takes the delay away).
veth_rtt ()
{
    local half
    half=$(echo "$1" | awk '{ printf "%.3f", $1 / 2 }')
    tc qdisc del dev zc0 root 2>/dev/null || :
    in_server_ns tc qdisc del dev zs0 root 2>/dev/null || :
    [ "$1" = 0 ] && return 0
    tc qdisc add dev zc0 root netem delay ${half}ms limit 100000 &&
        in_server_ns tc qdisc add dev zs0 root netem delay ${half}ms limit 100000 ||
        die "tc netem delay ${half}ms on the link"
}

# tcp_serve NAME DEV HOST [WRAP...] -- NBDKIT-ARGS: nbdkit with the
# filter on /dev/DEV listening on HOST:$ATTACH_PORT, started through the
# command WRAP (nothing, or an nsenter, which execs nbdkit: so nbdkit is
# this shell's child, and --exit-with-parent ends it with the case); its
# URI in $URI.
tcp_serve ()
{
    local name=$1 dev=$2 host=$3 i=0 wrap=
    shift 3
    while [ $# -gt 0 ] && [ "$1" != -- ]; do wrap="$wrap $1"; shift; done
    shift
    $wrap nbdkit -f --exit-with-parent -i $host -p $ATTACH_PORT \
        -P $W/$name.pid "$@" --filter=$FILTER $PLUGIN device=/dev/$dev \
        crypt-key-file=$W/key crypt-sector-size=4096 < /dev/null > /dev/null 2>>$W/$name.log &
    until [ -s $W/$name.pid ] &&
          nbdinfo --size nbd://$host:$ATTACH_PORT >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt 300 ] && { tail -n 5 $W/$name.log; die "nbdkit on $host did not start"; }
        sleep 0.1
    done
    URI=nbd://$host:$ATTACH_PORT
}

# attach_serve NAME DEV unix|tcp|veth [NBDKIT-ARGS...]: nbdkit with the
# filter on /dev/DEV, on a Unix socket, TCP loopback, or TCP across the
# veth link from its own network namespace; its URI in $URI.  Not in a
# subshell: nbdkit exits with its parent.
attach_serve ()
{
    local name=$1 dev=$2 transport=$3
    shift 3
    [ -s $W/key ] || make_key
    case $transport in
        unix)
            serve $name $dev crypt "$@"
            URI=$(uri $name) ;;
        tcp)
            ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
            tcp_serve $name $dev 127.0.0.1 -- "$@" ;;
        veth)
            veth_up
            tcp_serve $name $dev $VETH_SERVER $NSENTER -t $(cat $W/netns.pid) -n -- "$@" ;;
        *) die "attach_serve: no transport $transport" ;;
    esac
}

# On the harness's timeout: what was going on.
ublk_dump ()
{
    echo "---- stalled; last lines of attach.log, srv.log, the kernel log:"
    $NBDZONE list 2>/dev/null | sed -n 's/.* pid \([0-9]*\).*/\1/p' |
        while read -r p; do kill -USR1 $p; done
    sleep 2
    echo w > /proc/sysrq-trigger 2>/dev/null
    tail -n 40 $W/attach.log $W/srv.log 2>/dev/null
    dmesg | tail -n 60
    ps | grep -v ']$' | tail -n 15
}

need_ublk ()
{
    need_product
    [ -c /dev/ublk-control ] || die "no /dev/ublk-control (ublk_drv not loaded)"
    trap ublk_cleanup EXIT
    trap 'ublk_dump; exit 124' TERM
}

# ---- cases -----------------------------------------------------------------

# Linux before 6.6: attach refuses, saying why, and creates nothing.
case_attach_old_kernel ()
{
    need_product
    serve srv nullb0 crypt
    if $NBDZONE attach "$(uri srv)" > $W/out 2> $W/err; then
        die "attach succeeded on $(uname -r)"
    fi
    cat $W/err
    grep -q "this kernel (Linux $(uname -r)) is older than 6.6: zoned ublk devices need Linux 6.6 or later" $W/err ||
        die "attach did not say why"
    [ ! -s $W/out ] || die "attach printed $(cat $W/out)"
    ! ls /sys/block | grep -q ublk || die "a ublk device exists"
}

# blkzone report of the ublk device equals the device's, before and
# after writes through ublk; reset and finish on ublk reach the device.
case_attach_report ()
{
    local dev=$1 transport=$2 u ublk z zs start
    need_ublk
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    shape_zones $dev $z
    attach_serve srv $dev $transport; u=$URI
    ublk=$(ublk_attach "$u")
    say "$dev over $transport: $ublk, $(cat /sys/block/${ublk#/dev/}/queue/zoned)," \
        "$(cat /sys/block/${ublk#/dev/}/queue/nr_zones) zones," \
        "max open $(cat /sys/block/${ublk#/dev/}/queue/max_open_zones)," \
        "max active $(cat /sys/block/${ublk#/dev/}/queue/max_active_zones)"
    [ "$(cat /sys/block/${ublk#/dev/}/queue/zoned)" = host-managed ] ||
        die "$ublk is not host-managed"
    [ "$(cat /sys/block/${ublk#/dev/}/queue/chunk_sectors)" = "$(cat /sys/block/$dev/queue/chunk_sectors)" ] ||
        die "zone size differs"
    [ "$(cat /sys/block/${ublk#/dev/}/queue/max_open_zones)" = "$(cat /sys/block/$dev/queue/max_open_zones)" ] ||
        die "max open zones differ"
    [ "$(cat /sys/block/${ublk#/dev/}/queue/max_active_zones)" = "$(cat /sys/block/$dev/queue/max_active_zones)" ] ||
        die "max active zones differ"
    compare_ublk_report $dev $ublk

    # Writes at the WP of the partly written zone and of an empty one.
    gen_file $W/data 262144
    dd if=$W/data of=$ublk bs=65536 seek=$(((start + 131072) / 65536)) oflag=direct status=none ||
        die "write at the WP through $ublk"
    dd if=$W/data of=$ublk bs=65536 seek=$(((start + 3 * zs) / 65536)) oflag=direct status=none ||
        die "write to an empty zone through $ublk"
    assert_zone $dev $z $((131072 + 262144))
    assert_zone $dev $((z + 3)) 262144
    compare_ublk_report $dev $ublk
    dd if=$ublk of=$W/back bs=65536 skip=$(((start + 3 * zs) / 65536)) count=4 iflag=direct status=none
    cmp $W/data $W/back || die "read back through $ublk differs"
    dd if=/dev/$dev of=$W/raw bs=65536 skip=$(((start + 3 * zs) / 65536)) count=4 iflag=direct status=none
    cmp -s $W/data $W/raw && die "the device holds plaintext"

    # A write below the WP fails, and changes nothing.
    if dd if=$W/data of=$ublk bs=65536 count=1 seek=$((start / 65536)) oflag=direct status=none 2>/dev/null; then
        die "a write below the WP succeeded through $ublk"
    fi
    assert_zone $dev $z $((131072 + 262144))

    # Reset and finish on ublk change the real device.
    blkzone reset -o $((start / 512)) -c 1 $ublk || die "blkzone reset on $ublk"
    assert_zone $dev $z 0 1
    blkzone finish -o $(((start + 3 * zs) / 512)) -c 1 $ublk || die "blkzone finish on $ublk"
    [ "$(zone_field $dev $((z + 3)) cond)" = 14 ] || die "zone $((z + 3)) not full after finish"
    # Open and close are accepted (and have no effect over NBD).
    blkzone open -o $(((start + 4 * zs) / 512)) -c 1 $ublk || die "blkzone open on $ublk"
    blkzone close -o $(((start + 4 * zs) / 512)) -c 1 $ublk || die "blkzone close on $ublk"
    compare_ublk_report $dev $ublk
    ublk_detach $ublk
}

# fio --zonemode=zbd with verification on the ublk device: sequential
# writes at QD 8 over many zones within the open-zone limit, read back
# and checked; then random zone writes with zone resets.  QUEUES ublk
# queues (default 1), each with its own NBD connection: with 2, the
# writes of one zone arrive on both, and the server's gate orders them.
case_attach_fio ()
{
    local dev=$1 queues=${2:-1} u ublk maxopen nz
    need_ublk
    attach_serve srv $dev unix; u=$URI
    ublk=$(ublk_attach "$u" --depth 32 --queues $queues)
    [ "$(ls /sys/block/${ublk#/dev/}/mq | wc -l)" = $queues ] ||
        die "$ublk has $(ls /sys/block/${ublk#/dev/}/mq | wc -l) hardware queues, not $queues"
    maxopen=$(cat /sys/block/${ublk#/dev/}/queue/max_open_zones)
    [ "$maxopen" = 0 ] && maxopen=4
    nz=$(nr_zones $dev)
    timeout 600 fio --name=seq --filename=$ublk --direct=1 --ioengine=libaio \
        --zonemode=zbd --max_open_zones=$maxopen --rw=write --bs=64k \
        --iodepth=8 --size=$(( (nz / 2) * $(zone_bytes $dev) )) \
        --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --output=$W/fio-seq.out || { cat $W/fio-seq.out; die "fio (sequential, verify) failed"; }
    grep -E "err= *0" $W/fio-seq.out >/dev/null || { cat $W/fio-seq.out; die "fio reported errors"; }
    say "$(grep -E 'WRITE:|READ:' $W/fio-seq.out)"
    timeout 600 fio --name=rnd --filename=$ublk --direct=1 --ioengine=libaio \
        --zonemode=zbd --max_open_zones=$maxopen --rw=randwrite --bs=16k \
        --iodepth=4 --io_size=$((4 * $(zone_bytes $dev))) \
        --zone_reset_threshold=0.3 --zone_reset_frequency=1 \
        --output=$W/fio-rnd.out || { cat $W/fio-rnd.out; die "fio (random, resets) failed"; }
    grep -E "err= *0" $W/fio-rnd.out >/dev/null || { cat $W/fio-rnd.out; die "fio reported errors"; }
    say "$(grep -E 'WRITE:' $W/fio-rnd.out)"
    ublk_detach $ublk
}

# The large null_blk the filesystem cases use.
make_fs_dev ()
{
    [ -b /dev/$FS_DEV ] && return 0
    make_nullb $FS_DEV blocksize=4096 memory_backed=1 size=$FS_DEV_MB \
        zoned=1 zone_size=8 zone_nr_conv=8
}

# write_files DIR N MB: N files of MB MiB of random data, in parallel;
# their checksums in $W/sums.
write_files ()
{
    local dir=$1 n=$2 mb=$3 i pids=
    i=0
    while [ $i -lt $n ]; do
        dd if=/dev/urandom of=$dir/f$i bs=1M count=$mb status=none &
        pids="$pids $!"
        i=$((i + 1))
    done
    # Only the writers: a bare wait would wait for nbdkit too.
    for i in $pids; do wait $i || die "writing $dir failed"; done
    ( cd $dir && sha256sum f* ) > $W/sums
}

# bounded_sync: sync, or a dump of what hangs after 120 s.
bounded_sync ()
{
    local pid i=0
    sync &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 120 ]; then
            ublk_dump
            die "sync did not finish in 120 s"
        fi
        sleep 1
    done
}

# btrfs -O zoned on the ublk device: data writes are zone appends,
# several threads append into the same zones at once.  Files survive
# unmount and mount, scrub is clean, and the same filesystem mounts
# from dm-crypt on the raw device: it is ciphertext there.
# btrfs on the SCSI ZBC disk (the command set of an SMR drive).
case_attach_btrfs_scsi ()
{
    local dev
    dev=$(scsi_debug_disk)
    [ -n "$dev" ] || die "no scsi_debug disk"
    case_attach_btrfs $dev
}

case_attach_btrfs ()
{
    local u ublk line n FS_DEV=${1:-$FS_DEV}
    need_ublk
    make_fs_dev
    attach_serve srv $FS_DEV unix; u=$URI
    ublk=$(ublk_attach "$u" --depth 32)
    say "mkfs.btrfs -O zoned on $ublk"
    timeout 120 mkfs.btrfs -f -O zoned -d single -m single $ublk > $W/mkfs.out 2>&1 ||
        { cat $W/mkfs.out; die "mkfs.btrfs -O zoned"; }
    mkdir -p /mnt/a
    mount -t btrfs $ublk /mnt/a || die "mount btrfs"
    say "writing files"
    write_files /mnt/a 8 12
    bounded_sync
    say "written and synced"
    umount /mnt/a || die "umount"
    mount -t btrfs $ublk /mnt/a || die "second mount"
    ( cd /mnt/a && sha256sum -c $W/sums > /dev/null ) || die "checksums differ after remount"
    timeout 300 btrfs scrub start -B /mnt/a > $W/scrub.out 2>&1 || { cat $W/scrub.out; die "btrfs scrub"; }
    cat $W/scrub.out
    grep -q "no errors found\|Error summary: *no errors" $W/scrub.out || die "scrub found errors"
    umount /mnt/a
    ublk_detach $ublk
    # btrfs wrote its data with zone appends, several in one zone at once.
    line=$(grep 'zone appends' $W/attach.log | tail -n 1)
    say "$line"
    n=$(echo "$line" | sed -n 's/.*at most \([0-9]*\) in flight.*/\1/p')
    [ -n "$n" ] && [ "$n" -ge 2 ] || die "zone appends were not pipelined"
    stop_nbdkit srv

    # The raw device holds ciphertext that dm-crypt opens as the same fs.
    timeout 60 cryptsetup open --type plain --cipher aes-xts-plain64 \
        --key-file $W/key --key-size 512 --sector-size 4096 \
        --disable-locks /dev/$FS_DEV zt-fs || die "cryptsetup open"
    mount -t btrfs -o ro /dev/mapper/zt-fs /mnt/a || die "mount through dm-crypt"
    ( cd /mnt/a && sha256sum -c $W/sums > /dev/null ) || die "checksums differ through dm-crypt"
    umount /mnt/a
    timeout 60 cryptsetup close zt-fs
    if mount -t btrfs -o ro /dev/$FS_DEV /mnt/a 2>/dev/null; then
        umount /mnt/a; die "the raw device mounts: not encrypted"
    fi
}

# f2fs -m (zoned) with its metadata in the conventional zones.
case_attach_f2fs ()
{
    local u ublk
    need_ublk
    make_fs_dev
    attach_serve srv $FS_DEV unix; u=$URI
    ublk=$(ublk_attach "$u" --depth 32)
    timeout 120 mkfs.f2fs -f -m $ublk > $W/mkfs.out 2>&1 ||
        { cat $W/mkfs.out; die "mkfs.f2fs -m"; }
    mkdir -p /mnt/a
    mount -t f2fs $ublk /mnt/a || die "mount f2fs"
    write_files /mnt/a 4 8
    bounded_sync
    umount /mnt/a || die "umount"
    mount -t f2fs $ublk /mnt/a || die "second mount"
    ( cd /mnt/a && sha256sum -c $W/sums > /dev/null ) || die "checksums differ after remount"
    umount /mnt/a
    ublk_detach $ublk
}

# kill -9 of nbdkit while fio writes to btrfs on the ublk device, with
# --reconnect 0: I/O fails with EIO, nothing hangs, the device detaches;
# after a restart and a new attach, the filesystem mounts and the synced
# files are intact.
case_attach_kill ()
{
    local u ublk pid i rc
    need_ublk
    make_fs_dev
    attach_serve srv $FS_DEV unix; u=$URI
    ublk=$(ublk_attach "$u" --depth 32 --reconnect 0)
    timeout 120 mkfs.btrfs -f -O zoned -d single -m single $ublk > $W/mkfs.out 2>&1 ||
        { cat $W/mkfs.out; die "mkfs.btrfs -O zoned"; }
    mkdir -p /mnt/a
    mount -t btrfs $ublk /mnt/a || die "mount btrfs"
    write_files /mnt/a 4 8
    sync
    timeout 300 fio --name=bg --directory=/mnt/a --rw=write --bs=64k --size=64m \
        --numjobs=2 --fsync=4 --output=$W/fio-kill.out > /dev/null 2>&1 &
    pid=$!
    sleep 5
    say "kill -9 nbdkit during fio"
    kill -9 $(cat $W/srv.pid)
    rm -f $W/srv.pid
    # fio sees errors and ends: nothing waits forever on the device.
    i=0
    while kill -0 $pid 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 120 ] && die "fio still runs 120 s after the server died"
        sleep 1
    done
    say "fio ended ${i}s after the kill"
    # New I/O fails at once.
    if timeout 30 dd if=$ublk of=/dev/null bs=4096 count=1 iflag=direct 2>$W/dd.err; then
        die "a read succeeded with the server gone"
    fi
    cat $W/dd.err
    grep -q "Input/output error" $W/dd.err || die "the read did not fail with EIO"
    timeout 60 umount /mnt/a || umount -l /mnt/a || :
    # So does a reset of every zone (several trims, none can be sent),
    # once, and the device still detaches.
    rc=0
    timeout 30 blkzone reset $ublk 2> $W/reset.err || rc=$?
    cat $W/reset.err
    [ $rc != 124 ] || die "the reset of all zones hung"
    [ $rc != 0 ] || die "a reset of all zones succeeded with the server gone"
    ublk_detach $ublk
    grep -c 'failed' $W/attach.log | sed 's/^/failed requests logged: /'

    attach_serve srv2 $FS_DEV unix; u=$URI
    ublk=$(ublk_attach "$u")
    mount -t btrfs $ublk /mnt/a || die "mount after the crash"
    ( cd /mnt/a && sha256sum -c $W/sums > /dev/null ) || die "synced files differ after the crash"
    umount /mnt/a
    ublk_detach $ublk
}

# What the kernel asks for durability reaches the server: a write with
# FUA (O_SYNC direct I/O) is an NBD write with FUA, a plain one is not,
# and fsync of the device sends an NBD flush.  nbdkit -v logs each call.
case_attach_durability ()
{
    local dev=nullb0 u ublk z zs off before
    need_ublk
    attach_serve srv $dev unix -v; u=$URI
    ublk=$(ublk_attach "$u")
    [ "$(cat /sys/block/${ublk#/dev/}/queue/fua)" = 1 ] || die "$ublk does not offer FUA"
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    off=$((z * zs))
    # busybox dd has no oflag=dsync: fio opens the device O_SYNC.
    fio --name=fua --filename=$ublk --rw=write --bs=4k --size=4k \
        --offset=$off --direct=1 --sync=1 --ioengine=psync \
        --output=$W/fio-fua.out > /dev/null 2>&1 ||
        { cat $W/fio-fua.out; die "O_SYNC write"; }
    grep "zbd: pwrite count=4096 offset=$off " $W/srv.log
    grep -q "zbd: pwrite count=4096 offset=$off fua=1" $W/srv.log ||
        die "the O_SYNC write reached the server without FUA"
    dd if=/dev/urandom of=$ublk bs=4096 count=1 seek=$((off / 4096 + 1)) \
        oflag=direct status=none || die "plain write"
    grep -q "zbd: pwrite count=4096 offset=$((off + 4096)) fua=0" $W/srv.log ||
        die "the plain write did not reach the server as a write without FUA"
    before=$(grep -c "zbd: flush" $W/srv.log)
    dd if=/dev/urandom of=$ublk bs=4096 count=1 seek=$((off / 4096 + 2)) \
        oflag=direct conv=fsync status=none || die "write and fsync"
    [ "$(grep -c "zbd: flush" $W/srv.log)" -gt "$before" ] ||
        die "fsync of $ublk sent no flush to the server"
    say "$(grep -c 'zbd: flush' $W/srv.log) flushes, FUA on the O_SYNC write only"
    ublk_detach $ublk
}

# A server that stops answering but keeps its connection open (SIGSTOP,
# as when a network drops packets without closing anything), with
# --reconnect 0 (guest-reconnect.sh has the default): once a
# request has waited --timeout, the write in flight and new requests
# fail with EIO, nothing stays blocked, attach logs which request waited,
# and the device detaches.  Attached again after the server resumes,
# what was acknowledged before the stop reads back.
case_attach_hang ()
{
    local dev=nullb0 u ublk z zs mib pid i began took
    need_ublk
    attach_serve srv $dev unix; u=$URI
    ublk=$(ublk_attach "$u" --timeout 5 --reconnect 0)
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    mib=$((z * zs / 1048576))
    gen_file $W/data 1048576
    dd if=$W/data of=$ublk bs=1M seek=$mib oflag=direct status=none ||
        die "write before the stop"

    kill -STOP $(cat $W/srv.pid)
    say "nbdkit stopped (SIGSTOP); attach has --timeout 5"
    began=$(date +%s)
    dd if=/dev/urandom of=$ublk bs=1M count=4 seek=$((mib + 1)) oflag=direct \
        status=none 2> $W/dd.err &
    pid=$!
    i=0
    while kill -0 $pid 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 60 ] && die "the write still waits 60 s after the server stopped"
        sleep 1
    done
    took=$(( $(date +%s) - began ))
    wait $pid && die "the write succeeded with the server stopped"
    cat $W/dd.err
    grep -q "Input/output error" $W/dd.err || die "the write did not fail with EIO"
    say "the write failed after ${took}s"
    [ $took -ge 4 ] && [ $took -le 15 ] ||
        die "the write failed after ${took}s, not about 5 s (the timeout)"
    grep "no reply from the server" $W/attach.log
    grep -q "no reply from the server for [0-9]* s to a write of 1048576 bytes at offset $(((mib + 1) * 1048576)) (zone $z)" \
        $W/attach.log || die "attach did not log which write waited"

    # New requests fail at once; the device detaches.
    if timeout 10 dd if=$ublk of=/dev/null bs=4096 count=1 iflag=direct 2> $W/dd.err; then
        die "a read succeeded after the timeout"
    fi
    grep -q "Input/output error" $W/dd.err || die "the read did not fail with EIO"
    ublk_detach $ublk

    kill -CONT $(cat $W/srv.pid)
    ublk=$(ublk_attach "$u")
    dd if=$ublk of=$W/back bs=1M skip=$mib count=1 iflag=direct status=none ||
        die "read after attaching again"
    cmp $W/data $W/back || die "the write acknowledged before the stop reads back different"

    # Detach while the server is stopped with nothing in flight: attach's
    # goodbye to the server must not wait for an answer.
    kill -STOP $(cat $W/srv.pid)
    ublk_detach $ublk
    ! $NBDZONE list 2>/dev/null | grep -q ublkb ||
        die "attach still serves after detach: $($NBDZONE list)"
    kill -CONT $(cat $W/srv.pid)
}

# ublk_write_fails DEV OFFSET BYTES MESSAGE LOGWORD TOLD: a direct write of
# BYTES at OFFSET of the ublk device DEV fails with MESSAGE (strerror of
# the errno the kernel gave back), nbdkit logged why, saying LOGWORD, and
# attach logged the write with the error it handed the kernel, TOLD.
ublk_write_fails ()
{
    local ublk=$1 off=$2 len=$3 msg=$4 word=$5 told=$6 before
    before=$(wc -l < $W/srv.log)
    if dd if=/dev/urandom of=$ublk bs=$len count=1 seek=$off \
          oflag=direct,seek_bytes status=none 2> $W/dd.err; then
        die "a write of $len bytes at $off of $ublk succeeded"
    fi
    cat $W/dd.err
    grep -q "$msg" $W/dd.err ||
        die "the write at $off failed with \"$(cat $W/dd.err)\", expected \"$msg\""
    tail -n +$((before + 1)) $W/srv.log | grep -q -- "$word" ||
        die "no nbdkit log line mentioning \"$word\" (log: $(tail -n 2 $W/srv.log))"
    grep -q "at offset $off (zone [0-9]*) failed: .*the kernel is told: $told" $W/attach.log ||
        die "attach did not log the failed write at $off as \"$told\" ($(tail -n 1 $W/attach.log))"
    say "attach: $(grep "at offset $off " $W/attach.log | tail -n 1)"
    say "log: $(tail -n +$((before + 1)) $W/srv.log | grep -- "$word" | tail -n 1)"
}

# Zone resource errors on nullb1 (at most 2 open, 3 active zones): the
# server says ENOSPC, attach hands the kernel the error the zone model
# has for it: BLK_STS_ZONE_OPEN_RESOURCE (ETOOMANYREFS) at the open
# limit, BLK_STS_ZONE_ACTIVE_RESOURCE (EOVERFLOW) at the active limit,
# and plain ENOSPC for a write past a zone's capacity.
case_attach_limits ()
{
    local dev=nullb1 u ublk zs cap z
    need_ublk
    zs=$(zone_bytes $dev)
    cap=$(zone_field $dev 0 cap)
    attach_serve srv $dev unix; u=$URI
    ublk=$(ublk_attach "$u")

    # Active limit: one block at the start of zones 0, 1, 2 makes three
    # active zones (the device closes one to stay within two open);
    # zone 3 would be a fourth.
    for z in 0 1 2; do
        dd if=/dev/urandom of=$ublk bs=4096 count=1 seek=$((z * zs)) \
            oflag=direct,seek_bytes status=none || die "write to zone $z"
        assert_zone $dev $z 4096
    done
    ublk_write_fails $ublk $((3 * zs)) 4096 "Value too large for defined data type" \
        "too many active zones" "active zone limit reached (EOVERFLOW)"
    assert_zone $dev 3 0 1

    # Capacity: zone 2 filled to 4 KiB below its capacity, then a write
    # at its WP that crosses the capacity.  Zone 2 because it is surely
    # still implicitly open: opening it made null_blk close zone 0 or 1
    # (which one depends on its round-robin, so on earlier cases), and
    # at the active limit null_blk refuses to reopen a closed zone.
    dd if=/dev/urandom of=$ublk bs=$((cap - 8192)) count=1 seek=$((2 * zs + 4096)) \
        oflag=direct,seek_bytes status=none || die "filling zone 2"
    assert_zone $dev 2 $((cap - 4096))
    ublk_write_fails $ublk $((2 * zs + cap - 4096)) 8192 "No space left on device" \
        "goes past the capacity" "past the zone capacity (ENOSPC)"
    assert_zone $dev 2 $((cap - 4096))

    # Open limit: zones 0 to 2 reset through ublk, zones 4 and 5 held
    # explicitly open on the device (NBD cannot open them), so none can
    # be closed to open zone 6.  Not with blkzone: it opens the device
    # O_EXCL, which the server holds.
    blkzone reset -o 0 -c 3 $ublk || die "reset zones 0 to 2 through $ublk"
    assert_zone $dev 0 0 1
    $CLIENT devzone open /dev/$dev $((4 * zs)) $((2 * zs)) || die "open zones 4 and 5"
    ublk_write_fails $ublk $((6 * zs)) 4096 "Too many references" \
        "too many open zones" "open zone limit reached (ETOOMANYREFS)"
    assert_zone $dev 6 0 1

    # Once a zone is free the refused zone takes the write.  Linux wants
    # a zone report after a failed write before the zone takes another
    # (it fails the next write itself otherwise): blkzone report.
    $CLIENT devzone close /dev/$dev $((4 * zs)) $((2 * zs)) || die "close zones 4 and 5"
    blkzone report -o $((6 * zs / 512)) -c 1 $ublk > /dev/null || die "report zone 6"
    dd if=/dev/urandom of=$ublk bs=4096 count=1 seek=$((6 * zs)) \
        oflag=direct,seek_bytes status=none || die "write to zone 6 after the refusal"
    assert_zone $dev 6 4096
    ublk_detach $ublk
}

# Attach over TLS with a pre-shared key (nbds+unix://): the data between
# attach and nbdkit is never in clear.  Writes read back, the zone report
# matches the device, and a plain (nbd+unix://) attach to the same
# TLS-only server fails, saying so, and creates nothing.
case_attach_tls ()
{
    local dev=nullb0 u ublk z zs start
    need_ublk
    # The PSK file nbdkit and libnbd read: "username:key in hex".
    printf 'alice:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > $W/psk
    chmod 600 $W/psk
    grep -Eq '^alice:[0-9a-f]{64}$' $W/psk || die "could not write the PSK file"
    attach_serve srv $dev unix --tls=require --tls-psk=$W/psk
    u="nbds+unix://alice@/?socket=$W/srv.sock&tls-psk-file=$W/psk"

    if timeout 60 $NBDZONE attach "nbd+unix:///?socket=$W/srv.sock" > $W/out 2> $W/err; then
        die "a plain attach to a TLS-only server succeeded: $(cat $W/out)"
    fi
    cat $W/err
    [ "$(wc -l < $W/err)" -ge 1 ] && grep -qi 'tls' $W/err ||
        die "the plain attach did not say that the server wants TLS"
    [ ! -s $W/out ] || die "the plain attach printed $(cat $W/out)"
    ! ls /sys/block | grep -q ublk || die "a ublk device exists after the refused attach"

    ublk=$(ublk_attach "$u")
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    start=$((z * zs))
    gen_file $W/data 262144
    dd if=$W/data of=$ublk bs=65536 seek=$((start / 65536)) oflag=direct status=none ||
        die "write through $ublk over TLS"
    assert_zone $dev $z 262144
    dd if=$ublk of=$W/back bs=65536 skip=$((start / 65536)) count=4 iflag=direct status=none ||
        die "read through $ublk over TLS"
    cmp $W/data $W/back || die "read back over TLS differs"
    compare_ublk_report $dev $ublk
    grep -q 'TLS\|tls' $W/srv.log && say "nbdkit: $(grep -i tls $W/srv.log | tail -n 1)"
    ublk_detach $ublk
}

# proc_running PID: the process exists and is not a zombie (the guest's
# init may be slow to reap what its parent left behind).
proc_running ()
{
    [ -r /proc/$1/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status
}

# serving_pid /dev/ublkbN: the pid of the process serving it, from
# nbdzone list.
serving_pid ()
{
    local pid
    pid=$($NBDZONE list 2>/dev/null | sed -n "s|^$1 pid \([0-9]*\) .*|\1|p")
    [ -n "$pid" ] || die "nbdzone list does not show $1: $($NBDZONE list 2>&1)"
    echo $pid
}

# Signals while detaching from a server that stopped answering: the
# first one starts the detach (STOP_DEV, which waits for the write in
# flight), the next two arrive while attach waits for that control
# command.  Attach must go on waiting for it, so that the reply timeout
# fails the write and the process ends by itself, and removes the device.
case_attach_signals ()
{
    local dev=nullb0 u ublk id z zs pid dd i
    need_ublk
    attach_serve srv $dev unix; u=$URI
    ublk=$(ublk_attach "$u" --timeout 5 --reconnect 0)
    id=${ublk#/dev/ublkb}
    pid=$(serving_pid $ublk)
    z=$(first_seq_zone $dev)
    zs=$(zone_bytes $dev)
    kill -STOP $(cat $W/srv.pid)
    say "nbdkit stopped; a write in flight, then SIGTERM three times to attach ($pid)"
    dd if=/dev/urandom of=$ublk bs=1M count=1 seek=$((z * zs / 1048576)) \
        oflag=direct status=none 2> $W/dd.err &
    dd=$!
    sleep 1
    for i in 1 2 3; do kill -TERM $pid; sleep 1; done
    i=0
    while proc_running $pid; do
        i=$((i + 1))
        if [ $i -gt 30 ]; then
            ublk_dump
            kill -CONT $(cat $W/srv.pid)
            die "attach still runs 30 s after the signals (--timeout 5)"
        fi
        sleep 1
    done
    say "attach ended $((i + 3)) s after the first signal"
    wait $dd && die "the write succeeded with the server stopped"
    grep -q "no reply from the server" $W/attach.log ||
        die "attach did not time the write out: $(tail -n 3 $W/attach.log)"
    [ ! -e /sys/block/ublkb$id ] || die "$ublk still exists"
    [ ! -e /dev/ublkc$id ] || die "/dev/ublkc$id still exists: the device was not deleted"
    kill -CONT $(cat $W/srv.pid)
}

# A background attach interrupted while its device starts (SIGTERM to
# the parent, as "timeout 5 nbdzone attach" or ^C do): the parent ends
# without a device path, its child stops too and removes the device;
# nothing serves on.  The delay filter makes each block status take 3 s,
# so the device is still starting (its zones being read) when the
# signal comes, just after the child has created /dev/ublkcN.
case_attach_interrupted ()
{
    local dev=nullb0 pid i c rc
    need_ublk
    start_nbdkit srv --filter=delay $PLUGIN device=/dev/$dev delay-extents=3
    $NBDZONE attach "$(uri srv)" > $W/out 2>> $W/attach.log &
    pid=$!
    i=0
    until c=$(ls /dev/ublkc* 2>/dev/null) && [ -n "$c" ]; do
        i=$((i + 1))
        [ $i -gt 300 ] && die "attach created no ublk device in 30 s"
        sleep 0.1
    done
    say "$c created; SIGTERM to attach ($pid) while the device starts"
    kill -TERM $pid
    i=0
    while proc_running $pid; do
        i=$((i + 1))
        [ $i -gt 20 ] && { ublk_dump; die "attach still runs 20 s after SIGTERM"; }
        sleep 1
    done
    rc=0; wait $pid || rc=$?
    [ $rc != 0 ] || die "the interrupted attach exited 0, printing \"$(cat $W/out)\""
    [ ! -s $W/out ] || die "the interrupted attach printed $(cat $W/out)"
    i=0
    while ls /dev/ublkc* > /dev/null 2>&1 || ls /sys/block | grep -q ublk; do
        i=$((i + 1))
        [ $i -gt 20 ] && die "a ublk device is left 20 s after the interrupted attach: $($NBDZONE list 2>&1)"
        sleep 1
    done
    [ -z "$($NBDZONE list)" ] || die "nbdzone list: $($NBDZONE list)"
    tail -n 3 $W/attach.log
}

# The serving process killed (kill -9): the kernel takes the disk away,
# but the ublk device stays until detach.  nbdzone list must show it,
# saying its server is gone, and detach removes it.
case_attach_list_dead ()
{
    local dev=nullb0 u ublk id pid i
    need_ublk
    attach_serve srv $dev unix; u=$URI
    # Without --reconnect there is no recovery: the disk goes at once.
    ublk=$(ublk_attach "$u" --reconnect 0)
    id=${ublk#/dev/ublkb}
    pid=$(serving_pid $ublk)
    kill -9 $pid
    i=0
    while [ -e /sys/block/ublkb$id ]; do
        i=$((i + 1))
        [ $i -gt 30 ] && die "/sys/block/ublkb$id is still there 30 s after kill -9 of its server"
        sleep 1
    done
    [ -e /dev/ublkc$id ] || die "/dev/ublkc$id went away by itself: nothing to list"
    $NBDZONE list > $W/list || die "nbdzone list failed"
    cat $W/list
    # The kernel forgets the pid of a server that died (it says -1).
    grep -q "^$ublk pid .* dead, server gone" $W/list ||
        die "nbdzone list does not show $ublk with its server gone"
    ublk_detach $ublk
    [ ! -e /dev/ublkc$id ] || die "/dev/ublkc$id is still there after detach"
    [ -z "$($NBDZONE list)" ] || die "nbdzone list after detach: $($NBDZONE list)"
}

attach_cases ()
{
    local dev tr
    if ! kernel_at_least 6 6; then
        run 60 "attach: refused on Linux before 6.6, saying why" case_attach_old_kernel
        return
    fi
    for dev in $ZONED_DEVICES; do
        for tr in unix tcp; do
            run 180 "$dev: attach ($tr): blkzone report, writes, reset, finish" \
                case_attach_report $dev $tr
        done
    done
    run 180 "nullb1: attach: open/active zone limits, capacity: zone errors" \
        case_attach_limits
    run 180 "nullb0: attach over TLS-PSK (nbds+unix), plain attach refused" \
        case_attach_tls
    run 120 "nullb0: attach: FUA writes, flush on fsync reach the server" \
        case_attach_durability
    for dev in $ZONED_DEVICES; do
        run 600 "$dev: attach: fio zbd, QD 8, verify, zone resets" case_attach_fio $dev
    done
    run 600 "nvme0n1: attach --queues 2: fio zbd, QD 8, verify, zone resets" \
        case_attach_fio nvme0n1 2
    run 600 "attach: btrfs -O zoned (appends), scrub, dm-crypt reads it" case_attach_btrfs
    run 600 "SCSI ZBC: attach: btrfs -O zoned (appends), scrub, dm-crypt reads it" \
        case_attach_btrfs_scsi
    run 600 "attach: f2fs -m" case_attach_f2fs
    run 600 "attach: kill -9 of nbdkit under load, EIO, reattach, files intact" case_attach_kill
    run 120 "nullb0: attach: a server that stops answering: EIO after --timeout, detach" \
        case_attach_hang
    run 120 "nullb0: attach: signals while detaching from a hung server: it ends after --timeout" \
        case_attach_signals
    run 120 "nullb0: attach interrupted while its device starts: no device left" \
        case_attach_interrupted
    run 120 "nullb0: attach: server process killed: list shows the device, detach removes it" \
        case_attach_list_dead
}
