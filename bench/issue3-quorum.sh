#!/usr/bin/env bash
# Issue #3's measurements: commits through the quorum client against the 6-node local
# cluster of config/cluster.toml (all on this machine), as a baseline, with one node
# SIGSTOPped, and with two nodes replying late.
# Usage: bench/issue3-quorum.sh [DATA_DIR] [DELAY_US]   (default 2000)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/var/tmp/hexad-quorum-bench}
delay_us=${2:-2000}
# config/cluster.toml, with 2 GiB of hot log per node: nothing releases log space before the
# page store (issue #4), and these runs write several GiB.
cluster=$dir.cluster.toml
bench=$repo/target/release/hexad-bench
cargo build --release -p hexad-node -p hexad-bench --manifest-path "$repo/Cargo.toml" >&2
cleanup() {
  [ -n "${stopped:-}" ] && kill -CONT "$stopped" 2>/dev/null || true
  "$repo/scripts/cluster.sh" stop "$dir" >/dev/null || true
}
trap cleanup EXIT
rm -rf "$dir"
sed 's/^file_count = 8 .*/file_count = 64/' "$repo/config/cluster.toml" > "$cluster"
grep -q '^file_count = 64' "$cluster"
"$repo/scripts/cluster.sh" start "$dir" "$cluster" >/dev/null
vol=1000
run() { # run LABEL BENCH_ARGS...
  local label=$1; shift
  vol=$((vol + 1))
  echo "## $label: hexad-bench write --target cluster:CLUSTER $* --volume-base $vol"
  "$bench" write --target "cluster:$cluster" "$@" --volume-base "$vol" 2>>"$dir.progress.log"
}
for depth in 1 8 64; do run baseline --bs 200 --iodepth "$depth" --runtime 10; done

stopped=$(cat "$dir/node3.pid")
kill -STOP "$stopped"
for depth in 1 64; do run "node 3 SIGSTOPped" --bs 200 --iodepth "$depth" --runtime 10; done
kill -CONT "$stopped"; stopped=

# Two slow nodes: restart nodes 2 and 4 with every reply delayed by $delay_us us (the
# kernel here has no qdiscs, so `tc netem` is unavailable; the node's fault-injection flag
# delays each reply on its own, so pipelined requests overlap as on a slow link).
for id in 2 4; do
  pid=$(cat "$dir/node$id.pid"); kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  "$repo/target/release/hexad-node" --cluster "$cluster" --node-id "$id" --data-root "$dir" \
    --fault-reply-delay-us "$delay_us" > "$dir/node$id.log" 2>&1 &
  echo $! > "$dir/node$id.pid"
  until grep -q " ready: " "$dir/node$id.log"; do sleep 0.1; done
done
for depth in 1 64; do run "nodes 2 and 4 replying ${delay_us}us late" --bs 200 --iodepth "$depth" --runtime 10; done
for depth in 1 64; do run "baseline again" --bs 200 --iodepth "$depth" --runtime 10; done
