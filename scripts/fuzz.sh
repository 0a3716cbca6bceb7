#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through the libfuzzer-sys crate) on the stable
# toolchain: the targets in fuzz/ are built with rustc's sanitizer-coverage passes, which
# stable accepts, instead of through `cargo fuzz` (which wants nightly for its sanitizers).
#
#   scripts/fuzz.sh [--runs N | --seconds S] [TARGET...]
#
# Each target runs from its corpus in fuzz/corpus/TARGET (new inputs it finds are added
# there) and stops after N executions or S seconds; a crash leaves its input in
# fuzz/artifacts/TARGET/ and the script exits non-zero, naming the command that replays it.
# With no TARGET, every target runs in turn. Prints executions and exec/s per target.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=""
seconds=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (use --runs N or --seconds S)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ -z "$runs" ] && [ -z "$seconds" ]; then
    seconds=30
fi
all=(frame message record hotlog_block page_slot segments_meta config shard)
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
    if [[ ! " ${all[*]} " =~ " $t " ]]; then
        echo "fuzz.sh: no target '$t' (targets: ${all[*]})" >&2
        exit 2
    fi
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros, which would not
# link without libFuzzer.
host=$(rustc -vV | sed -n 's/^host: //p')
bin="$CARGO_TARGET_DIR/$host/release"
echo "fuzz.sh: building ${#targets[@]} target(s) with sanitizer coverage"
cargo build --release --locked --target "$host" --manifest-path fuzz/Cargo.toml \
    $(printf -- '--bin %s ' "${targets[@]}")

limit=()
[ -n "$runs" ] && limit+=("-runs=$runs")
[ -n "$seconds" ] && limit+=("-max_total_time=$seconds")
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$CARGO_TARGET_DIR/$t.log"
    echo "fuzz.sh: $t: ${limit[*]}"
    started=$(date +%s.%N)
    if ! "$bin/$t" "$corpus" "${limit[@]}" -max_len=4096 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $t FAILED; the crashing input is in $artifacts/; replay: $bin/$t $artifacts/<file>" >&2
        exit 1
    fi
    ended=$(date +%s.%N)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    awk -v t="$t" -v n="${execs:-0}" -v a="$started" -v b="$ended" -v c="$cov" \
        'BEGIN { s = b - a; printf "fuzz.sh: %s: %d executions in %.1f s (%.0f exec/s), %s, 0 failures\n", t, n, s, n / s, c }'
done
