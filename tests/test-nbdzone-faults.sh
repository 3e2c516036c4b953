#!/usr/bin/env bash
# nbdzone and nbdzone attach against servers that misbehave, on the
# host (no ublk device is created: each refusal comes before one):
#   - a write pointer off the block size in block status (a hostile
#     server steering zone appends to unaligned offsets) is refused by
#     report and attach, with a line naming the zone and the offset;
#   - nbdzone finish of a zone the device turned read-only or offline
#     fails, saying why, and sends nothing;
#   - a server that accepts the connection and never completes the NBD
#     handshake, or that stops answering block status, ends attach
#     after --timeout with one line, instead of hanging it.
source "$srcdir/functions.sh"
requires nbdkit --version
requires nbdkit eval --version
requires "$PYTHON3" --version
PATH="$top_builddir/tools:$PATH"
requires nbdzone --help

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
# Whatever the tests find, no ublk device is made here.
export NBDZONE_UBLK_CONTROL="$tmp/no-ublk-control"

# refused WANT CMD...: CMD exits with status 1, printing one line
# (nbdkit's own lines aside) that contains WANT.
refused () {
    local want="$1" rc=0
    shift
    "$@" > "$tmp/out" 2> "$tmp/err" || rc=$?
    cat "$tmp/err"
    [ $rc -eq 1 ] || fail "exit status $rc, not 1: $*"
    grep -v '^nbdkit:' "$tmp/err" > "$tmp/ours" || :
    [ "$(wc -l < "$tmp/ours")" -eq 1 ] || fail "not one line: $(cat "$tmp/ours")"
    grep -qF -- "$want" "$tmp/ours" || fail "expected \"$want\""
}

# Four 1 MiB zones of 4 KiB blocks; zone 0 full, zone 1's WP 512 bytes
# into it (block status: data to 1049088, a hole after).
misaligned=(eval get_size='echo 4194304' pread='head -c $3 /dev/zero'
    export_description="echo zoned=host-managed zone-size=1048576 zone-capacity=1048576 zones=4 conventional=none block-size=4096 disk-id=test-misaligned"
    can_extents='exit 0' can_trim='exit 0' can_zero='exit 0'
    trim='exit 0' zero='exit 0' pwrite='cat >/dev/null'
    extents='echo 0 1049088 data; echo 1049088 3145216 hole,zero')
want='the write pointer of zone 1 at offset 1049088, 512 bytes into the zone, which is not a multiple of the block size (4096 bytes)'
refused "$want" nbdkit -U - "${misaligned[@]}" --run 'nbdzone report "$uri"'
grep -qF 'nbdzone: cannot read the write pointers of nbd+unix:' "$tmp/ours" ||
    fail "the report's line does not say what failed"
[ ! -s "$tmp/out" ] || fail "report printed zones: $(cat "$tmp/out")"
for mode in --foreground ""; do
    refused "$want" nbdkit -U - "${misaligned[@]}" \
        --run "timeout 60 nbdzone attach \"\$uri\" $mode"
done
# A WP on the block size is fine (the same export, 4096 bytes in).
aligned=("${misaligned[@]}")
aligned[${#aligned[@]}-1]='extents=echo 0 1052672 data; echo 1052672 3141632 hole,zero'
nbdkit -U - "${aligned[@]}" \
    --run 'nbdzone report "$uri"' > "$tmp/out" 2> "$tmp/err" ||
    { cat "$tmp/err"; fail "an aligned WP was refused"; }
sed -n 2p "$tmp/out" | grep -qF 'wptr 0x000008 ' ||
    fail "zone 1's WP is not 8 sectors in: $(cat "$tmp/out")"

# Finish of zones the server's device turned read-only (1) or offline
# (2): block status says data to their end, which must not pass for
# "already full".
states=(eval get_size='echo 4194304' pread='head -c $3 /dev/zero'
        can_extents='exit 0' extents='echo 0 4194304 data'
        can_zero='exit 0' zero="touch $tmp/zeroed"
        export_description="echo zoned=host-managed zone-size=1048576 zone-capacity=1048576 zones=4 conventional=none block-size=512 readonly=1 offline=2")
refused 'zone 1 at offset 1048576 is read-only on the server'"'"'s device: it cannot be finished' \
    nbdkit -U - "${states[@]}" --run 'nbdzone finish "$uri" 1M'
refused 'zone 2 at offset 2097152 is offline on the server'"'"'s device: it cannot be finished' \
    nbdkit -U - "${states[@]}" --run 'nbdzone finish "$uri" 2M'
[ ! -e "$tmp/zeroed" ] || fail "a refused finish sent write-zeroes"
# A full zone that is neither is still finished by doing nothing.
nbdkit -U - "${states[@]}" --run 'nbdzone finish "$uri" 3M' ||
    fail "finish of a full zone failed"

# A server that accepts connections and never says a word: the
# handshake ends after --timeout, with one line.
"$PYTHON3" -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
open(sys.argv[2], "w").close()
time.sleep(120)
' "$tmp/mute.sock" "$tmp/mute.ready" &
mute=$!
cleanup_fn kill $mute
for i in $(seq 100); do [ -e "$tmp/mute.ready" ] && break; sleep 0.1; done
[ -e "$tmp/mute.ready" ] || fail "the mute server did not start"
for mode in --foreground ""; do
    began=$(date +%s)
    refused 'no reply from the server during the NBD handshake for 2 s' \
        timeout 20 nbdzone attach "nbd+unix:///?socket=$tmp/mute.sock" \
        --timeout 2 $mode
    took=$(( $(date +%s) - began ))
    [ $took -le 6 ] || fail "the handshake was given up after ${took} s, not about 2"
    grep -qF "nbdzone: cannot connect to nbd+unix:///?socket=$tmp/mute.sock: " \
        "$tmp/ours" || fail "the line does not name the server"
done

# A server that completes the handshake, then does not answer block
# status for 8 s: attach gives up reading the write pointers after
# --timeout 2.
slow=(eval get_size='echo 4194304' pread='head -c $3 /dev/zero'
    export_description="echo zoned=host-managed zone-size=1048576 zone-capacity=1048576 zones=4 conventional=none block-size=512"
    can_extents='exit 0' can_trim='exit 0' can_zero='exit 0'
    trim='exit 0' zero='exit 0' pwrite='cat >/dev/null'
    extents='sleep 8; echo 0 4194304 hole,zero')
for mode in --foreground ""; do
    nbdkit -U - "${slow[@]}" --run "
        began=\$(date +%s)
        timeout 20 nbdzone attach \"\$uri\" --timeout 2 $mode
        echo \$? \$(( \$(date +%s) - began )) > $tmp/took" \
        > "$tmp/out" 2> "$tmp/err" || :
    cat "$tmp/err"
    read rc took < "$tmp/took"
    [ $rc -eq 1 ] || fail "attach against a mute server: exit status $rc, not 1"
    grep -qF 'no reply from the server for 2 s to a write pointer query' "$tmp/err" ||
        fail "attach did not say that the server stopped answering"
    [ $took -le 6 ] || fail "attach gave up after ${took} s, not about 2"
done
echo "nbdzone fault checks passed"
