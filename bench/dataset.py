"""The scale dataset of issues 2 and 3: a fresh database, migrated, the demo study, then
2,000 subjects at site HZ, each with a complete screening form, enrolled with a dose
level and treated: 3 infusions, 3 lymphodepletion days and the 9 follow-up visits of the
schedule (9 + 3 = the 12 scheduled events per subject of issue 3), with hash-chained
audit records for every write.

    .venv/bin/python bench/dataset.py load --url URL [--subjects 2000] [--real 100]
    .venv/bin/python bench/dataset.py saves --url URL --reason TEXT
    .venv/bin/python bench/dataset.py targets --url URL --min-id ID

`load` prints one JSON line (timings, counts, the save targets, the scheduling-screen
targets). The first `--real` subjects go through the real services, exactly as the web
forms would write them (cellstudy.demo.make_subject for the screening form, then
enrollment.enrol with an investigator's e-signature and a dose level, and
infusions.schedule_infusion / save_lymphodepletion / save_infusion / save_visit), each
with its own first-infusion date: the dates are spread evenly from FIRST_FROM to
FIRST_TO days around the site's today, and what lies before today is done (lymphodepletion
recorded, infusions given, visits done), what lies after it is scheduled or planned.
Both steps are timed (that is the cost of the forms entered through the app).

The rest are copies of those subjects in rotation (copy k of template k mod --real, so
every first-infusion date holds about subjects / real subjects): rows inserted directly
with new ids, and the template's audit records re-written for the copy and re-chained
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
from datetime import date, datetime, time as dtime, timedelta, timezone
from decimal import Decimal

# The app: bench/run.py points BENCH_APP_ROOT at its snapshot of the working tree.
ROOT = os.environ.get("BENCH_APP_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# First infusions from 120 days ago to 30 days ahead (the brief of issue 3): the next
# 4 weeks of the calendar hold the infusions and visits of about a fifth of the subjects.
FIRST_FROM, FIRST_TO = -120, 30
PROPOSE_IN_DAYS = 10  # the scheduling screen is benchmarked with ?proposed=<today + 10 days>
LEVEL_REASON = "bench: scale dataset, dose levels assigned in rotation"
# The screening-form answers that differ between subjects (dates derived from each
# template's first infusion); a benchmarked save posts each form's own values of these.
PER_SUBJECT_FIELDS = ("screening_date", "icf_signed_date", "first_infusion_date")

# Subject-owned tables in insertion order (foreign keys first), and the table each audit
# `form` (and Signature.form / Deviation.form) names.
ORDER = ("subject", "screening", "exposure", "signature", "eligibility_decision", "infusion",
         "lymphodepletion_day", "visit", "deviation", "dlt_assessment")
FORM_TABLE = {"subject": "subject", "screening": "screening", "exposure": "exposure",
              "eligibility_decision": "eligibility_decision", "infusion": "infusion",
              "lymphodepletion": "lymphodepletion_day", "visit": "visit", "deviation": "deviation",
              "dlt_assessment": "dlt_assessment"}


def _own_values(data: dict | None) -> str:
    """The form's own answers of PER_SUBJECT_FIELDS, as a urlencoded "&k=v..." suffix."""
    from urllib.parse import urlencode

    return "&" + urlencode([(k, (data or {}).get(k) or "") for k in PER_SUBJECT_FIELDS])


def _app(url: str):
    from cellstudy import create_app

    return create_app("development", overrides={"SQLALCHEMY_DATABASE_URI": url})


def _tables() -> dict:
    from cellstudy.enrollment.models import EligibilityDecision, Exposure, Screening, Subject
    from cellstudy.infusions.models import Deviation, DltAssessment, Infusion, LymphodepletionDay, Visit
    from cellstudy.records.models import Signature

    models = (Subject, Screening, Exposure, Signature, EligibilityDecision, Infusion, LymphodepletionDay, Visit,
              Deviation, DltAssessment)
    tables = {m.__tablename__: m.__table__ for m in models}
    assert tuple(tables) == ORDER, tables
    return tables


# --- one subject through the real services -------------------------------------------------

def _treat(subject, coord, inv, first, today, level: str) -> None:
    """Enrol (investigator's e-signature, dose level), schedule the 3 infusions from
    `first`, and record what lies before `today`: lymphodepletion days, infusions given,
    follow-up visits done. Enrolment is back-dated to the day after screening, as
    cellstudy.demo._enrol does for a subject treated in the past."""
    from cellstudy.demo import DEMO_PASSWORD
    from cellstudy.enrollment import service as enrollment
    from cellstudy.extensions import db
    from cellstudy.infusions import service as infusions
    from cellstudy.settings import current_study

    proposed, _why = infusions.proposed_dose_level()
    screening = subject.current_screening
    decision = enrollment.enrol(subject, user=inv, password=DEMO_PASSWORD, screening_version=screening.version,
                                dose_level=level, dose_level_reason=None if level == proposed else LEVEL_REASON)
    screened = date.fromisoformat(screening.data["screening_date"])
    stamp = datetime.combine(screened + timedelta(days=1), dtime(2, 0), tzinfo=timezone.utc)
    subject.enrolled_at = decision.decided_at = decision.signature.signed_at = stamp
    db.session.commit()

    regimen = current_study().regimen
    scheduled = [infusions.schedule_infusion(subject, first + timedelta(days=day), user=coord)
                 for day in regimen.infusion_days]
    for day in subject.lymphodepletion_days:
        if day.planned_date < today:
            infusions.save_lymphodepletion(day, {
                "administration_date": day.planned_date, "height_cm": Decimal("165"), "weight_kg": Decimal("62.5"),
                "fludarabine_mg_m2": Decimal("30"), "fludarabine_mg": Decimal("51"),
                "cyclophosphamide_mg_m2": Decimal("300"), "cyclophosphamide_mg": Decimal("510"),
                "start_time": "09:00", "stop_time": "11:30"},
                user=coord, expected_version=day.version, reason=None, complete=True, today=today)
    cells = regimen.dose_level(level).cells
    vitals = {f"{p}_{k}": v for p in ("pre", "during", "post") for k, v in
              (("temp_c", Decimal("36.8")), ("hr", 78), ("sbp", 122), ("dbp", 76), ("spo2", Decimal("98")))}
    for infusion in scheduled:
        if infusion.planned_date < today:
            infusions.save_infusion(infusion, {
                "administration_date": infusion.planned_date, "start_time": "10:05", "stop_time": "10:35",
                "product_lot": "NK-CLL1-24-017", "viability_percent": Decimal("93.5"), "weight_kg": Decimal("62.5"),
                "planned_cells": cells, "actual_cells": cells * 98 // 100,
                "premedication": "Paracetamol 500 mg PO, chlorphenamine 4 mg IV", "infusion_reaction": False,
                **vitals}, user=coord, expected_version=infusion.version, reason=None, complete=True, today=today)
    consent = date.fromisoformat(screening.data["icf_signed_date"])
    for visit in subject.visits:
        if visit.target_date < today:
            infusions.save_visit(visit, {"visit_date": visit.target_date, "temp_c": Decimal("37.1"), "hr": 80,
                                         "sbp": 118, "dbp": 72, "spo2": Decimal("97"), "ecog": 1,
                                         "anc": Decimal("0.4"), "platelets": Decimal("38"),
                                         "response": "not_assessed"},
                                 user=coord, expected_version=visit.version, reason=None, complete=True,
                                 consent=consent)


def load(url: str, subjects: int, real: int) -> dict:
    import flask_migrate
    from sqlalchemy import func, insert, select, text, update

    from cellstudy.auth.models import Site, User
    from cellstudy.demo import load_demo, make_subject
    from cellstudy.enrollment.models import Screening, Subject
    from cellstudy.extensions import db
    from cellstudy.infusions.models import Infusion, LymphodepletionDay, Visit
    from cellstudy.records import audit
    from cellstudy.records.models import AuditRecord
    from cellstudy.settings import current_study
    from cellstudy.timeutil import site_today, utcnow

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
        coord = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        inv = db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one()
        count = lambda: db.session.execute(select(func.count(AuditRecord.id))).scalar()  # noqa: E731
        today = site_today(site)
        out["today"] = today.isoformat()
        out["proposed"] = (today + timedelta(days=PROPOSE_IN_DAYS)).isoformat()
        out["first_from"], out["first_to"] = FIRST_FROM, FIRST_TO
        levels = [lv.name for lv in current_study().regimen.dose_levels]

        # --- 1. through the real services: the screening form, then enrolment and treatment --
        real = max(1, min(real, subjects))
        span = FIRST_TO - FIRST_FROM
        firsts = [today + timedelta(days=FIRST_FROM + round(i * span / max(1, real - 1))) for i in range(real)]
        before = count()
        t = time.perf_counter()
        templates = []
        for first in firsts:
            # Screened 2 weeks before the first infusion (never in the future).
            screened_on = min(first - timedelta(days=14), today)
            templates.append(make_subject(site, coord, "complete", screened_on, first_infusion_date=first))
        out["real_s"] = time.perf_counter() - t
        out["real_ms_per_subject"] = out["real_s"] / real * 1000
        screening_audit = count() - before
        out["audit_per_subject_screening"] = screening_audit / real
        t = time.perf_counter()
        for i, (subject, first) in enumerate(zip(templates, firsts)):
            _treat(subject, coord, inv, first, today, levels[i % len(levels)])
        out["treat_s"] = time.perf_counter() - t
        out["treat_ms_per_subject"] = out["treat_s"] / real * 1000
        written = count() - before
        out["audit_per_subject"] = written / real
        out["audit_per_subject_treatment"] = (written - screening_audit) / real

        # --- 2. copies of the templates in rotation, inserted directly ------------------------
        t = time.perf_counter()
        tables = _tables()
        audit_t = AuditRecord.__table__
        tids = [s.id for s in templates]
        db.session.expire_all()
        scoped = db.session.execute(select(func.count(audit_t.c.id)).where(audit_t.c.subject_id.in_(tids))).scalar()
        if scoped != written:
            raise SystemExit(f"the templates wrote {written} audit records but {scoped} name one of them: "
                             "the copier would miss some; cannot copy them faithfully")
        rows = {tid: {} for tid in tids}
        for name, table in tables.items():
            col = table.c.id if name == "subject" else table.c.subject_id
            for row in db.session.execute(select(table).where(col.in_(tids)).order_by(table.c.id)).mappings():
                rows[row["id"] if name == "subject" else row["subject_id"]].setdefault(name, []).append(dict(row))
        aud = {tid: [] for tid in tids}
        for row in db.session.execute(select(audit_t).where(audit_t.c.subject_id.in_(tids))
                                      .order_by(audit_t.c.id)).mappings():
            aud[row["subject_id"]].append(row)
        forms = {r["form"] for rs in aud.values() for r in rs} | {
            r["form"] for tr in rows.values() for name in ("signature", "deviation") for r in tr.get(name, [])
            if r["form"] is not None}
        if not forms <= set(FORM_TABLE):
            raise SystemExit(f"template audit records name forms {forms - set(FORM_TABLE)}: the copier does not "
                             "know them")

        n_copy = subjects - real
        max_id = lambda table: db.session.execute(select(func.max(table.c.id))).scalar() or 0  # noqa: E731
        next_id = {name: max_id(table) + 1 for name, table in tables.items()}
        next_audit = max_id(audit_t) + 1
        seq = db.session.execute(select(Site.next_screening_seq).where(Site.id == site.id)).scalar_one()
        subj_seq = db.session.execute(select(Site.next_subject_seq).where(Site.id == site.id)).scalar_one()

        if pg:
            db.session.execute(text("SELECT pg_advisory_xact_lock(7220117)"))
        prev = db.session.execute(select(AuditRecord.hash).order_by(AuditRecord.id.desc()).limit(1)).scalar()
        base_at = utcnow()
        tick = 0
        pending = {name: [] for name in ORDER}
        audits_out = []

        def flush_batch():
            for name in ORDER:
                if pending[name]:
                    db.session.execute(insert(tables[name]), pending[name])
                    pending[name].clear()
            if audits_out:
                db.session.execute(insert(audit_t), audits_out)
                audits_out.clear()

        for k in range(n_copy):
            tid = tids[k % real]
            tpl = rows[tid]
            sid = next_id["subject"]
            number = f"{site.code}-S{seq + k:03d}"
            subject_number = f"{site.code}-{subj_seq + k:03d}"
            ids: dict[str, dict] = {}
            for name in ORDER:
                ids[name] = {}
                for row in tpl.get(name, []):
                    ids[name][row["id"]] = next_id[name]
                    next_id[name] += 1
            for name in ORDER:
                for row in tpl.get(name, []):
                    new = {**row, "id": ids[name][row["id"]]}
                    if name == "subject":
                        new.update(screening_number=number,
                                   subject_number=subject_number if row["subject_number"] else None)
                    else:
                        new["subject_id"] = sid
                    if name == "screening" and row["previous_id"] is not None:
                        new["previous_id"] = ids["screening"][row["previous_id"]]
                    if name == "eligibility_decision":
                        new["screening_id"] = ids["screening"][row["screening_id"]]
                    if name in ("signature", "deviation") and row["form"] is not None and row["form_id"] is not None:
                        new["form_id"] = ids[FORM_TABLE[row["form"]]][row["form_id"]]
                    for col in ("signature_id", "override_signature_id"):
                        if row.get(col) is not None:
                            new[col] = ids["signature"][row[col]]
                    pending[name].append(new)
            for row in aud[tid]:
                values = {key: row[key] for key in audit._HASHED}
                tick += 1
                values["at"] = base_at + timedelta(microseconds=tick)
                values["subject_id"] = sid
                if row["form_id"] is not None:
                    values["form_id"] = ids[FORM_TABLE[row["form"]]][row["form_id"]]
                if row["field"] == "screening_number":
                    values["new_value"] = number
                elif row["field"] == "subject_number" and row["new_value"]:
                    values["new_value"] = subject_number
                digest = audit.chain_hash(prev, values)
                audits_out.append({**values, "id": next_audit, "prev_hash": prev, "hash": digest})
                next_audit += 1
                prev = digest
            if len(audits_out) >= 20000:
                flush_batch()
        flush_batch()
        db.session.execute(update(Site).where(Site.id == site.id).values(
            next_screening_seq=seq + n_copy, next_subject_seq=subj_seq + n_copy))
        if pg:
            for table in (*ORDER, "audit_record"):
                db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT coalesce(max(id), 1) FROM {table}))"))
        db.session.commit()
        out["copy_s"] = time.perf_counter() - t

        # --- 3. check: counts, and the chain as the CLI will walk it ---------------------------
        db.session.execute(text("ANALYZE"))  # fresh statistics, as a long-running database would have
        db.session.commit()
        scale = Subject.id >= tids[0]
        out["audit_records"] = count()
        out["subjects_total"] = db.session.execute(select(func.count(Subject.id))).scalar()
        out["subjects_hz"] = db.session.execute(
            select(func.count(Subject.id)).where(Subject.site_id == site.id)).scalar()
        out["screenings_complete"] = db.session.execute(
            select(func.count(Screening.id)).where(Screening.status == "complete")).scalar()
        out["scale_status"] = dict(db.session.execute(
            select(Subject.status, func.count(Subject.id)).where(scale).group_by(Subject.status)).all())
        out["scale_dose_levels"] = dict(db.session.execute(
            select(Subject.dose_level, func.count(Subject.id)).where(scale).group_by(Subject.dose_level)).all())
        out["infusions"] = dict(db.session.execute(
            select(Infusion.state, func.count(Infusion.id)).join(Subject).where(scale)
            .group_by(Infusion.state)).all())
        out["visits"] = dict(db.session.execute(
            select(Visit.state, func.count(Visit.id)).join(Subject).where(scale).group_by(Visit.state)).all())
        out["lymphodepletion_days"] = dict(db.session.execute(
            select(LymphodepletionDay.status, func.count(LymphodepletionDay.id)).join(Subject).where(scale)
            .group_by(LymphodepletionDay.status)).all())
        end = today + timedelta(days=28)
        out["calendar_infusions"] = db.session.execute(
            select(func.count(Infusion.id)).join(Subject).where(
                Subject.site_id == site.id, Infusion.state == "scheduled", Infusion.planned_date >= today,
                Infusion.planned_date < end)).scalar()
        out["calendar_visits"] = db.session.execute(
            select(func.count(Visit.id)).join(Subject).where(
                Subject.site_id == site.id, Visit.state == "planned", Visit.latest >= today,
                Visit.target_date < end)).scalar()
        t = time.perf_counter()
        result = audit.verify()
        out["verify_inprocess_s"] = time.perf_counter() - t
        out["verify_ok"], out["verify_checked"] = result.ok, result.checked
        if not result.ok:
            raise SystemExit(f"audit chain broken after loading: {result.problem}")

        # Save targets: every scale subject (real and copied) with its current screening version.
        rows = db.session.execute(
            select(Subject.id, Screening.version, Screening.id, Screening.data)
            .join(Screening, Screening.subject_id == Subject.id)
            .where(Subject.site_id == site.id, Screening.status == "complete", scale)
            .order_by(Subject.id)).all()
        out["targets"] = [[r[0], r[1], r[2], _own_values(r[3])] for r in rows]
        out["per_subject_fields"] = list(PER_SUBJECT_FIELDS)
        # Scheduling-screen targets: the scale subjects still being scheduled (enrolled or on
        # treatment: the screen evaluates a proposal only for them).
        out["schedule_targets"] = db.session.execute(
            select(Subject.id).where(scale, Subject.site_id == site.id,
                                     Subject.status.in_(("enrolled", "on_treatment"))).order_by(Subject.id)).scalars().all()
        if not out["schedule_targets"]:
            raise SystemExit("no scale subject is enrolled or on treatment: nothing to benchmark the scheduling screen on")
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
    """[subject id, current screening version, current weight, "&own=values"] of the scale subjects."""
    from sqlalchemy import select

    from cellstudy.enrollment.models import Screening, Subject
    from cellstudy.extensions import db

    app = _app(url)
    with app.app_context():
        rows = db.session.execute(
            select(Subject.id, Screening.version, Screening.data)
            .join(Screening, Screening.subject_id == Subject.id)
            .where(Subject.id >= min_id, Screening.status == "complete")
            .order_by(Subject.id)).all()
    return {"targets": [[sid, version, (data or {}).get("weight_kg"), _own_values(data)]
                        for sid, version, data in rows]}


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
