"""The benchmark of issue 4: safety listings and exports at 100,000 AEs (`make bench-ae`).

For each database (SQLite file, PostgreSQL): a fresh database with the scale dataset of
issues 2-3 (bench/dataset.py `load`: 2,000 treated subjects at HZ) extended with
100,000 AEs (bench/dataset.py `aes`: the first few hundred through the real AE service,
the rest in bulk, audit chain re-chained); `flask audit verify`; the app served by
gunicorn from a snapshot of the working tree (production config), logged in as the data
manager `dm` (all sites). Then:

(a) the AE listing, first page, for several filter combinations: wrk -t1 -c1 (one
    request at a time: the page's own latency), -t2 -c2 (one per worker) and -t2 -c8
    against 2 sync workers (the load of issues 2-3's benchmark); every response checked
    (status 200 and the listing table's id). Target: p99 < 100 ms.
(b) the CSV export of every AE (GET /safety/ae.csv, 100,000 rows) end to end over HTTP,
    alternating with the sqlite3 CLI writing the same rows (same columns, labels, order
    and values: the output is compared byte for byte) to /dev/null; each app export runs
    on a freshly started single-worker gunicorn whose peak RSS (VmHWM) is read before
    and after, for ~10,000 rows and for 100,000 rows. Targets: peak RSS < 200 MB whatever
    the row count; at least a third of the sqlite3 CLI's speed (app time <= 3 x CLI).
    On PostgreSQL the reference is psql's \\copy of the same query (the target names the
    sqlite3 CLI; PostgreSQL's figures are reported alongside).
(c) the XLSX export of every AE (GET /safety/ae.xlsx) end to end, alternating with raw
    XlsxWriter in constant_memory mode writing the same cell values (read beforehand
    through the app's own listing query into a list: only the writing is timed). Targets:
    < 15 s, and <= 2 x raw XlsxWriter.
(d) the summary table (GET /safety/summary): 30 sequential requests, p50 / p99.
    Target: < 1 s.

    .venv/bin/python bench/ae_bench.py                  # both databases, writes bench/RESULTS.md
    .venv/bin/python bench/ae_bench.py --db sqlite --aes 20000 --no-write   # a smoke run
    .venv/bin/python bench/ae_bench.py --report-from bench/out/ae/results-*.json

Everything it writes goes to bench/out/ae/ (git-ignored): the SQLite file, the app
snapshot, server logs, the raw figures (results-<UTC time>.json), profiles. PostgreSQL:
127.0.0.1:5432, user postgres; database `cellstudy_bench_ae` is dropped and re-created
(so a concurrent `make bench`, which uses `cellstudy_bench`, is not disturbed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import run as h  # noqa: E402  (bench/run.py: the harness of issues 2-3, reused: gunicorn, wrk, snapshot)

ROOT = h.ROOT
OUT = os.path.join(h.OUT, "ae")
RESULTS = h.RESULTS
PY = h.PY
PG_DB = os.environ.get("BENCH_AE_PG_DB", "cellstudy_bench_ae")
USERNAME, PASSWORD = "dm", "cellstudy-demo"
BEGIN, END = "<!-- bench/ae_bench.py: generated, begin -->", "<!-- bench/ae_bench.py: generated, end -->"

LISTING_P99_MS = 100.0
CSV_RSS_MB = 200.0
CSV_SHARE = 1 / 3  # app speed >= a third of the sqlite3 CLI's
XLSX_S = 15.0
XLSX_RATIO = 2.0
SUMMARY_S = 1.0
#: wrk runs per listing: one request at a time; one per worker (2 sync workers); issues 2-3's load
CONCURRENCY = (("c1", 1, 1), ("c2", 2, 2), ("c8", 2, 8))

h.OUT = OUT  # the harness's logs, wrk output and snapshot go to bench/out/ae/
h.PG_DB = PG_DB
h.USERNAME, h.PASSWORD = USERNAME, PASSWORD


def log(msg: str) -> None:
    h.log(msg)


# --- the listing's rows as SQL (the CLI side of (b)) ----------------------------------------------------


def _labels():
    sys.path.insert(0, h.APP_ROOT)
    from cellstudy.adverse_events.fields import ATTRIBUTIONS, OUTCOMES

    return dict(ATTRIBUTIONS), dict(OUTCOMES)


def _case(column: str, labels: dict) -> str:
    whens = " ".join(f"WHEN '{code}' THEN '{label}'" for code, label in labels.items())
    return f"CASE {column} {whens} ELSE {column} END"


def listing_sql(dialect: str, where: str = "") -> str:
    """The AE listing's export (listings.ae_columns, default order: onset desc, id desc) in
    one SQL statement: the same columns under the same labels, the same values (study day
    from the first infusion given, attribution and outcome labels, Y/N, "Ongoing")."""
    attributions, outcomes = _labels()
    pg = dialect == "postgresql"
    admin = "(i.data ->> 'administration_date')::date" if pg else "json_extract(i.data, '$.administration_date')"
    delta = "(a.onset_date - f.first)" if pg else "CAST(julianday(a.onset_date) - julianday(f.first) AS INTEGER)"
    yn = (
        (lambda c: f"CASE WHEN {c} THEN 'Y' WHEN NOT {c} THEN 'N' END")
        if pg
        else (lambda c: f"CASE {c} WHEN 1 THEN 'Y' WHEN 0 THEN 'N' END")
    )
    return f"""
WITH f AS (SELECT i.subject_id, min(coalesce({admin}, i.planned_date)) AS first
           FROM infusion i WHERE i.state = 'given' GROUP BY i.subject_id)
SELECT coalesce(s.subject_number, s.screening_number) AS "Subject", st.code AS "Site",
       s.dose_level AS "Dose level",
       CASE WHEN f.first IS NULL OR a.onset_date IS NULL THEN NULL
            WHEN {delta} >= 0 THEN {delta} + 1 ELSE {delta} END AS "Study day",
       a.number AS "AE", a.term AS "CTCAE term", a.soc AS "System organ class", a.meddra_code AS "MedDRA code",
       a.verbatim AS "Verbatim term", a.grade AS "Worst grade", {yn("a.serious")} AS "Serious",
       {_case("a.related_nk", attributions)} AS "Attribution NK cells",
       {_case("a.related_ld", attributions)} AS "Attribution lymphodepletion", {yn("a.dlt")} AS "DLT",
       a.onset_date AS "Onset",
       coalesce({"a.end_date::text" if pg else "a.end_date"}, CASE WHEN a.ongoing THEN 'Ongoing' END) AS "End",
       {_case("a.outcome", outcomes)} AS "Outcome", a.status AS "Form status"
FROM adverse_event a JOIN subject s ON s.id = a.subject_id JOIN site st ON st.id = a.site_id
LEFT JOIN f ON f.subject_id = a.subject_id
WHERE a.status != 'deleted' {where}
ORDER BY a.onset_date DESC NULLS LAST, a.id DESC
""".strip()


# --- HTTP -------------------------------------------------------------------------------------------------


def fetch(port: int, path: str, cookie: str, sink=None, chunk: int = 1 << 16) -> dict:
    """GET path, reading the body in chunks (discarded unless `sink` is given); the time from
    sending the request to the last byte, bytes, status and headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.perf_counter()
    conn.request("GET", path, headers={"Cookie": cookie, "User-Agent": h.USER_AGENT})
    resp = conn.getresponse()
    first = None
    size = 0
    lines = 0
    while True:
        data = resp.read(chunk)
        if not data:
            break
        if first is None:
            first = time.perf_counter() - t
        size += len(data)
        lines += data.count(b"\n")
        if sink is not None:
            sink.write(data)
    seconds = time.perf_counter() - t
    headers = dict(resp.getheaders())
    conn.close()
    return {
        "status": resp.status,
        "seconds": seconds,
        "first_byte_s": first,
        "bytes": size,
        "lines": lines,
        "content_type": headers.get("Content-Type", ""),
    }


def _vm(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM", "VmRSS")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) / 1024  # MiB
    except OSError:
        pass
    return out


class RssSampler(threading.Thread):
    """VmRSS of a process every 20 ms while a request runs (the curve, for the record)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop_flag = pid, [], threading.Event()

    def run(self):
        t0 = time.perf_counter()
        while not self.stop_flag.is_set():
            vm = _vm(self.pid)
            if "VmRSS" in vm:
                self.samples.append((round(time.perf_counter() - t0, 2), round(vm["VmRSS"], 1)))
            time.sleep(0.02)

    def stop(self) -> list:
        self.stop_flag.set()
        self.join(2)
        return self.samples


def app_server(kind: str, url: str, workers: int, name: str) -> h.Server:
    port = h.free_port()
    env = {
        "CELLSTUDY_CONFIG": "production",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": url,
        "SESSION_COOKIE_SECURE": "0",
        "PYTHONPATH": h.APP_ROOT,
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
    server = h.Server(f"{name}-{kind}", cmd, port, env=env)
    server.wait_ready("/login")
    return server


SECRET = secrets.token_hex(32)  # one key for every server of the run: a cookie stays valid across restarts


def worker_pid(server: h.Server) -> int:
    kids = h._children(server.proc.pid)
    if len(kids) != 1:
        raise RuntimeError(f"expected one gunicorn worker, found {kids}")
    return kids[0]


def check(port: int, path: str, cookie: str, marker: str) -> str:
    status, _, page = h.request(port, "GET", path, cookie=cookie)
    if status != 200 or marker not in page:
        raise RuntimeError(
            f"GET {path}: HTTP {status}, marker {marker!r} "
            f"{'found' if marker in page else 'missing'}: not the real page"
        )
    return page


# --- one database ---------------------------------------------------------------------------------------


def fresh_database(kind: str) -> str:
    if kind == "sqlite":
        path = os.path.join(OUT, "ae.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        return "sqlite:///" + path
    return h.fresh_database("postgresql")  # drops and creates PG_DB


def drop_database(kind: str, url: str) -> None:
    if kind == "sqlite":
        path = url.split("sqlite:///", 1)[1]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        return
    import psycopg

    with psycopg.connect(h.PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def listing_combos(today: str, dose_level: str) -> dict[str, str]:
    d = dt.date.fromisoformat(today)
    frm, to = (d - dt.timedelta(days=60)).isoformat(), (d - dt.timedelta(days=30)).isoformat()
    return {
        "HZ, grade ≥ 3, serious only": "/safety/ae?site=HZ&grade_min=3&serious_only=1",
        "HZ, related, treatment-emergent, by grade": "/safety/ae?site=HZ&related_only=1&te_only=1&sort=grade&dir=desc",
        f"dose level {dose_level}, onset {frm} to {to}": f"/safety/ae?dose_level={dose_level}&date_from={frm}&date_to={to}",
        "no filter (every AE), default order": "/safety/ae",
        "HZ, grade ≥ 2, sorted by subject": "/safety/ae?site=HZ&grade_min=2&sort=subject",
    }


def _cache_path(kind: str) -> str:
    return os.path.join(OUT, f"dataset-{kind}.json")


def _database_url(kind: str) -> str:
    if kind == "sqlite":
        return "sqlite:///" + os.path.join(OUT, "ae.db")
    admin = urllib.parse.urlsplit(h.PG_ADMIN_URL)
    return urllib.parse.urlunsplit(("postgresql+psycopg", admin.netloc, "/" + PG_DB, "", ""))


def _database_exists(kind: str) -> bool:
    if kind == "sqlite":
        return os.path.exists(os.path.join(OUT, "ae.db"))
    import psycopg

    with psycopg.connect(h.PG_ADMIN_URL, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone() is not None


REAPPLY_INDEXES = r"""
import importlib.util, os, sys
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, text
spec = importlib.util.spec_from_file_location("m0006", os.path.join(os.environ["BENCH_APP_ROOT"], "migrations",
                                              "versions", "0006_listing_indexes.py"))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)


class Recreate(Operations):
    # every index the migration creates is dropped first if it is there: the index as the
    # working tree defines it now, whatever an earlier run left
    def create_index(self, name, table, *args, **kw):
        self.execute(text(f"DROP INDEX IF EXISTS {name}"))
        return super().create_index(name, table, *args, **kw)


engine = create_engine(sys.argv[1])
with engine.begin() as conn:
    m.op = Recreate(MigrationContext.configure(conn))
    m.upgrade()
    if engine.dialect.name == "postgresql":  # as the loader's VACUUM (ANALYZE) left it
        conn.execute(text("ANALYZE adverse_event; ANALYZE subject"))
print("ok")
"""


def reapply_listing_indexes(url: str) -> None:
    """A reused dataset gets migration 0006's indexes as the working tree has them now
    (each dropped if there, then created), so a changed index is measured without a reload."""
    proc = subprocess.run(
        [PY, "-c", REAPPLY_INDEXES, url], capture_output=True, text=True, timeout=900, env=h.app_env()
    )
    if proc.returncode != 0:
        raise RuntimeError("re-applying migration 0006 failed: " + proc.stderr[-2000:])


def run_database(kind: str, args) -> dict:
    res: dict = {"db": kind}
    cache = _cache_path(kind)
    if args.reuse and os.path.exists(cache) and _database_exists(kind):
        url = _database_url(kind)
        with open(cache) as f:
            res.update(json.load(f))
        res["reused"] = True
        log(f"== {kind}: reusing the dataset loaded {res.get('loaded_at', '?')} ({cache}); migration 0006 re-applied")
        t = time.perf_counter()
        reapply_listing_indexes(url)
        log(f"   indexes re-applied in {time.perf_counter() - t:.0f} s")
        if args.load_only:
            return res
        res.update(measure(kind, url, args, res["aes"]))
        res["verify_after"] = h.audit_verify(url)
        log(f"   after the exports: {res['verify_after']['output']}")
        if args.profile:
            res["profile"] = profile(kind, url, res["aes"]["today"])
        return res
    log(f"== {kind}: fresh database, scale dataset ({args.subjects} subjects) + {args.aes:,} AEs")
    url = fresh_database(kind)
    keep = args.keep or args.reuse or args.load_only
    try:
        t = time.perf_counter()
        load = h.dataset("load", url, "--subjects", str(args.subjects), "--real", str(args.real))
        res["load_s"] = time.perf_counter() - t
        for key in ("targets", "schedule_targets"):
            load.pop(key, None)
        res["load"] = load
        log(f"   subjects loaded in {res['load_s']:.0f} s ({load['audit_records']:,} audit records)")
        t = time.perf_counter()
        aes = h.dataset("aes", url, "--count", str(args.aes), "--real-aes", str(args.real_aes), "--no-verify")
        res["aes_s"] = time.perf_counter() - t
        res["aes"] = aes
        log(
            f"   {aes['aes_total']:,} AEs in {res['aes_s']:.0f} s ({aes['real_aes']} through the service at "
            f"{aes['real_ms_per_ae']:.0f} ms each, {aes['bulk_aes']:,} in bulk in {aes['bulk_s']:.0f} s); "
            f"{aes['audit_records']:,} audit records; fidelity mismatches: {len(aes['fidelity']['mismatches'])}"
        )
        res["verify"] = h.audit_verify(url)  # the chain the loader re-chained, walked by the CLI
        log(f"   flask audit verify: {res['verify']['seconds']:.1f} s: {res['verify']['output']}")
        if not res["verify"]["ok"]:
            raise RuntimeError(f"flask audit verify failed after loading: {res['verify']['output']}")
        if keep:
            with open(cache, "w") as f:
                json.dump(
                    {
                        **{k: res[k] for k in ("load_s", "load", "aes_s", "aes", "verify")},
                        "loaded_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    },
                    f,
                    indent=1,
                    default=str,
                )
        if args.load_only:
            return res
        res.update(measure(kind, url, args, aes))
        res["verify_after"] = h.audit_verify(url)
        log(f"   after the exports: {res['verify_after']['output']}")
        if args.profile:
            res["profile"] = profile(kind, url, res["aes"]["today"])
    finally:
        if not keep:
            drop_database(kind, url)
            if os.path.exists(cache):
                os.remove(cache)
    return res


def measure(kind: str, url: str, args, aes: dict) -> dict:
    out: dict = {}
    today = aes["today"]
    app = app_server(kind, url, 2, "gunicorn-ae")
    try:
        cookie = h.login(app.port)
        page = check(app.port, "/safety/ae", cookie, 'id="listing"')
        m = re.search(r"([\d,]+)\s+(?:adverse events|AEs|rows)", page)
        out["listing_total_shown"] = m.group(1) if m else None
        combos = listing_combos(today, "DL2")
        for path in combos.values():
            check(app.port, path, cookie, 'id="listing"')
        check(app.port, "/safety/summary", cookie, 'id="summary"')
        headers = [f"Cookie: {cookie}", f"User-Agent: {h.USER_AGENT}"]
        get_lua = os.path.join(BENCH, "get.lua")
        base = f"http://127.0.0.1:{app.port}"
        # (a) the listing
        listing: dict = {}
        log("   (a) AE listing, first page")
        for label, path in combos.items():
            listing[label] = {"path": path}
            for name, threads, conns in CONCURRENCY:
                h.wrk(
                    base + path,
                    duration=1,
                    threads=threads,
                    conns=conns,
                    script=get_lua,
                    script_args=["200", 'id="listing"'],
                    headers=headers,
                )  # warm-up
                h.wait_quiet(args.wait_quiet)
                r = h.wrk(
                    base + path,
                    duration=args.duration,
                    threads=threads,
                    conns=conns,
                    script=get_lua,
                    script_args=["200", 'id="listing"'],
                    headers=headers,
                    account=Account([app], postgres=kind == "postgresql"),
                )
                listing[label][name] = {
                    k: r.get(k)
                    for k in ("rps", "p50_ms", "p99_ms", "requests", "bad", "cpu_others_pct", "server_cpu_ms_per_req")
                }
                listing[label][name]["max_ms"] = r.get("max_us", 0) / 1000
                log(
                    f"      {label:<48} {name}: {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.1f} ms  "
                    f"p99 {r['p99_ms']:6.1f} ms  unexpected {r.get('bad', 0)}  (CPU others "
                    f"{r['cpu_others_pct']:.0f}%)"
                )
        out["listing"] = listing
        # (d) the summary
        log("   (d) summary table")
        times = []
        account = Others([app], kind)
        for i in range(args.summary_requests + 2):
            if i == 2:
                account.start()
            t = time.perf_counter()
            status, _, body = h.request(app.port, "GET", "/safety/summary", cookie=cookie)
            elapsed = time.perf_counter() - t
            if status != 200 or 'id="summary"' not in body:
                raise RuntimeError(f"/safety/summary answered {status}")
            if i >= 2:  # the first two warm the worker(s)
                times.append(elapsed * 1000)
        out["summary"] = {
            "n": len(times),
            "p50_ms": percentile(times, 50),
            "p99_ms": percentile(times, 99),
            "max_ms": max(times),
            "bytes": len(body.encode()),
            "rows": body.count("<tr"),
            "cpu_others_pct": account.stop(),
        }
        log(
            f"      p50 {out['summary']['p50_ms']:.0f} ms, p99 {out['summary']['p99_ms']:.0f} ms "
            f"({out['summary']['rows']} table rows)"
        )
    finally:
        app.stop()

    # (b) CSV and (c) XLSX: each app export on a fresh single-worker server (clean VmHWM)
    out["csv"] = csv_bench(kind, url, args, today)
    out["xlsx"] = xlsx_bench(kind, url, args)
    return out


def export_once(kind: str, url: str, path: str, name: str, sink_path: str | None = None) -> dict:
    """One export on a freshly started single-worker gunicorn: log in, warm the worker with
    the listing page, read VmHWM, export (RSS sampled), read VmHWM again."""
    server = app_server(kind, url, 1, name)
    try:
        pid = worker_pid(server)
        cookie = h.login(server.port)
        check(server.port, "/safety/ae?site=HZ&grade_min=3", cookie, 'id="listing"')
        before = _vm(pid)
        sampler = RssSampler(pid)
        sampler.start()
        sink = open(sink_path, "wb") if sink_path else None
        account = Others([server], kind)
        account.start()
        try:
            r = fetch(server.port, path, cookie, sink=sink)
        finally:
            if sink:
                sink.close()
            samples = sampler.stop()
        r["cpu_others_pct"] = account.stop()
        after = _vm(pid)
        if r["status"] != 200:
            raise RuntimeError(f"GET {path}: HTTP {r['status']}")
        r.update(
            hwm_before_mb=before.get("VmHWM"),
            hwm_after_mb=after.get("VmHWM"),
            rss_after_mb=after.get("VmRSS"),
            rss_samples=samples[:: max(1, len(samples) // 60)],
        )
        return r
    finally:
        server.stop()


def _postmaster() -> int | None:
    """PostgreSQL's postmaster: the postgres process whose parent is not a postgres process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() not in ("postgres", "postmaster"):
                        continue
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{ppid}/comm") as f:
                    if f.read().strip() not in ("postgres", "postmaster"):
                        return int(entry)
            except (OSError, ValueError, IndexError):
                pass
    return None


def _reaped_jiffies(pid: int) -> int:
    """CPU of the children a process has waited for (cutime + cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[13]) + int(fields[14])
    except (OSError, IndexError, ValueError):
        return 0


class Account(h.CpuAccount):
    """The harness's CPU account, plus on PostgreSQL the CPU of the short-lived postgres
    processes that ran for us between two samples: the parallel workers of our queries and
    psql's backend. The postmaster reaps them, so their CPU is its children's time. (Another
    database's backend that ends during a run would be counted as ours too: these runs
    overestimate our share, never other people's.)"""

    def __init__(self, servers: list, postgres: bool):
        super().__init__(servers, postgres)
        self.postmaster = _postmaster() if postgres else None

    def _ours(self) -> dict:
        ours = super()._ours()
        if self.postmaster:
            ours["postmaster-reaped"] = _reaped_jiffies(self.postmaster)
        return ours


class Others:
    """Other people's share of the 2 CPUs while one measurement runs (the machine is shared):
    all busy time minus ours: the servers' processes, PostgreSQL's processes working for the
    bench database (Account), this process and the children it waited for (the sqlite3 CLI,
    psql, the raw XlsxWriter)."""

    def __init__(self, servers: list, kind: str):
        self.account = Account(servers, postgres=kind == "postgresql")

    def start(self) -> None:
        import resource

        self.self0 = time.process_time()
        self.child0 = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
        self.account.start()

    def stop(self) -> float:
        import resource

        mine = (time.process_time() - self.self0) + (
            sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]) - self.child0
        )
        return self.account.stop(mine, 1)["cpu_others_pct"]


def cli_csv(kind: str, url: str, sql: str, out_path: str = os.devnull) -> float:
    if kind == "sqlite":
        db = url.split("sqlite:///", 1)[1]
        cmd = ["sqlite3", "-csv", "-header", db, sql]
    else:
        admin = urllib.parse.urlsplit(h.PG_ADMIN_URL)
        conninfo = f"postgresql://{admin.netloc}/{PG_DB}"
        cmd = ["psql", conninfo, "-X", "-q", "-c", f"\\copy ({' '.join(sql.split())}) to stdout with csv header"]
    with open(out_path, "wb") as f:
        t = time.perf_counter()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, timeout=600)
        elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.decode()[-1000:]}")
    return elapsed


def _compare_files(a: str, b: str) -> dict:
    """The two CSV files parsed (the csv module): the same rows with the same values, in the
    same order? (The sqlite3 CLI quotes every field holding a space, the app only those that
    need it (RFC 4180 minimal quoting): the bytes differ, the values must not.)"""
    import csv

    with (
        open(a, newline="", encoding="utf-8-sig") as fa,
        open(b, newline="", encoding="utf-8-sig") as fb,
    ):  # the app writes a BOM (issue 13)
        ra, rb = list(csv.reader(fa)), list(csv.reader(fb))
    out = {
        "rows_app": len(ra) - 1,
        "rows_cli": len(rb) - 1,
        "identical": ra == rb,
        "bytes_app": os.path.getsize(a),
        "bytes_cli": os.path.getsize(b),
    }
    if ra != rb:
        for i, (x, y) in enumerate(zip(ra, rb, strict=False)):
            if x != y:
                out["first_difference"] = {"row": i, "app": x, "cli": y}
                break
    return out


def csv_bench(kind: str, url: str, args, today: str) -> dict:
    log("   (b) CSV export")
    res: dict = {"reference": "sqlite3 CLI" if kind == "sqlite" else "psql \\copy"}
    sql = listing_sql(kind)
    # the same rows, once each to a file: compared byte for byte (untimed)
    app_file, cli_file = os.path.join(OUT, f"app-{kind}.csv"), os.path.join(OUT, f"cli-{kind}.csv")
    first = export_once(kind, url, "/safety/ae.csv", "csv", sink_path=app_file)
    cli_csv(kind, url, sql, cli_file)
    res["same_rows"] = _compare_files(app_file, cli_file)
    res["rows"] = res["same_rows"]["rows_app"]
    log(
        f"      app and {res['reference']} output: {res['same_rows']['rows_app']:,} and "
        f"{res['same_rows']['rows_cli']:,} rows, "
        f"{'the same values' if res['same_rows']['identical'] else 'DIFFERENT: ' + json.dumps(res['same_rows'].get('first_difference'))}"
    )
    for path in (app_file, cli_file):
        os.remove(path)
    # timed, alternating: CLI, app, CLI, app, ...
    cli_times, cli_others, app_runs = [], [], [first]
    for i in range(args.reps):
        h.wait_quiet(args.wait_quiet)
        account = Others([], kind)
        account.start()
        cli_times.append(cli_csv(kind, url, sql))
        cli_others.append(account.stop())
        h.wait_quiet(args.wait_quiet)
        app_runs.append(export_once(kind, url, "/safety/ae.csv", "csv"))
        log(
            f"      rep {i + 1}: {res['reference']} {cli_times[-1]:.2f} s, app {app_runs[-1]['seconds']:.2f} s "
            f"(peak RSS {app_runs[-1]['hwm_after_mb']:.0f} MB; CPU others {cli_others[-1]:.0f}% / "
            f"{app_runs[-1]['cpu_others_pct']:.0f}%)"
        )
    res["cli_others_pct"] = cli_others
    res["app_others_pct"] = [r["cpu_others_pct"] for r in app_runs[1:]]
    timed = app_runs[1:]
    res["cli_s"] = cli_times
    res["app_s"] = [r["seconds"] for r in timed]
    res["app_first_byte_s"] = [r["first_byte_s"] for r in timed]
    res["bytes"] = first["bytes"]
    res["cli_median_s"] = statistics.median(cli_times)
    res["app_median_s"] = statistics.median(res["app_s"])
    res["speed_ratio"] = res["cli_median_s"] / res["app_median_s"]
    res["hwm_100k_mb"] = max(r["hwm_after_mb"] for r in app_runs)
    res["hwm_before_mb"] = statistics.median(r["hwm_before_mb"] for r in app_runs)
    res["rss_curve_100k"] = first["rss_samples"]
    # ~10,000 rows: the latest onsets (a date filter), for the memory comparison
    since = tenk_date(kind, url, args.small_rows)
    small_path = f"/safety/ae.csv?date_from={since}"
    small = [export_once(kind, url, small_path, "csv") for _ in range(2)]
    res["small"] = {
        "path": small_path,
        "rows": small[0]["lines"] - 1,
        "seconds": [r["seconds"] for r in small],
        "hwm_mb": max(r["hwm_after_mb"] for r in small),
        "hwm_before_mb": statistics.median(r["hwm_before_mb"] for r in small),
    }
    log(
        f"      ~10k rows ({res['small']['rows']:,}): peak RSS {res['small']['hwm_mb']:.0f} MB; 100k rows: "
        f"{res['hwm_100k_mb']:.0f} MB (worker after warm-up: {res['hwm_before_mb']:.0f} MB); speed "
        f"{res['speed_ratio']:.2f} x the {res['reference']}"
    )
    return res


def tenk_date(kind: str, url: str, rows: int) -> str:
    """The onset date from which about `rows` AEs remain (the latest ones)."""
    code = (
        "import json,sys\nfrom sqlalchemy import create_engine, text\n"
        f"e = create_engine({url!r})\n"
        "with e.connect() as c:\n"
        f"    d = c.execute(text('SELECT onset_date FROM adverse_event ORDER BY onset_date DESC, id DESC "
        f"LIMIT 1 OFFSET {rows - 1}')).scalar()\n"
        "print(str(d)[:10])\n"
    )
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1000:])
    return proc.stdout.strip()


RAW_XLSX = r"""
import json, os, sys, tempfile, time
from datetime import date
sys.path.insert(0, os.environ["BENCH_APP_ROOT"])
from cellstudy import create_app
from cellstudy.extensions import db
from cellstudy.safety import listings
from cellstudy.safety.filters import Filters
try:
    from cellstudy.auth.policy import ALL_SITES
except ImportError:  # a revision before issue 12 (a paired run): None meant every site
    ALL_SITES = None
app = create_app("production", overrides={"SQLALCHEMY_DATABASE_URI": sys.argv[1]})
out_path, reps = sys.argv[2], int(sys.argv[3])
with app.app_context():
    columns = listings.ae_columns()
    keys = [c.key for c in columns]
    kinds = [c.kind for c in columns]
    t = time.perf_counter()
    # the rows the app exports (its own listing query, every site), as the cell values it writes
    rows = []
    for r in listings.iter_listing("ae", Filters(), ALL_SITES):
        values = []
        for k, kind in zip(keys, kinds):
            v = r[k]
            if kind == "bool":
                v = {True: "Y", False: "N"}.get(v, v)
            elif kind == "text" and v is not None and not isinstance(v, str):
                v = str(v)
            values.append(v)
        rows.append(values)
    fetch_s = time.perf_counter() - t
import xlsxwriter
times = []
for _ in range(reps):
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        wb = xlsxwriter.Workbook(out_path, {"constant_memory": True, "in_memory": False, "tmpdir": tmp,
                                            "default_date_format": "yyyy-mm-dd", "strings_to_formulas": False,
                                            "strings_to_urls": False, "strings_to_numbers": False})
        bold = wb.add_format({"bold": True})
        ws = wb.add_worksheet("AE listing")
        for i, c in enumerate(columns):
            ws.set_column(i, i, c.width)
        ws.write_row(0, 0, [c.label for c in columns], bold)
        ws.freeze_panes(1, 0)
        for n, values in enumerate(rows, 1):
            ws.write_row(n, 0, values)
        ws.autofilter(0, 0, len(rows), len(columns) - 1)
        wb.close()
        times.append(time.perf_counter() - t)
    size = os.path.getsize(out_path)
    os.remove(out_path)
print(json.dumps({"rows": len(rows), "fetch_s": fetch_s, "write_s": times, "bytes": size}))
"""


def raw_xlsx(url: str, reps: int = 1) -> dict:
    path = os.path.join(OUT, "raw.xlsx")
    proc = subprocess.run(
        [PY, "-c", RAW_XLSX, url, path, str(reps)],
        capture_output=True,
        text=True,
        timeout=900,
        env=h.app_env(SECRET_KEY=SECRET, CELLSTUDY_CONFIG="production", DATABASE_URL=url, SESSION_COOKIE_SECURE="0"),
    )
    if proc.returncode != 0:
        raise RuntimeError("raw xlsxwriter failed: " + proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def xlsx_rows(path: str) -> int:
    """Data rows of the first sheet (its <row> elements minus the header)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        name = sorted(n for n in z.namelist() if n.startswith("xl/worksheets/sheet"))[0]
        count, tail = 0, b""
        with z.open(name) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                data = tail + chunk
                count += data.count(b"<row ")
                tail = data[-4:]  # a "<row " split across two chunks is counted once, with the next one
    return count - 1


def xlsx_bench(kind: str, url: str, args) -> dict:
    log("   (c) XLSX export")
    res: dict = {}
    app_file = os.path.join(OUT, f"app-{kind}.xlsx")
    first = export_once(kind, url, "/safety/ae.xlsx", "xlsx", sink_path=app_file)
    res["rows_in_file"] = xlsx_rows(app_file)
    os.remove(app_file)
    raw_runs, app_runs = [], [first]
    for i in range(args.reps):
        h.wait_quiet(args.wait_quiet)
        account = Others([], kind)
        account.start()
        raw = raw_xlsx(url)
        raw["cpu_others_pct"] = account.stop()
        raw_runs.append(raw)
        h.wait_quiet(args.wait_quiet)
        app_runs.append(export_once(kind, url, "/safety/ae.xlsx", "xlsx"))
        log(
            f"      rep {i + 1}: raw XlsxWriter {raw['write_s'][0]:.2f} s ({raw['rows']:,} rows; read beforehand in "
            f"{raw['fetch_s']:.1f} s), app {app_runs[-1]['seconds']:.2f} s (peak RSS "
            f"{app_runs[-1]['hwm_after_mb']:.0f} MB)"
        )
    res["raw_others_pct"] = [r["cpu_others_pct"] for r in raw_runs]
    res["app_others_pct"] = [r["cpu_others_pct"] for r in app_runs[1:]]
    res["raw_s"] = [r["write_s"][0] for r in raw_runs]
    res["raw_rows"] = raw_runs[0]["rows"]
    res["raw_fetch_s"] = raw_runs[0]["fetch_s"]
    res["raw_bytes"] = raw_runs[0]["bytes"]
    res["app_s"] = [r["seconds"] for r in app_runs[1:]]
    res["app_bytes"] = first["bytes"]
    res["raw_median_s"] = statistics.median(res["raw_s"])
    res["app_median_s"] = statistics.median(res["app_s"])
    res["ratio"] = res["app_median_s"] / res["raw_median_s"]
    res["hwm_mb"] = max(r["hwm_after_mb"] for r in app_runs)
    log(
        f"      app {res['app_median_s']:.2f} s vs raw {res['raw_median_s']:.2f} s: {res['ratio']:.2f} x; "
        f"{res['rows_in_file']:,} rows in the file; peak RSS {res['hwm_mb']:.0f} MB"
    )
    return res


# --- where the time goes (in-process, one request at a time) --------------------------------------------------

PROFILE = r"""
import cProfile, io, json, os, pstats, sys, time
sys.path.insert(0, os.environ["BENCH_APP_ROOT"])
from sqlalchemy import event
from cellstudy import create_app
from cellstudy.extensions import db
app = create_app("production", overrides={"SQLALCHEMY_DATABASE_URI": sys.argv[1], "WTF_CSRF_ENABLED": False})
paths = json.loads(sys.argv[2])
report_path = sys.argv[3]
stats = {"sql": []}
def before(conn, cursor, statement, parameters, context, executemany):
    context._bench_t = time.perf_counter()
def after(conn, cursor, statement, parameters, context, executemany):
    stats["sql"].append((time.perf_counter() - context._bench_t, " ".join(statement.split())[:400]))
with app.app_context():
    event.listen(db.engine, "before_cursor_execute", before)
    event.listen(db.engine, "after_cursor_execute", after)
client = app.test_client()
client.environ_base["HTTP_USER_AGENT"] = "cellstudy-bench/1"
r = client.post("/login", data={"username": "dm", "password": "cellstudy-demo"})
assert r.status_code == 302, r.status_code
out = {}
with open(report_path, "w") as rep:
    for label, path in paths.items():
        client.get(path).close()  # warm
        stats["sql"] = []
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        resp = client.get(path)
        size = len(resp.get_data())
        prof.disable()
        ms = (time.perf_counter() - t) * 1000
        sql = sorted(stats["sql"], reverse=True)
        out[label] = {"ms": ms, "bytes": size, "queries": len(sql), "sql_ms": 1000 * sum(s for s, _ in sql),
                      "slowest_sql": [[round(1000 * s, 1), q[:240]] for s, q in sql[:3]]}
        rep.write(f"==== {label}: {path}: {ms:.0f} ms, {len(sql)} queries, {out[label]['sql_ms']:.0f} ms in SQL\n")
        for s, q in sql[:5]:
            rep.write(f"  {1000 * s:8.1f} ms  {q}\n")
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        rep.write(buf.getvalue())
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        rep.write(buf.getvalue() + "\n")
print(json.dumps(out))
"""


def profile(kind: str, url: str, today: str) -> dict:
    log("   in-process profile (Flask test client, cProfile, SQL timings)")
    paths = {
        **{f"listing: {k}": v for k, v in listing_combos(today, "DL2").items()},
        "summary": "/safety/summary",
        "csv": "/safety/ae.csv",
        "xlsx": "/safety/ae.xlsx",
    }
    report = os.path.join(OUT, f"profile-{kind}.txt")
    proc = subprocess.run(
        [PY, "-c", PROFILE, url, json.dumps(paths), report],
        capture_output=True,
        text=True,
        timeout=900,
        env=h.app_env(SECRET_KEY=SECRET, CELLSTUDY_CONFIG="production", DATABASE_URL=url, SESSION_COOKIE_SECURE="0"),
    )
    if proc.returncode != 0:
        log("      profile failed: " + proc.stderr[-800:])
        return {"error": proc.stderr[-2000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for label, p in out.items():
        log(f"      {label:<58} {p['ms']:8.0f} ms, {p['queries']} queries, {p['sql_ms']:.0f} ms SQL")
    return out


# --- report ----------------------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def report(results: dict) -> str:
    m = results["machine"]
    dbs = results["databases"]
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    a = results["args"]
    lines = [
        BEGIN,
        "",
        f"Run: {m['date']} · commit {m['commit']} + working tree, snapshot {m.get('snapshot', '?')} · "
        f"`{' '.join(results['argv'])}` · {m['cpu']} (`nproc` = {m['nproc']}), Python {m['python']}, "
        f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}, {m['wrk']}, {m['gunicorn']} · load average at "
        f"start {' '.join(m['loadavg_start'])} · took {results.get('elapsed_s', 0) / 60:.0f} min.",
        "",
        "### Targets",
        "",
        "| target | " + " | ".join(names[d["db"]] for d in dbs) + " |",
        "|---|" + "---|" * len(dbs),
    ]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(d) for d in dbs) + " |")

    def worst_p99(d, conc):
        return max(v[conc]["p99_ms"] for v in d["listing"].values())

    row(
        "(a) AE listing, first page, filtered: p99 < 100 ms, one request at a time (wrk -c1; worst of "
        f"{len(dbs[0]['listing'])} filter sets)",
        lambda d: f"{worst_p99(d, 'c1'):.0f} ms: {mark(worst_p99(d, 'c1') < LISTING_P99_MS)}",
    )
    row(
        "(a) same, 2 at a time (wrk -t2 -c2: one request per worker, 2 sync workers)",
        lambda d: f"{worst_p99(d, 'c2'):.0f} ms: {mark(worst_p99(d, 'c2') < LISTING_P99_MS)}",
    )
    row(
        "(a) same, under the load of issues 2-3's benchmark (wrk -t2 -c8, 2 workers: 4 requests queue per worker)",
        lambda d: f"{worst_p99(d, 'c8'):.0f} ms: {mark(worst_p99(d, 'c8') < LISTING_P99_MS)}",
    )
    row(
        "(b) CSV export streams: peak RSS < 200 MB at ~10k and at 100k rows",
        lambda d: (
            f"{d['csv']['small']['hwm_mb']:.0f} MB / {d['csv']['hwm_100k_mb']:.0f} MB: "
            f"{mark(max(d['csv']['small']['hwm_mb'], d['csv']['hwm_100k_mb']) < CSV_RSS_MB)}"
        ),
    )
    row(
        "(b) CSV of 100,000 rows ≥ ⅓ of the sqlite3 CLI's speed (app time ≤ 3 × CLI time, same run)",
        lambda d: (
            (
                f"{d['csv']['app_median_s']:.2f} s vs {d['csv']['cli_median_s']:.2f} s = "
                f"{d['csv']['speed_ratio']:.2f} × the CLI's speed: {mark(d['csv']['speed_ratio'] >= CSV_SHARE)}"
            )
            if d["db"] == "sqlite"
            else (
                f"({d['csv']['app_median_s']:.2f} s vs psql \\copy {d['csv']['cli_median_s']:.2f} s = "
                f"{d['csv']['speed_ratio']:.2f} ×; the target names the sqlite3 CLI)"
            )
        ),
    )
    row(
        "(c) XLSX of 100,000 rows < 15 s",
        lambda d: f"{d['xlsx']['app_median_s']:.1f} s: {mark(d['xlsx']['app_median_s'] < XLSX_S)}",
    )
    row(
        "(c) XLSX ≤ 2 × raw XlsxWriter (constant_memory) writing the same rows, same run",
        lambda d: (
            f"{d['xlsx']['app_median_s']:.1f} s vs {d['xlsx']['raw_median_s']:.1f} s = "
            f"{d['xlsx']['ratio']:.2f} ×: {mark(d['xlsx']['ratio'] <= XLSX_RATIO)}"
        ),
    )
    row(
        f"(d) summary table < 1 s (p99 of {dbs[0]['summary']['n']} sequential requests)",
        lambda d: (
            f"p99 {d['summary']['p99_ms']:.0f} ms (p50 {d['summary']['p50_ms']:.0f}): "
            f"{mark(d['summary']['p99_ms'] < SUMMARY_S * 1000)}"
        ),
    )
    lines.append("")
    for d in dbs:
        title = names[d["db"]] + (" (file, WAL)" if d["db"] == "sqlite" else f" {m['postgresql']}")
        ae, ld = d["aes"], d["load"]
        lines += [
            f"### {title}",
            "",
            f"Dataset: {ld['subjects_total']:,} subjects, **{ae['aes_total']:,} AEs** "
            f"({ae['real_aes']} through `service.save_ae` / `save_assessment` at {ae['real_ms_per_ae']:.0f} ms "
            f"per AE, {ae['bulk_aes']:,} in bulk), {ae['episodes']:,} grade episodes, "
            f"{ae['crs_assessments']:,} CRS and {ae['icans_assessments']:,} ICANS assessments, "
            f"{ae['audit_records']:,} audit records. Grades {_counts(ae['grades'])}; {ae['serious_pct']} % "
            f"serious, {ae['ongoing_pct']} % ongoing, {ae['related_pct']} % related, {ae['te_pct']} % "
            f"treatment-emergent, {ae['dlt']:,} DLTs, {ae['susar']:,} SUSARs, {ae['fatal']} fatal. "
            f"Loaded in **{(d['load_s'] + d['aes_s']) / 60:.1f} min**: {d['load_s']:.0f} s the subjects "
            f"(bench/dataset.py `load`) + {d['aes_s']:.0f} s the AEs (`aes`: {ae['generate_s']:.0f} s "
            f"drawing and validating the values, {ae['real_s']:.0f} s through the service, "
            f"{ae['bulk_s']:.0f} s bulk of which {ae['bulk_insert_s']:.0f} s inserting, "
            f"{ae.get('fk_check_s', 0):.1f} s checking every foreign key of the bulk rows"
            + (f"; PostgreSQL foreign keys: {ae['pg_fk_checks']}" if ae.get("pg_fk_checks") else "")
            + "). "
            f"Bulk rows against the service's (same values): {ae['fidelity']['aes_compared']} AEs and "
            f"{ae['fidelity']['assessments_compared']} assessments compared, "
            f"{len(ae['fidelity']['mismatches'])} mismatches. "
            f"`flask audit verify`: {d['verify']['seconds']:.1f} s, {d['verify']['output']}; after the "
            f"exports: {d['verify_after']['output']}.",
            "",
            "| (a) AE listing, first page (50 rows) | "
            + " | ".join(f"{c} req/s | {c} p50 ms | {c} p99 ms" for c, _, _ in CONCURRENCY)
            + " | server CPU ms / req (c1) | CPU others % |",
            "|---|" + "---:|---:|---:|" * len(CONCURRENCY) + "---:|---:|",
        ]
        for label, v in d["listing"].items():
            bad = sum(v[c].get("bad", 0) for c, _, _ in CONCURRENCY)
            lines.append(
                f"| {label} (`{v['path']}`){' · ' + str(bad) + ' unexpected' if bad else ''} | "
                + " | ".join(
                    f"{v[c]['rps']:.0f} | {v[c]['p50_ms']:.1f} | {v[c]['p99_ms']:.1f}" for c, _, _ in CONCURRENCY
                )
                + f" | {v['c1'].get('server_cpu_ms_per_req') or 0:.0f} | "
                + _range([v[c].get("cpu_others_pct") for c, _, _ in CONCURRENCY])
                + " |"
            )
        c, x, s = d["csv"], d["xlsx"], d["summary"]
        same = c["same_rows"]
        lines += [
            "",
            f"- (b) CSV, all {c['rows']:,} rows ({c['bytes'] / 1e6:.1f} MB): app (HTTP, end to end) "
            f"{', '.join(f'{t:.2f}' for t in c['app_s'])} s (first byte after "
            f"{statistics.median(c['app_first_byte_s']):.2f} s); {c['reference']} "
            f"{', '.join(f'{t:.2f}' for t in c['cli_s'])} s, alternating. Medians {c['app_median_s']:.2f} s vs "
            f"{c['cli_median_s']:.2f} s (other people's CPU use during the runs: app "
            f"{_range(c.get('app_others_pct'))} %, CLI {_range(c.get('cli_others_pct'))} %): the app runs at "
            f"**{c['speed_ratio']:.2f} ×** the "
            f"{c['reference']}'s speed. The two outputs, parsed, hold "
            + (
                "**the same rows with the same values in the same order**"
                if same["identical"]
                else f"**different values** (first difference: {same.get('first_difference')})"
            )
            + f" ({same['bytes_app'] / 1e6:.1f} MB from the app, {same['bytes_cli'] / 1e6:.1f} MB from the "
            f"{c['reference']}, which quotes more fields). "
            f"Peak RSS of the serving worker (VmHWM; {c['hwm_before_mb']:.0f} MB after log-in and one "
            f"listing page): **{c['small']['hwm_mb']:.0f} MB** for {c['small']['rows']:,} rows, "
            f"**{c['hwm_100k_mb']:.0f} MB** for {c['rows']:,} rows.",
            f"- (c) XLSX, all rows ({x['rows_in_file']:,} in the file, {x['app_bytes'] / 1e6:.1f} MB): app "
            f"(HTTP, end to end) {', '.join(f'{t:.1f}' for t in x['app_s'])} s; raw XlsxWriter "
            f"{', '.join(f'{t:.1f}' for t in x['raw_s'])} s ({x['raw_rows']:,} rows, read beforehand in "
            f"{x['raw_fetch_s']:.1f} s, not timed). **{x['ratio']:.2f} ×** (other people's CPU use: app "
            f"{_range(x.get('app_others_pct'))} %, raw {_range(x.get('raw_others_pct'))} %). Peak RSS of the worker "
            f"{x['hwm_mb']:.0f} MB.",
            f"- (d) Summary: {s['n']} sequential requests, p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, "
            f"max {s['max_ms']:.0f} ms ({s['rows']} table rows, {s['bytes'] / 1024:.0f} KiB; other people's "
            f"CPU use {_range([s.get('cpu_others_pct')])} %).",
        ]
        prof = d.get("profile") or {}
        if prof and "error" not in prof:
            lines.append(
                "- In-process (Flask test client, one request, no HTTP): "
                + "; ".join(
                    f"{k} {p['ms']:.0f} ms ({p['queries']} queries, {p['sql_ms']:.0f} ms SQL)" for k, p in prof.items()
                )
                + f". Profiles: bench/out/ae/profile-{d['db']}.txt."
            )
        lines.append("")
    lines += [
        "What each side includes:",
        "- App CSV / XLSX: the whole request through HTTP on 127.0.0.1 (gunicorn sync worker, production "
        "config): session and permission checks, the count query and the export's audit record, the "
        "listing query, turning each row into the export's values (`listings.iter_listing_values`: "
        "labels, study day), writing the file (CSV: one generated line maker; XLSX: the app's own "
        "streaming writer, `tabular._XlsxWriter`, since issue 4's speed work), sending it; the client "
        "reads and discards the bytes. Each app export runs on a freshly started single-worker gunicorn "
        "(for a clean VmHWM), warmed by a log-in and one listing page.",
        '- sqlite3 CLI: `sqlite3 -csv -header <db> "<query>" > /dev/null` with one SQL statement giving the '
        "same columns, labels, values and order (bench/ae_bench.py `listing_sql`); the app's and the CLI's "
        "files are parsed and compared before timing.",
        "- Raw XlsxWriter: one workbook in constant_memory mode (same options as the app: default date "
        "format, no string conversion), column widths, bold header, frozen first row, autofilter, then "
        "`write_row` for each of the rows and `close()`. Not timed: reading the rows (the app's own listing "
        "query, fetched into a list of cell values first). The app additionally reads the rows from the "
        "database and writes its About sheet. (The app no longer writes its XLSX with XlsxWriter: "
        "XlsxWriter here is the reference the target names.)",
        f'- Listing: wrk with bench/get.lua (status 200 and `id="listing"` checked on every response), '
        f"{a['duration']:.0f} s per run after a 1 s warm-up, logged in as `dm` (data manager: all sites).",
        "- *CPU others %*: the share of the 2 CPUs that processes other than this benchmark's used during "
        "the measurement (the machine is shared with other people's test runs); each measurement waits up "
        f"to {a['wait_quiet']:.0f} s for the machine to be quiet first but is not repeated. Ours: the "
        "gunicorn processes, wrk, this script and the children it waited for (sqlite3, psql, the raw "
        "XlsxWriter), PostgreSQL's backends of the bench database with its writers, and the CPU of the "
        "short-lived postgres processes reaped meanwhile (our queries' parallel workers, psql's backend).",
        "",
        "How to reproduce: `make bench-ae` (= `.venv/bin/python bench/ae_bench.py`; options `--db "
        "sqlite|postgres|both`, `--aes N`, `--reps N`, `--duration S`, `--no-write`, `--no-profile`, "
        "`--keep`, `--reuse` (measure the datasets a `--keep`/`--load-only` run left, with migration 0006's "
        "indexes re-applied), `--load-only`, `--report-from JSON`). Raw figures: bench/out/ae/results-*.json.",
        "",
        END,
    ]
    return "\n".join(lines)


def _range(values) -> str:
    values = [v for v in (values or []) if v is not None]
    if not values:
        return "?"
    lo, hi = min(values), max(values)
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f}"


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in counts.items())


def write_results(block: str) -> None:
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        # a new "Issue 4" section right under the title, before the issues 2-3 text
        first, _, rest = text.partition("\n")
        section = (
            "\n\n## Issue 4: adverse events (safety listings and exports at 100,000 AEs)\n\n"
            'Targets (issue 4, "Scale and speed"): the AE listing page (first page, filtered) p99 under '
            "100 ms; the CSV export streams (peak RSS under 200 MB whatever the row count) at no less than a "
            "third of the speed of the sqlite3 CLI writing the same rows, side by side in one run; the XLSX "
            "export of 100,000 rows under 15 s and at most twice the time XlsxWriter (constant-memory mode) "
            "takes to write the same rows raw, in the same run; the summary table under 1 s. "
            "`make bench-ae` (bench/ae_bench.py) rewrites the block between its markers.\n\n" + block + "\n"
        )
        text = first + section + rest
    with open(RESULTS, "w") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--aes", type=int, default=100_000)
    parser.add_argument("--real-aes", type=int, default=300)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--real", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--reps", type=int, default=3, help="timed exports per side (default 3)")
    parser.add_argument("--small-rows", type=int, default=10_000)
    parser.add_argument("--summary-requests", type=int, default=30)
    parser.add_argument("--wait-quiet", type=float, default=10.0)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--no-snapshot", dest="snapshot", action="store_false")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the databases (default: dropped at the end)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the databases a run with --keep/--reuse/--load-only left (bench/out/ae/dataset-"
        "*.json), re-applying migration 0006's indexes; load (and keep) them when missing",
    )
    parser.add_argument("--load-only", action="store_true", help="load (and keep) the datasets, measure nothing")
    parser.add_argument("--report-from", metavar="JSON")
    args = parser.parse_args()
    if args.report_from:
        with open(args.report_from) as f:
            results = json.load(f)
        write_results(report(results))
        log("bench/RESULTS.md re-rendered from " + args.report_from)
        return
    if not shutil.which("wrk"):
        sys.exit("wrk not found: `make bench-ae` installs Debian's wrk")
    if not shutil.which("sqlite3"):
        sys.exit("the sqlite3 CLI is not installed: `make bench-ae` installs Debian's sqlite3")
    os.makedirs(OUT, exist_ok=True)
    results: dict = {
        "argv": ["bench/ae_bench.py", *sys.argv[1:]],
        "machine": h.machine(),
        "databases": [],
        "args": {k: v for k, v in vars(args).items() if k != "report_from"},
    }
    results["machine"]["sqlite3_cli"] = h.sh(["sqlite3", "--version"])
    if args.snapshot:
        h.APP_ROOT, results["machine"]["snapshot"] = h.take_snapshot()
        log(f"app snapshot {results['machine']['snapshot']} in {os.path.relpath(h.APP_ROOT, ROOT)}")
    started = time.time()
    for kind in (
        ["sqlite", "postgresql"] if args.db == "both" else ["postgresql" if args.db == "postgres" else "sqlite"]
    ):
        results["databases"].append(run_database(kind, args))
    if args.load_only:
        log(f"datasets loaded and kept in {(time.time() - started) / 60:.1f} min; measure with --reuse")
        return
    results["elapsed_s"] = time.time() - started
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw = os.path.join(OUT, f"results-{stamp}.json")
    with open(raw, "w") as f:
        json.dump(results, f, indent=1, default=str)
    block = report(results)
    print("\n" + block)
    if args.write:
        write_results(block)
        log(f"bench/RESULTS.md updated; raw figures in {os.path.relpath(raw, ROOT)}")


if __name__ == "__main__":
    main()
