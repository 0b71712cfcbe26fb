"""A fake OAuth 2 provider on loopback (aiohttp in its own thread), strict like a real one:

* `GET /authorize` checks the client, the exact registered redirect URI, `response_type=code` and an S256 PKCE
  challenge, then shows a consent page (Allow / Deny), or redirects at once when `auto_approve` is set;
* `POST /token` authenticates the client (`client_secret_post` or `client_secret_basic`), redeems a code once
  (same redirect URI, the PKCE verifier must hash to the challenge: RFC 7636 S256, computed here with hashlib,
  independently of the client's library), and refreshes with rotating refresh tokens;
* knobs for the bad cases: no refresh token, no expiry, a forced error, a redirect instead of an answer, extra
  fields (Salesforce's `instance_url`).

    with FakeOAuthProvider(redirect_uri=kr.url + "/connect/oauth/callback") as idp:
        idp.authorize_url, idp.token_url
        idp.accepts("Bearer " + token)      # for a fake API: is this an access token we issued and is it valid?
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlencode

from aiohttp import web

CLIENT_ID = "kr-test-client"
CLIENT_SECRET = "kr-test-client-secret-5f1c2a"


@dataclass
class Grant:
    code: str
    redirect_uri: str
    challenge: str
    scope: str
    issued: float
    used: bool = False


@dataclass
class TokenCall:
    form: dict[str, str]
    headers: dict[str, str]
    status: int = 0


@dataclass
class Knobs:
    auto_approve: bool = False
    issue_refresh_token: bool = True
    expires_in: int | None = 3600
    token_error: str | None = None  # every token request answers 400 with this error
    redirect_token_to: str | None = None  # the token endpoint answers 307 to this URL instead
    extra: dict[str, Any] = field(default_factory=dict)  # more fields in the token response
    code_seconds: float = 600.0


class FakeOAuthProvider:
    def __init__(self, *, redirect_uri: str, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET,
                 title: str = "Fake Provider") -> None:
        self.redirect_uri, self.client_id, self.client_secret = redirect_uri, client_id, client_secret
        self.title = title
        self.knobs = Knobs()
        self.grants: dict[str, Grant] = {}
        self.token_calls: list[TokenCall] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.access_tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.refresh_tokens: dict[str, bool] = {}  # token -> still valid
        self.issued: list[str] = []  # every token and code issued (to scan storage and pages for them)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- what tests use ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authorize_url(self) -> str:
        return self.url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    def accepts(self, authorization: str | None, *, scheme: str = "Bearer ") -> bool:
        """Is `authorization` (a header value) an unexpired access token this provider issued?"""
        if not authorization or not authorization.startswith(scheme):
            return False
        token = authorization[len(scheme):]
        with self._lock:
            expiry = self.access_tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def revoke_refresh_tokens(self) -> None:
        """The user withdrew consent: every refresh token (and access token) stops working."""
        with self._lock:
            self.refresh_tokens = dict.fromkeys(self.refresh_tokens, False)
            self.access_tokens.clear()

    def expire_access_tokens(self) -> None:
        with self._lock:
            self.access_tokens.clear()

    def grant_code(self, *, challenge: str, redirect_uri: str | None = None, scope: str = "") -> str:
        """A code as if a user had approved (for tests that skip the browser)."""
        code = "code-" + secrets.token_urlsafe(16)
        with self._lock:
            self.grants[code] = Grant(code, redirect_uri or self.redirect_uri, challenge, scope, time.monotonic())
            self.issued.append(code)
        return code

    # --- life cycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_get("/authorize", self._authorize)
            app.router.add_post("/authorize", self._decide)
            app.router.add_post("/token", self._token)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OAuth provider did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # --- authorization endpoint ---------------------------------------------------------------------------
    def _refusal(self, q: Any) -> str | None:
        if q.get("client_id") != self.client_id:
            return "unknown client_id"
        if q.get("redirect_uri") != self.redirect_uri:
            return "redirect_uri is not registered for this client"
        if q.get("response_type") != "code":
            return "response_type must be code"
        if q.get("code_challenge_method") != "S256" or len(q.get("code_challenge", "")) != 43:
            return "a PKCE S256 code_challenge is required"
        if not q.get("state"):
            return "state is required"
        return None

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        self.authorize_requests.append(dict(q))
        problem = self._refusal(q)
        if problem:
            return web.Response(status=400, text=f"Bad authorization request: {problem}")
        if self.knobs.auto_approve:
            return self._approve(q)
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in q.items())
        page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{self.title}: authorize</title>
<style>body{{font-family:sans-serif;background:#f3f4f6;display:flex;justify-content:center;padding-top:4rem}}
.box{{background:#fff;border:1px solid #ddd;border-radius:10px;padding:2rem;width:24rem}}
button{{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem}}</style></head><body><div class="box">
<h2>{self.title}</h2><p><b>keyrelay test app</b> wants access to your account:</p>
<p><code>{html.escape(q.get("scope", ""))}</code></p>
<form method="post">{hidden}<button name="decision" value="allow" id="allow">Allow</button>
<button name="decision" value="deny" id="deny">Deny</button></form></div></body></html>"""
        return web.Response(text=page, content_type="text/html")

    async def _decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        q = {k: str(v) for k, v in form.items()}
        problem = self._refusal(q)
        if problem:
            return web.Response(status=400, text=f"Bad authorization request: {problem}")
        if q.get("decision") != "allow":
            params = {"error": "access_denied", "error_description": "The user denied access", "state": q["state"]}
            raise web.HTTPFound(q["redirect_uri"] + "?" + urlencode(params))
        return self._approve(q)

    def _approve(self, q: Any) -> web.Response:
        code = self.grant_code(challenge=q["code_challenge"], redirect_uri=q["redirect_uri"], scope=q.get("scope", ""))
        raise web.HTTPFound(q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]}))

    # --- token endpoint -------------------------------------------------------------------------------------
    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            cid, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        else:
            cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        return cid == self.client_id and secrets.compare_digest(secret, self.client_secret)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        call = TokenCall(form, dict(request.headers))
        self.token_calls.append(call)
        resp = self._token_answer(request, form)
        call.status = resp.status
        return resp

    def _token_answer(self, request: web.Request, form: dict[str, str]) -> web.Response:
        k = self.knobs
        if k.redirect_token_to:
            return web.Response(status=307, headers={"Location": k.redirect_token_to})
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        if k.token_error:
            return web.json_response({"error": k.token_error, "error_description": "refused by the test"},
                                     status=400)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._redeem(form)
        if grant == "refresh_token":
            return self._refresh(form)
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    def _redeem(self, form: dict[str, str]) -> web.Response:
        with self._lock:
            g = self.grants.get(form.get("code", ""))
            if g is None or g.used or time.monotonic() - g.issued > self.knobs.code_seconds:
                return web.json_response({"error": "invalid_grant", "error_description": "bad code"}, status=400)
            g.used = True
        if form.get("redirect_uri") != g.redirect_uri:
            return web.json_response({"error": "invalid_grant", "error_description": "redirect_uri"}, status=400)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not 43 <= len(verifier) <= 128 or not secrets.compare_digest(digest, g.challenge):
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE verification failed"},
                                     status=400)
        return web.json_response(self._issue(with_refresh=self.knobs.issue_refresh_token))

    def _refresh(self, form: dict[str, str]) -> web.Response:
        token = form.get("refresh_token", "")
        with self._lock:
            if not self.refresh_tokens.get(token):
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.refresh_tokens[token] = False  # rotation: each refresh token works once
        return web.json_response(self._issue(with_refresh=True))

    def _issue(self, *, with_refresh: bool) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(24)
        ttl = self.knobs.expires_in
        out: dict[str, Any] = {"access_token": access, "token_type": "bearer", **self.knobs.extra}
        if ttl is not None:
            out["expires_in"] = ttl
        with self._lock:
            self.access_tokens[access] = time.monotonic() + (ttl if ttl is not None else 10**9)
            self.issued.append(access)
            if with_refresh:
                refresh = "rt-" + secrets.token_urlsafe(24)
                self.refresh_tokens[refresh] = True
                self.issued.append(refresh)
                out["refresh_token"] = refresh
        return out
