#!/usr/bin/env bash
# Storage benchmarks in one run: the disk's own sequential write bandwidth (dd, with and
# without fdatasync), then the criterion benches (batch codec, log append/read) and the
# recovery bench. Files go to $KEEL_BENCH_DIR (default: the temp folder).
# Usage: scripts/bench-storage.sh [--quick]   (--quick: 1 GiB recovery log instead of 10)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir="${KEEL_BENCH_DIR:-${TMPDIR:-/tmp}}"
export KEEL_BENCH_DIR="$dir"
[ "${1:-}" = "--quick" ] && export KEEL_BENCH_LOG_GIB=1

cargo bench -p keel-storage --no-run --locked

dd_rate() { # extra dd flags; prints the rate dd reports
  local f="$dir/keel-dd.$$"
  dd if=/dev/zero of="$f" bs=1M count=4096 "$@" 2>&1 | tail -1 | awk -F', ' '{print $NF}'
  rm -f "$f"
}
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(date -u +%F)"
echo "== dd 4 GiB sequential write, page cache only:  $(dd_rate)"
echo "== dd 4 GiB sequential write, conv=fdatasync:   $(dd_rate conv=fdatasync)"
cargo bench -p keel-storage --locked --bench batch --bench log -- --noplot 2>&1 \
  | grep -E '^[a-z_/0-9A-Za-z]+ +time:|thrpt:|^[a-z].*/' || true
cargo bench -p keel-storage --locked --bench recovery
