#!/usr/bin/env bash
# Start, stop or inspect a local hexad cluster described by a cluster file.
#
#   scripts/cluster.sh start  DIR [CLUSTER_TOML]   start every node; data and logs under DIR
#   scripts/cluster.sh stop   DIR                  stop the nodes this script started in DIR
#   scripts/cluster.sh status DIR                  show which of them are running
#
# CLUSTER_TOML defaults to config/cluster.toml. The node binary is $HEXAD_NODE_BIN, or
# target/release/hexad-node (built if missing). PIDs are kept in DIR/node<ID>.pid, and
# `stop` signals a PID only if that process is still the hexad-node started for DIR.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-}
dir=${2:-}
cluster=${3:-$repo/config/cluster.toml}
ready_timeout_s=${HEXAD_READY_TIMEOUT_S:-60}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ -n "$cmd" ] && [ -n "$dir" ] || usage

node_bin() {
  if [ -n "${HEXAD_NODE_BIN:-}" ]; then echo "$HEXAD_NODE_BIN"; return; fi
  local bin=$repo/target/release/hexad-node
  if [ ! -x "$bin" ]; then
    echo "building hexad-node (release)..." >&2
    (cd "$repo" && cargo build --release -p hexad-node >&2)
  fi
  echo "$bin"
}

# Whether PID is a running hexad-node started with --data-root DIR.
ours() {
  local pid=$1 cmdline
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline")
  [[ $cmdline == *hexad-*node* && $cmdline == *"--data-root $dir "* ]]
}

start() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local bin ids id pidfile log
  bin=$(node_bin)
  ids=$("$bin" --cluster "$cluster" --list-nodes)
  for id in $ids; do
    pidfile=$dir/node$id.pid
    if [ -f "$pidfile" ] && ours "$(cat "$pidfile")"; then
      echo "node $id already running (pid $(cat "$pidfile"))"
      continue
    fi
    log=$dir/node$id.log
    "$bin" --cluster "$cluster" --node-id "$id" --data-root "$dir" > "$log" 2>&1 &
    echo $! > "$pidfile"
  done
  for id in $ids; do
    log=$dir/node$id.log
    local waited=0
    until grep -q " ready: " "$log" 2>/dev/null; do
      if ! ours "$(cat "$dir/node$id.pid")"; then
        echo "node $id failed to start:" >&2
        tail -n 5 "$log" >&2
        exit 1
      fi
      if [ $waited -ge $((ready_timeout_s * 10)) ]; then
        echo "node $id not ready after ${ready_timeout_s}s; see $log" >&2
        exit 1
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    echo "node $id: $(grep " ready: " "$log" | tail -n 1)"
  done
}

stop() {
  [ -d "$dir" ] || { echo "no cluster directory $dir"; return 0; }
  dir=$(cd "$dir" && pwd)
  local pidfile pid id
  for pidfile in "$dir"/node*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    id=$(basename "$pidfile" .pid)
    if ours "$pid"; then
      kill "$pid"
      for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
      if ours "$pid"; then kill -9 "$pid"; fi
      echo "$id stopped (pid $pid)"
    else
      echo "$id not running"
    fi
    rm -f "$pidfile"
  done
}

status() {
  [ -d "$dir" ] || { echo "no cluster directory $dir"; exit 1; }
  dir=$(cd "$dir" && pwd)
  local pidfile pid id running=0 total=0
  for pidfile in "$dir"/node*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    id=$(basename "$pidfile" .pid)
    total=$((total + 1))
    if ours "$pid"; then
      running=$((running + 1))
      echo "$id running (pid $pid): $(grep " ready: " "$dir/$id.log" | tail -n 1)"
    else
      echo "$id NOT running (last log line: $(tail -n 1 "$dir/$id.log" 2>/dev/null))"
    fi
  done
  echo "$running of $total nodes running"
  [ "$running" -eq "$total" ] && [ "$total" -gt 0 ]
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
