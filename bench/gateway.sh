#!/usr/bin/env bash
# Benchmark keyrelay's gateway route with the shared harness (../shared/bench), next to its anchors
# (direct, direct-xcore, nginx-proxy) and the comparison candidates, in the same interleaved rounds.
#
#   bench/gateway.sh                          # 3 rounds x 5 s, keyrelay + uv+rawasgi+aiohttp + rawproto
#   ROUNDS=2 bench/gateway.sh                 # quicker
#   RATE_LIMIT= bench/gateway.sh              # sources without a rate limit (ablation)
#   CANDIDATES=none TESTS=small,c1 bench/gateway.sh
#
# It provisions a fresh data dir offline with the CLI: workspace `bench`, sources `up` and `ups` (http
# connector -> http://127.0.0.1:$UPSTREAM_PORT, bearer credential = the harness's UPSTREAM_SECRET, policy
# with a per-source rate limit so the limiter runs on every request), and one API key with the proxy scope,
# which wrk sends as `Authorization: Bearer <key>` (TARGET_AUTH). The key is deliberately NOT exported as the
# harness's AGENT_TOKEN: the nginx-proxy anchor puts AGENT_TOKEN in a `map`, and with a 53-byte
# "Bearer kr_..." value nginx fails to start ("could not build map_hash, you should increase
# map_hash_bucket_size: 64"). The anchors and candidates keep the harness's own token; each target is sent
# the token it accepts.
# keyrelay runs as one process (`keyrelay serve`, uvicorn + uvloop + httptools), pinned by the harness.
# Everything else (knobs, output) is the harness's: see ../shared/bench/README.md.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${HARNESS:-$REPO/../shared/bench}"
[ -x "$HARNESS/run.sh" ] || { echo "harness not found at $HARNESS (set HARNESS=)" >&2; exit 1; }
KEYRELAY="${KEYRELAY:-$REPO/.venv/bin/keyrelay}"
[ -x "$KEYRELAY" ] || { echo "keyrelay CLI not found at $KEYRELAY (install the repo into .venv, or set KEYRELAY=)" >&2; exit 1; }

export PERF_DIR="${PERF_DIR:-${TMPDIR:-/tmp}/perf}"
export RUN_DIR="${RUN_DIR:-$PERF_DIR/run-keyrelay-$(date +%Y%m%d-%H%M%S)}"
export UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
export UPSTREAM_SECRET="${UPSTREAM_SECRET:-upstream-secret-0123456789}"   # the harness's default
KR_PORT="${KR_PORT:-18200}"
RATE_LIMIT="${RATE_LIMIT-1000000}"   # requests/minute per source (1,000,000 is the policy maximum); empty = none
mkdir -p "$RUN_DIR"

# ---- provision (offline, straight into the database)
DATA="$RUN_DIR/keyrelay-data"
rm -rf "$DATA"
export KEYRELAY_DATA_DIR="$DATA" KEYRELAY_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8 KEYRELAY_LOG_LEVEL=WARNING
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
WS=$("$KEYRELAY" workspaces create bench | field id)
policy='{}'
[ -n "$RATE_LIMIT" ] && policy="{\"rate_limit_per_minute\": $RATE_LIMIT}"
export KR_BENCH_CREDS="{\"bearer_token\": \"$UPSTREAM_SECRET\"}"
for slug in up ups; do
  "$KEYRELAY" sources add --workspace "$WS" --connector http --name "$slug" --slug "$slug" \
    --config "{\"upstream_url\": \"http://127.0.0.1:$UPSTREAM_PORT\"}" --credentials-env KR_BENCH_CREDS \
    --policy "$policy" >/dev/null
done
unset KR_BENCH_CREDS
KR_KEY=$("$KEYRELAY" keys create --workspace "$WS" --scopes proxy --name bench | field key)
echo "provisioned $DATA: workspace $WS, sources up+ups (policy $policy), key ${KR_KEY:0:7}..." >&2

# ---- run the harness with keyrelay as the target
BASE="http://127.0.0.1:$KR_PORT/api/$WS/proxy"
export TARGET_NAME="${TARGET_NAME:-keyrelay}"
export TARGET_CMD="env KEYRELAY_DATA_DIR=$DATA KEYRELAY_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8 KEYRELAY_LOG_LEVEL=WARNING $KEYRELAY serve --port $KR_PORT"
export TARGET_CWD="$REPO"
export TARGET_URL="$BASE/up/small" TARGET_BIG_URL="$BASE/up/big" TARGET_STREAM_URL="$BASE/ups/big"
export TARGET_AUTH="Bearer $KR_KEY"
unset TARGET_WORKERS_OK TARGET_PID   # `keyrelay serve` is one process: no multi-worker phase for it
export CANDIDATES="${CANDIDATES:-uv+rawasgi+aiohttp,rawproto(uvloop+httptools)}"
export ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}" SCALING="${SCALING:-0}"
# keyrelay applies migrations and loads the vault at start: give it time
export START_TIMEOUT="${START_TIMEOUT:-60}"
echo "run dir: $RUN_DIR" >&2
exec "$HARNESS/run.sh" "$@"
