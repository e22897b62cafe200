#!/usr/bin/env bash
# The mlvault quickstart: build, start a dev server on the embedded default
# (redb + a local blob directory, in ./vault-dev-data), push an example model
# directory, pull it back verified, and show it. Stops the server at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building vault-server and vault-cli (release)"
cargo build --release -j2 -p vault-server -p vault-cli
BIN="$PWD/target/release"
[ -n "${CARGO_TARGET_DIR:-}" ] && BIN="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> starting a dev server (data in ./vault-dev-data)"
"$BIN/vault-server" dev --data-dir vault-dev-data --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
if ! grep -q '^listening on ' "$work/server.out"; then
  echo "server did not start:" >&2; cat "$work/server.err" >&2; exit 1
fi
MLVAULT_ADDR=$(sed -n 's/^listening on //p' "$work/server.out" | head -1)
MLVAULT_TOKEN=$(cat vault-dev-data/dev-trainer.token)
export MLVAULT_ADDR MLVAULT_TOKEN
echo "    server at $MLVAULT_ADDR"

echo "==> making an example model directory"
model="$work/tiny-model"
mkdir -p "$model/tokenizer"
# A real safetensors file (the admission scan checks its header): an
# 8-byte little-endian header length, the JSON header, then 32 MiB of data.
n=$((32 * 1024 * 1024))
header="{\"weight\":{\"dtype\":\"U8\",\"shape\":[$n],\"data_offsets\":[0,$n]}}"
hlen=${#header}
printf "$(printf '\\x%02x\\x%02x' $((hlen & 255)) $((hlen >> 8)))\\x00\\x00\\x00\\x00\\x00\\x00" >"$model/model.safetensors"
printf '%s' "$header" >>"$model/model.safetensors"
head -c "$n" /dev/urandom >>"$model/model.safetensors"
echo '{"architecture": "tiny", "layers": 2, "hidden": 64}' >"$model/config.json"
echo '{"vocab": ["<s>", "</s>", "hello"]}' >"$model/tokenizer/vocab.json"

key=vault-dev-data/quickstart-signing.key
if [ ! -f "$key" ]; then
  echo "==> vault-cli keygen (the training pipeline's signing key)"
  "$BIN/vault-cli" keygen --out "$key"
fi
echo "==> vault-cli publisher add demo (admin: only this key may sign demo/*)"
MLVAULT_TOKEN=$(cat vault-dev-data/dev-admin.token) "$BIN/vault-cli" publisher add demo "$key.pub"
echo "==> vault-cli push demo/tiny-model --sign-key … --alias staging"
"$BIN/vault-cli" push demo/tiny-model "$model" --sign-key "$key" --alias staging
echo "==> vault-cli pull demo/tiny-model:staging --trust … --to <dir>"
"$BIN/vault-cli" --state-dir "$work/client-state" pull demo/tiny-model:staging --trust "$key.pub" \
  --server-key vault-dev-data/server-signing.pub --to "$work/pulled"
echo "==> vault-cli verify <dir> --trust …"
"$BIN/vault-cli" verify "$work/pulled" --trust "$key.pub"
diff -r --exclude=.mlvault "$model" "$work/pulled"
echo "    byte-for-byte identical to the source"
echo "==> vault-cli ls / show"
"$BIN/vault-cli" ls
"$BIN/vault-cli" show demo/tiny-model | head -8
echo
echo "quickstart OK. Start the dev server again with:"
echo "  $BIN/vault-server dev"
