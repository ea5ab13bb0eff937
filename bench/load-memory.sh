#!/usr/bin/env bash
# Resident memory of three brokers under load: the peak RSS of each `keeld` while
# `keel bench produce` (acks=all, 1 KiB records, 1 MiB batches) runs with few and with many
# producers (each producer its own connections), and while one consumer reads it all back;
# once with the default `request_memory_bytes` and once with a smaller one, to show that the
# config, not the load, bounds what requests hold.
#
#   KEELD=path/to/keeld KEEL=path/to/keel bench/load-memory.sh [--records N] [--pool BYTES]
#
# Uses deploy/local-cluster.sh (ports 9292-9494) with its data under a temporary folder that
# is removed at exit. Prints one table: setting, workload, peak RSS of nodes 1, 2 and 3 (MiB).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
: "${KEELD:?set KEELD to a keeld binary}" "${KEEL:?set KEEL to a keel binary}"
records=300000
small_pool=$((16 << 20))
while [[ $# -gt 0 ]]; do
    case "$1" in
        --records) records="$2"; shift 2 ;;
        --pool) small_pool="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
export KEEL_LOCAL_DIR
KEEL_LOCAL_DIR="$(mktemp -d /var/tmp/keel-load-memory.XXXXXX)"
trap '"$root/deploy/local-cluster.sh" down >/dev/null 2>&1 || true; rm -rf "$KEEL_LOCAL_DIR"' EXIT

# Peak VmRSS (MiB) of each node while the command runs.
peak_rss() {
    local pids=() peaks=(0 0 0) i rss
    for n in 1 2 3; do pids+=("$(cat "$KEEL_LOCAL_DIR/node-$n.pid")"); done
    "$@" >/dev/null 2>&1 &
    local job=$!
    while kill -0 "$job" 2>/dev/null; do
        for i in 0 1 2; do
            rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/${pids[$i]}/status")
            ((rss > peaks[i])) && peaks[i]=$rss
        done
        sleep 0.1
    done
    wait "$job"
    echo "${peaks[*]}"
}

run() { # setting label, then KEEL_REQUEST_MEMORY_BYTES value
    local setting="$1" topic="t$RANDOM"
    KEEL_REQUEST_MEMORY_BYTES="$2" "$root/deploy/local-cluster.sh" up >/dev/null
    "$KEEL" topic create "$topic" -p 6 -r 3 --config min.insync.replicas=2 >/dev/null
    for producers in 4 64; do
        read -r a b c < <(peak_rss "$KEEL" bench produce --topic "$topic" --records "$records" \
            --record-size 1024 --producers "$producers" --batch-size 1048576 --linger-ms 5 --acks all)
        echo "| $setting | produce, $producers producers | $a | $b | $c |"
    done
    read -r a b c < <(peak_rss "$KEEL" bench consume --topic "$topic" --records $((2 * records)))
    echo "| $setting | one consumer reading it back | $a | $b | $c |"
    "$root/deploy/local-cluster.sh" down >/dev/null
    rm -rf "${KEEL_LOCAL_DIR:?}"/node-*
}

echo "| request_memory_bytes | workload | node 1 MiB | node 2 MiB | node 3 MiB |"
echo "|---|---|---|---|---|"
run "256 MiB (default)" $((256 << 20))
run "$((small_pool >> 20)) MiB" "$small_pool"
