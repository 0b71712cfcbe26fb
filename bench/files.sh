#!/usr/bin/env bash
# Read throughput of one large object through keyrelay's file route vs straight from the S3 emulator (moto),
# and keyrelay's resident memory while it streams.
#
#   bench/files.sh                   # 100 MiB object, 5 downloads each way
#   SIZE_MIB=256 ROUNDS=3 bench/files.sh
#
# Everything runs on 127.0.0.1: moto_server (from the test extra), `keyrelay serve` (one process, uvicorn +
# uvloop + httptools) provisioned offline with the CLI (workspace, s3 source pointing at moto, an API key with
# the `files` scope), and curl as the client for both paths. "direct" is an unsigned GET to moto (moto does not
# check signatures); "keyrelay" adds auth, the pipeline, obstore's SigV4-signed GET through the egress guard
# and the streaming door. RSS is sampled from /proc/<keyrelay pid>/status every 10 ms while the downloads run.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$REPO/.venv/bin/python"
KEYRELAY="$REPO/.venv/bin/keyrelay"
[ -x "$KEYRELAY" ] && [ -x "$REPO/.venv/bin/moto_server" ] || {
  echo "install the repo with its test extra first: .venv/bin/pip install -e '.[test]'" >&2; exit 1; }
SIZE_MIB="${SIZE_MIB:-100}"
ROUNDS="${ROUNDS:-5}"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/kr-files-bench.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$RUN"; }
trap cleanup EXIT
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

MOTO_PORT=$(port); KR_PORT=$(port)
"$REPO/.venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN/moto.log" 2>&1 & PIDS+=($!)
wait_port "$MOTO_PORT" || { cat "$RUN/moto.log" >&2; exit 1; }
MOTO="http://127.0.0.1:$MOTO_PORT"
"$PY" - "$MOTO" "$SIZE_MIB" "$RUN/big.bin" <<'EOF'
import os, sys, boto3
from botocore.config import Config
url, mib, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
block = os.urandom(1 << 20)
with open(path, "wb") as f:
    for _ in range(mib):
        f.write(block)
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIABENCH",
                  aws_secret_access_key="bench-secret", config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="bench")
s3.upload_file(path, "bench", "big.bin")
os.unlink(path)
EOF

export KEYRELAY_DATA_DIR="$RUN/data" KEYRELAY_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8 KEYRELAY_LOG_LEVEL=WARNING
field() { "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
WS=$("$KEYRELAY" workspaces create bench | field id)
export KR_BENCH_CREDS='{"access_key_id": "AKIABENCH", "secret_access_key": "bench-secret"}'
SRC=$("$KEYRELAY" sources add --workspace "$WS" --connector s3 --name big --slug big --credentials-env KR_BENCH_CREDS \
  --config "{\"bucket\": \"bench\", \"endpoint_url\": \"$MOTO\"}" | field id)
unset KR_BENCH_CREDS
KEY=$("$KEYRELAY" keys create --workspace "$WS" --scopes files --name bench | field key)
"$KEYRELAY" serve --port "$KR_PORT" >"$RUN/kr.log" 2>&1 & KR_PID=$!; PIDS+=("$KR_PID")
wait_port "$KR_PORT" || { cat "$RUN/kr.log" >&2; exit 1; }

rss() { awk '/^VmRSS/ {print $2}' "/proc/$KR_PID/status"; }
fetch() { curl -s -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\n' "$@"; }
KR_URL="http://127.0.0.1:$KR_PORT/api/v1/sonar/files/$SRC/get/big.bin"
fetch -H "Authorization: Bearer $KEY" "$KR_URL" >/dev/null   # warm up: store built, connections open
BASE_RSS=$(rss)
( peak=0; while kill -0 "$KR_PID" 2>/dev/null && [ ! -f "$RUN/stop" ]; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
  echo "$peak" >"$RUN/peak"; sleep 0.01; done ) & SAMPLER=$!
: >"$RUN/direct"; : >"$RUN/kr"
for _ in $(seq "$ROUNDS"); do
  fetch "$MOTO/bench/big.bin" >>"$RUN/direct"
  fetch -H "Authorization: Bearer $KEY" "$KR_URL" >>"$RUN/kr"
done
touch "$RUN/stop"; wait "$SAMPLER" || true
"$PY" - "$RUN/direct" "$RUN/kr" "$BASE_RSS" "$(cat "$RUN/peak")" "$SIZE_MIB" "$ROUNDS" <<'EOF'
import statistics, sys
def load(path):
    rows = [line.split() for line in open(path) if line.strip()]
    assert all(r[0] == "200" for r in rows), rows
    return [float(r[2]) / (1 << 20) for r in rows]
direct, kr = load(sys.argv[1]), load(sys.argv[2])
base, peak, mib, rounds = int(sys.argv[3]) / 1024, int(sys.argv[4]) / 1024, sys.argv[5], sys.argv[6]
print(f"object: {mib} MiB, {rounds} downloads each way (curl, 127.0.0.1)")
print(f"direct from moto : median {statistics.median(direct):7.1f} MiB/s  (min {min(direct):.1f}, max {max(direct):.1f})")
print(f"through keyrelay : median {statistics.median(kr):7.1f} MiB/s  (min {min(kr):.1f}, max {max(kr):.1f})")
print(f"keyrelay RSS     : {base:.1f} MiB before, peak {peak:.1f} MiB while streaming (+{peak - base:.1f} MiB)")
EOF
