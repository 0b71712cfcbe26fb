"""Regenerate the operator console's screenshots in docs/console/ (embedded by docs/console.md).

    .venv/bin/python scripts/console_screenshots.py

It starts a keyrelay on 127.0.0.1 (SQLite in a temporary directory) and a fake upstream API from the test
support code, creates workspaces, sources and API keys through the admin API, writes an hour of request-log
history (synthetic rows, so the charts have something to show) and sends live requests through the gateway,
then signs in to the console with Debian's chromium and photographs each page at 1280x800 (and the overview at
390x844, a phone's width).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

from keyrelay.model import LogEntry  # noqa: E402
from support.browser import PHONE, browser, page_in  # noqa: E402
from support.keyrelay import ADMIN_ID, ADMIN_SECRET, Admin, KeyrelayServer, make_settings  # noqa: E402
from support.upstream import FakeUpstream  # noqa: E402

OUT = ROOT / "docs" / "console"


def seed(kr: KeyrelayServer, up: FakeUpstream) -> dict[str, str]:
    admin = Admin(kr.url)
    acme, globex, initech = (admin.workspace(n) for n in ("acme-corp", "globex", "initech"))
    crm = admin.source(acme, upstream_url=up.url, slug="crm", credentials={"bearer_token": "sk_live_screenshot"},
                       policy={"allowed_methods": ["GET", "POST"], "rate_limit_per_minute": 600})
    stripe = admin.source(acme, upstream_url="", slug="stripe", connector="stripe",
                          config={"base_url": up.url}, credentials={"api_key": "sk_test_screenshot"})
    github = admin.source(globex, upstream_url="", slug="github", connector="github",
                          config={"base_url": up.url, "owner": "globex"}, credentials={"token": "ghp_screenshot"})
    payouts = admin.source(acme, upstream_url=up.url, slug="payouts", credentials={"bearer_token": "sk_screenshot"},
                           policy={"approval": {"methods": ["POST", "DELETE"], "timeout_seconds": 3600}})
    tickets = admin.source(initech, upstream_url=up.url, slug="tickets",
                           credentials={"basic": {"username": "bot", "password": "screenshot"}})
    keys = {name: admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": scopes, "name": name}).json()
            for name, ws, scopes in (("support-agent", acme, ["proxy", "logs"]), ("billing-agent", acme, ["proxy"]),
                                     ("triage-bot", globex, ["proxy", "mcp"]), ("old-agent", initech, ["proxy"]))}
    admin.http.delete(f"/api/v1/api-keys/{keys['old-agent']['id']}", headers=admin.headers)
    admin.close()
    return {"acme": acme, "globex": globex, "initech": initech, "crm": crm["id"], "stripe": stripe["id"],
            "github": github["id"], "tickets": tickets["id"], "payouts": payouts["id"],
            "key": keys["support-agent"]["key"],
            "key_globex": keys["triage-bot"]["key"]}


def history(kr: KeyrelayServer, ids: dict[str, str]) -> None:
    """An hour of request-log rows: steady traffic, a burst of rate limiting and an upstream outage."""
    rng = random.Random(7)  # noqa: S311 - made-up traffic for the screenshots, not a secret
    now = time.time()
    sources = [(ids["acme"], ids["crm"], "crm", "http", 40, 3.6),
               (ids["acme"], ids["stripe"], "stripe", "stripe", 18, 4.9),
               (ids["globex"], ids["github"], "github", "github", 12, 4.4),
               (ids["initech"], ids["tickets"], "tickets", "http", 5, 5.3)]
    rows = []
    for minute in range(60, 0, -1):
        for ws, src, slug, connector, rate, mu in sources:
            for _ in range(max(0, int(rng.gauss(rate, rate / 4)))):
                ts = now - minute * 60 + rng.random() * 60
                status, code, latency = 200, None, rng.lognormvariate(mu, 0.45)
                roll = rng.random()
                if src == ids["crm"] and 22 <= minute <= 25 and roll < 0.5:
                    status, code, latency = 429, "rate_limited", rng.uniform(0.2, 1.0)
                elif src == ids["github"] and 8 <= minute <= 10 and roll < 0.6:
                    status, code, latency = 504, "upstream_timeout", 30000.0
                elif roll < 0.03:
                    status, code, latency = 404, None, latency
                elif roll < 0.04:
                    status, code, latency = 401, "unauthenticated", 0.4
                rows.append(LogEntry(id=f"h{len(rows):08d}", ts=ts, workspace_id=ws, source_id=src, door="gateway",
                                     method=rng.choice(["GET", "GET", "GET", "POST"]),
                                     path=f"/api/{ws}/proxy/{slug}/v1/items", status=status, latency_ms=latency,
                                     upstream_latency_ms=None if code else latency * 0.9, error_code=code,
                                     caller="key:screenshot", connector=connector,
                                     bytes_out=rng.randint(200, 9000)))
    store = kr.app.runtime.services.logs  # type: ignore[union-attr]
    kr.run(store.insert_entries(rows))


def live_traffic(kr: KeyrelayServer, ids: dict[str, str], count: int = 6) -> None:
    for i in range(count):
        httpx.get(f"{kr.url}/api/{ids['acme']}/proxy/crm/echo?page={i}",
                  headers={"Authorization": f"Bearer {ids['key']}"})
    httpx.get(f"{kr.url}/api/{ids['globex']}/proxy/github/status/502",
              headers={"Authorization": f"Bearer {ids['key_globex']}"})


def park(kr: KeyrelayServer, ids: dict[str, str]) -> None:
    """Writes the payouts source's policy parks for a decision: the approvals queue has something to show."""
    for method, path in (("POST", "/echo"), ("POST", "/v1/refunds"), ("DELETE", "/v1/payouts/po_118")):
        httpx.request(method, f"{kr.url}/api/{ids['acme']}/proxy/payouts{path}", json={"amount": 4200},
                      headers={"Authorization": f"Bearer {ids['key']}"})


def shoot(page: object, name: str, *, full_page: bool = True) -> None:
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full_page)  # type: ignore[attr-defined]
    print("wrote", OUT / f"{name}.png")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="keyrelay-shots-"))
    with FakeUpstream() as up, KeyrelayServer(make_settings(data_dir=tmp)) as kr:
        ids = seed(kr, up)
        history(kr, ids)
        live_traffic(kr, ids)
        park(kr, ids)
        with browser() as b:
            with page_in(b) as page:
                page.goto(kr.url + "/console/")
                shoot(page, "sign-in")
                page.fill("#client_id", ADMIN_ID)
                page.fill("#client_secret", ADMIN_SECRET)
                page.click("button[type=submit]")
                page.wait_for_url(kr.url + "/console/")
                state = page.context.storage_state()
                shoot(page, "overview")
                for name, path in (("workspaces", "/console/workspaces"),
                                   ("workspace", f"/console/workspaces/{ids['acme']}"),
                                   ("sources", "/console/sources"),
                                   ("source", f"/console/sources/{ids['crm']}"),
                                   ("source-new", f"/console/sources/new?workspace_id={ids['acme']}&connector=http"),
                                   ("source-credentials", f"/console/sources/{ids['crm']}/credentials"),
                                   ("keys", "/console/keys"), ("applications", "/console/applications"),
                                   ("connect", f"/console/workspaces/{ids['acme']}/connect"),
                                   ("vault", "/console/vault")):
                    page.goto(kr.url + path)
                    shoot(page, name)
                page.goto(kr.url + "/console/approvals")
                page.click("tr:last-child form[action$='/approve'] button")  # the oldest pending one: sent
                page.wait_for_selector(".notice.ok")
                shoot(page, "approvals")
                page.goto(kr.url + f"/console/workspaces/{ids['acme']}/connect")
                page.check("input[name=connectors][value=stripe]")
                page.check("input[name=connectors][value=github]")
                page.click("form[action$='/connect'] button[type=submit]")
                page.wait_for_selector("#shown-once")
                shoot(page, "connect-created")
                page.goto(kr.url + "/console/keys")
                page.fill("#key-name", "docs-agent")
                page.click("#new-key button[type=submit]")
                page.wait_for_selector("#shown-once")
                shoot(page, "key-created")
                page.goto(kr.url + "/console/logs")
                page.wait_for_selector("#live-state.on")
                live_traffic(kr, ids, count=2)
                page.wait_for_selector("#log-rows tr.fresh")
                shoot(page, "logs", full_page=False)
                page.click("#log-rows tr")
                page.wait_for_selector("#log-detail[open]")
                shoot(page, "logs-detail", full_page=False)
            with page_in(b, viewport=PHONE, storage_state=state) as phone:
                phone.goto(kr.url + "/console/")
                shoot(phone, "overview-phone")


if __name__ == "__main__":
    main()
