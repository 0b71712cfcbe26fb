"""Sources: the list (status, traffic), a source's page (how agents reach it, its last hour, recent requests,
settings), create and edit with forms generated from the connector's config and credentials schemas and the
policy's schema, "replace credentials", and delete behind a confirmation page.

Credentials are write-only here as in the API: the pages show which fields are set, never a value; their
inputs are always empty, and a refused form comes back without them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Response

from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.doors.console import charts, forms
from keyrelay.doors.console.connect import connectable
from keyrelay.doors.console.logs import Names
from keyrelay.doors.console.session import Console, ConsoleRoute, Form, Managing, redirect
from keyrelay.errors import InvalidRequest, KeyrelayError
from keyrelay.http.render import source_view
from keyrelay.manage.policy import READ_ONLY_METHODS, PolicyIn
from keyrelay.model import Scope, Source

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
POLICY_SCHEMA = PolicyIn.model_json_schema()
POLICY_CHOICES = {"allowed_methods": METHODS, "approval.methods": METHODS}
POLICY_HINTS = {
    "allowed_methods": "HTTP methods agents may use. None ticked: every method for the http connector, GET and "
                       "HEAD for catalog connectors.",
    "forward_headers": "Request headers passed on to the upstream, e.g. accept, content-type. Empty: the safe "
                       "default set (docs/security.md).",
    "rate_limit_per_minute": "Requests per minute for this source, shared by every caller and door. Empty: no limit.",
    "timeout_seconds": "How long the upstream has to answer (at most 300).",
    "max_body_bytes": "Largest request body agents may send. Empty: the server's default.",
    "allow_writes": "Catalog connectors only: allow actions that change data upstream.",
    "cache_ttl_seconds": "Catalog connectors only: reuse an answer for this many seconds. Empty: no cache.",
    "allow_body_on_safe_methods": "Pass a request body on GET, HEAD and OPTIONS (refused by default).",
    "mode": "`observe` lets through what this policy would refuse and logs it as `would_deny`; `enforce` refuses it.",
    "approval": "Requests that wait for a human decision (docs/approvals.md). Leave every input empty for none.",
    "approval.methods": "Matching methods (none ticked: any method, if paths are given).",
    "approval.paths": "Path globs below the source's base URL, e.g. /v1/refunds/**. Empty: any path, if methods "
                      "are ticked.",
    "approval.entities_actions": "Connector actions, e.g. `payments.create`, `refunds.*`, `*.delete`.",
    "approval.timeout_seconds": "How long a request waits for a decision (10 s to 7 days). Empty: 3600.",
}
NOTICES = {"created": "Source created. Agents can use it as soon as they hold an API key for its workspace.",
           "saved": "Saved.", "credentials": "Credentials replaced.", "unchanged": "Nothing changed.",
           "deleted": "The source and its stored credentials were deleted."}


def _policy_values(src: Source | None, spec: ConnectorSpec) -> dict[str, Any]:
    if src is not None:
        return dict(source_view(src)["policy"])
    return {"allowed_methods": READ_ONLY_METHODS if spec.is_catalog_api else None}


def _sections(spec: ConnectorSpec, *, config: Mapping[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "config": forms.fields(spec.config_schema, "config", values=config),
        "credentials": forms.fields(spec.credentials_schema, "credentials", secret=True),
        "policy": forms.fields(POLICY_SCHEMA, "policy", values=policy, choices=POLICY_CHOICES, hints=POLICY_HINTS),
    }


def _raw(schema: Mapping[str, Any], prefix: str, form: Form, **kw: Any) -> dict[str, Any]:
    """What the operator typed, for showing a refused form again (never used for credentials)."""
    try:
        return forms.parse(schema, prefix, form.values, **kw)
    except InvalidRequest:
        return {f.key: form.get(f.name) for g in forms.fields(schema, prefix) if not g.key for f in g.fields}


def _policy(form: Form) -> dict[str, Any]:
    return forms.parse(POLICY_SCHEMA, "policy", form.values, nulls=True, choices=POLICY_CHOICES)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def norm(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: sorted(v) if isinstance(v, list) else norm(v) if isinstance(v, Mapping) else v
                for k, v in d.items() if v is not None}
    return norm(a) == norm(b)


@router.get("/console/sources")
async def sources_page(c: Managing, workspace_id: str | None = None, done: str | None = None) -> Response:
    names = await Names().load(c.svc, c.caller)
    found = await c.svc.sources.list_sources(c.caller, workspace_id or None)
    found.sort(key=lambda s: (names.workspaces.get(s.workspace_id, ""), s.name))
    return c.page("console/sources.html", nav="sources", sources=found, names=names, catalog=c.svc.catalog,
                  traffic=await c.traffic.sources(workspace_ids=c.reach), workspace_id=workspace_id or "",
                  workspaces=sorted(names.workspaces.items(), key=lambda kv: kv[1]), notice=NOTICES.get(done or ""))


# creating -----------------------------------------------------------------------------------------------
@router.get("/console/sources/new")
async def new_source(c: Managing, workspace_id: str | None = None, connector: str | None = None) -> Response:
    workspaces = await c.workspaces()
    spec = c.svc.catalog.get(connector or "")
    if not workspace_id or spec is None:
        return c.page("console/source_pick.html", nav="sources", workspaces=workspaces, catalog=c.svc.catalog,
                      workspace_id=workspace_id or "", connector=connector or "")
    ws = await c.svc.workspaces.get(c.caller, workspace_id)
    return _new_form(c, ws.id, ws.name, spec, values={}, policy=_policy_values(None, spec))


def _new_form(c: Console, workspace_id: str, workspace_name: str, spec: ConnectorSpec, *, values: Mapping[str, Any],
              policy: Mapping[str, Any], status: int = 200, error: KeyrelayError | None = None) -> Response:
    return c.page("console/source_new.html", nav="sources", status=status, spec=spec, workspace_id=workspace_id,
                  workspace_name=workspace_name, values=values, error=error,
                  sections=_sections(spec, config=values.get("config") or {}, policy=policy))


@router.post("/console/sources/new")
async def create_source(c: Managing) -> Response:
    form = await c.form("source.create")
    ws = await c.svc.workspaces.get(c.caller, form.get("workspace_id"))
    spec = c.svc.sources.connector(form.get("connector"))
    body: dict[str, Any] = {"workspace_id": ws.id, "connector": spec.name, "name": form.get("name"),
                            "slug": form.get("slug").strip() or None}
    try:
        body["config"] = forms.parse(spec.config_schema, "config", form.values)
        body["credentials"] = forms.parse(spec.credentials_schema, "credentials", form.values)
        body["policy"] = _policy(form)
        src = await c.svc.sources.create_source(c.caller, body)
    except KeyrelayError as err:
        values = {"name": form.get("name"), "slug": form.get("slug"),
                  "config": _raw(spec.config_schema, "config", form)}
        policy = _raw(POLICY_SCHEMA, "policy", form, nulls=True, choices=POLICY_CHOICES)
        return _new_form(c, ws.id, ws.name, spec, values=values, policy=policy, status=err.status, error=err)
    return redirect(f"/console/sources/{src.id}?done=created")


# one source ---------------------------------------------------------------------------------------------
async def _source_page(c: Console, src: Source, *, status: int = 200, error: KeyrelayError | None = None,
                       notice: str | None = None, config: Mapping[str, Any] | None = None,
                       policy: Mapping[str, Any] | None = None) -> Response:
    spec = c.svc.sources.connector(src.connector)
    ws = await c.svc.workspaces.get(c.caller, src.workspace_id)
    since, until = c.traffic.window()
    minutes = await c.traffic.minutes(since, until, source_id=src.id)
    total = (await c.traffic.sources(since=since, until=until, source_ids=[src.id])).get(src.id)
    names = await Names().load(c.svc, c.caller)
    recent = [names.row(e) for e in await c.traffic.recent(source_id=src.id, limit=10)] \
        if Scope.LOGS in c.caller.scopes else None  # log entries are for applications holding `logs`
    base = f"{c.request.url.scheme}://{c.request.url.netloc}"
    return c.page("console/source.html", nav="sources", status=status, src=src, spec=spec, ws=ws, error=error,
                  notice=notice, total=total, chart=charts.requests_chart(minutes, width=1100, height=180),
                  recent=recent, base=base, reconnectable=connectable(c),
                  sections=_sections(spec, config=config if config is not None else src.config,
                                     policy=policy if policy is not None else _policy_values(src, spec)))


@router.get("/console/sources/{source_id}")
async def source_page(c: Managing, source_id: str, done: str | None = None) -> Response:
    src = await c.svc.sources.get_source(c.caller, source_id)
    return await _source_page(c, src, notice=NOTICES.get(done or ""))


@router.post("/console/sources/{source_id}")
async def update_source(c: Managing, source_id: str) -> Response:
    form = await c.form(f"source.update:{source_id}")
    src = await c.svc.sources.get_source(c.caller, source_id)
    spec = c.svc.sources.connector(src.connector)
    try:
        changes = _changes(src, spec, form)
        if not changes:
            return redirect(f"/console/sources/{src.id}?done=unchanged")
        await c.svc.sources.update_source(c.caller, src.id, changes)
    except KeyrelayError as err:
        return await _source_page(c, src, status=err.status, error=err,
                                  config=_raw(spec.config_schema, "config", form),
                                  policy=_raw(POLICY_SCHEMA, "policy", form, nulls=True, choices=POLICY_CHOICES))
    return redirect(f"/console/sources/{src.id}?done=saved")


def _changes(src: Source, spec: ConnectorSpec, form: Form) -> dict[str, Any]:
    """Only what differs from the stored source (a config left as it is never needs new credentials)."""
    changes: dict[str, Any] = {}
    for key in ("name", "slug"):
        if form.get(key).strip() != getattr(src, key):
            changes[key] = form.get(key).strip()
    if form.get("status") in ("active", "inactive") and form.get("status") != src.status:
        changes["status"] = form.get("status")
    config = forms.parse(spec.config_schema, "config", form.values)
    if not _same(config, src.config):
        changes["config"] = config
    policy = _policy(form)
    if not _same(policy, _policy_values(src, spec)):
        changes["policy"] = policy
    return changes


@router.get("/console/sources/{source_id}/credentials")
async def credentials_page(c: Managing, source_id: str) -> Response:
    src = await c.svc.sources.get_source(c.caller, source_id)
    return await _credentials_page(c, src, config=src.config)


async def _credentials_page(c: Console, src: Source, *, config: Mapping[str, Any], status: int = 200,
                            error: KeyrelayError | None = None) -> Response:
    spec = c.svc.sources.connector(src.connector)
    ws = await c.svc.workspaces.get(c.caller, src.workspace_id)
    return c.page("console/source_credentials.html", nav="sources", status=status, src=src, spec=spec, ws=ws,
                  error=error, sections=_sections(spec, config=config, policy={}))


@router.post("/console/sources/{source_id}/credentials")
async def replace_credentials(c: Managing, source_id: str) -> Response:
    form = await c.form(f"source.credentials:{source_id}")
    src = await c.svc.sources.get_source(c.caller, source_id)
    spec = c.svc.sources.connector(src.connector)
    try:
        creds = forms.parse(spec.credentials_schema, "credentials", form.values)
        if not creds and spec.credentials_schema.get("properties"):
            raise InvalidRequest("Fill in the new credentials (every stored field is replaced)", field="credentials")
        changes: dict[str, Any] = {"credentials": creds}
        config = forms.parse(spec.config_schema, "config", form.values)
        if not _same(config, src.config):
            changes["config"] = config
        await c.svc.sources.update_source(c.caller, src.id, changes)
    except KeyrelayError as err:
        return await _credentials_page(c, src, config=_raw(spec.config_schema, "config", form), status=err.status,
                                       error=err)
    return redirect(f"/console/sources/{src.id}?done=credentials")


@router.get("/console/sources/{source_id}/delete")
async def confirm_delete(c: Managing, source_id: str) -> Response:
    src = await c.svc.sources.get_source(c.caller, source_id)
    return c.page("console/confirm.html", nav="sources", title=f"Delete source {src.name}?", what=src.name,
                  consequences=_consequences(src), action=f"/console/sources/{src.id}/delete",
                  purpose=f"source.delete:{src.id}", button="Delete source", back=f"/console/sources/{src.id}")


def _consequences(src: Source) -> Sequence[str]:
    return ["Its stored credentials are destroyed.", f"Agents calling it (…/proxy/{src.slug}/…) get 404 at once."]


@router.post("/console/sources/{source_id}/delete")
async def delete_source(c: Managing, source_id: str) -> Response:
    await c.form(f"source.delete:{source_id}")
    await c.svc.sources.delete_source(c.caller, source_id)
    return redirect("/console/sources?done=deleted")
