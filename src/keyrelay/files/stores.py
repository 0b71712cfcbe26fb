"""One obstore store per file source, built from its config and decrypted credentials, nothing else.

obstore's constructors also read `AWS_*`, `AZURE_*` and `GOOGLE_*` environment variables (session tokens, SSE-C
keys, bearer tokens, account keys, endpoints). keyrelay must never sign a customer's request with the
operator's ambient credentials, so every store gets:

* credentials only through a `credential_provider` callback that returns the source's own values (a provider
  overrides every credential the environment offers; without one obstore would also try instance metadata);
* an explicit endpoint, region/addressing style, `skip_signature=False`, and for S3 `request_payer=False` and
  `server_side_encryption="AES256"` (otherwise `AWS_SSE_CUSTOMER_KEY_BASE64` would be sent on every GET);
* client options that pin `allow_http` to the endpoint's scheme, and a `proxy_url` pointing at keyrelay's own
  egress guard (egress/objectstore.py): it binds the store to its one endpoint (no redirect to another origin is
  followed), dials only SSRF-checked addresses, and an explicit proxy stops reqwest honouring `HTTP(S)_PROXY`;
* for GCS, a self-signed JWT (AIP-4111) made here from the service account key with the read-only storage
  scope, so no token endpoint named in the JSON is ever called.

A custom `endpoint_url` is checked against the SSRF policy when the source is created (manage/sources.py),
before every request (`StoreFactory.open`, for a fast 422), and by the egress guard on every connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyrelay.egress import destination, ssrf
from keyrelay.egress.objectstore import EgressGuard
from keyrelay.errors import DestinationNotAllowed, InvalidRequest, KeyrelayError, UpstreamUnreachable
from keyrelay.files import gcsauth
from keyrelay.files.failures import storage_error, translate
from keyrelay.files.paths import root_prefix
from keyrelay.model import Credentials, Secret, Source

if TYPE_CHECKING:
    from obstore.store import (
        AzureCredential,
        AzureStore,
        ClientConfig,
        GCSStore,
        LocalStore,
        RetryConfig,
        S3Credential,
        S3Store,
    )

    Store = S3Store | GCSStore | AzureStore | LocalStore
FILE_CONNECTORS = frozenset({"s3", "gcs", "azure_blob", "local"})
_CACHE_MAX = 1024


@dataclass(frozen=True)
class FileSource:
    """An opened file source: the store, the root prefix inside it, and (local only) the root directory."""

    connector: str
    store: Store
    root: str
    local_dir: Path | None = None
    endpoint: destination.BaseUrl | None = None  # a custom endpoint, re-checked before each request


class StoreFactory:
    """Builds and caches stores (keyed by source id and a digest of its config and credentials)."""

    def __init__(self, *, allow: tuple[ssrf.Network, ...], local_roots: tuple[Path, ...]) -> None:
        self._allow = allow
        self._local_roots = tuple(p.resolve() for p in local_roots)
        self._cache: dict[tuple[str, str], FileSource] = {}
        self.guard = EgressGuard(allow=allow)

    async def open(self, source: Source, credentials: Credentials) -> FileSource:
        key = (source.id, _digest(source, credentials))
        opened = self._cache.get(key)
        if opened is None:
            try:
                opened = await self._build(source, credentials.fields)
            except (storage_error(), ValueError, TypeError) as exc:  # obstore refused the configuration
                raise translate(exc) from None
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = opened
        if opened.endpoint is not None:  # DNS may have changed since the source was created
            await ssrf.resolve_checked(opened.endpoint.host, opened.endpoint.port, allow=self._allow)
        return opened

    async def _build(self, source: Source, creds: Mapping[str, Any]) -> FileSource:
        config, timeout = source.config, source.policy.timeout_seconds
        if source.connector == "local":
            return self._local(config)
        if source.connector not in FILE_CONNECTORS:
            raise InvalidRequest(f"Connector '{source.connector}' is not a file connector")
        endpoint = _endpoint(config.get("endpoint_url"))
        url = default_url(source.connector, config) if endpoint is None else endpoint.origin + endpoint.path
        target = endpoint or destination.parse_base_url(url)
        proxy = await self.guard.proxy_url(target.host, target.port)
        options = _client_options(target.scheme, timeout, proxy)
        retry: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=timeout)}
        root = root_prefix(config.get("prefix"))
        from obstore.store import AzureStore, GCSStore, S3Store  # on first use (a worker without file sources)

        store: Store
        if source.connector == "s3":
            region = str(config.get("region") or "us-east-1")
            store = S3Store(str(config["bucket"]), endpoint=url, region=region, virtual_hosted_style_request=False,
                            skip_signature=False, request_payer=False, server_side_encryption="AES256",
                            credential_provider=_s3_provider(creds), client_options=options, retry_config=retry)
        elif source.connector == "azure_blob":
            store = AzureStore(str(config["container"]), account_name=str(config["account"]), endpoint=url,
                               skip_signature=False, credential_provider=_azure_provider(creds), client_options=options,
                               retry_config=retry)
        else:
            account = _plain(creds.get("service_account_json"))  # explicit: GOOGLE_SERVICE_ACCOUNT_KEY is not read
            store = GCSStore(str(config["bucket"]), base_url=url, skip_signature=False,
                             service_account_key=gcsauth.sanitized(account),
                             credential_provider=gcsauth.signer(account), client_options=options, retry_config=retry)
        return FileSource(source.connector, store, root, endpoint=endpoint)

    def _local(self, config: Mapping[str, Any]) -> FileSource:
        raw = config.get("root")
        if not isinstance(raw, str) or not raw.startswith("/"):
            raise InvalidRequest("The source's root must be an absolute directory", field="config.root")
        directory = Path(raw).resolve()
        if not any(directory == r or r in directory.parents for r in self._local_roots):
            raise DestinationNotAllowed("The source's directory is outside KEYRELAY_LOCAL_ROOTS")
        if not directory.is_dir():
            raise UpstreamUnreachable("The source's directory does not exist")
        from obstore.store import LocalStore

        return FileSource("local", LocalStore(directory), "", local_dir=directory)


_DIGEST_KEY = secrets.token_bytes(32)  # per process: the cache key reveals nothing about a credential


def _digest(source: Source, credentials: Credentials) -> str:
    """A cache key that changes when the config or any credential value changes (a keyed hash: review point)."""
    blob = json.dumps([source.connector, dict(source.config), _plain(dict(credentials.fields)),
                       source.policy.timeout_seconds], sort_keys=True, default=str)
    return hmac.new(_DIGEST_KEY, blob.encode(), hashlib.sha256).hexdigest()


def _plain(value: Any) -> Any:
    """A credential value with its `Secret`s revealed, for the store builders (review point)."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _endpoint(url: object) -> destination.BaseUrl | None:
    if url is None:
        return None
    if not isinstance(url, str):
        raise InvalidRequest("The source's endpoint_url is invalid", field="config.endpoint_url")
    try:
        return destination.parse_base_url(url)
    except KeyrelayError:
        raise InvalidRequest("The source's endpoint_url is invalid", field="config.endpoint_url") from None


def default_url(connector: str, config: Mapping[str, Any]) -> str:
    """The object store a file source uses when its config names no `endpoint_url`."""
    if connector == "s3":
        return f"https://s3.{config.get('region') or 'us-east-1'}.amazonaws.com"
    if connector == "azure_blob":
        return f"https://{config['account']}.blob.core.windows.net"
    return "https://storage.googleapis.com"


def _client_options(scheme: str, timeout: float, proxy_url: str) -> ClientConfig:
    options: ClientConfig = {
        "allow_http": scheme == "http",
        "connect_timeout": timedelta(seconds=min(timeout, 10.0)),
        "read_timeout": timedelta(seconds=timeout),  # per read: a long download is fine, a stall is not
        "timeout": timedelta(hours=6),
        "user_agent": "keyrelay",
        "proxy_url": proxy_url,  # the egress guard; also turns off reqwest's HTTP(S)_PROXY discovery
    }
    return options


def _s3_provider(creds: Mapping[str, Any]) -> Any:
    credential: S3Credential = {"access_key_id": str(_plain(creds.get("access_key_id", ""))),
                                "secret_access_key": str(_plain(creds.get("secret_access_key", ""))),
                                "token": None, "expires_at": None}

    def provide() -> S3Credential:
        return credential

    return provide


def _azure_provider(creds: Mapping[str, Any]) -> Any:
    credential: AzureCredential
    if creds.get("account_key"):
        credential = {"access_key": str(_plain(creds["account_key"])), "expires_at": None}
    elif creds.get("sas_token"):
        credential = {"sas_token": str(_plain(creds["sas_token"])).lstrip("?"), "expires_at": None}
    else:
        raise InvalidRequest("The source has neither an account_key nor a sas_token", field="credentials")

    def provide() -> AzureCredential:
        return credential

    return provide
