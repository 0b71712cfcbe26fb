"""The `keyrelay` command line. Secrets are read from stdin or the environment, never from arguments."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from keyrelay import boundedjson
from keyrelay.errors import KeyrelayError
from keyrelay.http.render import api_key_view, application_view, source_view, workspace_view
from keyrelay.manage.access import NewApplication
from keyrelay.model import ALL_SCOPES, Caller, CallerKind, Scope
from keyrelay.settings import Settings
from keyrelay.store.engine import make_engine, upgrade
from keyrelay.vault import VaultError

if TYPE_CHECKING:  # the server stack is imported only by the commands that run it (fast --help, mcp-stdio)
    from keyrelay.runtime import Runtime

T = TypeVar("T")
SYSTEM = Caller(kind=CallerKind.APPLICATION, id="cli", workspace_id=None, scopes=ALL_SCOPES)


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        raise click.ClickException(f"invalid KEYRELAY_* setting: {exc}") from None


def _run(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Open the database (applying migrations) and run one admin operation against it."""

    from keyrelay.runtime import runtime

    async def main() -> T:
        async with runtime(_settings()) as rt:
            return await work(rt)

    try:
        return asyncio.run(main())
    except KeyrelayError as err:
        raise click.ClickException(f"{err.code}: {err.message}") from None
    except VaultError as err:
        raise click.ClickException(str(err)) from None


def _echo(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def bootstrap_banner(app: NewApplication, base_url: str) -> str:
    secret = app.client_secret or "<your KEYRELAY_ADMIN_CLIENT_SECRET>"
    return (
        "\n=== keyrelay bootstrap admin application (shown once; store it now) ===\n"
        f"client_id:     {app.client_id}\n"
        f"client_secret: {secret}\n\n"
        "Get an application token:\n"
        f"  curl -s -X POST {base_url}/api/v1/applications/token -H 'Content-Type: application/json' \\\n"
        f"       -d '{{\"client_id\": \"{app.client_id}\", \"client_secret\": \"{secret}\"}}'\n"
        "======================================================================\n"
    )


def listening_banner(base_url: str) -> str:
    return (f"keyrelay is listening on {base_url}\n"
            f"  console:       {base_url}/console/\n"
            f"  API reference: {base_url}/docs\n"
            f"  health:        {base_url}/healthz\n")


@click.group(help="keyrelay: a self-hosted gateway that lets AI agents use APIs and files without "
                  "holding the credentials. Settings come from KEYRELAY_* environment variables "
                  "(see docs/settings.md).")
def main() -> None:
    logging.basicConfig(level=_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command(help="Serve every route on one port (embedded default: SQLite + key file in KEYRELAY_DATA_DIR).")
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to bind (default 8080).")
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="Worker processes on the one port, each with the whole pipeline (default KEYRELAY_WORKERS, 1).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    import uvicorn

    settings = _settings()
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    workers = workers if workers is not None else settings.workers
    # /mcp's Host check follows --host
    settings = settings.model_copy(update={"host": host, "port": port, "workers": workers})
    base = f"http://{host}:{port}"
    if workers > 1:
        _serve_workers(settings, base)
        return
    from keyrelay.app import create_app
    from keyrelay.server import uvicorn_config

    app = create_app(settings, on_bootstrap=lambda a: click.echo(bootstrap_banner(a, base)))

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # the port is bound: say where to go
                click.echo(listening_banner(base))

    Server(uvicorn_config(app, settings, host=host, port=port)).run()


def _serve_workers(settings: Settings, base: str) -> None:
    """N worker processes on one listening socket (uvicorn's supervisor restarts one that dies). The first start
    (database, master key, bootstrap application) happens here, once, before any worker runs."""
    from uvicorn.supervisors import Multiprocess

    from keyrelay.pipeline.ratelimit import SharedWindows
    from keyrelay.server import uvicorn_config

    if settings.database_url and not settings.database_url.startswith("sqlite") and not settings.redis_url:
        raise click.ClickException("--workers on PostgreSQL needs KEYRELAY_REDIS_URL: the workers share rate "
                                   "limits and live logs through it (see docs/performance.md)")

    async def first_start(rt: Runtime) -> None:
        if rt.bootstrap is not None:
            click.echo(bootstrap_banner(rt.bootstrap, base))

    _run(first_start)
    if settings.shared_windows_path is not None:
        SharedWindows.reset(settings.shared_windows_path)
    settings.hand_to_workers()
    config = uvicorn_config("keyrelay.app:worker_app", settings, host=settings.host, port=settings.port,
                            factory=True, workers=settings.workers, http="keyrelay.server:WorkerHttpProtocol")
    sock = config.bind_socket()
    click.echo(listening_banner(base) + f"  workers:       {settings.workers}\n")
    Multiprocess(config, sockets=[sock]).run()


@main.command(help="Create the database, master key and bootstrap admin application, then exit.")
def init() -> None:
    settings = _settings()

    async def work(rt: Runtime) -> None:
        if rt.bootstrap is not None:
            click.echo(bootstrap_banner(rt.bootstrap, f"http://{settings.host}:{settings.port}"))
        else:
            click.echo("keyrelay is already initialised (an application exists).")

    _run(work)


@main.command("mcp-stdio", help="Serve MCP on stdin/stdout for desktop MCP clients, forwarding every call to "
                                 "a keyrelay server's /mcp. Holds only the token: no master key, no credentials.")
@click.option("--url", required=True, help="The server's MCP endpoint, e.g. https://keyrelay.example.com/mcp.")
@click.option("--token", default=None, help="Bearer token with the 'mcp' scope. Prefer KEYRELAY_MCP_TOKEN: "
                                            "arguments are visible to other local users.")
def mcp_stdio(url: str, token: str | None) -> None:
    from keyrelay import mcp_bridge

    secret = _settings().mcp_token
    token = token or (secret.get_secret_value() if secret is not None else None)
    if not token:
        raise click.ClickException("no token: set KEYRELAY_MCP_TOKEN or pass --token")
    try:
        asyncio.run(mcp_bridge.serve(url, token))
    except mcp_bridge.BridgeError as err:
        raise click.ClickException(str(err)) from None


@main.group(help="Manage workspaces (one per end customer).")
def workspaces() -> None:
    pass


@workspaces.command("create", help="Create a workspace named NAME.")
@click.argument("name")
def workspaces_create(name: str) -> None:
    _echo(workspace_view(_run(lambda rt: rt.services.workspaces.create(name))))


@workspaces.command("list", help="List workspaces.")
def workspaces_list() -> None:
    found = _run(lambda rt: rt.services.workspaces.list(None))
    _echo([workspace_view(w) for w in found])


@main.group(help="Manage sources (a connector instance with encrypted credentials).")
def sources() -> None:
    pass


@sources.command("add", help="Add a source. Credentials (a JSON object) are read from stdin with "
                             "--credentials-stdin or from an environment variable with --credentials-env.")
@click.option("--workspace", "workspace", required=True, help="Workspace name or id.")
@click.option("--connector", required=True, help="Connector name, e.g. http or stripe.")
@click.option("--name", required=True, help="Human name of the source.")
@click.option("--slug", default=None, help="Name used in gateway paths (default: from --name).")
@click.option("--config", "config", default="{}", help='Non-secret config as JSON, e.g. \'{"upstream_url": "..."}\'.')
@click.option("--policy", default=None, help="Policy as JSON (see docs/security.md).")
@click.option("--credentials-stdin", is_flag=True, help="Read the credentials JSON object from stdin.")
@click.option("--credentials-env", default=None, help="Read the credentials JSON from this environment variable.")
def sources_add(workspace: str, connector: str, name: str, slug: str | None, config: str, policy: str | None,
                credentials_stdin: bool, credentials_env: str | None) -> None:
    creds: Any = {}
    if credentials_stdin:
        creds = _json_arg(sys.stdin.read(), "credentials")
    elif credentials_env:
        raw = os.environ.get(credentials_env)  # input the operator names, not a setting
        if raw is None:
            raise click.ClickException(f"environment variable {credentials_env} is not set")
        creds = _json_arg(raw, "credentials")

    async def work(rt: Runtime) -> dict[str, Any]:
        svc = rt.services.sources
        ws = await _workspace(rt, workspace)
        body = {"workspace_id": ws, "connector": connector, "name": name, "slug": slug,
                "config": _json_arg(config, "config"), "credentials": creds,
                "policy": None if policy is None else _json_arg(policy, "policy")}
        return source_view(await svc.create_source(SYSTEM, body))

    _echo(_run(work))


@sources.command("list", help="List sources, optionally of one workspace.")
@click.option("--workspace", default=None, help="Workspace name or id.")
def sources_list(workspace: str | None) -> None:
    async def work(rt: Runtime) -> list[dict[str, Any]]:
        ws = None if workspace is None else await _workspace(rt, workspace)
        return [source_view(s) for s in await rt.services.sources.list_sources(SYSTEM, ws)]

    _echo(_run(work))


@sources.command("remove", help="Delete the source SOURCE_ID and its credentials.")
@click.argument("source_id")
def sources_remove(source_id: str) -> None:
    _run(lambda rt: rt.services.sources.delete_source(SYSTEM, source_id))
    click.echo(f"removed {source_id}")


@main.group(help="Manage API keys (kr_...) bound to a workspace and scopes.")
def keys() -> None:
    pass


@keys.command("create", help="Create an API key; it is printed once.")
@click.option("--workspace", required=True, help="Workspace name or id.")
@click.option("--scopes", default="proxy", show_default=True,
              help=f"Comma-separated scopes: {', '.join(s.value for s in Scope)}.")
@click.option("--name", default="", help="A label for the key.")
@click.option("--expires-in-days", type=int, default=None, help="Expiry in days (default: never).")
@click.option("--constraints", default=None,
              help='Constraints as JSON, e.g. \'{"sources": ["stripe"], "methods": ["GET"], "budget": {"requests": '
                   '100, "per": "day"}}\' (docs/security.md: narrow tokens).')
def keys_create(workspace: str, scopes: str, name: str, expires_in_days: int | None, constraints: str | None) -> None:
    wanted = _scopes(scopes)
    narrow = None if constraints is None else _json_arg(constraints, "constraints")

    async def work(rt: Runtime) -> dict[str, Any]:
        import time

        ws = await _workspace(rt, workspace)
        expires = None if expires_in_days is None else time.time() + expires_in_days * 86400
        key, secret = await rt.services.access.create_api_key(workspace_id=ws, scopes=wanted, name=name,
                                                               expires_at=expires, constraints=narrow)
        return api_key_view(key) | {"key": secret}

    _echo(_run(work))


def _scopes(text: str) -> frozenset[Scope]:
    try:
        return frozenset(Scope(s.strip()) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.ClickException(f"unknown scope; valid: {', '.join(s.value for s in Scope)}") from None


@keys.command("revoke", help="Revoke the API key KEY_ID (takes effect at once).")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    _run(lambda rt: rt.services.access.revoke_api_key(key_id))
    click.echo(f"revoked {key_id}")


@main.group(help="Manage applications (machine clients of the operator; each holds some workspaces and scopes).")
def applications() -> None:
    pass


@applications.command("create", help="Create an application limited to some workspaces and scopes; its client "
                                     "secret is printed once. Give each agent deployment its own, never the "
                                     "bootstrap admin.")
@click.option("--name", required=True, help="A label for the application.")
@click.option("--workspaces", required=True,
              help="Comma-separated workspace names or ids, or '*' for every workspace (present and future).")
@click.option("--scopes", required=True,
              help=f"Comma-separated scopes: {', '.join(s.value for s in Scope)}.")
def applications_create(name: str, workspaces: str, scopes: str) -> None:
    wanted = _scopes(scopes)
    refs: list[str] | str = "*" if workspaces.strip() == "*" else [w.strip() for w in workspaces.split(",")
                                                                     if w.strip()]

    async def work(rt: Runtime) -> dict[str, Any]:
        made = await rt.services.access.grant_application(SYSTEM, name=name, workspaces=refs, scopes=wanted)
        assert made.application is not None
        return application_view(made.application) | {"client_secret": made.client_secret}

    _echo(_run(work))


@applications.command("list", help="List applications (never their secrets).")
def applications_list() -> None:
    _echo([application_view(a) for a in _run(lambda rt: rt.services.access.list_applications())])


@applications.command("revoke", help="Revoke the application CLIENT_ID (or its id) for good: its secret and "
                                     "every token minted from it stop working (at once here; within "
                                     "KEYRELAY_TOKEN_CACHE_SECONDS on running servers).")
@click.argument("client_id")
def applications_revoke(client_id: str) -> None:
    _run(lambda rt: rt.services.access.revoke_application(client_id))
    click.echo(f"revoked {client_id}")


@applications.command("rotate-secret", help="Give the application CLIENT_ID a new client secret, printed once. The "
                                            "old secret stops working; so do tokens minted with it, unless "
                                            "--keep-tokens. Works offline: the way back in after losing a secret.")
@click.argument("client_id")
@click.option("--keep-tokens", is_flag=True, help="Let tokens already minted live out their lifetime.")
def applications_rotate_secret(client_id: str, keep_tokens: bool) -> None:
    secret = _run(lambda rt: rt.services.access.rotate_secret(client_id, revoke_tokens=not keep_tokens))
    _echo({"client_id": client_id, "client_secret": secret})


@main.command("console-link", help="Print a one-time link that signs in to the operator console (docs/console.md) "
                                   "as an application; it works once, for KEYRELAY_CONSOLE_LINK_SECONDS.")
@click.option("--application", "client_id", default=None,
              help="Client id of the application to sign in as (default: the oldest active one).")
@click.option("--url", "base_url", default=None,
              help="The console's base URL as the browser reaches it (default: http://KEYRELAY_HOST:KEYRELAY_PORT).")
def console_link(client_id: str | None, base_url: str | None) -> None:
    from keyrelay.manage.console import ConsoleService, NewLink

    settings = _settings()
    base = (base_url or f"http://{settings.host}:{settings.port}").rstrip("/")

    async def work(rt: Runtime) -> NewLink:
        console = rt.services.extras["console"]
        assert isinstance(console, ConsoleService)
        return await console.create_link(client_id)

    link = _run(work)
    minutes = max(1, round(settings.console_link_seconds / 60))
    click.echo(f"Sign in to the keyrelay console as {link.application.name} ({link.application.client_id}).\n"
               f"This link works once, within {minutes} minute(s):\n\n  {base}/console/link?token={link.token}\n")


@main.group(help="The credential vault.")
def vault() -> None:
    pass


@vault.command("rotate", help="Re-encrypt every credential under a new data key; servers keep serving.")
def vault_rotate() -> None:
    async def work(rt: Runtime) -> tuple[int, int]:
        v = rt.services.vault
        assert hasattr(v, "rotate")
        done = await v.rotate()
        return int(done.reencrypted), int(done.unreadable)

    done, unreadable = _run(work)
    click.echo(f"re-encrypted {done} credential field(s) under a new key")
    if unreadable:
        click.echo(f"{unreadable} credential field(s) did not decrypt and were left as they were; store those "
                   "sources' credentials again (the server log names them)", err=True)


@main.group(help="The database.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply pending schema migrations (also done at every start).")
def db_upgrade() -> None:
    settings = _settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def main_() -> None:
        engine = make_engine(settings.resolved_database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(main_())
    click.echo("database is up to date")


async def _workspace(rt: Runtime, ref: str) -> str:
    svc = rt.services.workspaces
    try:
        return (await svc.get(SYSTEM, ref)).id
    except KeyrelayError:
        return (await svc.named(ref, create=False)).id


def _json_arg(text: str, what: str) -> Any:
    try:
        return boundedjson.loads(text)
    except ValueError:
        raise click.ClickException(f"{what} is not valid JSON") from None
