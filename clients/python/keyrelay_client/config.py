"""Where the client connects and how it proves who it is: from arguments, else from the environment.

| variable | meaning |
|---|---|
| `KEYRELAY_URL` | the server's base URL, e.g. `http://127.0.0.1:8080` |
| `KEYRELAY_CLIENT_ID`, `KEYRELAY_CLIENT_SECRET` | an application's client credentials (application tokens) |
| `KEYRELAY_API_KEY` | an API key, `kr_...` |
| `KEYRELAY_TOKEN` | a bearer token, e.g. a workspace-scoped token `krw_...` |

Credentials given as arguments win over the environment, which is then not read for credentials at all (only a
missing half of a client id/secret pair is taken from it). The environment must name exactly one kind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from keyrelay_client.errors import ConfigurationError

ENV_URL = "KEYRELAY_URL"
ENV_CLIENT_ID = "KEYRELAY_CLIENT_ID"
ENV_CLIENT_SECRET = "KEYRELAY_CLIENT_SECRET"  # noqa: S105 - a variable name
ENV_API_KEY = "KEYRELAY_API_KEY"
ENV_TOKEN = "KEYRELAY_TOKEN"  # noqa: S105 - a variable name
API_KEY_PREFIX = "kr_"


@dataclass(frozen=True)
class ClientCredentials:
    """An application's `client_id` and `client_secret`; tokens are fetched and renewed from them."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class StaticToken:
    """A bearer credential used as is: an API key (`kind="api_key"`) or a token (`kind="token"`)."""

    kind: str
    value: str = field(repr=False)


Credential = ClientCredentials | StaticToken


@dataclass(frozen=True)
class Config:
    base_url: httpx.URL
    credential: Credential


def resolve(base_url: str | None = None, *, client_id: str | None = None, client_secret: str | None = None,
            api_key: str | None = None, token: str | None = None,
            env: Mapping[str, str] | None = None) -> Config:
    """The base URL and the one credential to use; `env` defaults to `os.environ`."""
    environ = os.environ if env is None else env
    url = base_url or environ.get(ENV_URL) or ""
    if not url:
        raise ConfigurationError(f"No keyrelay URL: pass base_url= or set {ENV_URL}")
    return Config(base_url=check_url(url), credential=_credential(client_id, client_secret, api_key, token, environ))


def check_url(raw: str) -> httpx.URL:
    """An http(s) base URL without credentials, query or fragment, with no trailing slash."""
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, TypeError):
        raise ConfigurationError("The keyrelay URL is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("The keyrelay URL must be an http:// or https:// URL with a host")
    if url.userinfo or url.query or url.fragment:
        raise ConfigurationError("The keyrelay URL may not contain credentials, a query or a fragment")
    return url.copy_with(path=url.path.rstrip("/") or "")


def _credential(client_id: str | None, client_secret: str | None, api_key: str | None, token: str | None,
                environ: Mapping[str, str]) -> Credential:
    given = [name for name, value in (("client_id", client_id), ("client_secret", client_secret),
                                      ("api_key", api_key), ("token", token)) if value]
    if given:
        return _explicit(client_id, client_secret, api_key, token, environ)
    kinds = [names for names in ((ENV_CLIENT_ID, ENV_CLIENT_SECRET), (ENV_API_KEY,), (ENV_TOKEN,))
             if any(environ.get(n) for n in names)]
    if not kinds:
        raise ConfigurationError(
            f"No credentials: pass client_id= and client_secret=, api_key= or token=, or set {ENV_CLIENT_ID} and "
            f"{ENV_CLIENT_SECRET}, {ENV_API_KEY} or {ENV_TOKEN}")
    if len(kinds) > 1:
        names = ", ".join(n for names in kinds for n in names if environ.get(n))
        raise ConfigurationError(f"More than one kind of credential in the environment ({names}): keep one, "
                                 "or pass the one to use as an argument")
    return _explicit(environ.get(ENV_CLIENT_ID), environ.get(ENV_CLIENT_SECRET), environ.get(ENV_API_KEY),
                     environ.get(ENV_TOKEN), {})


def _explicit(client_id: str | None, client_secret: str | None, api_key: str | None, token: str | None,
              environ: Mapping[str, str]) -> Credential:
    pair = bool(client_id or client_secret)
    if sum((pair, bool(api_key), bool(token))) > 1:
        raise ConfigurationError("Pass one kind of credential: client_id/client_secret, api_key or token")
    if pair:
        cid = client_id or environ.get(ENV_CLIENT_ID)
        secret = client_secret or environ.get(ENV_CLIENT_SECRET)
        if not cid or not secret:
            raise ConfigurationError("Client credentials need both client_id and client_secret")
        return ClientCredentials(cid, secret)
    if api_key:
        if not api_key.startswith(API_KEY_PREFIX):
            raise ConfigurationError(f"api_key is not a keyrelay API key (they start with {API_KEY_PREFIX!r})")
        return StaticToken("api_key", api_key)
    assert token  # one of the four was given
    return StaticToken("token", token)
