#!/usr/bin/env bash
# Admission-scan benchmark: what the server's scan adds to the push of a
# large model, a safetensors file and a PyTorch checkpoint (a zip64 archive
# as torch.save writes, made by scripts/interop/make_archives.py), beside
# the same push without the scan, from one run on this machine.
#
#   scripts/bench-scan.sh [SIZE_MIB]        default: 4096
#
# The scan runs inside the push, after the upload and before the commit,
# reading headers, pickles and configs from the stored blobs; the server
# reports how long it took (mlvault_scan_seconds in /metrics). So each
# run's push without the scan is its push time less its scan time. Each
# file is pushed BENCH_REPS times (default 3, a version deleted before the
# next push so nothing is deduplicated); the table shows medians.
# Needs about 3 x SIZE_MIB of free disk under $TMPDIR, and Python 3
# (MLVAULT_TEST_PYTHON, else python3) for the PyTorch checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-4096}
reps=${BENCH_REPS:-3}
PY=${MLVAULT_TEST_PYTHON:-python3}
cargo build --release -j2 -p vault-server -p vault-cli >&2
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN/vault-server" init --data-dir "$work/v" --unseal-identity "$work/v.id" --admin-token-file "$work/admin" >/dev/null
"$BIN/vault-server" run --data-dir "$work/v" --unseal-identity "$work/v.id" --listen 127.0.0.1:0 >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$work/out" || { echo "bench-scan: the server did not start; its log:" >&2; tail -20 "$work/log" >&2; exit 1; }
export MLVAULT_ADDR; MLVAULT_ADDR=$(sed -n 's/^listening on //p' "$work/out" | head -1)
export MLVAULT_STATE_DIR="$work/state" MLVAULT_CACHE_DIR="$work/cache"
export MLVAULT_TOKEN; MLVAULT_TOKEN=$(MLVAULT_TOKEN=$(cat "$work/admin") "$BIN/vault-cli" token create --principal bench --role trainer --namespace bench)
admin() { MLVAULT_TOKEN=$(cat "$work/admin") "$BIN/vault-cli" "$@"; }

bytes=$((mib * 1048576))
mkdir -p "$work/st" "$work/pt"
# safetensors: an 8-byte header length, the JSON header, one U8 tensor.
n=$((bytes - 128))
header="{\"w\":{\"dtype\":\"U8\",\"shape\":[$n],\"data_offsets\":[0,$n]}}"
while [ $(( ${#header} % 8 )) -ne 0 ]; do header="$header "; done
hlen=${#header}
printf "$(printf '\\x%02x\\x%02x' $((hlen & 255)) $((hlen >> 8)))\\x00\\x00\\x00\\x00\\x00\\x00" >"$work/st/model.safetensors"
printf '%s' "$header" >>"$work/st/model.safetensors"
head -c "$n" /dev/urandom >>"$work/st/model.safetensors"
"$PY" scripts/interop/make_archives.py --big-torch "$work/pt/pytorch_model.bin" "$bytes"

now() { date +%s.%N; }
scan_sum() { curl -s "$MLVAULT_ADDR/metrics" | awk '$1 == "mlvault_scan_seconds_sum" {print $2}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '\nmlvault admission-scan benchmark, %s, %s cores, loopback, release build, median of %s pushes\n' "$(date -u +%F)" "$(nproc)" "$reps"
printf '%-14s %9s %10s %10s %16s %10s %s\n' file MiB "push s" "scan s" "push w/o scan s" "scan adds" verdict
for kind in st pt; do
  pushes=() scans=() bases=() verdict=""
  for r in $(seq "$reps"); do
    sync
    before=$(scan_sum); before=${before:-0}
    t0=$(now)
    out=$("$BIN/vault-cli" --json push "bench/$kind" "$work/$kind" 2>"$work/push.err") || { cat "$work/push.err" >&2; exit 1; }
    t1=$(now)
    after=$(scan_sum)
    verdict=$(printf '%s' "$out" | sed -n 's/.*"scan": *"\([a-z]*\)".*/\1/p')
    push=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
    scan=$(awk -v a="$before" -v b="$after" 'BEGIN {print b - a}')
    pushes+=("$push"); scans+=("$scan"); bases+=("$(awk -v p="$push" -v s="$scan" 'BEGIN {print p - s}')")
    admin delete "bench/$kind:$r" >/dev/null
  done
  p=$(median "${pushes[@]}"); s=$(median "${scans[@]}"); b=$(median "${bases[@]}")
  name=$([ "$kind" = st ] && echo safetensors || echo "pytorch zip64")
  printf '%-14s %9s %10.2f %10.4f %16.2f %9.2f%% %s\n' "$name" "$mib" "$p" "$s" "$b" "$(awk -v s="$s" -v b="$b" 'BEGIN {print 100 * s / b}')" "$verdict"
  printf '%s runs (s): push %s | scan %s\n' "$name" "${pushes[*]}" "${scans[*]}" >&2
done
echo "target: the scan adds less than 5% to the push"
