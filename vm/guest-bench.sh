#!/bin/sh
# The benchmark of nbdzone attach (zoned ublk) against the kernel NBD
# client, inside the VM; never a test.  /init runs it instead of the
# tests when the kernel command line has zoned.bench=1 (run-vm.sh with
# VM_BENCH=1; make -C bench bench-attach on the host).
#
# One nbdkit (the cryptinline filter on the zbd plugin, one key) serves a
# memory-backed null_blk on a Unix socket for the whole run, so both
# clients see the same export and the device is not what bounds them.
# Each measurement is one fio run; its figure is fio's bandwidth (for
# the appends, the wall time of fio and its fsync).
#
#   seq-write, seq-read  1 MiB sequential, QD 4, libaio, O_DIRECT, over 4
#       zones from empty zones, one fio job: on /dev/ublkbN (nbdzone
#       attach, fio --zonemode=zbd) and on /dev/nbd0 (nbd-client: a
#       plain disk, fio in the same ascending order over the same range;
#       fio's default seed makes the bytes the same too).  Reads read
#       what that side just wrote.
#   seq-write-4z  the same 4 zones written by 4 fio jobs at once, one
#       per zone, QD 1 each: QD 4 in all, which zone write plugging
#       (one write per zone at the driver) leaves whole.
#   append-qd1, append-qd8  zone appends: user space cannot issue them
#       to a block device; btrfs in zoned mode writes file data with
#       them.  O_DIRECT writes on zoned btrfs reach the device one at a
#       time whatever fio's iodepth (attach counted at most 1 in flight),
#       so the writer is the page cache: fio writes 48 MiB (below one
#       64 MiB zone) into a file on mkfs.btrfs -O zoned on the ublk
#       device, then fsyncs, and writeback sends the appends; the ublk
#       device's queue depth (attach --depth 1, --depth 8) bounds how
#       many are in flight.  The figure is the data over the wall time
#       of write plus fsync; attach's count of zone appends and of the
#       most in flight in one zone is printed with it.
#
# The configurations of a measurement alternate within each run, their
# order rotated every run, after one untimed pass of each client.
# Result lines go to the second serial port, the TAP file the host reads
# (with notes: fio's depths, the most requests in flight at the driver,
# CPU seconds per GiB):
#   bench MEASUREMENT CONFIG RUN MiB/s [NOTE...]
# then "ok 1 - ..." (or "not ok 1 - ...") and the plan "1..1".

GUEST_HELPERS_ONLY=1 . /guest-tests.sh

export PATH=/usr/sbin:/usr/bin
BENCH_DEV=nullb0
BENCH_ZONE_MB=64
BENCH_DEV_MB=1024       # 16 zones, all sequential
BENCH_ZONES=4           # the sequential measurements' range
BENCH_APPEND_MB=48      # below one zone
runs=$(sed -n 's/.*zoned\.bench_runs=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
BENCH_RUNS=${runs:-3}

tap () { echo "$*"; echo "$*" > $TAPDEV; }
# A result line for the host; during the warm-up pass, on the console only.
result () { if [ -n "${WARMUP:-}" ]; then echo "warm-up: $*"; else tap "$*"; fi; }

# fio_bw FIO-OUTPUT: the job's bandwidth in MiB/s (terse format 3:
# field 7 is the read, field 48 the write bandwidth, in KiB/s).
fio_bw ()
{
    awk -F';' '/^3;fio/ { kb = $7 + $48; printf "%.1f\n", kb / 1024 }' "$1"
}

# fio_depths FIO-OUTPUT: fio's own count of the depths it submitted at.
fio_depths ()
{
    sed -n 's/^ *IO depths *: *//p' "$1" | sed 's/, 8=.*//; s/ //g'
}

# run_fio NAME OUT ARGS...: one fio job, its output (normal and terse) in OUT.
run_fio ()
{
    local name=$1 out=$2
    shift 2
    timeout 600 fio --name=$name --output-format=normal,terse --output=$out \
        "$@" || { cat $out; die "fio $name failed"; }
    grep -q "err= *0" $out || { cat $out; die "fio $name reported errors"; }
}

reset_all () { $NBDZONE reset "$(uri srv)" all || die "nbdzone reset all"; }

# The CPU time the guest spent busy, in hundredths of a second.
cpu_busy () { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# proc_cpu PID: a process's CPU time (all its threads), in hundredths.
proc_cpu () { awk '{ print $14 + $15 }' /proc/$1/stat 2>/dev/null || echo 0; }

# sample_inflight BLOCKDEV: until $W/stop exists, the most requests in
# flight at the driver (reads or writes, /sys/block/DEV/inflight) into
# $W/inflight, ten times a second.  On a zoned device, zone write
# plugging holds a zone's writes back to one at a time at the driver.
sample_inflight ()
{
    local max=0 r w
    while [ ! -e $W/stop ]; do
        read r w < /sys/block/$1/inflight
        [ $r -gt $max ] && max=$r
        [ $w -gt $max ] && max=$w
        echo $max > $W/inflight
        sleep 0.1
    done
}

# measure NAME SIDE RUN DEV MiB FIO-ARGS...: one timed fio job on DEV and
# its result line: MiB/s, fio's submission depths, the most requests in
# flight at the driver, and CPU seconds per GiB: the whole guest, the
# attach process and nbdkit.
measure ()
{
    local name=$1 side=$2 run=$3 dev=$4 mib=$5 apid c0 a0 k0 c1 a1 k1 kpid
    shift 5
    apid=$($NBDZONE list 2>/dev/null | sed -n 's/.* pid \([0-9]*\).*/\1/p' | head -n 1)
    kpid=$(cat $W/srv.pid)
    rm -f $W/stop; echo 0 > $W/inflight
    sample_inflight ${dev#/dev/} &
    c0=$(cpu_busy); a0=$(proc_cpu ${apid:-0}); k0=$(proc_cpu $kpid)
    run_fio $name $W/$name.out "$@"
    c1=$(cpu_busy); a1=$(proc_cpu ${apid:-0}); k1=$(proc_cpu $kpid)
    touch $W/stop; wait $!
    result "bench $name $side $run $(fio_bw $W/$name.out)" \
        "depths $(fio_depths $W/$name.out); in flight at most $(cat $W/inflight);" \
        "$(awk -v c=$((c1 - c0)) -v a=$((a1 - a0)) -v k=$((k1 - k0)) -v mib=$mib \
            'BEGIN { g = mib / 1024 * 100
                     printf "CPU s/GiB: guest %.1f, attach %.1f, nbdkit %.1f", c / g, a / g, k / g }')"
}

# client_attach SIDE: the device of one client on the export, in $DEV.
client_attach ()
{
    reset_all
    if [ $1 = ublk ]; then
        DEV=$(ublk_attach "$(uri srv)")
    else
        nbd_attach srv
        DEV=/dev/nbd0
    fi
}
client_detach () { if [ $1 = ublk ]; then ublk_detach $DEV; else nbd_detach; fi; }

# seq_side RUN ublk|nbd: the sequential measurements through one client.
# On the ublk device fio runs with --zonemode=zbd; /dev/nbd0 is a plain
# disk, so fio writes the same range in the same order without it.
seq_side ()
{
    local run=$1 side=$2 zonemode= mib=$((BENCH_ZONES * BENCH_ZONE_MB))
    [ $side = ublk ] && zonemode=--zonemode=zbd
    # One job, QD 4: zone after zone, 4 writes in flight from fio.
    client_attach $side
    set -- --filename=$DEV --direct=1 --ioengine=libaio --bs=1M --iodepth=4 \
        --offset=0 --size=${mib}M $zonemode
    measure seq-write $side $run $DEV $mib --rw=write "$@"
    measure seq-read $side $run $DEV $mib --rw=read "$@"
    client_detach $side
    # Four jobs, one per zone, QD 1 each: 4 writes in flight, one per zone.
    client_attach $side
    measure seq-write-4z $side $run $DEV $mib --rw=write --filename=$DEV \
        --direct=1 --ioengine=libaio --bs=1M --iodepth=1 --numjobs=4 \
        --offset=0 --offset_increment=${BENCH_ZONE_MB}M \
        --size=${BENCH_ZONE_MB}M --group_reporting $zonemode
    client_detach $side
}

# uptime_cs: the time since boot in hundredths of a second.
uptime_cs () { sed 's/^\([0-9]*\)\.\([0-9][0-9]\).*/\1\2/' /proc/uptime; }

# btrfs_write_timed DEV: zoned btrfs made and mounted on DEV, a file of
# BENCH_APPEND_MB written through the page cache and fsynced (fio's
# report in $W/a.out), unmounted; prints the data over the wall time of
# write plus fsync, in MiB/s.
btrfs_write_timed ()
{
    local dev=$1 t0 t1
    timeout 300 mkfs.btrfs -f -O zoned -d single -m single $dev > $W/mkfs.out 2>&1 ||
        { cat $W/mkfs.out >&2; die "mkfs.btrfs -O zoned"; }
    mkdir -p /mnt/a
    mount -t btrfs $dev /mnt/a || die "mount btrfs"
    t0=$(uptime_cs)
    run_fio a $W/a.out --directory=/mnt/a --filename=data --rw=write \
        --bs=1M --ioengine=psync --size=${BENCH_APPEND_MB}M \
        --fallocate=none --end_fsync=1 >&2
    t1=$(uptime_cs)
    umount /mnt/a || die "umount"
    awk -v mb=$BENCH_APPEND_MB -v cs=$((t1 - t0)) 'BEGIN { printf "%.1f\n", mb * 100 / cs }'
}

# append_side RUN QD: buffered writes and fsync into a file on zoned
# btrfs on a ublk device of queue depth QD.
append_side ()
{
    local run=$1 qd=$2 dev line mibs
    reset_all
    : > $W/attach.log
    dev=$(ublk_attach "$(uri srv)" --depth $qd)
    mibs=$(btrfs_write_timed $dev)
    ublk_detach $dev
    line=$(grep 'zone appends' $W/attach.log | tail -n 1)
    line=$(echo "$line" | sed -n 's/.*; \([0-9]* zone appends, at most [0-9]* in flight\).*/\1/p')
    result "bench append-qd$qd ublk $run $mibs" \
        "$line (fio alone: $(fio_bw $W/a.out) MiB/s)"
}

bench ()
{
    local run=1 order
    need_ublk
    make_nullb $BENCH_DEV blocksize=4096 memory_backed=1 size=$BENCH_DEV_MB \
        zoned=1 zone_size=$BENCH_ZONE_MB zone_nr_conv=0
    serve srv $BENCH_DEV crypt
    result "bench info kernel $(uname -r), $(nproc) CPUs, $(fio --version)," \
        "$BENCH_DEV $BENCH_DEV_MB MiB, zones of $BENCH_ZONE_MB MiB, runs $BENCH_RUNS"
    # One untimed pass of each client first: the first writes after
    # nbdkit starts ran at half speed (pages of the device and of the
    # server touched for the first time).
    WARMUP=1
    for side in nbd ublk; do seq_side 0 $side; done
    WARMUP=
    while [ $run -le $BENCH_RUNS ]; do
        # Rotate which side goes first.
        if [ $((run % 2)) = 1 ]; then order="nbd ublk"; else order="ublk nbd"; fi
        for side in $order; do seq_side $run $side; done
        if [ $((run % 2)) = 1 ]; then order="1 8"; else order="8 1"; fi
        for qd in $order; do append_side $run $qd; done
        run=$((run + 1))
    done
}

# Sourced by guest-bench-rtt.sh for its helpers only: stop here.
[ -n "${BENCH_HELPERS_ONLY:-}" ] && return 0

mkdir -p $W
began=$(date +%s)
echo "==== benchmark: nbdzone attach against nbd-client"
( trap ublk_cleanup EXIT; bench ) 2>&1 | tee /tmp/bench.log
if grep -q '^FAIL: ' /tmp/bench.log || ! grep -q '^bench seq-read' /tmp/bench.log; then
    tap "not ok 1 - benchmark (see the console)"
    tail -n 12 /tmp/bench.log | sed 's/^/# /' > $TAPDEV
else
    tap "ok 1 - benchmark # $(( $(date +%s) - began ))s"
fi
tap "1..1"
