#!/usr/bin/env bash
# Runs Keel's whole test suite. Installs what the build needs first (scripts/setup.sh).
# Extra arguments go to `cargo test` (e.g. `-p keel-storage`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one summary per binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
