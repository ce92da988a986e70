"""Infusion scheduling through the web app (PROTOCOL 5.1, 5.2, 7; issue 3): the scheduling
screen's lockouts and earliest date, refusals, investigator overrides, target-window
deviations, rescheduling/cancelling with history, re-anchoring of the schedule, study
settings in force, and the study calendar.

Dates are relative to date.today(), like the demo: HZ-001 had infusion 1 on T-6 and
has infusion 2 scheduled on T+1; NB-001 has infusion 1 scheduled on T+14 (its planned
first infusion date). Both are at DL1."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from cellstudy.infusions.lockouts import LOCKOUT_LABELS
from cellstudy.auth.models import User
from cellstudy.enrollment.eligibility import add_months
from cellstudy.extensions import db
from cellstudy.infusions import proposal, scheduling, worklists
from cellstudy.infusions.models import Infusion, LymphodepletionDay, Visit
from cellstudy.records.models import Signature
from tests.helpers import subject_by_number
from cellstudy.auth.policy import ALL_SITES
from tests.helpers import AUDIT_KEYS, deviations, sid_of
from tests.helpers import audit as _audit
from tests.helpers import post_vaccine_deviation


def audit(app, **where) -> list[dict]:
    return _audit(app, keys=("id", *AUDIT_KEYS, "subject_id"), **where)


PW = "cellstudy-demo"


# --- helpers -----------------------------------------------------------------------------


def day(n: int) -> date:
    """T + n days, T = date.today() (the demo's anchor)."""
    return date.today() + timedelta(days=n)


def text(response) -> str:
    return html.unescape(response.data.decode())


def infusion_rows(app, sid: int) -> list[dict]:
    with app.app_context():
        rows = db.session.execute(
            select(Infusion).where(Infusion.subject_id == sid).order_by(Infusion.number, Infusion.id)
        ).scalars()
        return [
            {
                "id": i.id,
                "number": i.number,
                "planned_date": i.planned_date,
                "state": i.state,
                "version": i.version,
                "dose_level": i.dose_level,
                "override_reason": i.override_reason,
                "override_signature_id": i.override_signature_id,
                "cancel_reason": i.cancel_reason,
                "target_deviation_reason": i.target_deviation_reason,
            }
            for i in rows
        ]


def active(app, sid: int) -> list[dict]:
    return [i for i in infusion_rows(app, sid) if i["state"] != "cancelled"]


def signatures(app, sid: int) -> list[dict]:
    with app.app_context():
        rows = db.session.execute(select(Signature).where(Signature.subject_id == sid).order_by(Signature.id)).scalars()
        return [
            {
                "id": s.id,
                "printed_name": s.printed_name,
                "meaning": s.meaning,
                "form": s.form,
                "form_id": s.form_id,
                "valid": s.valid,
            }
            for s in rows
        ]


def lockout_items(page: str) -> dict[str, str]:
    """code -> the text of its <li> on the scheduling screen."""
    return {
        m.group(1): m.group(2) for m in re.finditer(r'<li class="lockout" data-code="([a-z_]+)">(.*?)</li>', page, re.S)
    }


def until_of(item: str) -> str | None:
    m = re.search(r'<strong class="until">([0-9-]+)</strong>', item)
    return m.group(1) if m else None


def schedule(session, sid, proposed: date, **extra):
    return session.post(f"/subjects/{sid}/infusions", data={"proposed_date": proposed.isoformat(), **extra})


def override(reason="Investigator judgement: clinical benefit outweighs the risk", password=PW, deviation=None):
    data = {"override_reason": reason, "password": password}
    if deviation:
        data["deviation_reason"] = deviation
    return data


def add_exposure(session, sid, category, name, last: date, start: date | None = None, **extra):
    data = {
        "category": category,
        "name": name,
        "last_date": last.isoformat(),
        "start_date": (start or min(last, date.today())).isoformat(),
        **extra,
    }
    response = session.post(f"/subjects/{sid}/exposures/new", data=data)
    assert response.status_code == 302, text(response)[:2000]
    return response


def enrol(app, login, number="HZ-S004", level="DL1", reason=None) -> int:
    """Enrol a demo subject awaiting the investigator through the enrolment route."""
    with app.app_context():
        subject = subject_by_number(number)
        sid, version = subject.id, subject.current_screening.version
    inv = login("inv-" + number[:2].lower())
    data = {"password": PW, "confirm": "y", "screening_version": str(version), "dose_level": level}
    if reason:
        data["dose_level_reason"] = reason
    response = inv.post(f"/subjects/{sid}/enrol", data=data)
    assert response.status_code == 302, text(response)[:3000]
    return sid


def first_infusion_subject(app, login):
    """HZ-S004 enrolled (HZ-002, DL1): no infusion yet, the first one planned on T+14 by
    the screening form."""
    sid = enrol(app, login)
    assert infusion_rows(app, sid) == []
    return sid, login("coord-hz")


@pytest.fixture(autouse=True)
def clock(clock):
    """Pin the one clock (the sites' today and the server's) to T + n days, at 12:00 UTC
    (20:00 in Hangzhou and Ningbo: the same date); `at` another UTC time of that day."""

    def set_day(n: int, at: time = time(12, 0)) -> None:
        clock.set(datetime.combine(day(n), at, tzinfo=timezone.utc))

    set_day(0)
    return set_day


def failed_logins(app, username):
    with app.app_context():
        return db.session.execute(select(User.failed_logins).where(User.username == username)).scalar_one()


# --- the proposal: lockouts, first permitted dates, the earliest date -----------------------


def test_proposal_lists_each_lockout_with_reason_and_first_permitted_date_and_offers_the_earliest(app, login):
    sid, coord = first_infusion_subject(app, login)
    planned = day(14)
    add_exposure(coord, sid, "systemic_steroid", "Dexamethasone", planned - timedelta(days=1))
    add_exposure(coord, sid, "intrathecal", "Intrathecal methotrexate", planned - timedelta(days=2))
    audit_before = len(audit(app, subject_id=sid))

    page = text(coord.get(f"/subjects/{sid}/infusions?proposed={planned.isoformat()}"))
    assert f"Infusion 1 on <strong>{planned.isoformat()}</strong>" in page and "locked out" in page
    items = lockout_items(page)
    assert list(items) == ["washout_steroid", "washout_intrathecal"]  # in the order of PROTOCOL 5.2
    steroid, intrathecal = items["washout_steroid"], items["washout_intrathecal"]
    # until = last_date + 3 for a systemic steroid, last_date + 7 for intrathecal therapy
    assert until_of(steroid) == (planned + timedelta(days=2)).isoformat()
    assert until_of(intrathecal) == (planned + timedelta(days=5)).isoformat()
    assert "Dexamethasone" in steroid and "3-day washout" in steroid
    assert f"last given {(planned - timedelta(days=1)).isoformat()}" in steroid
    assert "Intrathecal methotrexate" in intrathecal and "7-day washout" in intrathecal
    # the earliest date that clears both is offered
    earliest = (planned + timedelta(days=5)).isoformat()
    assert f'href="?proposed={earliest}">Use {earliest}</a>' in page
    assert "Schedule infusion 1" not in page  # no schedule button on a locked date
    # following the offer clears every lockout
    page = text(coord.get(f"/subjects/{sid}/infusions?proposed={earliest}"))
    assert "no lockout" in page and not lockout_items(page)
    assert f"Schedule infusion 1 on {earliest}" in page
    # looking is not writing
    assert len(audit(app, subject_id=sid)) == audit_before and not active(app, sid)


def test_a_locked_date_is_refused_and_the_suggested_date_schedules_with_an_audit_trail(app, login):
    sid, coord = first_infusion_subject(app, login)
    planned = day(14)
    add_exposure(coord, sid, "systemic_steroid", "Prednisone", planned - timedelta(days=1))
    infusion_audit_before = [r for r in audit(app, subject_id=sid) if r["form"] == "infusion"]

    response = schedule(coord, sid, planned)
    page = text(response)
    assert response.status_code == 200
    assert "Nothing was saved" in page and f"locked out ({LOCKOUT_LABELS['washout_steroid']})" in page
    assert "Use " + (planned + timedelta(days=2)).isoformat() in page
    assert not active(app, sid)
    assert [r for r in audit(app, subject_id=sid) if r["form"] == "infusion"] == infusion_audit_before

    suggested = planned + timedelta(days=2)
    response = schedule(coord, sid, suggested)
    assert response.status_code == 302
    (infusion,) = active(app, sid)
    assert (infusion["number"], infusion["planned_date"], infusion["state"], infusion["dose_level"]) == (
        1,
        suggested,
        "scheduled",
        "DL1",
    )
    assert infusion["override_signature_id"] is None and not deviations(app, sid)
    trail = audit(app, form="infusion", form_id=infusion["id"])
    assert trail[0]["action"] == "create" and trail[0]["username"] == "coord-hz"
    assert {"action": "set", "field": "planned_date", "new": suggested.isoformat()}.items() <= next(
        r for r in trail if r["field"] == "planned_date"
    ).items()
    # the first infusion anchors the schedule: the visits moved with it
    with app.app_context():
        d1 = db.session.execute(select(Visit).where(Visit.subject_id == sid, Visit.code == "D1")).scalar_one()
        assert d1.target_date == suggested + timedelta(days=1)
    page = text(coord.get(f"/subjects/{sid}/infusions"))
    assert "Infusion 1 scheduled for " + suggested.isoformat() in page


def test_eligibility_washouts_cannot_be_overridden_before_the_first_infusion(app, login):
    sid, coord = first_infusion_subject(app, login)
    planned = day(14)
    add_exposure(coord, sid, "systemic_steroid", "Dexamethasone", planned - timedelta(days=1))
    inv = login("inv-hz")
    page = text(inv.get(f"/subjects/{sid}/infusions?proposed={planned.isoformat()}"))
    assert "washout_steroid" in lockout_items(page)
    assert 'name="override_reason"' not in page and "Override and schedule" not in page
    assert "or an investigator override" not in page

    response = schedule(inv, sid, planned, **override())
    page = text(response)
    assert response.status_code == 200
    assert "before the first infusion the eligibility washouts cannot be overridden" in page
    assert not active(app, sid)
    assert not deviations(app, sid)
    assert [s for s in signatures(app, sid) if s["form"] == "infusion"] == []
    assert not audit(app, subject_id=sid, action="sign", form="infusion")


# --- overrides of a later infusion's lockout (min_interval) ----------------------------------


def test_min_interval_is_overridden_by_an_investigator_with_reason_and_e_signature(app, login):
    sid = sid_of(app, "HZ-001")
    proposed = day(2)  # 1 day after infusion 2 (T+1): min_interval until T+7
    inv, coord = login("inv-hz"), login("coord-hz")

    page = text(inv.get(f"/subjects/{sid}/infusions?proposed={proposed.isoformat()}"))
    items = lockout_items(page)
    assert list(items) == ["min_interval"]
    assert until_of(items["min_interval"]) == day(7).isoformat()
    assert f"1 day after the latest infusion {day(1).isoformat()}" in items["min_interval"]
    assert 'name="override_reason"' in page and "Override and schedule (e-signature)" in page
    assert "outside its target window" in page  # day 14 is T+8 +/- 1
    coord_page = text(coord.get(f"/subjects/{sid}/infusions?proposed={proposed.isoformat()}"))
    assert "min_interval" in lockout_items(coord_page) and 'name="override_reason"' not in coord_page

    response = schedule(
        inv,
        sid,
        proposed,
        **override("Bridging dose agreed with the sponsor", deviation="Earlier dose on medical advice"),
    )
    assert response.status_code == 302, text(response)[:3000]
    infusion = active(app, sid)[-1]
    assert (infusion["number"], infusion["planned_date"], infusion["state"]) == (3, proposed, "scheduled")
    assert infusion["override_reason"] == "Bridging dose agreed with the sponsor"
    sig = next(s for s in signatures(app, sid) if s["id"] == infusion["override_signature_id"])
    assert (sig["printed_name"], sig["meaning"], sig["form"], sig["form_id"], sig["valid"]) == (
        "Dr Wang Lei",
        scheduling.OVERRIDE_MEANING,
        "infusion",
        infusion["id"],
        True,
    )
    devs = deviations(app, sid)
    kinds = {d["kind"]: d for d in devs}
    assert set(kinds) == {"lockout_override", "infusion_outside_target"}
    lockout_dev = kinds["lockout_override"]
    assert lockout_dev["signature_id"] == sig["id"] and lockout_dev["reason"] == "Bridging dose agreed with the sponsor"
    assert (
        lockout_dev["form_id"] == infusion["id"]
        and "minimum 6 days between two infusions" in lockout_dev["description"]
    )
    assert kinds["infusion_outside_target"]["reason"] == "Earlier dose on medical advice"
    # the signature and the reason are in the audit trail
    signs = audit(app, subject_id=sid, action="sign", form="infusion")
    assert len(signs) == 1 and signs[0]["username"] == "inv-hz" and scheduling.OVERRIDE_MEANING in signs[0]["new"]
    assert any(
        r["form"] == "deviation" and r["field"] == "reason" and r["new"] == "Bridging dose agreed with the sponsor"
        for r in audit(app, subject_id=sid)
    )
    # visible on the deviation list, to the site and its monitor, not to another site
    for user in ("inv-hz", "monitor-hz", "dm"):
        page = text(login(user).get("/deviations"))
        assert "lockout override" in page and "Bridging dose agreed with the sponsor" in page and "Dr Wang Lei" in page
    assert "Bridging dose agreed" not in text(login("coord-nb").get("/deviations"))
    # the plan marks the override
    assert "override</span>" in text(inv.get(f"/subjects/{sid}/infusions"))


def test_a_coordinator_cannot_override_a_lockout(app, login):
    sid = sid_of(app, "HZ-001")
    before = (len(audit(app, subject_id=sid)), signatures(app, sid))
    response = schedule(login("coord-hz"), sid, day(2), **override(deviation="Earlier dose"))
    assert response.status_code == 200 and "Only an investigator can override a lockout." in text(response)
    assert [i["number"] for i in active(app, sid)] == [1, 2]
    assert not deviations(app, sid)
    assert (len(audit(app, subject_id=sid)), signatures(app, sid)) == before


def test_a_wrong_override_password_saves_nothing_and_leaves_a_sign_refused_record(app, login):
    sid = sid_of(app, "HZ-001")
    signatures_before = signatures(app, sid)
    response = schedule(login("inv-hz"), sid, day(2), **override(password="not-my-password", deviation="Earlier dose"))
    page = text(response)
    assert response.status_code == 200 and "Password not accepted" in page
    assert [i["number"] for i in active(app, sid)] == [1, 2]
    assert not deviations(app, sid) and signatures(app, sid) == signatures_before
    assert not [
        r
        for r in audit(app, subject_id=sid)
        if r["form"] == "infusion"
        and r["action"] == "create"
        and r["form_id"] not in {i["id"] for i in infusion_rows(app, sid)}
    ]
    refused = audit(app, subject_id=sid, action="sign_refused")
    assert len(refused) == 1
    assert (refused[0]["username"], refused[0]["form"], refused[0]["new"]) == (
        "inv-hz",
        "infusion",
        scheduling.OVERRIDE_MEANING,
    )
    assert failed_logins(app, "inv-hz") == 1


# --- target windows, max infusions, same day, wrong status ------------------------------------


def test_a_date_outside_the_target_window_needs_a_deviation_reason(app, login):
    sid = sid_of(app, "HZ-001")
    coord = login("coord-hz")
    proposed = day(10)  # infusion 3 targets T+8 (T-6 + 14), window T+7..T+9; no lockout on T+10
    page = text(coord.get(f"/subjects/{sid}/infusions?proposed={proposed.isoformat()}"))
    assert "no lockout" in page
    assert f"Infusion 3 on {proposed.isoformat()} is outside its target window" in page
    assert 'name="deviation_reason"' in page

    response = schedule(coord, sid, proposed)
    assert response.status_code == 200 and "Give a deviation reason." in text(response)
    assert len(active(app, sid)) == 2 and not deviations(app, sid)

    response = schedule(coord, sid, proposed, deviation_reason="Public holiday at the cell-therapy unit")
    assert response.status_code == 302
    infusion = active(app, sid)[-1]
    assert (infusion["number"], infusion["planned_date"]) == (3, proposed)
    assert infusion["target_deviation_reason"] == "Public holiday at the cell-therapy unit"
    assert infusion["override_signature_id"] is None
    (dev,) = deviations(app, sid)
    assert (dev["kind"], dev["reason"], dev["form"], dev["form_id"], dev["signature_id"]) == (
        "infusion_outside_target",
        "Public holiday at the cell-therapy unit",
        "infusion",
        infusion["id"],
        None,
    )
    assert "2 days after" in dev["description"]
    assert "infusion outside target" in text(coord.get("/deviations"))


def test_max_infusions_refuses_a_fourth_infusion(app, login):
    sid = sid_of(app, "HZ-001")
    coord = login("coord-hz")
    assert schedule(coord, sid, day(8)).status_code == 302  # infusion 3 on its target day
    assert [i["number"] for i in active(app, sid)] == [1, 2, 3]
    page = text(coord.get(f"/subjects/{sid}/infusions?proposed={day(30).isoformat()}"))
    items = lockout_items(page)
    assert list(items) == ["max_infusions"]
    assert until_of(items["max_infusions"]) is None and "Lifted only by a change of the facts" in items["max_infusions"]
    assert "the protocol has 3" in items["max_infusions"] and "Use " not in page
    response = schedule(coord, sid, day(30))
    assert response.status_code == 200 and f"locked out ({LOCKOUT_LABELS['max_infusions']})" in text(response)
    assert len(active(app, sid)) == 3


def test_a_second_infusion_on_the_same_day_is_refused(app, login):
    sid = sid_of(app, "HZ-001")
    response = schedule(login("coord-hz"), sid, day(1), deviation_reason="Same day")  # infusion 2 is on T+1
    page = text(response)
    assert response.status_code == 200
    assert "min_interval" in page and f"on the day of the latest infusion {day(1).isoformat()}" in page
    assert [i["planned_date"] for i in active(app, sid)] == [day(-6), day(1)]


def test_an_investigator_cannot_override_a_second_infusion_on_the_same_day(app, login):
    sid = sid_of(app, "HZ-001")
    response = schedule(login("inv-hz"), sid, day(1), **override(deviation="Same day"))
    assert response.status_code == 200
    assert [i["planned_date"] for i in active(app, sid)] == [day(-6), day(1)]
    assert not deviations(app, sid)


def test_scheduling_for_a_subject_in_screening_is_refused_with_a_message(app, login):
    sid = sid_of(app, "HZ-S004")
    coord = login("coord-hz")
    assert "Infusions are scheduled by site staff for enrolled subjects." in text(
        coord.get(f"/subjects/{sid}/infusions")
    )
    response = schedule(coord, sid, day(14))
    assert response.status_code == 200
    assert "Infusions are scheduled for enrolled subjects; this subject is screening." in text(response)
    assert infusion_rows(app, sid) == []
    assert not [r for r in audit(app, subject_id=sid) if r["form"] == "infusion"]


def test_another_sites_subject_cannot_be_scheduled(app, login):
    sid = sid_of(app, "HZ-001")
    coord_nb = login("coord-nb")
    assert coord_nb.get(f"/subjects/{sid}/infusions?proposed={day(8).isoformat()}").status_code == 404
    assert schedule(coord_nb, sid, day(8)).status_code == 404
    assert schedule(login("monitor-hz"), sid, day(8)).status_code == 403
    assert len(active(app, sid)) == 2


def test_two_staff_scheduling_the_same_infusion_one_wins_the_other_is_refused(app, login):
    sid = sid_of(app, "HZ-001")
    coord, inv = login("coord-hz"), login("inv-hz")
    for session in (coord, inv):  # both open the same proposal
        assert "Schedule infusion 3 on " + day(8).isoformat() in text(
            session.get(f"/subjects/{sid}/infusions?proposed={day(8).isoformat()}")
        )
    assert schedule(coord, sid, day(8)).status_code == 302
    response = schedule(inv, sid, day(8))
    assert response.status_code == 200 and "Nothing was saved" in text(response)
    assert [(i["number"], i["planned_date"]) for i in active(app, sid)] == [(1, day(-6)), (2, day(1)), (3, day(8))]


# --- rescheduling and cancelling keep the history ------------------------------------------


def reschedule(session, sid, inf: dict, proposed: date, reason="Donor product release delayed", version=None, **extra):
    return session.post(
        f"/subjects/{sid}/infusions/{inf['id']}/reschedule",
        data={
            "version": str(inf["version"] if version is None else version),
            "proposed_date": proposed.isoformat(),
            "reason": reason,
            **extra,
        },
        follow_redirects=True,
    )


def test_rescheduling_needs_a_reason(app, login):
    sid = sid_of(app, "NB-001")
    (inf,) = infusion_rows(app, sid)
    page = text(reschedule(login("coord-nb"), sid, inf, day(15), reason=""))
    assert "Not rescheduled: Give the reason for rescheduling." in page
    assert infusion_rows(app, sid) == [inf]
    assert not [r for r in audit(app, form="infusion", form_id=inf["id"]) if r["action"] == "update"]


def test_rescheduling_with_a_stale_version_is_refused_and_nothing_is_lost(app, login, clock):
    """Two users opened infusion 2 of HZ-001 at the same version; one saved the CRF draft,
    the other's reschedule (of the version they saw) is refused."""
    sid = sid_of(app, "HZ-001")
    inf2 = active(app, sid)[1]
    coord, inv = login("coord-hz"), login("inv-hz")
    response = coord.post(
        f"/subjects/{sid}/infusions/{inf2['id']}",
        data={"version": str(inf2["version"]), "product_lot": "NK-CLL1-24-031", "save": "1"},
    )
    assert response.status_code == 302
    assert active(app, sid)[1]["version"] == inf2["version"] + 1
    page = text(reschedule(inv, sid, inf2, day(2), reason="Ward capacity"))
    assert "Infusion 2 was not rescheduled" in page and "since you opened it" in page and "Lin Mei" in page
    after = active(app, sid)[1]
    assert after["planned_date"] == day(1) and after["version"] == inf2["version"] + 1
    assert [r["field"] for r in audit(app, form="infusion", form_id=inf2["id"]) if r["action"] == "update"] == [
        "product_lot"
    ]


def test_rescheduling_keeps_the_history_in_the_audit_trail(app, login):
    sid = sid_of(app, "NB-001")
    coord = login("coord-nb")
    (inf,) = infusion_rows(app, sid)
    page = text(reschedule(coord, sid, inf, day(15)))
    assert "Infusion 1 rescheduled to " + day(15).isoformat() in page
    (after,) = infusion_rows(app, sid)
    assert after["planned_date"] == day(15) and after["version"] == inf["version"] + 1 and after["state"] == "scheduled"
    update = [r for r in audit(app, form="infusion", form_id=inf["id"]) if r["action"] == "update"]
    assert [(r["field"], r["old"], r["new"], r["reason"], r["username"]) for r in update] == [
        ("planned_date", day(14).isoformat(), day(15).isoformat(), "Donor product release delayed", "coord-nb")
    ]
    # the old version is now stale: a second save of it is refused, nothing lost
    page = text(reschedule(login("inv-nb"), sid, inf, day(16), reason="Ward capacity"))
    assert "Infusion 1 was not rescheduled" in page and "since you opened it" in page
    assert infusion_rows(app, sid)[0]["planned_date"] == day(15)


def test_rescheduling_infusion_1_re_anchors_the_visits_and_lymphodepletion_days(app, login):
    sid = sid_of(app, "NB-001")
    coord = login("coord-nb")
    (inf,) = infusion_rows(app, sid)
    with app.app_context():
        before = {
            v.code: v.target_date for v in db.session.execute(select(Visit).where(Visit.subject_id == sid)).scalars()
        }
        lymph_before = {
            d.day: d.planned_date
            for d in db.session.execute(
                select(LymphodepletionDay).where(LymphodepletionDay.subject_id == sid)
            ).scalars()
        }
    assert before["D1"] == day(15) and lymph_before == {-5: day(9), -4: day(10), -3: day(11)}

    new = day(17)
    page = text(reschedule(coord, sid, inf, new, reason="Subject travelling"))
    assert "Infusion 1 rescheduled to " + new.isoformat() in page
    with app.app_context():
        visits = {v.code: v for v in db.session.execute(select(Visit).where(Visit.subject_id == sid)).scalars()}
        assert visits["D1"].target_date == new + timedelta(days=1)
        assert (visits["D7"].earliest, visits["D7"].target_date, visits["D7"].latest) == (
            new + timedelta(days=6),
            new + timedelta(days=7),
            new + timedelta(days=8),
        )
        assert visits["D28"].target_date == new + timedelta(days=28)
        assert visits["M2"].target_date == add_months(new, 2)
        lymph = {
            d.day: d.planned_date
            for d in db.session.execute(
                select(LymphodepletionDay).where(LymphodepletionDay.subject_id == sid)
            ).scalars()
        }
        assert lymph == {-5: new - timedelta(days=5), -4: new - timedelta(days=4), -3: new - timedelta(days=3)}
        d1_id = visits["D1"].id
    shifted = [
        r for r in audit(app, form="visit", form_id=d1_id) if r["field"] == "target_date" and r["action"] == "assign"
    ]
    assert [(r["old"], r["new"], r["reason"]) for r in shifted] == [
        (day(15).isoformat(), day(18).isoformat(), "infusion 1 rescheduled: Subject travelling")
    ]
    lymph_trail = [
        r
        for r in audit(app, subject_id=sid, form="lymphodepletion")
        if r["field"] == "planned_date" and r["action"] == "assign"
    ]
    assert sorted((r["old"], r["new"]) for r in lymph_trail) == sorted(
        (lymph_before[k].isoformat(), (new + timedelta(days=k)).isoformat()) for k in (-5, -4, -3)
    )
    assert all(r["reason"] == "infusion 1 rescheduled: Subject travelling" for r in lymph_trail)
    # the plan's target dates move too (infusion 2 targets day 7 of the new anchor)
    assert f"{(new + timedelta(days=7)).isoformat()} (day 7)" in text(coord.get(f"/subjects/{sid}/infusions"))


def test_moving_infusion_1_by_a_day_while_infusion_2_is_scheduled_is_judged_as_infusion_1(app, login):
    sid = sid_of(app, "NB-001")
    assert schedule(login("coord-nb"), sid, day(21)).status_code == 302  # infusion 2 on its target day
    with app.test_request_context():
        subject = subject_by_number("NB-001")
        first = next(i for i in subject.infusions if i.number == 1)
        # 6 days before infusion 2 (the minimum interval), and infusion 2 stays in its window (T+22 +/- 1)
        evaluation = proposal.evaluate_proposal(subject, day(15), exclude=first)
        assert evaluation["number"] == 1 and evaluation["is_first"]
        assert evaluation["lockouts"] == [] and evaluation["target_deviation"] is None


def test_cancelling_needs_a_reason(app, login):
    sid = sid_of(app, "HZ-001")
    inf2 = active(app, sid)[1]
    response = login("coord-hz").post(
        f"/subjects/{sid}/infusions/{inf2['id']}/cancel",
        data={"version": str(inf2["version"]), "reason": "  "},
        follow_redirects=True,
    )
    assert "Give the reason for cancelling." in text(response)
    assert infusion_rows(app, sid)[1] == inf2
    assert not [r for r in audit(app, form="infusion", form_id=inf2["id"]) if r["action"] == "update"]


def test_cancelling_with_a_reason_keeps_the_record_and_its_history(app, login):
    sid = sid_of(app, "HZ-001")
    coord = login("coord-hz")
    inf2 = active(app, sid)[1]
    response = coord.post(
        f"/subjects/{sid}/infusions/{inf2['id']}/cancel",
        data={"version": str(inf2["version"]), "reason": "Subject withdrew consent for dosing"},
        follow_redirects=True,
    )
    assert "Infusion 2 cancelled." in text(response)
    row = next(i for i in infusion_rows(app, sid) if i["id"] == inf2["id"])
    assert (row["state"], row["cancel_reason"], row["planned_date"]) == (
        "cancelled",
        "Subject withdrew consent for dosing",
        day(1),
    )
    changes = {r["field"]: r for r in audit(app, form="infusion", form_id=inf2["id"]) if r["action"] == "update"}
    assert (changes["state"]["old"], changes["state"]["new"], changes["state"]["reason"]) == (
        "scheduled",
        "cancelled",
        "Subject withdrew consent for dosing",
    )
    assert "Subject withdrew consent for dosing" in text(coord.get(f"/subjects/{sid}/infusions"))
    # the next proposal is infusion 2 again
    assert "Infusion 2 on <strong>" in text(coord.get(f"/subjects/{sid}/infusions?proposed={day(1).isoformat()}"))


def test_an_infusion_before_enrolment_is_refused(app, login):
    sid = sid_of(app, "HZ-S004")
    with app.app_context():
        version = subject_by_number("HZ-S004").current_screening.version
    assert (
        login("inv-hz")
        .post(
            f"/subjects/{sid}/enrol",
            data={"password": PW, "confirm": "y", "screening_version": str(version), "dose_level": "DL1"},
        )
        .status_code
        == 302
    )
    response = schedule(login("coord-hz"), sid, day(-3))  # enrolled today; no washout blocks T-3
    assert response.status_code == 200
    messages = re.findall(r'<div class="(?:error|flash error)"[^>]*>(.*?)</div>', text(response), re.S)
    assert any("enrol" in m for m in messages), messages
    assert infusion_rows(app, sid) == []


def test_a_half_life_of_zero_is_refused_at_the_field(app, login):
    sid = sid_of(app, "NB-001")
    coord = login("coord-nb")
    response = coord.post(
        f"/subjects/{sid}/exposures/new",
        data={
            "category": "systemic_antitumor",
            "name": "Gilteritinib",
            "start_date": day(-3).isoformat(),
            "last_date": day(-1).isoformat(),
            "half_life_days": "0",
        },
    )
    assert response.status_code == 200 and "A half-life must be greater than zero." in text(response)
    with app.app_context():
        assert [e.name for e in subject_by_number("NB-001").exposures] == ["Venetoclax + azacitidine"]


# --- study settings in force on the scheduling screen ---------------------------------------


def test_an_amended_minimum_interval_changes_the_min_interval_lockout(app, login):
    from cellstudy.settings import editable_settings

    sid = sid_of(app, "HZ-001")
    coord = login("coord-hz")
    url = f"/subjects/{sid}/infusions?proposed={day(7).isoformat()}"  # 6 days after infusion 2 (T+1)
    assert "no lockout" in text(coord.get(url))

    form = {key: "" if value is None else str(value) for key, value, _ in editable_settings()}
    form.update(
        {
            "regimen.min_interval_days": "7",
            "version": "2.0 (amendment 1)",
            "reason": "DSMB recommendation",
            "effective_date": day(0).isoformat(),
        }
    )
    assert login("admin").post("/admin/study", data=form).status_code == 302
    assert [(r["field"], r["old"], r["new"]) for r in audit(app, action="setting")] == [
        ("regimen.min_interval_days", "6", "7")
    ]
    # issue 11: in force once an investigator approves it with an e-signature
    assert "no lockout" in text(coord.get(url))
    amendment_id = [r["form_id"] for r in audit(app, action="setting")][0]
    assert (
        login("inv-hz")
        .post("/amendments/approve", data={"amendment_id": str(amendment_id), "password": PW, "confirm": "y"})
        .status_code
        == 302
    )

    page = text(coord.get(url))
    items = lockout_items(page)
    assert list(items) == ["min_interval"]
    assert (
        until_of(items["min_interval"]) == day(8).isoformat()
        and "minimum 7 days between two infusions" in items["min_interval"]
    )
    assert f"Use {day(8).isoformat()}" in page
    response = schedule(coord, sid, day(7))
    assert response.status_code == 200 and len(active(app, sid)) == 2


# --- the study calendar -------------------------------------------------------------------


def calendar_rows(page: str) -> list[str]:
    body = page.split('<table class="grid" id="calendar">')[1].split("</table>")[0]
    return [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)[1:]
    ]


def test_the_calendar_lists_the_sites_infusions_and_visits_of_the_next_4_weeks(app, login, clock):
    rows = calendar_rows(text(login("coord-hz").get("/calendar")))
    assert any(r.startswith(day(1).isoformat()) and "HZ-001" in r and "Infusion 2" in r for r in rows)
    for code, target in (("Day 7", 1), ("Day 14", 8), ("Day 21", 15), ("Day 28", 22)):
        assert any(r.startswith(day(target).isoformat()) and "HZ-001" in r and f"Visit {code}" in r for r in rows), code
    assert not any("Month 2" in r for r in rows)  # beyond 4 weeks
    assert not any(re.search(r"Visit Day [13] ", r) for r in rows)  # D1 and D3 of HZ-001 are done
    assert not any("NB-" in r for r in rows)  # another site's subjects are not listed
    nb_rows = calendar_rows(text(login("coord-nb").get("/calendar")))
    assert any(r.startswith(day(14).isoformat()) and "NB-001" in r and "Infusion 1" in r for r in nb_rows)
    assert not any("HZ-" in r for r in nb_rows)
    dm_rows = calendar_rows(text(login("dm").get("/calendar")))
    assert any("HZ-001" in r for r in dm_rows) and any("NB-001" in r for r in dm_rows)
    assert not any(
        LOCKOUT_LABELS["min_interval"] in r or "Vaccine" in r or "locked" in r for r in rows
    )  # nothing to warn about


def test_the_calendar_warns_of_a_lockout_on_a_scheduled_infusion(app, login, clock):
    sid = sid_of(app, "HZ-001")
    inv = login("inv-hz")
    # a vaccine inside the no-vaccination window (a signed deviation) locks infusion 2 out
    response = post_vaccine_deviation(inv, sid, last_date=day(-1), password=PW)
    assert response.status_code == 302
    (row,) = [r for r in calendar_rows(text(login("coord-hz").get("/calendar"))) if "Infusion 2" in r]
    # the label people read (the code itself is on hover), from the one declaration
    assert (
        f"{LOCKOUT_LABELS['vaccine']} :" in row
        and "Influenza (inactivated)" in row
        and "inside the vaccination window" in row
        and "locked" in row
    )
    with app.test_request_context():
        items = worklists.calendar([subject_by_number("HZ-001").site_id], date.today())["items"]
        (item,) = [i for i in items if i["kind"] == "infusion"]
        assert [w["code"] for w in item["warnings"]] == ["vaccine"]


def test_the_calendar_does_not_warn_about_a_valid_plan(app, login, clock):
    sid = sid_of(app, "HZ-001")
    coord = login("coord-hz")
    assert schedule(coord, sid, day(8)).status_code == 302  # infusion 3 on its target day, no lockout
    rows = [r for r in calendar_rows(text(coord.get("/calendar"))) if "Infusion" in r]
    assert len(rows) == 2
    assert not any(LOCKOUT_LABELS["min_interval"] in r or "locked" in r for r in rows), rows


def test_the_calendar_still_warns_of_a_lockout_that_arose_after_an_override(app, login):
    sid = sid_of(app, "HZ-001")
    inv = login("inv-hz")
    assert schedule(inv, sid, day(2), **override(deviation="Earlier dose on medical advice")).status_code == 302
    assert post_vaccine_deviation(inv, sid, last_date=day(-1), password=PW).status_code == 302
    (row,) = [r for r in calendar_rows(text(login("coord-hz").get("/calendar"))) if "Infusion 3" in r]
    assert f"{LOCKOUT_LABELS['vaccine']} :" in row and "locked" in row, row


def test_the_calendar_pages_in_date_order_without_a_query_per_row(app):
    """50 items a page, ordered by the database; the subjects' logs loaded once per page."""
    from sqlalchemy import event

    with app.app_context():
        first = worklists.calendar(ALL_SITES, date.today(), 28, page=1, per_page=3)
        assert first["total"] >= 4 and first["pages"] == -(-first["total"] // 3) and len(first["items"]) == 3
        second = worklists.calendar(ALL_SITES, date.today(), 28, page=2, per_page=3)
        dates = [i["date"] for i in first["items"] + second["items"]]
        assert dates == sorted(dates)
        assert not {id(i["record"]) for i in first["items"]} & {id(i["record"]) for i in second["items"]}
        statements = []
        listener = lambda *args: statements.append(1)  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            db.session.expunge_all()
            worklists.calendar(ALL_SITES, date.today(), 28, page=1, per_page=50)
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        assert len(statements) <= 12, len(statements)
        # a page past the last shows the last one, with the same count (issue 14: the count
        # rides on the page's statement; past the end it is counted apart)
        last = worklists.calendar(ALL_SITES, date.today(), 28, page=first["pages"], per_page=3)
        past = worklists.calendar(ALL_SITES, date.today(), 28, page=first["pages"] + 5, per_page=3)
        assert past["page"] == last["page"] == first["pages"] and past["total"] == first["total"]
        assert [i["record"].id for i in past["items"]] == [i["record"].id for i in last["items"]]
        assert 1 <= len(last["items"]) <= 3
        none = worklists.calendar(ALL_SITES, date.today() + timedelta(days=3000), 28, page=4, per_page=3)
        assert (none["total"], none["page"], none["pages"], none["items"]) == (0, 1, 1, [])
