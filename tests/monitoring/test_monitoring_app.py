"""Monitoring through the web app (issue 6): queries and their thread, corrections linked
to a query, missing-data queries, edit-check queries, SDV and its clearing, form and
casebook signatures, locks of a form, a subject and the study; who may do what.

Demo (cellstudy/demo.py): HZ-001 is on treatment with three AEs (CRS, febrile neutropenia
(FN), nausea), infusion 1 and visits D1/D3 complete and verified by monitor-hz; FN has
an open query on its awareness time; nausea an answered one."""

from __future__ import annotations

import html
import re
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from cellstudy.adverse_events.models import AdverseEvent
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.infusions.models import Visit
from cellstudy.monitoring.models import DataLock, QueryMessage, SdvMark
from cellstudy.monitoring.state import record_state
from cellstudy.records import audit
from cellstudy.records.models import AuditRecord, Query, Signature
from tests.helpers import subject_by_number

PW = "cellstudy-demo"
T = date.today()


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def flashes(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<div class="flash [a-z]+" role="[a-z]+">(.*?)</div>', page, re.S)]


def day(n: int) -> str:
    return (T + timedelta(days=n)).isoformat()


@pytest.fixture
def hz(app):
    with app.app_context():
        subject = subject_by_number("HZ-001")
        aes = {ae.term: ae.id for ae in subject.adverse_events}
        visits = {v.code: v.id for v in subject.visits}
        return {"id": subject.id, "aes": aes, "visits": visits, "infusion": subject.infusions[0].id}


def ae_row(app, ae_id):
    with app.app_context():
        ae = db.session.get(AdverseEvent, ae_id)
        return {"grade": ae.grade, "version": ae.version, "status": ae.status, "data": dict(ae.data or {})}


def state_of(app, form, form_id):
    with app.app_context():
        st = record_state(form, form_id)
        return {
            **st,
            "open_queries": [(q.id, q.field, q.state) for q in st["open_queries"]],
            "signatures": [s.printed_name for s in st["signatures"]],
        }


def audit_rows(app, **where):
    with app.app_context():
        stmt = select(AuditRecord).order_by(AuditRecord.id)
        for k, v in where.items():
            stmt = stmt.where(getattr(AuditRecord, k) == v)
        return [
            {
                "action": r.action,
                "field": r.field,
                "old": r.old_value,
                "new": r.new_value,
                "reason": r.reason,
                "user": r.username,
            }
            for r in db.session.scalars(stmt)
        ]


def ae_form(app, ae_id, **overrides) -> dict:
    """The AE form as the browser posts it: the saved values, with overrides."""
    from cellstudy.adverse_events import service

    with app.app_context():
        ae = db.session.get(AdverseEvent, ae_id)
        values = service.values_of(ae)
        data = {"version": str(ae.version)}
        for name, value in values.items():
            if value is None:
                continue
            if value is True:
                value = "yes"
            elif value is False:
                value = "no"
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            data[name] = str(value)
        if ae.status == "complete":
            data["complete"] = "1"
    data.update(overrides)
    return data


def raise_query(session, subject_id, target, field="", text="Please check.", status=302):
    response = session.post(
        f"/subjects/{subject_id}/queries",
        data={"target": target, "field": field, "text": text, "assignee_role": "coordinator"},
    )
    assert response.status_code == status, text
    return response


def last_query(app) -> Query:
    with app.app_context():
        q = db.session.scalars(select(Query).order_by(Query.id.desc()).limit(1)).one()
        db.session.expunge(q)
        return q


# --- the query workflow --------------------------------------------------------------------------


def test_query_on_an_ae_grade_answered_by_a_correction_then_closed(app, login, hz):
    monitor, coord = login("monitor-hz"), login("coord-hz")
    fn = hz["aes"]["Febrile neutropenia"]
    raise_query(
        monitor,
        hz["id"],
        f"adverse_event:{fn}",
        "grade",
        "Source: ICU transfer for septic shock on day 3; please check the grade.",
    )
    q = last_query(app)
    assert (q.form, q.form_id, q.field, q.state, q.origin) == ("adverse_event", fn, "grade", "open", "manual")
    # the coordinator sees it waiting on the start page and as a badge at the field
    assert f"Query #{q.id}" not in text(coord.get("/")) and f"query #{q.id}" not in text(coord.get("/"))
    start = text(coord.get("/"))
    assert "Queries waiting for you" in start and "Source: ICU transfer" in start
    page = text(coord.get(f"/subjects/{hz['id']}/adverse-events/{fn}"))
    assert f'href="#query-{q.id}" title="Source: ICU transfer' in page and f"query #{q.id} open" in page
    # the coordinator corrects the grade with a reason: the correction links the query and answers it
    before = ae_row(app, fn)
    response = coord.post(
        f"/subjects/{hz['id']}/adverse-events/{fn}",
        data=ae_form(app, fn, grade="4", reason="Grade 4 in the source (ICU transfer)"),
    )
    assert response.status_code == 302, flashes(text(response))
    assert ae_row(app, fn)["grade"] == 4 and before["grade"] == 3
    (update,) = [
        r
        for r in audit_rows(app, form="adverse_event", form_id=fn)
        if r["field"] == "grade" and r["action"] == "update"
    ]
    assert (update["old"], update["new"]) == ("3", "4")
    assert update["reason"] == f"Grade 4 in the source (ICU transfer) [query #{q.id}]"
    assert last_query(app).state == "answered"
    # the SDV of the grade (verified in the demo) is cleared, and the audit trail says so
    clear = [r for r in audit_rows(app, form="adverse_event", form_id=fn) if r["action"] == "sdv_clear"]
    assert [(r["field"], r["old"], r["new"]) for r in clear] == [("grade", "verified", "not verified")]
    assert "value changed from 3 to 4" in clear[0]["reason"]
    assert "grade" not in state_of(app, "adverse_event", fn)["verified_fields"]
    # the coordinator cannot close it; the monitor closes it with a reply
    assert (
        coord.post(
            f"/subjects/{hz['id']}/queries/resolve", data={"query_id": q.id, "action": "close", "text": "done"}
        ).status_code
        == 403
    )
    assert (
        monitor.post(
            f"/subjects/{hz['id']}/queries/resolve",
            data={"query_id": q.id, "action": "close", "text": "Agreed, grade 4."},
        ).status_code
        == 302
    )
    with app.app_context():
        query = db.session.get(Query, q.id)
        assert query.state == "closed" and query.closed_by.username == "monitor-hz"
        thread = [(m.kind, m.user.username if m.user else None) for m in query.messages]
    assert thread == [("open", "monitor-hz"), ("answer", "coord-hz"), ("close", "monitor-hz")]
    actions = [
        r["action"] for r in audit_rows(app, form="adverse_event", form_id=fn) if r["action"].startswith("query")
    ]
    assert actions[-3:] == ["query_open", "query_answer", "query_close"]
    with app.app_context():
        assert audit.verify().ok


def test_answer_reopen_cancel_and_who_may_do_it(app, login, hz):
    monitor, coord, inv, dm = login("monitor-hz"), login("coord-hz"), login("inv-hz"), login("dm")
    nausea = hz["aes"]["Nausea"]
    # site staff cannot raise; a monitor cannot answer
    assert (
        coord.post(f"/subjects/{hz['id']}/queries", data={"target": f"adverse_event:{nausea}", "text": "x"}).status_code
        == 403
    )
    raise_query(monitor, hz["id"], f"adverse_event:{nausea}", "outcome", "Outcome: recovering since when?")
    q = last_query(app)
    answer = f"/subjects/{hz['id']}/queries/answer"
    resolve = f"/subjects/{hz['id']}/queries/resolve"
    assert monitor.post(answer, data={"query_id": q.id, "text": "x"}).status_code == 403
    # an empty answer is refused with a message, nothing saved
    page = text(inv.post(answer, data={"query_id": q.id, "text": " "}, follow_redirects=True))
    assert any("Answer: write a reply." in f for f in flashes(page)) and last_query(app).state == "open"
    assert inv.post(answer, data={"query_id": q.id, "text": "Recovering since day 3."}).status_code == 302
    assert last_query(app).state == "answered"
    # re-open needs a reply
    page = text(dm.post(resolve, data={"query_id": q.id, "action": "reopen", "text": ""}, follow_redirects=True))
    assert any("Reply: write a text." in f for f in flashes(page)) and last_query(app).state == "answered"
    assert (
        dm.post(resolve, data={"query_id": q.id, "action": "reopen", "text": "Which date exactly?"}).status_code == 302
    )
    assert last_query(app).state == "open"
    assert coord.post(answer, data={"query_id": q.id, "text": "2026-11-23."}).status_code == 302
    assert (
        monitor.post(resolve, data={"query_id": q.id, "action": "cancel", "text": "Raised in error"}).status_code == 302
    )
    assert last_query(app).state == "cancelled"
    # a cancelled query cannot be closed: a clear message, no 500
    page = text(monitor.post(resolve, data={"query_id": q.id, "action": "close"}, follow_redirects=True))
    assert any("A query that is cancelled cannot be closed." in f for f in flashes(page))
    with app.app_context():
        kinds = [
            m.kind
            for m in db.session.scalars(
                select(QueryMessage).where(QueryMessage.query_id == q.id).order_by(QueryMessage.id)
            )
        ]
    assert kinds == ["open", "answer", "reopen", "answer", "cancel"]


def test_a_query_of_another_sites_subject_is_404(app, login, hz):
    dm = login("dm")
    with app.app_context():
        nb = subject_by_number("NB-001")
        nb_id, nb_query = nb.id, db.session.scalars(select(Query).where(Query.subject_id == nb.id)).first().id
    # a query id of NB posted under an HZ subject
    assert (
        dm.post(f"/subjects/{hz['id']}/queries/resolve", data={"query_id": nb_query, "action": "close"}).status_code
        == 404
    )
    # a monitor of HZ does not see NB at all
    monitor = login("monitor-hz")
    assert (
        monitor.post(f"/subjects/{nb_id}/queries/resolve", data={"query_id": nb_query, "action": "close"}).status_code
        == 404
    )
    assert "NB-001" not in text(monitor.get("/queries?state=all"))
    assert "NB-001" in text(dm.get("/queries?state=all"))


def test_missing_data_and_empty_field_queries_are_kept(app, login, hz):
    monitor = login("monitor-hz")
    raise_query(monitor, hz["id"], "dlt_assessment:new", "", "Missing: the DLT form of the DLT window.")
    q = last_query(app)
    assert (q.form, q.form_id, q.field) == ("dlt_assessment", None, None)
    raise_query(monitor, hz["id"], f"adverse_event:{hz['aes']['Nausea']}", "comments", "Comments are empty: any?")
    assert last_query(app).field == "comments"
    page = text(monitor.get(f"/subjects/{hz['id']}/monitoring"))
    assert "Missing: the DLT form of the DLT window." in page and "missing data (form not yet recorded)" in page
    listing = text(monitor.get("/queries"))
    assert "Missing: the DLT form" in listing and "(missing data)" in listing
    # bad targets are refused with a message naming the field, nothing saved
    count = len(audit_rows(app, action="query_open"))
    page = text(
        monitor.post(
            f"/subjects/{hz['id']}/queries",
            follow_redirects=True,
            data={"target": f"adverse_event:{hz['aes']['Nausea']}", "field": "colour", "text": "?"},
        )
    )
    assert any("field: the adverse event has no field 'colour'." in f for f in flashes(page))
    page = text(
        monitor.post(f"/subjects/{hz['id']}/queries", follow_redirects=True, data={"target": "visit:new", "text": ""})
    )
    assert any("Query: write the question." in f for f in flashes(page))
    assert (
        monitor.post(f"/subjects/{hz['id']}/queries", data={"target": "adverse_event:999999", "text": "x"}).status_code
        == 404
    )
    assert len(audit_rows(app, action="query_open")) == count


def test_the_monitors_list_sorts_by_age_and_filters(app, login, hz):
    monitor = login("monitor-hz")
    raise_query(monitor, hz["id"], "visit:new", "", "A newer query, backdated to be the oldest.")
    newest = last_query(app).id
    with app.app_context():
        db.session.get(Query, newest).created_at -= timedelta(days=40)
        db.session.commit()
    page = text(monitor.get("/queries"))
    rows = re.findall(r'<tr><td>(\d+)</td><td class="num">(\d+)</td>', page)
    assert rows[0] == (str(newest), "40")  # the oldest first, with its days open
    ages = [int(age) for _, age in rows]
    assert ages == sorted(ages, reverse=True) and len(rows) >= 3
    by_id = [
        int(i)
        for i, _ in re.findall(r'<tr><td>(\d+)</td><td class="num">(\d+)</td>', text(monitor.get("/queries?order=new")))
    ]
    assert by_id == sorted(by_id, reverse=True) and by_id[0] == newest
    assert "answered" in text(monitor.get("/queries?state=answered"))
    assert "No queries match." in text(monitor.get("/queries?state=closed&form=visit"))


# --- edit checks -----------------------------------------------------------------------------------


def visit_post(version, visit_date: str, **extra) -> dict:
    data = {
        "version": str(version),
        "visit_date": visit_date,
        "temp_c": "36.9",
        "hr": "76",
        "sbp": "118",
        "dbp": "74",
        "spo2": "97",
        "ecog": "1",
        "anc": "0.9",
        "platelets": "61",
        "response": "not_assessed",
        "complete": "1",
        **extra,
    }
    return data


def test_implausible_values_open_a_system_query_and_a_correction_closes_it(app, login, hz):
    coord = login("coord-hz")
    vid = hz["visits"]["D3"]
    url = f"/subjects/{hz['id']}/visits/{vid}"
    with app.app_context():
        v = db.session.get(Visit, vid)
        version, target = v.version, v.data["visit_date"]
    response = coord.post(url, data=visit_post(version, target, alt="950", reason="ALT result arrived"))
    assert response.status_code == 302
    (q,) = [q for q in state_of(app, "visit", vid)["open_queries"] if q[1] == "alt"]
    with app.app_context():
        query = db.session.get(Query, q[0])
        assert query.origin == "system" and query.rule == "alt_uln" and "ALT 950 is more than 20 x" in query.text
    # a save of another field leaves it open; correcting the value closes it with a note
    with app.app_context():
        version = db.session.get(Visit, vid).version
    assert coord.post(url, data=visit_post(version, target, alt="950", hr="80", reason="HR")).status_code == 302
    assert [x for x in state_of(app, "visit", vid)["open_queries"] if x[1] == "alt"]
    with app.app_context():
        version = db.session.get(Visit, vid).version
    assert (
        coord.post(url, data=visit_post(version, target, alt="95", hr="80", reason="Typo: 95 U/L")).status_code == 302
    )
    assert not [x for x in state_of(app, "visit", vid)["open_queries"] if x[1] == "alt"]
    with app.app_context():
        query = db.session.get(Query, q[0])
        assert query.state == "closed" and query.close_note == "Closed by the system: the value was corrected (now 95)."
    # a visit dated outside its window
    with app.app_context():
        v = db.session.get(Visit, vid)
        version, outside = v.version, (v.earliest - timedelta(days=1)).isoformat()
    assert (
        coord.post(url, data=visit_post(version, outside, alt="95", hr="80", reason="Seen a day early")).status_code
        == 302
    )
    assert [x for x in state_of(app, "visit", vid)["open_queries"] if x[1] == "visit_date"]


# --- SDV -------------------------------------------------------------------------------------------


def test_sdv_of_a_form_fields_and_a_visit_and_who_may(app, login, hz):
    monitor, coord, dm = login("monitor-hz"), login("coord-hz"), login("dm")
    nausea = hz["aes"]["Nausea"]
    verify = f"/subjects/{hz['id']}/verify"
    assert state_of(app, "adverse_event", nausea)["sdv"] == "not verified"
    for who in (coord, dm):
        assert who.post(verify, data={"target": f"adverse_event:{nausea}"}).status_code == 403
    assert (
        monitor.post(verify, data={"target": f"adverse_event:{nausea}", "fields": ["term", "grade"]}).status_code == 302
    )
    st = state_of(app, "adverse_event", nausea)
    assert st["sdv"] == "partly verified" and st["verified_fields"] == ["grade", "term"]
    assert monitor.post(verify, data={"target": f"adverse_event:{nausea}"}).status_code == 302
    st = state_of(app, "adverse_event", nausea)
    assert st["sdv"] == "verified"
    per_field = [r for r in audit_rows(app, form="adverse_event", form_id=nausea) if r["action"] == "sdv"]
    assert len(per_field) == len(st["verified_fields"]) and {r["user"] for r in per_field} == {"monitor-hz"}
    # a draft form cannot be verified
    with app.app_context():
        d7 = db.session.get(Visit, hz["visits"]["D7"])
        assert d7.status == "draft"
    page = text(monitor.post(verify, data={"target": f"visit:{hz['visits']['D7']}"}, follow_redirects=True))
    assert any("Only a completed form can be verified" in f for f in flashes(page))
    # SDV progress and what is left
    sdv = text(monitor.get("/sdv"))
    assert "Left to verify" in sdv and "AE 1: Cytokine release syndrome" in sdv
    assert "AE 3: Nausea" not in sdv.split("Left to verify")[1]
    only_screening = text(monitor.get("/sdv?form=screening"))
    assert "AE 1: Cytokine" not in only_screening.split("Left to verify")[1]


def test_bulk_sdv_of_a_visit(app, login, hz):
    monitor = login("monitor-hz")
    with app.app_context():
        marks = db.session.scalars(
            select(SdvMark).where(SdvMark.form == "visit", SdvMark.form_id == hz["visits"]["D1"])
        ).all()
        for mark in marks:  # start from an unverified D1
            db.session.delete(mark)
        db.session.commit()
    assert state_of(app, "visit", hz["visits"]["D1"])["sdv"] == "not verified"
    from cellstudy.adverse_events.models import CrsAssessment

    with app.app_context():
        d1 = db.session.get(Visit, hz["visits"]["D1"])
        same_day = db.session.scalars(
            select(CrsAssessment.id).where(
                CrsAssessment.subject_id == hz["id"],
                CrsAssessment.assessed_on == date.fromisoformat(d1.data["visit_date"]),
            )
        ).all()
        other_days = db.session.scalars(
            select(CrsAssessment.id).where(CrsAssessment.subject_id == hz["id"], CrsAssessment.id.not_in(same_day))
        ).all()
    assert same_day and other_days  # the demo's CRS of the day after infusion 1 is on D1
    assert state_of(app, "crs_assessment", same_day[0])["sdv"] == "not verified"
    assert monitor.post(f"/subjects/{hz['id']}/verify", data={"visit_id": hz["visits"]["D1"]}).status_code == 302
    assert state_of(app, "visit", hz["visits"]["D1"])["sdv"] == "verified"
    assert state_of(app, "crs_assessment", same_day[0])["sdv"] == "verified"
    assert {state_of(app, "crs_assessment", i)["sdv"] for i in other_days} == {"not verified"}


# --- signatures ------------------------------------------------------------------------------------


def test_signing_a_form_and_a_change_invalidates_it(app, login, hz):
    inv, coord, monitor = login("inv-hz"), login("coord-hz"), login("monitor-hz")
    nausea = hz["aes"]["Nausea"]
    sign = f"/subjects/{hz['id']}/sign"
    assert state_of(app, "adverse_event", nausea)["signature_needed"] is True
    assert "AE 3: Nausea" in text(inv.get("/signatures"))
    for who in (coord, monitor):
        assert who.post(sign, data={"target": f"adverse_event:{nausea}", "password": PW}).status_code == 403
    page = text(inv.post(sign, data={"target": f"adverse_event:{nausea}", "password": "wrong"}, follow_redirects=True))
    assert any("Password not accepted" in f for f in flashes(page))
    assert inv.post(sign, data={"target": f"adverse_event:{nausea}", "password": PW}).status_code == 302
    st = state_of(app, "adverse_event", nausea)
    assert st["signatures"] == ["Dr Wang Lei"] and st["signature_needed"] is False
    with app.app_context():
        sig = db.session.scalars(
            select(Signature).where(Signature.form == "adverse_event", Signature.form_id == nausea)
        ).one()
        assert sig.meaning == "I approve the data recorded on this form" and sig.signed_at is not None
    # casebook (issue 11: with queries open and AEs unsigned, only with the confirmation naming them)
    page = text(inv.get(f"/subjects/{hz['id']}/monitoring"))
    confirmation = re.search(r'name="confirm_outstanding" type="checkbox" value="([^"]*)"', page).group(1)
    assert (
        inv.post(sign, data={"target": "casebook", "password": PW, "confirm_outstanding": confirmation}).status_code
        == 302
    )
    assert "I approve this casebook" in text(inv.get(f"/subjects/{hz['id']}/monitoring"))
    # a change invalidates the form's and the casebook's signature, visibly
    assert (
        coord.post(
            f"/subjects/{hz['id']}/adverse-events/{nausea}",
            data=ae_form(app, nausea, comments="Antiemetic given", reason="added comment"),
        ).status_code
        == 302
    )
    st = state_of(app, "adverse_event", nausea)
    assert st["signatures"] == [] and st["signature_needed"] is True
    listing = text(inv.get("/signatures"))
    row = next(r for r in listing.split("<tr>") if "AE 3: Nausea" in r)
    assert "signature invalidated by a change" in row
    page = text(inv.get(f"/subjects/{hz['id']}/monitoring"))
    assert "casebook signature of Dr Wang Lei" in page and "was invalidated" in page
    unsign = [r for r in audit_rows(app, subject_id=hz["id"]) if r["action"] == "unsign"]
    assert {r["reason"] for r in unsign} >= {"added comment", "Adverse event changed"}


# --- locks -----------------------------------------------------------------------------------------


def test_form_subject_and_study_locks(app, login, hz):
    dm, coord, monitor = login("dm"), login("coord-hz"), login("monitor-hz")
    nausea = hz["aes"]["Nausea"]
    lock = f"/subjects/{hz['id']}/lock"
    for who in (coord, monitor):
        assert who.post(lock, data={"target": f"adverse_event:{nausea}"}).status_code == 403
    assert dm.post(lock, data={"target": f"adverse_event:{nausea}", "reason": "SAE reconciliation"}).status_code == 302
    assert state_of(app, "adverse_event", nausea)["locked"] is True
    page = text(coord.get(f"/subjects/{hz['id']}/adverse-events/{nausea}"))
    assert "Locked by Omar Haddad on " in page and "this form is locked (SAE reconciliation)" in page
    before = ae_row(app, nausea)
    page = text(
        coord.post(f"/subjects/{hz['id']}/adverse-events/{nausea}", data=ae_form(app, nausea, comments="x", reason="y"))
    )
    assert "This form was locked by" in page and "Locked data cannot be changed" in page
    assert ae_row(app, nausea) == before
    # the other AEs are not locked
    assert state_of(app, "adverse_event", hz["aes"]["Febrile neutropenia"])["locked"] is False
    # unlocking needs a reason
    with app.app_context():
        row = db.session.scalars(select(DataLock).where(DataLock.form_id == nausea)).one()
        row_id = row.id
    page = text(dm.post("/locks/unlock", data={"lock_id": row_id, "reason": ""}, follow_redirects=True))
    assert any("Reason for unlocking: write a text." in f for f in flashes(page))
    assert dm.post("/locks/unlock", data={"lock_id": row_id, "reason": "Reconciled"}).status_code == 302
    assert state_of(app, "adverse_event", nausea)["locked"] is False
    # the subject: no form of it can change, no new AE can be created
    assert dm.post(lock, data={"target": "subject", "reason": "Casebook frozen"}).status_code == 302
    vid = hz["visits"]["D3"]
    with app.app_context():
        v = db.session.get(Visit, vid)
        version, target = v.version, v.data["visit_date"]
    page = text(coord.post(f"/subjects/{hz['id']}/visits/{vid}", data=visit_post(version, target, hr="99", reason="r")))
    assert "This subject's data was locked" in page
    response = coord.post(
        f"/subjects/{hz['id']}/adverse-events/new",
        data={
            "version": "0",
            "term": "Nausea",
            "onset_date": day(-1),
            "ongoing": "yes",
            "grade": "1",
            "serious": "no",
            "related_nk": "possible",
            "related_ld": "unlikely",
            "expectedness": "expected",
            "action": "none",
            "outcome": "recovering",
            "complete": "1",
        },
    )
    assert "This subject's data was locked" in text(response)
    with app.app_context():
        assert db.session.scalar(
            select(AdverseEvent.id).where(AdverseEvent.subject_id == hz["id"]).order_by(AdverseEvent.id.desc()).limit(1)
        ) == max(hz["aes"].values())
    # the study: a new subject cannot be registered anywhere
    page = text(dm.post("/locks/study", data={"reason": "Database freeze"}, follow_redirects=True))
    assert any("Tick the confirmation to lock the whole study." in f for f in flashes(page))
    assert dm.post("/locks/study", data={"reason": "Database freeze", "confirm": "y"}).status_code == 302
    with app.app_context():
        count = db.session.query(Subject).count()
    response = login("coord-nb").post("/subjects/new", data={"site": "2"}, follow_redirects=True)
    assert "The whole study was locked" in text(response)
    with app.app_context():
        assert db.session.query(Subject).count() == count
    actions = [(r["action"], r["new"]) for r in audit_rows(app) if r["action"] in ("lock", "unlock")]
    assert [a for a, _ in actions] == ["lock", "unlock", "lock", "lock"]
    with app.app_context():
        assert audit.verify().ok


def test_a_monitor_and_a_data_manager_never_change_clinical_data(app, login, hz):
    nausea = hz["aes"]["Nausea"]
    for username in ("monitor-hz", "dm"):
        session = login(username)
        assert (
            session.post(
                f"/subjects/{hz['id']}/adverse-events/{nausea}", data=ae_form(app, nausea, comments="m", reason="m")
            ).status_code
            == 403
        )
        assert (
            session.post(f"/subjects/{hz['id']}/visits/{hz['visits']['D3']}", data=visit_post(9, day(-3))).status_code
            == 403
        )
        assert (
            session.post(f"/subjects/{hz['id']}/queries/answer", data={"query_id": 1, "text": "x"}).status_code == 403
        )
    assert ae_row(app, nausea)["data"].get("comments") is None


def test_pages_render_for_every_role(app, login, hz):
    for username in ("coord-hz", "inv-hz", "monitor-hz", "dm"):
        session = login(username)
        for url in (
            f"/subjects/{hz['id']}/monitoring",
            "/queries",
            "/sdv",
            "/signatures",
            f"/subjects/{hz['id']}/adverse-events/{hz['aes']['Febrile neutropenia']}",
            f"/subjects/{hz['id']}/visits/{hz['visits']['D1']}",
            f"/subjects/{hz['id']}/screening",
            f"/subjects/{hz['id']}/adverse-events/new",
        ):
            response = session.get(url)
            assert response.status_code == 200, (username, url)
            assert "Monitoring" in text(response) or not url.startswith("/subjects/")
    assert login("dm").get("/locks").status_code == 200


def test_the_sql_sdv_progress_agrees_with_record_state(app, login, hz):
    """sdv_rows (SQL, for lists and dashboards) and record_states (per record) agree."""
    from cellstudy.monitoring import state

    monitor = login("monitor-hz")
    monitor.post(
        f"/subjects/{hz['id']}/verify", data={"target": f"adverse_event:{hz['aes']['Nausea']}", "fields": ["term"]}
    )
    with app.app_context():
        from cellstudy.auth.policy import ALL_SITES

        rows = state.sdv_rows(ALL_SITES)
        states = state.record_states((form, fid) for form, fid, *_ in rows)
        verdicts = {
            (form, fid): ("verified" if done >= required else "partly verified" if done else "not verified")
            for form, fid, _s, _site, done, required in rows
        }
        assert verdicts == {key: st["sdv"] for key, st in states.items()}
        assert {"verified", "partly verified", "not verified"} <= set(verdicts.values())
        progress = state.sdv_progress(ALL_SITES)
        hz_site = db.session.get(Subject, hz["id"]).site_id
        assert progress[(hz_site, "infusion")] == (1, 1)


def test_the_lock_guard_covers_writes_outside_the_form_save(app, login, hz):
    """A lab-suggestion dismissal is written by its own service (not records.save): the
    flush guard refuses it too under a subject lock, with the lock message."""
    from cellstudy.adverse_events import service as aes
    from cellstudy.adverse_events.models import LabSuggestionDismissal

    with app.app_context():
        suggestion = aes.lab_suggestions(db.session.get(Subject, hz["id"]))[0]
    dm, coord = login("dm"), login("coord-hz")
    assert dm.post(f"/subjects/{hz['id']}/lock", data={"target": "subject", "reason": "frozen"}).status_code == 302
    data = {
        "visit_id": suggestion["visit_id"],
        "lab": suggestion["lab"],
        "grade": suggestion["grade"],
        "reason": "Known, expected after lymphodepletion",
    }
    page = text(coord.post(f"/subjects/{hz['id']}/lab-suggestions/dismiss", data=data, follow_redirects=True))
    assert any("This subject's data was locked" in f for f in flashes(page))
    with app.app_context():
        assert db.session.query(LabSuggestionDismissal).count() == 0
    with app.app_context():
        lock_id = db.session.scalars(select(DataLock.id)).one()
    assert dm.post("/locks/unlock", data={"lock_id": lock_id, "reason": "Query resolved"}).status_code == 302
    assert coord.post(f"/subjects/{hz['id']}/lab-suggestions/dismiss", data=data).status_code == 302
    with app.app_context():
        assert db.session.query(LabSuggestionDismissal).count() == 1


def test_the_sql_signature_list_agrees_with_record_state(app, login, hz):
    """signatures_needed (SQL, for the list) and record_states' signature_needed (the rule,
    per record) name the same forms, with a valid, an invalidated and no signature among them."""
    from cellstudy.auth.policy import ALL_SITES
    from cellstudy.monitoring import catalog, state

    inv, coord = login("inv-hz"), login("coord-hz")
    nausea, febrile = hz["aes"]["Nausea"], hz["aes"]["Febrile neutropenia"]
    sign = f"/subjects/{hz['id']}/sign"
    for ae in (nausea, febrile):
        assert inv.post(sign, data={"target": f"adverse_event:{ae}", "password": PW}).status_code == 302
    data = ae_form(app, nausea, comments="Antiemetic given", reason="added comment")
    assert coord.post(f"/subjects/{hz['id']}/adverse-events/{nausea}", data=data).status_code == 302
    with app.app_context():
        keys = [
            (name, rid)
            for name, ft in catalog.form_types().items()
            for rid in db.session.execute(select(ft.model.id)).scalars()
        ]
        states = state.record_states(keys)
        total, page, rows = state.signatures_needed(ALL_SITES, page=1, per_page=10_000)
        needed = {key: invalidated for key, _subject, invalidated in rows}
        assert set(needed) == {key for key, st in states.items() if st["signature_needed"]}
        assert total == len(needed) and page == 1
        assert needed[("adverse_event", nausea)] is True  # invalidated by the change
        assert ("adverse_event", febrile) not in needed  # validly signed
        # paged: pages of 2 in order make the whole list; a page past the end shows the last
        pages = [state.signatures_needed(ALL_SITES, page=p, per_page=2)[2] for p in range(1, -(-total // 2) + 1)]
        assert [key for chunk in pages for key, _, _ in chunk] == [key for key, _, _ in rows]
        assert state.signatures_needed(ALL_SITES, page=999, per_page=2)[1:] == (len(pages), pages[-1])


def test_the_sdv_page_is_paged_in_the_database(app, login, hz):
    """The SDV lists are counted and paged in SQL: pages in order make the whole list (subject
    label order), a page past the end shows the last, and the page links carry the filters."""
    from cellstudy.auth.policy import ALL_SITES
    from cellstudy.monitoring import state

    with app.app_context():
        total, _, everything = state.sdv_left(ALL_SITES, None, page=1, per_page=10_000)
        assert total == len(everything) > 3
        labels = [subject.label for _, subject in everything]
        assert labels == sorted(labels)
        pages = [state.sdv_left(ALL_SITES, None, page=p, per_page=3)[2] for p in range(1, -(-total // 3) + 1)]
        assert [key for chunk in pages for key, _ in chunk] == [key for key, _ in everything]
        assert state.sdv_left(ALL_SITES, None, page=10**6, per_page=3)[1:] == (len(pages), pages[-1])
        only = state.sdv_left(ALL_SITES, ["screening"], page=1, per_page=10_000)[2]
        assert only and {key[0] for key, _ in only} == {"screening"}
        # the page counts what is left from the progress it already has: the same totals
        progress = state.sdv_progress(ALL_SITES)
        for forms in (None, ["screening"], ["screening", "visit"], []):
            counted = state.sdv_left(ALL_SITES, forms, page=1, per_page=1)[0]
            assert state.sdv_left(ALL_SITES, forms, page=1, per_page=1, progress=progress)[0] == counted
        assert counted == 0 and state.sdv_left(ALL_SITES, None, page=1, per_page=1, progress=progress)[0] == total
        n_subjects, _, per_subject = state.sdv_by_subject(ALL_SITES, page=1, per_page=10_000)
        rows = state.sdv_rows(ALL_SITES)
        assert n_subjects == len({r[2] for r in rows})
        assert {s.id: (v, t) for s, v, t in per_subject} == {
            sid: (sum(r[4] >= r[5] for r in rows if r[2] == sid), sum(1 for r in rows if r[2] == sid))
            for sid in {r[2] for r in rows}
        }
    left = text(login("monitor-hz").get("/sdv?form=screening&page=abc")).split("Left to verify")[1]
    assert "Screening" in left and "AE " not in left  # a bad page number is the first page, filtered


def test_the_panel_offers_the_forms_own_unlock_under_every_lock_in_force(app, login, hz):
    """The panel reads the form's own lock from the page's lock in force where that answers it
    (issue 14): under a subject or study lock it still finds the form's lock behind them."""
    dm = login("dm")
    nausea = hz["aes"]["Nausea"]
    url = f"/subjects/{hz['id']}/adverse-events/{nausea}"

    def panel():
        page = text(dm.get(url))
        return "Unlock this form" in page, "Lock this form" in page

    assert panel() == (False, True)
    assert dm.post(f"/subjects/{hz['id']}/lock", data={"target": "subject", "reason": "frozen"}).status_code == 302
    assert panel() == (False, False)  # locked by the subject: nothing of the form's own to undo
    assert dm.post("/locks/study", data={"reason": "freeze", "confirm": "y"}).status_code == 302
    with app.app_context():
        for row in db.session.scalars(select(DataLock).where(DataLock.unlocked_at.is_(None))).all():
            assert dm.post("/locks/unlock", data={"lock_id": row.id, "reason": "r"}).status_code == 302
    assert (
        dm.post(f"/subjects/{hz['id']}/lock", data={"target": f"adverse_event:{nausea}", "reason": "SAE"}).status_code
        == 302
    )
    assert panel() == (True, False)
    assert dm.post(f"/subjects/{hz['id']}/lock", data={"target": "subject", "reason": "frozen"}).status_code == 302
    assert panel() == (True, False)  # the subject's lock is in force; the form's own lock is still offered
    assert dm.post("/locks/study", data={"reason": "freeze", "confirm": "y"}).status_code == 302
    assert panel() == (True, False)
