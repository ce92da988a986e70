"""The scale dataset of issue 2: a fresh database, migrated, the demo study, then 2,000
subjects at site HZ with complete screening forms and >= 100,000 audit records.

    .venv/bin/python bench/dataset.py load --url URL [--subjects 2000] [--real 100]
    .venv/bin/python bench/dataset.py saves --url URL --reason TEXT
    .venv/bin/python bench/dataset.py targets --url URL --min-id ID

`load` prints one JSON line (timings, counts, the save targets). The first `--real`
subjects go through the real services (cellstudy.demo.make_subject), which writes
their audit trail exactly as the web forms do (timed: that is the cost of a complete
screening form entered through the app). The rest are copies of the last real subject:
rows inserted directly, and its audit records re-written for the copy and re-chained
with cellstudy.records.audit.chain_hash, so `flask audit verify` walks one valid chain.
The loader then runs audit.verify() itself and refuses to report success otherwise.

Run by bench/run.py in a subprocess (one app and engine per database).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta

# The app: bench/run.py points BENCH_APP_ROOT at its snapshot of the working tree.
ROOT = os.environ.get("BENCH_APP_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _app(url: str):
    from cellstudy import create_app

    return create_app("development", overrides={"SQLALCHEMY_DATABASE_URI": url})


def load(url: str, subjects: int, real: int) -> dict:
    import flask_migrate
    from sqlalchemy import func, insert, select, text, update

    from cellstudy.auth.models import Site, User
    from cellstudy.demo import load_demo, make_subject
    from cellstudy.enrollment.models import Exposure, Screening, Subject
    from cellstudy.extensions import db
    from cellstudy.records import audit
    from cellstudy.records.models import AuditRecord
    from cellstudy.timeutil import utcnow

    out: dict = {"subjects": subjects, "real": real}
    app = _app(url)
    with app.app_context():
        pg = db.engine.dialect.name == "postgresql"
        t = time.perf_counter()
        flask_migrate.upgrade(directory=os.path.join(ROOT, "migrations"))
        out["migrate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        try:
            load_demo()
        except Exception as error:  # noqa: BLE001  (the app is edited concurrently: report, go on)
            # load_demo() commits step by step (sites and users first). What it committed
            # stays; the rest of the demo study is not needed here. Sites and users are.
            db.session.rollback()
            out["demo_error"] = f"{error.__class__.__name__}: {error}"
            _ensure_sites_and_users()
        out["demo_s"] = time.perf_counter() - t

        site = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        user = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        count = lambda: db.session.execute(select(func.count(AuditRecord.id))).scalar()  # noqa: E731

        # --- 1. through the real services ---------------------------------------------
        real = max(1, min(real, subjects))
        t = time.perf_counter()
        before_last = None
        template = None
        for i in range(real):
            if i == real - 1:
                before_last = count()
            template = make_subject(site, user, "complete")
        out["real_s"] = time.perf_counter() - t
        out["real_ms_per_subject"] = out["real_s"] / real * 1000
        per_subject = count() - before_last
        out["audit_per_subject"] = per_subject

        # --- 2. copies of the last real subject, inserted directly ------------------------
        t = time.perf_counter()
        tid = template.id
        db.session.expire_all()
        audit_t = AuditRecord.__table__
        sub_row = db.session.execute(select(Subject.__table__).where(Subject.id == tid)).mappings().one()
        scr_rows = db.session.execute(select(Screening.__table__).where(Screening.subject_id == tid)
                                      .order_by(Screening.id)).mappings().all()
        exp_rows = db.session.execute(select(Exposure.__table__).where(Exposure.subject_id == tid)
                                      .order_by(Exposure.id)).mappings().all()
        aud_rows = db.session.execute(select(audit_t).where(audit_t.c.subject_id == tid)
                                      .order_by(audit_t.c.id)).mappings().all()
        if len(aud_rows) != per_subject or len(scr_rows) != 1:
            raise SystemExit(f"template subject {tid}: {len(aud_rows)} scoped audit records of {per_subject} "
                             f"written, {len(scr_rows)} screenings; cannot copy it faithfully")
        forms = {r["form"] for r in aud_rows}
        if not forms <= {"subject", "screening", "exposure"}:
            raise SystemExit(f"template audit records name forms {forms}: the copier does not know them")

        n_copy = subjects - real
        max_id = lambda col: db.session.execute(select(func.max(col))).scalar() or 0  # noqa: E731
        next_subject, next_screening = max_id(Subject.id) + 1, max_id(Screening.id) + 1
        next_exposure, next_audit = max_id(Exposure.id) + 1, max_id(AuditRecord.id) + 1
        seq = db.session.execute(select(Site.next_screening_seq).where(Site.id == site.id)).scalar_one()

        if pg:
            db.session.execute(text("SELECT pg_advisory_xact_lock(7220117)"))
        prev = db.session.execute(select(AuditRecord.hash).order_by(AuditRecord.id.desc()).limit(1)).scalar()
        base_at = utcnow()
        tick = 0
        subjects_out, screenings_out, exposures_out, audits_out = [], [], [], []

        def flush_batch():
            for table, rows in ((Subject.__table__, subjects_out), (Screening.__table__, screenings_out),
                                (Exposure.__table__, exposures_out), (audit_t, audits_out)):
                if rows:
                    db.session.execute(insert(table), rows)
                    rows.clear()

        for k in range(n_copy):
            sid, number = next_subject + k, f"{site.code}-S{seq + k:03d}"
            subjects_out.append({**sub_row, "id": sid, "screening_number": number})
            ids = {"subject": sid}
            ids["screening"] = next_screening + k  # one screening per template (checked above)
            screenings_out.append({**scr_rows[0], "id": next_screening + k, "subject_id": sid})
            exp_map = {}
            for j, row in enumerate(exp_rows):
                new_id = next_exposure + k * len(exp_rows) + j
                exp_map[row["id"]] = new_id
                exposures_out.append({**row, "id": new_id, "subject_id": sid})
            for row in aud_rows:
                values = {key: row[key] for key in audit._HASHED}
                tick += 1
                values["at"] = base_at + timedelta(microseconds=tick)
                values["subject_id"] = sid
                if row["form"] == "exposure":
                    values["form_id"] = exp_map[row["form_id"]]
                else:
                    values["form_id"] = ids[row["form"]]
                if row["field"] == "screening_number":
                    values["new_value"] = number
                digest = audit.chain_hash(prev, values)
                audits_out.append({**values, "id": next_audit, "prev_hash": prev, "hash": digest})
                next_audit += 1
                prev = digest
            if len(audits_out) >= 20000:
                flush_batch()
        flush_batch()
        db.session.execute(update(Site).where(Site.id == site.id).values(next_screening_seq=seq + n_copy))
        if pg:
            for table in ("subject", "screening", "exposure", "audit_record"):
                db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT max(id) FROM {table}))"))
        db.session.commit()
        out["copy_s"] = time.perf_counter() - t

        # --- 3. check: counts, and the chain as the CLI will walk it ---------------------------
        db.session.execute(text("ANALYZE"))  # fresh statistics, as a long-running database would have
        db.session.commit()
        out["audit_records"] = count()
        out["subjects_total"] = db.session.execute(select(func.count(Subject.id))).scalar()
        out["subjects_hz"] = db.session.execute(
            select(func.count(Subject.id)).where(Subject.site_id == site.id)).scalar()
        out["screenings_complete"] = db.session.execute(
            select(func.count(Screening.id)).where(Screening.status == "complete")).scalar()
        t = time.perf_counter()
        result = audit.verify()
        out["verify_inprocess_s"] = time.perf_counter() - t
        out["verify_ok"], out["verify_checked"] = result.ok, result.checked
        if not result.ok:
            raise SystemExit(f"audit chain broken after loading: {result.problem}")

        # Save targets: every scale subject (real and copied) with its current screening version.
        rows = db.session.execute(
            select(Subject.id, Screening.version, Screening.id)
            .join(Screening, Screening.subject_id == Subject.id)
            .where(Subject.site_id == site.id, Subject.status == "screening", Screening.status == "complete",
                   Subject.id >= template.id - real + 1)
            .order_by(Subject.id)).all()
        out["targets"] = [[r[0], r[1], r[2]] for r in rows]
    return out


def _ensure_sites_and_users() -> None:
    from sqlalchemy import select

    from cellstudy.auth import service as auth
    from cellstudy.auth.models import Site, User
    from cellstudy.demo import DEMO_PASSWORD, DEMO_SITES, DEMO_USERS
    from cellstudy.extensions import db

    for code, name, tz in DEMO_SITES:
        if not db.session.execute(select(Site.id).where(Site.code == code)).first():
            auth.create_site(code, name, tz)
    for username, full_name, role, sites in DEMO_USERS:
        if not db.session.execute(select(User.id).where(User.username == username)).first():
            auth.create_user(username, full_name, role, DEMO_PASSWORD, list(sites))


def saves(url: str, reason: str) -> dict:
    """How many screening saves carrying `reason` really reached the audit trail."""
    from sqlalchemy import func, select

    from cellstudy.enrollment.models import Screening
    from cellstudy.extensions import db
    from cellstudy.records.models import AuditRecord

    app = _app(url)
    with app.app_context():
        updates = db.session.execute(select(func.count(AuditRecord.id)).where(
            AuditRecord.reason == reason, AuditRecord.action == "update", AuditRecord.form == "screening")).scalar()
        forms = db.session.execute(select(func.count(func.distinct(AuditRecord.form_id))).where(
            AuditRecord.reason == reason, AuditRecord.form == "screening")).scalar()
        versions = db.session.execute(select(func.sum(Screening.version))).scalar()
        total = db.session.execute(select(func.count(AuditRecord.id))).scalar()
    return {"update_records": updates, "forms_changed": forms, "version_sum": versions, "audit_records": total}


def targets(url: str, min_id: int) -> dict:
    """[subject id, current screening version, current weight] of the scale subjects."""
    from sqlalchemy import select

    from cellstudy.enrollment.models import Screening, Subject
    from cellstudy.extensions import db

    app = _app(url)
    with app.app_context():
        rows = db.session.execute(
            select(Subject.id, Screening.version, Screening.data)
            .join(Screening, Screening.subject_id == Subject.id)
            .where(Subject.id >= min_id, Subject.status == "screening", Screening.status == "complete")
            .order_by(Subject.id)).all()
    return {"targets": [[sid, version, (data or {}).get("weight_kg")] for sid, version, data in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load")
    p.add_argument("--url", required=True)
    p.add_argument("--subjects", type=int, default=2000)
    p.add_argument("--real", type=int, default=100)
    s = sub.add_parser("saves")
    s.add_argument("--url", required=True)
    s.add_argument("--reason", required=True)
    t = sub.add_parser("targets")
    t.add_argument("--url", required=True)
    t.add_argument("--min-id", type=int, required=True)
    args = parser.parse_args()
    if args.cmd == "load":
        print(json.dumps(load(args.url, args.subjects, args.real)))
    elif args.cmd == "targets":
        print(json.dumps(targets(args.url, args.min_id)))
    else:
        print(json.dumps(saves(args.url, args.reason)))


if __name__ == "__main__":
    main()
