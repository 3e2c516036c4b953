#!/bin/sh
# The benchmark of nbdzone attach (zoned ublk) against the kernel NBD
# client, inside the VM; never a test.  /init runs it instead of the
# tests when the kernel command line has zoned.bench=1 (run-vm.sh with
# VM_BENCH=1; make -C bench bench-attach on the host).
#
# One nbdkit (the cryptinline filter on the zbd plugin, one key) serves a
# memory-backed null_blk on a Unix socket for the whole run, so both
# clients see the same export and the device is not what bounds them.
# Each measurement is one fio run; its figure is fio's bandwidth.
#
#   seq-write, seq-read  1 MiB sequential, QD 4, libaio, O_DIRECT, over 4
#       zones from empty zones: on /dev/ublkbN (nbdzone attach, fio
#       --zonemode=zbd) and on /dev/nbd0 (nbd-client: a plain disk, fio
#       in the same ascending order over the same range; fio's default
#       seed makes the bytes the same too).  Reads read what that side
#       just wrote.
#   append-qd1, append-qd8  zone appends: user space cannot issue them
#       to a block device, btrfs in zoned mode writes file data with
#       them.  fio writes 1 MiB O_DIRECT requests into a file on
#       mkfs.btrfs -O zoned on the ublk device at QD 1, then QD 8; the
#       data (48 MiB) fits in one 64 MiB zone.  attach's count of zone
#       appends and of the most in flight in one zone is printed with it.
#
# The configurations of a measurement alternate within each run, their
# order rotated every run.  Result lines go to the second serial port,
# the TAP file the host reads:
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
result () { tap "$*"; }

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

# seq_side RUN ublk|nbd: write then read the range through one client.
seq_side ()
{
    local run=$1 side=$2 dev zonemode= size
    size=$((BENCH_ZONES * BENCH_ZONE_MB))M
    reset_all
    if [ $side = ublk ]; then
        dev=$(ublk_attach "$(uri srv)")
        zonemode=--zonemode=zbd
    else
        nbd_attach srv
        dev=/dev/nbd0
    fi
    set -- --filename=$dev --direct=1 --ioengine=libaio --bs=1M --iodepth=4 \
        --offset=0 --size=$size $zonemode
    run_fio w $W/w.out --rw=write "$@"
    result "bench seq-write $side $run $(fio_bw $W/w.out) depths $(fio_depths $W/w.out)"
    run_fio r $W/r.out --rw=read "$@"
    result "bench seq-read $side $run $(fio_bw $W/r.out) depths $(fio_depths $W/r.out)"
    if [ $side = ublk ]; then ublk_detach $dev; else nbd_detach; fi
}

# append_side RUN QD: fio into a file on zoned btrfs on the ublk device.
append_side ()
{
    local run=$1 qd=$2 dev line
    reset_all
    : > $W/attach.log
    dev=$(ublk_attach "$(uri srv)")
    timeout 120 mkfs.btrfs -f -O zoned -d single -m single $dev > $W/mkfs.out 2>&1 ||
        { cat $W/mkfs.out; die "mkfs.btrfs -O zoned"; }
    mkdir -p /mnt/a
    mount -t btrfs $dev /mnt/a || die "mount btrfs"
    run_fio a $W/a.out --directory=/mnt/a --filename=data --rw=write \
        --bs=1M --direct=1 --ioengine=libaio --iodepth=$qd \
        --size=${BENCH_APPEND_MB}M --fallocate=none
    umount /mnt/a || die "umount"
    ublk_detach $dev
    line=$(grep 'zone appends' $W/attach.log | tail -n 1)
    line=$(echo "$line" | sed -n 's/.*; \([0-9]* zone appends, at most [0-9]* in flight\).*/\1/p')
    result "bench append-qd$qd ublk $run $(fio_bw $W/a.out) $line"
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
    while [ $run -le $BENCH_RUNS ]; do
        # Rotate which side goes first.
        if [ $((run % 2)) = 1 ]; then order="nbd ublk"; else order="ublk nbd"; fi
        for side in $order; do seq_side $run $side; done
        if [ $((run % 2)) = 1 ]; then order="1 8"; else order="8 1"; fi
        for qd in $order; do append_side $run $qd; done
        run=$((run + 1))
    done
}

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
