#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks, on loopback.
#
#   scripts/postgres.sh install          apt-get install postgresql if missing
#   scripts/postgres.sh start DIR PORT   start one; prints the path of a file
#                                        that exports MLVAULT_PG_URL
#   scripts/postgres.sh stop DIR         stop it and delete its data
#
# PostgreSQL refuses to run as root, so as root the cluster runs as the
# unprivileged `postgres` user (created by the package) in a folder of its
# own under /tmp; DIR keeps only the env file and where the cluster is.
# It listens on 127.0.0.1:PORT only, with trust authentication (a test
# cluster holds nothing worth a password), and without fsync unless
# PG_FSYNC=on (benchmarks that compare durable stores set it). It also
# takes TLS, with a certificate for 127.0.0.1 and localhost from a CA made
# for it; the env file exports that CA's file as MLVAULT_PG_CA.
set -euo pipefail

bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return; }
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
install)
  bindir >/dev/null && exit 0
  if [ "$(id -u)" != 0 ]; then
    echo "postgres: PostgreSQL is not installed; as root: apt-get install postgresql (or run scripts/postgres.sh install as root)" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bindir >/dev/null || { echo "postgres: initdb not found after installing postgresql" >&2; exit 1; }
  ;;
start)
  dir=$2 port=$3
  bin=$(bindir) || { echo "postgres: PostgreSQL is not installed (scripts/postgres.sh install)" >&2; exit 1; }
  mkdir -p "$dir"
  cluster=$(mktemp -d /tmp/mlvault-pg.XXXXXX)
  echo "$cluster" >"$dir/cluster"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$cluster"; fi
  as_pg "$bin/initdb" -D "$cluster/data" -U postgres --auth=trust --no-locale -E UTF8 >"$cluster/initdb.log" 2>&1 || {
    echo "postgres: initdb failed:" >&2; tail -20 "$cluster/initdb.log" >&2; exit 1; }
  # A CA and a server certificate, for the TLS tests.
  "$(dirname "$0")/test-ca.sh" "$cluster" "mlvault test PostgreSQL"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$cluster/server.key" "$cluster/server.pem"; fi
  if ! as_pg "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $cluster -c fsync=${PG_FSYNC:-off} -c max_connections=200 -c ssl=on -c ssl_cert_file=$cluster/server.pem -c ssl_key_file=$cluster/server.key" start >/dev/null; then
    echo "postgres: the server did not start on port $port; its log:" >&2
    tail -20 "$cluster/log" >&2
    exit 1
  fi
  {
    echo "export MLVAULT_PG_URL=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export MLVAULT_PG_CA=$cluster/ca.pem"
  } >"$dir/env"
  echo "$dir/env"
  ;;
stop)
  dir=$2
  [ -f "$dir/cluster" ] || exit 0
  cluster=$(cat "$dir/cluster")
  bin=$(bindir) || exit 0
  as_pg "$bin/pg_ctl" -D "$cluster/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$cluster" "$dir/cluster" "$dir/env"
  ;;
*)
  echo "usage: scripts/postgres.sh install | start DIR PORT | stop DIR" >&2
  exit 2
  ;;
esac
