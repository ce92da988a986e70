"""The scenarios of issue 11, scripted over HTTP as a new user would do them with the demo
study: a fact recorded after an infusion was scheduled locks it where staff work, and the
administration CRF is the last gate (refused with the lockout's reason, what was typed
kept; an investigator may override where PROTOCOL 5.2 allows, signed and listed as a
deviation)."""

from __future__ import annotations

import re

from sqlalchemy import select

from cellstudy.extensions import db
from cellstudy.infusions.lockouts import LOCKOUT_LABELS
from cellstudy.infusions.models import Deviation, Infusion, InfusionJudgement
from cellstudy.records.models import Signature
from tests.infusions.test_crfs_app import (
    administer,
    audit,
    clock,  # noqa: F401  (a fixture)
    day,
    field_errors,
    infusion,  # noqa: F401
    record,
    text,
)
from tests.infusions.test_scheduling_app import PW, enrol, schedule
from tests.helpers import post_related_ae, post_vaccine_deviation


def related_grade_3(session, sid):
    response = post_related_ae(session, sid, onset=day(-1))
    assert response.status_code == 302
    return int(response.headers["Location"].rsplit("/", 1)[1])


def judgement(app, infusion_id):
    with app.app_context():
        row = db.session.get(InfusionJudgement, infusion_id)
        return (
            None
            if row is None
            else {"locked": row.locked, "codes": [lo["code"] for lo in row.lockouts], "lockouts": row.lockouts}
        )


def test_a_related_grade_3_ae_locks_infusion_2_on_the_infusions_page_and_the_crf_refuses_it(app, login, clock):
    clock(1)  # infusion 2 of HZ-001 is due today
    inf = infusion(app, "HZ-001", 2)
    coord = login("coord-hz")
    page = text(coord.get(f"/subjects/{inf['sid']}/infusions"))
    assert "Record administration" in page and 'data-code="toxicity_hold"' not in page
    ae_id = related_grade_3(coord, inf["sid"])
    assert judgement(app, inf["id"])["locked"] and judgement(app, inf["id"])["codes"] == ["toxicity_hold"]
    page = text(coord.get(f"/subjects/{inf['sid']}/infusions"))
    assert "Locked: see the lockouts" in page and 'data-code="toxicity_hold"' in page
    assert "open AE 'Nausea' (other) grade 3: related, grade >= 3" in page
    # the administration CRF says so before anything is typed ...
    crf = text(coord.get(f"/subjects/{inf['sid']}/infusions/{inf['id']}"))
    assert f"Infusion 2 is locked on {day(1).isoformat()}" in crf and 'data-code="toxicity_hold"' in crf
    assert 'name="override_reason"' not in crf  # a coordinator cannot override
    # ... and refuses to record it given, naming the lockout, keeping what was typed
    response = administer(coord, inf, product_lot="NK-LOT-TYPED-42")
    page = text(response)
    assert response.status_code == 200
    (message,) = field_errors(page, "administration_date")
    assert message.startswith(
        f"Infusion 2 is locked on {day(1).isoformat()}: {LOCKOUT_LABELS['toxicity_hold']}: "
        "open AE 'Nausea' (other) grade 3"
    )
    assert message.endswith("Only an investigator can override this lockout, with a reason and an e-signature.")
    assert 'name="override_reason"' not in page  # still not offered to a coordinator
    assert 'value="NK-LOT-TYPED-42"' in page  # nothing typed is lost
    after = record(app, Infusion, inf["id"])
    assert (after["state"], after["status"], after["version"]) == ("scheduled", "draft", inf["version"])
    # a coordinator typing an override reason is still refused
    page = text(administer(coord, inf, override_reason="I think it is fine", override_password=PW))
    assert field_errors(page, "administration_date")[0].endswith(
        "Only an investigator can override this lockout, with a reason and an e-signature."
    )
    assert record(app, Infusion, inf["id"])["state"] == "scheduled"
    # the AE ends: the hold lifts at once, everywhere
    _end_ae(app, coord, inf["sid"], ae_id)
    assert judgement(app, inf["id"]) == {"locked": False, "codes": [], "lockouts": []}
    assert administer(coord, inf).status_code == 302
    assert record(app, Infusion, inf["id"])["state"] == "given"
    assert judgement(app, inf["id"]) is None  # given: no longer a planned infusion to judge


def _end_ae(app, session, sid, ae_id):
    from cellstudy.adverse_events.models import AdverseEvent

    with app.app_context():
        version = db.session.get(AdverseEvent, ae_id).version
    response = session.post(
        f"/subjects/{sid}/adverse-events/{ae_id}",
        data={
            "version": str(version),
            "term": "Nausea",
            "onset_date": day(-1).isoformat(),
            "end_date": day(0).isoformat(),
            "ongoing": "no",
            "grade": "3",
            "serious": "no",
            "related_nk": "probable",
            "related_ld": "unlikely",
            "expectedness": "expected",
            "action": "none",
            "outcome": "recovered",
            "reason": "resolved",
            "complete": "1",
        },
    )
    assert response.status_code == 302, re.findall(r'role="alert">(.*?)<', text(response))


def test_an_investigator_overrides_the_hold_at_administration_signed_audited_and_listed(app, login, clock):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    inv = login("inv-hz")
    related_grade_3(login("coord-hz"), inf["sid"])
    crf = text(inv.get(f"/subjects/{inf['sid']}/infusions/{inf['id']}"))
    assert 'name="override_reason"' in crf and 'name="override_password"' in crf
    # without a reason: refused, asking for it at the field
    page = text(administer(inv, inf))
    assert field_errors(page, "override_reason") == [
        "Give the reason for giving the infusion despite the lockout, and sign with your password."
    ]
    assert record(app, Infusion, inf["id"])["state"] == "scheduled"
    # a wrong password is refused and nothing is given
    page = text(
        administer(
            inv,
            inf,
            override_reason="Grade 3 nausea controlled; benefit outweighs risk",
            override_password="wrong password",
        )
    )
    assert "password" in page.lower() and record(app, Infusion, inf["id"])["state"] == "scheduled"
    response = administer(
        inv, inf, override_reason="Grade 3 nausea controlled; benefit outweighs risk", override_password=PW
    )
    assert response.status_code == 302, field_errors(text(response), "override_reason")
    assert record(app, Infusion, inf["id"])["state"] == "given"
    with app.app_context():
        given = db.session.get(Infusion, inf["id"])
        assert given.override_reason == "Grade 3 nausea controlled; benefit outweighs risk"
        assert [lo["code"] for lo in given.override_lockouts] == ["toxicity_hold"]
        (dev,) = (
            db.session.execute(select(Deviation).where(Deviation.form == "infusion", Deviation.form_id == inf["id"]))
            .scalars()
            .all()
        )
        assert dev.kind == "lockout_override" and "open AE 'Nausea'" in dev.description
        sig = db.session.get(Signature, dev.signature_id)
        assert sig.printed_name == "Dr Wang Lei" and "despite the lockouts" in sig.meaning
    assert any(
        r["action"] == "sign" and r["username"] == "inv-hz" for r in audit(app, form="infusion", form_id=inf["id"])
    )
    assert "lockout override" in text(login("monitor-hz").get("/deviations"))


def test_a_vaccine_logged_after_the_first_infusion_was_scheduled_shows_on_the_subjects_pages(app, login, clock):
    sid = enrol(app, login)  # HZ-002, first infusion planned on T+14
    coord, inv = login("coord-hz"), login("inv-hz")
    assert schedule(coord, sid, day(14)).status_code == 302
    with app.app_context():
        inf_id = db.session.execute(select(Infusion.id).where(Infusion.subject_id == sid)).scalar_one()
    assert judgement(app, inf_id) == {"locked": False, "codes": [], "lockouts": []}
    assert post_vaccine_deviation(inv, sid, last_date=day(-1), password=PW).status_code == 302
    j = judgement(app, inf_id)
    assert j["locked"] and j["codes"] == ["vaccine"] and j["lockouts"][0]["until"] == day(27).isoformat()
    for path in (f"/subjects/{sid}", f"/subjects/{sid}/infusions", f"/subjects/{sid}/infusions/{inf_id}", "/"):
        page = text(coord.get(path))
        assert (
            'data-code="vaccine"' in page
            and f'First permitted date: <strong class="until">{day(27).isoformat()}' in page
        ), path
    # the eligibility washout of the first infusion cannot be overridden at administration either
    clock(14)
    page = text(
        administer(
            inv,
            {"sid": sid, "id": inf_id, "version": record(app, Infusion, inf_id)["version"], "planned_date": day(14)},
            override_reason="urgent",
            override_password=PW,
        )
    )
    (message,) = field_errors(page, "administration_date")
    assert "cannot be overridden" in message and record(app, Infusion, inf_id)["state"] == "scheduled"
    # the vaccine was entered in error: removing it lifts the lockout
    with app.app_context():
        from cellstudy.enrollment.models import Exposure

        vaccine = db.session.execute(
            select(Exposure).where(Exposure.subject_id == sid, Exposure.category == "vaccine")
        ).scalar_one()
        exposure_id, version = vaccine.id, vaccine.version
    assert (
        coord.post(
            f"/subjects/{sid}/exposures/{exposure_id}/remove",
            data={"version": str(version), "reason": "entered for the wrong patient"},
        ).status_code
        == 302
    )
    assert judgement(app, inf_id)["locked"] is False
