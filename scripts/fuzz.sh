#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo fuzz, libFuzzer) for FUZZ_SECONDS
# each (default 60), starting from the seed corpus in fuzz/corpus/<target>.
# New inputs go to fuzz/work/<target> (ignored by git), crashes to
# fuzz/artifacts/<target>. Prints executions per target and writes them to
# bench-results/fuzz-latest.md. Exits 1 if any target found a crash.
#
#   FUZZ_SECONDS=600 make fuzz          longer runs
#   FUZZ_TARGETS="frame name" make fuzz  only some targets
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"frame message datagram envelope name"}

# cargo fuzz needs nightly features (-Z sanitizer); on a machine with only a
# stable toolchain, RUSTC_BOOTSTRAP lets stable rustc accept them.
if cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
    toolchain_name=$(cargo +nightly --version)
else
    export RUSTC_BOOTSTRAP=1
    toolchain=()
    toolchain_name="$(cargo --version) with RUSTC_BOOTSTRAP=1"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Longest input per target: a little past what each decoder is ever given
# (a datagram is at most 1400 bytes, a name 4095), so limits are crossed.
max_len() {
    case "$1" in
        datagram | envelope) echo 1600 ;;
        name) echo 8192 ;;
        *) echo 16384 ;;
    esac
}

cargo "${toolchain[@]}" fuzz build -O
mkdir -p fuzz/work bench-results
summary="| target | seconds | executions | exec/s | corpus after | result |
|---|---|---|---|---|---|"
failed=""
for t in $targets; do
    work="fuzz/work/$t"
    log="fuzz/work/$t.log"
    mkdir -p "$work"
    echo "fuzz: $t for ${seconds}s" >&2
    status=ok
    # The work dir comes first: libFuzzer adds new inputs to the first dir
    # only, so the seed corpus in the repository stays as it is.
    if ! cargo "${toolchain[@]}" fuzz run -O "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        status="CRASH (see $log and fuzz/artifacts/$t)"
        failed="$failed $t"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "$work" -type f | wc -l)
    echo "fuzz: $t: ${runs:-?} executions (${rate:-?}/s), corpus $corpus, $status" >&2
    summary="$summary
| $t | $seconds | ${runs:-?} | ${rate:-?} | $corpus | $status |"
done

{
    echo "# SCS fuzzing — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "cargo fuzz (libFuzzer, AddressSanitizer, release with debug assertions), $toolchain_name;"
    echo "each target from the seed corpus in fuzz/corpus plus what earlier runs kept in fuzz/work."
    echo
    echo "$summary"
} >bench-results/fuzz-latest.md
echo "$summary"
if [ -n "$failed" ]; then
    echo "fuzz: crashes in:$failed" >&2
    exit 1
fi
