#!/usr/bin/env bash
# Garage (S3-compatible, AGPL) for mlvault's tests and benchmarks: installed
# from crates.io into a cache that survives between runs, run as a separate
# process on loopback, never linked.
#
#   scripts/garage.sh install            build/cache the binary, print its path
#   scripts/garage.sh start DIR [PORT]   start a single-node Garage in DIR (S3 API on
#                                        127.0.0.1:PORT, default 3900), create a key
#                                        and a bucket `mlvault`, write DIR/env
#   scripts/garage.sh stop DIR           stop it (the data stays; `start` again resumes)
#
# DIR/env holds MLVAULT_S3_ENDPOINT, MLVAULT_S3_BUCKET, MLVAULT_S3_REGION,
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ready to `source`.
set -euo pipefail
VERSION=2.5.0
CACHE="${MLVAULT_GARAGE_CACHE:-$HOME/.cache/mlvault/garage-$VERSION}"
BIN="$CACHE/bin/garage"

install() {
  if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "$BIN"; return
  fi
  echo "building garage $VERSION into $CACHE (about 15-30 minutes on two cores, once)" >&2
  local start; start=$(date +%s)
  cargo install --locked --root "$CACHE" garage --version "$VERSION" -j "${CARGO_BUILD_JOBS:-2}" >&2
  echo "garage built in $(( $(date +%s) - start ))s" >&2
  echo "$BIN"
}

start() {
  local dir="$1" port="${2:-3900}"
  install >/dev/null
  mkdir -p "$dir/meta" "$dir/data"
  dir=$(cd "$dir" && pwd)
  if [ ! -f "$dir/garage.toml" ]; then
    cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
data_fsync = ${GARAGE_FSYNC:-false}
metadata_fsync = ${GARAGE_FSYNC:-false}
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$((port + 1))"
rpc_public_addr = "127.0.0.1:$((port + 1))"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((port + 3))"
TOML
  fi
  local g=("$BIN" -c "$dir/garage.toml")
  "${g[@]}" server >>"$dir/garage.log" 2>&1 &
  echo $! >"$dir/pid"
  local up=""
  for _ in $(seq 1 100); do
    "${g[@]}" status >/dev/null 2>&1 && up=1 && break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "garage did not start in 10 s; its log:" >&2
    tail -20 "$dir/garage.log" >&2
    exit 1
  fi
  if [ ! -f "$dir/env" ]; then
    local node
    node=$("${g[@]}" node id -q | cut -d@ -f1)
    "${g[@]}" layout assign -z dc1 -c 1G "$node" >/dev/null
    "${g[@]}" layout apply --version 1 >/dev/null
    local keyinfo keyid secret
    keyinfo=$("${g[@]}" key create mlvault-test)
    keyid=$(echo "$keyinfo" | awk '/Key ID:/ {print $3}')
    secret=$(echo "$keyinfo" | awk '/Secret key:/ {print $3}')
    "${g[@]}" bucket create mlvault >/dev/null
    "${g[@]}" bucket allow --read --write --owner mlvault --key mlvault-test >/dev/null
    cat >"$dir/env" <<ENV
export MLVAULT_S3_ENDPOINT=http://127.0.0.1:$port
export MLVAULT_S3_BUCKET=mlvault
export MLVAULT_S3_REGION=garage
export AWS_ACCESS_KEY_ID=$keyid
export AWS_SECRET_ACCESS_KEY=$secret
ENV
  fi
  # Ready when the S3 API answers.
  up=""
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && up=1 && break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "garage's S3 API did not answer on port $port in 10 s; its log:" >&2
    tail -20 "$dir/garage.log" >&2
    exit 1
  fi
  echo "$dir/env"
}

stop() {
  local dir="$1"
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?DIR}" "${3:-3900}" ;;
  stop) stop "${2:?DIR}" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
