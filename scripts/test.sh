#!/usr/bin/env bash
# Every test hexad has, as CI runs them (.ci/run): the workspace's tests, then a short
# coverage-guided fuzz pass over every target from its checked-in corpus
# (HEXAD_FUZZ_SECONDS per target, 10 by default; scripts/fuzz.sh runs longer ones).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
scripts/fuzz.sh --seconds "${HEXAD_FUZZ_SECONDS:-10}"
