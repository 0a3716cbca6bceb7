#!/usr/bin/env bash
# Issue #2's measurements: one hexad-node with one shard (pinned to CPU 0), a fresh data
# directory per run (nothing releases hot-log space before the page store, issue #4),
# then hexad-bench's write mode. Usage: bench/issue2-node-write.sh [DATA_ROOT]
# Prints each run's summary; copy the figures into bench/RESULTS.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/var/tmp/hexad-bench}
port=7600
cargo build --release -p hexad-node -p hexad-bench --manifest-path "$repo/Cargo.toml" >&2
node=$repo/target/release/hexad-node
bench=$repo/target/release/hexad-bench

run() { # run SYNC_MODE BENCH_ARGS...
  local sync=$1; shift
  pkill -f -- "--config $root/node.toml" 2>/dev/null || true
  rm -rf "$root" && mkdir -p "$root/data"
  cat > "$root/node.toml" <<TOML
node_id = 1
az = "az1"
data_dir = "$root/data"
base_port = $port
shards = 1
pin_shards = true
[hot_log]
file_bytes = 134217728
file_count = 32
sync = "$sync"
TOML
  "$node" --config "$root/node.toml" > "$root/node.log" 2>&1 &
  local pid=$!
  for _ in $(seq 120); do grep -q " ready: " "$root/node.log" && break; sleep 0.5; done
  grep -q " ready: " "$root/node.log" || { cat "$root/node.log"; exit 1; }
  echo "## sync=$sync: hexad-bench write --target node:127.0.0.1:$port $*"
  "$bench" write --target "node:127.0.0.1:$port" "$@" 2>>"$root.progress.log"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for depth in 1 16 64; do
  run fdatasync --bs 200 --iodepth "$depth" --runtime 10
done
# 64 KiB requests fill a 4 GiB log in about 10 s: run them for 5 s.
for depth in 1 4 8; do
  run fdatasync --bs 8192 --batch 8 --iodepth "$depth" --runtime 5
done
run dsync --bs 200 --iodepth 64 --runtime 10
run dsync --bs 8192 --batch 8 --iodepth 4 --runtime 5
