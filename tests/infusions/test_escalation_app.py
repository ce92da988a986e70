"""DLT assessment and dose escalation through the web app (PROTOCOL 5.3, 6, 7; issue 3).

The demo has two subjects at DL1, both pending (HZ-001: infusion 1 given on T-6;
NB-001: infusion 1 scheduled on T+14); HZ-S002, HZ-S004 and NB-S003 are eligible and
await the investigator. T = date.today()."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.infusions import dose_levels
from cellstudy.infusions.models import Deviation, DltAssessment, EscalationReview
from cellstudy.records.models import Signature
from tests.helpers import subject_by_number
from tests.helpers import audit, errors, field_errors, sid_of
from tests.infusions.test_crfs_app import VITALS

PW = "cellstudy-demo"


# --- helpers -----------------------------------------------------------------------------


def day(n: int) -> date:
    return date.today() + timedelta(days=n)


def text(response) -> str:
    return html.unescape(response.data.decode())


def dlt_record(app, sid: int) -> dict | None:
    with app.app_context():
        r = db.session.execute(select(DltAssessment).where(DltAssessment.subject_id == sid)).scalar_one_or_none()
        if r is None:
            return None
        sigs = (
            db.session.execute(select(Signature).where(Signature.form == "dlt_assessment", Signature.form_id == r.id))
            .scalars()
            .all()
        )
        return {
            "id": r.id,
            "version": r.version,
            "status": r.status,
            "data": dict(r.data or {}),
            "signatures": [(s.printed_name, s.meaning, s.valid) for s in sigs],
        }


def counts(app) -> dict[str, tuple]:
    """(assigned, evaluable, dlt, pending, not evaluable) per dose level, from the service."""
    with app.app_context():
        return {
            row["level"]: (row["assigned"], row["evaluable"], row["dlt"], row["pending"], row["not_evaluable"])
            for row in dose_levels.escalation_counts()
        }


def decision(app) -> tuple[dict, tuple]:
    with app.app_context():
        return dose_levels.escalation_decision(), dose_levels.proposed_dose_level()


def page_counts(page: str, level: str) -> tuple[int, ...]:
    row = re.search(rf'<tr data-level="{level}">(.*?)</tr>', page, re.S).group(1)
    return tuple(int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row))


def page_decision(page: str) -> str:
    return re.sub(
        r"\s+", " ", re.sub(r"<[^>]+>", " ", re.search(r'<p id="decision">(.*?)</p>', page, re.S).group(1))
    ).strip()


def page_proposal(page: str) -> str:
    return re.search(r"Next subject's proposed dose level: <strong>(.*?)</strong>", page).group(1)


def dlt_post(app, sid, *, complete=False, password=None, **answers) -> dict:
    existing = dlt_record(app, sid)
    data = {"version": str(existing["version"] if existing else 0), **answers}
    data["complete" if complete else "save"] = "1"
    if password is not None:
        data["password"] = password
    return data


def enrol(app, login, number, level="DL1", reason=None):
    with app.app_context():
        subject = subject_by_number(number)
        sid, version = subject.id, subject.current_screening.version
    data = {"password": PW, "confirm": "y", "screening_version": str(version), "dose_level": level}
    if reason:
        data["dose_level_reason"] = reason
    return sid, login("inv-" + number[:2].lower()).post(f"/subjects/{sid}/enrol", data=data)


@pytest.fixture(autouse=True)
def clock(clock):
    """Pin the one clock (the sites' today) to T + n days (12:00 UTC: the same date in
    Hangzhou and Ningbo)."""

    def set_day(n: int) -> None:
        clock.set(datetime.combine(day(n), time(12, 0), tzinfo=timezone.utc))

    set_day(0)
    return set_day


def give_first_infusion(app, login, clock, number: str, on: date) -> None:
    """Schedule infusion 1 on `on` if needed and record it given on that day (site clock moved there)."""
    site = number[:2].lower()
    coord = login(f"coord-{site}")
    sid = sid_of(app, number)
    with app.app_context():
        existing = [i for i in subject_by_number(number).infusions if i.state == "scheduled"]
    if not existing:
        assert coord.post(f"/subjects/{sid}/infusions", data={"proposed_date": on.isoformat()}).status_code == 302
    with app.app_context():
        inf = next(i for i in subject_by_number(number).infusions if i.state == "scheduled")
        inf_id, version, planned = inf.id, inf.version, inf.planned_date
    assert planned == on
    clock((on - date.today()).days)
    response = coord.post(
        f"/subjects/{sid}/infusions/{inf_id}",
        data={
            "version": str(version),
            "administration_date": on.isoformat(),
            "start_time": "10:00",
            "stop_time": "10:30",
            "product_lot": "NK-LOT-7",
            "viability_percent": "91",
            "weight_kg": "70",
            "planned_cells": "100000000",
            "actual_cells": "100000000",
            "infusion_reaction": "no",
            "complete": "1",
            **VITALS,
        },
    )
    assert response.status_code == 302, text(response)[:3000]
    clock(0)


def sign_dlt(app, login, number, **answers):
    sid = sid_of(app, number)
    inv = login("inv-" + number[:2].lower())
    answers = answers or {"evaluable": "yes", "dlt": "no"}
    response = inv.post(f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password=PW, **answers))
    assert response.status_code == 302, text(response)[:3000]
    assert dlt_record(app, sid)["status"] == "complete"


# --- DLT assessment ------------------------------------------------------------------------


def test_the_dlt_assessment_opens_only_after_the_first_infusion_is_given(app, login):
    nb, hz = sid_of(app, "NB-001"), sid_of(app, "HZ-001")
    coord_nb = login("coord-nb")
    response = coord_nb.get(f"/subjects/{nb}/dlt", follow_redirects=True)
    assert "The DLT assessment opens once the first infusion is given." in text(response)
    response = coord_nb.post(f"/subjects/{nb}/dlt", data={"version": "0", "evaluable": "yes", "dlt": "no", "save": "1"})
    assert response.status_code == 302 and response.location.endswith(f"/subjects/{nb}")
    assert dlt_record(app, nb) is None
    assert "DLT window ends" not in text(coord_nb.get(f"/subjects/{nb}"))
    # HZ-001's infusion 1 was given on T-6: the window ends 28 days later
    coord_hz = login("coord-hz")
    assert f"DLT window ends {day(22).isoformat()}" in text(coord_hz.get(f"/subjects/{hz}"))
    page = text(coord_hz.get(f"/subjects/{hz}/dlt"))
    assert f"DLT window ends {day(22).isoformat()}" in page and 'name="evaluable"' in page
    assert dlt_record(app, hz) is None  # opening the form writes nothing


def test_a_coordinator_saves_a_draft_but_cannot_complete_the_dlt_assessment(app, login):
    sid = sid_of(app, "HZ-001")
    coord = login("coord-hz")
    response = coord.post(f"/subjects/{sid}/dlt", data=dlt_post(app, sid, evaluable="yes", dlt="no"))
    assert response.status_code == 302, text(response)[:3000]
    draft = dlt_record(app, sid)
    assert (draft["status"], draft["data"], draft["signatures"]) == ("draft", {"evaluable": True, "dlt": False}, [])
    trail = audit(app, form="dlt_assessment", form_id=draft["id"])
    assert trail[0]["action"] == "create" and trail[0]["username"] == "coord-hz"
    assert {(r["field"], r["new"]) for r in trail if r["action"] == "update"} == {("evaluable", "yes"), ("dlt", "no")}

    response = coord.post(
        f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password=PW, evaluable="yes", dlt="no")
    )
    page = text(response)
    assert response.status_code == 200
    assert "Only an investigator completes and signs the DLT assessment." in errors(page)
    after = dlt_record(app, sid)
    assert (after["status"], after["version"], after["signatures"]) == ("draft", draft["version"], [])
    assert counts(app)["DL1"] == (2, 0, 0, 2, 0)  # a draft counts for nothing


def test_the_investigator_completes_the_dlt_assessment_with_an_e_signature(app, login, clock):
    clock(23)  # HZ-001's DLT window (infusion 1 on T-6, 28 days) is completed
    sid = sid_of(app, "HZ-001")
    inv = login("inv-hz")
    page = text(inv.post(f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, evaluable="yes", dlt="no")))
    assert field_errors(page, "password") == ["The investigator signs the DLT assessment: enter your password."]
    assert dlt_record(app, sid) is None
    page = text(
        inv.post(
            f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password="guess", evaluable="yes", dlt="no")
        )
    )
    assert "Nothing was saved: Password not accepted: the signature was not applied." in page
    assert dlt_record(app, sid) is None
    assert [r["username"] for r in audit(app, subject_id=sid, action="sign_refused")] == ["inv-hz"]

    response = inv.post(
        f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password=PW, evaluable="yes", dlt="no")
    )
    assert response.status_code == 302, text(response)[:3000]
    signed = dlt_record(app, sid)
    assert signed["status"] == "complete" and signed["data"] == {"evaluable": True, "dlt": False}
    assert signed["signatures"] == [("Dr Wang Lei", dose_levels.DLT_MEANING, True)]
    (sign,) = audit(app, subject_id=sid, action="sign", form="dlt_assessment")
    assert sign["username"] == "inv-hz" and dose_levels.DLT_MEANING in sign["new"]
    # the escalation counts follow: HZ-001 evaluable, NB-001 still pending
    assert counts(app)["DL1"] == (2, 1, 0, 1, 0)
    page = text(login("monitor-hz").get("/escalation"))
    assert page_counts(page, "DL1") == (2, 1, 0, 1, 0)
    assert re.search(r"HZ-001</a></td>\s*<td colspan=\"4\">evaluable", page)


def test_a_refused_first_signature_shows_the_dlt_form_still_unsigned(app, login, clock):
    clock(23)
    sid = sid_of(app, "HZ-001")
    page = text(
        login("inv-hz").post(
            f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password="guess", evaluable="yes", dlt="no")
        )
    )
    assert "Password not accepted" in page and dlt_record(app, sid) is None
    assert 'class="badge s-complete"' not in page
    assert 'name="password"' in page and "Complete and sign" in page


def test_a_dlt_in_a_subject_not_evaluable_is_refused(app, login):
    sid = sid_of(app, "HZ-001")
    inv = login("inv-hz")
    page = text(
        inv.post(
            f"/subjects/{sid}/dlt",
            data=dlt_post(
                app,
                sid,
                complete=True,
                password=PW,
                evaluable="no",
                evaluable_reason="Withdrew",
                dlt="yes",
                dlt_description="Grade 4 neutropenia beyond day 28",
            ),
        )
    )
    assert field_errors(page, "evaluable") == ["A subject with a DLT is evaluable (PROTOCOL 5.3)."]
    page = text(
        inv.post(
            f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password=PW, evaluable="yes", dlt="yes")
        )
    )
    assert field_errors(page, "dlt_description") == ["Describe the DLT."]
    page = text(
        inv.post(f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password=PW, evaluable="no", dlt="no"))
    )
    assert field_errors(page, "evaluable_reason") == ["Give the reason the subject is not evaluable."]
    assert dlt_record(app, sid) is None
    assert not audit(app, subject_id=sid, action="sign", form="dlt_assessment")
    assert counts(app)["DL1"] == (2, 0, 0, 2, 0)


def test_a_signed_dlt_changes_the_counts_and_the_decision(app, login):
    sign_dlt(app, login, "HZ-001", evaluable="yes", dlt="yes", dlt_description="Grade 4 ICANS on day 9")
    assert counts(app)["DL1"] == (2, 1, 1, 1, 0)
    result, proposal = decision(app)
    # one DLT at DL1: the cohort is expanded to 6
    assert (result["decision"], result["level"]) == ("enrol", "DL1") and proposal[0] == "DL1"
    page = text(login("coord-hz").get("/escalation"))
    assert page_counts(page, "DL1") == (2, 1, 1, 1, 0) and page_decision(page) == "enrol DL1"
    assert re.search(r"HZ-001</a></td>\s*<td colspan=\"4\">DLT", page)


def test_a_not_evaluable_subject_is_neither_evaluable_nor_pending(app, login):
    sign_dlt(app, login, "HZ-001", evaluable="no", evaluable_reason="Withdrew consent on day 10", dlt="no")
    assert counts(app)["DL1"] == (2, 0, 0, 1, 1)
    assert page_counts(text(login("inv-hz").get("/escalation")), "DL1") == (2, 0, 0, 1, 1)


# --- dose escalation ------------------------------------------------------------------------


def test_with_the_demo_the_proposal_is_dl1(app, login):
    assert counts(app) == {"DL1": (2, 0, 0, 2, 0), "DL2": (0, 0, 0, 0, 0), "DL3": (0, 0, 0, 0, 0)}
    result, proposal = decision(app)
    assert (result["decision"], result["level"], result["mtd"]) == ("enrol", "DL1", None)
    assert proposal[0] == "DL1"
    page = text(login("coord-hz").get("/escalation"))
    assert page_decision(page) == "enrol DL1" and page_proposal(page) == "DL1"
    assert "HZ-001" in page and "NB-001" not in page  # other sites' subjects are counted, not named
    assert page_counts(page, "DL1") == (2, 0, 0, 2, 0)
    enrol_page = text(login("inv-hz").get(f"/subjects/{sid_of(app, 'HZ-S004')}/enrol"))
    assert re.search(r'<option selected value="DL1">|<option value="DL1" selected>', enrol_page)


def test_a_third_subject_at_dl1_makes_the_decision_wait_and_another_needs_a_dose_level_reason(app, login):
    sid3, response = enrol(app, login, "HZ-S004", "DL1")
    assert response.status_code == 302
    assert not [d for d in db_deviations(app) if d["subject_id"] == sid3]
    assert counts(app)["DL1"] == (3, 0, 0, 3, 0)
    result, proposal = decision(app)
    assert (result["decision"], result["level"]) == ("wait", None) and proposal[0] is None
    page = text(login("inv-hz").get("/escalation"))
    assert page_decision(page) == "wait" and page_proposal(page) == "none"

    sid4, response = enrol(app, login, "NB-S003", "DL1")
    page = text(response)
    assert response.status_code == 200
    assert any(
        "The proposed dose level is none" in e and "give a reason for assigning DL1" in e
        for e in field_errors(page, "dose_level_reason")
    )
    with app.app_context():
        subject = db.session.get(Subject, sid4)
        assert (subject.status, subject.subject_number, subject.dose_level) == ("screening", None, None)

    sid4, response = enrol(app, login, "NB-S003", "DL1", reason="Sponsor agreed a fourth subject at DL1")
    assert response.status_code == 302, text(response)[:3000]
    with app.app_context():
        subject = db.session.get(Subject, sid4)
        assert (subject.status, subject.dose_level) == ("enrolled", "DL1")
    (dev,) = [d for d in db_deviations(app) if d["subject_id"] == sid4]
    assert (dev["kind"], dev["reason"]) == ("dose_level_assignment", "Sponsor agreed a fourth subject at DL1")
    assert "Assigned DL1; the escalation rule proposed no level" in dev["description"]
    (assign,) = [r for r in audit(app, subject_id=sid4) if r["field"] == "dose_level"]
    assert (assign["action"], assign["new"], assign["reason"], assign["username"]) == (
        "assign",
        "DL1",
        "Sponsor agreed a fourth subject at DL1",
        "inv-nb",
    )
    page = text(login("inv-nb").get("/deviations"))
    assert "dose level assignment" in page and "Sponsor agreed a fourth subject at DL1" in page


def db_deviations(app) -> list[dict]:
    with app.app_context():
        return [
            {"subject_id": d.subject_id, "kind": d.kind, "reason": d.reason, "description": d.description}
            for d in db.session.execute(select(Deviation).order_by(Deviation.id)).scalars()
        ]


def test_only_an_investigator_signs_the_escalation_review(app, login):
    assert login("coord-hz").post("/escalation", data={"password": PW, "confirm": "y"}).status_code == 403
    assert login("monitor-hz").post("/escalation", data={"password": PW, "confirm": "y"}).status_code == 403
    page = text(login("coord-hz").get("/escalation"))
    assert "Sign the dose-escalation review" not in page
    response = login("inv-hz").post("/escalation", data={"password": PW})  # the meaning not confirmed
    assert response.status_code == 200 and "Tick the box to confirm the meaning of your signature." in text(response)
    with app.app_context():
        assert db.session.execute(select(EscalationReview)).first() is None


def test_signing_the_escalation_review_records_it_with_the_signature(app, login):
    inv = login("inv-hz")
    response = inv.post("/escalation", data={"password": PW, "confirm": "y", "comment": "Cohort 1 on track"})
    assert response.status_code == 302
    with app.app_context():
        (review,) = db.session.execute(select(EscalationReview)).scalars().all()
        assert (review.decision, review.level, review.comment) == ("enrol", "DL1", "Cohort 1 on track")
        assert review.counts[0] == {"level": "DL1", "evaluable": 0, "dlt": 0, "pending": 2}
        assert (review.signature.printed_name, review.signature.meaning, review.signature.valid) == (
            "Dr Wang Lei",
            dose_levels.REVIEW_MEANING,
            True,
        )
    (sign,) = audit(app, action="sign", form="escalation_review")
    assert sign["username"] == "inv-hz" and dose_levels.REVIEW_MEANING in sign["new"]
    assert "Dr Wang Lei" in text(inv.get("/escalation")).split("<h3>Reviews</h3>")[1]


def three_evaluable_at_dl1(app, login, clock):
    """HZ-001, NB-001 and HZ-002 (HZ-S004) at DL1, each with infusion 1 given and a signed
    DLT assessment without DLT: 3 evaluable, none pending."""
    sid, response = enrol(app, login, "HZ-S004", "DL1")
    assert response.status_code == 302
    give_first_infusion(app, login, clock, "NB-001", day(14))
    give_first_infusion(app, login, clock, "HZ-002", day(14))
    clock(43)  # every DLT window (the last ends on T+42) is completed
    for number in ("HZ-001", "NB-001", "HZ-002"):
        sign_dlt(app, login, number)
    assert counts(app)["DL1"] == (3, 3, 0, 0, 0)


def test_an_escalation_does_not_open_the_next_level_before_the_review_is_signed(app, login, clock):
    three_evaluable_at_dl1(app, login, clock)
    result, proposal = decision(app)
    assert (result["decision"], result["level"]) == ("escalate", "DL2")
    assert proposal[0] is None and "opens when the dose-escalation review is signed" in proposal[1]
    page = text(login("inv-hz").get("/escalation"))
    assert page_decision(page) == "escalate DL2" and page_proposal(page) == "none"
    sid, response = enrol(app, login, "HZ-S002", "DL2")
    assert response.status_code == 200
    assert any("The proposed dose level is none" in e for e in field_errors(text(response), "dose_level_reason"))
    with app.app_context():
        assert db.session.get(Subject, sid).status == "screening"


def test_a_signed_escalate_review_opens_the_next_level(app, login, clock):
    three_evaluable_at_dl1(app, login, clock)
    response = login("inv-hz").post("/escalation", data={"password": PW, "confirm": "y"})
    assert response.status_code == 302
    with app.app_context():
        (review,) = db.session.execute(select(EscalationReview)).scalars().all()
        assert (review.decision, review.level, review.signature.printed_name) == ("escalate", "DL2", "Dr Wang Lei")
    result, proposal = decision(app)
    assert proposal[0] == "DL2" and "(review signed)" in proposal[1]
    sid, response = enrol(app, login, "HZ-S002", "DL2")
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Subject, sid).dose_level == "DL2"
    assert not [d for d in db_deviations(app) if d["subject_id"] == sid]
    assert counts(app)["DL2"] == (1, 0, 0, 1, 0)


def test_a_subject_without_dlt_is_not_evaluable_before_the_window_ends(app, login, clock):
    """PROTOCOL 5.3: evaluable = completed the DLT window or had a DLT."""
    sid = sid_of(app, "HZ-001")  # infusion 1 on T-6: the window ends on T+22
    clock(21)
    inv = login("inv-hz")
    page = text(
        inv.post(f"/subjects/{sid}/dlt", data=dlt_post(app, sid, complete=True, password=PW, evaluable="yes", dlt="no"))
    )
    assert f"The DLT window ends on {day(22).isoformat()}" in page
    assert dlt_record(app, sid) is None and counts(app)["DL1"] == (2, 0, 0, 2, 0)
    # a DLT makes the subject evaluable at once
    sign_dlt(app, login, "HZ-001", evaluable="yes", dlt="yes", dlt_description="Grade 4 ICANS on day 9")
    assert counts(app)["DL1"] == (2, 1, 1, 1, 0)
