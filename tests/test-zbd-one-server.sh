#!/usr/bin/env bash
# One image, one writing server.  Two servers on one image would each
# keep their own zone table and overwrite each other's, losing flushed
# writes without a word.  A server that may write takes an exclusive
# lock on the image at start, a read-only one (nbdkit -r) a shared one;
# the second server is refused at start with one line that names the
# process holding the image.  Read-only servers share an image.
source "$srcdir/functions.sh"
requires "$PYTHON3" -c 'import nbd'
requires nbdkit --version
requires nbdinfo --version

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"
pids=()
cleanup_fn 'for p in "${pids[@]}"; do kill -9 $p 2>/dev/null; done'
img="$tmp/img"
geom="size=8M zone-size=1M conventional-zones=1"
M=1048576

# start NAME ARGS...: a server in the background on $tmp/NAME.sock; its
# pid in $tmp/NAME.pid.  Without -f in ARGS it forks into the background.
start ()
{
    local name="$1"; shift
    rm -f "$tmp/$name.sock" "$tmp/$name.pid"
    nbdkit -U "$tmp/$name.sock" -P "$tmp/$name.pid" "$@" 2>"$tmp/$name.err" &
    for _ in $(seq 200); do [ -s "$tmp/$name.pid" ] && break; sleep 0.1; done
    [ -s "$tmp/$name.pid" ] || { cat "$tmp/$name.err"; fail "server $name did not start"; }
    pids+=("$(cat "$tmp/$name.pid")")
}
stop ()
{
    local pid; pid="$(cat "$tmp/$1.pid")"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    fail "server $1 did not stop"
}
uri () { echo "nbd+unix:///?socket=$tmp/$1.sock"; }

# refused WHAT HOLDER ARGS...: a second server must fail at start, in
# time, with one line naming the image and the holder's pid (HOLDER:
# one pid, or several as "P1|P2").
refused ()
{
    local what="$1" holder="$2" rc=0; shift 2
    timeout 20 nbdkit -U - "$@" --run 'exit 0' 2>"$tmp/err" || rc=$?
    [ $rc = 124 ] && fail "$what: the second server hung at start"
    [ $rc != 0 ] || fail "$what: the second server started on an image in use"
    grep -qE "emulate=$img: the image is in use by another server \(process ($holder), " "$tmp/err" ||
        { cat "$tmp/err"; fail "$what: no line naming the image and process $holder"; }
    [ "$(grep -c 'in use' "$tmp/err")" = 1 ] || { cat "$tmp/err"; fail "$what: not one line"; }
    echo "refused ($what): $(grep 'in use' "$tmp/err")"
}

# A new image: created by server a's first writer, then held.
start a -f zbd emulate="$img" $geom
a=$(cat "$tmp/a.pid")
"$PYTHON3" -c "
import sys; sys.path.insert(0, '$srcdir')
from zbd_helpers import *
h = connect('$(uri a)')
h.pwrite(pattern($M, 4096, 1), $M)
h.flush()
" || fail "server a: write"
refused "a second writer" "$a" zbd emulate="$img"
refused "a reader beside a writer" "$a" -r zbd emulate="$img"
stop a
# What a wrote and flushed is there; nobody wrote over it.
nbdkit -U - -r zbd emulate="$img" --run "\"$PYTHON3\" -c '
import sys; sys.path.insert(0, \"$srcdir\")
from zbd_helpers import *
h = connect(sys.argv[1])
check(wp(h, $M, $M) == $M + 4096, \"zone 1: WP of the flushed write\")
check(h.pread(4096, $M) == pattern($M, 4096, 1), \"zone 1: bytes of the flushed write\")
' \"\$uri\"" || fail "server a's flushed write"

# An existing image, a server that may write but has no writer yet: it
# holds the image from its start.
start b -f zbd emulate="$img"
refused "a writer beside an idle writer" "$(cat "$tmp/b.pid")" zbd emulate="$img"
stop b

# Readers share the image; a writer is refused while one reads.
start r1 -f -r zbd emulate="$img"
start r2 -f --readonly zbd emulate="$img"
start r3 -fr zbd emulate="$img"
for r in r1 r2 r3; do
    nbdinfo "$(uri $r)" > /dev/null || fail "reader $r does not serve"
done
refused "a writer beside readers" \
        "$(cat "$tmp/r1.pid")|$(cat "$tmp/r2.pid")|$(cat "$tmp/r3.pid")" \
        zbd emulate="$img"
stop r1; stop r2; stop r3

# A server that forked into the background: the pid named is the one
# serving (its pidfile), not the one that started.
start d zbd emulate="$img"
refused "a writer beside a daemon" "$(cat "$tmp/d.pid")" zbd emulate="$img"
stop d
# Once the holder is gone, the image is free again.
nbdkit -U - zbd emulate="$img" --run 'nbdinfo "$uri" > /dev/null' ||
    fail "the image is still refused after its server stopped"
echo "one server per image: ok"
