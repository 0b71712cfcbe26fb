"""The file routes end to end: keyrelay in-process, real emulators for S3, Azure Blob and GCS, and
tmp dirs for local sources. Every emulator sits behind a recording proxy, so the tests can check exactly which
keys and headers reached storage (docs/security.md)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer, logged
from support.storage import AZ_ACCOUNT, BACKENDS, BUCKET, Seen, Storage

DATA = bytes(range(256)) * 40  # 10240 bytes
MAX_RANGE = 4096
ALL = (*BACKENDS, "local")
TREE = {"root/docs/a.txt": DATA, "root/docs/b b.txt": b"bee", "root/docs/sub/c.txt": b"sea",
        "root/docsX/y.txt": b"why", "root/e.bin": b"", "outside/secret.txt": b"TOP-SECRET"}
MANY = [f"root/many/{i:02d}.txt" for i in range(25)]


@pytest.fixture(scope="module")
def seeded(storage: Storage) -> Storage:
    for key, data in TREE.items():
        storage.put_all(key, data, "text/plain" if key.endswith(".txt") else "application/octet-stream")
    for key in MANY:
        storage.put_all(key, key.encode())
    return storage


def _local_tree(base: Path) -> Path:
    for key, data in {**TREE, **{k: k.encode() for k in MANY}}.items():
        path = base / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink(base / "outside", base / "root" / "docs" / "link")
    os.symlink(base / "outside" / "secret.txt", base / "root" / "flink.txt")
    return base / "root"


@pytest.fixture
def kr_settings(tmp_path: Path) -> dict[str, Any]:
    return {"data_dir": tmp_path / "data", "local_roots": str(tmp_path / "local"), "max_range_bytes": MAX_RANGE}


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, seeded: Storage, tmp_path: Path) -> dict[str, Any]:
    seeded.clear()
    ws = admin.workspace("files")
    sources = {}
    for backend in BACKENDS:
        spec = seeded.source(backend, prefix="root")
        sources[backend] = _source(admin, ws, backend, spec)
    local_root = _local_tree(tmp_path / "local")
    sources["local"] = _source(admin, ws, "local", {"connector": "local", "config": {"root": str(local_root)},
                                                   "credentials": {}})
    token = admin.scoped_token("files")
    return {"kr": kr, "ws": ws, "src": sources, "auth": {"Authorization": f"Bearer {token}"}, "token": token,
            "storage": seeded}


def _source(admin: Admin, ws: str, slug: str, spec: dict[str, Any]) -> dict[str, Any]:
    r = admin.post("/api/v1/sources", {"workspace_id": ws, "name": slug, "slug": slug.replace("_", "-"), **spec})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def url(env: dict[str, Any], backend: str, action: str, tail: str = "") -> str:
    return f"{env['kr'].url}/api/v1/sonar/files/{env['src'][backend]['id']}/{action}/{tail}"


def raw_get(kr: KeyrelayServer, raw_path: bytes, token: str, extra: bytes = b"") -> tuple[int, bytes]:
    """Send a request line byte for byte (httpx would normalise dot segments)."""
    with socket.create_connection(("127.0.0.1", kr.port), timeout=10) as s:
        s.sendall(b"GET " + raw_path + b" HTTP/1.1\r\nHost: kr\r\nAuthorization: Bearer " + token.encode()
                  + b"\r\n" + extra + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def keys_seen(seen: list[Seen]) -> list[str]:
    """Every object key or list prefix the emulators were asked about (decoded)."""
    out = []
    for s in seen:
        parts = urlsplit(s.raw_path)
        query = parse_qs(parts.query)
        path = unquote(parts.path)
        if path.startswith(f"/{AZ_ACCOUNT}/"):
            path = path[len(AZ_ACCOUNT) + 1:]
        assert path.startswith(f"/{BUCKET}"), s.raw_path
        key = path[len(BUCKET) + 2:]
        out.append(query["prefix"][0] if "prefix" in query else key)
    return out


@pytest.mark.parametrize("backend", ALL)
def test_list_is_recursive_segment_based_and_relative(env: dict[str, Any], backend: str) -> None:
    r = httpx.get(url(env, backend, "list", "docs"), headers=env["auth"])
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    assert [f["path"] for f in files] == ["docs/a.txt", "docs/b b.txt", "docs/sub/c.txt"]  # no docsX/, no link/
    first = files[0]
    assert first["size"] == len(DATA) and first["last_modified"].endswith("Z") and first["etag"].startswith('"')
    assert "next_page_token" not in r.json()
    whole = httpx.get(url(env, backend, "list"), headers=env["auth"], params={"limit": 1000}).json()["files"]
    paths = [f["path"] for f in whole]
    assert "e.bin" in paths and "docsX/y.txt" in paths and not any("secret" in p or "flink" in p for p in paths)
    assert paths == sorted(paths)
    if backend != "local":
        assert all(k.startswith("root/") for k in keys_seen(env["storage"].proxies[backend].seen))


@pytest.mark.parametrize("backend", ALL)
def test_pagination_walks_every_page_once(env: dict[str, Any], backend: str) -> None:
    got, token, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 10, **({"page_token": token} if token else {})}
        r = httpx.get(url(env, backend, "list", "many/"), headers=env["auth"], params=params)
        assert r.status_code == 200, r.text
        got += [f["path"] for f in r.json()["files"]]
        pages += 1
        token = r.json().get("next_page_token")
        if token is None:
            break
    assert pages == 3 and got == [k.removeprefix("root/") for k in MANY]
    first = httpx.get(url(env, backend, "list", "many"), headers=env["auth"], params={"limit": 10}).json()
    for other in (url(env, backend, "list", "docs"), url(env, "s3" if backend != "s3" else "gcs", "list", "many")):
        r = httpx.get(other, headers=env["auth"], params={"page_token": first["next_page_token"]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "page_token"
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"page_token": "!!"}):
        assert httpx.get(url(env, backend, "list", "many"), headers=env["auth"], params=bad).status_code == 400


@pytest.mark.parametrize("backend", ALL)
def test_get_streams_the_file_with_its_headers(env: dict[str, Any], backend: str) -> None:
    r = httpx.get(url(env, backend, "get", "docs/a.txt"), headers=env["auth"])
    assert r.status_code == 200 and r.content == DATA
    h = r.headers
    assert h["content-length"] == str(len(DATA)) and h["content-type"].startswith("text/plain")
    assert h["accept-ranges"] == "bytes" and h["etag"].startswith('"') and h["last-modified"].endswith("GMT")
    assert h["x-content-type-options"] == "nosniff" and h["content-disposition"].startswith("attachment")
    r = httpx.get(url(env, backend, "get", "docs/b%20b.txt"), headers=env["auth"])
    assert r.status_code == 200 and r.content == b"bee"
    r = httpx.get(url(env, backend, "get", "e.bin"), headers=env["auth"])
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"
    r = httpx.head(url(env, backend, "get", "docs/a.txt"), headers=env["auth"])
    assert r.status_code == 200 and r.headers["content-length"] == str(len(DATA)) and r.content == b""
    r = httpx.get(url(env, backend, "get", "docs/nope.txt"), headers=env["auth"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(url(env, backend, "get", "docs/a.txt"), headers=env["auth"])
    assert r.status_code == 405


RANGES = [("bytes=10-19", 206, (10, 20)), ("bytes=10240-", 416, None), ("bytes=10000-", 206, (10000, 10240)),
          ("bytes=-16", 206, (10224, 10240)), ("bytes=0-", 206, (0, MAX_RANGE)), ("bytes=-99999", 206, (6144, 10240)),
          ("bytes=100-99999", 206, (100, 100 + MAX_RANGE)), ("bytes=0-1,5-9", 416, None),
          ("bytes=99999-100000", 416, None), ("bytes=-0", 416, None), ("bytes=5-1", 400, None),
          ("items=0-1", 400, None), ("bytes=abc", 400, None)]


@pytest.mark.parametrize("backend", ALL)
def test_every_range_form(env: dict[str, Any], backend: str) -> None:
    for header, status, span in RANGES:
        r = httpx.get(url(env, backend, "get", "docs/a.txt"), headers={**env["auth"], "Range": header})
        assert r.status_code == status, (header, r.text)
        if span is not None:
            start, end = span
            assert r.content == DATA[start:end], header
            assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}", header
            assert r.headers["content-length"] == str(end - start)
        elif status == 416:
            assert r.json()["error"]["code"] == "range_not_satisfiable"
    r = httpx.get(url(env, backend, "get", "e.bin"), headers={**env["auth"], "Range": "bytes=0-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"


CORPUS = [b"../outside/secret.txt", b"docs/../../outside/secret.txt", b"%2e%2e/outside/secret.txt",
          b"%2E%2E/outside/secret.txt", b".%2e/outside/secret.txt", b"docs%2f..%2f..%2foutside%2fsecret.txt",
          b"..%2foutside/secret.txt", b"..%5coutside%5csecret.txt", b"..\\outside\\secret.txt",
          b"/outside/secret.txt", b"//outside/secret.txt", b"docs//a.txt", b"docs/./a.txt", b"./docs/a.txt",
          b"docs/a.txt%00.png", b"docs/a%01.txt", b"docs/%7f.txt", b"%252e%252e/outside/secret.txt",
          b"%c0%ae%c0%ae/outside/secret.txt", b"%ef%bc%8e%ef%bc%8e/outside/secret.txt",  # overlong, fullwidth
          b"%e2%80%a5/outside/secret.txt", b"docs%e2%88%95..%e2%88%95x", b"%e2%80%ae/docs/a.txt",  # leader, slash, RLO
          b"docs/%e2%80%8b.txt", b"docs/a.txt%", b"docs/a.txt%2", b"docs/%zz.txt", b".."]


@pytest.mark.parametrize("backend", ALL)
def test_containment_corpus_is_refused_before_storage(env: dict[str, Any], backend: str) -> None:
    base = f"/api/v1/sonar/files/{env['src'][backend]['id']}".encode()
    for tail in CORPUS:
        for action in (b"/get/", b"/list/"):
            status, body = raw_get(env["kr"], base + action + tail, env["token"])
            assert status == 400, (tail, action, body)
    if backend != "local":
        proxy = env["storage"].proxies[backend]
        assert proxy.seen == []  # nothing reached the emulator at all
        status, _ = raw_get(env["kr"], base + b"/get/docs/a.txt", env["token"])
        assert status == 200 and keys_seen(proxy.seen) == ["root/docs/a.txt"]  # positive control


@pytest.mark.parametrize("backend", BACKENDS)
def test_agent_storage_headers_are_never_forwarded(env: dict[str, Any], backend: str) -> None:
    canary = "AGENT-CANARY-7731"
    headers = {**env["auth"], "x-amz-security-token": canary, "x-amz-server-side-encryption-customer-key": canary,
               "x-amz-request-payer": canary, "x-ms-version": canary, "x-ms-encryption-key": canary,
               "x-goog-user-project": canary, "x-goog-encryption-key": canary, "cookie": canary,
               "x-forwarded-for": canary, "user-agent": canary, "if-match": canary}
    assert httpx.get(url(env, backend, "get", "docs/a.txt"), headers=headers).status_code == 200
    assert httpx.get(url(env, backend, "list", "docs"), headers=headers).status_code == 200
    seen = env["storage"].proxies[backend].seen
    assert seen and not any(canary in v or env["token"] in v for s in seen for v in s.headers.values())


def test_file_and_api_sources_are_only_served_by_their_own_doors(env: dict[str, Any], admin: Admin) -> None:
    s3 = env["src"]["s3"]
    r = httpx.get(f"{env['kr'].url}/api/{env['ws']}/proxy/s3/docs/a.txt", headers=env["auth"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_source_type"
    r = httpx.post(f"{env['kr'].url}/api/v1/sonar/apis/{s3['id']}/request", headers=env["auth"],
                   json={"method": "GET", "url": "http://127.0.0.1/x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_source_type"
    api = admin.source(env["ws"], upstream_url="http://127.0.0.1:9", slug="api")
    for action in ("list/docs", "get/docs/a.txt"):
        r = httpx.get(f"{env['kr'].url}/api/v1/sonar/files/{api['id']}/{action}", headers=env["auth"])
        assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_source_type"


def test_scopes_auth_and_tenancy(env: dict[str, Any], admin: Admin) -> None:
    target = url(env, "s3", "get", "docs/a.txt")
    proxy_only = admin.api_key(env["ws"], ["proxy"])
    r = httpx.get(target, headers={"Authorization": f"Bearer {proxy_only}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert env["storage"].proxies["s3"].seen == []  # refused before storage was asked anything
    files_key = admin.api_key(env["ws"], ["files"])
    assert httpx.get(target, headers={"Authorization": f"Bearer {files_key}"}).status_code == 200
    env["storage"].clear()
    assert httpx.get(target).status_code == 401
    assert httpx.get(url(env, "s3", "get", "..%2fx")).status_code == 401  # auth is checked before the path
    other = admin.scoped_token("someone-else")
    theirs = httpx.get(target, headers={"Authorization": f"Bearer {other}"})
    unknown = httpx.get(f"{env['kr'].url}/api/v1/sonar/files/{'0' * 36}/get/docs/a.txt",
                        headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert env["storage"].proxies["s3"].seen == []  # none of the refused requests reached storage


def test_one_log_row_per_request(env: dict[str, Any], admin: Admin) -> None:
    src = env["src"]["gcs"]
    calls = [("get/docs/a.txt", {}), ("get/docs/a.txt", {"Range": "bytes=99999-"}), ("get/nope", {}),
             ("list/docs", {}), ("get/..%2fx", {})]
    for tail, extra in calls:
        httpx.get(f"{env['kr'].url}/api/v1/sonar/files/{src['id']}/{tail}", headers={**env["auth"], **extra})
    httpx.get(f"{env['kr'].url}/api/v1/sonar/files/{src['id']}/get/x")  # no token: still one row
    rows = logged(admin, 6, source_id=src["id"])
    assert sorted(r["status"] for r in rows) == [200, 200, 400, 401, 404, 416]
    assert {r["door"] for r in rows} == {"files"}
    ok = next(r for r in rows if r["path"].endswith("/get/docs/a.txt") and r["status"] == 200)
    assert ok["bytes_out"] == len(DATA) and ok["workspace_id"] == env["ws"]


def test_local_sources_never_follow_symlinks_or_leave_the_allowed_roots(env: dict[str, Any], admin: Admin,
                                                                        tmp_path: Path) -> None:
    for tail in ("flink.txt", "docs/link/secret.txt"):
        r = httpx.get(url(env, "local", "get", tail), headers=env["auth"])
        assert r.status_code == 404, tail
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = admin.post("/api/v1/sources", {"workspace_id": env["ws"], "name": "elsewhere", "slug": "elsewhere",
                                       "connector": "local", "config": {"root": str(elsewhere)}, "credentials": {}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "config.root"  # refused at create time
    r = admin.post("/api/v1/sources", {"workspace_id": env["ws"], "name": "escape", "slug": "escape",
                                       "connector": "local", "config": {"root": str(tmp_path / "local" / "..")},
                                       "credentials": {}})
    assert r.status_code == 400


def test_internal_endpoints_are_refused_at_create(env: dict[str, Any], admin: Admin) -> None:
    for endpoint in ("http://169.254.169.254", "http://10.1.2.3:9000", "http://[::1]:9000"):
        spec = env["storage"].source("s3")
        spec["config"]["endpoint_url"] = endpoint
        r = admin.post("/api/v1/sources", {"workspace_id": env["ws"], "name": "bad", "slug": "bad", **spec})
        assert r.status_code == 422 and r.json()["error"]["code"] == "ssrf_blocked", endpoint


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_a_100_mib_object_streams_with_flat_memory(env: dict[str, Any], admin: Admin, tmp_path: Path) -> None:
    size, block = 100 * 1024 * 1024, os.urandom(1024 * 1024)
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    want = hashlib.sha256(block * (size // len(block))).hexdigest()
    env["storage"].s3_upload_file("big/100m.bin", big)
    big.unlink()
    spec = env["storage"].source("s3", direct=True)
    src = _source(admin, env["ws"], "big", spec)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_kib("VmRSS"))
            time.sleep(0.005)

    digest, got = hashlib.sha256(), 0
    base = _rss_kib("VmRSS")
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with httpx.stream("GET", f"{env['kr'].url}/api/v1/sonar/files/{src['id']}/get/big/100m.bin",
                      headers=env["auth"], timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-length"] == str(size)
        for chunk in r.iter_raw(1024 * 1024):
            digest.update(chunk)
            got += len(chunk)
    stop.set()
    sampler.join()
    assert got == size and digest.hexdigest() == want
    growth_mib = (peak[0] - base) / 1024
    print(f"100 MiB through keyrelay: RSS {base / 1024:.0f} -> peak {peak[0] / 1024:.0f} MiB (+{growth_mib:.1f})")
    assert growth_mib < 32, f"RSS grew by {growth_mib:.1f} MiB while streaming 100 MiB"
