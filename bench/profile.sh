#!/usr/bin/env bash
# Where keyrelay's time goes on the gateway route, and how its memory behaves under load.
#
#   bench/profile.sh                      # py-spy profile under 1 KiB load (c32) + RSS under 1 MiB stream / 1 KiB load
#   PROFILE_SECONDS=30 bench/profile.sh
#   PROFILE_PATH=stream STEPS=profile bench/profile.sh   # 1 MiB streamed (or big: 1 MiB buffered)
#   PROFILE_NATIVE=1 bench/profile.sh     # include native (Cython/C) frames: uvloop, httptools, aiohttp's parser
#   STEPS=profile bench/profile.sh        # or STEPS=memory
#
# Same setup as bench/gateway.sh (fresh data dir, upstream nginx from the shared harness, keyrelay pinned
# to PROXY_CPUS=0, wrk + upstream on LOAD_CPUS=1). Output: $RUN_DIR/profile.md (top functions by self
# and inclusive time, by component, by pipeline step), profile.collapsed.txt (raw stacks), memory.md.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PERF_DIR="${PERF_DIR:-${TMPDIR:-/tmp}/perf}"
export RUN_DIR="${RUN_DIR:-$PERF_DIR/profile-keyrelay-$(date +%Y%m%d-%H%M%S)}"
# shellcheck source=provision.sh
. "$REPO/bench/provision.sh"

PYSPY="${PYSPY:-$REPO/.venv/bin/py-spy}"
if [ ! -x "$PYSPY" ]; then
  "$REPO/.venv/bin/pip" install -q py-spy
fi
export PYSPY
command -v nginx >/dev/null && command -v wrk >/dev/null && [ -x "${VENV:-$PERF_DIR/venv}/bin/uvicorn" ] || CANDIDATES=none TESTS= ROUNDS=0 CHECKS=0 \
  RUN_DIR="$RUN_DIR/setup" "$HARNESS/run.sh" >/dev/null
echo "run dir: $RUN_DIR" >&2
for step in ${STEPS:-profile memory}; do
  python3 "$REPO/bench/krbench.py" "$step"
done
