# Sourced by bench/gateway.sh and bench/profile.sh: provision a fresh keyrelay data dir offline and export
# the harness's TARGET_* variables for keyrelay's gateway route. Expects REPO and RUN_DIR to be set.
#
# Creates workspace `bench`, sources `up` and `ups` (http connector -> http://127.0.0.1:$UPSTREAM_PORT, bearer
# credential = the harness's UPSTREAM_SECRET, policy with a per-source rate limit so the limiter runs on every
# request) and one API key with the proxy scope, which wrk sends as `Authorization: Bearer <key>`
# (TARGET_AUTH). The key is deliberately NOT exported as the harness's AGENT_TOKEN: the nginx-proxy anchor
# puts AGENT_TOKEN in a `map`, and with the 53-byte "Bearer kr_..." value nginx refuses to start ("could not
# build map_hash, you should increase map_hash_bucket_size: 64"). Anchors and candidates keep the harness's
# own token; each target is sent the token it accepts.

HARNESS="${HARNESS:-$REPO/../shared/bench}"
[ -x "$HARNESS/run.sh" ] || { echo "harness not found at $HARNESS (set HARNESS=)" >&2; exit 1; }
HARNESS="$(cd "$HARNESS" && pwd)"
KEYRELAY="${KEYRELAY:-$REPO/.venv/bin/keyrelay}"
[ -x "$KEYRELAY" ] || { echo "keyrelay CLI not found at $KEYRELAY (install the repo into .venv, or set KEYRELAY=)" >&2; exit 1; }
export HARNESS
export UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
export UPSTREAM_SECRET="${UPSTREAM_SECRET:-upstream-secret-0123456789}"   # the harness's default
KR_PORT="${KR_PORT:-18200}"
RATE_LIMIT="${RATE_LIMIT-1000000}"   # requests/minute per source (1,000,000 is the policy maximum); empty = none
mkdir -p "$RUN_DIR"

# KR_SRC=<dir> runs the keyrelay package found in that directory;
# KR_REV=<git revision> benchmarks that commit (extracted with `git archive` into the run dir and put first
# on PYTHONPATH) instead of the working tree the venv's editable install points at.
_kr_pp=()
if [ -n "${KR_SRC:-}" ]; then   # any source tree (a directory holding keyrelay/), e.g. a patched copy for an A/B
  _kr_pp=(PYTHONPATH="$(cd "$KR_SRC" && pwd)")
  echo "keyrelay from $KR_SRC" | tee "$RUN_DIR/keyrelay-version.txt" >&2
elif [ -n "${KR_REV:-}" ]; then
  _snap="$RUN_DIR/keyrelay-src-$(git -C "$REPO" rev-parse --short "$KR_REV")"
  rm -rf "$_snap" && mkdir -p "$_snap"
  git -C "$REPO" archive --format=tar "$KR_REV" src | tar -x -C "$_snap"
  _kr_pp=(PYTHONPATH="$_snap/src")
  echo "keyrelay $(git -C "$REPO" rev-parse "$KR_REV") from $_snap/src" | tee "$RUN_DIR/keyrelay-version.txt" >&2
else
  { echo "keyrelay working tree $REPO/src at $(git -C "$REPO" rev-parse HEAD 2>/dev/null)"; \
    git -C "$REPO" status --short -- src 2>/dev/null | sed 's/^/  modified: /'; } > "$RUN_DIR/keyrelay-version.txt"
  head -1 "$RUN_DIR/keyrelay-version.txt" >&2
fi

DATA="$RUN_DIR/keyrelay-data"
rm -rf "$DATA"
_kr_env=(${_kr_pp[@]+"${_kr_pp[@]}"} KEYRELAY_DATA_DIR="$DATA" KEYRELAY_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8 KEYRELAY_LOG_LEVEL=WARNING)
_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
WS=$(env "${_kr_env[@]}" "$KEYRELAY" workspaces create bench | _field id)
_policy='{}'
[ -n "$RATE_LIMIT" ] && _policy="{\"rate_limit_per_minute\": $RATE_LIMIT}"
for _slug in up ups; do
  KR_BENCH_CREDS="{\"bearer_token\": \"$UPSTREAM_SECRET\"}" env "${_kr_env[@]}" "$KEYRELAY" sources add \
    --workspace "$WS" --connector http --name "$_slug" --slug "$_slug" \
    --config "{\"upstream_url\": \"http://127.0.0.1:$UPSTREAM_PORT\"}" --credentials-env KR_BENCH_CREDS \
    --policy "$_policy" >/dev/null
done
KR_KEY=$(env "${_kr_env[@]}" "$KEYRELAY" keys create --workspace "$WS" --scopes proxy --name bench | _field key)
echo "provisioned $DATA: workspace $WS, sources up+ups (policy $_policy), key ${KR_KEY:0:7}..." >&2

_base="http://127.0.0.1:$KR_PORT/api/$WS/proxy"
export TARGET_NAME="${TARGET_NAME:-keyrelay}"
# KR_ENV: extra settings for the served process only, e.g. KR_ENV="KEYRELAY_TOKEN_CACHE_SECONDS=60"
export TARGET_CMD="env ${_kr_env[*]} ${KR_ENV:-} $KEYRELAY serve --port $KR_PORT"
if [ -n "${KR_ENV:-}" ]; then echo "served with $KR_ENV" | tee -a "$RUN_DIR/keyrelay-version.txt" >&2; fi
export TARGET_CWD="$REPO"
export TARGET_URL="$_base/up/small" TARGET_BIG_URL="$_base/up/big" TARGET_STREAM_URL="$_base/ups/big"
export TARGET_AUTH="Bearer $KR_KEY"
unset TARGET_WORKERS_OK TARGET_PID   # `keyrelay serve` is one process: no multi-worker phase for it
export START_TIMEOUT="${START_TIMEOUT:-60}"   # migrations + vault load at start
