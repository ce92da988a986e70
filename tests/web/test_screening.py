"""The screening CRF: drafts, validation at the field, completion, reasons for change,
optimistic locking and the eligibility panel (issue 2, PROTOCOL 4 and 7)."""

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from cellstudy.enrollment.models import Exposure, Screening, Subject
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord
from tests.helpers import new_subject, screening_post


def _screening(app, subject_id) -> Screening:
    with app.app_context():
        s = db.session.get(Subject, subject_id).current_screening
        db.session.expunge_all()
        return s


def test_registration_gives_site_prefixed_screening_numbers_in_sequence(app, login):
    s = login("coord-hz")
    first, second = new_subject(s), new_subject(s)
    with app.app_context():
        numbers = [db.session.get(Subject, i).screening_number for i in (first, second)]
        assert numbers == ["HZ-S008", "HZ-S009"]  # the demo used HZ-S001..S007
        assert db.session.get(Subject, first).status == "screening"
        created = (
            db.session.execute(
                select(AuditRecord).where(AuditRecord.subject_id == first, AuditRecord.action == "create")
            )
            .scalars()
            .all()
        )
        assert {r.form for r in created} == {"subject", "screening"}


def test_coordinator_cannot_register_at_another_site(app, login):
    s = login("coord-hz")
    response = s.post("/subjects/new", data={"site": "2"})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subject).where(Subject.site_id == 2)) == 5


def test_draft_with_missing_values_is_saved_and_panel_shows_missing(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    data = {"version": "1", "save": "1", "ecog": "1", "screening_date": date.today().isoformat()}
    response = s.post(f"/subjects/{sid}/screening", data=data)
    assert response.status_code == 302
    page = s.get(response.location).data.decode()
    assert 'data-code="ecog" data-status="pass"' in page
    assert 'data-code="age" data-status="missing"' in page
    screening = _screening(app, sid)
    assert screening.status == "draft" and screening.data == {"ecog": 1, "screening_date": date.today().isoformat()}


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("ecog", "one", "ECOG performance status: enter a whole number"),
        ("ecog", "7", "between 0 and 5"),
        ("nyha_class", "0", "between 1 and 4"),
        ("alt", "-3", "at least 0"),
        ("lvef_percent", "101", "between 0 and 100"),
        ("creatinine_uln", "0", "greater than zero"),
        ("weight_kg", "sixty", "Weight: enter a number written with digits"),
        ("screening_date", "2026-02-30", "Not a valid date value"),
        ("icf_signed_date", (date.today() + timedelta(days=3)).isoformat(), "cannot be in the future"),
        ("sex", "X", "Not a valid choice"),
        ("apl", "maybe", "Not a valid choice"),
    ],
)
def test_invalid_value_is_refused_at_the_field_and_nothing_is_lost(app, login, field, value, message):
    s = login("coord-hz")
    sid = new_subject(s)
    assert s.post(f"/subjects/{sid}/screening", data=screening_post(1)).status_code == 302
    before = _screening(app, sid)
    response = s.post(f"/subjects/{sid}/screening", data=screening_post(before.version, {field: value}))
    assert response.status_code == 200
    page = response.data.decode()
    # the message sits inside the field's own block, next to the input the user typed into
    block = page[page.index(f'id="{field}"') :]
    block = block[: block.index('<div class="field') if '<div class="field' in block else len(block)]
    assert message in block
    assert f'value="{value}"' in page or f'<option selected value="{value}"' in page or field in ("sex", "apl")
    after = _screening(app, sid)
    assert after.version == before.version and after.data == before.data


def test_date_of_birth_after_screening_date_is_refused_naming_the_field(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    today = date.today()
    response = s.post(
        f"/subjects/{sid}/screening",
        data=screening_post(
            1, {"screening_date": today - timedelta(days=10), "date_of_birth": today - timedelta(days=2)}
        ),
    )
    assert response.status_code == 200
    page = response.data.decode()
    block = page[page.index('id="date_of_birth"') :]
    assert "date_of_birth" in block[:2000]
    assert _screening(app, sid).version == 1


def test_completing_with_missing_answers_lists_them_at_the_fields(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    response = s.post(
        f"/subjects/{sid}/screening", data=screening_post(1, {"qtc_ms": None}, complete=True, no_prior=False)
    )
    assert response.status_code == 200
    page = response.data.decode()
    assert "Answer every question before marking the form complete." in page
    assert page.count("Required to complete the form.") == 2  # QTc and the prior-therapy question
    assert _screening(app, sid).status == "draft"


def test_male_subject_completes_without_the_female_only_questions(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    data = screening_post(1, {"sex": "M", "childbearing_potential": None, "pregnancy_test": None}, complete=True)
    assert s.post(f"/subjects/{sid}/screening", data=data).status_code == 302
    assert _screening(app, sid).status == "complete"


def test_change_to_a_completed_form_requires_a_reason_and_records_it(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    assert s.post(f"/subjects/{sid}/screening", data=screening_post(1, complete=True)).status_code == 302
    version = _screening(app, sid).version
    response = s.post(f"/subjects/{sid}/screening", data=screening_post(version, {"alt": "41"}))
    assert response.status_code == 200 and b"give a reason for the change" in response.data
    assert _screening(app, sid).data["alt"] == "38"
    response = s.post(
        f"/subjects/{sid}/screening", data=screening_post(version, {"alt": "41"}, reason="Transcription error")
    )
    assert response.status_code == 302
    assert _screening(app, sid).data["alt"] == "41"
    with app.app_context():
        record = (
            db.session.execute(
                select(AuditRecord)
                .where(AuditRecord.subject_id == sid, AuditRecord.field == "alt")
                .order_by(AuditRecord.id.desc())
            )
            .scalars()
            .first()
        )
        assert (record.old_value, record.new_value, record.reason, record.username) == (
            "38",
            "41",
            "Transcription error",
            "coord-hz",
        )


def test_a_save_based_on_an_old_version_is_refused_and_both_edits_are_shown(app, login):
    first, second = login("coord-hz"), login("inv-hz")
    sid = new_subject(first)
    assert first.post(f"/subjects/{sid}/screening", data=screening_post(1)).status_code == 302
    opened = _screening(app, sid).version
    assert (
        first.post(f"/subjects/{sid}/screening", data=screening_post(opened, {"weight_kg": "70.5"})).status_code == 302
    )
    response = second.post(f"/subjects/{sid}/screening", data=screening_post(opened, {"weight_kg": "64"}))
    page = response.data.decode()
    assert response.status_code == 200
    assert "was changed by Lin Mei at" in page and "since you opened it" in page
    conflict = page[page.index('id="conflict"') : page.index("</section>", page.index('id="conflict"'))]
    assert "64" in conflict and "70.5" in conflict
    assert _screening(app, sid).data["weight_kg"] == "70.5"  # the first save is not lost
    # the refused page carries the current version: a deliberate second save now applies
    current = _screening(app, sid).version
    assert f'name="version" type="hidden" value="{current}"' in page
    assert (
        second.post(f"/subjects/{sid}/screening", data=screening_post(current, {"weight_kg": "64"})).status_code == 302
    )
    assert _screening(app, sid).data["weight_kg"] == "64"


def test_eligibility_panel_follows_each_save(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    s.post(f"/subjects/{sid}/screening", data=screening_post(1, {"alt": "130"}))
    page = s.get(f"/subjects/{sid}/screening").data.decode()
    assert 'data-code="transaminases" data-status="fail"' in page
    assert "ALT 130 U/L = 3.25 x ULN" in page
    s.post(f"/subjects/{sid}/screening", data=screening_post(_screening(app, sid).version, {"alt": "38"}))
    page = s.get(f"/subjects/{sid}/screening").data.decode()
    assert 'data-code="transaminases" data-status="pass"' in page
    assert "not eligible" not in page and ">eligible<" in page


def test_prior_therapy_log_drives_the_washouts(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    s.post(f"/subjects/{sid}/screening", data=screening_post(1, no_prior=False))
    page = s.get(f"/subjects/{sid}/screening").data.decode()
    assert 'data-code="washout_steroid" data-status="missing"' in page  # log not yet recorded
    infusion = date.today() + timedelta(days=14)
    steroid = {
        "category": "systemic_steroid",
        "name": "Dexamethasone",
        "last_date": (infusion - timedelta(days=2)).isoformat(),
    }
    assert s.post(f"/subjects/{sid}/exposures/new", data=steroid).status_code == 302
    page = s.get(f"/subjects/{sid}/screening").data.decode()
    assert 'data-code="washout_steroid" data-status="fail"' in page
    assert 'data-code="washout_radiotherapy" data-status="pass"' in page
    with app.app_context():
        exposure = db.session.execute(select(Exposure).where(Exposure.subject_id == sid)).scalar_one()
        eid, version = exposure.id, exposure.version
    moved = {**steroid, "last_date": (infusion - timedelta(days=3)).isoformat(), "version": str(version)}
    response = s.post(f"/subjects/{sid}/exposures/{eid}", data=moved)
    assert response.status_code == 200 and b"give a reason for the change" in response.data
    assert s.post(f"/subjects/{sid}/exposures/{eid}", data={**moved, "reason": "date corrected"}).status_code == 302
    page = s.get(f"/subjects/{sid}/screening").data.decode()
    assert 'data-code="washout_steroid" data-status="pass"' in page  # 3 days: first permitted day
    with app.app_context():
        version = db.session.get(Exposure, eid).version
    assert (
        s.post(f"/subjects/{sid}/exposures/{eid}/remove", data={"version": str(version), "reason": ""}).status_code
        == 302
    )
    with app.app_context():
        assert db.session.get(Exposure, eid).status == "complete"
    assert (
        s.post(
            f"/subjects/{sid}/exposures/{eid}/remove",
            data={"version": str(version), "reason": "entered for the wrong subject"},
        ).status_code
        == 302
    )
    with app.app_context():
        exposure = db.session.get(Exposure, eid)
        assert exposure.status == "deleted" and exposure.deleted_reason == "entered for the wrong subject"
    assert b"Dexamethasone" not in s.get(f"/subjects/{sid}/screening").data


@pytest.mark.parametrize(
    "data,field,message",
    [
        (
            {"category": "systemic_antitumor", "name": "Gilteritinib", "half_life_days": "0"},
            "half_life_days",
            "greater than zero",
        ),
        (
            {"category": "radiotherapy", "name": "TBI", "half_life_days": "2"},
            "half_life_days",
            "antitumor therapy only",
        ),
        (
            {"category": "vaccine", "name": "Flu", "physiological_replacement": "y"},
            "physiological_replacement",
            "systemic steroid",
        ),
        ({"category": "", "name": "X"}, "category", "Choose a category"),
        ({"category": "unknown", "name": "X"}, "category", "Not a valid choice"),
        ({"category": "vaccine", "name": ""}, "name", "Enter the drug"),
        (
            {"category": "vaccine", "name": "Flu", "start_date": "2026-03-05", "last_date": "2026-03-01"},
            "last_date",
            "before the start date",
        ),
    ],
)
def test_exposure_bad_input_is_refused_at_the_field(app, login, data, field, message):
    s = login("coord-hz")
    sid = new_subject(s)
    response = s.post(f"/subjects/{sid}/exposures/new", data=data)
    assert response.status_code == 200
    page = response.data.decode()
    assert message in page[page.index(f'id="{field}"') :][:1500]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Exposure).where(Exposure.subject_id == sid)) == 0


def test_monitor_sees_the_form_read_only_and_cannot_post(app, login):
    m = login("monitor-hz")
    page = m.get("/subjects/1/screening").data.decode()
    assert "<fieldset disabled>" in page and "Save and mark complete" not in page
    assert m.post("/subjects/1/screening", data=screening_post(2)).status_code == 403


@pytest.mark.parametrize("version", ["", "abc", "-5", "99999"])
def test_a_missing_or_forged_version_is_refused_as_stale_not_a_500(app, login, version):
    s = login("coord-hz")
    sid = new_subject(s)
    response = s.post(f"/subjects/{sid}/screening", data={**screening_post(1), "version": version})
    assert response.status_code == 200 and b"since you opened it" in response.data
    assert _screening(app, sid).version == 1
