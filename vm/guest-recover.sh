# nbdzone attach --recover in the VM: the attach process itself killed
# (-9) while programs write to its zoned ublk device; the kernel keeps
# the device and holds its requests, and a new attach takes it over.
#
# Sourced by guest-tests.sh after guest-reconnect.sh (whose helpers,
# zbd_fio, fs_writer, btrfs_on and the like, it uses), which calls recover_cases.  What is asserted is what a user
# relies on: no error reaches the program, every byte verifies, and a
# takeover by another disk, by this disk with another key, or of a
# device whose attach is alive is refused with a line saying why.

# kill_attach UBLK: kill -9 the process serving UBLK; the kernel must
# keep the device and hold its I/O (nbdzone list says so).
kill_attach ()
{
    local ublk=$1 pid i=0
    pid=$(serving_pid $ublk)
    kill -9 $pid
    gone $pid
    until $NBDZONE list 2>/dev/null | grep -q "^$ublk .*its requests held"; do
        i=$((i + 1))
        [ $i -gt 300 ] && die "$ublk is not held for recovery 30 s after kill -9 of attach: $($NBDZONE list 2>&1)"
        sleep 0.1
    done
    [ -b $ublk ] || die "$ublk went away after kill -9 of attach"
    say "$($NBDZONE list | grep "^$ublk ")"
}

# server_survived NAME DEV: nbdkit NAME lives on after its client was
# killed.  nbdkit 1.32 (Debian 12's) may abort when a client vanishes
# while replies are being sent ("raw_send_socket: Assertion `sock >= 0'
# failed"); a service manager restarts it, and the held requests wait
# for that as for any server restart.  Say so loudly, and do the same.
server_survived ()
{
    local pid
    pid=$(cat $W/$1.pid)
    sleep 1
    proc_running $pid && return 0
    say "NOTE: nbdkit died when its client was killed: $(tail -n 1 $W/$1.log); starting it again"
    grep -q "raw_send_socket: Assertion .sock >= 0. failed" $W/$1.log ||
        die "nbdkit died of something else: $(tail -n 3 $W/$1.log)"
    rm -f $W/$1.pid
    attach_serve $1 $2 unix
}

# recover UBLK URI: attach --recover; it must print UBLK and say so.
recover ()
{
    local dev before
    before=$(grep -c "$1 recovered: it serves" $W/attach.log || :)
    dev=$(timeout 60 $NBDZONE attach --recover $1 "$2" 2>>$W/attach.log) ||
        die "nbdzone attach --recover $1 failed: $(tail -n 3 $W/attach.log)"
    [ "$dev" = $1 ] || die "attach --recover printed \"$dev\", not $1"
    # The serving process says so just after its parent prints the device.
    wait_log $W/attach.log "$1 recovered: it serves" $((before + 1)) 10
}

# refused_recover UBLK URI WANT: attach --recover fails, saying WANT.
refused_recover ()
{
    timeout 60 $NBDZONE attach --recover $1 "$2" > /dev/null 2> $W/rec.err &&
        die "attach --recover $1 $2 took the device over"
    cat $W/rec.err
    grep -q "cannot recover $1 with .*: $3" $W/rec.err ||
        die "the refusal does not say \"$3\": $(cat $W/rec.err)"
}

# attach killed (-9) twice while fio writes and verifies zones: the
# device and its requests stay, attach --recover takes it over, and fio
# sees no error.  Before the first takeover, --recover with another
# disk and with another key is refused and sends nothing.
case_recover_fio ()
{
    local dev=nullb0 u ublk n before
    need_ublk
    mark_kernel_log
    attach_serve srv $dev unix; u=$URI
    ublk=$(ublk_attach "$u" --depth 32)
    refused_recover $ublk "$u" "process [0-9]* serves it and is alive"
    zbd_fio $ublk $dev $W/fio-rec.out
    for n in 1 2; do
        sleep 4
        kill -0 $FIO 2>/dev/null || { cat $W/fio-rec.out; die "fio ended before kill $n"; }
        say "kill -9 attach ($n of 2), fio writing"
        kill_attach $ublk
        server_survived srv $dev
        if [ $n = 1 ]; then
            # A disk of the same geometry: only its identity differs.
            make_nullb0_twin
            before=$(sha256sum < /dev/nullb3)
            attach_serve other nullb3 unix
            refused_recover $ublk "$(uri other)" "it served another disk"
            [ "$before" = "$(sha256sum < /dev/nullb3)" ] || die "the other disk changed"
            stop_nbdkit other
            # This disk with another key: its server started again so.
            kill_srv srv
            cp $W/key $W/key.keep
            make_key
            attach_serve srv $dev unix
            refused_recover $ublk "$u" "it served this disk with another key"
            kill_srv srv
            mv $W/key.keep $W/key
            attach_serve srv $dev unix
        fi
        recover $ublk "$u"
        say "$(grep 'recovered: it serves' $W/attach.log | tail -n 1)"
    done
    fio_ok $W/fio-rec.out
    no_failed_requests $ublk
    ublk_detach $ublk
    [ -z "$($NBDZONE list)" ] || die "nbdzone list after detach: $($NBDZONE list)"
}

# btrfs mounted, files written, a writer running: attach is killed
# (-9) and recovered; the writer sees no error, every file is intact
# after a remount, scrub is clean.
case_recover_btrfs ()
{
    local u ublk
    need_ublk
    mark_kernel_log
    make_fs_dev
    attach_serve srv $FS_DEV unix; u=$URI
    ublk=$(ublk_attach "$u" --depth 32)
    btrfs_on $ublk
    fs_writer /mnt/a
    sleep 3
    kill -0 $WRITER 2>/dev/null || { cat $W/writer.err; die "the writer ended before the kill"; }
    say "kill -9 attach under btrfs"
    kill_attach $ublk
    server_survived srv $FS_DEV
    sleep 2
    recover $ublk "$u"
    writer_ok /mnt/a
    btrfs_intact $ublk
    no_failed_requests $ublk
    ublk_detach $ublk
}

recover_cases ()
{
    kernel_at_least 6 6 || return 0
    run 900 "nullb0: attach --recover: fio zbd verify while attach is killed (-9) and recovered twice" \
        case_recover_fio
    # On Linux 7.x the kernel fails (EIO) the zone appends in flight
    # when attach dies instead of handing them over again, and btrfs,
    # which writes its data with zone appends, goes read-only: a known
    # limitation (man nbdzone), so this case runs before 7.0 only.
    if kernel_at_least 7 0; then
        say "attach --recover with btrfs: not run on $(uname -r), whose ublk fails the zone appends in flight when attach dies"
    else
        run 600 "attach --recover: btrfs mounted, a writer running while attach is killed (-9) and recovered" \
            case_recover_btrfs
    fi
}
