#!/usr/bin/env bash
# A throwaway CA and a server certificate for 127.0.0.1 and localhost, for
# the benchmarks and the test PostgreSQL cluster (never for production):
#
#   scripts/test-ca.sh DIR NAME    writes DIR/ca.pem, ca.key, server.pem, server.key
set -euo pipefail
dir=$1 name=${2:-mlvault test}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$name CA" \
  -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=127.0.0.1' \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out server.pem -extfile ext.cnf 2>/dev/null
chmod 600 server.key ca.key
chmod 644 ca.pem server.pem
