#!/usr/bin/env bash
# emulate= names something that is not an image file: a FIFO (whose
# blocking open used to hang nbdkit at start without a word), a
# directory, a socket, a character device.  Each is refused at once,
# before serving, with one line that names what it is.
source "$srcdir/functions.sh"
requires "$PYTHON3" --version
requires nbdkit --version
requires mkfifo --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
mkfifo "$tmp/fifo"
mkdir "$tmp/dir"
"$PYTHON3" -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$tmp/sock"
[ -S "$tmp/sock" ] || fail "cannot make a socket"
ln -s fifo "$tmp/link-to-fifo"

refused ()
{
    local path="$1" what="$2" rc=0
    timeout 20 nbdkit -U - zbd emulate="$path" size=8M zone-size=1M \
            --run true 2>"$tmp/err" || rc=$?
    [ $rc != 124 ] || fail "emulate=$path ($what): nbdkit hung at start"
    [ $rc != 0 ] || fail "emulate=$path ($what): nbdkit served it"
    [ "$(grep -c error "$tmp/err")" = 1 ] || { cat "$tmp/err"; fail "$what: not one error line"; }
    grep -qF "emulate=$path: not a regular file but $what; emulate= takes an image file (created if absent) or \"memory\"" "$tmp/err" ||
        { cat "$tmp/err"; fail "emulate=$path: the line does not say it is $what"; }
    echo "refused: $(cat "$tmp/err")"
}
refused "$tmp/fifo" "a FIFO (named pipe)"
refused "$tmp/link-to-fifo" "a FIFO (named pipe)"
refused "$tmp/dir" "a directory"
refused "$tmp/sock" "a socket"
refused /dev/null "a character device"
