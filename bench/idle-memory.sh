#!/usr/bin/env bash
# The memory target of issue 12: resident memory of a broker holding 1,000 idle partitions.
# Starts the three-node local cluster (deploy/local-cluster.sh) on fresh data, reads each
# keeld's RSS, creates topics of --per-topic partitions at replication factor 3 until
# --partitions in all (so every broker holds a replica of each), lets the cluster settle, and
# reads the RSS again (/proc/PID/status and the /metrics gauge). Prints one JSON object.
#
#   bench/idle-memory.sh [--partitions 1000] [--per-topic 10] [--settle-secs 30]
#
# KEELD / KEEL name the binaries (release build otherwise). The cluster stops and its data
# goes on exit.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
partitions=1000
per_topic=10
settle_secs=30
while (($#)); do
    case "$1" in
    --partitions | --per-topic | --settle-secs)
        [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "idle-memory.sh: $1 needs a positive number" >&2; exit 2; }
        v="${1#--}"
        printf -v "${v//-/_}" '%s' "$2"
        shift 2
        ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "idle-memory.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "${KEELD:-}" || -z "${KEEL:-}" ]]; then
    (cd "$root" && bash scripts/setup.sh >&2 && cargo build --release --locked -p keel-broker -p keel-cli >&2)
fi
export KEELD="${KEELD:-$target/release/keeld}"
keel_bin="${KEEL:-$target/release/keel}"
export KEEL_LOCAL_DIR
KEEL_LOCAL_DIR="$(mktemp -d "${KEEL_BENCH_TMP:-/var/tmp}/keel-idle.XXXXXX")"
trap '"$root/deploy/local-cluster.sh" down >&2; rm -rf "$KEEL_LOCAL_DIR"' EXIT
k() { "$keel_bin" --bootstrap 127.0.0.1:9292,127.0.0.1:9392,127.0.0.1:9492 "$@"; }

# "rss_proc_mib/rss_metrics_mib" of each node, as a JSON list.
rss() {
    local n pid proc metric logs fds out=()
    for n in 1 2 3; do
        pid="$(cat "$KEEL_LOCAL_DIR/node-$n.pid")"
        proc="$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")"
        metric="$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$((9194 + 100 * n)) &&
            printf 'GET /metrics HTTP/1.0\r\nHost: keel\r\n\r\n' >&3 && cat <&3" |
            awk '/^keel_process_resident_memory_bytes / {printf "%.1f", $2 / 1048576}')"
        # The partition folders and open files show that the replicas are really open.
        logs="$(find "$KEEL_LOCAL_DIR/node-$n" -mindepth 1 -maxdepth 3 -type d -name '*-[0-9]*' | wc -l)"
        fds="$(find "/proc/$pid/fd" -mindepth 1 | wc -l)"
        out+=("{\"node\":$n,\"rss_mib\":$proc,\"metrics_rss_mib\":${metric:-null},\"partition_dirs\":$logs,\"open_files\":$fds}")
    done
    local IFS=,
    echo "[${out[*]}]"
}

"$root/deploy/local-cluster.sh" up >&2
sleep "$settle_secs" # the idle baseline: nothing but heartbeats and the metadata log
before="$(rss)"
topics=$(((partitions + per_topic - 1) / per_topic))
for ((t = 0; t < topics; t++)); do
    k topic create "idle-$t" -p "$per_topic" -r 3 >/dev/null
done
echo "idle-memory.sh: $topics topics, $((topics * per_topic)) partitions; settling ${settle_secs}s" >&2
sleep "$settle_secs" # leaders elected, follower fetch streams idle
after="$(rss)"
printf '{"partitions":%d,"replication_factor":3,"before":%s,"after":%s}\n' \
    "$((topics * per_topic))" "$before" "$after"
