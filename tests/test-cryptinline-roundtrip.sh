#!/usr/bin/env bash
# Round trips through the filter on the memory and file plugins: every
# crypt sector size, both key sizes, iv-large-sectors on and off, every
# crypt mode.  Varied request sizes (1 sector .. 1 MiB) take both the
# inline and the pool path; overwrites, FUA writes and write-zeroes are
# checked against a model of the disk.  nbdcopy copies a file in and out.
source "$srcdir/cryptinline-lib.sh"
requires nbdcopy --version

make_key "$tmp/k32" 32
make_key "$tmp/k64" 64
seed=1
for mode in $CRYPT_MODES; do
    for plugin in memory file; do
        for ss in 512 1024 2048 4096; do
            for key in k32 k64; do
                for large in false true; do
                    seed=$((seed + 1))
                    if [ $plugin = memory ]; then
                        backing=(memory 2M)
                    else
                        rm -f "$tmp/disk"; truncate -s 2M "$tmp/disk"
                        backing=(file "$tmp/disk")
                    fi
                    echo "round trip: mode=$mode $plugin sector=$ss key=$key iv-large-sectors=$large"
                    crypt_nbdkit -U - --filter=cryptinline "${backing[@]}" \
                        crypt-key-file="$tmp/$key" crypt-sector-size=$ss \
                        crypt-iv-large-sectors=$large crypt-mode=$mode \
                        crypt-threads=3 \
                        --run "$PYTHON3 $check_py roundtrip \"\$uri\" $seed" ||
                        fail "round trip mode=$mode $plugin sector=$ss key=$key large=$large"
                done
            done
        done
    done

    # nbdcopy: a 3 MiB file in, and back out, unchanged.
    head -c 3M /dev/urandom > "$tmp/in"
    rm -f "$tmp/out"
    crypt_nbdkit -U - --filter=cryptinline memory 3M \
        crypt-key-file="$tmp/k64" crypt-mode=$mode \
        --run "nbdcopy $tmp/in \"\$uri\" && nbdcopy \"\$uri\" $tmp/out" ||
        fail "nbdcopy mode=$mode"
    cmp "$tmp/in" "$tmp/out" || fail "nbdcopy round trip differs, mode=$mode"
done
echo "all round trips passed"
