"""What the connect page does (docs/connect.md): offer the session's connectors, take an API-key form or run an
OAuth authorization, check the credentials with one live call, then create the source (or, for a reconnect
session, replace the source's credentials in place) and spend the session. Nothing is stored when the check
fails; only keyrelay ever sees the secret.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyrelay.connectors import extract
from keyrelay.connectors.check import check_of, run_check
from keyrelay.connectors.provider import Discovery, Provider, fill, origin_source, provider_of
from keyrelay.connectors.spec import ConnectorSpec, check_json
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import Conflict, InvalidRequest, KeyrelayError, NotFound, UpstreamAuthFailed
from keyrelay.manage import connect_forms as forms
from keyrelay.manage.connect import MAX_CHECKS, ConnectService, ConnectSession, OAuthState, Unusable
from keyrelay.manage.oauth_clients import OAuthClientService, ProviderClient
from keyrelay.manage.sources import SourceService, slugify
from keyrelay.manage.webhooks import WebhookService, iso
from keyrelay.model import Outbound, Policy, Source, internal_destination
from keyrelay.pipeline.oauth import authorize
from keyrelay.pipeline.oauth.config import parse as parse_oauth2
from keyrelay.pipeline.oauth.tokens import seed
from keyrelay.pipeline.relay import Relay
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.ports import Clock, OAuthStateStore, Vault

log = logging.getLogger("keyrelay.connect")
STATE_TABLE = "connect_oauth_states"  # vault context of a PKCE verifier: (table, state digest, column)
STATE_SECONDS = 600.0  # an authorization must come back within 10 minutes (and before the session expires)
DISCOVERY_TIMEOUT_SECONDS = 15.0
_SLUG_TRIES = 50


@dataclass(frozen=True)
class Offer:
    """One connector on the page: its key form (if it has one) and whether OAuth is available."""

    spec: ConnectorSpec
    fields: list[forms.FormField] | None  # config + credential inputs, or None: no key form
    oauth: bool
    oauth_fields: list[forms.FormField]  # config the customer gives before authorizing (shop, subdomain)


@dataclass(frozen=True)
class Started:
    url: str  # where to send the browser
    state: str  # the cookie that binds the authorization to this browser is named after it


@dataclass(frozen=True)
class Connected:
    session: ConnectSession
    source: Source
    reconnected: bool


class CallbackProblem(Exception):
    """The OAuth callback cannot complete. `session` is known once `state` matched; `retry` when the page may
    offer to start again (the browser proved it holds the session's link)."""

    def __init__(self, message: str, *, session: ConnectSession | None = None, retry: bool = False,
                 connector: str | None = None, token: str | None = None) -> None:
        super().__init__(message)
        self.message, self.session, self.retry, self.connector, self.token = message, session, retry, connector, token


class ConnectFlow:
    def __init__(self, *, sessions: ConnectService, sources: SourceService, clients: OAuthClientService,
                 catalog: Mapping[str, ConnectorSpec], relay: Relay, upstream: UpstreamClient,
                 oauth_state: OAuthStateStore, vault: Vault, hasher: TokenHasher, webhooks: WebhookService,
                 clock: Clock) -> None:
        self._sessions, self._sources, self._clients, self._catalog = sessions, sources, clients, catalog
        self._relay, self._upstream, self._oauth_state, self._vault = relay, upstream, oauth_state, vault
        self._hasher, self._webhooks, self._clock = hasher, webhooks, clock

    # --- what the page offers ---------------------------------------------------------------------------------
    async def offers(self, session: ConnectSession) -> list[Offer]:
        return [await self.offer(session, name) for name in session.connectors if name in self._catalog]

    async def offer(self, session: ConnectSession, connector: str) -> Offer:
        if connector not in session.connectors or connector not in self._catalog:
            raise NotFound("This connection page does not offer that connector")
        spec = self._catalog[connector]
        preset = session.config.get(connector, {})
        current = await self._current_config(session)
        config = forms.config_fields(spec, preset=preset, current=current)
        creds = forms.credential_fields(spec)
        provider = provider_of(spec.raw)
        oauth = provider is not None and await self._clients.registered(connector)
        oauth_fields = (forms.config_fields(spec, preset=preset, current=current, only=provider.customer_config)
                        if provider is not None and oauth else [])
        fields = None if config is None or creds is None else [*config, *creds]
        return Offer(spec=spec, fields=fields, oauth=oauth, oauth_fields=oauth_fields or [])

    async def connected_source(self, session: ConnectSession) -> Source | None:
        """The source a spent session connected (None if it is gone since)."""
        if session.connected_source_id is None:
            return None
        try:
            return await self._sources.get_source(session.caller, session.connected_source_id)
        except NotFound:
            return None

    async def _current_config(self, session: ConnectSession) -> Mapping[str, Any]:
        if session.source_id is None:
            return {}
        try:
            return (await self._sources.get_source(session.caller, session.source_id)).config
        except NotFound:
            return {}

    async def authorize_origin(self, connector: str) -> str:
        """Where the sign-in form's answer redirects (the page's CSP allows that form action)."""
        provider = self._clients.provider(connector)
        client = await self._clients.get(connector)
        return origin_source(client.authorize_url or provider.authorize_url)

    # --- API-key forms ----------------------------------------------------------------------------------------
    async def submit(self, session: ConnectSession, connector: str, form: Mapping[str, str]) -> Connected:
        """Check the submitted credentials live; store them only if the upstream accepts them."""
        offer = await self.offer(session, connector)
        if offer.fields is None:
            raise InvalidRequest("This connector has no form; use its sign-in button")
        given, credentials = forms.read(offer.fields, form)
        spec = offer.spec
        config = spec.check_config(await self._config(session, spec, given))
        credentials = spec.check_credentials(credentials)
        await self._check(session, spec, config, credentials, auth=spec.auth)
        return await self._save(session, spec, config, credentials)

    async def _config(self, session: ConnectSession, spec: ConnectorSpec, given: Mapping[str, Any]) -> dict[str, Any]:
        """The source's config: a reconnected source's own, then the operator's presets, then the customer's."""
        current = dict(await self._current_config(session))
        return {**current, **session.config.get(spec.name, {}), **given}

    async def _check(self, session: ConnectSession, spec: ConnectorSpec, config: Mapping[str, Any],
                     credentials: Mapping[str, Any], *, auth: Mapping[str, Any]) -> None:
        check = check_of(spec)
        if check is None:
            raise InvalidRequest("This connector cannot be checked live")
        if not await self._sessions.store.count_check(session.id, limit=MAX_CHECKS):
            raise Unusable("exhausted", session)
        probe = Source(id=session.source_id or "", workspace_id=session.workspace_id, connector=spec.name,
                       name=spec.title, slug=spec.name, config=config, policy=Policy(), status="active",
                       credential_fields=tuple(credentials), created_at=0.0, updated_at=0.0)
        await run_check(self._relay, spec, check, caller=session.caller, source=probe, credentials=credentials,
                        auth=auth)

    async def _save(self, session: ConnectSession, spec: ConnectorSpec, config: dict[str, Any],
                    credentials: dict[str, Any]) -> Connected:
        """Spend the session, then create or update the source (the claim is undone if that fails)."""
        if not await self._sessions.store.claim_session(session.id, now=self._clock()):
            raise Unusable("used", session)
        try:
            if session.source_id is not None:
                src = await self._sources.update_source(session.caller, session.source_id,
                                                        {"config": config, "credentials": credentials})
            else:
                src = await self._create(session, spec, config, credentials)
        except BaseException:
            await self._sessions.store.release_session(session.id)
            raise
        await self._sessions.store.finish_session(session.id, source_id=src.id)
        reconnected = session.source_id is not None
        event = "connection.updated" if reconnected else "connection.created"
        try:
            await self._webhooks.publish(event, connection_data(src, session_id=session.id))
        except Exception as exc:  # the source is stored: a queueing failure must not undo the customer's work
            log.error("webhook %s for source %s not queued: %s", event, src.id, type(exc).__name__)
        log.info("connect session %s %s source %s", session.id, "reconnected" if reconnected else "created", src.id)
        return Connected(session, src, reconnected)

    async def _create(self, session: ConnectSession, spec: ConnectorSpec, config: dict[str, Any],
                      credentials: dict[str, Any]) -> Source:
        base = slugify(spec.name)
        for n in range(1, _SLUG_TRIES + 1):
            slug = base if n == 1 else f"{base[:60]}-{n}"
            try:
                return await self._sources.create_source(session.caller, {
                    "workspace_id": session.workspace_id, "connector": spec.name, "name": spec.title, "slug": slug,
                    "config": config, "credentials": credentials})
            except Conflict:
                continue
        raise Conflict("This workspace has too many sources of this connector")

    # --- OAuth ------------------------------------------------------------------------------------------------
    async def start_oauth(self, session: ConnectSession, connector: str, form: Mapping[str, str], *,
                          redirect_uri: str) -> Started:
        offer = await self.offer(session, connector)
        if not offer.oauth:
            raise NotFound("Sign-in is not set up for this connector")
        given, _ = forms.read(offer.oauth_fields, form)
        spec = offer.spec
        config = await self._config(session, spec, given)
        _check_fields(spec, given)
        pc = await self._clients.for_connector(connector)
        auth = authorize.start(authorize_url=pc.authorize_url(config), client_id=pc.client.client_id,
                               redirect_uri=redirect_uri, scope=pc.scope, params=pc.provider.authorize_params)
        digest = self._hasher.digest(auth.state)
        sealed = await self._vault.seal(workspace_id=STATE_TABLE, source_id=digest,
                                        destination=internal_destination(STATE_TABLE),
                                        fields={"verifier": auth.verifier})
        now = self._clock()
        await self._sessions.store.add_state(OAuthState(
            digest=digest, session_id=session.id, connector=connector, config=given, verifier=sealed[0],
            created_at=now, expires_at=min(session.expires_at, now + STATE_SECONDS)))
        return Started(url=auth.url, state=auth.state)

    async def finish_oauth(self, *, state: str | None, code: str | None, error: str | None,
                           browser_token: str | None, redirect_uri: str) -> Connected:
        """The provider sent the browser back. `state` must be one this keyrelay issued, unused and unexpired;
        the browser must hold the link of the session it belongs to; then the code is redeemed (with the PKCE
        verifier) and the credentials checked and stored."""
        taken = None if not state else await self._sessions.store.take_state(self._hasher.digest(state),
                                                                             now=self._clock())
        if taken is None:
            raise CallbackProblem("This sign-in link is invalid, expired or was already used.")
        session = await self._sessions.store.get_session(taken.session_id)
        if session is None:
            raise CallbackProblem("This connection link no longer exists.")
        mine = browser_token is not None and hmac.compare_digest(
            await self._session_of(browser_token), session.id)
        if not mine:
            raise CallbackProblem("This sign-in was started in another browser. Open the connection link again "
                                  "in this browser.", session=session)
        assert browser_token is not None

        def retry(message: str) -> CallbackProblem:
            return CallbackProblem(message, session=session, retry=True, connector=taken.connector,
                                   token=browser_token)

        if not session.usable(self._clock()):
            raise CallbackProblem("This connection link has expired or was already used.", session=session)
        if error:
            raise retry(_provider_error(error))
        if not code or len(code) > 4096:
            raise retry("The provider sent no authorization code.")
        try:
            return await self._redeem(session, taken, code, redirect_uri)
        except Unusable as err:
            text = "This link was used to try too many times." if err.reason == "exhausted" else \
                "This connection link was already used."
            raise CallbackProblem(text, session=session) from None
        except KeyrelayError as err:
            raise retry(err.message) from None

    async def _session_of(self, token: str) -> str:
        with contextlib.suppress(Unusable):
            return (await self._sessions.lookup(token)).id
        return ""

    async def _redeem(self, session: ConnectSession, taken: OAuthState, code: str, redirect_uri: str) -> Connected:
        spec = self._catalog[taken.connector]
        pc = await self._clients.for_connector(taken.connector)
        opened = await self._vault.open(workspace_id=STATE_TABLE, source_id=taken.digest,
                                        destination=internal_destination(STATE_TABLE), sealed=[taken.verifier])
        config = await self._config(session, spec, taken.config)
        token_url = pc.token_url(config)
        tokens = await authorize.exchange(
            self._upstream, token_url=token_url, client_id=pc.client.client_id, client_secret=pc.secret,
            auth_method=pc.provider.auth_method, code=code, verifier=opened.fields["verifier"].reveal(),
            redirect_uri=redirect_uri)
        provider = pc.provider
        for key, template in provider.config_from_token.items():
            config[key] = fill(template, tokens.extra, what="provider's token response")
        if provider.discover is not None:
            config.update(await self._discover(provider, provider.discover, tokens.access_token))
        config = spec.check_config(config)
        credentials = self._credentials(spec, pc, token_url, tokens)
        probe = {"api_key": {"value": tokens.access_token, "header": provider.header, "prefix": provider.prefix}}
        await self._check(session, spec, config, probe, auth={})
        done = await self._save(session, spec, config, credentials)
        if "oauth2" in credentials:
            await seed(self._oauth_state, self._vault, done.source, parse_oauth2(credentials["oauth2"]),
                       destination=self._sources.destinations(done.source.connector, done.source.config),
                       access_token=tokens.access_token, expires_in=tokens.expires_in, now=self._clock())
        return done

    def _credentials(self, spec: ConnectorSpec, pc: ProviderClient, token_url: str,
                     tokens: authorize.Tokens) -> dict[str, Any]:
        """A refresh token: the `oauth2` credential (refreshed single-flight from then on). None, with a token that
        never expires: the connector's own token field, if it has one. Anything else cannot be kept working."""
        provider = pc.provider
        if tokens.refresh_token is not None:
            return spec.check_credentials({"oauth2": {
                "token_url": token_url, "client_id": pc.client.client_id, "client_secret": pc.secret,
                "grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
                "auth_method": provider.auth_method, "header": provider.header, "prefix": provider.prefix}})
        if tokens.expires_in is None and provider.access_token_field is not None:
            return spec.check_credentials({provider.access_token_field: tokens.access_token})
        raise UpstreamAuthFailed("The provider granted no refresh token, so keyrelay could not keep this connection "
                                 "working; nothing was stored (the app's OAuth client must ask for offline access)")

    async def _discover(self, provider: Provider, disc: Discovery, access_token: str) -> dict[str, str]:
        """One GET with the new access token through the guarded egress (Atlassian: accessible resources)."""
        out = Outbound(method="GET", url=disc.url, timeout_seconds=DISCOVERY_TIMEOUT_SECONDS, secrets=(access_token,),
                       headers=(("Accept", "application/json"), ("User-Agent", "keyrelay"),
                                (provider.header, provider.prefix + access_token)))
        sent = await self._upstream.send(out)
        try:
            status, data = sent.response.status, await sent.response.read(256 * 1024)
        finally:
            sent.response.release()
        try:
            body = json.loads(data) if 200 <= status < 300 else None
        except (ValueError, UnicodeDecodeError):
            body = None
        found = extract.get(body, disc.records) if disc.records else body
        first = found[0] if isinstance(found, list) and found else None
        if not isinstance(first, dict):
            raise UpstreamAuthFailed(f"The provider did not say which site to use (HTTP {status})")
        return {key: fill(template, first, what="provider's site list") for key, template in disc.config.items()}


def _check_fields(spec: ConnectorSpec, given: Mapping[str, Any]) -> None:
    """The customer's config fields, each against its own schema, before they go into a provider URL."""
    props = spec.config_schema.get("properties") or {}
    schema = {"type": "object", "additionalProperties": False,
              "properties": {k: props[k] for k in given if k in props}}
    check_json(schema, dict(given), "config")


def _provider_error(error: str) -> str:
    code = error if error.replace("_", "").isalnum() and len(error) <= 64 else "error"
    if code == "access_denied":
        return "The sign-in was cancelled or access was not granted."
    return f"The provider did not grant access ({code})."


def connection_data(src: Source, *, session_id: str | None = None) -> dict[str, Any]:
    """A webhook's `data` for a connection (a source): ids, names and status, never a credential."""
    data: dict[str, Any] = {"source_id": src.id, "workspace_id": src.workspace_id, "connector": src.connector,
                            "name": src.name, "slug": src.slug, "status": src.status,
                            "updated_at": iso(src.updated_at)}
    if session_id is not None:
        data["connect_session_id"] = session_id
    return data
