#!/usr/bin/env bash
# Where a commit with one in flight spends its time (issue #8), each layer measured alone in
# one session, smallest first:
#   1. the device: one 4 KiB write + fdatasync, then six at once (six nodes share the disk);
#   2. one node, no quorum: a 200 B record appended and acknowledged (loopback, decode, log
#      write, fdatasync or an O_DSYNC write, ack);
#   3. the quorum: a commit through the client to 6 local nodes (4 of 6 acks).
# Usage: bench/issue15-latency.sh [RUNTIME_S]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-8}
root=/var/tmp/hexad-latency
port=7650
cargo build --release -p hexad-node -p hexad-bench --manifest-path "$repo/Cargo.toml" >&2
node=$repo/target/release/hexad-node
bench=$repo/target/release/hexad-bench
summary() { python3 -c 'import json,sys; j=json.load(sys.stdin); print("p50 %6d us  p90 %6d us  p99 %6d us  %7.0f ops/s  %6.1f us CPU/op" % (j["latency_us_p50"], j["latency_us_p90"], j["latency_us_p99"], j["ops_per_s"], j["cpu_us_per_op"]))'; }
rm -rf "$root" && mkdir -p "$root/data"
trap 'pkill -f -- "--config $root/node.toml" 2>/dev/null || true; rm -rf "$root"' EXIT

for depth in 1 6; do
  printf 'device, 4 KiB write + fdatasync, %d at once:   ' "$depth"
  "$bench" write --target "file:$root/raw" --bs 4096 --size 4M --fdatasync 1 --iodepth "$depth" \
    --runtime "$runtime" --output-format json 2>/dev/null | summary
done
rm -f "$root/raw"

for sync in fdatasync dsync; do
  rm -rf "$root/data" && mkdir -p "$root/data"
  cat > "$root/node.toml" <<TOML
node_id = 1
az = "az1"
data_dir = "$root/data"
base_port = $port
shards = 1
pin_shards = false
[hot_log]
file_bytes = 67108864
file_count = 8
sync = "$sync"
TOML
  "$node" --config "$root/node.toml" > "$root/node.log" 2>&1 &
  until grep -q " ready: " "$root/node.log"; do sleep 0.1; done
  printf 'one node (%-9s), 200 B append acked:   ' "$sync"
  "$bench" write --target "node:127.0.0.1:$port" --bs 200 --iodepth 1 --runtime "$runtime" \
    --output-format json 2>/dev/null | summary
  pkill -f -- "--config $root/node.toml"
  while pgrep -f -- "--config $root/node.toml" > /dev/null; do sleep 0.1; done
done

printf 'quorum, 200 B commit on 4 of 6 local nodes:  '
(cd /var/tmp && "$bench" write --target local --bs 200 --iodepth 1 --runtime "$runtime" \
  --ramp_time 1 --output-format json 2>/dev/null) | summary
