#!/bin/bash -
# make check-vm: the guest tests on each of the Debian kernels in turn,
# one VM boot each (run-vm.sh), then one verdict over all of them.
#
#   check-vm.sh SRCDIR BUILDDIR
#
# Environment: VM_KERNELS="stable backports newest" (the default)
# chooses the kernels: stable is Debian 12's own (6.1), backports its backports
# kernel (6.12: zone write plugging, zoned ublk for nbdzone attach),
# newest Debian 13's backports kernel (7.x, the newest users run).
# The other VM_* variables are run-vm.sh's.
#
# Outputs in BUILDDIR/vm: SERIES/{console,tap,test-suite}.log for each
# kernel, and over all kernels tap.log (every TAP line, numbered anew,
# each test name prefixed with its kernel, e.g. "[6.12]"), console.log
# and test-suite.log (each kernel's, one after the other).
set -uo pipefail

srcdir="${1:?usage: check-vm.sh SRCDIR BUILDDIR}"
builddir="${2:?}"
vmdir="$builddir/vm"
kernels="${VM_KERNELS:-stable backports newest}"

rm -f "$vmdir/tap.log" "$vmdir/console.log" "$vmdir/test-suite.log"
status=0
for series in $kernels; do
    "$srcdir/vm/run-vm.sh" "$srcdir" "$builddir" "$series" || status=1
done

n=0
for series in $kernels; do
    out="$vmdir/$series"
    release=$(cat "$vmdir/cache/kernel-$series/release" 2>/dev/null || echo "$series")
    short=$(echo "$release" | sed 's/^\([0-9]*\.[0-9]*\).*/\1/')
    # Renumber and tag each result; "#" lines (a failure's output) follow
    # their result unchanged.  A kernel whose run printed nothing still
    # counts, as a failure.
    if ! grep -qE '^(not )?ok [0-9]' "$out/tap.log" 2>/dev/null; then
        n=$((n + 1))
        echo "not ok $n - [$short] the $series kernel's VM run reported no result"
    else
        awk -v n=$n -v tag="[$short]" '
            /^(not )?ok [0-9]+/ {
                n++; sub(/^ok [0-9]+ - /, "ok " n " - " tag " ");
                sub(/^not ok [0-9]+ - /, "not ok " n " - " tag " ");
                print; next }
            /^#/ { print }
            END { print n > "/dev/stderr" }' "$out/tap.log" 2>"$vmdir/.n"
        n=$(cat "$vmdir/.n")
    fi
    { echo "======== $release"; cat "$out/console.log" 2>/dev/null; } >> "$vmdir/console.log"
    { cat "$out/test-suite.log" 2>/dev/null || echo "check-vm: $series: no verdict"; echo; } \
        >> "$vmdir/test-suite.log"
done > "$vmdir/tap.log.tmp"
rm -f "$vmdir/.n"
echo "1..$n" >> "$vmdir/tap.log.tmp"
mv "$vmdir/tap.log.tmp" "$vmdir/tap.log"

passed=$(grep -cE '^ok [0-9]+' "$vmdir/tap.log" || :)
failed=$(grep -cE '^not ok [0-9]+' "$vmdir/tap.log" || :)
if [ $status -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
    echo "check-vm: PASS: $passed of $n guest tests passed on the kernels: $kernels"
    exit 0
fi
echo "check-vm: FAIL: $failed of $n guest tests failed (kernels: $kernels); see $vmdir/test-suite.log" >&2
exit 1
