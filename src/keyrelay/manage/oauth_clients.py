"""The operator's OAuth clients, one per connector (docs/connect.md): `client_id`, the client secret (sealed,
write-only), optional scopes, and optional authorize/token URL overrides for self-hosted providers (GitHub
Enterprise). With the connector's `oauth` declaration they make the provider Connect sends customers to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from keyrelay.connectors.provider import Provider, endpoint, placeholders, provider_of
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.egress import ssrf
from keyrelay.errors import InvalidRequest, NotFound, SsrfBlocked, UpstreamUnreachable
from keyrelay.model import SealedField, internal_destination
from keyrelay.ports import Clock, Vault

TABLE = "oauth_clients"  # the vault context of a client secret: (table, connector, column), see store/tables.py
MAX_SCOPES = 50


@dataclass(frozen=True)
class OAuthClient:
    connector: str
    client_id: str
    secret: SealedField = field(repr=False)
    scopes: tuple[str, ...] | None  # None: the connector's default scopes
    authorize_url: str | None
    token_url: str | None
    created_at: float
    updated_at: float


class OAuthClientStore(Protocol):
    async def put_client(self, client: OAuthClient) -> OAuthClient: ...
    async def get_client(self, connector: str) -> OAuthClient | None: ...
    async def list_clients(self) -> list[OAuthClient]: ...
    async def delete_client(self, connector: str) -> bool: ...


@dataclass(frozen=True)
class ProviderClient:
    """Everything one authorization needs: the declaration, the client, its secret, and the URL templates."""

    provider: Provider
    client: OAuthClient
    secret: str = field(repr=False)

    @property
    def scope(self) -> str | None:
        scopes = self.client.scopes if self.client.scopes is not None else self.provider.scopes
        return self.provider.scope_separator.join(scopes) or None

    def authorize_url(self, config: Mapping[str, Any]) -> str:
        return endpoint(self.client.authorize_url or self.provider.authorize_url, config, what="authorize URL")

    def token_url(self, config: Mapping[str, Any]) -> str:
        return endpoint(self.client.token_url or self.provider.token_url, config, what="token URL")


def _text(body: Mapping[str, Any], name: str, *, limit: int, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or any(
            ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidRequest(f"{name} must be a non-empty string of at most {limit} characters without control "
                             "characters", field=name)
    return value


class OAuthClientService:
    def __init__(self, *, store: OAuthClientStore, vault: Vault, catalog: Mapping[str, ConnectorSpec], clock: Clock,
                 allow: tuple[ssrf.Network, ...]) -> None:
        self._store, self._vault, self._catalog, self._clock, self._allow = store, vault, catalog, clock, allow

    def provider(self, connector: str) -> Provider:
        spec = self._catalog.get(connector)
        found = None if spec is None else provider_of(spec.raw)
        if found is None:
            supported = ", ".join(n for n, s in self._catalog.items() if provider_of(s.raw) is not None)
            raise NotFound(f"No OAuth provider is declared for this connector; connectors with one: {supported}")
        return found

    async def put(self, connector: str, body: Mapping[str, Any]) -> OAuthClient:
        provider = self.provider(connector)
        unknown = set(body) - {"client_id", "client_secret", "scopes", "authorize_url", "token_url"}
        if unknown:
            raise InvalidRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        client_id = _text(body, "client_id", limit=1024, required=True)
        secret = _text(body, "client_secret", limit=4096, required=True)
        assert client_id is not None and secret is not None
        authorize_url = await self._url(body, "authorize_url", provider)
        token_url = await self._url(body, "token_url", provider)
        sealed = await self._vault.seal(workspace_id=TABLE, source_id=connector,
                                        destination=internal_destination(TABLE), fields={"client_secret": secret})
        now = self._clock()
        existing = await self._store.get_client(connector)
        return await self._store.put_client(OAuthClient(
            connector=connector, client_id=client_id, secret=sealed[0], scopes=_scopes(body.get("scopes")),
            authorize_url=authorize_url, token_url=token_url,
            created_at=existing.created_at if existing else now, updated_at=now))

    async def _url(self, body: Mapping[str, Any], name: str, provider: Provider) -> str | None:
        """An override: like the declared URL, it may name only the config fields the customer gives."""
        value = _text(body, name, limit=2048, required=False)
        if value is None:
            return None
        extra = placeholders(value) - set(provider.customer_config)
        if extra:
            raise InvalidRequest(f"{name} may use only the placeholders {sorted(provider.customer_config)}",
                                 field=name)
        sample = {k: "sample" for k in provider.customer_config}
        try:
            url = endpoint(value, sample, what=name)
        except InvalidRequest as err:
            raise InvalidRequest(err.message, field=name) from None
        if name == "token_url" and not placeholders(value):  # keyrelay calls it: a fast SSRF answer
            try:
                await ssrf.check_destination(url, allow=self._allow)
            except SsrfBlocked as err:
                raise SsrfBlocked(err.message, field=name) from None
            except UpstreamUnreachable:
                pass  # not resolvable yet: the dialer checks every connection
        return value

    async def get(self, connector: str) -> OAuthClient:
        found = await self._store.get_client(connector)
        if found is None:
            raise NotFound("No OAuth client is registered for this connector")
        return found

    async def list_clients(self) -> list[OAuthClient]:
        return await self._store.list_clients()

    async def delete(self, connector: str) -> None:
        if not await self._store.delete_client(connector):
            raise NotFound("No OAuth client is registered for this connector")

    async def registered(self, connector: str) -> bool:
        spec = self._catalog.get(connector)
        if spec is None or provider_of(spec.raw) is None:
            return False
        return await self._store.get_client(connector) is not None

    async def for_connector(self, connector: str) -> ProviderClient:
        """The provider with its client and opened secret (raises NotFound when none is registered)."""
        provider = self.provider(connector)
        client = await self.get(connector)
        opened = await self._vault.open(workspace_id=TABLE, source_id=connector,
                                        destination=internal_destination(TABLE), sealed=[client.secret])
        return ProviderClient(provider=provider, client=client, secret=opened.fields["client_secret"].reveal())


def _scopes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_SCOPES or not all(
            isinstance(s, str) and s and len(s) <= 200 and all(0x21 <= ord(c) <= 0x7E for c in s) for s in value):
        raise InvalidRequest(f"scopes must be a list of at most {MAX_SCOPES} scope names (printable, no spaces)",
                             field="scopes")
    return tuple(value)
