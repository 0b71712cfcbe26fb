#!/usr/bin/env bash
# A/B of two keyrelay builds on the gateway route, both served at once (each with its own data dir and port,
# pinned to the same core), wrk alternating between them: QUICK_ROUNDS pairs of DURATION s of 1 KiB at CONNS.
# Host noise that lasts longer than a round slows both alike, so the median of the per-round ratios is the
# figure (B / A: above 1, B is faster).
#
#   A_REV=29d3318 bench/builds.sh                  # A = that commit, B = the working tree
#   A_REV=29d3318 B_REV=436dc51 bench/builds.sh
#   QUICK_ROUNDS=12 DURATION=3 A_REV=... bench/builds.sh
#   BUILDS_PATH=stream CONNS=8 A_REV=... bench/builds.sh   # 1 MiB streamed (big: 1 MiB buffered; default small)
#
# Provisioning is bench/provision.sh's, once per build (each build's own CLI and migrations). Result:
# $RUN_DIR/builds.md. Not a test: timings are never asserted.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PERF_DIR="${PERF_DIR:-${TMPDIR:-/tmp}/perf}"
export RUN_DIR="${RUN_DIR:-$PERF_DIR/run-builds-$(date +%Y%m%d-%H%M%S)}"
: "${A_REV:?set A_REV to the baseline commit}"
mkdir -p "$RUN_DIR"

_provision() {  # label, revision (empty: the working tree), port -> $RUN_DIR/label.env
  (
    export RUN_DIR="$RUN_DIR/$1" KR_PORT="$3" TARGET_NAME="$1"
    if [ -n "$2" ]; then export KR_REV="$2"; else unset KR_REV; fi
    # shellcheck source=provision.sh
    . "$REPO/bench/provision.sh"
    { printf 'CMD=%q\n' "$TARGET_CMD"; printf 'URL=%q\n' "$TARGET_URL"; printf 'AUTH=%q\n' "$TARGET_AUTH"
      printf 'BIG_URL=%q\n' "$TARGET_BIG_URL"; printf 'STREAM_URL=%q\n' "$TARGET_STREAM_URL"; } \
      > "$RUN_DIR/../$1.env"
  )
}
_provision A "$A_REV" 18200
_provision B "${B_REV:-}" 18201
HARNESS="${HARNESS:-$REPO/../shared/bench}"
HARNESS="$(cd "$HARNESS" && pwd)"
export HARNESS ROUNDS="${ROUNDS:-1}" DURATION="${DURATION:-4}" QUICK_ROUNDS="${QUICK_ROUNDS:-8}"
export UPSTREAM_PORT="${UPSTREAM_PORT:-18080}" UPSTREAM_SECRET="${UPSTREAM_SECRET:-upstream-secret-0123456789}"
command -v nginx >/dev/null && command -v wrk >/dev/null && [ -x "${VENV:-$PERF_DIR/venv}/bin/uvicorn" ] || CANDIDATES=none TESTS= ROUNDS=0 CHECKS=0 \
  RUN_DIR="$RUN_DIR/setup" "$HARNESS/run.sh" >/dev/null
echo "run dir: $RUN_DIR" >&2
python3 "$REPO/bench/krbench.py" builds
