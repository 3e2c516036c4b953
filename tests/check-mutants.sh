#!/usr/bin/env bash
# make check-mutants: prove that the tests notice when a promise breaks.
#
# How it works: the source tree is copied (with its build, if it was
# built in place) to a scratch directory and configured there as the
# original was.  Each mutant of tests/mutants.sh is applied to the copy
# with sed (it must change exactly the lines it says, or it fails as
# "does not apply"), the copy is rebuilt incrementally, and the
# mutant's tests run one by one until one fails: that test killed it.
# A mutant that no test kills survives.  The file is then restored and
# the next mutant applied.  At the end every test that killed a mutant
# is run once more on the unmutated copy: a test that fails there too
# proves nothing, and fails the run.
#
# Prints a table (mutant, promise, the test that killed it) and, last,
# "check-mutants: K of N mutants killed".  Exits 1 unless every mutant
# applied, built and was killed, and the killing tests pass unmutated.
#
#   top_srcdir=DIR top_builddir=DIR tests/check-mutants.sh [NAME...]
#
# NAMEs select mutants (all by default).  MUTANTS_KEEP=1 keeps the
# scratch directory.
set -u

top_srcdir="$(cd "${top_srcdir:-$(dirname "$0")/..}" && pwd)"
top_builddir="$(cd "${top_builddir:-$top_srcdir}" && pwd)"
MAKE="${MAKE:-make}"
started=$SECONDS

# ---- The mutants --------------------------------------------------------
names=() files=() lines=() exprs=() promises=() tests=()
mutant ()
{
    local name="$1" file="$2" n="$3" expr="$4" promise="$5"
    shift 5
    names+=("$name"); files+=("$file"); lines+=("$n"); exprs+=("$expr")
    promises+=("$promise"); tests+=("$*")
}
# shellcheck source=tests/mutants.sh
source "$top_srcdir/tests/mutants.sh"

selected=("$@")
is_selected ()
{
    local s
    [ ${#selected[@]} -eq 0 ] && return 0
    for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}
for s in "${selected[@]}"; do
    found=
    for n in "${names[@]}"; do [ "$n" = "$s" ] && found=1; done
    [ -n "$found" ] || { echo "check-mutants: no mutant named $s" >&2; exit 1; }
done

# ---- A copy of the tree, configured and built --------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/check-mutants.XXXXXX")"
if [ -n "${MUTANTS_KEEP:-}" ]; then
    echo "check-mutants: scratch directory $work (kept)"
else
    trap 'rm -rf "$work"' EXIT
fi
tree="$work/tree"
mkdir "$tree"
echo "check-mutants: copying $top_srcdir"
# The VM's kernels and caches are large and of no use here.
tar -C "$top_srcdir" -cf - --exclude=./.git --exclude=./vm/cache \
    --exclude=./vm/stable --exclude=./vm/backports --exclude=./bench/out \
    --exclude='./demo.*' --exclude='*.log' --exclude='*.trs' . |
    tar -C "$tree" -xpf - || { echo "check-mutants: cannot copy the tree" >&2; exit 1; }

# Configured as the original (its absolute paths are the copy's now).
config_args="$("$top_builddir/config.status" --config)" || {
    echo "check-mutants: $top_builddir is not configured" >&2; exit 1; }
echo "check-mutants: configuring the copy ($config_args) and building"
if ! (cd "$tree" && eval "./configure $config_args" > "$work/configure.log" 2>&1 &&
      $MAKE -j2 > "$work/build.log" 2>&1); then
    tail -n 30 "$work/configure.log" "$work/build.log" 2>/dev/null
    echo "check-mutants: the unmutated copy does not build" >&2
    exit 1
fi
echo "check-mutants: copy built after $((SECONDS - started)) s"

# run_test TEST: 0 if it passes (or skips) in the copy, 1 if it failed
# (its first failure line in $failure), 2 if it never ran (a test
# program did not build: that is no kill), 3 if it timed out.
run_test ()
{
    local status=0
    rm -f "$tree/tests/$1.log"
    (cd "$tree/tests" &&
     timeout -k 10 "${MUTANTS_TEST_TIMEOUT:-180}" $MAKE check TESTS="$1" \
         > "$work/check.log" 2>&1) || status=$?
    failure=
    [ $status -eq 0 ] && return 0
    [ $status -eq 124 ] || [ $status -eq 137 ] && return 3
    grep -qE "^(FAIL|ERROR) $1 " "$tree/tests/$1.log" 2>/dev/null || return 2
    # The test's own failure line; a log line of nbdkit may be expected.
    failure="$(grep -E 'FAIL|Traceback' "$tree/tests/$1.log" |
               grep -v -m1 -E "^(FAIL|ERROR) $1 ")"
    return 1
}

# ---- Each mutant -------------------------------------------------------
results=()      # per mutant: "killed TEST", "SURVIVED", "does not apply: ..."
killers=()
killed=0 total=0
for ((i = 0; i < ${#names[@]}; i++)); do
    is_selected "${names[i]}" || continue
    total=$((total + 1))
    name="${names[i]}" file="$tree/${files[i]}"
    t0=$SECONDS
    if [ ! -f "$file" ]; then
        results+=("DOES NOT APPLY: ${files[i]} is gone")
        echo "mutant $name: DOES NOT APPLY (${files[i]} is gone)"
        continue
    fi
    cp -p "$file" "$work/orig"
    if ! sed -e "${exprs[i]}" "$work/orig" > "$work/mutated"; then
        results+=("DOES NOT APPLY: bad sed expression")
        echo "mutant $name: DOES NOT APPLY (bad sed expression)"
        continue
    fi
    changed=$(diff "$work/orig" "$work/mutated" | grep -c '^<')
    if [ "$changed" -ne "${lines[i]}" ]; then
        results+=("DOES NOT APPLY: changes $changed lines of ${files[i]}, expected ${lines[i]}")
        echo "mutant $name: DOES NOT APPLY (changes $changed lines of ${files[i]}, expected ${lines[i]}): the code moved; update tests/mutants.sh"
        continue
    fi
    # Write in place: the file keeps its mode (serve-demo is run).
    cat "$work/mutated" > "$file"
    result=
    if ! (cd "$tree" && $MAKE -j2 > "$work/build.log" 2>&1); then
        tail -n 20 "$work/build.log"
        result="DOES NOT BUILD"
    else
        for t in ${tests[i]}; do
            run_test "$t"
            case $? in
                1) result="killed $t"; killers+=("$t")
                   echo "mutant $name: $t: $failure" ;;
                2) tail -n 20 "$work/check.log"
                   result="DOES NOT BUILD (the programs of $t)" ;;
                3) result="killed $t (timed out)"; killers+=("$t") ;;
                *) continue ;;
            esac
            break
        done
        [ -n "$result" ] || result="SURVIVED"
    fi
    # Restored with a new time stamp: the next build recompiles it.
    cat "$work/orig" > "$file"
    [ "${result%% *}" = killed ] && killed=$((killed + 1))
    results+=("$result")
    echo "mutant $name: $result ($((SECONDS - t0)) s)"
done

# ---- The killing tests pass without any mutant ---------------------------
baseline_failed=()
if [ ${#killers[@]} -gt 0 ]; then
    if ! (cd "$tree" && $MAKE -j2 > "$work/build.log" 2>&1); then
        tail -n 20 "$work/build.log"
        baseline_failed+=("(the restored copy does not build)")
    else
        mapfile -t distinct < <(printf '%s\n' "${killers[@]}" | sort -u)
        for t in "${distinct[@]}"; do
            if run_test "$t" && grep -qE "^(PASS|SKIP) $t " "$tree/tests/$t.log"; then
                echo "unmutated: $t passes"
            else
                echo "unmutated: $t FAILS: its kills prove nothing"
                tail -n 20 "$tree/tests/$t.log" 2>/dev/null
                baseline_failed+=("$t")
            fi
        done
    fi
fi

# ---- The table ---------------------------------------------------------
echo
printf '%-30s %-32s %s\n' MUTANT "KILLED BY" "PROMISE IT BREAKS"
j=0
for ((i = 0; i < ${#names[@]}; i++)); do
    is_selected "${names[i]}" || continue
    r="${results[j]}"; j=$((j + 1))
    case "$r" in
        killed*) r="${r#killed }" ;;
        *) r="** ${r%%:*} **" ;;
    esac
    printf '%-30s %-32s %s\n' "${names[i]}" "$r" "${promises[i]}"
done
echo
echo "check-mutants: run took $((SECONDS - started)) s"
if [ ${#baseline_failed[@]} -gt 0 ]; then
    echo "check-mutants: FAIL: without any mutant, these tests fail too: ${baseline_failed[*]}"
fi
echo "check-mutants: $killed of $total mutants killed"
[ "$killed" -eq "$total" ] && [ ${#baseline_failed[@]} -eq 0 ]
