#!/usr/bin/env python3
"""keyrelay-specific steps around the shared harness (../shared/bench/bench.py), reusing its code.

    krbench.py check     the harness's functional checks against keyrelay, with keyrelay's two documented
                         deviations verified instead (see below); exit 1 if anything else fails
    krbench.py memory    RSS of keyrelay sampled every 0.25 s under 1 MiB streamed load, then 1 KiB load
    krbench.py profile   py-spy samples keyrelay under 1 KiB load at CONNS connections; text summary
    krbench.py quick     A/B loop for development: keyrelay and uv+rawasgi+aiohttp alternately, QUICK_ROUNDS
                         x DURATION s of 1 KiB at CONNS; rps, CPU us/req and their ratio (not a report)
    krbench.py constraints  A/B of a narrowed token (and a budgeted one) against a plain key on one keyrelay
                         (run through bench/constraints.sh, which provisions the keys)

Run through bench/gateway.sh or bench/profile.sh, which provision keyrelay and export TARGET_* and HARNESS.
The upstream nginx and keyrelay are started and pinned exactly as the harness does (keyrelay on
PROXY_CPUS, wrk and the upstream on LOAD_CPUS) and stopped by PID.

The four harness checks keyrelay fails by design:
  secret_injected            keyrelay redacts any copy of an injected secret in response bodies
                             (docs/security.md "Echoed secrets are redacted"), so the upstream's /echo
                             comes back as "Bearer [REDACTED]". That exact value proves the secret did reach
                             the upstream: only an occurrence of the injected value is replaced.
  setcookie_dup_kept_no_jar  keyrelay drops Set-Cookie from upstream responses (pipeline/headers.py
                             RESPONSE_DROP): an upstream session must not bind to keyrelay's origin.
  no_added_accept_enc        when it injects a secret keyrelay asks the upstream for `Accept-Encoding:
  gzip_passthrough           identity`, so an echoed secret is never compressed out of the redactor's
                             sight (docs/security.md "Compressed bodies"): the upstream sees `identity`
                             and the agent gets the body uncompressed, byte-exact.
The harness treats secret_injected as a core check and would skip keyrelay, so gateway.sh runs this
check first and then the harness with CHECKS=0.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter

HARNESS = os.environ["HARNESS"]
sys.path.insert(0, HARNESS)
import bench as H  # noqa: E402  (the shared harness; reads its knobs from the environment at import)


def target():
    os.environ["CANDIDATES"] = "none"
    for c in H.select():
        if c["name"] == os.environ.get("TARGET_NAME", "keyrelay"):
            return c
    raise SystemExit("TARGET_URL is not set (run through bench/gateway.sh or bench/profile.sh)")


class Stack:
    """Upstream nginx + keyrelay, started and pinned by the harness's own functions."""

    def __enter__(self):
        os.makedirs(H.RUN, exist_ok=True)
        H.setup_run_dir()
        self.c = target()
        self.up = H.start_nginx("upstream", "upstream.nginx.conf", H.UP_PORT, 1, H.LOAD_CPUS)
        self.p, ok = H.start_candidate(self.c, 1)
        if not ok:
            raise SystemExit(f"keyrelay did not start; see {H.RUN}/logs")
        return self

    def __exit__(self, *exc):
        for _pid, (p, _name) in list(H.PIDS.items()):
            H.stop(p)


def write(name, text):
    path = os.path.join(H.RUN, name)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(text)
    H.log(f"wrote {path}")


# ---------------------------------------------------------------- check
def check():
    with Stack() as s:
        c = s.c
        port, auth = c["port"], c["auth_hdr"]
        pre = c["paths"][0].rsplit("/", 1)[0]
        res = H.run_checks(c)
        notes = {}
        st, _, body = H.http_get(port, pre + "/echo", {"Authorization": auth})
        echoed = json.loads(body)["auth"] if st == 200 else None
        redacted = echoed == "Bearer [REDACTED]"
        notes["secret_injected"] = (redacted, f"upstream /echo returned auth={echoed!r} (status {st})")
        st, hdrs, body = H.http_get(port, pre + "/setcookie", {"Authorization": auth})
        n = len([1 for k, _ in hdrs if k.lower() == "set-cookie"])
        st2, _, body2 = H.http_get(port, pre + "/echo", {"Authorization": auth, "Cookie": "session=agentA"})
        cookie_fwd = json.loads(body2)["cookie"] if st2 == 200 else None
        notes["setcookie_dup_kept_no_jar"] = (
            st == 200 and n == 0 and cookie_fwd == "",
            f"/setcookie status {st} with {n} Set-Cookie header(s) passed on; an agent Cookie header reached "
            f"the upstream as {cookie_fwd!r}")
        st, _, body = H.http_get(port, pre + "/echo", {"Authorization": auth, "Accept-Encoding": "gzip"})
        asked = json.loads(body)["ae"] if st == 200 else None
        notes["no_added_accept_enc"] = (asked == "identity",
                                        f"an agent's `Accept-Encoding: gzip` reached the upstream as {asked!r}")
        st, hdrs, body = H.http_get(port, pre + "/smallgz", {"Authorization": auth, "Accept-Encoding": "gzip"})
        coded = [v for k, v in hdrs if k.lower() == "content-encoding"]
        notes["gzip_passthrough"] = (st == 200 and not coded and body == H.SMALL,
                                     f"/smallgz status {st}, content-encoding {coded or 'none'}, "
                                     f"body {'= the 1 KiB JSON' if body == H.SMALL else 'differs'}")
    lines = ["| check | harness | keyrelay | note |", "|---|---|---|---|"]
    bad = []
    for k in sorted(res):
        if k in notes:
            ok, why = notes[k]
            lines.append(f"| {k} | {'ok' if res[k] else 'FAIL'} | {'ok (by design)' if ok else 'FAIL'} | {why} |")
            if not (res[k] or ok):
                bad.append(k)
        else:
            lines.append(f"| {k} | {'ok' if res[k] else 'FAIL'} | | |")
            if not res[k]:
                bad.append(k)
    with open(os.path.join(H.RUN, "checks.keyrelay.json"), "w") as f:
        json.dump({"harness": res, "keyrelay": {k: {"ok": v[0], "note": v[1]} for k, v in notes.items()}}, f, indent=1)
    write("checks.keyrelay.md", "\n".join(lines))
    if bad:
        H.log("keyrelay FAILED: " + ", ".join(bad))
        return 1
    return 0


# ---------------------------------------------------------------- memory
def rss_mb(pid):
    return H.mem_kb(pid)[0] / 1024


def sampled_load(s, path, conns, seconds, every=0.25):
    out = {}
    t = threading.Thread(target=lambda: out.update(d=H.wrk(s.c["port"], path, conns, seconds, s.c["auth_hdr"])))
    series = []
    t0 = time.time()
    t.start()
    while t.is_alive():
        series.append((round(time.time() - t0, 2), round(rss_mb(s.p.pid), 1)))
        time.sleep(every)
    return out.get("d"), series


def memory():
    secs = int(os.environ.get("MEM_SECONDS", "20"))
    rows = ["| phase | conns | seconds | rps | MB/s | RSS start MB | RSS at 2 s | RSS max | RSS end | end - 2 s "
            "| peak (VmHWM) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    series_all = {}
    with Stack() as s:
        small, _big, stream = s.c["paths"]
        H.wrk(s.c["port"], small, 4, 1, s.c["auth_hdr"])  # warm: connections, caches, first request log flush
        for name, path, conns in (("1 MiB streamed", stream, H.BIG_CONNS), ("1 KiB", small, H.CONNS)):
            start = rss_mb(s.p.pid)
            d, series = sampled_load(s, path, conns, secs)
            at2 = next((r for t, r in series if t >= 2), series[-1][1])
            mx = max(r for _, r in series)
            end = rss_mb(s.p.pid)
            hwm = H.mem_kb(s.p.pid)[1] / 1024
            series_all[name] = series
            if d:
                d["mbps"] = d["bytes"] / (d["duration_us"] / 1e6) / 1e6
            rows.append(f"| {name} | {conns} | {secs} | {d['rps']:,.0f} | {d['mbps']:,.0f} | {start:.1f} | {at2:.1f} | "
                        f"{mx:.1f} | {end:.1f} | {end - at2:+.1f} | {hwm:.1f} |" if d else f"| {name} | wrk failed |")
    with open(os.path.join(H.RUN, "memory.json"), "w") as f:
        json.dump(series_all, f)
    write("memory.md", "\n".join(rows))
    return 0


# ---------------------------------------------------------------- profile
def collapse(path):
    stacks = Counter()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            if n.isdigit():  # py-spy can cut an overlong stack line: skip it
                stacks[stack] += int(n)
    return stacks


def frame_name(fr):
    # py-spy raw frames look like "func (path/to/file.py:12)"; keep "func (file.py)" with a short path
    name, _, loc = fr.partition(" (")
    loc = loc.rstrip(")")
    file = loc.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    if file.startswith(".") and "/" in file:
        file = file.split("/", 1)[1]
    return f"{name} ({file})" if file else name


def component(fr):
    f = fr.lower()
    for key, label in (("keyrelay/", "keyrelay"), ("aiohttp/", "aiohttp (upstream client)"),
                       ("yarl/", "yarl/multidict"), ("multidict/", "yarl/multidict"),
                       ("uvicorn/", "uvicorn (server)"), ("httptools", "httptools (parser)"),
                       ("uvloop", "uvloop (event loop)"), ("limits/", "limits (rate limiter)"),
                       ("sqlalchemy/", "sqlalchemy/aiosqlite"), ("aiosqlite/", "sqlalchemy/aiosqlite"),
                       ("prometheus_client/", "prometheus_client"), ("asyncio/", "asyncio (stdlib)"),
                       ("uuid.py", "uuid (stdlib)")):
        if key in f:
            return label
    return "other (stdlib/python)"


def summarize_profile(stacks, top, rate_hz, seconds):
    total = sum(stacks.values())
    self_c, incl_c, comp_c, kr_step, threads = Counter(), Counter(), Counter(), Counter(), Counter()
    for stack, n in stacks.items():
        frames = [fr for fr in stack.split(";") if fr]
        # with --threads the first frame is 'thread (TID): NAME'; aiosqlite names its threads
        # 'Thread-N (_connection_worker_thread)': one per open database connection
        if frames and frames[0].startswith("thread ("):
            name = frames[0].split(": ", 1)[-1]
            threads[re.sub(r"^Thread-\d+ ", "", name)] += n
        frames = [fr for fr in frames if not fr.startswith(("process ", "thread ("))]
        if not frames:
            continue
        leaf = frame_name(frames[-1])
        self_c[leaf] += n
        comp_c[component(frames[-1])] += n
        for fn in {frame_name(fr) for fr in frames}:
            incl_c[fn] += n
        # deepest keyrelay frame below the door: which pipeline step the sample belongs to
        kr = [fr for fr in frames if "keyrelay/" in fr and "keyrelay/cli.py" not in fr]
        kr_step[frame_name(kr[-1]) if kr else "(outside keyrelay code: server/loop/client callbacks)"] += n
    pct = lambda n: 100.0 * n / total if total else 0.0  # noqa: E731
    out = [f"samples: {total:,}", "", f"### top {top} by self time (leaf frame)", "",
           "| # | function (file) | self % |", "|---|---|---|"]
    out += [f"| {i} | `{fn}` | {pct(n):.1f} |" for i, (fn, n) in enumerate(self_c.most_common(top), 1)]
    skip = ("<module>", "Runner.run", "run (asyncio/runners.py)", "serve (", "Command.", "Context.invoke",
            "Group.invoke", "main (click", "asyncio_run", "Server.run", "Server.serve", "BaseEventLoop.run_forever",
            "run_until_complete", "Thread.", "_bootstrap")
    out += ["", f"### top {top} by inclusive time (function on the stack)", "",
            "| # | function (file) | incl % |", "|---|---|---|"]
    incl = [(fn, n) for fn, n in incl_c.most_common() if not any(s in fn for s in skip)]
    out += [f"| {i} | `{fn}` | {pct(n):.1f} |" for i, (fn, n) in enumerate(incl[:top], 1)]
    out += ["", "### self time by component (leaf frame's package)", "", "| component | self % |", "|---|---|"]
    out += [f"| {k} | {pct(n):.1f} |" for k, n in comp_c.most_common()]
    out += ["", "### samples by thread (100% = all samples; 1 busy thread for the whole run = "
            f"{100.0 * (rate_hz * seconds) / total if total else 0:.0f}%)", "", "| thread | % |", "|---|---|"]
    out += [f"| {k} | {pct(n):.1f} |" for k, n in threads.most_common()]
    out += ["", "### samples by deepest keyrelay frame", "", "| keyrelay function | % |", "|---|---|"]
    out += [f"| `{k}` | {pct(n):.1f} |" for k, n in kr_step.most_common(top)]
    return "\n".join(out)


def main_ticks(pid):
    """utime+stime of the main thread alone (the process total in /proc/PID/stat includes every thread)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    except OSError:
        return 0


def profile():
    secs = int(os.environ.get("PROFILE_SECONDS", "15"))
    rate = os.environ.get("PROFILE_RATE", "250")
    native = os.environ.get("PROFILE_NATIVE", "0") == "1"
    extra = os.environ.get("PROFILE_FLAGS", "--function").split()
    pyspy = os.environ.get("PYSPY", "py-spy")
    raw = os.path.join(H.RUN, "profile.collapsed.txt")
    with Stack() as s:
        port, auth = s.c["port"], os.environ.get("PROFILE_AUTH") or s.c["auth_hdr"]
        # PROFILE_PATH=stream (1 MiB streamed) or big (1 MiB buffered); default the 1 KiB route
        small = {"stream": s.c["paths"][2], "big": s.c["paths"][1]}.get(os.environ.get("PROFILE_PATH", ""),
                                                                          s.c["paths"][0])
        base = H.wrk(port, small, H.CONNS, 5, auth)  # warm-up, and throughput without the profiler
        H.log(f"without profiler: {base['rps']:,.0f} rps" if base else "warm-up wrk failed")
        args = [pyspy, "record", "--pid", str(s.p.pid), "--rate", rate, "--duration", str(secs + 1),
                "--threads"] + extra + (["--native"] if native else ["--nonblocking"])
        with open(os.path.join(H.RUN, "logs", "py-spy.log"), "ab") as errlog:
            rec = subprocess.Popen([*args, "--format", "raw", "-o", raw], stdout=subprocess.DEVNULL, stderr=errlog)
        time.sleep(1.0)
        t0, m0 = H.cpu_ticks(s.p.pid), main_ticks(s.p.pid)
        d = H.wrk(port, small, H.CONNS, secs, auth)
        cpu = (H.cpu_ticks(s.p.pid) - t0) / H.HZ
        cpu_main = (main_ticks(s.p.pid) - m0) / H.HZ
        rec.wait(timeout=secs + 60)
        if d is None or not os.path.exists(raw):
            raise SystemExit(f"profile failed; see {H.RUN}/logs/py-spy.log")
    stacks = collapse(raw)
    head = [f"keyrelay under wrk -c{H.CONNS} for {secs} s on {H.UP_HOST}:{port}{small}; "
            f"py-spy {rate} Hz, flags {' '.join(args[8:])} (idle frames excluded unless --native)",
            f"throughput: {base['rps']:,.0f} rps without the profiler, {d['rps']:,.0f} rps while sampled; "
            f"CPU {cpu * 1e6 / max(d['requests'], 1):.0f} us/req while sampled, of which the main (event loop) thread "
            f"{cpu_main * 1e6 / max(d['requests'], 1):.0f} and other threads (aiosqlite connection threads, the "
            f"default executor) {(cpu - cpu_main) * 1e6 / max(d['requests'], 1):.0f} (from /proc, exact)"
            if base else "",
            f"raw collapsed stacks: {raw} (flamegraph: `flamegraph.pl` or speedscope.app)", ""]
    write("profile.md", "\n".join(head) + profile_text(stacks, int(rate), secs))
    return 0


def quick():
    rounds = int(os.environ.get("QUICK_ROUNDS", "3"))
    os.environ["CANDIDATES"] = "uv+rawasgi+aiohttp"
    cands = {c["name"]: c for c in H.select()}
    kr, cand = cands[os.environ.get("TARGET_NAME", "keyrelay")], cands["uv+rawasgi+aiohttp"]
    os.makedirs(H.RUN, exist_ok=True)
    H.setup_run_dir()
    H.start_nginx("upstream", "upstream.nginx.conf", H.UP_PORT, 1, H.LOAD_CPUS)
    got = {kr["name"]: [], cand["name"]: []}
    try:
        for _ in range(rounds):
            for c in (kr, cand):
                p, ok = H.start_candidate(c, 1)
                if not ok:
                    raise SystemExit(f"{c['name']} did not start; see {H.RUN}/logs")
                H.wrk(c["port"], c["paths"][0], H.CONNS, 2, c["auth_hdr"])
                t0 = H.cpu_ticks(p.pid)
                d = H.wrk(c["port"], c["paths"][0], H.CONNS, H.DURATION, c["auth_hdr"])
                cpu = (H.cpu_ticks(p.pid) - t0) / H.HZ * 1e6 / max(d["requests"], 1)
                rss = H.mem_kb(p.pid)[0] / 1024
                got[c["name"]].append((d["rps"], cpu, rss, d["errors"]))
                H.stop(p)
    finally:
        for _pid, (p, _name) in list(H.PIDS.items()):
            H.stop(p)
    for name, rows in got.items():
        print(f"{name:24} " + "  ".join(f"{r:7,.0f} rps {c:4.0f} us/req {m:5.1f} MiB err {e}" for r, c, m, e in rows))
    ratios = [a[0] / b[0] for a, b in zip(got[kr["name"]], got[cand["name"]])]
    cpu = [b[1] / a[1] for a, b in zip(got[kr["name"]], got[cand["name"]])]
    print(f"ratio rps {sorted(ratios)[len(ratios) // 2]:.2f}  cpu efficiency {sorted(cpu)[len(cpu) // 2]:.2f}")
    return 0


def builds():
    """Two keyrelay builds (bench/builds.sh wrote A.env and B.env: command, URL, key), both started and pinned by
    the harness, wrk alternating between them (the order flips every round)."""
    import shlex
    from urllib.parse import urlsplit
    rounds = int(os.environ.get("QUICK_ROUNDS", "8"))
    url_key = {"small": "URL", "big": "BIG_URL", "stream": "STREAM_URL"}[os.environ.get("BUILDS_PATH", "small")]
    cands = []
    for label in ("A", "B"):
        env = {}
        with open(os.path.join(H.RUN, f"{label}.env")) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                env[k] = shlex.split(v)[0]
        u = urlsplit(env[url_key])
        cands.append(dict(name=label, kind="proc", cmd=env["CMD"], cwd=os.path.dirname(HARNESS), port=u.port,
                          paths=(u.path, None, None), auth=env["AUTH"], auth_hdr=env["AUTH"], workers=False,
                          group="target", pid=None))
    os.makedirs(H.RUN, exist_ok=True)
    H.setup_run_dir()
    H.start_nginx("upstream", "upstream.nginx.conf", H.UP_PORT, 1, H.LOAD_CPUS)
    got = {"A": [], "B": []}
    procs = {}
    try:
        for c in cands:
            p, ok = H.start_candidate(c, 1)
            if not ok:
                raise SystemExit(f"{c['name']} did not start; see {H.RUN}/logs")
            procs[c["name"]] = p
            H.wrk(c["port"], c["paths"][0], H.CONNS, 2, c["auth_hdr"])  # warm-up
        for i in range(rounds):
            for c in (cands if i % 2 == 0 else cands[::-1]):
                p = procs[c["name"]]
                t0 = H.cpu_ticks(p.pid)
                d = H.wrk(c["port"], c["paths"][0], H.CONNS, H.DURATION, c["auth_hdr"])
                cpu = (H.cpu_ticks(p.pid) - t0) / H.HZ * 1e6 / max(d["requests"], 1)
                got[c["name"]].append((d["rps"], cpu, d["errors"]))
    finally:
        for _pid, (p, _name) in list(H.PIDS.items()):
            H.stop(p)
    rows = []
    for name, vals in got.items():
        rows.append(f"{name}  " + "  ".join(f"{r:7,.0f} rps {c:4.0f} us/req err {e}" for r, c, e in vals))
    ratios = sorted(b[0] / a[0] for a, b in zip(got["A"], got["B"]))
    cpu = sorted(a[1] / b[1] for a, b in zip(got["A"], got["B"]))
    rows.append(f"B/A rps: median {ratios[len(ratios) // 2]:.3f} (per round: {', '.join(f'{r:.3f}' for r in ratios)})")
    rows.append(f"A/B CPU per request: median {cpu[len(cpu) // 2]:.3f}")
    print("\n".join(rows))
    write("builds.md", "\n".join(rows))
    return 0


def constraints():
    """A/B of a narrowed token against a plain one on the same keyrelay process: wrk alternates between the
    plain key (A), a key with sources/methods/paths constraints (B) and, if KR_KEY_BUDGET is set, a key with a
    request budget (C), QUICK_ROUNDS x DURATION s of 1 KiB at CONNS. Prints rps per round and the median ratios."""
    rounds = int(os.environ.get("QUICK_ROUNDS", "5"))
    keys = {"plain": os.environ["TARGET_AUTH"], "constrained": "Bearer " + os.environ["KR_KEY_NARROW"]}
    if os.environ.get("KR_KEY_BUDGET"):
        keys["budgeted"] = "Bearer " + os.environ["KR_KEY_BUDGET"]
    got = {k: [] for k in keys}
    with Stack() as s:
        c = s.c
        for auth in keys.values():
            st, _, _ = H.http_get(c["port"], c["paths"][0], {"Authorization": auth})
            if st != 200:
                raise SystemExit(f"a bench key was refused ({st}): provisioning is wrong")
            H.wrk(c["port"], c["paths"][0], H.CONNS, 2, auth)
        for i in range(rounds):
            order = list(keys.items()) if i % 2 == 0 else list(keys.items())[::-1]
            for name, auth in order:
                t0 = H.cpu_ticks(s.p.pid)
                d = H.wrk(c["port"], c["paths"][0], H.CONNS, H.DURATION, auth)
                cpu = (H.cpu_ticks(s.p.pid) - t0) / H.HZ * 1e6 / max(d["requests"], 1)
                got[name].append((d["rps"], cpu, d["errors"]))
    lines = ["| token | " + " | ".join(f"round {i + 1}" for i in range(rounds)) + " | median rps | median us/req |",
             "|---|" + "---|" * (rounds + 2)]
    med = {}
    for name, rows in got.items():
        rps = sorted(r for r, _, _ in rows)[len(rows) // 2]
        cpu = sorted(c for _, c, _ in rows)[len(rows) // 2]
        med[name] = rps
        errors = sum(e for _, _, e in rows)
        lines.append(f"| {name} | " + " | ".join(f"{r:,.0f}" for r, _, _ in rows)
                     + f" | {rps:,.0f} | {cpu:.0f} |" + (f" errors {errors}" if errors else ""))
    for name in got:
        if name != "plain":
            ratios = sorted(a[0] / b[0] for a, b in zip(got[name], got["plain"], strict=True))
            lines.append(f"\n{name}/plain: median per-round rps ratio {ratios[len(ratios) // 2]:.3f} "
                         f"(ratio of medians {med[name] / med['plain']:.3f})")
    write("constraints.md", "\n".join(lines))
    return 0


def profile_text(stacks, rate, secs):
    """All threads, then the main (event loop) thread alone: py-spy counts a thread as active while it waits for
    the GIL, so the aiosqlite threads' share of samples overstates their CPU (compare the /proc split above)."""
    top = int(os.environ.get("PROFILE_TOP", "15"))
    main = Counter({k: v for k, v in stacks.items() if k.split(";", 1)[0].endswith(": MainThread")})
    return ("## all threads\n\n" + summarize_profile(stacks, top, rate, secs)
            + "\n\n## main thread only (100% = the main thread's samples)\n\n"
            + summarize_profile(main, top, rate, secs))


def summarize():
    """Re-summarize a saved profile.collapsed.txt: krbench.py summarize FILE [RATE SECONDS]."""
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 250
    secs = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    print(profile_text(collapse(sys.argv[2]), rate, secs))
    return 0


# ---------------------------------------------------------------- noise
def _procs():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                head, _, rest = f.read().rpartition(")")
            parts = rest.split()
            out[int(d)] = (int(parts[1]), head.split("(", 1)[1], int(parts[11]) + int(parts[12]))
        except (OSError, IndexError, ValueError):
            pass
    return out  # pid -> (ppid, comm, utime+stime ticks)


def _in_tree(procs, pid, root):
    for _ in range(64):
        if pid == root:
            return True
        if pid <= 1:
            return False
        pid = procs.get(pid, (0,))[0]
    return False


def noise():
    """Sample, every 2 s until SIGTERM, the CPU used by processes outside ROOT's tree (other work)."""
    import signal
    root, out_path = int(sys.argv[2]), sys.argv[3]
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    prev, per_comm, samples, loads = _procs(), Counter(), [], []
    while not stop:
        time.sleep(2.0)
        cur = _procs()
        other = 0
        for pid, (_pp, comm, ticks) in cur.items():
            if pid in prev and not _in_tree(cur, pid, root) and pid != os.getpid():
                d = ticks - prev[pid][2]
                other += d
                per_comm[comm] += d
        samples.append(100.0 * other / H.HZ / 2.0)
        with open("/proc/loadavg") as f:
            loads.append(float(f.read().split()[0]))
        prev = cur
    import statistics
    top = ", ".join(f"{c} {t / H.HZ:.0f} s" for c, t in per_comm.most_common(5) if t)
    samples = samples or [0.0]
    load = statistics.median(loads) if loads else 0.0
    text = (f"other work on the machine during the run (processes outside the benchmark's tree, sampled every 2 s "
            f"over {len(samples) * 2} s): CPU used median {statistics.median(samples):.0f}% of one core, "
            f"p90 {sorted(samples)[int(len(samples) * 0.9)]:.0f}%, max {max(samples):.0f}% "
            f"(the machine has {os.cpu_count()} cores); load average median {load:.1f}; "
            f"top other processes by CPU: {top or 'none'}")
    with open(out_path, "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    fn = {"check": check, "memory": memory, "profile": profile, "noise": noise,
          "summarize": summarize, "quick": quick, "constraints": constraints, "builds": builds}.get(cmd)
    if fn is None:
        raise SystemExit(__doc__)
    sys.exit(fn())
