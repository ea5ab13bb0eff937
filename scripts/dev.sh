#!/usr/bin/env bash
# Builds keeld and starts a one-node development cluster (`keeld --dev`) in the foreground,
# with its data under .keel-dev/. Installs what the build needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p keel-broker -p keel-cli
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/keeld" --dev "$@"
