#!/usr/bin/env bash
# make install puts the filter and the plugin in nbdkit's own directories
# (so that nbdkit finds them by short name), nbdzone in bindir and the
# manual pages in man1; the installed modules load and serve.
source "$srcdir/functions.sh"
requires pkg-config --exists nbdkit

destdir="$(mktemp -d)"
cleanup_fn rm -rf "$destdir"

make -C "$top_builddir" install DESTDIR="$destdir" >"$destdir.log" 2>&1 ||
    { cat "$destdir.log"; fail "make install DESTDIR=... failed"; }
cleanup_fn rm -f "$destdir.log"

filterdir="$(pkg-config --variable=filterdir nbdkit)"
plugindir="$(pkg-config --variable=plugindir nbdkit)"
filter="$destdir$filterdir/nbdkit-cryptinline-filter.so"
plugin="$destdir$plugindir/nbdkit-zbd-plugin.so"

for f in "$filter" "$plugin"; do
    [ -f "$f" ] || fail "make install did not install $f"
done
# Only the modules themselves: no libtool archives or static libraries
# beside them in nbdkit's directories.
leftovers="$(find "$destdir$filterdir" "$destdir$plugindir" -type f ! -name '*.so')"
[ -z "$leftovers" ] || fail "make install left extra files in nbdkit's directories: $leftovers"

found_bin=; found_man=
for f in $(find "$destdir" -type f); do
    case "$f" in
        */bin/nbdzone) found_bin=1 ;;
        */man1/nbdkit-cryptinline-filter.1) found_man=$((found_man+1)) ;;
        */man1/nbdkit-zbd-plugin.1) found_man=$((found_man+1)) ;;
        */man1/nbdzone.1) found_man=$((found_man+1)) ;;
    esac
done
[ -n "$found_bin" ] || fail "make install did not install bin/nbdzone"
[ "$found_man" = 3 ] || fail "make install installed $found_man of the 3 manual pages"

# The installed (not the build tree's) modules serve an encrypted zoned disk.
key="$destdir/key"
head -c 64 /dev/urandom > "$key"
out="$(nbdkit -U - --filter="$filter" "$plugin" emulate=memory size=64M \
        zone-size=8M crypt-key-file="$key" \
        --run 'nbdinfo "$uri"')"
grep -q 'zoned=host-managed' <<<"$out" ||
    fail "the installed modules did not serve a zoned export: $out"
