#!/usr/bin/env bash
# Benchmark keyrelay's gateway route with the shared harness (../shared/bench), next to its anchors
# (direct, direct-xcore, nginx-proxy) and comparison candidates, in the same interleaved rounds.
#
#   bench/gateway.sh                      # 3 rounds x 5 s: keyrelay, uv+rawasgi+aiohttp, rawproto + anchors
#   ROUNDS=2 bench/gateway.sh             # quicker
#   RATE_LIMIT= bench/gateway.sh          # sources without a rate limit (ablation)
#   CANDIDATES=none TESTS=small,c1 bench/gateway.sh
#
# Steps: provision a fresh data dir (bench/provision.sh); run the harness's functional checks against
# keyrelay with its two documented deviations verified instead (bench/krbench.py check, in
# $RUN_DIR/preflight); then the harness itself with CHECKS=0, because it would otherwise skip keyrelay on
# `secret_injected` (keyrelay redacts the echoed secret). Knobs and output: ../shared/bench/README.md.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PERF_DIR="${PERF_DIR:-${TMPDIR:-/tmp}/perf}"
export RUN_DIR="${RUN_DIR:-$PERF_DIR/run-keyrelay-$(date +%Y%m%d-%H%M%S)}"
# shellcheck source=provision.sh
. "$REPO/bench/provision.sh"

export CANDIDATES="${CANDIDATES:-uv+rawasgi+aiohttp,rawproto(uvloop+httptools)}"
export ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}" SCALING="${SCALING:-0}"
echo "run dir: $RUN_DIR" >&2

if [ "${KR_CHECKS:-1}" = 1 ]; then
  # run.sh installs wrk/nginx and the harness venv; krbench.py is stdlib only and needs them
  command -v nginx >/dev/null && command -v wrk >/dev/null && [ -x "${VENV:-$PERF_DIR/venv}/bin/uvicorn" ] || CANDIDATES=none TESTS= ROUNDS=0 CHECKS=0 \
    RUN_DIR="$RUN_DIR/setup" "$HARNESS/run.sh" >/dev/null
  RUN_DIR="$RUN_DIR/preflight" python3 "$REPO/bench/krbench.py" check
fi
# other work on this machine (CPU steal inside the VM does not show it): sample it for the whole run
python3 "$REPO/bench/krbench.py" noise $$ "$RUN_DIR/noise.md" &
NOISE_PID=$!
trap 'kill "$NOISE_PID" 2>/dev/null || true' EXIT
rc=0
CHECKS="${CHECKS:-0}" "$HARNESS/run.sh" "$@" || rc=$?
kill "$NOISE_PID" 2>/dev/null || true
wait "$NOISE_PID" 2>/dev/null || true
[ -f "$RUN_DIR/noise.md" ] && { echo; cat "$RUN_DIR/noise.md"; cat "$RUN_DIR/noise.md" >> "$RUN_DIR/summary.md"; }
exit "$rc"
