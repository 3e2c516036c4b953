#!/bin/sh
# The network round-trip benchmark of nbdzone attach, inside the VM;
# never a test.  /init runs it instead of the tests when the kernel
# command line has zoned.bench=rtt (run-vm.sh with VM_BENCH=rtt; make -C
# bench bench-rtt on the host).
#
# What it asks: how much of the zone's pipelining survives a network.
# One nbdkit (the cryptinline filter on the zbd plugin, one key) serves a
# memory-backed null_blk from its own network namespace, across a veth
# pair (guest-attach.sh's veth_up), for the whole run; tc netem on both
# ends of the link adds RTT milliseconds to the round trip (half each
# way).  For each RTT of BENCH_RTTS, every run, in an order rotated
# every run:
#
#   zone1-qd1, zone1-qd16  fio sequential 64 KiB O_DIRECT writes into
#       one zone at QD 1 and 16, on the ublk device (nbdzone attach, fio
#       --zonemode=zbd).  The client kernel's zone write plugging sends
#       one write per zone at a time: QD 16 is bound by it.
#   zone4-qd4  four fio jobs, one per zone, QD 4 each: four writes in
#       flight, one per zone, which plugging leaves whole.
#   nbd-qd1, nbd-qd16  the same one-zone writes through the kernel NBD
#       client over the same link (a plain disk, no plugging: its 16
#       writes to one zone are all on the wire, and the server's gate
#       puts them in WP order).  The server-side figure.
#   btrfs  zone appends: a 48 MiB file written through the page cache
#       on zoned btrfs on the ublk device (attach --depth 32), then
#       fsync; appends pipeline within a zone.  The figure is the data
#       over the wall time of write plus fsync.
#
# Result lines go to the second serial port, the TAP file the host reads
# (bench/rtt-table.py):
#   bench MEASUREMENT rtt-MS RUN MiB/s [NOTE...]
# then "ok 1 - ..." (or "not ok 1 - ...") and the plan "1..1".

# guest-bench.sh's helpers (tap, result, fio_bw, run_fio, uptime_cs,
# btrfs_write_timed, BENCH_RUNS), and through it guest-tests.sh's and
# guest-attach.sh's.
BENCH_HELPERS_ONLY=1 . /guest-bench.sh

BENCH_DEV=nullb0
BENCH_ZONE_MB=16
BENCH_DEV_MB=512        # 32 zones, all sequential
BENCH_MIB=16            # written per job: one zone (fio's zbd mode
                        # wants at least one)
BENCH_APPEND_MB=48
BENCH_RTTS="0 0.5 1 5"

# Over the link, not guest-bench.sh's Unix socket.
reset_all () { $NBDZONE reset "$URI" all > /dev/null || die "nbdzone reset all"; }

# zone_writes NAME RTT RUN DEV QD JOBS [FIO-ARGS]: JOBS fio jobs, one per
# zone from zone 0, each writing BENCH_MIB at QD; the note says how many
# requests the driver had in flight at most (sample_inflight) and fio's
# own count of the depths it submitted at.
zone_writes ()
{
    local name=$1 rtt=$2 run=$3 dev=$4 qd=$5 jobs=$6
    shift 6
    rm -f $W/stop; echo 0 > $W/inflight
    sample_inflight ${dev#/dev/} &
    run_fio $name $W/$name.out --filename=$dev --direct=1 --ioengine=libaio \
        --rw=write --bs=64k --iodepth=$qd --numjobs=$jobs --offset=0 \
        --offset_increment=${BENCH_ZONE_MB}M --size=${BENCH_MIB}M \
        --group_reporting "$@"
    touch $W/stop; wait $!
    result "bench $name rtt-$rtt $run $(fio_bw $W/$name.out)" \
        "in flight at most $(cat $W/inflight); $(awk '$1 == "IO" && $2 == "depths" { print; exit }' $W/$name.out | tr -s ' ')"
}

ublk_side ()
{
    local rtt=$1 run=$2 dev
    reset_all
    dev=$(ublk_attach "$URI" --depth 32)
    zone_writes zone1-qd1 $rtt $run $dev 1 1 --zonemode=zbd
    blkzone reset $dev || die "blkzone reset"
    zone_writes zone1-qd16 $rtt $run $dev 16 1 --zonemode=zbd
    blkzone reset $dev || die "blkzone reset"
    zone_writes zone4-qd4 $rtt $run $dev 4 4 --zonemode=zbd
    ublk_detach $dev
}

nbd_side ()
{
    local rtt=$1 run=$2 qd
    for qd in 1 16; do
        reset_all
        timeout 30 nbd-client $VETH_SERVER $ATTACH_PORT /dev/nbd0 -b 4096 -N zoned > /dev/null ||
            die "nbd-client could not attach /dev/nbd0 over the link"
        zone_writes nbd-qd$qd $rtt $run /dev/nbd0 $qd 1
        nbd_detach
    done
}

btrfs_side ()
{
    local rtt=$1 run=$2 dev mibs
    reset_all
    dev=$(ublk_attach "$URI" --depth 32)
    mibs=$(btrfs_write_timed $dev)
    ublk_detach $dev
    result "bench btrfs rtt-$rtt $run $mibs"
}

# one_rtt RTT RUN: every measurement at one round trip.
one_rtt ()
{
    veth_rtt $1
    ublk_side $1 $2
    nbd_side $1 $2
    btrfs_side $1 $2
}

# rtt_probe RTT: ten NBD handshakes (nbdinfo) over the link, on the
# console, to see that netem adds what it should (each handshake is
# several round trips; the clock counts hundredths).
rtt_probe ()
{
    local t0 t1 i
    t0=$(uptime_cs)
    for i in 1 2 3 4 5 6 7 8 9 10; do
        nbdinfo --size "$URI" > /dev/null || die "nbdinfo over the link"
    done
    t1=$(uptime_cs)
    echo "added RTT $1 ms: an NBD handshake over the link takes $(( (t1 - t0) )) ms"
}

bench ()
{
    local run=1 rtt order
    need_ublk
    make_nullb $BENCH_DEV blocksize=4096 memory_backed=1 size=$BENCH_DEV_MB \
        zoned=1 zone_size=$BENCH_ZONE_MB zone_nr_conv=0
    attach_serve srv $BENCH_DEV veth
    result "bench info kernel $(uname -r), $(nproc) CPUs, $(fio --version)," \
        "$BENCH_DEV $BENCH_DEV_MB MiB, zones of $BENCH_ZONE_MB MiB, runs $BENCH_RUNS," \
        "RTTs $BENCH_RTTS ms (netem on a veth pair)"
    for rtt in $BENCH_RTTS; do veth_rtt $rtt; rtt_probe $rtt; done
    # An untimed pass first: pages of the device and the server touched
    # for the first time run at half speed.
    WARMUP=1
    one_rtt 0 0
    WARMUP=
    order=$BENCH_RTTS
    while [ $run -le $BENCH_RUNS ]; do
        for rtt in $order; do one_rtt $rtt $run; done
        # Rotate: the first RTT of this run goes last in the next.
        order="$(echo $order | cut -d' ' -f2-) $(echo $order | cut -d' ' -f1)"
        run=$((run + 1))
    done
    veth_rtt 0
}

mkdir -p $W
began=$(date +%s)
echo "==== benchmark: nbdzone attach across a network round trip"
( trap ublk_cleanup EXIT; bench ) 2>&1 | tee /tmp/bench.log
if grep -q '^FAIL: ' /tmp/bench.log || ! grep -q '^bench btrfs' /tmp/bench.log; then
    tap "not ok 1 - benchmark (see the console)"
    tail -n 12 /tmp/bench.log | sed 's/^/# /' > $TAPDEV
else
    tap "ok 1 - benchmark # $(( $(date +%s) - began ))s"
fi
tap "1..1"
