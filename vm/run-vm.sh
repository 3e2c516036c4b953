#!/bin/bash -
# One boot of the test VM (check-vm.sh runs one per kernel): boot one of
# Debian's kernels under QEMU with this tree's initramfs, run the guest
# tests on real kernel zoned devices (null_blk, NVMe ZNS), and turn the
# guest's TAP lines into a pass or a failure.
#
#   run-vm.sh SRCDIR BUILDDIR stable|backports|newest
#
# Environment:
#   VM_ACCEL=auto|tcg|kvm  accelerator (default auto: KVM only when a
#                          probe boot under KVM finishes in VM_PROBE_TIMEOUT)
#   VM_TIMEOUT=SECONDS     the whole guest run (default 1800)
#   VM_PROBE_TIMEOUT=SECONDS  the KVM probe boot (default 30)
#   VM_CASES="PATTERN..."  run only guest cases whose name matches one of
#                          these shell patterns (default: all)
#   VM_BENCH=1             run the benchmark (guest-bench.sh) instead of
#                          the tests; its outputs go to BUILDDIR/vm/bench-SERIES
#   VM_BENCH=rtt           the network round-trip benchmark
#                          (guest-bench-rtt.sh) instead; its outputs go
#                          to BUILDDIR/vm/bench-rtt-SERIES
#   VM_BENCH_RUNS=N        the benchmark's runs per configuration (default 3)
#
# Outputs in BUILDDIR/vm/SERIES: console.log (the guest's whole serial
# console), tap.log (the guest's TAP lines), test-suite.log (the verdict,
# failing lines and the console's tail).
set -euo pipefail

srcdir="${1:?usage: run-vm.sh SRCDIR BUILDDIR stable|backports|newest}"
builddir="${2:?}"
series="${3:?usage: run-vm.sh SRCDIR BUILDDIR stable|backports|newest}"
vmdir="$builddir/vm"
cache="$vmdir/cache"
bench="${VM_BENCH:-}"
outdir="$vmdir/$series"
[ "$bench" = 1 ] && outdir="$vmdir/bench-$series"
[ "$bench" = rtt ] && outdir="$vmdir/bench-rtt-$series"
console="$outdir/console.log"
taplog="$outdir/tap.log"
suitelog="$outdir/test-suite.log"
accel="${VM_ACCEL:-auto}"
vm_timeout="${VM_TIMEOUT:-1800}"
probe_timeout="${VM_PROBE_TIMEOUT:-30}"

mkdir -p "$cache" "$outdir"
rm -f "$console" "$taplog" "$suitelog"
started=$(date +%s)

for tool in qemu-system-x86_64 timeout cpio gzip depmod apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || {
        echo "check-vm: $tool not found (run ./install-deps)" >&2; exit 1; }
done

"$srcdir/vm/fetch-kernel.sh" "$cache" "$series"
"$srcdir/vm/build-initramfs.sh" "$cache" "$srcdir" "$builddir" "$series"

# The NVMe ZNS namespace's backing store: fresh for every run, so zone
# states never leak from one run into the next.  QEMU keeps the zone
# state in memory only (no zoned.zone_state file), so all zones start empty.
zns_img="$cache/zns-$series.img"
rm -f "$zns_img"
truncate -s 128M "$zns_img"

kernel="$cache/kernel-$series/vmlinuz"
initrd="$cache/initramfs-$series.img"
append="console=ttyS0 panic=-1 loglevel=4 quiet"

# qemu ARGS... : QEMU with what every boot needs.
qemu_base=(qemu-system-x86_64 -nographic -no-reboot -nodefaults
           -m 2G -smp 2 -kernel "$kernel" -initrd "$initrd"
           -nic none -serial stdio)

accel_args=(-accel tcg -cpu max)
if [ "$accel" = auto ] || [ "$accel" = kvm ]; then
    if [ -w /dev/kvm ] &&
       timeout -k 5 "$probe_timeout" "${qemu_base[@]}" -accel kvm -cpu host \
           -append "$append zoned.probe=1" </dev/null 2>&1 |
           grep -q ZONED-VM-PROBE-OK; then
        accel_args=(-accel kvm -cpu host)
        echo "check-vm: KVM probe booted within ${probe_timeout}s: using KVM"
    elif [ "$accel" = kvm ]; then
        echo "check-vm: VM_ACCEL=kvm but the KVM probe did not boot within ${probe_timeout}s" >&2
        exit 1
    else
        echo "check-vm: KVM not usable here (no /dev/kvm or the probe did not boot): using TCG"
    fi
fi

cases="${VM_CASES:-}"
[ -n "$cases" ] && append="$append zoned.cases=$(echo "$cases" | tr ' ' ,)"
[ -n "$bench" ] && append="$append zoned.bench=$bench zoned.bench_runs=${VM_BENCH_RUNS:-3}"

echo "check-vm: booting $(cat "$cache/kernel-$series/release") (${accel_args[1]}); console: $console; timeout ${vm_timeout}s"
boot_tests ()
{
    status=0
    timeout -k 10 "$vm_timeout" "${qemu_base[@]}" "${accel_args[@]}" \
        -append "$append" \
        -chardev "file,id=tap,path=$taplog" -device isa-serial,chardev=tap \
        -device nvme,id=nvme0,serial=zns0 \
        -drive "file=$zns_img,id=zns,if=none,format=raw,cache=unsafe" \
        -device nvme-ns,drive=zns,bus=nvme0,nsid=1,logical_block_size=4096,physical_block_size=4096,zoned=true,zoned.zone_size=16M,zoned.zone_capacity=12M,zoned.max_open=4,zoned.max_active=6 \
        </dev/null >"$1" 2>&1 || status=$?
}
boot_tests "$console"
# Under TCG a kernel may die while it boots, before the guest's init
# runs a thing (an int3 of the kernel's own code patching, seen with
# 7.x): nothing of the product ran yet, so boot once more, and say so.
# A panic after init started is the tests' to report.
if [ ! -s "$taplog" ] && grep -q 'Kernel panic' "$console"; then
    echo "check-vm: the kernel panicked while booting, before any test ran (see $console.first); booting again"
    mv "$console" "$console.first"
    boot_tests "$console"
fi
elapsed=$(( $(date +%s) - started ))

# Serial lines end in CR LF.
tr -d '\r' < "${taplog}" > "$taplog.tmp" 2>/dev/null && mv "$taplog.tmp" "$taplog" || : > "$taplog"

# The reboot case, on the newest kernel: two more boots sharing one
# persistent disk (a second NVMe controller, not zoned, on a file that
# outlives the guest).  The first writes to the emulated image on it and
# powers off without syncing; the second checks what survived
# (guest-reboot.sh).  Its TAP line joins this kernel's results.
reboot_wanted ()
{
    local p
    [ "$series" = newest ] && [ -z "$bench" ] && [ $status -eq 0 ] || return 1
    [ -z "$cases" ] && return 0
    set -f
    for p in $cases; do
        case reboot in $p) set +f; return 0 ;; esac
    done
    set +f
    return 1
}
# reboot_boot PHASE TAPFILE [APPEND...]: one boot of the reboot case.
reboot_boot ()
{
    local phase=$1 tap=$2
    shift 2
    echo "==== reboot case, boot: $phase" >> "$console"
    timeout -k 10 600 "${qemu_base[@]}" "${accel_args[@]}" \
        -append "$append zoned.reboot=$phase $*" \
        -chardev "file,id=tap,path=$tap" -device isa-serial,chardev=tap \
        -device nvme,id=nvme1,serial=persist0 \
        -drive "file=$persist_img,id=persist,if=none,format=raw,cache=writeback" \
        -device nvme-ns,drive=persist,bus=nvme1,nsid=1 \
        </dev/null >>"$console" 2>&1 || echo "check-vm: the reboot case's $phase boot exited with $?" >> "$console"
    tr -d '\r' < "$tap" > "$tap.tmp" 2>/dev/null && mv "$tap.tmp" "$tap" || : > "$tap"
}
if reboot_wanted; then
    persist_img="$cache/persist-$series.img"
    rm -f "$persist_img"
    truncate -s 1G "$persist_img"
    reboot_boot write "$outdir/reboot-write.tap"
    expect=$(awk '$1 == "reboot-flushed" { f[$2] = $3 } $1 == "reboot-written" { w[$2] = $3 }
                  END { for (z in f) if (z in w) printf "%s%s:%s:%s", (n++ ? "," : ""), z, f[z], w[z] }' \
                 "$outdir/reboot-write.tap")
    reboot_name="reboot: flushed writes and write pointers of the emulated image survive a power-off"
    n=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' "$taplog" | tail -n 1)
    n=${n:-0}
    grep -v '^1\.\.' "$taplog" > "$taplog.tmp" || :
    if grep -q '^not ok' "$outdir/reboot-write.tap" || ! grep -q '^reboot-poweroff' "$outdir/reboot-write.tap"; then
        echo "not ok $((n + 1)) - $reboot_name (the first boot did not reach the power-off)" >> "$taplog.tmp"
        sed 's/^/# /' "$outdir/reboot-write.tap" >> "$taplog.tmp"
    else
        reboot_boot check "$outdir/reboot-check.tap" "zoned.expect=$expect"
        if grep -qE '^(not )?ok 1 ' "$outdir/reboot-check.tap"; then
            grep -E '^(not )?ok 1 ' "$outdir/reboot-check.tap" | head -n 1 |
                sed "s/^\(not \)\{0,1\}ok 1 /\1ok $((n + 1)) /" >> "$taplog.tmp"
        else
            echo "not ok $((n + 1)) - $reboot_name (the second boot reported no result)" >> "$taplog.tmp"
        fi
    fi
    echo "1..$((n + 1))" >> "$taplog.tmp"
    mv "$taplog.tmp" "$taplog"
    rm -f "$persist_img"
fi

verdict ()
{
    local why=$1
    {
        echo "check-vm: $(cat "$cache/kernel-$series/release"): $why"
        echo "check-vm: ${elapsed}s, accelerator ${accel_args[1]}"
        echo
        echo "---- TAP"
        cat "$taplog"
        echo
        echo "---- failing"
        grep -E '^not ok' "$taplog" || echo "(none)"
        echo
        echo "---- last 80 lines of $console"
        tail -n 80 "$console" | tr -d '\r'
    } > "$suitelog"
}

if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    verdict "FAIL: the VM did not finish within ${vm_timeout}s"
    cat "$suitelog" >&2; exit 1
fi
if [ $status -ne 0 ]; then
    verdict "FAIL: qemu exited with status $status"
    cat "$suitelog" >&2; exit 1
fi

planned=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' "$taplog" | tail -n 1)
passed=$(grep -cE '^ok [0-9]+' "$taplog" || :)
failed=$(grep -cE '^not ok [0-9]+' "$taplog" || :)
grep -E '^(not )?ok [0-9]+' "$taplog"

if [ -z "$planned" ]; then
    verdict "FAIL: the guest printed no TAP plan (it stopped early)"
elif [ $((passed + failed)) -ne "$planned" ]; then
    verdict "FAIL: plan 1..$planned but $((passed + failed)) results"
elif [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
    verdict "FAIL: $failed of $planned guest tests failed"
else
    verdict "PASS: $passed of $planned guest tests passed"
    echo "check-vm: $series kernel: PASS: $passed of $planned guest tests passed in ${elapsed}s"
    exit 0
fi
cat "$suitelog" >&2
exit 1
