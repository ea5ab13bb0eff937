#!/usr/bin/env bash
# Starts keeld in a container. Without KEEL_NODE_ID, the node id comes from the host name's
# ordinal (keel-0 → 1, keel-1 → 2, ... as a Kubernetes StatefulSet names its pods); without
# KEEL_ADVERTISED_HOST, other nodes reach this one by its host name (or KEEL_HOST_DOMAIN
# appended, e.g. the headless Service's domain). Extra arguments go to keeld.
set -euo pipefail
host="$(hostname)"
if [[ -z "${KEEL_NODE_ID:-}" ]]; then
    ordinal="${host##*-}"
    if [[ "$ordinal" =~ ^[0-9]+$ ]]; then
        export KEEL_NODE_ID=$((ordinal + 1))
    fi
fi
if [[ -z "${KEEL_ADVERTISED_HOST:-}" ]]; then
    export KEEL_ADVERTISED_HOST="${host}${KEEL_HOST_DOMAIN:+.$KEEL_HOST_DOMAIN}"
fi
exec keeld "$@"
