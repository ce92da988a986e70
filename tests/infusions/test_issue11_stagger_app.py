"""The sentinel stagger everywhere (issue 11, item 4; PROTOCOL 5.3 amended 2026-12-02) and
an amendment that re-judges every planned infusion, scripted over HTTP.

The demo at DL1: HZ-001's first infusion was given on T-6 (the sentinel); NB-001's first
infusion is planned on T+14. HZ-S004 is enrolled here as HZ-002 (DL1), the third subject of
the level. Amendments go through the app's controlled path (proposed, then approved with an
investigator's e-signature)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from cellstudy.auth.models import User
from cellstudy.extensions import db
from cellstudy.infusions.models import Infusion, InfusionJudgement
from tests.infusions.test_scheduling_app import PW, clock, day, enrol, schedule, sid_of, text  # noqa: F401
from tests.helpers import amend_study, post_related_ae


def first_infusion(app, number: str) -> dict:
    with app.app_context():
        sid = sid_of(app, number)
        inf = (
            db.session.execute(
                select(Infusion)
                .where(Infusion.subject_id == sid, Infusion.state != "cancelled")
                .order_by(Infusion.planned_date)
            )
            .scalars()
            .first()
        )
        j = db.session.get(InfusionJudgement, inf.id) if inf.state == "scheduled" else None
        return {
            "sid": sid,
            "id": inf.id,
            "version": inf.version,
            "planned": inf.planned_date,
            "state": inf.state,
            "codes": [lo["code"] for lo in j.lockouts] if j else None,
            "locked": j.locked if j else None,
            "lockouts": j.lockouts if j else None,
        }


def test_reschedule_cannot_move_a_later_subjects_first_infusion_inside_the_stagger(app, login, clock):
    amend_study(app, {"regimen.sentinel_stagger_days": "14"}, "1.1 (sentinel stagger)", password=PW)
    hz2 = enrol(app, login)  # the third subject of DL1
    coord = login("coord-hz")
    assert schedule(coord, hz2, day(14)).status_code == 302  # 20 days after the sentinel: clear
    nb = first_infusion(app, "NB-001")
    assert nb["codes"] == [] and first_infusion(app, "HZ-002")["codes"] == []
    # moving NB-001's first infusion to T+5 (11 days after the sentinel's) is refused, naming the stagger
    coord_nb = login("coord-nb")
    response = coord_nb.post(
        f"/subjects/{nb['sid']}/infusions/{nb['id']}/reschedule",
        data={"version": str(nb["version"]), "proposed_date": day(5).isoformat(), "reason": "bed available earlier"},
    )
    page = text(coord_nb.get(response.headers["Location"]))
    assert "Infusion 1 was not rescheduled: This date is locked out (Sentinel stagger)" in page
    assert f"HZ-001 is the sentinel of DL1 (first infusion {day(-6).isoformat()})" in page
    assert f"may have their first infusion from {day(8).isoformat()}, 14 days later" in page  # the sentinel's + 14
    assert first_infusion(app, "NB-001")["planned"] == day(14)
    # HZ-002, the third subject, is held just the same when moved inside the stagger
    hz2_inf = first_infusion(app, "HZ-002")
    response = coord.post(
        f"/subjects/{hz2}/infusions/{hz2_inf['id']}/reschedule",
        data={"version": str(hz2_inf["version"]), "proposed_date": day(7).isoformat(), "reason": "bed available"},
    )
    assert "locked out (Sentinel stagger)" in text(coord.get(response.headers["Location"]))
    assert first_infusion(app, "HZ-002")["planned"] == day(14)


def test_an_amendment_of_the_stagger_re_judges_every_planned_first_infusion_at_approval(app, login, clock):
    hz2 = enrol(app, login)
    assert schedule(login("coord-hz"), hz2, day(14)).status_code == 302
    assert first_infusion(app, "NB-001")["codes"] == [] and first_infusion(app, "HZ-002")["codes"] == []
    amend_study(app, {"regimen.sentinel_stagger_days": "21"}, "1.1 (sentinel stagger 21 days)", password=PW)
    for number in ("NB-001", "HZ-002"):  # 20 days after the sentinel: now inside the stagger
        inf = first_infusion(app, number)
        assert inf["locked"] and inf["codes"] == ["stagger"], (number, inf)
        assert inf["lockouts"][0]["until"] == day(15).isoformat()
    with app.app_context():
        versions = {j.study_version for j in db.session.execute(select(InfusionJudgement)).scalars()}
    assert versions == {"1.1 (sentinel stagger 21 days)"}  # every planned infusion judged under it
    page = text(login("inv-nb").get("/"))
    assert 'id="locked-infusions"' in page and 'data-code="stagger"' in page and "NB-001" in page


def test_a_first_infusion_before_the_sentinels_would_make_it_the_sentinel_and_says_whom_it_holds(app, login):
    """At a level whose earliest first infusion is only planned, scheduling another subject
    earlier makes that subject the sentinel: the scheduling screen names who would be held."""
    from cellstudy.infusions import stagger
    from cellstudy.settings import apply

    hz2 = enrol(app, login)
    nb = first_infusion(app, "NB-001")
    study = apply({"regimen.sentinel_stagger_days": "21"})
    with app.test_request_context():
        from cellstudy.enrollment.models import Subject

        subject = db.session.get(Subject, hz2)
        level = {nb["sid"]: nb["planned"]}  # the level without HZ-001: its sentinel is NB-001, planned
        assert stagger.stagger_effects(subject, day(10), study, level) == [
            f"NB-001 (first infusion {day(14).isoformat()})"
        ]
        assert stagger.stagger_effects(subject, day(16), study, level) == []  # NB-001 stays the sentinel
        held = stagger.stagger_lockout(subject, day(16), True, study, level)
        assert held["code"] == "stagger" and held["until"] == day(35).isoformat()
        assert stagger.stagger_lockout(subject, day(10), True, study, level) is None


def test_an_amendment_lengthening_the_minimum_interval_locks_a_planned_second_infusion(app, login, clock):
    hz1 = first_infusion(app, "HZ-001")
    assert hz1["state"] == "given"
    with app.app_context():
        inf2 = db.session.execute(
            select(InfusionJudgement).join(Infusion).where(Infusion.subject_id == hz1["sid"], Infusion.number == 2)
        ).scalar_one()
        assert inf2.lockouts == []
        inf2_id = inf2.infusion_id
    amend_study(app, {"regimen.min_interval_days": "8"}, "1.1 (interval 8 days)", password=PW)
    with app.app_context():
        j = db.session.get(InfusionJudgement, inf2_id)
        assert j.locked and [lo["code"] for lo in j.lockouts] == ["min_interval"]
        assert j.lockouts[0]["until"] == day(2).isoformat()  # T-6 + 8 days
    page = text(login("coord-hz").get(f"/subjects/{hz1['sid']}/infusions"))
    assert 'data-code="min_interval"' in page and "Locked: see the lockouts" in page


@pytest.mark.parametrize("days, held", [(None, False), ("0", False), ("20", False), ("21", True)])
def test_the_stagger_boundary_is_the_sentinels_plus_n_days(app, login, clock, days, held):
    if days is not None:
        amend_study(app, {"regimen.sentinel_stagger_days": days}, f"1.1 (stagger {days})", password=PW)
    inf = first_infusion(app, "NB-001")  # T+14 = sentinel T-6 + 20 days
    assert (inf["codes"] == ["stagger"]) is held
    assert inf["planned"] - timedelta(days=20) == day(-6)


def test_an_amendment_with_a_future_effective_date_re_judges_when_the_date_arrives(app, login, clock):
    """Approved today for T+3: nothing is re-judged until the date arrives; then the due check
    (the scheduled run and the start-up check call it) brings it into force and every planned
    infusion is judged under it, in that transaction."""
    from datetime import time

    from cellstudy.amendments import service as amendments

    def at(day_offset: int) -> None:
        clock(day_offset, time(0, 30))

    at(0)
    hz1 = first_infusion(app, "HZ-001")
    with app.app_context():
        inf2 = db.session.execute(
            select(Infusion.id).where(Infusion.subject_id == hz1["sid"], Infusion.number == 2)
        ).scalar_one()
        users = {u.username: u for u in db.session.execute(select(User)).scalars()}
        proposal = amendments.propose(
            {"toxicity_hold.related_min_grade": "1"},
            label="1.1 (hold from grade 1)",
            reason="DSMB recommendation",
            effective_date=day(3),
            user=users["admin"],
        )
        amendments.approve(proposal.id, user=users["inv-hz"], password=PW)
        db.session.remove()
    # an open related grade 1 AE: held only under the amendment
    response = post_related_ae(login("coord-hz"), hz1["sid"], onset=day(-1), grade=1)
    assert response.status_code == 302
    with app.app_context():
        j = db.session.get(InfusionJudgement, inf2)
        assert (j.locked, j.study_version) == (False, "1.0 (original protocol)")
        at(2)
        assert amendments.apply_due() == []  # not yet
        db.session.remove()
    at(3)
    with app.app_context():
        assert [a.label for a in amendments.apply_due()] == ["1.1 (hold from grade 1)"]
        db.session.remove()
    with app.app_context():
        j = db.session.get(InfusionJudgement, inf2)
        assert j.locked and [lo["code"] for lo in j.lockouts] == ["toxicity_hold"]
        assert j.study_version == "1.1 (hold from grade 1)"
        assert amendments.apply_due() == []  # once only
