"""Issue 5 benchmark: PDF CRFs and casebooks (make bench-pdf; not part of make test).

Targets (issue 5): a one-page filled CRF under 0.5 s; the casebook of a subject with 40
forms and 500 audit records under 8 s and at most twice the time WeasyPrint itself takes
to render the same HTML saved to a file (measured side by side, interleaved, in this
run); peak memory under 500 MB.

The dataset: a fresh SQLite database (bench/out/pdf/), the migrations and the demo
study, then the demo's treated subject HZ-001 is brought to exactly 40 forms (more
adverse events, CRS/ICANS assessments and a DLT assessment, every visit filled) and 500
audit records, all through the app's write path (records.create/save).

Prints a table; the figures go into bench/RESULTS.md under "Issue 5".
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import sys
import time
from datetime import date, timedelta

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

OUT = os.path.join(os.path.dirname(__file__), "out", "pdf")
FORMS, AUDIT_RECORDS, RUNS = 40, 500, 3


def build_dataset(app):
    from flask_migrate import upgrade
    from sqlalchemy import func, select

    from cellstudy.adverse_events.models import AdverseEvent, CrsAssessment, IcansAssessment
    from cellstudy.auth.models import User
    from cellstudy.demo import load_demo
    from cellstudy.enrollment.models import Subject
    from cellstudy.extensions import db
    from cellstudy.infusions.fields import VISIT_FIELDS
    from cellstudy.infusions.models import DltAssessment
    from cellstudy.pdf import documents
    from cellstudy.records import service as records
    from cellstudy.records.models import AuditRecord

    with app.app_context():
        upgrade(directory=os.path.join(os.path.dirname(__file__), "..", "migrations"))
        load_demo()
        user = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()

        def forms():
            return len(documents.casebook_records(documents.load_subject(subject.id)))

        def audit_count():
            return db.session.scalar(
                select(func.count()).select_from(AuditRecord).where(AuditRecord.subject_id == subject.id)
            )

        if subject.dlt_assessment is None:
            dlt = DltAssessment(subject_id=subject.id, data={})
            with records.transaction():
                records.create(dlt, user=user, fields={})
        number = max((ae.number for ae in subject.adverse_events), default=0)
        onset = date(2026, 1, 5)
        kinds = ["ae", "crs", "icans"]
        while forms() < FORMS:
            kind = kinds[forms() % 3]
            with records.transaction():
                if kind == "ae":
                    number += 1
                    record = AdverseEvent(
                        subject_id=subject.id,
                        site_id=subject.site_id,
                        number=number,
                        category="other",
                        term="Nausea",
                        onset_date=onset + timedelta(days=number),
                        grade=1,
                        serious=False,
                        related_nk="possible",
                        related_ld="unlikely",
                        expectedness="expected",
                        action="none",
                        outcome="recovered",
                        data={},
                    )
                    records.create(record, user=user, fields={"term": "Nausea", "grade": 1})
                elif kind == "crs":
                    record = CrsAssessment(subject_id=subject.id, assessed_on=onset, data={})
                    records.create(record, user=user, fields={})
                    records.save(
                        record,
                        user=user,
                        changes={
                            "assessment_date": onset.isoformat(),
                            "max_temp_c": "38.4",
                            "hypotension": "none",
                            "hypoxia": "none",
                        },
                        expected_version=record.version,
                    )
                else:
                    record = IcansAssessment(subject_id=subject.id, assessed_on=onset, data={})
                    records.create(record, user=user, fields={})
                    records.save(
                        record,
                        user=user,
                        changes={"assessment_date": onset.isoformat(), "consciousness": "normal", "seizure": "none"},
                        expected_version=record.version,
                    )
        for i, visit in enumerate(subject.visits):  # visit CRFs filled in, within the audit budget
            if audit_count() + len(VISIT_FIELDS) > AUDIT_RECORDS:
                break
            values = {
                s.name: (
                    f"{36 + i % 3}.{i % 10}"
                    if s.kind == "number"
                    else 1 + i % 4
                    if s.kind == "int"
                    else (
                        visit.target_date.isoformat()
                        if s.kind == "date"
                        else s.choices[i % len(s.choices)][0]
                        if s.kind == "choice"
                        else f"note {i}"
                    )
                )
                for s in VISIT_FIELDS
            }
            records.save(visit, user=user, changes=values, expected_version=visit.version, reason="bench")
        visit = subject.visits[-1]
        i = 0
        while audit_count() < AUDIT_RECORDS:
            i += 1
            records.save(
                visit,
                user=user,
                changes={"assessment_notes": f"revised note {i}"},
                expected_version=visit.version,
                reason="bench: source re-checked",
            )
        result = forms(), audit_count(), subject.id
        db.session.remove()
        return result


def main() -> None:
    from cellstudy import create_app
    from cellstudy.extensions import db

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    url = "sqlite:///" + os.path.join(OUT, "bench.db")
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False})
    started = time.perf_counter()
    forms, audits, subject_id = build_dataset(app)
    print(
        f"dataset: subject HZ-001 with {forms} forms and {audits} audit records ({time.perf_counter() - started:.1f} s)"
    )

    import io

    from pypdf import PdfReader
    from sqlalchemy import select
    from weasyprint import HTML

    from cellstudy.auth.models import User
    from cellstudy.pdf import build, render
    from cellstudy.infusions.models import Visit

    # --- the casebook, and WeasyPrint alone on the same HTML saved to a file ------------
    html_path = os.path.join(OUT, "casebook.html")
    casebook_times, weasy_times, casebook_pages = [], [], None
    with app.app_context():
        user = db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one()
        html = render.render_html("pdf/casebook.html", **build.casebook_data(subject_id, user))
        with open(html_path, "w", encoding="utf-8") as out:
            out.write(html)
        db.session.rollback()
        for _ in range(RUNS):
            t = time.perf_counter()
            pdf, name, summary = build.casebook(subject_id, user)
            casebook_times.append(time.perf_counter() - t)
            db.session.rollback()
            t = time.perf_counter()
            HTML(filename=html_path, base_url=render.BASE_URL, url_fetcher=render.url_fetcher()).write_pdf(
                os.path.join(OUT, "weasyprint_alone.pdf")
            )
            weasy_times.append(time.perf_counter() - t)
        with open(os.path.join(OUT, name), "wb") as out:
            out.write(pdf)
        casebook_pages = len(PdfReader(io.BytesIO(pdf)).pages)
    # --- a one-page filled CRF, through the web route (login, read, render, audit) -------
    client = app.test_client()
    assert client.post("/login", data={"username": "inv-hz", "password": "cellstudy-demo"}).status_code == 302
    with app.app_context():
        visit_id = db.session.scalar(select(Visit.id).where(Visit.subject_id == subject_id).order_by(Visit.seq))
    url = f"/subjects/{subject_id}/visits/{visit_id}.pdf"
    crf_times, pages = [], None
    for _ in range(10):
        t = time.perf_counter()
        response = client.get(url)
        crf_times.append(time.perf_counter() - t)
        assert response.status_code == 200
    pages = len(PdfReader(io.BytesIO(response.data)).pages)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    crf, cb, wp = statistics.median(crf_times), statistics.median(casebook_times), statistics.median(weasy_times)
    rows = [
        (
            "filled visit CRF (web route), median of 10",
            f"{crf:.3f} s",
            f"{pages} page(s)",
            "< 0.5 s",
            "met" if crf < 0.5 and pages == 1 else "MISSED",
        ),
        (
            f"casebook, {summary['forms']} forms + {summary['audit_records']} audit records, median of {RUNS}",
            f"{cb:.2f} s",
            f"{casebook_pages} pages",
            "< 8 s",
            "met" if cb < 8 else "MISSED",
        ),
        ("WeasyPrint alone, same HTML from a file", f"{wp:.2f} s", "", "", ""),
        ("casebook / WeasyPrint alone", f"{cb / wp:.2f}x", "", "<= 2x", "met" if cb <= 2 * wp else "MISSED"),
        (
            "peak memory (max RSS of this process)",
            f"{peak_mb:.0f} MB",
            "",
            "< 500 MB",
            "met" if peak_mb < 500 else "MISSED",
        ),
    ]
    print(
        f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("| measure | figure | size | target | |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\nall runs: CRF {[round(x, 3) for x in crf_times]}, casebook {[round(x, 2) for x in casebook_times]}, "
        f"WeasyPrint alone {[round(x, 2) for x in weasy_times]}"
    )
    print(f"files: {OUT}/")


if __name__ == "__main__":
    main()
