#!/usr/bin/env bash
# Interleaved A/B of two hexad-bench binaries (A B A B ...), so the machine's drift hits
# both alike: each round runs `write --target local --bs 200` with the same options on
# each binary (each starts its own embedded 6-node cluster) and prints CPU per commit
# (writer + nodes, the primary figure), commits/s, p50 and p99; then the medians.
# Usage: bench/issue15-ab.sh OLD_BIN NEW_BIN [ROUNDS] [IODEPTH] [RUNTIME_S]
# RATE=N runs open loop at N commits/s instead (`--rate_iops N`): both sides then do the
# same work per second, so CPU per commit compares efficiency alone, without the fixed
# per-second costs that a slower closed-loop run spreads over fewer commits.
# Build a binary for each side first, e.g. `git stash; cargo build --release -p
# hexad-bench; cp target/release/hexad-bench /var/tmp/hb-old; git stash pop`.
set -euo pipefail
old=${1:?usage: $0 OLD_BIN NEW_BIN [ROUNDS] [IODEPTH] [RUNTIME_S]}
new=${2:?usage: $0 OLD_BIN NEW_BIN [ROUNDS] [IODEPTH] [RUNTIME_S]}
rounds=${3:-3}; depth=${4:-64}; runtime=${5:-8}
rate=()
if [ -n "${RATE:-}" ]; then rate=(--rate_iops "$RATE"); fi
for bin in "$old" "$new"; do
  [ -x "$bin" ] || { echo "$bin is not an executable" >&2; exit 2; }
done
run() { # BIN -> "cpu_us_per_op ops_per_s p50 p99"
  (cd /var/tmp && "$1" write --target local --bs 200 --iodepth "$depth" --runtime "$runtime" \
      --ramp_time 1 "${rate[@]}" --output-format json 2>/dev/null) |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j["cpu_us_per_op"],1), round(j["ops_per_s"]), j["latency_us_p50"], j["latency_us_p99"])'
}
echo "iodepth $depth, ${runtime} s per run, $rounds rounds, ${RATE:-closed loop}${RATE:+ commits/s open loop}; $(nproc) CPUs; $(date -u +%FT%TZ)"
printf '%5s | %8s %8s %7s %7s | %8s %8s %7s %7s\n' round \
  "A_us/op" "A_cps" "A_p50" "A_p99" "B_us/op" "B_cps" "B_p50" "B_p99"
results=$(mktemp)
for r in $(seq "$rounds"); do
  read -r ac ao a50 a99 < <(run "$old")
  read -r bc bo b50 b99 < <(run "$new")
  printf '%5d | %8s %8s %7s %7s | %8s %8s %7s %7s\n' "$r" "$ac" "$ao" "$a50" "$a99" "$bc" "$bo" "$b50" "$b99"
  echo "$ac $ao $a50 $a99 $bc $bo $b50 $b99" >> "$results"
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = [statistics.median(c) for c in zip(*rows)]
print("median | %8.1f %8.0f %7.0f %7.0f | %8.1f %8.0f %7.0f %7.0f" % tuple(med))
print("B/A: CPU per commit %.2fx, commits/s %.2fx, p99 %.2fx" % (med[4] / med[0], med[5] / med[1], med[7] / med[3]))
EOF
rm -f "$results"
