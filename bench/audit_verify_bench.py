"""Issue 13: `flask audit verify` over a keyed chain of >= 1,000,000 records, both databases.

A synthetic trail, not issue 4's dataset (bench/dataset.py writes plain SHA-256 records and no
audit_head): a fresh database at the migrations' head, then N records chained and keyed with
HMAC-SHA256 by the app's own `audit.chain_hash` (an anchor first, as the app writes it),
inserted in bulk (SQLite executemany, PostgreSQL COPY), audit_head set to the end. The
records look like the app's: a time, a user, an action, a form, a field, old and new values,
sometimes a reason. Then, per database:

- `audit.verify()` in this process (the walk alone), and
- `flask audit verify` as a command (wall time, interpreter and app start-up included),
  each run --runs times; the figures are the median. Target: < 10 s per million records.

    .venv/bin/python bench/audit_verify_bench.py --records 1000000
    .venv/bin/python bench/audit_verify_bench.py --db sqlite --records 100000   # a smoke run
    .venv/bin/python bench/audit_verify_bench.py --dataset --runs 3   # issue 4's dataset

`--dataset` measures the same on issue 4's dataset instead of the synthetic trail:
`bench/dataset.py load --aes 100000` (2,000 subjects treated, 100,000 AEs, about 2.8 million
records written by the app's services and copied, keyed with the same benchmark key).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from cellstudy.records.audit import _HASHED  # noqa: E402  (the app tree first on the path)

OUT = os.path.join(ROOT, "bench", "out", "audit_verify")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_DB = os.environ.get("BENCH_AUDIT_VERIFY_PG_DB", "cs_helper_audit_bench")
KEY = "be7c" * 16  # a benchmark key, never a real one
FLASK = os.path.join(ROOT, ".venv", "bin", "flask")


def url_of(kind: str) -> str:
    if kind == "sqlite":
        return "sqlite:///" + os.path.join(OUT, "verify.db")
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + PG_DB


def fresh(kind: str) -> None:
    import sqlalchemy as sa

    if kind == "sqlite":
        os.makedirs(OUT, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(OUT, "verify.db") + suffix
            if os.path.exists(path):
                os.remove(path)
        return
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{PG_DB}"')
    admin.dispose()


def records(n: int, key: bytes, kid: str):
    """(row dicts) of a keyed chain of n records, the first the anchor."""
    from cellstudy.records import audit
    from cellstudy.timeutil import utcnow

    base = utcnow() - timedelta(days=30)
    prev = audit.GENESIS
    actions = ("update", "set", "status", "create", "export")
    for i in range(1, n + 1):
        if i == 1:
            values = audit._system_record(audit.ANCHOR, base, new=kid, reason="records from here on are keyed")
        else:
            action = actions[i % 5]
            values = {
                "at": base + timedelta(microseconds=i * 1000),
                "user_id": None,
                "username": f"coord-{i % 7}",
                "action": action,
                "site_id": None,
                "subject_id": None,
                "form": ("screening", "visit", "adverse_event", "infusion")[i % 4],
                "form_id": i // 40 + 1,
                "field": None if action in ("create", "export") else f"field_{i % 31}",
                "old_value": None if action == "set" else str(i % 997),
                "new_value": f"value {i % 1009}",
                "reason": "lab re-run" if i % 11 == 0 else None,
            }
        digest = audit.chain_hash(prev, values, key)
        yield {**values, "id": i, "prev_hash": prev, "hash": digest, "key_id": kid}
        prev = digest


COLUMNS = ("id", *_HASHED, "prev_hash", "hash", "key_id")  # the audit_record columns the bulk insert writes


def load(kind: str, n: int) -> dict:
    from flask_migrate import upgrade
    from sqlalchemy import insert, text

    from cellstudy import create_app
    from cellstudy.extensions import db
    from cellstudy.records import audit
    from cellstudy.records.models import AuditRecord

    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": url_of(kind), "AUDIT_KEY": KEY})
    with app.app_context():
        upgrade(directory=os.path.join(ROOT, "migrations"))
        keys = audit.hmac_keys()
        t = time.perf_counter()
        last = None
        batch = []
        if kind == "sqlite":
            for row in records(n, keys.current, keys.current_id):
                batch.append(row)
                if len(batch) == 50_000:
                    db.session.execute(insert(AuditRecord), batch)
                    last, batch = batch[-1], []
            if batch:
                db.session.execute(insert(AuditRecord), batch)
                last = batch[-1]
        else:
            raw = db.session.connection().connection.driver_connection
            with raw.cursor() as cur:
                with cur.copy(f"COPY audit_record ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row in records(n, keys.current, keys.current_id):
                        copy.write_row(tuple(row[c] for c in COLUMNS))
                        last = row
        db.session.execute(
            text("UPDATE audit_head SET record_count = :n, last_id = :id, last_hash = :h, key_id = :k WHERE id = 1"),
            {"n": n, "id": last["id"], "h": last["hash"], "k": keys.current_id},
        )
        db.session.commit()
        load_s = time.perf_counter() - t
        db.session.remove()
        db.engine.dispose()
    return {"load_s": load_s}


def load_dataset(kind: str, aes: int) -> dict:
    """Issue 4's dataset, loaded by bench/dataset.py in its own process with the benchmark key."""
    import json

    env = {**os.environ, "CELLSTUDY_AUDIT_KEY": KEY, "PYTHONPATH": ROOT}
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "dataset.py"), "load", "--url", url_of(kind), "--aes", str(aes)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/dataset.py load failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return {"load_s": time.perf_counter() - t, "dataset": json.loads(lines[-1]) if lines else {}}


def record_count(kind: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url_of(kind))
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM audit_record").scalar_one()
    engine.dispose()
    return int(n)


def verify_in_process(kind: str) -> tuple[float, object]:
    from cellstudy import create_app
    from cellstudy.extensions import db
    from cellstudy.records import audit

    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": url_of(kind), "AUDIT_KEY": KEY})
    with app.app_context():
        t = time.perf_counter()
        result = audit.verify()
        seconds = time.perf_counter() - t
        db.session.remove()
        db.engine.dispose()
    return seconds, result


def old_walk(kind: str) -> float:
    """The walk of the verify before issue 13 (git show 90cd09d:cellstudy/records/audit.py):
    the stored columns through the driver, `_encode` and SHA-256 in Python, on the same
    records (it does not stop at the first mismatch here: the keyed hashes never match a plain
    SHA-256, and the cost of the walk is what is compared)."""
    import hashlib

    from cellstudy import create_app
    from cellstudy.extensions import db
    from cellstudy.records import audit

    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": url_of(kind), "AUDIT_KEY": KEY})
    with app.app_context():
        stamp = (
            "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            if kind == "postgresql"
            else "replace(at, ' ', 'T')"
        )
        sql = (
            f"SELECT id, prev_hash, hash, {', '.join([stamp] + list(audit._HASHED[1:]))} FROM audit_record ORDER BY id"
        )
        connection = db.session.connection()
        if kind == "postgresql":
            connection = connection.execution_options(stream_results=True, max_row_buffer=20000)
        t = time.perf_counter()
        prev, same = audit.GENESIS, 0
        for row in connection.exec_driver_sql(sql):
            same += row[1] == prev
            same += hashlib.sha256(prev.encode() + audit._encode(row[3:])).hexdigest() == row[2]
            prev = row[2]
        seconds = time.perf_counter() - t
        db.session.remove()
        db.engine.dispose()
    return seconds


def verify_cli(kind: str) -> tuple[float, str, int]:
    env = {
        **os.environ,
        "FLASK_APP": "wsgi.py",
        "CELLSTUDY_CONFIG": "development",
        "DATABASE_URL": url_of(kind),
        "CELLSTUDY_AUDIT_KEY": KEY,
    }
    t = time.perf_counter()
    proc = subprocess.run([FLASK, "audit", "verify"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t, (proc.stdout + proc.stderr).strip(), proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dataset", action="store_true", help="issue 4's dataset instead of the synthetic trail")
    parser.add_argument("--aes", type=int, default=100_000, help="with --dataset: the AEs to load")
    parser.add_argument("--keep", action="store_true", help="keep the databases for --reuse")
    parser.add_argument("--reuse", action="store_true", help="measure the databases a --keep run left")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else ["postgresql" if args.db == "postgres" else "sqlite"]
    print(f"load average before: {os.getloadavg()}")
    for kind in kinds:
        if args.reuse:
            info = {"load_s": float("nan")}
        else:
            fresh(kind)
            info = load_dataset(kind, args.aes) if args.dataset else load(kind, args.records)
        records = record_count(kind)
        walk, cli, old, output = [], [], [], ""
        for _ in range(args.runs):
            old.append(old_walk(kind))
            seconds, result = verify_in_process(kind)
            assert result.ok and result.checked == records, result.problem
            walk.append(seconds)
            seconds, output, code = verify_cli(kind)
            assert code == 0, output
            cli.append(seconds)
        if not walk:
            print(f"{kind}: {records:,} records loaded in {info['load_s']:.0f} s (kept for --reuse)")
            continue
        per_m = 1_000_000 / records
        what = "issue 4 dataset" if args.dataset else "keyed synthetic"
        w, c, o = statistics.median(walk), statistics.median(cli), statistics.median(old)
        print(
            f"{kind}: {records:,} records ({what}) loaded in {info['load_s']:.0f} s; "
            f"verify() walk median {w:.2f} s ({w * per_m:.2f} s per million; runs {', '.join(f'{x:.2f}' for x in walk)}); "
            f"`flask audit verify` wall median {c:.2f} s ({c * per_m:.2f} s per million; "
            f"runs {', '.join(f'{x:.2f}' for x in cli)}); the walk before issue 13 on the same records, "
            f"interleaved: median {o:.2f} s ({o * per_m:.2f} s per million; runs {', '.join(f'{x:.2f}' for x in old)}); "
            f"new/old walk {w / o:.2f}; load average {os.getloadavg()[0]:.1f}; output: {output}"
        )
        if not args.keep:
            fresh(kind)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
