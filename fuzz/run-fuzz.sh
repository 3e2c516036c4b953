#!/bin/sh
# run-fuzz.sh NAME SRCDIR SECONDS: fuzz ./NAME for SECONDS, starting from
# its seeds and regression inputs, keeping the corpus it grows in
# work/NAME; print executions and coverage; a crash input is saved in
# artifacts/ (add it to SRCDIR/regress/NAME and fix the bug).
set -e
name=$1 srcdir=$2 seconds=$3
short=${name#fuzz-}
mkdir -p work/$short artifacts
echo "== $name: $seconds s"
status=0
# libFuzzer refuses a corpus directory that does not exist: a harness
# that never crashed has no regress/NAME.
dirs=
for d in $srcdir/corpus/$short $srcdir/regress/$short; do
    [ -d "$d" ] && dirs="$dirs $d"
done
# shellcheck disable=SC2086
./$name -max_total_time=$seconds -print_final_stats=1 -timeout=10 \
    -artifact_prefix=artifacts/$name- work/$short $dirs \
    > work/$short.log 2>&1 || status=$?
grep -E '^#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss|cov:' \
    work/$short.log | tail -n 4
if [ $status -ne 0 ]; then
    grep -E 'ERROR|==[0-9]+==|broken|breaks|Test unit written' work/$short.log | head -n 20
    echo "$name: FAILED (status $status); full log: work/$short.log"
    exit 1
fi
