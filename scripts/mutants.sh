#!/usr/bin/env bash
# Mutation testing of the format and name crates with their own tests:
# cargo-mutants changes one operator, constant or return value at a time
# and expects the crate's tests to fail. Every mutant must be caught, or
# be excluded in .cargo/mutants.toml with the reason it cannot be (an
# equivalent mutant). Exits 0 only when none is missed.
#
#   scripts/mutants.sh [PACKAGE...]   default: vault-manifest vault-api vault-crypto
#
# Needs cargo-mutants (`cargo install cargo-mutants --locked`). The tree is
# copied and built apart, so the working copy stays usable meanwhile; the
# report goes to target/mutants (MUTANTS_OUT), its missed.txt names what
# survived. Takes about 10 minutes for the first two crates and an hour for
# vault-crypto on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || {
  echo "mutants: needs cargo-mutants (cargo install cargo-mutants --locked)" >&2
  exit 1
}
# vault-manifest's tests include the DSSE interop test against
# securesystemslib, installed by scripts/test.sh; without it, say so.
pyenv="$HOME/.cache/mlvault/pyenv"
if "$pyenv/bin/python" -c 'import securesystemslib' 2>/dev/null; then
  export MLVAULT_TEST_PYTHON="$pyenv/bin/python"
elif [ -z "${MLVAULT_SKIP_INTEROP:-}" ]; then
  echo "mutants: securesystemslib is not installed (run scripts/test.sh once, or set MLVAULT_SKIP_INTEROP=1)" >&2
  exit 1
fi
packages=("${@:-vault-manifest vault-api vault-crypto}")
# Extra cargo-mutants flags, e.g. MUTANTS_ARGS=--iterate to test only what
# an earlier run in the same output folder did not catch.
read -r -a MUTANTS_ARGS <<<"${MUTANTS_ARGS:-}"
# shellcheck disable=SC2206
packages=(${packages[@]})
args=()
for p in "${packages[@]}"; do args+=(-p "$p"); done
# Exit status 3 means some mutants made the tests hang past the timeout:
# their tests never pass, so they count as caught. 2 means some survived.
status=0
cargo mutants "${args[@]}" --timeout 180 -o "${MUTANTS_OUT:-target/mutants}" "${MUTANTS_ARGS[@]}" || status=$?
if [ "$status" = 3 ]; then
  echo "mutants: every mutant caught (some by hanging the tests past the timeout)"
  exit 0
fi
exit "$status"
