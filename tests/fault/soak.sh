#!/usr/bin/env bash
# The long version of the random fault run (tests/it/t30_faults.rs): three keeld processes in
# their own network namespaces, acks=all producers (raw, and the Rust client's idempotent
# producer), a reader and a consumer group, random kills, pauses and network cuts for
# --minutes N, then the checks. Needs root (network namespaces).
#
#   tests/fault/soak.sh --minutes 30 [--seed S] [--runs K]
#
# Each run prints its seed; a failing run is replayed with --seed.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=10 seed="" runs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) echo "usage: $0 --minutes N [--seed S] [--runs K]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "soak.sh needs root (network namespaces)" >&2; exit 2; }
export KEEL_FAULT_SECONDS=$((minutes * 60))
for run in $(seq 1 "$runs"); do
  [ -n "$seed" ] && export KEEL_FAULT_SEED="$seed"
  echo "soak run $run/$runs: ${minutes} min of faults"
  cargo test --workspace --locked random_faults_lose_nothing_acknowledged -- --nocapture 2>&1 \
    | grep -E "random faults|faults:|healthy|checked:|idempotent producer:|group:|replay|test t30|panicked|FAILED|ok$"
done
