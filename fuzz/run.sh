#!/usr/bin/env bash
# Builds every fuzz target (or those named) and runs each for a fixed time, then merges
# the inputs that found new coverage into fuzz/corpus/<target>/ and prints a table.
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default: 60 s, every target)
#
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked). Logs go
# to fuzz/logs/<target>.log, crashing inputs to fuzz/artifacts/<target>/.
set -euo pipefail

secs=${1:-60}
shift || true
cd "$(dirname "$0")"
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi

# Debug assertions on: an arithmetic overflow panics, as it does in the test builds.
mkdir -p logs
cargo +nightly fuzz build --debug-assertions >/dev/null 2>logs/build.log || {
    cat logs/build.log >&2
    exit 1
}
bin=target/x86_64-unknown-linux-gnu/release

rows=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    found=$(mktemp -d)
    before=$(find "artifacts/$t" -type f | wc -l)
    echo "== $t: ${secs}s" >&2
    # New inputs land in $found; corpus/<target> (seeds and earlier runs) is read only.
    "$bin/$t" "$found" "corpus/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" \
        -max_len=4400 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1 || true
    # Keep only what adds coverage to the corpus.
    "$bin/$t" -merge=1 -artifact_prefix="artifacts/$t/" "corpus/$t" "$found" -max_len=4400 >"logs/$t.merge.log" 2>&1 || true
    rm -rf "$found"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | grep -E 'cov: ' | tail -1 || true)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
    files=$(find "corpus/$t" -type f | wc -l)
    rows+=("$(printf '%-14s %12s %8s %10s %8s %8s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$files" "$crashes")")
done

printf '%-14s %12s %8s %10s %8s %8s\n' target executions cov features corpus crashes
printf '%s\n' "${rows[@]}"
