#!/usr/bin/env bash
# Enforces the crate dependency direction of ARCHITECTURE.md: storage is a leaf (no gRPC, no
# Raft), the batch codec links nothing heavy, and the CLI never links the broker or RocksDB.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() { # crate, forbidden dependency
  if cargo tree -p "$1" --edges normal --prefix none --locked 2>/dev/null | grep -qE "^$2 "; then
    echo "dependency rule broken: $1 depends on $2" >&2
    fail=1
  fi
}
for dep in tonic prost openraft keel-proto keel-metadata; do check keel-storage "$dep"; done
# The batch codec is linked by every client program: bytes and codecs only.
for dep in tonic prost rocksdb tokio keel-proto keel-storage; do check keel-batch "$dep"; done
for dep in rocksdb keel-broker keel-storage openraft; do check keel-cli "$dep"; done
for dep in keel-broker keel-storage keel-metadata rocksdb; do check keel-client "$dep"; done
exit $fail
