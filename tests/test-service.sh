#!/usr/bin/env bash
# The systemd units (systemd/): systemd-analyze verify finds nothing to
# say about them, alone or with the example drop-ins; and the service's
# own ExecStart= line, with the shipped /etc/default file (its image
# moved into a temporary state directory) and a generated key in a
# credentials directory for %d, serves when started as systemd would
# start it: socket-activated (systemd-socket-activate), as an
# unprivileged user with no capabilities, under the unit's LimitMEMLOCK
# and UMask.  What a client writes reads back, the key is locked in RAM,
# and the image holds the AES-XTS ciphertext of what was written; and
# every system call the server makes meanwhile (strace) is one the
# unit's SystemCallFilter= lets through.  The shelf drop-in's ExecStart=
# serves two drives with the keys of its one credentials directory.
source "$srcdir/functions.sh"
# Missing tools fail the test (requires): a package whose units were
# never verified must not pass.
requires systemd-analyze --version
requires systemd-socket-activate --version
requires nbdsh --version
requires "$PYTHON3" -c 'import nbd, cryptography'
requires strace -V

units="$top_srcdir/systemd"
service="$units/nbdkit-zoned.service"
socket="$units/nbdkit-zoned.socket"
defaults="$units/nbdkit-zoned.default"

tmp="$(mktemp -d)"
cleanup_fn rm -rf "$tmp"

# ---- systemd-analyze verify ----------------------------------------------
# Copies under their own names in a directory of their own, so verify
# sees the service the socket activates; --man=no, as the manual pages
# are not installed yet (tests/check-package.sh verifies the installed
# units with them).  Any line it prints is a finding: it exits 0 on
# unknown keys.
verify ()
{
    local out status=0
    out="$(systemd-analyze verify --man=no "$tmp/units/nbdkit-zoned.socket" \
             "$tmp/units/nbdkit-zoned.service" 2>&1)" || status=$?
    if [ $status -ne 0 ] || [ -n "$out" ]; then
        echo "$out"
        fail "systemd-analyze verify $1: status $status"
    fi
}
mkdir "$tmp/units"
cp "$service" "$socket" "$tmp/units/"
verify "(the units)"
mkdir "$tmp/units/nbdkit-zoned.service.d"
cp "$units/encrypted-key.conf" "$units/tls.conf" "$tmp/units/nbdkit-zoned.service.d/"
verify "(with the example drop-ins)"
rm "$tmp/units/nbdkit-zoned.service.d/"*
cp "$units/shelf.conf" "$tmp/units/nbdkit-zoned.service.d/"
verify "(with the shelf drop-in)"
echo "systemd-analyze verify: clean"

# ---- The unit's settings the test must honour ----------------------------
# KEY: the value of KEY= in the [Service] section (one line, or fail).
setting ()
{
    local v
    v="$(sed -n "s/^$1=//p" "$service")"
    [ -n "$v" ] && [ "$(wc -l <<<"$v")" = 1 ] ||
        fail "$service: expected one $1= line, found: ${v:-none}"
    echo "$v"
}
exec_start="$(setting ExecStart)"
credential="$(setting LoadCredential)"
cred_id="${credential%%:*}"
memlock="$(setting LimitMEMLOCK)"
umask_unit="$(setting UMask)"
[ "$(setting EnvironmentFile)" = /etc/default/nbdkit-zoned ] ||
    fail "the service does not read /etc/default/nbdkit-zoned"
[ "$(setting StateDirectory)" = nbdkit-zoned ] ||
    fail "the service's state directory is not /var/lib/nbdkit-zoned"
grep -qxF "DynamicUser=yes" "$service" || fail "the service runs as root"
grep -qxF "CapabilityBoundingSet=" "$service" ||
    fail "the test runs the server without capabilities; the unit grants some"
case "$exec_start" in
    *"crypt-key-file=%d/$cred_id "*) ;;
    *) fail "ExecStart does not read the key from credential $cred_id: $exec_start" ;;
esac
case "$memlock" in
    *M) memlock_kib=$(( ${memlock%M} * 1024 )) ;;
    *K) memlock_kib=${memlock%K} ;;
    *) fail "LimitMEMLOCK=$memlock: the test reads a value in K or M only" ;;
esac

# ---- The environment file, as systemd reads it ----------------------------
# NAME="VALUE" or NAME=VALUE lines, # comments; the shipped image path
# moves into the temporary state directory.
state="$tmp/state"
declare -A env
while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    [[ "$line" =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]] ||
        fail "$defaults: not a NAME=VALUE line: $line"
    name="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
    if [[ "$value" =~ ^\"(.*)\"$ ]]; then value="${BASH_REMATCH[1]}"; fi
    case "$value" in *'$'*|*'"'*|*"'"*|*'\'*)
        fail "$defaults: $name: quoting or \$ the test does not read as systemd does" ;;
    esac
    env[$name]="${value//\/var\/lib\/nbdkit-zoned\//$state/}"
done < "$defaults"
[[ "${env[ZBD_ARGS]:-}" == "emulate=$state/"* ]] ||
    fail "the shipped configuration does not serve an emulated image in the state directory: ${env[ZBD_ARGS]:-}"

# ---- ExecStart, expanded as systemd does it -------------------------------
# $NAME alone is the value split at spaces (zero words if empty), %d the
# credentials directory; anything else that systemd would expand is
# refused, so the test cannot run a command other than the unit's.
# expand_exec_start LINE CREDS: LINE expanded into cmd, with CREDS as
# %d.  This tree's wrapper stands in for the system nbdkit, with this
# build's filter and plugin.
expand_exec_start ()
{
    local w name vals words
    cmd=()
    read -r -a words <<<"$1"
    for w in "${words[@]}"; do
        if [[ "$w" =~ ^\$([A-Z_][A-Z0-9_]*)$ ]]; then
            name="${BASH_REMATCH[1]}"
            [ -n "${env[$name]+set}" ] || fail "ExecStart uses \$$name, which $defaults does not set"
            read -r -a vals <<<"${env[$name]}"
            cmd+=("${vals[@]}")
            continue
        fi
        case "$w" in *'$'*|*'%'[!d]*|*'%') fail "ExecStart word the test cannot expand: $w" ;; esac
        cmd+=("${w//%d/$2}")
    done
    [ "${cmd[0]}" = /usr/bin/nbdkit ] || fail "ExecStart does not run /usr/bin/nbdkit: ${cmd[0]}"
    cmd[0]="$top_builddir/nbdkit"
    echo "ExecStart: ${cmd[*]}"
}
creds="$tmp/creds"
expand_exec_start "$exec_start" "$creds"

# ---- Start it as systemd would --------------------------------------------
# The credentials directory holds a copy of the key, readable by the
# service's user only; the state directory is the user's.  As root the
# server runs as nobody with an empty bounding set; the tree must be
# reachable by nobody (as for the other unprivileged tests).
mkdir "$creds" "$state"
key="$tmp/drive.key"
(umask 077; head -c 64 /dev/urandom > "$key")
cp "$key" "$creds/$cred_id"
chmod 0400 "$creds/$cred_id"
chmod 0500 "$creds"
chmod 0700 "$state"
sock="$tmp/nbd.sock"
uri="nbd+unix:///?socket=$sock"
# The limits are set first, while root may still raise them (systemd
# sets them before it drops privileges too).  Where even root may not
# raise the hard limit (no CAP_SYS_RESOURCE), the lower hard limit is
# the stricter test.
hard_kib="$(ulimit -H -l)"
if [ "$hard_kib" != unlimited ] && [ "$hard_kib" -lt "$memlock_kib" ]; then
    echo "LimitMEMLOCK=$memlock is above this machine's hard limit: testing under $hard_kib KiB"
    memlock_kib=$hard_kib
fi
limits="ulimit -l $memlock_kib; umask $umask_unit; exec \"\$0\" \"\$@\""
if [ "$(id -u)" = 0 ]; then
    requires setpriv --version
    chmod 755 "$tmp"
    chown -R nobody:nogroup "$creds" "$state"
    as_service=(setpriv --reuid=nobody --regid=nogroup --clear-groups
                --inh-caps=-all --bounding-set=-all --no-new-privs)
else
    as_service=()
fi
server=
cleanup_fn 'if [ -n "$server" ]; then kill $server 2>/dev/null; wait $server; fi'
# start [strace]: with strace, the server's system calls go to
# $tmp/trace; -D keeps the server's process id, which LISTEN_PID names.
start ()
{
    local i tracer=()
    [ "${1:-}" = strace ] && tracer=(strace -D -f -qq -o "$tmp/trace")
    rm -f "$sock"
    systemd-socket-activate -l "$sock" bash -c "$limits" \
        "${tracer[@]}" "${as_service[@]}" "${cmd[@]}" > "$tmp/server.log" 2>&1 &
    server=$!
    for ((i = 0; i < 100; i++)); do
        [ -S "$sock" ] && return 0
        kill -0 $server 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/server.log"
    fail "systemd-socket-activate did not listen"
}
stop ()
{
    kill $server
    wait $server || [ $? = 143 ] || { cat "$tmp/server.log"; fail "the server ended badly"; }
    server=
}

# Zone 2 (the first sequential zone, at 128 MiB with the shipped 64 MiB
# zones and 2 conventional ones) and conventional zone 0, 64 KiB each.
start strace
"$PYTHON3" - "$uri" "$srcdir" <<'EOS' || { cat "$tmp/server.log"; fail "write and read back through the service"; }
import sys
sys.path.insert(0, sys.argv[2])
from cryptinline_check import plaintext, fail
from zbd_helpers import connect
h = connect(sys.argv[1])
if "zoned=host-managed" not in h.get_export_description():
    fail("not a host-managed zoned export: %r" % h.get_export_description())
for seed, off in ((1, 0), (2, 128 << 20)):
    h.pwrite(plaintext(seed, 65536), off)
h.flush()
for seed, off in ((1, 0), (2, 128 << 20)):
    if h.pread(65536, off) != plaintext(seed, 65536):
        fail("offset %d does not read back what was written" % off)
h.shutdown()
EOS
# The key (and each thread's cipher handle) is locked into RAM by the
# unprivileged server within the unit's limit: LimitMEMLOCK is enough.
locked="$(awk '/^VmLck:/ { print $2 }' /proc/$server/status)"
echo "server: VmLck $locked kB, limit $memlock_kib kB"
[ "${locked:-0}" -gt 0 ] || fail "the server locked no key memory under LimitMEMLOCK=$memlock"
stop
grep -E 'error|cannot' "$tmp/server.log" && fail "the server logged an error"

# The system calls from the server's start on (those of setpriv before
# it are not the service's), against the unit's filter: its allow lists
# less its ~deny lists, groups expanded by systemd-analyze itself.
# SystemCallErrorNumber=EPERM would turn a miss into a quiet EPERM.
systemd-analyze syscall-filter > "$tmp/groups"
grep '^SystemCallFilter=' "$service" > "$tmp/filter"
awk -v exe="execve(\"$top_builddir/nbdkit\"" \
    'index($0, exe) { on = 1 } on' "$tmp/trace" > "$tmp/trace.server"
[ -s "$tmp/trace.server" ] || fail "strace saw no server start"
"$PYTHON3" - "$tmp/groups" "$tmp/filter" "$tmp/trace.server" <<'EOS' || fail "the server makes system calls the unit's SystemCallFilter refuses"
import re, sys
groups, cur = {}, None
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("@"):
        if cur is None:
            cur = groups.setdefault(line, [])
        else:
            cur.append(line)
    elif not line:
        cur = None
    elif not line.startswith("#") and cur is not None:
        cur.append(line)
def expand(item, seen=()):
    if not item.startswith("@"):
        return {item}
    if item not in groups:
        sys.exit("unknown syscall group %s" % item)
    out = set()
    for x in groups[item]:
        if x not in seen:
            out |= expand(x, seen + (item,))
    return out
allow, deny = set(), set()
for line in open(sys.argv[2]):
    v = line.strip().split("=", 1)[1]
    target = allow
    if v.startswith("~"):
        target, v = deny, v[1:]
    for item in v.split():
        target |= expand(item)
used = set()
for line in open(sys.argv[3]):
    m = re.match(r"\d+ +(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
    if m:
        used.add(m.group(1))
bad = sorted(x for x in used if x not in allow or x in deny)
print("server system calls: %d, all allowed: %s" % (len(used), not bad))
if bad:
    sys.exit("refused by SystemCallFilter=: " + " ".join(bad))
EOS

# check_ciphertext IMAGE KEY SEED:OFFSET...: the emulated image holds,
# at each OFFSET of its data, the aes-xts-plain64 ciphertext (KEY, 4096
# byte sectors) of the 64 KiB of plaintext(SEED) a client wrote there.
check_ciphertext ()
{
    "$PYTHON3" - "$@" <<'EOS'
import struct, sys
sys.path.insert(0, __import__("os").environ["srcdir"])
from cryptinline_check import plaintext, xts, fail
key = open(sys.argv[2], "rb").read()
with open(sys.argv[1], "rb") as f:
    data_offset = struct.unpack("<Q", f.read(88)[80:88])[0]
    for seed, off in (map(int, a.split(":")) for a in sys.argv[3:]):
        f.seek(data_offset + off)
        raw = f.read(65536)
        plain = plaintext(seed, 65536)
        if raw == plain:
            fail("plaintext at offset %d of the image" % off)
        if raw != xts(key, 4096, 0, False, off, True, plain):
            fail("offset %d of the image is not aes-xts-plain64 of the data" % off)
EOS
}
img="${env[ZBD_ARGS]#emulate=}"
img="${img%% *}"
[ -f "$img" ] || fail "no image at $img"
[ "$(stat -c %a "$img")" = 600 ] || fail "the image is not private to the service's user: $(stat -c %a "$img")"
check_ciphertext "$img" "$key" 1:0 2:$((128 << 20)) ||
    fail "the image does not hold the ciphertext"

# Restarted (as Restart= or a reboot would), it serves the same data.
start
nbdsh -u "$uri" -c "import sys; sys.path.insert(0, '$srcdir'); from cryptinline_check import plaintext" \
      -c "assert h.pread(65536, 128 << 20) == plaintext(2, 65536), 'data lost across a restart'" ||
    { cat "$tmp/server.log"; fail "the restarted service"; }
stop
echo "the service's ExecStart serves an encrypted zoned image"

# ---- The shelf drop-in's ExecStart= -----------------------------------------
# Its one LoadCredential=ID:DIR line loaded as systemd loads a directory
# (each file F of DIR becomes the credential ID_F), two zone images in
# place of the drive links of /etc/nbdkit-zoned/drives: each export is
# served, reads back, and holds the ciphertext of its own key.
shelf="$units/shelf.conf"
shelf_setting ()
{
    local v
    v="$(sed -n "s/^$1=\(..*\)$/\1/p" "$shelf")"
    [ -n "$v" ] && [ "$(wc -l <<<"$v")" = 1 ] ||
        fail "$shelf: expected one non-empty $1= line, found: ${v:-none}"
    echo "$v"
}
shelf_cred="$(shelf_setting LoadCredential)"
[ "${shelf_cred#*:}" = /etc/nbdkit-zoned/keys ] ||
    fail "$shelf: the keys are not loaded from /etc/nbdkit-zoned/keys: $shelf_cred"
shelf_exec="$(shelf_setting ExecStart)"
case "$shelf_exec" in
    *" dir=/etc/nbdkit-zoned/drives "*) ;;
    *) fail "$shelf: ExecStart does not serve /etc/nbdkit-zoned/drives: $shelf_exec" ;;
esac
drives="$tmp/drives" keys="$tmp/keys" creds="$tmp/shelf-creds"
mkdir "$drives" "$keys" "$creds"
for n in smr0 smr1; do
    "$top_builddir/nbdkit" -U - zbd emulate="$drives/$n" size=8M zone-size=1M \
        --run 'nbdinfo "$uri" >/dev/null' || fail "cannot make image $n"
    (umask 077; head -c 64 /dev/urandom > "$keys/$n")
done
for f in "$keys"/*; do
    cp "$f" "$creds/${shelf_cred%%:*}_${f##*/}"
done
chmod 0400 "$creds"/*
chmod 0500 "$creds"
expand_exec_start "${shelf_exec// dir=\/etc\/nbdkit-zoned\/drives / dir=$drives }" "$creds"
if [ "$(id -u)" = 0 ]; then
    chown -R nobody:nogroup "$creds" "$drives"
fi
start
"$PYTHON3" - "nbd+unix:///{}?socket=$sock" "$srcdir" <<'EOS' || { cat "$tmp/server.log"; fail "write and read back through the shelf"; }
import sys
sys.path.insert(0, sys.argv[2])
from cryptinline_check import plaintext, fail
from zbd_helpers import connect
for seed, name in ((3, "smr0"), (4, "smr1")):
    h = connect(sys.argv[1].format(name))
    if "zoned=host-managed" not in h.get_export_description():
        fail("%s: not a host-managed zoned export" % name)
    h.pwrite(plaintext(seed, 65536), 1 << 20)
    h.flush()
    if h.pread(65536, 1 << 20) != plaintext(seed, 65536):
        fail("%s does not read back what was written" % name)
    h.shutdown()
EOS
stop
grep -E 'error|cannot' "$tmp/server.log" && fail "the shelf logged an error"
check_ciphertext "$drives/smr0" "$keys/smr0" 3:$((1 << 20)) &&
    check_ciphertext "$drives/smr1" "$keys/smr1" 4:$((1 << 20)) ||
    fail "a drive of the shelf does not hold the ciphertext of its own key"
echo "the shelf drop-in's ExecStart serves each drive with its own key"
