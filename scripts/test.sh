#!/usr/bin/env bash
# The whole test suite: unit, property, conformance and end-to-end tests,
# including the ones against a real S3 server (Garage, built once into
# ~/.cache/mlvault: about 15-30 minutes on two cores the first time) and a
# real PostgreSQL server (the distribution's package; `scripts/postgres.sh
# install` as root installs it).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in curl openssl ssh-keygen python3; do
  command -v "$tool" >/dev/null || { echo "tests need \`$tool\` (apt-get install $tool)" >&2; exit 1; }
done
scripts/garage.sh install >/dev/null
# PostgreSQL from the distribution's packages (apt-get, as root), once.
scripts/postgres.sh install
# securesystemslib, an independent DSSE implementation, and gguf-py,
# llama.cpp's GGUF writer, for the interop tests (crates/manifest and
# crates/scan tests/interop.rs); installed once into a cached venv.
pyenv="$HOME/.cache/mlvault/pyenv"
if ! "$pyenv/bin/python" -c 'import securesystemslib, gguf' 2>/dev/null; then
  rm -rf "$pyenv"
  python3 -m venv "$pyenv"
  "$pyenv/bin/pip" install -q 'securesystemslib[crypto]==1.6.0' 'gguf==0.19.0' 'numpy==2.4.6'
fi
export MLVAULT_TEST_PYTHON="$pyenv/bin/python"
work=$(mktemp -d)
cleanup() {
  scripts/garage.sh stop "$work/garage" || true
  scripts/postgres.sh stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
# A shared Garage for the backend conformance suite; end-to-end tests start their own.
# shellcheck disable=SC1090
source "$(scripts/garage.sh start "$work/garage" "${MLVAULT_TEST_GARAGE_PORT:-39100}")"
export MLVAULT_REQUIRE_S3=1
# A throwaway PostgreSQL cluster for the metadata conformance suite.
# shellcheck disable=SC1090
source "$(scripts/postgres.sh start "$work/pg" "${MLVAULT_TEST_PG_PORT:-39150}")"
export MLVAULT_REQUIRE_PG=1
cargo test --workspace "$@"
