#!/usr/bin/env bash
# Load test of the release server over TLS on loopback: authorized metadata
# requests per second with latency percentiles (beside /healthz), then 32
# concurrent verified pulls of a 256 MiB artifact (beside one pull alone).
#
#   scripts/load.sh [--secs N] [--conns N] [--pulls N] [--mib N]
#
# Needs about PULLS x MIB of free disk under $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -j2 -p vault-server -p vault-cli >&2
exec cargo bench -j2 -p vault-tests --bench load -- "$@"
