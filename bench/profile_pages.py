"""Where the time goes, in-process (no HTTP, no gunicorn): for each benchmarked page the
SQL queries per request, the mean time per request through Flask's test client, the
statements of one request (grouped and counted when there are many), and a cProfile of
the loop; plus a cProfile of cellstudy.records.audit.verify(). A page that takes more
than half a second (the study calendar at scale) is timed over fewer requests. Run by
bench/run.py after the load test:

    .venv/bin/python bench/profile_pages.py --url DATABASE_URL --out bench/out/profile-sqlite.txt

Prints one JSON line; the details go to --out.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
import urllib.parse
from datetime import timedelta

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("BENCH_APP_ROOT") or os.path.dirname(BENCH)  # run.py: its snapshot of the app
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

REASON = "bench: profile"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("-n", type=int, default=40, help="requests per page")
    args = parser.parse_args()

    from sqlalchemy import event, select

    from bare_app import app as bare
    from cellstudy import create_app
    from cellstudy.auth.models import Site
    from cellstudy.enrollment.models import Screening, Subject
    from cellstudy.extensions import db
    from cellstudy.records import audit
    from cellstudy.timeutil import site_today
    from dataset import PER_SUBJECT_FIELDS, PROPOSE_IN_DAYS, _own_values, pages as page_ids
    from run import MONITOR, PAGES, PASSWORD, USERNAME, form_pairs

    _instrument()
    app = create_app("development", overrides={"SQLALCHEMY_DATABASE_URI": args.url, "WTF_CSRF_ENABLED": False})
    report = io.StringIO()
    result: dict = {"endpoints": {}}

    with app.app_context():
        statements: list[str] = []

        @event.listens_for(db.engine, "before_cursor_execute")
        def _count(conn, cursor, statement, parameters, context, executemany):
            statements.append(" ".join(statement.split())[:160])
            conn.info["bench_t0"] = time.perf_counter()

        @event.listens_for(db.engine, "after_cursor_execute")
        def _sql_time(conn, cursor, statement, parameters, context, executemany):
            TIMERS["sql"] += time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())

        hz = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        proposed = (site_today(hz) + timedelta(days=PROPOSE_IN_DAYS)).isoformat()
        # The scale subjects (the last ones loaded; all enrolled and treated, complete screening forms).
        ids = (
            db.session.execute(
                select(Subject.id)
                .join(Screening, Screening.subject_id == Subject.id)
                .where(Subject.site_id == hz.id, Screening.status == "complete")
                .order_by(Subject.id.desc())
                .limit(args.n * 3)
            )
            .scalars()
            .all()
        )
        scheduling = (
            db.session.execute(
                select(Subject.id)
                .where(Subject.site_id == hz.id, Subject.status.in_(("enrolled", "on_treatment")))
                .order_by(Subject.id.desc())
                .limit(args.n * 3)
            )
            .scalars()
            .all()
        )
        db.session.remove()

    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = "cellstudy-bench/1"
    resp = client.post("/login", data={"username": USERNAME, "password": PASSWORD})
    assert resp.status_code == 302, resp.status_code

    form = client.get(f"/subjects/{ids[0]}/screening").get_data(as_text=True)
    base = [
        (k, v)
        for k, v in form_pairs(form, "screening-form")
        if k not in ("version", "weight_kg", "reason", *PER_SUBJECT_FIELDS)
    ]
    base += [("reason", REASON), ("complete", "1")]

    def post_args(i: int):
        sid = ids[args.n + 10 + i]
        with app.app_context():
            scr = (
                db.session.execute(
                    select(Screening).join(Subject).where(Subject.id == sid).order_by(Screening.attempt.desc())
                )
                .scalars()
                .first()
            )
            version, weight, own = scr.version, scr.data.get("weight_kg"), _own_values(scr.data)
            db.session.remove()
        new = "70" if weight != "70" else "62.5"
        return (
            f"/subjects/{sid}/screening",
            urllib.parse.urlencode(base + [("version", version), ("weight_kg", new)]) + own,
        )

    # The floor: an authenticated request that does nothing (GET /login redirects a logged-in
    # user): session, login, before/after-request hooks, no page.
    _measure(
        "floor (auth + hooks, 302)", lambda i: client.get("/login"), args.n, statements, result, report, expect=302
    )
    pages = {
        "subject list": lambda i: client.get("/subjects/"),
        "subject page": lambda i: client.get(f"/subjects/{ids[i]}"),
        "screening GET": lambda i: client.get(f"/subjects/{ids[i]}/screening"),
        "calendar": lambda i: client.get("/calendar"),
        "scheduling screen": lambda i: client.get(
            f"/subjects/{scheduling[i % len(scheduling)]}/infusions?proposed={proposed}"
        ),
    }
    # issue 14: the pages of issues 4-6, with the ids bench/run.py measures them on
    more = page_ids(args.url, min(ids), args.n)
    demo = more["demo"]
    monitor = app.test_client()
    monitor.environ_base["HTTP_USER_AGENT"] = "cellstudy-bench/1"
    resp = monitor.post("/login", data={"username": MONITOR, "password": PASSWORD})
    assert resp.status_code == 302, resp.status_code
    infusions, visits = more["infusions"], more["visits"]
    pages.update(
        {
            "infusion CRF": lambda i: client.get("/subjects/{}/infusions/{}".format(*infusions[i % len(infusions)])),
            "visit CRF": lambda i: client.get("/subjects/{}/visits/{}".format(*visits[i % len(visits)])),
            "AE form": lambda i: client.get(f"/subjects/{demo['subject']}/adverse-events/{demo['ae']}"),
            "CRS assessment": lambda i: client.get(f"/subjects/{demo['subject']}/crs/{demo['crs']}"),
            "ICANS assessment": lambda i: client.get(f"/subjects/{demo['subject']}/icans/{demo['icans']}"),
            "queries list": lambda i: monitor.get("/queries"),
            "SDV page": lambda i: monitor.get("/sdv"),
            "signatures": lambda i: monitor.get("/signatures"),
            "audit viewer": lambda i: monitor.get("/audit"),
            "monitor dashboard": lambda i: monitor.get("/dashboards/monitor"),
        }
    )
    assert set(pages) == set(PAGES), sorted(set(pages) ^ set(PAGES))
    for name, call in pages.items():
        _measure(name, call, args.n, statements, result, report, expect=200)

    posts = [post_args(i) for i in range(args.n + 10)]
    _measure(
        "screening save (POST)",
        lambda i: client.post(posts[i][0], data=posts[i][1], content_type="application/x-www-form-urlencoded"),
        args.n,
        statements,
        result,
        report,
        expect=302,
    )

    bare_client = bare.test_client()
    _measure("bare", lambda i: bare_client.get("/"), args.n, [], result, report, expect=200)

    with app.app_context():
        profile = cProfile.Profile()
        t = time.perf_counter()
        profile.enable()
        checked = audit.verify()
        profile.disable()
        result["verify"] = {"seconds": time.perf_counter() - t, "records": checked.checked, "ok": checked.ok}
        report.write(
            f"\n==== audit.verify(): {checked.checked} records, {result['verify']['seconds']:.2f} s (under cProfile)\n"
        )
        _stats(profile, report, 25)

    with open(args.out, "w") as f:
        f.write(report.getvalue())
    print(json.dumps(result))


TIMERS = {"sql": 0.0, "template": 0.0, "evaluate": 0.0, "lockouts": 0.0}


def _instrument() -> None:
    """Time spent in SQL (cursor execute), in template rendering (including any lazy-load
    SQL it triggers), in the eligibility evaluation and in the lockout evaluation of a
    proposed infusion date (infusions.proposal.evaluate_proposal: the scheduling screen once,
    the calendar once per scheduled infusion; including the SQL of its lazy loads), per
    request."""
    import flask.templating

    from cellstudy.enrollment import service
    from cellstudy.infusions import proposal

    def timed(key, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                TIMERS[key] += time.perf_counter() - t

        return wrapper

    flask.templating._render = timed("template", flask.templating._render)
    service.evaluate = timed("evaluate", service.evaluate)
    proposal.evaluate_proposal = timed("lockouts", proposal.evaluate_proposal)


def _measure(name, call, n, statements, result, report, expect):
    t = time.perf_counter()
    call(0)  # first request: template compile, caches
    if time.perf_counter() - t > 0.5:  # a slow page (the calendar at scale): fewer requests
        n, profiled = min(n, 6), 2
    else:
        profiled = 10
    statements.clear()
    resp = call(1)
    if resp.status_code != expect:
        raise SystemExit(f"{name}: HTTP {resp.status_code}, expected {expect}")
    one = list(statements)
    for key in TIMERS:
        TIMERS[key] = 0.0
    t = time.perf_counter()
    for i in range(2, n):
        call(i)
    ms = (time.perf_counter() - t) * 1000 / (n - 2)
    parts = {key: value * 1000 / (n - 2) for key, value in TIMERS.items()}
    profile = cProfile.Profile()
    profile.enable()
    for i in range(n, n + profiled):  # fresh targets: a save must not reuse a version
        call(i)
    profile.disable()
    result["endpoints"][name] = {
        "queries": len(one),
        "ms": ms,
        "requests_timed": n - 2,
        **{f"{k}_ms": v for k, v in parts.items()},
    }
    report.write(
        f"\n==== {name}: {len(one)} SQL statements per request, {ms:.2f} ms per request in-process "
        f"over {n - 2} requests (SQL {parts['sql']:.2f} ms, template rendering {parts['template']:.2f} ms "
        f"incl. lazy loads, eligibility evaluate() {parts['evaluate']:.2f} ms, lockout evaluate_proposal() "
        f"{parts['lockouts']:.2f} ms)\n"
    )
    if len(one) <= 40:
        for s in one:
            report.write(f"  {s}\n")
    else:  # many: the distinct statements (parameters are bound, so the text repeats), most frequent first
        counts: dict[str, int] = {}
        for s in one:
            counts[s] = counts.get(s, 0) + 1
        for s, c in sorted(counts.items(), key=lambda kv: -kv[1])[:25]:
            report.write(f"  {c:6d} x {s}\n")
        if len(counts) > 25:
            report.write(f"  ... {len(counts) - 25} more distinct statements\n")
    _stats(profile, report, 40 if len(one) > 40 else 30)
    if len(one) > 40:  # and where the time is spent itself
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(25)
        report.write(buf.getvalue())


def _stats(profile, report, limit):
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("cumulative").print_stats(limit)
    report.write(buf.getvalue())


if __name__ == "__main__":
    main()
