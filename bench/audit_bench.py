"""The benchmark of issue 6: the audit trail viewer, `flask audit verify` and the monitor
dashboard on the scale dataset (`make bench-audit`).

The dataset is issue 4's (bench/dataset.py `load` + `aes`: 2,012 subjects, 100,000 AEs,
about 2.8 million hash-chained audit records). It is not rebuilt when issue 4's benchmark
kept it (bench/ae_bench.py --keep/--reuse/--load-only leaves bench/out/ae/ae.db, the
PostgreSQL database cellstudy_bench_ae and bench/out/ae/dataset-<kind>.json): this
benchmark copies it (a file copy; CREATE DATABASE ... TEMPLATE on PostgreSQL) to its own
bench/out/audit/audit.db and cellstudy_bench_audit, so neither run disturbs the other,
and adds migration 0009's indexes to the copy. Without a kept dataset it loads one itself
with the same commands. Then, per database:

(a) `flask audit verify` over the whole chain (CLI, wall time). Target: < 30 s for
    1,000,000 records (the chain here is ~2.8 M: the figure is reported whole and per
    million).
(b) the audit viewer's filtered first page (and a deep keyset page) for several filter
    combinations, as the data manager (all sites) and as the HZ monitor: wrk -t1 -c1
    (one request at a time) for --duration seconds against gunicorn (2 sync workers,
    production config, a snapshot of the working tree); every response checked.
    Target: p99 < 150 ms.
(c) the monitor dashboard (/dashboards/monitor?site=HZ, the HZ monitor) and the data
    manager's (/dashboards/data-manager) the same way. Target: < 200 ms (p99).
(d) the study-wide audit export as a background job while (b)'s unfiltered first page is
    measured again: the page's p99 with the job running against without, and the job's
    time and rows.

    .venv/bin/python bench/audit_bench.py                 # both databases, writes bench/RESULTS.md
    .venv/bin/python bench/audit_bench.py --db sqlite --no-write --duration 3   # a smoke run
    .venv/bin/python bench/audit_bench.py --report-from bench/out/audit/results-*.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import run as h  # noqa: E402  (bench/run.py: the harness of issues 2-3: gunicorn, wrk, snapshot)

ROOT = h.ROOT
OUT = os.path.join(h.OUT, "audit")
AE_OUT = os.path.join(h.OUT, "ae")
RESULTS = h.RESULTS
PY = h.PY
PG_DB = os.environ.get("BENCH_AUDIT_PG_DB", "cellstudy_bench_audit")
AE_PG_DB = os.environ.get("BENCH_AE_PG_DB", "cellstudy_bench_ae")
BEGIN, END = "<!-- bench/audit_bench.py: generated, begin -->", "<!-- bench/audit_bench.py: generated, end -->"
SECRET = secrets.token_hex(32)

VIEWER_P99_MS = 150.0
VERIFY_S_PER_MILLION = 30.0
DASHBOARD_P99_MS = 200.0

h.OUT = OUT
h.PG_DB = PG_DB


def log(msg: str) -> None:
    h.log(msg)


# --- the dataset ------------------------------------------------------------------------------------------


def _url(kind: str) -> str:
    if kind == "sqlite":
        return "sqlite:///" + os.path.join(OUT, "audit.db")
    admin = urllib.parse.urlsplit(h.PG_ADMIN_URL)
    return urllib.parse.urlunsplit(("postgresql+psycopg", admin.netloc, "/" + PG_DB, "", ""))


def _pg(sql: str, *params):
    import psycopg

    with psycopg.connect(h.PG_ADMIN_URL, autocommit=True) as conn:
        return (
            conn.execute(sql, params or None).fetchall()
            if sql.lstrip().upper().startswith("SELECT")
            else conn.execute(sql, params or None)
        )


def prepare(kind: str, args) -> dict:
    """A copy of issue 4's kept dataset, or a freshly loaded one; migration 0009's indexes."""
    info: dict = {"kind": kind}
    cache = os.path.join(AE_OUT, f"dataset-{kind}.json")
    t = time.perf_counter()
    if kind == "sqlite":
        src = os.path.join(AE_OUT, "ae.db")
        dest = os.path.join(OUT, "audit.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(dest + suffix):
                os.remove(dest + suffix)
        if os.path.exists(cache) and os.path.exists(src) and not args.rebuild:
            shutil.copyfile(src, dest)
            info["source"] = "copy of bench/out/ae/ae.db (issue 4's kept dataset)"
        else:
            info["source"] = "loaded by bench/dataset.py"
            info["load"] = h.dataset("load", _url(kind), "--subjects", str(args.subjects), "--aes", str(args.aes))
    else:
        _pg(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        exists = _pg("SELECT 1 FROM pg_database WHERE datname = %s", AE_PG_DB)
        if os.path.exists(cache) and exists and not args.rebuild:
            _pg(f'CREATE DATABASE "{PG_DB}" TEMPLATE "{AE_PG_DB}"')
            info["source"] = f"copy of {AE_PG_DB} (issue 4's kept dataset, CREATE DATABASE ... TEMPLATE)"
        else:
            _pg(f'CREATE DATABASE "{PG_DB}"')
            info["source"] = "loaded by bench/dataset.py"
            info["load"] = h.dataset("load", _url(kind), "--subjects", str(args.subjects), "--aes", str(args.aes))
    if os.path.exists(cache):
        with open(cache) as f:
            info["dataset"] = json.load(f)
    info["copy_s"] = time.perf_counter() - t
    t = time.perf_counter()
    info["migrations"] = catch_up(_url(kind))
    proc = subprocess.run(
        [PY, "-c", APPLY_INDEXES, _url(kind)],
        cwd=h.APP_ROOT,
        env=h.app_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"migration 0009's indexes: {proc.stderr[-2000:]}")
    info["indexes"] = proc.stdout.strip()
    info["indexes_s"] = time.perf_counter() - t
    return info


def catch_up(url: str) -> str:
    """Issue 4's kept dataset may have been migrated while 0008 (monitoring) and 0009 were
    still empty stubs: alembic_version says 0009 but 0008's tables are missing. Then the
    copy is stamped back to 0007 (whose table, job, it has) and upgraded: 0008 and 0009 run
    for real. A dataset loaded with the current migrations needs nothing."""
    probe = (
        "import sys; from sqlalchemy import create_engine, inspect; "
        "print(' '.join(inspect(create_engine(sys.argv[1])).get_table_names()))"
    )
    tables = subprocess.run(
        [PY, "-c", probe, url], env=h.app_env(), capture_output=True, text=True, check=True
    ).stdout.split()
    if "sdv_mark" in tables:
        return "current"
    if "job" not in tables:
        raise RuntimeError("the kept dataset predates migration 0007: load a fresh one with --rebuild")
    for argv in (("db", "stamp", "0007"), ("db", "upgrade")):
        _, proc = h.flask_cli(url, *argv)
        if proc.returncode != 0:
            raise RuntimeError(f"flask {' '.join(argv)}: {proc.stderr[-2000:]}")
    return "stamped 0007 and upgraded (0008, 0009 applied to the copy)"


# Migration 0009's indexes on a database that is already at revision 0009 (issue 4's dataset
# was migrated while 0009 was still an empty stub): the migration's own INDEXES list.
APPLY_INDEXES = r"""
import importlib.util, os, sys
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, inspect
spec = importlib.util.spec_from_file_location("m0009", os.path.join(os.environ["BENCH_APP_ROOT"], "migrations",
                                              "versions", "0009_audit_viewer.py"))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
engine = create_engine(sys.argv[1])
have = {i["name"] for i in inspect(engine).get_indexes("audit_record")}
with engine.begin() as conn:
    ops = Operations(MigrationContext.configure(conn))
    made = [name for name, columns in m.INDEXES if name not in have]
    for name, columns in m.INDEXES:
        if name not in have:
            ops.create_index(name, "audit_record", columns)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE audit_record")
    else:
        conn.exec_driver_sql("ANALYZE")
print("created " + (", ".join(made) or "none (present)"))
"""


# --- serving ----------------------------------------------------------------------------------------------


def app_server(url: str, name: str, workers: int = 2) -> h.Server:
    port = h.free_port()
    env = {
        "CELLSTUDY_CONFIG": "production",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": url,
        "SESSION_COOKIE_SECURE": "0",
        "PYTHONPATH": h.APP_ROOT,
        "JOBS_WORKERS": "1",
    }
    cmd = [
        os.path.join(h.VENV_BIN, "gunicorn"),
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--timeout",
        "600",
        "wsgi:app",
    ]
    server = h.Server(name, cmd, port, env=env)
    server.wait_ready("/login")
    return server


def login_as(port: int, username: str) -> str:
    h.USERNAME, h.PASSWORD = username, "cellstudy-demo"
    return h.login(port)


def check(port: int, path: str, cookie: str, marker: str) -> str:
    status, _, page = h.request(port, "GET", path, cookie=cookie)
    if status != 200 or marker not in page:
        raise RuntimeError(
            f"GET {path}: HTTP {status}, marker {marker!r} "
            f"{'found' if marker in page else 'missing'}: not the real page"
        )
    return page


ROW = re.compile(r'<tr data-id="(\d+)"')
WARMUP = 4  # unmeasured passes over every URL before the measured runs


def targets(url: str) -> dict:
    """Ids and numbers the URLs need: a copied subject, an AE form, a screening form, the
    middle of the chain, today's date at HZ."""
    code = r"""
import json, sys
from sqlalchemy import func, select
from cellstudy import create_app
from cellstudy.extensions import db
from cellstudy.enrollment.models import Subject
from cellstudy.records.models import AuditRecord
app = create_app("development", overrides={"SQLALCHEMY_DATABASE_URI": sys.argv[1]})
with app.app_context():
    n = db.session.execute(select(func.count(Subject.id))).scalar()
    subject = db.session.execute(select(Subject).order_by(Subject.id).offset(n // 2).limit(1)).scalar_one()
    ae = db.session.execute(select(AuditRecord.form_id).where(AuditRecord.form == "adverse_event")
                            .order_by(AuditRecord.id.desc()).limit(1).offset(5000)).scalar()
    scr = subject.current_screening.id
    lo, hi = db.session.execute(select(func.min(AuditRecord.id), func.max(AuditRecord.id))).one()
    last = db.session.execute(select(AuditRecord.at).order_by(AuditRecord.id.desc()).limit(1)).scalar()
    print(json.dumps({"subject_id": subject.id, "subject": subject.label, "ae_id": ae, "screening_id": scr,
                      "middle": (lo + hi) // 2, "max_id": hi, "day": last.date().isoformat(), "records": hi - lo + 1}))
"""
    proc = subprocess.run(
        [PY, "-c", code, url], cwd=h.APP_ROOT, env=h.app_env(), capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def viewer_urls(t: dict) -> list[tuple[str, str, str]]:
    """(label, user, path) of the filtered first pages measured."""
    return [
        ("study, no filter (newest 50)", "dm", "/audit"),
        ("site HZ, form type AE", "dm", "/audit?site=HZ&form=adverse_event"),
        ("action: signed", "dm", "/audit?action=sign"),
        ("user inv-hz", "dm", "/audit?user=inv-hz"),
        ("form type visit, action changed", "dm", "/audit?form=visit&action=update"),
        (f"one day ({t['day']}, UTC)", "dm", f"/audit?date_from={t['day']}&date_to={t['day']}"),
        (f"subject {t['subject']} (study page)", "dm", f"/audit?subject={t['subject']}"),
        (f"subject page /subjects/{t['subject_id']}/audit", "dm", f"/subjects/{t['subject_id']}/audit"),
        ("one AE form", "dm", f"/audit?form=adverse_event&form_id={t['ae_id']}"),
        (
            "one field (screening weight)",
            "dm",
            f"/subjects/{t['subject_id']}/audit?form=screening&form_id={t['screening_id']}&field=weight_kg",
        ),
        ("deep keyset page (middle of the chain)", "dm", f"/audit?before={t['middle']}"),
        ("monitor HZ, no filter", "monitor-hz", "/audit"),
        ("monitor HZ, action: signature invalidated", "monitor-hz", "/audit?action=unsign"),
    ]


def measure_get(port: int, path: str, cookie: str, duration: float) -> dict:
    res = h.wrk(
        f"http://127.0.0.1:{port}{path}",
        duration=duration,
        threads=1,
        conns=1,
        headers=[f"Cookie: {cookie}", f"User-Agent: {h.USER_AGENT}"],
    )
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", res.get("raw", ""))
    return {
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "rps": res["rps"],
        "requests": res.get("requests"),
        "non_2xx": int(m.group(1)) if m else 0,
    }


def run_database(kind: str, args) -> dict:
    log(f"== {kind}: the dataset")
    res: dict = {"kind": kind}
    res["prepare"] = prepare(kind, args)
    url = _url(kind)
    log(
        f"   {res['prepare']['source']} in {res['prepare']['copy_s']:.0f} s; indexes "
        f"{res['prepare']['indexes']} in {res['prepare']['indexes_s']:.0f} s"
    )
    t = targets(url)
    res["targets"] = t
    log(f"   {t['records']:,} audit records")
    res["verify"] = h.audit_verify(url)
    v = res["verify"]
    v["per_million_s"] = v["seconds"] / (v["records"] / 1e6) if v.get("records") else None
    log(f"   flask audit verify: {v['seconds']:.1f} s for {v['records']:,} records ({v['output'][:60]})")
    if not v["ok"]:
        raise RuntimeError(v["output"])
    server = app_server(url, f"audit-{kind}")
    try:
        cookies = {u: login_as(server.port, u) for u in ("dm", "monitor-hz")}
        # warm-up, not measured: every URL WARMUP times, so both workers have compiled the
        # templates and the caches hold what a running server holds before any figure is taken
        for _ in range(WARMUP):
            for _label, user, path in viewer_urls(t):
                check(server.port, path, cookies[user], 'id="audit"')
            for path, user in (("/dashboards/monitor?site=HZ", "monitor-hz"), ("/dashboards/data-manager", "dm")):
                h.request(server.port, "GET", path, cookie=cookies[user])
        res["viewer"] = []
        for label, user, path in viewer_urls(t):
            page = check(server.port, path, cookies[user], 'id="audit"')
            rows = len(ROW.findall(page))
            m = measure_get(server.port, path, cookies[user], args.duration)
            m.update(label=label, user=user, path=path, rows=rows)
            res["viewer"].append(m)
            log(f"   viewer {label}: p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms ({rows} rows)")
        res["dashboards"] = []
        for label, user, path, marker in (
            ("monitor dashboard, site HZ", "monitor-hz", "/dashboards/monitor?site=HZ", 'id="forms"'),
            ("data-manager dashboard, all sites", "dm", "/dashboards/data-manager", 'id="site-table"'),
        ):
            check(server.port, path, cookies[user], marker)
            m = measure_get(server.port, path, cookies[user], args.duration)
            m.update(label=label, user=user, path=path)
            res["dashboards"].append(m)
            log(f"   {label}: p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms")
        if args.export:
            res["export"] = export_under_load(server, cookies["dm"], args)
    finally:
        stop(server)
    res["verify_after"] = h.audit_verify(url)
    if not args.keep:
        drop(kind)
    return res


def export_under_load(server: h.Server, cookie: str, args) -> dict:
    """The study-wide export job (dm: every record) while the first page is measured."""
    path = "/audit"
    status, headers, page = h.request(server.port, "GET", path, cookie=cookie)
    token = h.csrf_token(page)
    cookie = h.session_cookie(headers) or cookie  # the CSRF secret may have just been put in the session
    t0 = time.perf_counter()
    status, headers, _ = h.request(
        server.port, "POST", "/audit/study-export", cookie=cookie, body=urllib.parse.urlencode({"csrf_token": token})
    )
    location = dict((k.lower(), v) for k, v in headers).get("location", "")
    m = re.search(r"/jobs/(\d+)", location)
    if status != 302 or not m:
        raise RuntimeError(f"study export: HTTP {status} {location}")
    job = int(m.group(1))
    out = {"job": job, "during": []}
    state = {}
    while True:
        during = measure_get(server.port, path, cookie, min(args.duration, 5))
        code, _, body = h.request(server.port, "GET", f"/jobs/{job}/status", cookie=cookie)
        if code != 200:
            raise RuntimeError(f"/jobs/{job}/status: HTTP {code}: {body[:200]}")
        state = json.loads(body)
        during["job_percent"] = state.get("percent")
        out["during"].append(during)
        log(f"   during the export ({state.get('percent')} %): p99 {during['p99_ms']:.1f} ms")
        if state.get("status") in ("done", "failed") or time.perf_counter() - t0 > args.export_limit:
            break
    while state.get("status") not in ("done", "failed") and time.perf_counter() - t0 < args.export_limit:
        time.sleep(1)
        state = json.loads(h.request(server.port, "GET", f"/jobs/{job}/status", cookie=cookie)[2])
    out["job_s"] = time.perf_counter() - t0
    out["state"] = state
    out["after"] = measure_get(server.port, path, cookie, min(args.duration, 5))
    log(f"   export job {state.get('status')} in {out['job_s']:.0f} s ({state.get('total')} rows)")
    return out


def stop(server: h.Server) -> None:
    """Stop gunicorn; a worker still running an export job (its thread pool is joined at
    exit) is killed by its pid, never left behind."""
    workers = h._children(server.proc.pid)
    server.stop()
    deadline = time.time() + 10
    for pid in workers:
        while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.2)
        if os.path.exists(f"/proc/{pid}"):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def drop(kind: str) -> None:
    if kind == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(OUT, "audit.db") + suffix
            if os.path.exists(path):
                os.remove(path)
    else:
        _pg(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


# --- the report -------------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def report(results: dict) -> str:
    lines = [
        BEGIN,
        "",
        "## Issue 6: audit trail viewer, `flask audit verify`, dashboards",
        "",
        f"Run {results['started']} by `bench/audit_bench.py` (`make bench-audit`) on {results['machine'].get('cpu', '?')}"
        f" ({results['machine'].get('nproc', '?')} cores, shared); app snapshot "
        f"{results['machine'].get('snapshot', '-')}. wrk -t1 -c1 (one request at a time) for "
        f"{results['args']['duration']:.0f} s per URL against gunicorn (2 sync workers, production config); "
        "every URL checked for status 200 and its page marker, and requested 4 times over (warm-up, not measured) before it is measured.",
        "",
    ]
    for note in results.get("notes", ()):
        lines += [note, ""]
    lines += [
        "| target | " + " | ".join(d["kind"] for d in results["databases"]) + " |",
        "| --- | " + " | ".join("---" for _ in results["databases"]) + " |",
    ]
    row = ["viewer filtered first page p99 < 150 ms (worst URL)"]
    for d in results["databases"]:
        worst = max(d["viewer"], key=lambda m: m["p99_ms"])
        row.append(f"{worst['p99_ms']:.1f} ms ({worst['label']}): {_met(worst['p99_ms'] < VIEWER_P99_MS)}")
    lines.append("| " + " | ".join(row) + " |")
    row = ["`flask audit verify` < 30 s per 1,000,000 records"]
    for d in results["databases"]:
        v = d["verify"]
        row.append(
            f"{v['seconds']:.1f} s for {v['records']:,} records = {v['per_million_s']:.1f} s per million: "
            f"{_met(v['per_million_s'] < VERIFY_S_PER_MILLION)}"
        )
    lines.append("| " + " | ".join(row) + " |")
    row = ["monitor dashboard < 200 ms (p99)"]
    for d in results["databases"]:
        m = d["dashboards"][0]
        row.append(f"{m['p99_ms']:.1f} ms (p50 {m['p50_ms']:.1f}): {_met(m['p99_ms'] < DASHBOARD_P99_MS)}")
    lines.append("| " + " | ".join(row) + " |")
    for d in results["databases"]:
        p = d["prepare"]
        ds = (p.get("dataset") or {}).get("aes", {})
        lines += [
            "",
            f"### {d['kind']}",
            "",
            f"Dataset: {p['source']}; {d['targets']['records']:,} audit records"
            + (f", {ds.get('aes_total', 0):,} AEs" if ds else "")
            + f"; migrations on the copy: {p.get('migrations', '-')} ({p['indexes_s']:.0f} s).",
            "",
            f"`flask audit verify`: **{d['verify']['seconds']:.1f} s** wall for {d['verify']['records']:,} "
            f"records ({d['verify']['startup_s']:.1f} s of it interpreter and app start-up): "
            f"{d['verify']['output']} After the run: {d['verify_after']['output']}",
            "",
            "| audit viewer page | user | rows | p50 ms | p99 ms | req/s | non-2xx |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for m in d["viewer"]:
            lines.append(
                f"| {m['label']} | {m['user']} | {m['rows']} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
                f"{m['rps']:.0f} | {m['non_2xx']} |"
            )
        lines += ["", "| dashboard | user | p50 ms | p99 ms | req/s |", "| --- | --- | ---: | ---: | ---: |"]
        for m in d["dashboards"]:
            lines.append(f"| {m['label']} | {m['user']} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {m['rps']:.0f} |")
        e = d.get("export")
        if e:
            during = [x["p99_ms"] for x in e["during"]]
            base = d["viewer"][0]["p99_ms"]
            lines += [
                "",
                f"Study-wide export (background job, every record as CSV): {e['state'].get('status')} in "
                f"{e['job_s']:.0f} s, {e['state'].get('total') or 0:,} rows. The unfiltered first page meanwhile "
                f"(same gunicorn, the job in one worker's thread), measured in {len(during)} windows of 5 s: "
                f"p99 median {sorted(during)[len(during) // 2]:.0f} ms, worst {max(during):.0f} ms; p50 median "
                f"{sorted(x['p50_ms'] for x in e['during'])[len(during) // 2]:.0f} ms; against p99 "
                f"{base:.0f} ms / p50 {d['viewer'][0]['p50_ms']:.0f} ms without the job and "
                f"{e['after']['p99_ms']:.0f} ms / {e['after']['p50_ms']:.0f} ms after it.",
            ]
    lines += ["", "Raw figures: " + results.get("raw", "bench/out/audit/results-*.json") + ".", "", END]
    return "\n".join(lines)


def write_results(block: str) -> None:
    with open(RESULTS) as f:
        text = f.read()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--aes", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--no-export", dest="export", action="store_false")
    parser.add_argument("--export-limit", type=float, default=600.0)
    parser.add_argument("--rebuild", action="store_true", help="load a fresh dataset even when issue 4's is kept")
    parser.add_argument("--keep", action="store_true", help="keep this benchmark's database copies")
    parser.add_argument("--no-snapshot", dest="snapshot", action="store_false")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--report-from", metavar="JSON")
    args = parser.parse_args()
    if args.report_from:
        with open(args.report_from) as f:
            write_results(report(json.load(f)))
        return
    if not shutil.which("wrk"):
        sys.exit("wrk not found: `make bench-audit` installs Debian's wrk")
    os.makedirs(OUT, exist_ok=True)
    results: dict = {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": h.machine(),
        "databases": [],
        "args": vars(args),
    }
    if args.snapshot:
        h.APP_ROOT, results["machine"]["snapshot"] = h.take_snapshot()
    for kind in (
        ["sqlite", "postgresql"] if args.db == "both" else ["postgresql" if args.db == "postgres" else "sqlite"]
    ):
        results["databases"].append(run_database(kind, args))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw = os.path.join(OUT, f"results-{stamp}.json")
    results["raw"] = os.path.relpath(raw, ROOT)
    with open(raw, "w") as f:
        json.dump(results, f, indent=1, default=str)
    block = report(results)
    print("\n" + block)
    if args.write:
        write_results(block)


if __name__ == "__main__":
    main()
