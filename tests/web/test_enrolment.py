"""Enrolment by investigator e-signature, screen failure and re-screening (PROTOCOL 3, 4, 7)."""

from sqlalchemy import select

from cellstudy.auth.models import User
from cellstudy.enrollment.models import EligibilityDecision, Subject
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord, Signature
from cellstudy.study import STUDY
from tests.helpers import new_subject, screening_post, subject_by_number

MEANING = "I confirm this subject meets all eligibility criteria"


def _enrol_form(app, number):
    with app.app_context():
        subject = subject_by_number(number)
        return subject.id, subject.current_screening.version


def test_investigator_enrols_an_eligible_subject_with_an_e_signature(app, login):
    sid, version = _enrol_form(app, "HZ-S004")
    inv = login("inv-hz")
    page = inv.get(f"/subjects/{sid}/enrol").data.decode()
    assert MEANING in page and "Dr Wang Lei" in page
    response = inv.post(
        f"/subjects/{sid}/enrol",
        data={"password": "cellstudy-demo", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"},
    )
    assert response.status_code == 302
    with app.app_context():
        subject = db.session.get(Subject, sid)
        assert subject.status == "enrolled" and subject.subject_number == "HZ-002"
        decision = subject.enrolment_decision
        assert decision.eligible == "true" and decision.study_version == STUDY.version
        assert decision.screening_version == version
        assert set(decision.criteria) == {
            code for code, _ in __import__("cellstudy.enrollment.eligibility", fromlist=["CRITERIA"]).CRITERIA
        }
        assert all(c["status"] == "pass" and c["reason"] for c in decision.criteria.values())
        assert (
            decision.inputs["alt"] == "38" and decision.inputs["prior_therapies"][0]["category"] == "systemic_antitumor"
        )
        signature = decision.signature
        assert (signature.printed_name, signature.meaning, signature.valid) == ("Dr Wang Lei", MEANING, True)
        assert signature.signed_at is not None
        actions = {
            r.action for r in db.session.execute(select(AuditRecord).where(AuditRecord.subject_id == sid)).scalars()
        }
        assert {"sign", "assign", "status"} <= actions
    page = inv.get(f"/subjects/{sid}").data.decode()
    assert "HZ-002" in page and "Signed by <strong>Dr Wang Lei</strong>" in page


def test_wrong_password_does_not_enrol_and_counts_toward_the_lock(app, login):
    sid, version = _enrol_form(app, "HZ-S004")
    inv = login("inv-hz")
    response = inv.post(
        f"/subjects/{sid}/enrol",
        data={"password": "guess", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"},
    )
    assert response.status_code == 200 and b"Password not accepted" in response.data
    with app.app_context():
        assert db.session.get(Subject, sid).status == "screening"
        assert db.session.execute(select(Signature).where(Signature.subject_id == sid)).first() is None
        assert db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one().failed_logins == 1


def test_the_meaning_must_be_confirmed(app, login):
    sid, version = _enrol_form(app, "HZ-S004")
    response = login("inv-hz").post(
        f"/subjects/{sid}/enrol",
        data={"password": "cellstudy-demo", "screening_version": str(version), "dose_level": "DL1"},
    )
    assert response.status_code == 200 and b"Tick the box" in response.data
    with app.app_context():
        assert db.session.get(Subject, sid).status == "screening"


def test_a_subject_that_is_not_eligible_cannot_be_enrolled(app, login):
    coord, inv = login("coord-hz"), login("inv-hz")
    sid = new_subject(coord)
    coord.post(f"/subjects/{sid}/screening", data=screening_post(1, {"dsa_mfi": "2000.1"}, complete=True))
    page = inv.get(f"/subjects/{sid}/enrol").data.decode()
    assert "At least one eligibility criterion fails." in page and 'name="password"' not in page
    with app.app_context():
        version = db.session.get(Subject, sid).current_screening.version
    response = inv.post(
        f"/subjects/{sid}/enrol",
        data={"password": "cellstudy-demo", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"},
    )
    assert response.status_code == 200
    with app.app_context():
        assert db.session.get(Subject, sid).status == "screening"


def test_a_draft_form_cannot_be_enrolled_even_when_every_criterion_passes(app, login):
    coord, inv = login("coord-hz"), login("inv-hz")
    sid = new_subject(coord)
    coord.post(f"/subjects/{sid}/screening", data=screening_post(1))
    page = inv.get(f"/subjects/{sid}/enrol").data.decode()
    assert "The screening form is not marked complete." in page


def test_the_investigator_signs_the_version_they_saw(app, login):
    sid, version = _enrol_form(app, "HZ-S004")
    coord, inv = login("coord-hz"), login("inv-hz")
    coord.post(
        f"/subjects/{sid}/screening",
        data=screening_post(version, {"weight_kg": "63"}, complete=True, reason="re-weighed"),
    )
    response = inv.post(
        f"/subjects/{sid}/enrol",
        data={"password": "cellstudy-demo", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"},
    )
    assert response.status_code == 200 and b"since you opened it" in response.data
    with app.app_context():
        assert db.session.get(Subject, sid).status == "screening"


def test_a_coordinator_cannot_enrol(app, login):
    sid, version = _enrol_form(app, "HZ-S004")
    coord = login("coord-hz")
    assert coord.get(f"/subjects/{sid}/enrol").status_code == 403
    assert (
        coord.post(
            f"/subjects/{sid}/enrol",
            data={"password": "cellstudy-demo", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"},
        ).status_code
        == 403
    )


def test_a_change_after_enrolment_rechecks_and_warns_without_unenrolling(app, login):
    with app.app_context():
        subject = subject_by_number("HZ-001")
        sid, version = subject.id, subject.current_screening.version
    coord = login("coord-hz")
    assert "eligibility-warning" not in coord.get(f"/subjects/{sid}").data.decode()
    response = coord.post(
        f"/subjects/{sid}/screening",
        data=screening_post(version, {"ecog": "2"}, complete=True, reason="ECOG re-assessed by the investigator"),
    )
    assert response.status_code == 302
    page = coord.get(f"/subjects/{sid}").data.decode()
    assert 'id="eligibility-warning"' in page and "ecog" in page
    assert "signature invalidated" in page
    with app.app_context():
        subject = db.session.get(Subject, sid)
        assert subject.status == "on_treatment"
        assert subject.enrolment_decision.signature.valid is False
        assert subject.enrolment_decision.criteria["ecog"]["status"] == "pass"  # kept as signed


def test_screen_failure_records_the_failing_criteria_from_the_checker(app, login):
    coord = login("coord-hz")
    sid = new_subject(coord)
    coord.post(f"/subjects/{sid}/screening", data=screening_post(1, {"alt": "130", "qtc_ms": "481"}))
    assert coord.post(f"/subjects/{sid}/screen-fail", data={"note": "not eligible"}).status_code == 302
    with app.app_context():
        subject = db.session.get(Subject, sid)
        assert subject.status == "screen_failed"
        decision = db.session.execute(
            select(EligibilityDecision).where(EligibilityDecision.subject_id == sid)
        ).scalar_one()
        assert decision.outcome == "screen_failed" and decision.failed_criteria == ["transaminases", "cardiovascular"]
        assert decision.eligible == "false"


def test_screen_failure_is_refused_without_a_failing_criterion(app, login):
    coord = login("coord-hz")
    sid = new_subject(coord)
    coord.post(f"/subjects/{sid}/screening", data=screening_post(1))
    response = coord.post(f"/subjects/{sid}/screen-fail", data={}, follow_redirects=True)
    assert b"needs at least one failing criterion" in response.data
    with app.app_context():
        assert db.session.get(Subject, sid).status == "screening"


def test_rescreening_creates_a_linked_screening_record(app, login):
    coord = login("coord-hz")
    with app.app_context():
        sid = subject_by_number("HZ-S003").id  # a demo screen failure (ALT)
    assert coord.post(f"/subjects/{sid}/rescreen", data={"reason": ""}).status_code == 302
    with app.app_context():
        assert len(db.session.get(Subject, sid).screenings) == 1
    assert coord.post(f"/subjects/{sid}/rescreen", data={"reason": "ALT normalised"}).status_code == 302
    with app.app_context():
        subject = db.session.get(Subject, sid)
        first, second = subject.screenings
        assert subject.status == "screening"
        assert second.attempt == 2 and second.previous_id == first.id and second.status == "draft"
        assert set(second.data) == {"date_of_birth", "sex"}
        assert first.status == "complete" and first.data["alt"] == "130"  # the earlier record is kept
        assert subject.decisions[0].outcome == "screen_failed"
    page = coord.get(f"/subjects/{sid}").data.decode()
    assert "attempt 2" in page and "re-screen of attempt 1" in page


def test_subject_numbers_are_sequential_per_site_and_never_reused(app, login):
    inv_nb = login("inv-nb")
    with app.app_context():
        sid, version = subject_by_number("NB-S003").id, subject_by_number("NB-S003").current_screening.version
    inv_nb.post(
        f"/subjects/{sid}/enrol",
        data={"password": "cellstudy-demo", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"},
    )
    with app.app_context():
        assert db.session.get(Subject, sid).subject_number == "NB-002"
        numbers = (
            db.session.execute(select(Subject.subject_number).where(Subject.subject_number.is_not(None)))
            .scalars()
            .all()
        )
        assert len(numbers) == len(set(numbers))


def test_wrong_signature_passwords_are_audited_and_the_lock_ends_the_session(app, login):
    sid, version = _enrol_form(app, "HZ-S004")
    inv = login("inv-hz")
    form = {"password": "guess", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"}
    for attempt in range(1, 5):
        response = inv.post(f"/subjects/{sid}/enrol", data=form)
        assert f"{5 - attempt} more wrong password".encode() in response.data
    response = inv.post(f"/subjects/{sid}/enrol", data=form)
    assert b"your account is now locked for 15 minutes" in response.data
    # the next request of the still-open session is logged out
    response = inv.get(f"/subjects/{sid}")
    assert response.status_code == 302 and "/login" in response.location
    assert inv.get("/subjects/").status_code == 302
    with app.app_context():
        refused = (
            db.session.execute(
                select(AuditRecord).where(AuditRecord.subject_id == sid, AuditRecord.action == "sign_refused")
            )
            .scalars()
            .all()
        )
        assert len(refused) == 5 and all(r.username == "inv-hz" for r in refused)
        assert db.session.get(Subject, sid).status == "screening"


def test_not_in_future_uses_the_site_date(app, login, clock):
    """At 01:00 in Hangzhou (17:00 UTC the day before) today's local date is accepted."""
    from datetime import datetime, timezone

    clock.set(datetime(2026, 3, 9, 17, 0, tzinfo=timezone.utc))  # 2026-03-10 01:00 in Asia/Shanghai
    coord = login("coord-hz")
    sid = new_subject(coord)
    response = coord.post(
        f"/subjects/{sid}/screening", data={"version": "1", "save": "1", "screening_date": "2026-03-10"}
    )
    assert response.status_code == 302
    response = coord.post(
        f"/subjects/{sid}/screening", data={"version": "2", "save": "1", "screening_date": "2026-03-11"}
    )
    assert b"cannot be in the future" in response.data
