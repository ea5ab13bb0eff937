#!/usr/bin/env bash
# The data-plane benchmark of BENCHMARKS.md: a three-node local cluster (deploy/local-cluster.sh),
# a topic with 6 partitions and replication factor 3 (min.insync.replicas=2), then `keel bench`:
# acks=all at full speed, acks=all at half that rate (latency), acks=1 at full speed, and one
# consumer reading the topic back. Prints each result as JSON lines on stdout.
#
#   scripts/bench-cluster.sh [RECORDS] [RECORD_SIZE] [PRODUCERS] [BATCH_SIZE]
#   (defaults 200000 1024 4 1048576: 1 MiB batches, linger 5 ms, as the OpenMessaging
#   Benchmark's Kafka driver uses)
#
# Uses release binaries (KEELD / KEEL override them); the cluster's data goes to a fresh
# temporary folder and the cluster is stopped at the end.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
records="${1:-200000}"
size="${2:-1024}"
producers="${3:-4}"
batch="${4:-1048576}"
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "${KEELD:-}" || -z "${KEEL:-}" ]]; then
    (cd "$root" && bash scripts/setup.sh >&2 && cargo build --release --locked -p keel-broker -p keel-cli >&2)
fi
export KEELD="${KEELD:-$target/release/keeld}"
keel="${KEEL:-$target/release/keel}"
# A run writes RECORDS x RECORD_SIZE x 3 replicas x 3 topics: the data goes at the end.
if [[ -z "${KEEL_LOCAL_DIR:-}" ]]; then
    KEEL_LOCAL_DIR="$(mktemp -d /tmp/keel-bench.XXXXXX)"
    trap '"$root/deploy/local-cluster.sh" down >&2; rm -rf "$KEEL_LOCAL_DIR"' EXIT
else
    trap '"$root/deploy/local-cluster.sh" down >&2' EXIT
fi
export KEEL_LOCAL_DIR
"$root/deploy/local-cluster.sh" up >&2
k() { "$keel" --bootstrap 127.0.0.1:9292,127.0.0.1:9392,127.0.0.1:9492 "$@"; }
bench() {
    local topic="$1"
    shift
    k topic create "$topic" -p 6 -r 3 --config min.insync.replicas=2 >&2
    sleep 2 # leaders take their partitions
    k bench produce --topic "$topic" --records "$records" --record-size "$size" \
        --producers "$producers" --batch-size "$batch" "$@" -o json | tr -d '\n'
    echo
}
peak="$(bench all-peak --acks all)"
echo "$peak"
rate="$(sed -E 's/.*"records_per_s": *([0-9]+).*/\1/' <<<"$peak")"
rate=$((rate / 2))
bench all-half --acks all --rate "$rate"
bench one-peak --acks 1
k bench consume --topic all-peak --records "$records" -o json | tr -d '\n'
echo
