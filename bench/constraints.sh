#!/usr/bin/env bash
# A/B: what a narrowed token costs on the gateway (docs/security.md: narrow tokens). One keyrelay process,
# wrk alternating between three API keys of the same workspace on the 1 KiB route:
#   plain        no constraints (the hot path as it was)
#   constrained  sources + methods + paths constraints (checked in the pipeline's front half, no I/O)
#   budgeted     a request budget too large to run out (one conditional database write per request)
#
#   bench/constraints.sh                  # 5 rounds x 5 s each
#   QUICK_ROUNDS=3 DURATION=3 bench/constraints.sh
#   STEPS="profile-plain profile-narrow" bench/constraints.sh   # py-spy profiles under load with each key
#
# Provisioning is bench/provision.sh's (fresh data dir, sources up/ups, rate limit on); the two extra keys are
# made with the CLI, offline. Result: $RUN_DIR/constraints.md. Not a test: timings are never asserted.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PERF_DIR="${PERF_DIR:-${TMPDIR:-/tmp}/perf}"
export RUN_DIR="${RUN_DIR:-$PERF_DIR/run-constraints-$(date +%Y%m%d-%H%M%S)}"
export PYSPY="${PYSPY:-$REPO/.venv/bin/py-spy}"   # for the profile-* steps (bench/profile.sh installs it)
# shellcheck source=provision.sh
. "$REPO/bench/provision.sh"
export ROUNDS="${ROUNDS:-1}" DURATION="${DURATION:-5}" QUICK_ROUNDS="${QUICK_ROUNDS:-5}"

_narrow='{"sources": ["up", "ups"], "methods": ["GET", "HEAD"], "paths": ["/small", "/big", "/echo", "/stream/**"]}'
KR_KEY_NARROW=$(env "${_kr_env[@]}" "$KEYRELAY" keys create --workspace "$WS" --scopes proxy --name narrow \
  --constraints "$_narrow" | _field key)
KR_KEY_BUDGET=$(env "${_kr_env[@]}" "$KEYRELAY" keys create --workspace "$WS" --scopes proxy --name budget \
  --constraints '{"budget": {"requests": 1000000000000, "per": null}}' | _field key)
export KR_KEY_NARROW KR_KEY_BUDGET

command -v nginx >/dev/null && command -v wrk >/dev/null && [ -x "${VENV:-$PERF_DIR/venv}/bin/uvicorn" ] || CANDIDATES=none TESTS= ROUNDS=0 CHECKS=0 \
  RUN_DIR="$RUN_DIR/setup" "$HARNESS/run.sh" >/dev/null
echo "run dir: $RUN_DIR" >&2
for step in ${STEPS:-constraints}; do
  case "$step" in   # profile-plain / profile-narrow / profile-budget: bench/profile.sh's profile with that key
    profile-plain) RUN_DIR="$RUN_DIR/$step" python3 "$REPO/bench/krbench.py" profile ;;
    profile-narrow) PROFILE_AUTH="Bearer $KR_KEY_NARROW" RUN_DIR="$RUN_DIR/$step" python3 "$REPO/bench/krbench.py" profile ;;
    profile-budget) PROFILE_AUTH="Bearer $KR_KEY_BUDGET" RUN_DIR="$RUN_DIR/$step" python3 "$REPO/bench/krbench.py" profile ;;
    *) python3 "$REPO/bench/krbench.py" "$step" ;;
  esac
done
