#!/usr/bin/env bash
# Run every fuzz target in fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer)
# for SECS seconds each and print how many inputs each executed.
#
#   scripts/fuzz.sh [SECS] [TARGET...]     default: 180 s, all targets
#
# Needs the nightly toolchain (`rustup toolchain list`); installs cargo-fuzz
# from crates.io when missing. Seeds are committed in fuzz/corpus/<target>;
# what a run discovers goes to fuzz/target/corpus/<target> (not committed),
# crashes to fuzz/artifacts/<target> — replay one with
# `cargo +nightly fuzz run <target> <file>` in fuzz/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-180}
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build >&2
targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cargo +nightly fuzz list)
summary=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "corpus/$t"
  log="target/fuzz-$t.log"
  echo "== $t: ${secs}s" >&2
  if cargo +nightly fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
      -max_total_time="$secs" -max_len=65536 -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see fuzz/$log, fuzz/artifacts/$t)"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  summary+=("$(printf '%-16s %12s execs %8s/s  cov %6s  %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$result")")
done
printf '\nfuzz run, %s s per target, %s\n' "$secs" "$(date -u +%FT%TZ)"
printf '%s\n' "${summary[@]}"
exit $status
