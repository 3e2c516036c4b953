#!/bin/bash -
# Build the test VM's initramfs from this machine's installed binaries,
# this build tree's plugin, filter and tools, and the kernel modules the
# tests need (with their dependencies).
#
#   build-initramfs.sh CACHE SRCDIR BUILDDIR SERIES
#
# SERIES is the kernel fetch-kernel.sh unpacked in CACHE/kernel-SERIES.
# Writes CACHE/initramfs-SERIES.img (cpio newc, gzip).  The image is rebuilt only
# when an input changed: the list of input files with their sizes and
# modification times is the stamp.
set -euo pipefail

cache="${1:?usage: build-initramfs.sh CACHE SRCDIR BUILDDIR SERIES}"
srcdir="${2:?}"
builddir="${3:?}"
series="${4:?}"
kdir="$cache/kernel-$series"
release=$(cat "$kdir/release")
out="$cache/initramfs-$series.img"

# Programs the guest runs, at their paths on this machine (the guest has
# the same layout, so nbdkit finds its own plugins where it expects).
PATH=$PATH:/usr/sbin:/sbin
guest_commands="busybox nbdkit nbd-client cryptsetup dmsetup blkzone blkdiscard
                nbdcopy nbdinfo dd timeout fio mkfs.btrfs btrfs mkfs.f2fs fsck.f2fs
                ip tc unshare nsenter"
nbdkit_plugins="memory file"
# The delay filter holds a server back in the attach cases.
nbdkit_filters="delay"
host_programs=
for c in $guest_commands; do
    p=$(command -v "$c") || {
        echo "build-initramfs: $c not found (run ./install-deps)" >&2; exit 1; }
    host_programs="$host_programs $(readlink -f "$p")"
done
plugindir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
for p in $nbdkit_plugins; do
    host_programs="$host_programs $plugindir/nbdkit-$p-plugin.so"
done
filterdir=$(nbdkit --dump-config | sed -n 's/^filterdir=//p')
for f in $nbdkit_filters; do
    host_programs="$host_programs $filterdir/nbdkit-$f-filter.so"
done

# This tree's modules and tools, installed in the guest under /opt/zoned.
# Each is optional here: the guest test fails loudly when one it needs is
# absent, which is clearer than a build error about a part not built yet.
tree_programs="
  plugin/.libs/nbdkit-zbd-plugin.so:lib/nbdkit-zbd-plugin.so
  filters/cryptinline/.libs/nbdkit-cryptinline-filter.so:lib/nbdkit-cryptinline-filter.so
  tools/.libs/nbdzone:bin/nbdzone
  tools/nbdzone:bin/nbdzone
  vm/.libs/zone-client:bin/zone-client
  vm/zone-client:bin/zone-client
"

# Kernel modules loaded at boot, in this order, each after its
# dependencies.  veth and sch_netem make the network between a client
# and a server in its own namespace (a link to take down, a round trip
# to lengthen).  Crypto modules first: dm-crypt asks for xts(aes) when a
# table is loaded, and nvme-core's T10 PI support for the CRC
# implementations, f2fs for crc32, and the guest has no udev to load
# them on demand.
modules="
  xts ecb aesni-intel af_alg algif_skcipher
  configfs null_blk nbd nvme dm-mod dm-crypt dm-flakey btrfs f2fs ext4
  sd_mod scsi_debug
  veth sch_netem
"
# Loaded where the kernel has them as modules: zoned ublk needs 6.6 or
# later, and Debian's 6.1 has no ublk_drv at all (the guest tests check
# that nbdzone attach says so there).  Linux 7.x builds the CRC
# libraries and the SIMD crypto glue into the kernel, so those are
# modules on 6.1 and 6.12 only.
optional_modules="
  ublk_drv
  crc64-rocksoft-generic crct10dif-generic crc32c-generic crc32c-intel crc32-generic
  crypto_simd cryptd
"

guest_files="init guest-tests.sh"
# Cases of nbdzone attach (zoned ublk), run by guest-tests.sh when present.
[ -f "$srcdir/vm/guest-attach.sh" ] && guest_files="$guest_files guest-attach.sh"
[ -f "$srcdir/vm/guest-reconnect.sh" ] && guest_files="$guest_files guest-reconnect.sh"
[ -f "$srcdir/vm/guest-recover.sh" ] && guest_files="$guest_files guest-recover.sh"
# The reboot case's two boots (zoned.reboot=write|check).
[ -f "$srcdir/vm/guest-reboot.sh" ] && guest_files="$guest_files guest-reboot.sh"
# The benchmark (zoned.bench=1 on the kernel command line runs it).
[ -f "$srcdir/vm/guest-bench.sh" ] && guest_files="$guest_files guest-bench.sh"
# The network round-trip benchmark (zoned.bench=rtt).
[ -f "$srcdir/vm/guest-bench-rtt.sh" ] && guest_files="$guest_files guest-bench-rtt.sh"

# Is a file an ELF object (and not a libtool wrapper script)?
is_elf () { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

inputs=()
for p in $host_programs; do
    [ -e "$p" ] || { echo "build-initramfs: $p is missing (./install-deps)" >&2; exit 1; }
    inputs+=("$p")
done
declare -A tree_dest=()
for e in $tree_programs; do
    src="$builddir/${e%%:*}" dest="${e#*:}"
    [ -n "${tree_dest[$dest]:-}" ] && continue
    if [ -f "$src" ] && is_elf "$src"; then
        tree_dest[$dest]="$src"
        inputs+=("$src")
    fi
done
for f in $guest_files; do inputs+=("$srcdir/vm/$f"); done
inputs+=("$kdir/stamp" "$0")

# Shared-library closure of every ELF input.
libs=$(for p in "${inputs[@]}"; do
           if is_elf "$p"; then
               ldd "$p" 2>/dev/null | awk '/=> \// { print $3 } /^\t\// { print $1 }'
           fi
       done | sort -u)

# Module files in load order: for each module, its dependencies (which
# modules.dep lists last-needed-first) then itself.
modpath=$(
    for m in $optional_modules $modules; do
        pattern="/${m//[-_]/[-_]}\\.ko(\\.[a-z]+)?:"
        line=$(grep -E "$pattern" "$kdir/modules/modules.dep" || :)
        if [ -z "$line" ]; then
            # Built into this kernel: nothing to load.
            grep -qE "/${m//[-_]/[-_]}\\.ko\$" "$kdir/modules/modules.builtin" && continue
            case " $(echo $optional_modules) " in *" $m "*) continue ;; esac
            echo "build-initramfs: no module $m in $release" >&2
            exit 1
        fi
        deps=${line#*:}
        for d in $(echo $deps | tr ' ' '\n' | tac); do echo "$d"; done
        echo "${line%%:*}"
    done | awk '!seen[$0]++')
for m in $modpath; do inputs+=("$kdir/modules/$m"); done

stamp=$(for f in "${inputs[@]}" $libs; do stat -L -c '%n %s %Y' "$f"; done)
if [ -f "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$stamp" ]; then
    exit 0
fi

echo "build-initramfs: building $out"
stage="$cache/initramfs.d"
rm -rf "$stage"
mkdir -p "$stage"/{usr/bin,usr/sbin,usr/lib64,proc,sys,dev,tmp,run,mnt,etc} \
         "$stage/opt/zoned/bin" "$stage/opt/zoned/lib"
# Debian's merged /usr layout.
ln -s usr/bin "$stage/bin"; ln -s usr/sbin "$stage/sbin"
ln -s usr/lib "$stage/lib"; ln -s usr/lib64 "$stage/lib64"

copy () { mkdir -p "$stage$(dirname "$2")"; cp -L "$1" "$stage$2"; }
for p in $host_programs $libs; do copy "$p" "$p"; done
for dest in "${!tree_dest[@]}"; do copy "${tree_dest[$dest]}" "/opt/zoned/$dest"; done
strip --strip-unneeded "$stage"/opt/zoned/*/* 2>/dev/null || :

# busybox provides every command the real programs above do not.
for applet in $(busybox --list); do
    for d in usr/bin usr/sbin; do
        [ -e "$stage/$d/$applet" ] && continue 2
    done
    ln -s busybox "$stage/usr/bin/$applet"
done

mdir="/usr/lib/modules/$release"
: > "$stage/etc/modules-load"
for m in $modpath; do
    copy "$kdir/modules/$m" "$mdir/$m"
    # Uncompressed, so that busybox insmod hands the kernel an ELF file
    # whatever compression the kernel package uses (.ko.xz on 6.12 and 7.x).
    case $m in
        *.xz) xz -d "$stage$mdir/$m"; m=${m%.xz} ;;
        *.zst) zstd -q -d --rm "$stage$mdir/$m"; m=${m%.zst} ;;
    esac
    echo "$mdir/$m" >> "$stage/etc/modules-load"
done
cp "$kdir/modules"/modules.{order,builtin,builtin.modinfo} "$stage$mdir/" 2>/dev/null || :
depmod -b "$stage" "$release"

install -m 0755 "$srcdir/vm/init" "$stage/init"
for f in $guest_files; do
    [ "$f" = init ] || install -m 0755 "$srcdir/vm/$f" "$stage/$f"
done
echo "$release" > "$stage/etc/kernel-release"

( cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet ) |
    gzip -1 > "$out.tmp"
mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"
echo "build-initramfs: $(du -h "$out" | cut -f1) $out"
