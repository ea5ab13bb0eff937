#!/usr/bin/env bash
# A three-node Keel cluster on this machine: three `keeld` processes on 127.0.0.1, each with
# both roles (broker and controller voter), data under one folder.
#
#   deploy/local-cluster.sh up        build keeld if needed, start the nodes, wait until ready
#   deploy/local-cluster.sh down      SIGTERM the nodes this script started, wait for them
#   deploy/local-cluster.sh status    pid, liveness and readiness of each node
#   deploy/local-cluster.sh logs [N]  the last lines of every node's log (or of node N)
#
# Client ports 9292, 9392, 9492 (internal +1, HTTP +2). Environment: KEEL_LOCAL_DIR (data and
# logs, default .keel-local/ in the repository), KEELD (a keeld binary to use instead of
# building one), KEEL_LOCAL_READY_SECS (how long `up` waits, default 60). Any KEEL_<KEY>
# setting (see deploy/keeld.example.toml) is passed on to every node.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${KEEL_LOCAL_DIR:-$root/.keel-local}"
nodes=(1 2 3)
voters="1@127.0.0.1:9293,2@127.0.0.1:9393,3@127.0.0.1:9493"

client_port() { echo $((9192 + 100 * $1)); }
internal_port() { echo $((9193 + 100 * $1)); }
http_port() { echo $((9194 + 100 * $1)); }
pid_file() { echo "$dir/node-$1.pid"; }
log_file() { echo "$dir/node-$1.log"; }

# The pid of node $1 if this script started it and it still runs.
running_pid() {
    local f pid
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ -d "/proc/$pid" ]] && grep -q keeld "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

# The HTTP status of GET $2 on port $1, or 000 when nothing answers (no curl needed).
http_status() {
    local answer
    answer="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 &&
        printf 'GET $2 HTTP/1.0\r\nHost: keel\r\n\r\n' >&3 && head -n1 <&3" 2>/dev/null || true)"
    awk '{print $2}' <<<"${answer:-x 000}"
}

keeld_binary() {
    if [[ -n "${KEELD:-}" ]]; then
        echo "$KEELD"
        return
    fi
    (cd "$root" && bash scripts/setup.sh >&2 &&
        cargo build --release --locked -p keel-broker -p keel-cli >&2)
    echo "${CARGO_TARGET_DIR:-$root/target}/release/keeld"
}

up() {
    mkdir -p "$dir"
    local keeld
    keeld="$(keeld_binary)"
    for n in "${nodes[@]}"; do
        if pid="$(running_pid "$n")"; then
            echo "node $n already running (pid $pid)"
            continue
        fi
        nohup "$keeld" --node-id "$n" --roles broker,controller \
            --listen "127.0.0.1:$(client_port "$n")" \
            --internal-listen "127.0.0.1:$(internal_port "$n")" \
            --http-listen "127.0.0.1:$(http_port "$n")" \
            --data-dir "$dir/node-$n" --controller-voters "$voters" \
            >>"$(log_file "$n")" 2>&1 </dev/null &
        echo $! >"$(pid_file "$n")"
        echo "node $n started (pid $!), client 127.0.0.1:$(client_port "$n")"
    done
    local deadline=$((SECONDS + ${KEEL_LOCAL_READY_SECS:-60}))
    for n in "${nodes[@]}"; do
        until [[ "$(http_status "$(http_port "$n")" /readyz)" == 200 ]]; do
            if ((SECONDS > deadline)) || ! running_pid "$n" >/dev/null; then
                echo "node $n is not ready; its log: $(log_file "$n")" >&2
                tail -n 20 "$(log_file "$n")" >&2 || true
                exit 1
            fi
            sleep 0.2
        done
    done
    echo "ready: --bootstrap 127.0.0.1:9292,127.0.0.1:9392,127.0.0.1:9492"
}

down() {
    local pids=()
    for n in "${nodes[@]}"; do
        if pid="$(running_pid "$n")"; then
            kill -TERM "$pid"
            pids+=("$pid")
        fi
        rm -f "$(pid_file "$n")"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 600); do
            [[ -d "/proc/$pid" ]] || break
            sleep 0.1
        done
    done
    echo "stopped ${#pids[@]} node(s)"
}

status() {
    printf '%-5s %-8s %-6s %s\n' NODE PID ALIVE READY
    for n in "${nodes[@]}"; do
        local pid alive=no ready=no
        pid="$(running_pid "$n" || true)"
        [[ -n "$pid" ]] && alive=yes
        [[ "$(http_status "$(http_port "$n")" /readyz)" == 200 ]] && ready=yes
        printf '%-5s %-8s %-6s %s\n' "$n" "${pid:--}" "$alive" "$ready"
    done
}

logs() {
    for n in "${@:-${nodes[@]}}"; do
        echo "--- node $n ($(log_file "$n")) ---"
        tail -n 50 "$(log_file "$n")" 2>/dev/null || true
    done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
logs) shift; logs "$@" ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
