#!/usr/bin/env bash
# Two slow nodes vs none, interleaved (A B A B ...) so that the machine's drift cancels:
# each round restarts nodes 2 and 4 without, then with, a reply delay, and runs the same
# commit load; the ratio of each round's p99s is what to compare.
# Usage: bench/issue3-delay-ab.sh [ROUNDS] [DELAY_US] [IODEPTH] [RUNTIME_S]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-4}; delay_us=${2:-2000}; depth=${3:-1}; runtime=${4:-5}
dir=/var/tmp/hexad-ab
cluster=$dir.cluster.toml
node_bin=$repo/target/release/hexad-node
bench=$repo/target/release/hexad-bench
cargo build --release -p hexad-node -p hexad-bench --manifest-path "$repo/Cargo.toml" >&2
trap '"$repo/scripts/cluster.sh" stop "$dir" >/dev/null || true' EXIT
rm -rf "$dir"
sed 's/^file_count = 8 .*/file_count = 64/' "$repo/config/cluster.toml" > "$cluster"
"$repo/scripts/cluster.sh" start "$dir" "$cluster" >/dev/null

restart_slow() { # restart nodes 2 and 4 with this reply delay (us)
  for id in 2 4; do
    local pid; pid=$(cat "$dir/node$id.pid"); kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    "$node_bin" --cluster "$cluster" --node-id "$id" --data-root "$dir" --fault-reply-delay-us "$1" > "$dir/node$id.log" 2>&1 &
    echo $! > "$dir/node$id.pid"
    until grep -q " ready: " "$dir/node$id.log"; do sleep 0.05; done
  done
}
p99() { "$bench" write --target "cluster:$cluster" --bs 200 --iodepth "$depth" --runtime "$runtime" --volume-base "$1" --output-format json 2>/dev/null | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["latency_us_p99"], j["latency_us_p50"], round(j["ops_per_s"]))'; }
vol=2000
echo "round  base_p99 base_p50 base_cps  slow_p99 slow_p50 slow_cps  p99_ratio"
for r in $(seq "$rounds"); do
  restart_slow 0;          vol=$((vol + 1)); read -r bp99 bp50 bcps < <(p99 "$vol")
  restart_slow "$delay_us"; vol=$((vol + 1)); read -r sp99 sp50 scps < <(p99 "$vol")
  printf '%5d  %8s %8s %8s  %8s %8s %8s  %9s\n' "$r" "$bp99" "$bp50" "$bcps" "$sp99" "$sp50" "$scps" "$(python3 -c "print(round($sp99/$bp99, 2))")"
done
