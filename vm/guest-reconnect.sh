# nbdzone attach --reconnect in the VM: the server killed and started
# again, stopped and continued, or replaced by another disk or key,
# while programs write to the zoned ublk device.
#
# Sourced by guest-tests.sh after guest-attach.sh (whose helpers it
# uses), which calls reconnect_cases.  What is asserted is what a user
# relies on: no error reaches the program and every byte verifies when
# the same disk comes back with the same key; when anything else comes
# back, nothing is resent, the held I/O fails with EIO, attach says why,
# and the device detaches.

# wait_log FILE PATTERN COUNT SECONDS: until FILE has COUNT lines
# matching PATTERN, or fail.
wait_log ()
{
    local file=$1 pat=$2 count=$3 secs=$4 i=0
    until [ "$(grep -c "$pat" $file 2>/dev/null)" -ge $count ]; do
        i=$((i + 1))
        if [ $i -gt $((secs * 10)) ]; then
            tail -n 20 $file
            die "no \"$pat\" (x$count) in $file after $secs s"
        fi
        sleep 0.1
    done
}

# kill_srv NAME: kill -9 the server NAME and wait until it is gone (its
# drive free for the next one).
kill_srv ()
{
    local pid
    pid=$(cat $W/$1.pid)
    kill -9 $pid
    gone $pid
    rm -f $W/$1.pid
}

# restart_srv NAME DEV TRANSPORT [NBDKIT-ARGS]: the same server again.
restart_srv ()
{
    local name=$1 dev=$2 transport=$3
    shift 3
    attach_serve $name $dev $transport "$@"
}

uptime_ms () { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# resumed_after_restart N DEV TRANSPORT: the server started again (kill
# N of a case), then attach's Nth reconnect awaited; says how long after
# the server answered again (attach_serve returns once it does) attach
# had resumed, to the 0.1 s wait_log polls at.
resumed_after_restart ()
{
    local t0
    restart_srv srv $2 $3
    t0=$(uptime_ms)
    wait_log $W/attach.log "reconnected to" $1 60
    say "$(grep 'reconnected to' $W/attach.log | tail -n 1)"
    say "resumed $(( $(uptime_ms) - t0 )) ms after the server answered again"
}

# mark_kernel_log: the kernel log's last time stamp, so that
# no_failed_requests reads only what came after it (earlier cases fail
# requests on purpose, on devices of the same name).
mark_kernel_log ()
{
    dmesg | tail -n 1 | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p' > $W/klog.since
}

# No request failed on the ublk device: attach logged none, the kernel
# reported no I/O error on it since mark_kernel_log.
no_failed_requests ()
{
    local ublk=${1#/dev/} since
    since=$(cat $W/klog.since 2>/dev/null)
    ! grep -E 'the kernel is told|fails with EIO' $W/attach.log ||
        die "attach failed requests (above)"
    ! dmesg | awk -v t="${since:-0}" '{ s = $0; sub(/^\[ */, "", s); split(s, a, "]"); if (a[1] + 0 > t + 0) print }' |
        grep -E "I/O error, dev $ublk|$ublk.*error" ||
        die "the kernel saw I/O errors on $ublk (above)"
}

# fio writes and verifies zones of the ublk device while the server is
# killed and started again twice; fio sees no error.
# zbd_fio UBLK DEV OUT: fio writing and verifying the sequential zones
# of UBLK (served from DEV) at a modest rate, in the background; its pid
# in $FIO, its report in OUT.  fio_ok OUT: it ended without error.
zbd_fio ()
{
    local nz
    nz=$(nr_zones $2)
    timeout 900 fio --name=seq --filename=$1 --direct=1 --ioengine=libaio \
        --zonemode=zbd --max_open_zones=4 --rw=write --bs=64k \
        --iodepth=8 --size=$(( (nz - 2) * $(zone_bytes $2) )) --rate=6m \
        --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --output=$3 > /dev/null 2>&1 &
    FIO=$!
}

fio_ok ()
{
    wait $FIO || { cat $1; die "fio failed"; }
    grep -E "err= *0" $1 > /dev/null || { cat $1; die "fio reported errors"; }
    say "$(grep -E 'WRITE:|READ:' $1)"
}

# btrfs_on UBLK: a zoned btrfs made and mounted on /mnt/a, with files
# (their sums in $W/sums).  btrfs_intact UBLK: the files are intact
# now and after a remount, and scrub is clean; unmounted after.
btrfs_on ()
{
    timeout 120 mkfs.btrfs -f -O zoned -d single -m single $1 > $W/mkfs.out 2>&1 ||
        { cat $W/mkfs.out; die "mkfs.btrfs -O zoned"; }
    mkdir -p /mnt/a
    mount -t btrfs $1 /mnt/a || die "mount btrfs"
    write_files /mnt/a 4 8
    bounded_sync
}

btrfs_intact ()
{
    bounded_sync
    ( cd /mnt/a && sha256sum -c $W/sums > /dev/null ) || die "files differ"
    umount /mnt/a || die "umount"
    mount -t btrfs $1 /mnt/a || die "mount again"
    ( cd /mnt/a && sha256sum -c $W/sums > /dev/null ) || die "files differ after a remount"
    timeout 300 btrfs scrub start -B /mnt/a > $W/scrub.out 2>&1 || { cat $W/scrub.out; die "btrfs scrub"; }
    grep -q "no errors found\|Error summary: *no errors" $W/scrub.out || { cat $W/scrub.out; die "scrub found errors"; }
    umount /mnt/a
}

# fs_writer DIR: files of the same 1 MiB of random data written one
# after the other into DIR, each with fsync, a few a second, in the
# background (pid in $WRITER), until writer_ok DIR tells it to stop (at
# most 150).  writer_ok DIR: the writer saw no error and every file
# holds what was written; their sums join $W/sums for btrfs_intact.
fs_writer ()
{
    gen_file $W/src 1048576
    rm -f $W/writer.stop
    ( set -e; i=0; while [ $i -lt 150 ] && [ ! -e $W/writer.stop ]; do
          dd if=$W/src of=$1/w$i bs=1M conv=fsync status=none
          i=$((i + 1)); sleep 0.2; done ) > $W/writer.err 2>&1 &
    WRITER=$!
}

writer_ok ()
{
    local f n=0 sum
    touch $W/writer.stop
    wait $WRITER || { cat $W/writer.err; die "the writer on the filesystem failed"; }
    sum=$(sha256sum < $W/src | cut -d' ' -f1)
    for f in $1/w*; do
        cmp $W/src $f || die "$f differs from what was written"
        echo "$sum  ${f##*/}" >> $W/sums
        n=$((n + 1))
    done
    say "the writer wrote $n files"
}

case_reconnect_fio ()
{
    local dev=$1 transport=$2 u ublk n
    need_ublk
    mark_kernel_log
    attach_serve srv $dev $transport; u=$URI
    ublk=$(ublk_attach "$u" --depth 32 --reconnect 60)
    zbd_fio $ublk $dev $W/fio-rc.out
    for n in 1 2; do
        sleep 4
        kill -0 $FIO 2>/dev/null || { cat $W/fio-rc.out; die "fio ended before kill $n"; }
        say "kill -9 nbdkit ($n of 2), fio writing"
        kill_srv srv
        sleep 2
        resumed_after_restart $n $dev $transport
    done
    fio_ok $W/fio-rc.out
    grep "broke" $W/attach.log | tail -n 2
    no_failed_requests $ublk
    ublk_detach $ublk
}

# btrfs zoned, mounted, files written and a writer writing more (each
# file fsynced) for as long as the server is killed and started again twice: no
# error reaches the writer, every file holds what was written, and
# after a remount every file is intact and scrub is clean.
case_reconnect_btrfs ()
{
    local u ublk n
    need_ublk
    mark_kernel_log
    make_fs_dev
    attach_serve srv $FS_DEV unix; u=$URI
    ublk=$(ublk_attach "$u" --depth 32 --reconnect 60)
    btrfs_on $ublk
    fs_writer /mnt/a
    for n in 1 2; do
        sleep 4
        kill -0 $WRITER 2>/dev/null || { cat $W/writer.err; die "the writer ended before kill $n"; }
        say "kill -9 nbdkit ($n of 2) under btrfs"
        kill_srv srv
        sleep 2
        resumed_after_restart $n $FS_DEV unix
    done
    writer_ok /mnt/a
    btrfs_intact $ublk
    no_failed_requests $ublk
    ublk_detach $ublk
}

# The network between client and server lost for 10 s (the client's end
# of the veth link down), then back: fio writing and verifying, or btrfs
# with a writer, sees no error.  attach's --timeout 3 declares the
# connection dead during the loss, every reconnect attempt meanwhile
# fails (no route), and the first after the link is back resumes.  What
# the old connection still had queued must never reach the server after
# that (it would land behind the resumed writes): the case checks that
# the server saw no write refused below a WP.
case_reconnect_link_down ()
{
    local what=$1 ublk dev=nullb0
    need_ublk
    mark_kernel_log
    [ $what = btrfs ] && { make_fs_dev; dev=$FS_DEV; }
    attach_serve srv $dev veth
    ublk=$(ublk_attach "$URI" --depth 32 --timeout 3 --reconnect 60)
    case $what in
        fio) zbd_fio $ublk $dev $W/fio-ld.out ;;
        btrfs) btrfs_on $ublk; fs_writer /mnt/a ;;
    esac
    sleep 4
    say "the link down for 10 s"
    ip link set zc0 down || die "ip link set zc0 down"
    sleep 10
    ip link set zc0 up || die "ip link set zc0 up"
    say "the link up again"
    wait_log $W/attach.log "reconnected to" 1 60
    grep -E "broke|reconnected" $W/attach.log
    grep -q "reconnect attempt 1 failed" $W/attach.log ||
        die "no reconnect attempt failed while the link was down"
    sleep 4
    case $what in
        fio) fio_ok $W/fio-ld.out ;;
        btrfs) writer_ok /mnt/a; btrfs_intact $ublk ;;
    esac
    ! grep -E "below the write pointer|below the zone's write pointer" $W/srv.log ||
        die "the server refused a write below a WP (above): an old write arrived late"
    no_failed_requests $ublk
    ublk_detach $ublk
}

# unsent_to HOST PORT: how many TCP connections of this namespace to
# HOST:PORT still hold data they have not had acknowledged (the queues
# in /proc/net/tcp, addresses in little-endian hex).
unsent_to ()
{
    local hex
    hex=$(echo $1 | awk -F. '{ printf "%02X%02X%02X%02X", $4, $3, $2, $1 }'):$(printf %04X $2)
    awk -v r=$hex '$3 == r { split($5, q, ":"); if (q[1] != "00000000") n++ } END { print n + 0 }' \
        /proc/net/tcp
}

# A write sent just as the network went down waits in the client's TCP
# queue; attach gives that connection up and resumes on a new one once
# the link is back, and the write completes there.  The old connection
# must not deliver its copy later: it would land on the server over
# what the client wrote there since (in a conventional zone nothing
# refuses it).  So: a write of A to a conventional zone as the link goes
# down, the link back after 14 s, B at the same place once attach has
# resumed; once no connection to the server holds unsent data, the place
# reads B.  The times are TCP's: A's retransmissions back off to 12.6
# and 25.4 s after it was sent, and attach's reconnect attempts (3 s of
# --timeout, then backoff) come at about 9 and 14.5 s, so the resume
# and B fall between two retransmissions, the second with the link up.
case_reconnect_no_late_write ()
{
    local ublk held i
    need_ublk
    attach_serve srv nullb0 veth
    ublk=$(ublk_attach "$URI" --timeout 3 --reconnect 60)
    gen_file $W/a 65536
    gen_file $W/b 65536
    ip link set zc0 down || die "ip link set zc0 down"
    dd if=$W/a of=$ublk bs=64k count=1 oflag=direct status=none 2> $W/a.err &
    held=$!
    sleep 14
    ip link set zc0 up || die "ip link set zc0 up"
    wait $held || { cat $W/a.err; die "the write of A failed across the loss"; }
    wait_log $W/attach.log "reconnected to" 1 60
    grep -E "broke|reconnected" $W/attach.log
    dd if=$W/b of=$ublk bs=64k count=1 oflag=direct status=none || die "the write of B"
    i=0
    while [ "$(unsent_to $VETH_SERVER $ATTACH_PORT)" != 0 ]; do
        i=$((i + 1))
        [ $i -gt 150 ] && die "a connection to the server still holds unsent data 150 s on"
        sleep 1
    done
    say "no connection holds unsent data ${i} s after the write of B"
    dd if=$ublk of=$W/back bs=64k count=1 iflag=direct status=none || die "read back"
    cmp $W/b $W/back ||
        die "the place written with B reads otherwise: the old connection's copy of A landed late"
    ublk_detach $ublk
}

# A server stopped (SIGSTOP) for longer than --timeout, then continued:
# the write waiting on it completes, nothing fails, the data reads back.
case_reconnect_stopped ()
{
    local dev=nullb0 u ublk mib pid
    need_ublk
    mark_kernel_log
    attach_serve srv $dev unix; u=$URI
    ublk=$(ublk_attach "$u" --timeout 3 --reconnect 60)
    reset_first_seq_zone $ublk $dev; mib=$MIB
    gen_file $W/data 4194304
    kill -STOP $(cat $W/srv.pid)
    say "nbdkit stopped (SIGSTOP); attach has --timeout 3"
    dd if=$W/data of=$ublk bs=1M seek=$mib oflag=direct status=none 2> $W/dd.err &
    pid=$!
    wait_log $W/attach.log "no reply from the server" 1 30
    sleep 4
    kill -CONT $(cat $W/srv.pid)
    say "nbdkit continued"
    wait $pid || { cat $W/dd.err; die "the write failed across the stop"; }
    wait_log $W/attach.log "reconnected to" 1 60
    grep -E "broke|reconnected" $W/attach.log
    dd if=$ublk of=$W/back bs=1M skip=$mib count=4 iflag=direct status=none ||
        die "read back"
    cmp $W/data $W/back || die "the data written across the stop reads back different"
    no_failed_requests $ublk
    ublk_detach $ublk
}

# reset_first_seq_zone UBLK DEV: reset UBLK's first sequential zone
# (DEV's geometry); its offset in MiB in $MIB.
reset_first_seq_zone ()
{
    local z zs
    z=$(first_seq_zone $2)
    zs=$(zone_bytes $2)
    blkzone reset -o $((z * zs / 512)) -c 1 $1 || die "reset"
    MIB=$((z * zs / 1048576))
}

# make_nullb0_twin: /dev/nullb3, with nullb0's very geometry: only its
# identity (another disk sequence number) tells them apart.
make_nullb0_twin ()
{
    [ -b /dev/nullb3 ] || make_nullb nullb3 blocksize=4096 memory_backed=1 \
        size=128 zoned=1 zone_size=$NULLB0_ZONE_MB zone_nr_conv=2
}

# held_write UBLK OFFSET-MIB: a 1 MiB direct write at OFFSET-MIB, in
# the background (its pid in $HELD); expect_held_eio: it fails with EIO.
held_write ()
{
    dd if=/dev/urandom of=$1 bs=1M count=1 seek=$2 oflag=direct status=none \
        2> $W/held.err &
    HELD=$!
}

expect_held_eio ()
{
    local i=0
    while kill -0 $HELD 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 60 ] && die "the held write still waits 60 s on"
        sleep 1
    done
    wait $HELD && die "the held write succeeded"
    grep -q "Input/output error" $W/held.err || die "the held write failed with \"$(cat $W/held.err)\", not EIO"
}

# The server comes back as another disk, or with another key: nothing
# is resent, the held write fails with EIO, attach says what differs,
# the device detaches, and the other disk is untouched.
case_reconnect_other ()
{
    local what=$1 u ublk mib before after
    need_ublk
    attach_serve srv nullb0 unix; u=$URI
    ublk=$(ublk_attach "$u" --reconnect 60)
    reset_first_seq_zone $ublk nullb0; mib=$MIB
    kill -STOP $(cat $W/srv.pid)
    held_write $ublk $mib
    sleep 1
    kill_srv srv
    case $what in
        disk)
            make_nullb0_twin
            dd if=/dev/urandom of=/dev/nullb3 bs=1M count=1 oflag=direct status=none
            before=$(sha256sum < /dev/nullb3)
            attach_serve srv nullb3 unix
            ;;
        key)
            make_key                # a new $W/key
            before=$(sha256sum < /dev/nullb0)
            attach_serve srv nullb0 unix
            ;;
    esac
    expect_held_eio
    wait_log $W/attach.log "not resuming" 1 30
    grep "not resuming" $W/attach.log
    case $what in
        disk) grep -q "not resuming on .*: it is another disk (disk-id diskseq-" $W/attach.log ||
                  die "attach did not say the disk differs"
              after=$(sha256sum < /dev/nullb3) ;;
        key)  grep -q "not resuming on .*: it is served with another key" $W/attach.log ||
                  die "attach did not say the key differs"
              after=$(sha256sum < /dev/nullb0) ;;
    esac
    [ "$before" = "$after" ] || die "the other server's disk changed: something was resent"
    # New I/O fails at once; the device detaches.
    if timeout 10 dd if=$ublk of=/dev/null bs=4096 count=1 iflag=direct 2> $W/dd.err; then
        die "a read succeeded after attach gave up"
    fi
    ublk_detach $ublk
}

# --reconnect runs out: the held write fails with EIO when it does, not
# before, and the device detaches.
case_reconnect_expires ()
{
    local u ublk mib began took
    need_ublk
    attach_serve srv nullb0 unix; u=$URI
    ublk=$(ublk_attach "$u" --reconnect 6)
    reset_first_seq_zone $ublk nullb0; mib=$MIB
    kill -STOP $(cat $W/srv.pid)
    held_write $ublk $mib
    sleep 1
    began=$(date +%s)
    kill_srv srv
    expect_held_eio
    took=$(( $(date +%s) - began ))
    say "the held write failed ${took} s after the server died (--reconnect 6)"
    [ $took -ge 4 ] && [ $took -le 20 ] || die "it failed after ${took} s, not about 6"
    grep -q "no connection to .* for 6 s (--reconnect)" $W/attach.log ||
        die "attach did not say the reconnect ran out: $(tail -n 3 $W/attach.log)"
    grep -c "reconnect attempt" $W/attach.log | sed 's/^/attempts logged: /'
    ublk_detach $ublk
}

# A server whose image went back to an older copy (it lost writes it
# had acknowledged): never resumed, and the zone and both WPs are named.
case_reconnect_lost_writes ()
{
    local u ublk img=$W/rc.img
    need_ublk
    rm -f $img
    [ -s $W/key ] || make_key
    start_nbdkit srv --filter=$FILTER $PLUGIN emulate=$img size=256M zone-size=16M \
        crypt-key-file=$W/key crypt-sector-size=4096
    u=$(uri srv)
    ublk=$(ublk_attach "$u" --reconnect 60)
    # A flushed write (fsync on the device is a FLUSH to the server), so
    # the image keeps it even across kill -9.  (SIGTERM would not end
    # the server: nbdkit waits for its clients to go.)
    dd if=/dev/urandom of=$ublk bs=1M count=1 oflag=direct conv=fsync status=none ||
        die "first write"
    kill_srv srv
    cp $img $W/rc.old
    start_nbdkit srv --filter=$FILTER $PLUGIN emulate=$img \
        crypt-key-file=$W/key crypt-sector-size=4096
    # Nothing was in flight and nothing acknowledged was lost: attach
    # reconnects.
    wait_log $W/attach.log "reconnected to" 1 60
    dd if=/dev/urandom of=$ublk bs=1M count=2 seek=1 oflag=direct status=none ||
        die "second write"
    kill -STOP $(cat $W/srv.pid)
    held_write $ublk 3
    sleep 1
    kill_srv srv
    cp $W/rc.old $img           # the image as it was before the second write
    start_nbdkit srv --filter=$FILTER $PLUGIN emulate=$img \
        crypt-key-file=$W/key crypt-sector-size=4096
    expect_held_eio
    grep "not resuming" $W/attach.log | tail -n 1
    grep -q "not resuming on .*zone 0: the server's write pointer is at offset 1048576, behind 3145728" $W/attach.log ||
        die "attach did not name the zone and both write pointers"
    ublk_detach $ublk
}

reconnect_cases ()
{
    local tr
    kernel_at_least 6 6 || return 0
    for tr in unix tcp; do
        run 900 "nullb0: attach --reconnect ($tr): fio zbd verify while nbdkit is killed and restarted twice" \
            case_reconnect_fio nullb0 $tr
    done
    run 900 "attach --reconnect: btrfs, files and a writer (fsync) while nbdkit is killed and restarted twice" \
        case_reconnect_btrfs
    run 600 "nullb0: attach --reconnect: the network down 10 s under fio zbd verify" \
        case_reconnect_link_down fio
    run 900 "attach --reconnect: the network down 10 s under btrfs with a writer (fsync)" \
        case_reconnect_link_down btrfs
    run 400 "nullb0: attach --reconnect: a write queued as the network went down never lands late" \
        case_reconnect_no_late_write
    run 180 "nullb0: attach --reconnect: nbdkit stopped past --timeout, continued: the write completes" \
        case_reconnect_stopped
    run 180 "nullb0: attach --reconnect: the server back as another disk: EIO, nothing resent" \
        case_reconnect_other disk
    run 180 "nullb0: attach --reconnect: the server back with another key: EIO, nothing resent" \
        case_reconnect_other key
    run 180 "nullb0: attach --reconnect 6 runs out: EIO after it, detach" \
        case_reconnect_expires
    run 180 "attach --reconnect: an image put back to an older copy is never resumed" \
        case_reconnect_lost_writes
}
