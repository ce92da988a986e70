"""Amendments as controlled changes (issue 11, item 6): proposed by the admin with a version
label, a reason and an effective date (a UTC date); in force only once an investigator
approves it with an e-signature and the date has arrived (at once, or by the due check:
the scheduled run, `flask study apply-due`, the start-up check); each form record keeps the
version it was saved under and its PDF prints it; an amendment of an eligibility rule lists,
then flags, the enrolled subjects whose signed decision it would change; settings are shown
by their labels with units.

The clock: the one clock (`cellstudy.timeutil`, the `clock` fixture) is moved by the
`moving_clock` fixture; every module and the scheduled run's thread read it."""

from __future__ import annotations

import html
import re
import threading
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from cellstudy import create_app
from cellstudy.amendments import service
from cellstudy.auth.models import User
from cellstudy.enrollment.models import EligibilityReview, Subject
from cellstudy.extensions import db
from cellstudy.settings.models import StudyAmendment
from cellstudy.records import service as records
from cellstudy.records.models import AuditRecord, Signature
from cellstudy.settings import SETTING_LABELS, current_study, editable_settings, setting_label, study_in_force
from cellstudy.study import STUDY
from tests.helpers import subject_by_number

PW = "cellstudy-demo"
ORIGINAL = STUDY.version
V2 = "2.0 (amendment 1)"


# --- helpers -----------------------------------------------------------------------------------


def today() -> date:
    import cellstudy.timeutil as timeutil

    return timeutil.utcnow().astimezone(timezone.utc).date()


def visible(response) -> str:
    """The page's text as a reader sees it (no tags, no attributes)."""
    body = response.get_data(as_text=True)
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def proposal(overrides=None, version=V2, reason="DSMB recommendation", effective=None) -> dict:
    data = {key: "" if value is None else str(value) for key, value, _ in editable_settings()}
    data.update(overrides or {})
    return {**data, "version": version, "reason": reason, "effective_date": (effective or today()).isoformat()}


def propose(login, overrides, **kw):
    response = login("admin").post("/admin/study", data=proposal(overrides, **kw))
    assert response.status_code == 302, visible(response)[:3000]
    return response


def pending_id(app) -> int:
    with app.app_context():
        return db.session.execute(select(StudyAmendment.id).where(StudyAmendment.status == "proposed")).scalar_one()


def approve(session, amendment_id, password=PW, confirm="y"):
    return session.post(
        "/amendments/approve", data={"amendment_id": str(amendment_id), "password": password, "confirm": confirm}
    )


def amendment(app, amendment_id) -> dict:
    with app.app_context():
        a = db.session.get(StudyAmendment, amendment_id)
        return {
            "status": a.status,
            "label": a.label,
            "in_force_at": a.in_force_at,
            "effective_date": a.effective_date,
            "signature_id": a.signature_id,
            "decided_by": a.decided_by.username if a.decided_by else None,
            "decision_reason": a.decision_reason,
            "base_id": a.base_id,
        }


def audit_of(app, amendment_id) -> list[tuple]:
    with app.app_context():
        rows = db.session.execute(
            select(AuditRecord)
            .where(AuditRecord.form == "study_amendment", AuditRecord.form_id == amendment_id)
            .order_by(AuditRecord.id)
        ).scalars()
        return [(r.action, r.username, r.field, r.old_value, r.new_value) for r in rows]


def in_force(app) -> tuple[str, object]:
    """(version, min interval) in force: read uncached and through the cached reader."""
    with app.test_request_context():
        fresh = study_in_force(db.session)
        cached = current_study()
        assert (fresh.version, fresh.regimen) == (cached.version, cached.regimen), "the cache serves a stale definition"
        return fresh.version, fresh.regimen.min_interval_days


def user(username):
    return db.session.execute(select(User).where(User.username == username)).scalar_one()


@pytest.fixture
def moving_clock(clock):
    """moving_clock(day, hh=0, mm=0, ss=1): pin the one clock to that UTC time (it stands still)."""

    def set_to(day: date, hh=0, mm=0, ss=1):
        clock.set(datetime.combine(day, time(hh, mm, ss), tzinfo=timezone.utc))

    return set_to


# --- propose, approve with an e-signature ----------------------------------------------------------


def test_a_proposal_changes_nothing_until_an_investigator_approves_it_with_an_e_signature(app, login):
    propose(login, {"regimen.min_interval_days": "7"}, reason="DSMB recommendation")
    aid = pending_id(app)
    assert amendment(app, aid)["status"] == "proposed"
    assert in_force(app) == (ORIGINAL, 6)  # awaiting approval: the definition in force is unchanged

    # the investigator's start page and the amendments page: the before and after of the setting
    inv = login("inv-hz")
    start = visible(inv.get("/"))
    assert "Amendments awaiting approval" in start and V2 in start
    assert "Minimum interval between infusions (days): 6 → 7" in start
    page = visible(inv.get("/amendments"))
    assert "Amendments awaiting approval" in page and "DSMB recommendation" in page and "Sign and approve" in page
    row = re.search(
        r'<tr data-key="regimen.min_interval_days">(.*?)</tr>', inv.get("/amendments").get_data(as_text=True), re.S
    ).group(1)
    assert "Minimum interval between infusions (days)" in row and ">6<" in row and "<strong>7</strong>" in row
    # no eligibility rule changes: no impact panel
    assert "would change the eligibility decision" not in page
    # a coordinator sees the proposal but has nothing to sign; nobody else's start page lists it
    assert "Sign and approve" not in visible(login("coord-hz").get("/amendments"))
    assert "Amendments awaiting approval" not in visible(login("coord-hz").get("/"))

    response = approve(inv, aid)
    assert response.status_code == 302
    assert "approved with your e-signature" in visible(inv.get("/amendments")) and "In force" in visible(
        inv.get("/amendments")
    )
    state = amendment(app, aid)
    assert state["status"] == "approved" and state["in_force_at"] is not None and state["decided_by"] == "inv-hz"
    assert in_force(app) == (V2, 7)
    with app.app_context():
        signature = db.session.get(Signature, state["signature_id"])
        assert (signature.printed_name, signature.meaning, signature.form, signature.form_id, signature.valid) == (
            user("inv-hz").full_name,
            service.MEANING,
            "study_amendment",
            aid,
            True,
        )
    trail = audit_of(app, aid)
    assert trail[:3] == [
        ("create", "admin", "version", None, V2),
        ("set", "admin", "effective_date", None, today().isoformat()),
        ("setting", "admin", "regimen.min_interval_days", "6", "7"),
    ]
    assert [t[:3] for t in trail[3:]] == [
        ("sign", "inv-hz", "signature"),
        ("status", "inv-hz", "status"),
        ("assign", "inv-hz", "in_force_at"),
    ]
    assert trail[4][3:] == ("proposed", "approved")
    # the admin's page and the nav name the version in force
    assert f"version {V2} in force" in visible(login("admin").get("/admin/study"))


def test_a_wrong_password_is_refused_recorded_and_changes_nothing(app, login):
    propose(login, {"regimen.min_interval_days": "7"})
    aid = pending_id(app)
    inv = login("inv-hz")
    response = approve(inv, aid, password="not-my-password")
    assert response.status_code == 200
    assert "Password not accepted: the signature was not applied." in visible(response)
    assert amendment(app, aid)["status"] == "proposed" and in_force(app) == (ORIGINAL, 6)
    assert [t[:2] for t in audit_of(app, aid)][-1] == ("sign_refused", "inv-hz")
    with app.app_context():
        assert user("inv-hz").failed_logins == 1
        assert (
            db.session.execute(select(func.count(Signature.id)).where(Signature.form == "study_amendment")).scalar()
            == 0
        )
    # the meaning must be accepted too
    response = approve(inv, aid, confirm="")
    assert response.status_code == 200 and "Tick the box to confirm the meaning" in visible(response)
    assert amendment(app, aid)["status"] == "proposed"


def test_the_admin_proposes_and_only_an_investigator_approves(app, login):
    assert login("coord-hz").post("/admin/study", data=proposal({"regimen.min_interval_days": "7"})).status_code == 403
    assert login("inv-hz").post("/admin/study", data=proposal({"regimen.min_interval_days": "7"})).status_code == 403
    propose(login, {"regimen.min_interval_days": "7"})
    aid = pending_id(app)
    for username in ("admin", "coord-hz", "monitor-hz", "dm"):
        assert approve(login(username), aid).status_code == 403, username
        assert (
            login(username).post("/amendments/reject", data={"amendment_id": aid, "reject-reason": "no"}).status_code
            == 403
        )
    assert (
        login("inv-hz")
        .post("/amendments/withdraw", data={"withdraw-amendment_id": aid, "withdraw-reason": "x"})
        .status_code
        == 403
    )
    for username in ("admin", "coord-hz", "inv-nb", "monitor-hz", "dm"):
        assert login(username).get("/amendments").status_code == 200
    assert amendment(app, aid)["status"] == "proposed"
    with app.app_context():  # the service refuses too, whoever calls it
        with pytest.raises(PermissionError):
            service.approve(aid, user=user("admin"), password=PW)
        with pytest.raises(PermissionError):
            service.propose({}, label="x", reason="x", effective_date=today(), user=user("inv-hz"))


def test_an_investigator_rejects_and_the_admin_withdraws_with_a_reason(app, login):
    propose(login, {"regimen.min_interval_days": "7"})
    aid = pending_id(app)
    inv = login("inv-nb")
    response = inv.post("/amendments/reject", data={"reject-amendment_id": aid, "reject-reason": ""})
    assert response.status_code == 200 and "Give the reason." in visible(response)
    response = inv.post(
        "/amendments/reject", data={"reject-amendment_id": aid, "reject-reason": "Not what the DSMB recommended"}
    )
    assert response.status_code == 302
    state = amendment(app, aid)
    assert (state["status"], state["decided_by"], state["decision_reason"]) == (
        "rejected",
        "inv-nb",
        "Not what the DSMB recommended",
    )
    assert audit_of(app, aid)[-1] == ("status", "inv-nb", "status", "proposed", "rejected")
    assert in_force(app) == (ORIGINAL, 6)
    # a decided amendment cannot be approved afterwards
    response = approve(login("inv-hz"), aid)
    assert response.status_code == 200 and "is rejected already: nothing was changed" in visible(response)

    propose(login, {"regimen.min_interval_days": "8"}, version="2.0 (amendment 1, second try)")
    second = pending_id(app)
    admin = login("admin")
    response = admin.post(
        "/amendments/withdraw", data={"withdraw-amendment_id": second, "withdraw-reason": "Typo in the interval"}
    )
    assert response.status_code == 302
    assert amendment(app, second)["status"] == "withdrawn" and in_force(app) == (ORIGINAL, 6)
    page = visible(admin.get("/amendments"))
    assert "Withdrawn by" in page and "Typo in the interval" in page
    assert "Rejected by" in page and "No amendment awaits approval." in page


def test_one_proposal_at_a_time_and_bad_input_is_refused_at_the_field(app, login, moving_clock):
    moving_clock(today(), 12)
    admin = login("admin")
    for value, message in (
        ("2026-13-45", "Effective date: enter the date as YYYY-MM-DD"),
        ("tomorrow", "Effective date: enter the date as YYYY-MM-DD"),
        ((today() - timedelta(days=1)).isoformat(), "has passed"),
    ):
        data = proposal({"regimen.min_interval_days": "7"})
        data["effective_date"] = value
        response = admin.post("/admin/study", data=data)
        assert response.status_code == 200 and message in visible(response), value
    response = admin.post(
        "/admin/study", data={**proposal({"toxicity_hold.crs_min_grade": "9", "eligibility.qtc_max_ms": "NaN"})}
    )
    assert response.status_code == 200
    page = visible(response)
    assert "Hold for CRS from grade (ASTCT grade): must be between 1 and 4" in page
    assert "Longest QTc (ms): 'NaN' is not a valid number" in page
    assert response.get_data(as_text=True).count('aria-invalid="true"') == 2
    response = admin.post("/admin/study", data=proposal({"regimen.min_interval_days": "7"}, version=ORIGINAL))
    assert "already used by an approved definition" in visible(response)
    with app.app_context():
        assert db.session.execute(select(StudyAmendment)).first() is None

    propose(login, {"regimen.min_interval_days": "7"})
    page = visible(admin.get("/admin/study"))
    assert f"Amendment {V2} awaits an investigator's approval" in page
    response = admin.post("/admin/study", data=proposal({"regimen.min_interval_days": "9"}, version="3.0"))
    assert response.status_code == 200 and "withdraw it before proposing another" in visible(response)
    # nonsense ids and empty posts are refused with a message, never a 500
    inv = login("inv-hz")
    for data in (
        {},
        {"amendment_id": "abc", "password": PW, "confirm": "y"},
        {"amendment_id": "999999", "password": PW, "confirm": "y"},
    ):
        response = inv.post("/amendments/approve", data=data)
        assert response.status_code == 200, data
        assert "Choose the amendment" in visible(response) or "There is no such amendment" in visible(response)
    assert admin.post("/amendments/withdraw", data={}).status_code == 200


# --- the effective date: the clock, the due check, the start-up check, the scheduled run ------------


def test_a_future_effective_date_comes_into_force_when_the_clock_reaches_it(app, login, moving_clock):
    start = today()
    moving_clock(start, 12)
    propose(login, {"regimen.min_interval_days": "7"}, effective=start + timedelta(days=3))
    aid = pending_id(app)
    assert approve(login("inv-hz"), aid).status_code == 302
    state = amendment(app, aid)
    assert state["status"] == "approved" and state["in_force_at"] is None
    assert "in force from " + (start + timedelta(days=3)).isoformat() in visible(login("inv-hz").get("/amendments"))
    assert in_force(app) == (ORIGINAL, 6)  # approved, not yet in force (and now cached)

    moving_clock(start + timedelta(days=2), 23, 59, 59)
    with app.app_context():
        assert service.apply_due() == []
    assert amendment(app, aid)["in_force_at"] is None and in_force(app) == (ORIGINAL, 6)

    # 00:00:01 UTC on the effective date: the cached reader does not serve the old definition
    moving_clock(start + timedelta(days=3))
    assert in_force(app) == (V2, 7)
    before = len(audit_of(app, aid))
    with app.app_context():
        assert [a.label for a in service.apply_due()] == [V2]
    state = amendment(app, aid)
    assert state["in_force_at"] is not None
    marks = audit_of(app, aid)[before:]
    assert len(marks) == 1 and marks[0][:3] == ("assign", "system", "in_force_at")  # audited, by the system
    # idempotent: a second check (this process or another) marks nothing and audits nothing
    with app.app_context():
        assert service.apply_due() == []
    result = app.test_cli_runner().invoke(args=["study", "apply-due"])
    assert result.exit_code == 0 and "No amendment is due." in result.output and V2 in result.output
    assert len(audit_of(app, aid)) == before + 1


def test_the_cli_and_the_start_up_check_bring_a_due_amendment_into_force_once(app, db_url, login, moving_clock):
    start = today()
    moving_clock(start, 12)
    propose(login, {"regimen.min_interval_days": "7"}, effective=start + timedelta(days=1))
    aid = pending_id(app)
    approve(login("inv-hz"), aid)
    moving_clock(start + timedelta(days=1), 0, 5)
    # a process starting now (a restart after the date passed) brings it into force at start-up
    restarted = create_app("test", {"SQLALCHEMY_DATABASE_URI": db_url, "WTF_CSRF_ENABLED": False})
    assert amendment(app, aid)["in_force_at"] is not None
    marks = [t for t in audit_of(app, aid) if t[2] == "in_force_at"]
    assert len(marks) == 1
    create_app("test", {"SQLALCHEMY_DATABASE_URI": db_url, "WTF_CSRF_ENABLED": False})  # again: nothing more
    result = restarted.test_cli_runner().invoke(args=["study", "apply-due"])
    assert result.exit_code == 0 and "No amendment is due." in result.output
    assert [t for t in audit_of(app, aid) if t[2] == "in_force_at"] == marks
    with restarted.app_context():
        db.session.remove()
        db.engine.dispose()


def test_concurrent_due_checks_mark_the_amendment_once(app, login, moving_clock):
    start = today()
    moving_clock(start, 12)
    propose(login, {"regimen.min_interval_days": "7"}, effective=start + timedelta(days=1))
    aid = pending_id(app)
    approve(login("inv-hz"), aid)
    moving_clock(start + timedelta(days=1))
    barrier = threading.Barrier(4)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(service.check_due(app))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(results) == [[], [], [], [V2]]
    assert len([t for t in audit_of(app, aid) if t[2] == "in_force_at"]) == 1


def test_the_scheduled_run_of_the_app_brings_it_into_force(db_url, login, moving_clock):
    app = create_app(
        "test",
        {
            "SQLALCHEMY_DATABASE_URI": db_url,
            "WTF_CSRF_ENABLED": False,
            "AMENDMENTS_SCHEDULER": True,
            "AMENDMENTS_CHECK_SECONDS": 0.05,
        },
    )
    try:
        from tests.conftest import Session

        start = today()
        moving_clock(start, 12)
        admin = Session(app, "admin")
        assert (
            admin.post(
                "/admin/study", data=proposal({"regimen.min_interval_days": "7"}, effective=start + timedelta(days=2))
            ).status_code
            == 302
        )
        aid = pending_id(app)
        assert approve(Session(app, "inv-hz"), aid).status_code == 302
        assert "cellstudy.amendments" in app.extensions  # started by the first request
        import time as _time

        _time.sleep(0.3)
        assert amendment(app, aid)["in_force_at"] is None
        moving_clock(start + timedelta(days=2))
        deadline = _time.monotonic() + 20
        while amendment(app, aid)["in_force_at"] is None and _time.monotonic() < deadline:
            _time.sleep(0.05)
        assert amendment(app, aid)["in_force_at"] is not None
        assert [t[1] for t in audit_of(app, aid) if t[2] == "in_force_at"] == ["system"]
    finally:
        service.stop_scheduler(app)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_tests_do_not_start_the_scheduler(app, login):
    login("coord-hz").get("/")
    assert "cellstudy.amendments" not in app.extensions


# --- every record keeps the version of its last save; its PDF prints it ------------------------------


def test_records_keep_the_version_in_force_at_their_last_save_and_their_pdf_prints_it(app, login):
    from tests.pdf.conftest import Pdf as read_pdf  # text extraction as tests/pdf do it

    with app.app_context():
        subject = subject_by_number("HZ-001")
        sid = subject.id
        first, second = sorted(subject.adverse_events, key=lambda a: a.id)[:2]
        first_id, second_id = first.id, second.id
        assert first.study_version == second.study_version == ORIGINAL  # the demo was saved under 1.0
    propose(login, {"regimen.min_interval_days": "7"})
    approve(login("inv-hz"), pending_id(app))
    with app.app_context():
        from cellstudy.adverse_events.models import AdverseEvent

        ae = db.session.get(AdverseEvent, first_id)
        records.save(
            ae,
            user=user("coord-hz"),
            changes={"comments": "Reviewed after amendment 1"},
            expected_version=ae.version,
            reason="correction",
        )
        assert db.session.get(AdverseEvent, first_id).study_version == V2
        assert db.session.get(AdverseEvent, second_id).study_version == ORIGINAL
    inv = login("inv-hz")
    saved_after = read_pdf(inv.get(f"/subjects/{sid}/aes/{first_id}.pdf").data)
    assert saved_after.has(f"Form version {V2}") and not saved_after.has(f"Form version {ORIGINAL}")
    saved_before = read_pdf(inv.get(f"/subjects/{sid}/aes/{second_id}.pdf").data)
    assert saved_before.has(f"Form version {ORIGINAL}") and not saved_before.has(V2)
    assert saved_before.has(f"Study definition version {ORIGINAL} (in force at the last save)")
    casebook = read_pdf(inv.get(f"/subjects/{sid}/casebook.pdf").data)
    assert casebook.has(f"Form version {V2}") and casebook.has(f"Form version {ORIGINAL}")
    saved_before.png("amendment_version_header")


def test_a_new_record_is_stamped_with_the_version_in_force(app, login):
    propose(login, {"regimen.min_interval_days": "7"})
    approve(login("inv-hz"), pending_id(app))
    coord = login("coord-hz")
    with app.app_context():
        sid = subject_by_number("HZ-001").id
    response = coord.post(
        f"/subjects/{sid}/exposures/new",
        data={
            "category": "systemic_steroid",
            "name": "Dexamethasone",
            "start_date": today().isoformat(),
            "last_date": today().isoformat(),
            "physiological_replacement": "y",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        from cellstudy.enrollment.models import Exposure

        newest = db.session.execute(select(Exposure).order_by(Exposure.id.desc()).limit(1)).scalar_one()
        assert newest.name == "Dexamethasone" and newest.study_version == V2


# --- labels with units --------------------------------------------------------------------------------


def test_every_setting_has_a_label_with_its_unit_used_by_the_screens_and_the_audit_viewer(app, login):
    assert set(SETTING_LABELS) == {key for key, _v, _t in editable_settings()}
    assert setting_label("regimen.sentinel_stagger_days") == "Sentinel stagger (days)"
    page = visible(login("admin").get("/admin/study"))
    for key in SETTING_LABELS:
        assert setting_label(key) in page, key
        assert key not in page, f"raw name {key} shown"
    assert "Eligibility (PROTOCOL 4.3)" in page and "Toxicity hold (PROTOCOL 5.2)" in page
    propose(login, {"regimen.sentinel_stagger_days": "3"})
    trail = visible(login("dm").get("/audit?form=study_amendment"))
    # the label, with the stored name beside it in small print (as for every field of the viewer)
    assert "Sentinel stagger (days) regimen.sentinel_stagger_days" in trail
    assert "Study amendment" in trail
    assert "Sentinel stagger (days): none → 3" in visible(login("inv-hz").get("/"))


# --- eligibility: the impact listed on the approval page, flagged when in force ----------------------


def test_an_eligibility_amendment_lists_then_flags_the_enrolled_subjects_it_affects(app, login):
    propose(login, {"eligibility.min_age_years": "60"}, reason="Older population only")
    aid = pending_id(app)
    inv = login("inv-hz")
    page = visible(inv.get("/amendments"))
    # HZ-001 and NB-001 (both born 1975) would now fail the age criterion
    assert "This amendment would change the eligibility decision of 2 enrolled subjects" in page
    assert "HZ-001" in page and "NB-001" not in page and "and 1 at other sites" in page
    assert re.search(r"HZ-001 HZ : .*?: pass → fail", page)
    with app.app_context():
        assert db.session.execute(select(func.count(EligibilityReview.id))).scalar() == 0  # listing writes nothing
    assert approve(inv, aid).status_code == 302
    with app.app_context():
        reviews = (
            db.session.execute(
                select(EligibilityReview)
                .where(EligibilityReview.cause == "amendment")
                .order_by(EligibilityReview.subject_id)
            )
            .scalars()
            .all()
        )
        assert [r.subject.label for r in reviews] == ["HZ-001", "NB-001"]
        assert all(V2 in r.detail and r.is_open for r in reviews)
        # nobody is un-enrolled
        assert {
            s.label: s.status
            for s in db.session.execute(select(Subject).where(Subject.subject_number.is_not(None))).scalars()
        } == {"HZ-001": "on_treatment", "NB-001": "enrolled"}


def test_an_eligibility_amendment_coming_into_force_by_the_due_check_flags_too(app, login, moving_clock):
    start = today()
    moving_clock(start, 12)
    propose(login, {"eligibility.min_age_years": "60"}, effective=start + timedelta(days=1))
    approve(login("inv-hz"), pending_id(app))
    with app.app_context():
        assert db.session.execute(select(func.count(EligibilityReview.id))).scalar() == 0
    moving_clock(start + timedelta(days=1))
    with app.app_context():
        service.apply_due()
        assert (
            db.session.execute(
                select(func.count(EligibilityReview.id)).where(EligibilityReview.cause == "amendment")
            ).scalar()
            == 2
        )


def test_a_setting_outside_eligibility_flags_nobody(app, login):
    propose(login, {"regimen.dlt_window_days": "35"})
    approve(login("inv-hz"), pending_id(app))
    with app.app_context():
        assert db.session.execute(select(func.count(EligibilityReview.id))).scalar() == 0


# --- the helper for tests and scripts; the migration of existing rows ---------------------------------


def test_amend_proposes_and_approves_in_one_call(app):
    from cellstudy.amendments.service import amend

    with app.app_context():
        study = amend(
            {"regimen.min_interval_days": "7"},
            version=V2,
            reason="test",
            user=user("admin"),
            approver=user("inv-nb"),
            password=PW,
        )
        assert (study.version, study.regimen.min_interval_days) == (V2, 7)
    assert in_force(app) == (V2, 7)


def test_the_migration_approves_existing_amendments_and_stamps_records_with_the_version_of_their_last_save(db_url):
    import os

    import sqlalchemy as sa
    from flask_migrate import downgrade, upgrade

    migrations = os.path.join(os.path.dirname(__file__), "..", "..", "migrations")
    legacy = sa.table(
        "study_amendment",
        sa.column("id", sa.Integer),
        sa.column("version", sa.String),
        sa.column("overrides", sa.JSON),
        sa.column("reason", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("created_by_id", sa.Integer),
    )
    ae = sa.table("adverse_event", sa.column("id", sa.Integer), sa.column("updated_at", sa.DateTime(timezone=True)))
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": db_url})
    try:
        with app.app_context():
            downgrade(directory=migrations, revision="0011")  # the schema before controlled amendments
            admin_id = db.session.execute(text("SELECT id FROM \"user\" WHERE username = 'admin'")).scalar()
            created = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
            db.session.execute(
                sa.insert(legacy).values(
                    version="1.1 (old click)",
                    reason="legacy",
                    created_at=created,
                    overrides={"regimen.min_interval_days": "7"},
                    created_by_id=admin_id,
                )
            )
            ids = db.session.execute(sa.select(ae.c.id).order_by(ae.c.id)).scalars().all()
            db.session.execute(sa.update(ae).where(ae.c.id == ids[0]).values(updated_at=created - timedelta(days=1)))
            db.session.execute(sa.update(ae).where(ae.c.id == ids[1]).values(updated_at=created + timedelta(days=1)))
            db.session.commit()
            upgrade(directory=migrations)
            row = db.session.execute(select(StudyAmendment)).scalar_one()
            assert (row.status, row.effective_date, row.base_id, row.signature_id) == (
                "approved",
                date(2026, 6, 1),
                None,
                None,
            )
            assert row.in_force_at is not None and row.in_force_at.replace(tzinfo=timezone.utc) == created
            versions = dict(db.session.execute(text("SELECT id, study_version FROM adverse_event")).all())
            assert versions[ids[0]] == ORIGINAL and versions[ids[1]] == "1.1 (old click)"
            assert study_in_force(db.session).version == "1.1 (old click)"
            db.session.remove()
    finally:
        with app.app_context():
            db.engine.dispose()
