"""Stores are built only from the source's own config and credentials: never from the environment, never
through an ambient proxy, never towards an address the SSRF policy refuses."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from keyrelay.errors import DestinationNotAllowed, InvalidRequest, SsrfBlocked, UpstreamAuthFailed
from keyrelay.files import gcsauth, listing, reading
from keyrelay.files.stores import StoreFactory
from keyrelay.model import Credentials
from support.storage import BACKENDS, Storage, make_source

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
CANARY = "ENVCANARY0123456789"
ENV = {
    "AWS_ACCESS_KEY_ID": CANARY, "AWS_SECRET_ACCESS_KEY": CANARY, "AWS_SESSION_TOKEN": CANARY, "AWS_TOKEN": CANARY,
    "AWS_SKIP_SIGNATURE": "true", "AWS_REQUEST_PAYER": "true", "AWS_SERVER_SIDE_ENCRYPTION": "sse-c",
    "AWS_SSE_CUSTOMER_KEY_BASE64": "RU5WQ0FOQVJZMDEyMzQ1Njc4OUVOVkNBTkFSWTAxMjM=", "AWS_ENDPOINT": "http://10.9.9.9",
    "AZURE_STORAGE_ACCOUNT_KEY": "RU5WQ0FOQVJZMDEyMzQ1Njc4OQ==", "AZURE_STORAGE_SAS_KEY": f"sig={CANARY}",
    "AZURE_STORAGE_TOKEN": CANARY, "AZURE_ENCRYPTION_KEY": "RU5WQ0FOQVJZMDEyMzQ1Njc4OUVOVkNBTkFSWTAxMjM=",
    "GOOGLE_BEARER_TOKEN": CANARY, "GOOGLE_SERVICE_ACCOUNT_KEY": "{}", "GOOGLE_BASE_URL": "http://10.9.9.9",
    "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
}


async def open_fs(spec: dict[str, Any], allow: tuple[Any, ...] = LOOPBACK) -> Any:
    factory = StoreFactory(allow=allow, local_roots=())
    return await factory.open(make_source(spec["connector"], spec["config"]), Credentials(spec["credentials"]))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_environment_credentials_and_proxies_are_never_used(emulators: Storage, backend: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    emulators.put(backend, "env/a.txt", b"hello")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    fs = await open_fs(emulators.source(backend, prefix="env"))
    opened = await reading.open_file(fs, "a.txt", range_header="bytes=1-3", max_span=100)
    assert opened.body is not None and b"".join([c async for c in opened.body]) == b"ell"
    page = await listing.list_page(fs, source_id="src-1", prefix="", token=None, limit=10)
    assert [e.path for e in page.files] == ["a.txt"]
    seen = emulators.proxies[backend].seen
    assert len(seen) >= 3 and not any(CANARY in v for s in seen for v in s.headers.values())
    assert not any(k.startswith(("x-amz-server-side-encryption", "x-amz-request-payer", "x-amz-security-token",
                                 "x-ms-encryption")) for s in seen for k in s.headers)
    assert all(h in s.headers for s in seen for h in ("authorization",)) or backend == "gcs"
    if backend == "gcs":  # our own read-only self-signed JWT, not obstore's
        claims = [json.loads(base64.urlsafe_b64decode(s.headers["authorization"].split(".")[1] + "==")) for s in seen]
        assert {c["scope"] for c in claims} == {gcsauth.SCOPE}


async def test_custom_endpoints_are_checked_before_every_request(emulators: Storage) -> None:
    spec = emulators.source("s3")
    factory = StoreFactory(allow=(), local_roots=())  # production policy: loopback is not allowed
    with pytest.raises(SsrfBlocked):
        await factory.open(make_source("s3", spec["config"]), Credentials(spec["credentials"]))
    assert emulators.proxies["s3"].seen == []


async def test_stores_are_cached_per_source_content(emulators: Storage) -> None:
    spec = emulators.source("s3")
    factory = StoreFactory(allow=LOOPBACK, local_roots=())
    src = make_source("s3", spec["config"])
    a = await factory.open(src, Credentials(spec["credentials"]))
    assert await factory.open(src, Credentials(dict(spec["credentials"]))) is a
    rotated = {**spec["credentials"], "secret_access_key": "rotated"}
    assert await factory.open(src, Credentials(rotated)) is not a


async def test_local_roots_are_an_allowlist(tmp_path: Path) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    (allowed / "sub").mkdir(parents=True)
    other.mkdir()
    factory = StoreFactory(allow=(), local_roots=(allowed,))
    fs = await factory.open(make_source("local", {"root": str(allowed / "sub")}), Credentials({}))
    assert fs.local_dir == (allowed / "sub").resolve()
    for root in (other, allowed / "sub" / ".." / ".." / "other"):
        with pytest.raises(DestinationNotAllowed):
            await factory.open(make_source("local", {"root": str(root)}, sid=str(root)), Credentials({}))
    with pytest.raises(DestinationNotAllowed):
        await StoreFactory(allow=(), local_roots=()).open(make_source("local", {"root": str(allowed)}),
                                                          Credentials({}))


async def test_unusable_configuration_is_reported_without_details(emulators: Storage) -> None:
    spec = emulators.source("gcs")
    for bad in ("not json", "{}", '{"client_email": "x", "private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA"}'):
        with pytest.raises(UpstreamAuthFailed) as info:
            await open_fs({**spec, "credentials": {"service_account_json": bad}})
        assert "AAAA" not in info.value.message
    spec = emulators.source("s3")
    with pytest.raises(InvalidRequest):
        await open_fs({**spec, "config": {**spec["config"], "prefix": "a/../b"}})
    with pytest.raises(InvalidRequest):
        await open_fs({**spec, "connector": "http"})
