#!/usr/bin/env bash
# Transfer benchmark: mlvault push/pull over loopback beside a plain baseline
# (curl PUT/GET against a Garage S3 server, no encryption, no verification)
# and `cp` (the local limit), from one run on this machine, with peak RSS of
# the server and the CLI, a warm re-pull of an 8-file model and a re-push of
# it unchanged. Each pull is also run with MLVAULT_DIRECT_IO=on (pull*), and
# each downloaded file is then read once, as a deploy job's loader would.
# push^ is a push with --hash-first (the file hashed before its upload, as
# every push did before blob format v2), the same-run baseline of the
# default, which hashes a large file while it uploads. push/tls and
# pull/tls run against a second vault served over TLS (rustls), as in
# production; the Garage baseline stays plain HTTP. `cp` copies a file that
# is still in the page cache; "cp from disk" copies it after dropping it
# from the page cache, the local limit for a pull, whose blob starts on the
# server's disk.
#
#   scripts/bench.sh [--json FILE] [SIZES_MIB...]      default: 1024 4096
#
# --json FILE also writes every figure of the run (medians, each run's
# seconds, peak RSS, the machine and the settings) as one JSON document;
# scripts/bench-report.py renders such files into docs/performance.md, so
# the figures there are never copied by hand.
#
# Each transfer runs BENCH_REPS times (default 3) after a `sync` and a pause
# of BENCH_SETTLE seconds (default 0); the table shows the median. On a VM
# that reports free memory to its host (virtio-balloon free page reporting,
# as on the development machine), a GiB of new page cache is cheap while
# memory freed a short while ago lasts and costs about 2.5 s of system time
# once that is used up, so a step that writes through the page cache (cp,
# curl's GET, the default pull) is as fast as what the steps before it
# left. BENCH_REFILL=1 writes and deletes a file of the transfer's size
# before every timed step (untimed), so each step meets the same freshly
# freed memory, as on a machine without that cost; the pull's CPU seconds
# (stderr) show which state a pull met. BENCH_SKIP_WARM=1 skips the warm re-pull. GARAGE_FSYNC=true
# starts Garage with data_fsync and metadata_fsync, a baseline as durable as
# mlvault (which fsyncs every blob before a version commits); Garage's
# default is false.
#
# The servers run with their defaults, so the server reads a blob from
# its disk the first time and through its page cache when it is read again
# within hot_read_secs: each run pushes a new blob, so pull is its first
# read and pull* its second, which also fills the server's page cache.
# BENCH_HOT_READ_SECS=N starts the first two servers with hot_read_secs = N
# (0: every read from the disk). A last step (BENCH_FLEET, below) has
# several deploy jobs pull one model at once, three rounds, beside a vault
# that reads every blob from the disk.
#
# The files are random bytes named `.dat`, a format the admission scan
# cannot judge (verdict `unsupported`, kept), read by the scan only at
# their start; scripts/bench-scan.sh measures the scan of real models.
#
# Needs about (BENCH_REPS + 4) x the largest size in free disk under $TMPDIR
# (Garage reclaims deleted objects only after a delay).
set -euo pipefail
cd "$(dirname "$0")/.."
json_out=""
if [ "${1:-}" = "--json" ]; then
  [ -n "${2:-}" ] || { echo "bench: --json needs a file name" >&2; exit 2; }
  json_out=$(realpath -m "$2"); shift 2
fi
sizes=("${@:-1024 4096}")
# shellcheck disable=SC2206
sizes=(${sizes[@]})
cargo build --release -j2 -p vault-server -p vault-cli >&2
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
scripts/garage.sh install >/dev/null
work=$(mktemp -d)
server_pid=""
tls_pid=""
fleet_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$tls_pid" ] && kill "$tls_pid" 2>/dev/null || true
  [ -n "$fleet_pid" ] && kill "$fleet_pid" 2>/dev/null || true
  scripts/garage.sh stop "$work/garage" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck disable=SC1090
source "$(scripts/garage.sh start "$work/garage" 39400)"
# start_vault NAME [RUN ARGS...]: init and run a vault in $work/NAME, wait
# for it to listen; its pid goes to $started_pid, its address to
# $work/NAME.addr, its admin token to $work/NAME.admin.
start_vault() {
  local name=$1; shift
  "$BIN/vault-server" init --data-dir "$work/$name" --unseal-identity "$work/$name.id" --admin-token-file "$work/$name.admin" >/dev/null
  "$BIN/vault-server" run --data-dir "$work/$name" --unseal-identity "$work/$name.id" --listen 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  started_pid=$!
  for _ in $(seq 100); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  if ! grep -q listening "$work/$name.out" 2>/dev/null; then
    echo "bench: server $name did not start in 10 s; its log:" >&2
    tail -20 "$work/$name.log" >&2
    exit 1
  fi
  sed -n 's/^listening on //p' "$work/$name.out" >"$work/$name.addr"
}
server_config=()
if [ -n "${BENCH_HOT_READ_SECS:-}" ]; then
  printf '[storage]\nhot_read_secs = %d\n' "$BENCH_HOT_READ_SECS" >"$work/server.toml"
  server_config=(--config "$work/server.toml")
fi
start_vault vault "${server_config[@]}"
server_pid=$started_pid
export MLVAULT_ADDR; MLVAULT_ADDR=$(cat "$work/vault.addr")
export MLVAULT_TOKEN; MLVAULT_TOKEN=$(MLVAULT_TOKEN=$(cat "$work/vault.admin") "$BIN/vault-cli" token create --principal bench --role trainer --namespace bench)
# A second vault served over TLS (rustls, a private CA), as production runs it.
tls="$work/tls"
scripts/test-ca.sh "$tls" bench
start_vault vault-tls "${server_config[@]}" --tls-cert "$tls/server.pem" --tls-key "$tls/server.key"
tls_pid=$started_pid
TLS_ADDR=$(cat "$work/vault-tls.addr")
TLS_TOKEN=$(MLVAULT_ADDR=$TLS_ADDR MLVAULT_CA_CERT="$tls/ca.pem" MLVAULT_TOKEN=$(cat "$work/vault-tls.admin") "$BIN/vault-cli" token create --principal bench --role trainer --namespace bench)
over_tls() { MLVAULT_ADDR=$TLS_ADDR MLVAULT_TOKEN=$TLS_TOKEN MLVAULT_CA_CERT="$tls/ca.pem" "$@"; }
tls_admin() { MLVAULT_ADDR=$TLS_ADDR MLVAULT_CA_CERT="$tls/ca.pem" MLVAULT_TOKEN=$(cat "$work/vault-tls.admin") "$BIN/vault-cli" "$@"; }
export MLVAULT_STATE_DIR="$work/state" MLVAULT_CACHE_DIR="$work/cache" MLVAULT_REPORT_PEAK_RSS=1

now() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
rss_cli() { sed -n 's/^peak-rss-kib: //p' "$1" | tail -1; }
# The CLI's CPU seconds of its last run ("user U sys S"): slow page-cache
# writes show as system time.
cpu_cli() { sed -n 's/^cpu-seconds: //p' "$1" | tail -1 | tr ' ' '_'; }
rss_server() { awk '/VmHWM/ {print $2}' "/proc/$server_pid/status"; }
curl_s3() { curl -sf --aws-sigv4 "aws:amz:garage:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }

reps=${BENCH_REPS:-3}
# One JSON object per figure, gathered into --json's document at the end.
results="$work/results.jsonl"; : >"$results"
# record SIZE_MIB OP SECONDS BASELINE BASELINE_SECONDS RUNS...: a transfer's
# median seconds beside its baseline's, and every run's seconds.
record() {
  local mib=$1 op=$2 s=$3 base=$4 base_s=$5; shift 5
  printf '{"size_mib":%s,"op":"%s","seconds":%s,"mib_per_s":%s,"baseline":"%s","baseline_seconds":%s,"vs_baseline":%s,"runs_seconds":[%s]}\n' \
    "$mib" "$op" "$s" "$(rate $((mib * 1048576)) "$s")" "$base" "$base_s" "$(ratio "$base_s" "$s")" "$(IFS=,; echo "$*")" >>"$results"
}
# note KEY JSON_VALUE: any other figure.
note() { printf '{"%s":%s}\n' "$1" "$2" >>"$results"; }
# Seconds taken by a command, after flushing what earlier steps left dirty so
# every run starts from the same disk state.
refill() { [ -z "${BENCH_REFILL:-}" ] || { head -c "$bytes" /dev/zero >"$work/refill.bin"; rm -f "$work/refill.bin"; }; }
timed() { sync; sleep "${BENCH_SETTLE:-0}"; refill; local t0 t1; t0=$(now); "$@"; t1=$(now); awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cp_synced() { cp "$1" "$2"; sync "$2"; }
# Drop a (synced) file from the page cache, so the next read comes from the
# device, as a vault's first read of a blob does.
evict() { sync "$1"; dd if="$1" iflag=nocache count=0 status=none; }
get_synced() { curl_s3 -o "$2" "$1"; sync "$2"; }
put_quiet() { curl_s3 -T "$1" "$2" >/dev/null; }
push_quiet() { "$BIN/vault-cli" push "$@" >/dev/null 2>"$work/push.err" || { cat "$work/push.err" >&2; return 1; }; }
pull_quiet() { "$BIN/vault-cli" pull "$1" --no-cache --to "$2" >/dev/null 2>"$work/pull.err" || { cat "$work/pull.err" >&2; return 1; }; }
pull_direct() { MLVAULT_DIRECT_IO=on pull_quiet "$@"; }
# What a deploy job does next: read the whole file (a model loader).
read_all() { cat "$1" >/dev/null; }

printf '\nmlvault transfer benchmark, %s, %s cores, loopback, plain HTTP, release build, median of %s runs, Garage fsync %s, refill %s, hot_read_secs %s\n' "$(date -u +%F)" "$(nproc)" "$reps" "${GARAGE_FSYNC:-false}" "${BENCH_REFILL:-off}" "${BENCH_HOT_READ_SECS:-default}"
printf '%-8s %-6s %10s %12s %12s %12s %9s %9s %12s %12s\n' size op "cp MiB/s" "curl+Garage" "mlvault" "" "vs curl" "vs cp" "server RSS" "cli RSS"
for mib in "${sizes[@]}"; do
  bytes=$((mib * 1048576))
  src="$work/src-$mib/model.dat"; mkdir -p "$(dirname "$src")"
  head -c "$bytes" /dev/urandom >"$src"
  cps=() cpds=() puts=() gets=() pushes=() hpushes=() pulls=() dpulls=() getreads=() pullreads=() dpullreads=() tpushes=() tpulls=() pullcpu=() dpullcpu=()
  for r in $(seq "$reps"); do
    # A different first block each run, so no push is deduplicated.
    printf 'run%05d' "$r" | dd of="$src" conv=notrunc bs=8 count=1 status=none
    cps+=("$(timed cp_synced "$src" "$work/cp.bin")"); rm -f "$work/cp.bin"
    evict "$src"
    cpds+=("$(timed cp_synced "$src" "$work/cp.bin")"); rm -f "$work/cp.bin"
    puts+=("$(timed put_quiet "$src" "$MLVAULT_S3_ENDPOINT/mlvault/bench-$mib")")
    gets+=("$(timed get_synced "$MLVAULT_S3_ENDPOINT/mlvault/bench-$mib" "$work/get.bin")")
    getreads+=("$(timed read_all "$work/get.bin")"); rm -f "$work/get.bin"
    curl_s3 -X DELETE "$MLVAULT_S3_ENDPOINT/mlvault/bench-$mib" >/dev/null || true
    pushes+=("$(timed push_quiet "bench/m$mib" "$(dirname "$src")")")
    push_rss=$(rss_cli "$work/push.err")
    pulls+=("$(timed pull_quiet "bench/m$mib" "$work/pulled")")
    pull_rss=$(rss_cli "$work/pull.err")
    pullcpu+=("$(cpu_cli "$work/pull.err")")
    pullreads+=("$(timed read_all "$work/pulled/model.dat")")
    cmp "$src" "$work/pulled/model.dat"
    rm -rf "$work/pulled"
    dpulls+=("$(timed pull_direct "bench/m$mib" "$work/pulled")")
    dpullcpu+=("$(cpu_cli "$work/pull.err")")
    dpullreads+=("$(timed read_all "$work/pulled/model.dat")")
    rm -rf "$work/pulled"
    # Free the blob again (Garage frees deleted objects only later).
    MLVAULT_TOKEN=$(cat "$work/vault.admin") "$BIN/vault-cli" delete "bench/m$mib:$r" >/dev/null 2>&1 || echo "delete bench/m$mib:$r failed" >&2
    printf 'hsh%05d' "$r" | dd of="$src" conv=notrunc bs=8 count=1 status=none
    hpushes+=("$(timed push_quiet --hash-first "bench/h$mib" "$(dirname "$src")")")
    MLVAULT_TOKEN=$(cat "$work/vault.admin") "$BIN/vault-cli" delete "bench/h$mib:$r" >/dev/null 2>&1 || echo "delete bench/h$mib:$r failed" >&2
    printf 'tls%05d' "$r" | dd of="$src" conv=notrunc bs=8 count=1 status=none
    tpushes+=("$(timed over_tls push_quiet "bench/t$mib" "$(dirname "$src")")")
    tpulls+=("$(timed over_tls pull_quiet "bench/t$mib" "$work/pulled")")
    cmp "$src" "$work/pulled/model.dat"
    rm -rf "$work/pulled"
    tls_admin delete "bench/t$mib:$r" >/dev/null 2>&1 || echo "delete bench/t$mib:$r over TLS failed" >&2
  done
  rm -rf "$(dirname "$src")"
  # Every run's seconds, to stderr: the spread says how far to trust a median.
  printf '%s MiB runs (s): cp %s | cp from disk %s | put %s | get %s | push %s | push^ %s | pull %s | pull* %s | push/tls %s | pull/tls %s\n' "$mib" \
    "${cps[*]}" "${cpds[*]}" "${puts[*]}" "${gets[*]}" "${pushes[*]}" "${hpushes[*]}" "${pulls[*]}" "${dpulls[*]}" "${tpushes[*]}" "${tpulls[*]}" >&2
  printf '%s MiB CLI CPU seconds per run: pull %s | pull* %s\n' "$mib" "${pullcpu[*]}" "${dpullcpu[*]}" >&2
  cp_s=$(median "${cps[@]}"); cpd_s=$(median "${cpds[@]}"); put_s=$(median "${puts[@]}"); get_s=$(median "${gets[@]}")
  push_s=$(median "${pushes[@]}"); hpush_s=$(median "${hpushes[@]}"); pull_s=$(median "${pulls[@]}"); dpull_s=$(median "${dpulls[@]}")
  srv=$(rss_server)
  printf '%-8s %-6s %10s %12s %12s %12s %9s %9s %9s KiB %9s KiB\n' "${mib}MiB" push "$(rate "$bytes" "$cp_s")" "$(rate "$bytes" "$put_s")" "$(rate "$bytes" "$push_s")" "" \
    "$(ratio "$put_s" "$push_s")" "$(ratio "$cp_s" "$push_s")" "$srv" "$push_rss"
  printf '%-8s %-6s %10s %12s %12s %12s %9s %9s\n' "${mib}MiB" "push^" "$(rate "$bytes" "$cp_s")" "$(rate "$bytes" "$put_s")" "$(rate "$bytes" "$hpush_s")" "" \
    "$(ratio "$put_s" "$hpush_s")" "$(ratio "$cp_s" "$hpush_s")"
  printf '%-8s %-6s %10s %12s %12s %12s %9s %9s %9s KiB %9s KiB\n' "${mib}MiB" pull "$(rate "$bytes" "$cp_s")" "$(rate "$bytes" "$get_s")" "$(rate "$bytes" "$pull_s")" "" \
    "$(ratio "$get_s" "$pull_s")" "$(ratio "$cp_s" "$pull_s")" "$srv" "$pull_rss"
  printf '%-8s %-6s %10s %12s %12s %12s %9s %9s\n' "${mib}MiB" "pull*" "$(rate "$bytes" "$cp_s")" "$(rate "$bytes" "$get_s")" "$(rate "$bytes" "$dpull_s")" "" \
    "$(ratio "$get_s" "$dpull_s")" "$(ratio "$cp_s" "$dpull_s")"
  tpush_s=$(median "${tpushes[@]}"); tpull_s=$(median "${tpulls[@]}")
  record "$mib" cp "$cp_s" "cp" "$cp_s" "${cps[@]}"
  record "$mib" cp_from_disk "$cpd_s" "cp" "$cp_s" "${cpds[@]}"
  record "$mib" curl_put "$put_s" "curl PUT to Garage" "$put_s" "${puts[@]}"
  record "$mib" curl_get "$get_s" "curl GET from Garage" "$get_s" "${gets[@]}"
  record "$mib" push "$push_s" "curl PUT to Garage" "$put_s" "${pushes[@]}"
  record "$mib" push_hash_first "$hpush_s" "curl PUT to Garage" "$put_s" "${hpushes[@]}"
  record "$mib" pull "$pull_s" "curl GET from Garage" "$get_s" "${pulls[@]}"
  record "$mib" pull_direct_io "$dpull_s" "curl GET from Garage" "$get_s" "${dpulls[@]}"
  record "$mib" push_tls "$tpush_s" "curl PUT to Garage" "$put_s" "${tpushes[@]}"
  record "$mib" pull_tls "$tpull_s" "curl GET from Garage" "$get_s" "${tpulls[@]}"
  note "rss_kib_${mib}" "{\"server\":${srv:-0},\"push_cli\":${push_rss:-0},\"pull_cli\":${pull_rss:-0}}"
  printf '%-8s %-8s %8s %12s %12s %12s %9s %9s\n' "${mib}MiB" "push/tls" "$(rate "$bytes" "$cp_s")" "$(rate "$bytes" "$put_s")" "$(rate "$bytes" "$tpush_s")" "" \
    "$(ratio "$put_s" "$tpush_s")" "$(ratio "$cp_s" "$tpush_s")"
  printf '%-8s %-8s %8s %12s %12s %12s %9s %9s\n' "${mib}MiB" "pull/tls" "$(rate "$bytes" "$cp_s")" "$(rate "$bytes" "$get_s")" "$(rate "$bytes" "$tpull_s")" "" \
    "$(ratio "$get_s" "$tpull_s")" "$(ratio "$cp_s" "$tpull_s")"
  sum() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a + b}'; }
  deploy_get=$(sum "$get_s" "$(median "${getreads[@]}")")
  deploy_pull=$(sum "$pull_s" "$(median "${pullreads[@]}")")
  deploy_dpull=$(sum "$dpull_s" "$(median "${dpullreads[@]}")")
  note "deploy_seconds_${mib}" "{\"curl_get_then_read\":$deploy_get,\"pull_then_read\":$deploy_pull,\"pull_direct_io_then_read\":$deploy_dpull}"
  printf '%-8s then read the whole file (deploy start-up): curl GET %s s, pull %s s (%sx), pull* %s s (%sx)\n' "${mib}MiB" \
    "$deploy_get" "$deploy_pull" "$(ratio "$deploy_get" "$deploy_pull")" "$deploy_dpull" "$(ratio "$deploy_get" "$deploy_dpull")"
  # A pull's blob starts on the server's disk, while `cp` above copies a file
  # still in the page cache; this is the local limit for bytes on the device.
  printf '%-8s cp from disk (source dropped from the page cache first, copied, synced): %s MiB/s; pull %sx, pull* %sx, pull/tls %sx of it\n' "${mib}MiB" \
    "$(rate "$bytes" "$cpd_s")" "$(ratio "$cpd_s" "$pull_s")" "$(ratio "$cpd_s" "$dpull_s")" "$(ratio "$cpd_s" "$tpull_s")"
done
printf 'push^ = push --hash-first: the file is hashed before it uploads (the default hashes a large file while it uploads)\n'
printf 'push/tls, pull/tls = the same push and pull against a vault served over TLS (rustls, loopback); curl+Garage stays plain HTTP\n'
printf 'pull* = MLVAULT_DIRECT_IO=on: the pulled file is written with O_DIRECT, bypassing the page cache (the default keeps it cached for the reader)\n'
printf 'each run pushes a new blob: pull is its first read (from the server'"'"'s disk), pull* its second, which with hot reads also fills the server'"'"'s page cache\n'

# Fleet start-up: BENCH_FLEET (default 4; 0 skips) deploy jobs pull one
# model of the first size at once, three rounds, from the first vault (its
# defaults: hot reads) and from a third vault that reads every blob from
# the device (hot_read_secs = 0), rounds interleaved. The pulls write
# directly (MLVAULT_DIRECT_IO=on) so the clients' page-cache state does not
# decide; every pulled file is compared with the source.
fleet_n=${BENCH_FLEET:-4}
if [ "$fleet_n" -gt 0 ]; then
  mib=${sizes[0]}; bytes=$((mib * 1048576))
  fleet_src="$work/fleet-src"; mkdir -p "$fleet_src"
  head -c "$bytes" /dev/urandom >"$fleet_src/model.dat"
  printf '[storage]\nhot_read_secs = 0\n' >"$work/cold.toml"
  start_vault vault-cold --config "$work/cold.toml"
  fleet_pid=$started_pid
  cold_addr=$(cat "$work/vault-cold.addr")
  cold_token=$(MLVAULT_ADDR=$cold_addr MLVAULT_TOKEN=$(cat "$work/vault-cold.admin") "$BIN/vault-cli" token create --principal bench --role trainer --namespace bench)
  on_cold() { MLVAULT_ADDR=$cold_addr MLVAULT_TOKEN=$cold_token "$@"; }
  push_quiet bench/fleet "$fleet_src"
  on_cold push_quiet bench/fleet "$fleet_src"
  pull_fleet() {
    local pids=() k failed=0
    for k in $(seq "$fleet_n"); do
      MLVAULT_DIRECT_IO=on "$BIN/vault-cli" pull bench/fleet --no-cache --to "$work/fleet-$k" >/dev/null 2>"$work/fleet-$k.err" &
      pids+=($!)
    done
    for k in "${pids[@]}"; do wait "$k" || failed=1; done
    return "$failed"
  }
  check_fleet() {
    local k
    for k in $(seq "$fleet_n"); do
      cmp "$fleet_src/model.dat" "$work/fleet-$k/model.dat" || { cat "$work/fleet-$k.err" >&2; exit 1; }
      rm -rf "$work/fleet-$k"
    done
  }
  two_places() { printf '%s\n' "$@" | awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}'; }
  hot=() cold=()
  for _ in 1 2 3; do
    hot+=("$(timed pull_fleet)"); check_fleet
    cold+=("$(on_cold timed pull_fleet)"); check_fleet
  done
  printf '\nfleet: %s deploy jobs pull one %s MiB model at once (direct writes); seconds for rounds 1, 2, 3: hot_read_secs %s %s, every read from the device %s; round 3 %sx faster\n' \
    "$fleet_n" "$mib" "${BENCH_HOT_READ_SECS:-default}" "$(two_places "${hot[@]}")" "$(two_places "${cold[@]}")" "$(ratio "${cold[2]}" "${hot[2]}")"
  note fleet "{\"jobs\":$fleet_n,\"size_mib\":$mib,\"hot_rounds_seconds\":[$(IFS=,; echo "${hot[*]}")],\"cold_rounds_seconds\":[$(IFS=,; echo "${cold[*]}")]}"
  kill "$fleet_pid" 2>/dev/null || true
  fleet_pid=""
fi

# --json: the run's figures as one document.
write_json() {
  [ -n "$json_out" ] || return 0
  {
    printf '{"benchmark":"scripts/bench.sh","date":"%s","machine":{"cores":%s,"kernel":"%s","memory_kib":%s},' \
      "$(date -u +%FT%TZ)" "$(nproc)" "$(uname -r)" "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
    printf '"settings":{"reps":%s,"sizes_mib":[%s],"garage_fsync":%s,"refill":%s,"settle_secs":%s,"hot_read_secs":"%s"},"results":[' \
      "$reps" "$(IFS=,; echo "${sizes[*]}")" "${GARAGE_FSYNC:-false}" "$([ -n "${BENCH_REFILL:-}" ] && echo true || echo false)" "${BENCH_SETTLE:-0}" "${BENCH_HOT_READ_SECS:-default}"
    paste -sd, "$results"
    printf ']}\n'
  } >"$json_out"
  echo "bench: figures written to $json_out" >&2
}
[ -n "${BENCH_SKIP_WARM:-}" ] && { write_json; exit 0; }
# Warm restart: a 4 GiB, 8-file model already pulled and verified.
model="$work/model8"; mkdir -p "$model"
for i in 0 1 2 3 4 5 6 7; do head -c $((512 * 1048576)) /dev/urandom >"$model/shard-$i.dat"; done
sync; t0=$(now); "$BIN/vault-cli" push bench/model8 "$model" >/dev/null 2>"$work/push8.err"; t1=$(now)
push8=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
sync; t0=$(now); "$BIN/vault-cli" pull bench/model8 --to "$work/deploy" >/dev/null 2>"$work/pull8.err"; t1=$(now)
pull8=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
printf '\n4 GiB, 8-file model, --parallel 4 (default), one run: push %s MiB/s (CLI RSS %s KiB), first pull %s MiB/s (CLI RSS %s KiB), server peak RSS so far %s KiB\n' \
  "$(rate $((4096 * 1048576)) "$push8")" "$(rss_cli "$work/push8.err")" "$(rate $((4096 * 1048576)) "$pull8")" "$(rss_cli "$work/pull8.err")" "$(rss_server)"
best=""
for _ in 1 2 3 4 5; do
  t0=$(now); "$BIN/vault-cli" --json pull bench/model8 --to "$work/deploy" >"$work/warm.json" 2>/dev/null; t1=$(now)
  ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", (b-a)*1000}')
  if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
done
dl=$(sed -n 's/.*"downloaded_bytes": \([0-9]*\).*/\1/p' "$work/warm.json")
printf 'warm re-pull of a 4 GiB, 8-file model (cache + verified-state records): best of 5 = %s ms, downloaded %s bytes\n' "$best" "$dl"
warm_ms=$best
# Re-push of the same unchanged model: digests come from the push cache
# (the first push below records them; the files are older than 2 s by now).
"$BIN/vault-cli" push bench/model8 "$model" >/dev/null 2>&1
best=""
for _ in 1 2 3; do
  t0=$(now); "$BIN/vault-cli" --json push bench/model8 "$model" >"$work/repush.json" 2>/dev/null; t1=$(now)
  ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", (b-a)*1000}')
  if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
done
hashed=$(sed -n 's/.*"hashed_bytes": \([0-9]*\).*/\1/p' "$work/repush.json")
sent=$(sed -n 's/.*"uploaded_bytes": \([0-9]*\).*/\1/p' "$work/repush.json")
printf 're-push of the same unchanged model (push digest cache + dedup): best of 3 = %s ms, hashed %s bytes, uploaded %s bytes\n' "$best" "$hashed" "$sent"
note warm "{\"push_8_files_mib_per_s\":$(rate $((4096 * 1048576)) "$push8"),\"first_pull_8_files_mib_per_s\":$(rate $((4096 * 1048576)) "$pull8"),\"warm_repull_ms\":$warm_ms,\"warm_repull_downloaded_bytes\":${dl:-0},\"repush_ms\":$best,\"repush_hashed_bytes\":${hashed:-0},\"repush_uploaded_bytes\":${sent:-0}}"
write_json
printf 'SHA-256 and AES-256-GCM on one core: cargo bench -p vault-crypto --bench stream\n'
