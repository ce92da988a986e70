"""The audit trail viewer (issue 6) against the real app and the demo study: readable
rows, filters, keyset pages, site scoping, CSV and the study-wide export job, audited."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from cellstudy.auth.models import Site, User
from cellstudy.enrollment.models import Screening, Subject
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord, Query, Signature

ROW = re.compile(r'<tr data-id="(\d+)" data-action="([a-z_]+)">')


class Db:
    """Database reads and writes of a test, each in its own app context: the pages are
    requested outside it, so no request shares the test's session or its `g` (the
    logged-in user is cached there)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, fn):
        with self.app.app_context():
            try:
                return fn()
            finally:
                db.session.remove()

    def scalars(self, stmt):
        return self(lambda: db.session.execute(stmt).scalars().all())

    def scalar(self, stmt):
        return self(lambda: db.session.execute(stmt).scalar())


@pytest.fixture
def q(app):
    return Db(app)


def ids_on(page: str) -> list[int]:
    return [int(m.group(1)) for m in ROW.finditer(page)]


def actions_on(page: str) -> list[str]:
    return [m.group(2) for m in ROW.finditer(page)]


def _site_id(q, code):
    return q.scalar(select(Site.id).where(Site.code == code))


def _subject(q, number):
    def get():
        s = db.session.execute(
            select(Subject).where((Subject.subject_number == number) | (Subject.screening_number == number))
        ).scalar_one()
        return {
            "id": s.id,
            "label": s.label,
            "site_id": s.site_id,
            "screening_id": s.current_screening.id,
            "screening_number": s.screening_number,
        }

    return q(get)


def _values(q, column, ids):
    return set(q.scalars(select(column).where(AuditRecord.id.in_(ids))))


def test_newest_first_readable_labels_and_site_time(app, login, q):
    page = login("dm").get("/audit").get_data(as_text=True)
    ids = ids_on(page)
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    assert ids[0] == q.scalar(select(func.max(AuditRecord.id)))
    # a coded value as its label, a field by its label, the site's time with UTC on hover
    page = login("dm").get("/audit?form=screening&action=set&field=sex").get_data(as_text=True)
    assert ">Sex</a>" in page and ('<td class="new">Female</td>' in page or '<td class="new">Male</td>' in page)
    assert '<td class="new">F</td>' not in page and '<td class="new">M</td>' not in page
    assert re.search(r'<time datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d UTC">[^<]+UTC\+8</time>', page)


def test_filters_by_action_user_form_and_date(app, login, q):
    dm = login("dm")
    page = dm.get("/audit?action=status").get_data(as_text=True)
    assert actions_on(page) and set(actions_on(page)) == {"status"}
    ids = ids_on(dm.get("/audit?user=inv-hz").get_data(as_text=True))
    assert ids and _values(q, AuditRecord.username, ids) == {"inv-hz"}
    ids = ids_on(dm.get("/audit?form=adverse_event").get_data(as_text=True))
    assert ids and _values(q, AuditRecord.form, ids) == {"adverse_event"}
    # the date range is in UTC when several sites are in view: the demo was written today
    today = date.today()
    assert ids_on(
        dm.get(f"/audit?date_from={today - timedelta(days=1)}&date_to={today + timedelta(days=1)}").get_data(
            as_text=True
        )
    )
    page = dm.get(f"/audit?date_from={today + timedelta(days=2)}").get_data(as_text=True)
    assert ids_on(page) == [] and "No audit records match these filters." in page


def test_bad_filters_are_named_and_never_widen_silently(app, login):
    page = login("dm").get("/audit?date_from=31/12/2026&subject=HZ-999&form_id=abc&before=x")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "From: a date as YYYY-MM-DD" in body
    assert "Subject: no subject HZ-999 at your sites." in body
    assert "Form id: a whole number" in body
    page = login("coord-nb").get("/audit?site=HZ").get_data(as_text=True)
    assert "Site: &#39;HZ&#39; is not one of your sites (NB)." in page
    assert ids_on(page) == []  # not silently widened to the user's other records
    page = login("dm").get("/audit?before=x").get_data(as_text=True)
    assert "Page position" in page and ids_on(page) == []


def test_keyset_pages_do_not_overlap_and_lead_back(app, login):
    dm = login("dm")
    first = dm.get("/audit").get_data(as_text=True)
    ids1 = ids_on(first)
    older = re.search(r'href="(/audit\?before=(\d+))" rel="next"', first)
    assert older and int(older.group(2)) == ids1[-1]
    second = dm.get(older.group(1)).get_data(as_text=True)
    ids2 = ids_on(second)
    assert len(ids2) == 50 and max(ids2) < min(ids1)
    newer = re.search(r'href="(/audit\?after=(\d+))" rel="prev"', second)
    assert newer
    assert ids_on(dm.get(newer.group(1)).get_data(as_text=True)) == ids1


def test_site_scoping(app, login, q):
    from cellstudy.records import audit

    nb, hz = _site_id(q, "NB"), _site_id(q, "HZ")
    ids = ids_on(login("coord-nb").get("/audit").get_data(as_text=True))
    assert ids and _values(q, AuditRecord.site_id, ids) == {nb}

    def study_level():
        audit.append(
            "setting",
            username="admin",
            form="study_amendment",
            form_id=1,
            field="dlt_window_days",
            old=28,
            new=35,
            reason="study-level record, no site",
        )
        db.session.commit()

    q(study_level)
    assert ids_on(login("monitor-hz").get("/audit?form=study_amendment").get_data(as_text=True)) == []
    assert ids_on(login("dm").get("/audit?form=study_amendment").get_data(as_text=True))  # data managers see it
    ids = ids_on(login("monitor-hz").get("/audit").get_data(as_text=True))
    assert ids and _values(q, AuditRecord.site_id, ids) == {hz}
    # a subject of another site named in the filter is not found
    other = q.scalars(select(Subject.screening_number).where(Subject.site_id == hz))[0]
    body = login("coord-nb").get(f"/audit?subject={other}").get_data(as_text=True)
    assert f"no subject {other} at your sites" in body and ids_on(body) == []


def test_subject_form_and_field_views(app, login, q):
    subject = _subject(q, "HZ-001")
    dm = login("dm")
    ids = ids_on(dm.get(f"/subjects/{subject['id']}/audit").get_data(as_text=True))
    assert ids and _values(q, AuditRecord.subject_id, ids) == {subject["id"]}
    body = dm.get(
        f"/subjects/{subject['id']}/audit?form=screening&form_id={subject['screening_id']}&field=weight_kg"
    ).get_data(as_text=True)
    ids = ids_on(body)
    rows = q(
        lambda: set(
            db.session.execute(
                select(AuditRecord.form, AuditRecord.form_id, AuditRecord.field).where(AuditRecord.id.in_(ids))
            ).all()
        )
    )
    assert rows == {("screening", subject["screening_id"], "weight_kg")}
    assert "Weight (kg)" in body
    # the same subject by number on the study-wide page
    assert (
        ids_on(dm.get(f"/audit?subject={subject['label']}").get_data(as_text=True))[0]
        == ids_on(dm.get(f"/subjects/{subject['id']}/audit").get_data(as_text=True))[0]
    )


def test_signature_meaning_and_invalidation_are_in_the_trail(app, login, q):
    from cellstudy.records import service as records

    def signed():
        sig = (
            db.session.execute(select(Signature).where(Signature.form == "screening", Signature.valid.is_(True)))
            .scalars()
            .first()
        )
        subject_id = db.session.get(Screening, sig.form_id).subject_id
        return sig.id, sig.form_id, subject_id, f"{sig.printed_name}: {sig.meaning}"

    sig_id, screening_id, subject_id, text_ = q(signed)
    body = login("dm").get(f"/subjects/{subject_id}/audit?action=sign").get_data(as_text=True)
    assert text_ in body and "Signed" in body

    def change():
        screening = db.session.get(Screening, screening_id)
        coord = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        records.save(
            screening,
            user=coord,
            changes={"weight_kg": "71"},
            expected_version=screening.version,
            reason="weight re-measured",
        )

    q(change)
    assert q.scalar(select(Signature.valid).where(Signature.id == sig_id)) is False
    body = login("dm").get(f"/subjects/{subject_id}/audit?action=unsign").get_data(as_text=True)
    assert "Signature invalidated" in body and text_ in body and "weight re-measured" in body


def test_query_link_on_the_field(app, login, q):
    subject = _subject(q, "HZ-001")

    def add():
        query = Query(
            site_id=subject["site_id"],
            subject_id=subject["id"],
            form="screening",
            form_id=subject["screening_id"],
            field="weight_kg",
            text="Please confirm the weight",
            origin="manual",
            state="open",
        )
        db.session.add(query)
        db.session.commit()
        return query.id

    query_id = q(add)
    body = (
        login("monitor-hz")
        .get(f"/subjects/{subject['id']}/audit?form=screening&form_id={subject['screening_id']}&field=weight_kg")
        .get_data(as_text=True)
    )
    assert f"Q{query_id} open" in body and 'title="Please confirm the weight"' in body


def _csv(response):
    data = response.get_data()
    assert data.startswith(b"\xef\xbb\xbf")  # issue 13: every CSV starts with the UTF-8 BOM
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def test_csv_export_of_the_filtered_view_is_complete_scoped_and_audited(app, login, q):
    hz = _site_id(q, "HZ")
    mon = login("monitor-hz")
    expected = q.scalar(
        select(func.count(AuditRecord.id)).where(AuditRecord.site_id == hz, AuditRecord.form == "screening")
    )
    before = q.scalar(select(func.max(AuditRecord.id)))
    response = mon.get("/audit/export.csv?form=screening")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = _csv(response)
    assert rows[0][:6] == ["Record", "Time (UTC)", "Time (site)", "Site", "Subject", "User"]
    assert len(rows) - 1 == expected
    assert {r[3] for r in rows[1:]} == {"HZ"} and {r[9] for r in rows[1:]} == {"screening"}
    assert "Female" in {r[14] for r in rows[1:]}  # coded values as labels in the file too
    record = q(
        lambda: db.session.execute(
            select(AuditRecord.username, AuditRecord.form, AuditRecord.field, AuditRecord.new_value).where(
                AuditRecord.id > before, AuditRecord.action == "export"
            )
        ).one()
    )
    assert record[:3] == ("monitor-hz", "audit_trail", "csv")
    assert f'"rows": {expected}' in record[3] and '"form": "screening"' in record[3]


def test_csv_export_refuses_bad_filters_and_roles_without_export(app, login):
    response = login("dm").get("/audit/export.csv?date_to=tomorrow")
    assert response.status_code == 302 and "/audit?" in response.headers["Location"]
    assert login("coord-hz").get("/audit/export.csv").status_code == 403


def test_study_wide_export_runs_as_a_job(app, login, q):
    from cellstudy import jobs
    from cellstudy.jobs.models import Job

    dm = login("dm")
    response = dm.post("/audit/study-export")
    assert response.status_code == 302
    job_id = int(re.search(r"/jobs/(\d+)", response.headers["Location"]).group(1))
    q(lambda: jobs.wait(job_id, timeout=60))
    status, done, total, error = q(
        lambda: (lambda j: (j.status, j.progress_done, j.progress_total, j.error))(db.session.get(Job, job_id))
    )
    assert status == "done", error
    assert done == total > 0
    download = dm.get(f"/jobs/{job_id}/download")
    assert download.status_code == 200
    rows = _csv(download)
    assert len(rows) - 1 == total
    ids = [int(r[0]) for r in rows[1:]]
    assert ids == sorted(ids, reverse=True) and ids[-1] == q.scalar(select(func.min(AuditRecord.id)))
    notes = q.scalars(
        select(AuditRecord.new_value).where(AuditRecord.action == "export", AuditRecord.form == "audit_trail")
    )
    assert any("study-wide export, written by a background job" in (n or "") for n in notes)
    assert login("coord-hz").post("/audit/study-export").status_code == 403


def test_a_long_filtered_export_goes_to_the_job_pool_with_its_filters(app, login, q, monkeypatch):
    from cellstudy import jobs
    from cellstudy.audit_viewer import routes
    from cellstudy.jobs.models import Job

    monkeypatch.setattr(routes, "STREAM_MAX_ROWS", 10)
    hz = _site_id(q, "HZ")
    expected = q.scalar(
        select(func.count(AuditRecord.id)).where(AuditRecord.site_id == hz, AuditRecord.form == "screening")
    )
    assert expected > 10
    mon = login("monitor-hz")
    response = mon.get("/audit/export.csv?form=screening")
    assert response.status_code == 302
    job_id = int(re.search(r"/jobs/(\d+)", response.headers["Location"]).group(1))
    q(lambda: jobs.wait(job_id, timeout=60))
    status, error = q(lambda: (lambda j: (j.status, j.error))(db.session.get(Job, job_id)))
    assert status == "done", error
    rows = _csv(mon.get(f"/jobs/{job_id}/download"))
    assert (
        len(rows) - 1 == expected and {r[9] for r in rows[1:]} == {"screening"} and {r[3] for r in rows[1:]} == {"HZ"}
    )


def test_only_data_values_are_shown_as_code_labels(app, login, q):
    """A monitoring record about a field (here an SDV mark on "sex") carries text, not the
    field's value: it is shown as written, while the field's own values show as labels."""
    from cellstudy.records import audit

    subject = _subject(q, "HZ-001")

    def add():
        audit.append(
            "sdv",
            username="monitor-hz",
            site_id=subject["site_id"],
            subject_id=subject["id"],
            form="screening",
            form_id=subject["screening_id"],
            field="sex",
            old="F",
            new="verified",
        )
        db.session.commit()

    q(add)
    body = login("dm").get(f"/subjects/{subject['id']}/audit?action=sdv").get_data(as_text=True)
    assert '<td class="old">F</td>' in body and "Verified (SDV)" in body
