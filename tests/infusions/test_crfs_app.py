"""The treatment CRFs through the web app (PROTOCOL 3, 5, 7; issue 3): infusion
administration, lymphodepletion (BSA by Mosteller), follow-up visits and the overdue
list, and the vaccination log with its no-vaccination window.

Dates are relative to date.today() (T), like the demo: HZ-001 had infusion 1 on T-6
(consent T-25), infusion 2 is scheduled on T+1, visits D1/D3 are done; NB-001 has
infusion 1 scheduled on T+14. The `clock` fixture puts the sites' "today" on T+n so
that an infusion can be recorded on its own date."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from cellstudy.enrollment.models import Exposure, Subject
from cellstudy.extensions import db
from cellstudy.infusions.models import Infusion, LymphodepletionDay, Visit
from cellstudy.records.models import Signature
from tests.helpers import subject_by_number
from tests.helpers import audit, deviations, errors, field_errors, flashes, sid_of

PW = "cellstudy-demo"


# --- helpers -----------------------------------------------------------------------------


def day(n: int) -> date:
    return date.today() + timedelta(days=n)


def text(response) -> str:
    return html.unescape(response.data.decode())


def record(app, model, record_id) -> dict:
    with app.app_context():
        r = db.session.get(model, record_id)
        out = {"version": r.version, "status": r.status, "data": dict(r.data or {})}
        for name in ("state", "planned_date", "missed_reason", "target_date"):
            if hasattr(r, name):
                out[name] = getattr(r, name)
        return out


def infusion(app, number: str, n: int) -> dict:
    with app.app_context():
        subject = subject_by_number(number)
        inf = next(i for i in subject.infusions if i.number == n and i.state != "cancelled")
        return {"id": inf.id, "sid": subject.id, "version": inf.version, "planned_date": inf.planned_date}


def subject_status(app, sid: int) -> str:
    with app.app_context():
        return db.session.get(Subject, sid).status


def vaccines(app, sid: int) -> list[dict]:
    with app.app_context():
        rows = db.session.execute(
            select(Exposure).where(Exposure.subject_id == sid, Exposure.category == "vaccine").order_by(Exposure.id)
        ).scalars()
        return [{"id": e.id, "name": e.name, "last_date": e.last_date, "status": e.status} for e in rows]


def signature(app, signature_id: int) -> dict:
    with app.app_context():
        s = db.session.get(Signature, signature_id)
        return {
            "printed_name": s.printed_name,
            "meaning": s.meaning,
            "form": s.form,
            "form_id": s.form_id,
            "valid": s.valid,
        }


@pytest.fixture(autouse=True)
def clock(clock):
    """Pin the one clock (the sites' today and the server's) to T + n days, at 12:00 UTC
    (20:00 in Hangzhou and Ningbo: the same date)."""

    def set_day(n: int) -> None:
        clock.set(datetime.combine(day(n), time(12, 0), tzinfo=timezone.utc))

    set_day(0)
    return set_day


VITALS = {
    f"{p}_{k}": v
    for p in ("pre", "post")
    for k, v in (("temp_c", "36.8"), ("hr", "78"), ("sbp", "122"), ("dbp", "76"), ("spo2", "98"))
}


def administration(version: int, given: date, *, complete=True, **overrides) -> dict:
    """The infusion CRF as a browser posts it, every required answer given."""
    data = {
        "version": str(version),
        "administration_date": given.isoformat(),
        "start_time": "10:05",
        "stop_time": "10:35",
        "premedication": "Paracetamol 500 mg PO",
        "product_lot": "NK-CLL1-24-031",
        "viability_percent": "93.5",
        "weight_kg": "62.5",
        "planned_cells": "100000000",
        "actual_cells": "98000000",
        "infusion_reaction": "no",
        **VITALS,
    }
    data.update(overrides)
    data["complete" if complete else "save"] = "1"
    return {k: v for k, v in data.items() if v is not None}


def administer(session, inf: dict, given: date | None = None, **overrides):
    return session.post(
        f"/subjects/{inf['sid']}/infusions/{inf['id']}",
        data=administration(inf["version"], given or inf["planned_date"], **overrides),
    )


def assert_nothing_saved(app, inf: dict) -> None:
    after = record(app, Infusion, inf["id"])
    assert (after["version"], after["status"], after["state"], after["data"]) == (
        inf["version"],
        "draft",
        "scheduled",
        {},
    )
    assert [r["action"] for r in audit(app, form="infusion", form_id=inf["id"])] == ["create", "set", "set", "set"]


# --- infusion administration -----------------------------------------------------------------


def test_recording_infusion_2_on_its_date_sets_it_given_with_an_audit_trail(app, login, clock):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    coord = login("coord-hz")
    page = text(coord.get(f"/subjects/{inf['sid']}/infusions/{inf['id']}"))
    assert 'value="100000000"' in page and f'value="{day(1).isoformat()}"' in page  # prefilled from the plan
    response = administer(coord, inf)
    assert response.status_code == 302, text(response)[:3000]
    after = record(app, Infusion, inf["id"])
    assert (after["state"], after["status"], after["version"]) == ("given", "complete", inf["version"] + 1)
    assert after["data"]["administration_date"] == day(1).isoformat()
    assert after["data"]["actual_cells"] == 98000000 and after["data"]["viability_percent"] == "93.5"
    trail = audit(app, form="infusion", form_id=inf["id"])
    assert {"action": "assign", "field": "state", "old": "scheduled", "new": "given"}.items() <= next(
        r for r in trail if r["field"] == "state"
    ).items()
    assert any(r["action"] == "status" and (r["old"], r["new"]) == ("draft", "complete") for r in trail)
    assert any(
        r["action"] == "update"
        and r["field"] == "product_lot"
        and r["new"] == "NK-CLL1-24-031"
        and r["username"] == "coord-hz"
        for r in trail
    )
    assert subject_status(app, inf["sid"]) == "on_treatment"  # 2 of 3 given
    assert not deviations(app, inf["sid"])
    assert "given" in text(coord.get(f"/subjects/{inf['sid']}"))


def test_an_administration_date_other_than_the_scheduled_date_is_refused_at_the_field(app, login, clock):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    response = administer(login("coord-hz"), inf, given=day(0))
    page = text(response)
    assert response.status_code == 200
    assert field_errors(page, "administration_date") == [
        f"The infusion is scheduled for {day(1).isoformat()}: reschedule it first, so the lockouts are checked for "
        "the new date."
    ]
    assert_nothing_saved(app, inf)


def test_an_infusion_cannot_be_recorded_before_its_date(app, login, clock):
    clock(0)  # infusion 2 is tomorrow
    inf = infusion(app, "HZ-001", 2)
    page = text(administer(login("coord-hz"), inf))
    assert field_errors(page, "administration_date") == ["This date cannot be in the future."]
    assert_nothing_saved(app, inf)


def test_a_dose_more_than_10_percent_off_needs_a_deviation_reason_and_is_a_deviation(app, login, clock):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    coord = login("coord-hz")
    response = administer(coord, inf, actual_cells="89999999")
    page = text(response)
    assert response.status_code == 200
    assert field_errors(page, "dose_deviation_reason") == [
        "The dose given differs from the planned dose by more than 10%: give a deviation reason."
    ]
    assert_nothing_saved(app, inf)

    response = administer(coord, inf, actual_cells="89999999", dose_deviation_reason="Lower cell yield of the lot")
    assert response.status_code == 302
    assert record(app, Infusion, inf["id"])["state"] == "given"
    (dev,) = deviations(app, inf["sid"])
    assert (dev["kind"], dev["reason"], dev["form"], dev["form_id"]) == (
        "dose_outside_tolerance",
        "Lower cell yield of the lot",
        "infusion",
        inf["id"],
    )
    assert "89999999 cells given for a planned 100000000" in dev["description"]
    page = text(login("monitor-hz").get("/deviations"))
    assert "dose outside tolerance" in page and "Lower cell yield of the lot" in page
    assert "dose outside tolerance" in text(coord.get(f"/subjects/{inf['sid']}"))


@pytest.mark.parametrize("actual", ["90000000", "110000000"])
def test_a_dose_exactly_10_percent_off_is_not_a_deviation(app, login, clock, actual):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    response = administer(login("coord-hz"), inf, actual_cells=actual)
    assert response.status_code == 302, text(response)[:3000]
    after = record(app, Infusion, inf["id"])
    assert after["state"] == "given" and after["data"]["actual_cells"] == int(actual)
    assert "dose_deviation_reason" not in after["data"]
    assert not deviations(app, inf["sid"])


def test_a_stop_time_before_the_start_time_is_refused(app, login, clock):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    page = text(administer(login("coord-hz"), inf, start_time="10:35", stop_time="10:05"))
    assert field_errors(page, "stop_time") == ["The stop time cannot be before the start time."]
    assert_nothing_saved(app, inf)


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("actual_cells", "0", "Enter a value of at least 1."),
        ("actual_cells", "-100000000", "Enter a value of at least 1."),
        ("planned_cells", "0", "Enter a value of at least 1."),
        ("weight_kg", "0", "Enter a value between 2 and 400."),
    ],
)
def test_zero_or_negative_doses_are_refused_at_the_field(app, login, clock, name, value, message):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    response = administer(login("coord-hz"), inf, **{name: value})
    page = text(response)
    assert response.status_code == 200 and message in field_errors(page, name)
    assert "Nothing was saved" in page
    assert_nothing_saved(app, inf)


def test_an_infusion_reaction_needs_a_description(app, login, clock):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    coord = login("coord-hz")
    page = text(administer(coord, inf, infusion_reaction="yes"))
    assert field_errors(page, "reaction_description") == ["Required to complete the form."]
    assert_nothing_saved(app, inf)
    response = administer(
        coord, inf, infusion_reaction="yes", reaction_description="Rigors and fever 38.4 C 20 min into the infusion"
    )
    assert response.status_code == 302
    after = record(app, Infusion, inf["id"])
    assert after["state"] == "given" and after["data"]["infusion_reaction"] is True
    assert after["data"]["reaction_description"].startswith("Rigors")
    assert "An infusion reaction was recorded: record it as an adverse event." in text(
        coord.get(f"/subjects/{inf['sid']}/infusions/{inf['id']}")
    )


def test_a_draft_of_the_infusion_crf_does_not_give_the_infusion_and_a_stale_save_is_refused(app, login, clock):
    clock(1)
    inf = infusion(app, "HZ-001", 2)
    coord, inv = login("coord-hz"), login("inv-hz")
    response = administer(coord, inf, complete=False, product_lot="NK-LOT-A")
    assert response.status_code == 302
    after = record(app, Infusion, inf["id"])
    assert (after["state"], after["status"], after["version"]) == ("scheduled", "draft", inf["version"] + 1)
    # the investigator opened the form before that save: their save is refused, nothing lost
    page = text(administer(inv, inf, product_lot="NK-LOT-B"))
    assert any("since you opened it" in m for m in flashes(page))
    after = record(app, Infusion, inf["id"])
    assert after["data"]["product_lot"] == "NK-LOT-A" and after["state"] == "scheduled"
    assert (
        login("monitor-hz")
        .post(f"/subjects/{inf['sid']}/infusions/{inf['id']}", data=administration(after["version"], day(1)))
        .status_code
        == 403
    )


def test_the_first_infusion_given_puts_the_subject_on_treatment(app, login, clock):
    clock(14)  # NB-001's infusion 1 is scheduled on T+14
    inf = infusion(app, "NB-001", 1)
    assert subject_status(app, inf["sid"]) == "enrolled"
    response = administer(login("coord-nb"), inf)
    assert response.status_code == 302, text(response)[:3000]
    assert record(app, Infusion, inf["id"])["state"] == "given"
    assert subject_status(app, inf["sid"]) == "on_treatment"
    (status,) = [
        r
        for r in audit(app, subject_id=inf["sid"], action="status")
        if r["form"] == "subject" and r["new"] == "on_treatment"
    ]
    assert (status["old"], status["reason"], status["username"]) == ("enrolled", "first infusion given", "coord-nb")
    # the DLT window opens with it (28 days)
    assert f"DLT window ends {day(14 + 28).isoformat()}" in text(login("coord-nb").get(f"/subjects/{inf['sid']}"))


def test_all_three_infusions_given_move_the_subject_to_follow_up(app, login, clock):
    coord = login("coord-hz")
    clock(1)
    inf2 = infusion(app, "HZ-001", 2)
    assert administer(coord, inf2).status_code == 302
    assert subject_status(app, inf2["sid"]) == "on_treatment"
    assert (
        coord.post(f"/subjects/{inf2['sid']}/infusions", data={"proposed_date": day(8).isoformat()}).status_code == 302
    )
    clock(8)
    inf3 = infusion(app, "HZ-001", 3)
    assert inf3["planned_date"] == day(8)
    assert administer(coord, inf3).status_code == 302
    assert record(app, Infusion, inf3["id"])["state"] == "given"
    assert subject_status(app, inf3["sid"]) == "follow_up"
    (status,) = [r for r in audit(app, subject_id=inf3["sid"], action="status") if r["new"] == "follow_up"]
    assert (status["old"], status["reason"]) == ("on_treatment", "all protocol infusions given")


# --- lymphodepletion ------------------------------------------------------------------------


def lymph_day(app, number: str, n: int) -> dict:
    with app.app_context():
        subject = subject_by_number(number)
        d = next(x for x in subject.lymphodepletion_days if x.day == n)
        return {"id": d.id, "sid": subject.id, "version": d.version, "status": d.status, "data": dict(d.data or {})}


def test_the_bsa_is_computed_by_mosteller_from_height_and_weight_not_typed(app, login):
    d = lymph_day(app, "NB-001", -5)
    coord = login("coord-nb")
    url = f"/subjects/{d['sid']}/lymphodepletion/{d['id']}"
    response = coord.post(
        url,
        data={
            "version": str(d["version"]),
            "height_cm": "170",
            "weight_kg": "70",
            "fludarabine_mg_m2": "30",
            "cyclophosphamide_mg_m2": "300",
            "bsa_m2": "2.50",
            "save": "1",
        },
    )  # a typed BSA is not a field of the form
    assert response.status_code == 302, text(response)[:3000]
    after = record(app, LymphodepletionDay, d["id"])
    assert after["data"]["bsa_m2"] == "1.82" and after["version"] == d["version"] + 1
    (bsa,) = [r for r in audit(app, form="lymphodepletion", form_id=d["id"]) if r["field"] == "bsa_m2"]
    assert (bsa["action"], bsa["old"], bsa["new"], bsa["reason"]) == (
        "update",
        None,
        "1.82",
        "BSA computed from height and weight",
    )
    page = text(coord.get(url))
    assert "BSA 1.82 m² (Mosteller)" in page
    assert "expected fludarabine 54.6 mg" in page and "expected cyclophosphamide 546.0 mg" in page


def test_a_changed_weight_recomputes_the_bsa_of_a_completed_day_with_the_reason(app, login):
    d = lymph_day(app, "HZ-001", -5)  # demo: 165 cm, 62.5 kg, complete
    assert d["status"] == "complete" and d["data"]["bsa_m2"] == "1.69"
    coord = login("coord-hz")
    url = f"/subjects/{d['sid']}/lymphodepletion/{d['id']}"
    form = {
        **{k: v for k, v in d["data"].items() if k != "bsa_m2"},
        "version": str(d["version"]),
        "weight_kg": "70",
        "complete": "1",
    }  # every field, as the browser posts the form
    page = text(coord.post(url, data=form))
    assert "This form is complete: give a reason for the change." in field_errors(page, "reason")
    assert record(app, LymphodepletionDay, d["id"])["data"]["bsa_m2"] == "1.69"
    response = coord.post(url, data={**form, "reason": "Weight transcription error"})
    assert response.status_code == 302, text(response)[:3000]
    after = record(app, LymphodepletionDay, d["id"])
    assert after["data"]["bsa_m2"] == "1.79" and after["data"]["weight_kg"] == "70"
    changes = {r["field"]: r for r in audit(app, form="lymphodepletion", form_id=d["id"]) if r["action"] == "update"}
    assert (changes["bsa_m2"]["old"], changes["bsa_m2"]["new"], changes["bsa_m2"]["reason"]) == (
        "1.69",
        "1.79",
        "Weight transcription error",
    )


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("height_cm", "300", "Enter a value between 50 and 250."),
        ("height_cm", "0", "Enter a value between 50 and 250."),
        ("weight_kg", "-70", "Enter a value between 2 and 400."),
        ("stop_time", "08:00", "The stop time cannot be before the start time."),
    ],
)
def test_absurd_lymphodepletion_values_are_refused_at_the_field(app, login, name, value, message):
    d = lymph_day(app, "NB-001", -5)
    data = {
        "version": str(d["version"]),
        "height_cm": "170",
        "weight_kg": "70",
        "start_time": "09:00",
        "stop_time": "11:00",
        "save": "1",
        name: value,
    }
    page = text(login("coord-nb").post(f"/subjects/{d['sid']}/lymphodepletion/{d['id']}", data=data))
    assert message in field_errors(page, name)
    after = record(app, LymphodepletionDay, d["id"])
    assert after["data"] == {} and after["version"] == d["version"]
    assert not [r for r in audit(app, form="lymphodepletion", form_id=d["id"]) if r["action"] == "update"]


# --- follow-up visits ---------------------------------------------------------------------


def visit(app, number: str, code: str) -> dict:
    with app.app_context():
        subject = subject_by_number(number)
        v = next(x for x in subject.visits if x.code == code)
        return {"id": v.id, "sid": subject.id, "version": v.version, "state": v.state, "target_date": v.target_date}


def visit_form(version, visit_date: date, complete=True, **extra) -> dict:
    data = {
        "version": str(version),
        "visit_date": visit_date.isoformat(),
        "temp_c": "36.9",
        "hr": "76",
        "sbp": "118",
        "dbp": "74",
        "spo2": "97",
        "ecog": "1",
        "anc": "0.9",
        "platelets": "61",
        "response": "not_assessed",
        **extra,
    }
    data["complete" if complete else "save"] = "1"
    return data


def test_completing_a_visit_sets_it_done(app, login, clock):
    clock(1)
    v = visit(app, "HZ-001", "D7")  # target T+1, window T..T+2
    assert v["state"] == "planned" and v["target_date"] == day(1)
    coord = login("coord-hz")
    url = f"/subjects/{v['sid']}/visits/{v['id']}"
    assert "due" in text(coord.get(url))
    response = coord.post(url, data=visit_form(v["version"], day(1)))
    assert response.status_code == 302, text(response)[:3000]
    after = record(app, Visit, v["id"])
    assert (after["state"], after["status"]) == ("done", "complete") and after["data"]["ecog"] == 1
    (state,) = [r for r in audit(app, form="visit", form_id=v["id"]) if r["field"] == "state"]
    assert (state["action"], state["old"], state["new"], state["username"]) == ("assign", "planned", "done", "coord-hz")
    # a draft does not make the visit done
    d14 = visit(app, "HZ-001", "D14")
    assert (
        coord.post(
            f"/subjects/{d14['sid']}/visits/{d14['id']}", data=visit_form(d14["version"], day(1), complete=False)
        ).status_code
        == 302
    )
    assert record(app, Visit, d14["id"])["state"] == "planned"


def test_a_visit_before_the_informed_consent_is_refused(app, login):
    v = visit(app, "HZ-001", "D7")
    page = text(
        login("coord-hz").post(f"/subjects/{v['sid']}/visits/{v['id']}", data=visit_form(v["version"], day(-26)))
    )
    assert field_errors(page, "visit_date") == [
        f"A visit cannot be before the informed consent ({day(-25).isoformat()})."
    ]
    after = record(app, Visit, v["id"])
    assert (after["state"], after["status"], after["data"], after["version"]) == ("planned", "draft", {}, v["version"])
    assert [r["action"] for r in audit(app, form="visit", form_id=v["id"])] == ["create", "set", "set"]


def test_a_visit_date_in_the_future_is_refused(app, login, clock):
    clock(0)
    v = visit(app, "HZ-001", "D7")
    page = text(login("coord-hz").post(f"/subjects/{v['sid']}/visits/{v['id']}", data=visit_form(v["version"], day(1))))
    assert field_errors(page, "visit_date") == ["This date cannot be in the future."]
    assert record(app, Visit, v["id"])["data"] == {}


def test_marking_a_visit_missed_needs_a_reason(app, login):
    v = visit(app, "HZ-001", "D7")
    response = login("coord-hz").post(
        f"/subjects/{v['sid']}/visits/{v['id']}/missed",
        data={"version": str(v["version"]), "reason": ""},
        follow_redirects=True,
    )
    assert "Give the reason the visit was missed." in flashes(text(response))
    after = record(app, Visit, v["id"])
    assert (after["state"], after["version"], after["missed_reason"]) == ("planned", v["version"], None)
    assert [r["action"] for r in audit(app, form="visit", form_id=v["id"])] == ["create", "set", "set"]


def test_a_visit_marked_missed_with_a_reason_is_missed_and_audited(app, login):
    v = visit(app, "HZ-001", "D7")
    coord = login("coord-hz")
    response = coord.post(
        f"/subjects/{v['sid']}/visits/{v['id']}/missed",
        data={"version": str(v["version"]), "reason": "Subject admitted to another hospital"},
        follow_redirects=True,
    )
    assert "Visit Day 7 recorded as missed." in flashes(text(response))
    after = record(app, Visit, v["id"])
    assert (after["state"], after["missed_reason"]) == ("missed", "Subject admitted to another hospital")
    (state,) = [r for r in audit(app, form="visit", form_id=v["id"]) if r["field"] == "state"]
    assert (state["old"], state["new"], state["reason"]) == (
        "planned",
        "missed",
        "Subject admitted to another hospital",
    )
    assert "Recorded as missed: Subject admitted to another hospital" in text(
        coord.get(f"/subjects/{v['sid']}/visits/{v['id']}")
    )


def overdue_rows(page: str, table: str) -> list[str]:
    body = page.split(f'id="{table}"')[1].split("</table>")[0]
    return [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]
    ]


def test_the_overdue_list_shows_visits_past_their_window_of_the_users_sites_only(app, login, clock):
    clock(30)  # a month on: HZ-001's D7..D28 and NB-001's D1..D14 are past their windows, nothing recorded
    coord_hz = login("coord-hz")
    v = visit(app, "HZ-001", "D7")
    hz = text(coord_hz.get("/overdue"))
    rows = overdue_rows(hz, "overdue-visits")
    assert [r.split(" ", 2)[2] for r in rows if "HZ-001" in r] == [
        f"Day 7 {day(2).isoformat()}",
        f"Day 14 {day(9).isoformat()}",
        f"Day 21 {day(17).isoformat()}",
        f"Day 28 {day(25).isoformat()}",
    ]
    assert not any("NB-" in r for r in rows)
    assert overdue_rows(hz, "overdue-infusions") == [f"HZ HZ-001 Infusion 2 {day(1).isoformat()}"]
    nb = text(login("coord-nb").get("/overdue"))
    nb_rows = overdue_rows(nb, "overdue-visits")
    assert [r.split(" ", 2)[2] for r in nb_rows] == [
        f"Day 1 {day(15).isoformat()}",
        f"Day 3 {day(18).isoformat()}",
        f"Day 7 {day(22).isoformat()}",
        f"Day 14 {day(29).isoformat()}",
    ]
    assert not any("HZ-" in r for r in nb_rows + overdue_rows(nb, "overdue-infusions"))
    all_rows = overdue_rows(text(login("dm").get("/overdue")), "overdue-visits")
    assert any("HZ-001" in r for r in all_rows) and any("NB-001" in r for r in all_rows)
    # a visit recorded late leaves the list
    assert (
        coord_hz.post(f"/subjects/{v['sid']}/visits/{v['id']}", data=visit_form(v["version"], day(2))).status_code
        == 302
    )
    assert not any(
        "Day 7" in r for r in overdue_rows(text(coord_hz.get("/overdue")), "overdue-visits") if "HZ-001" in r
    )


# --- vaccinations and the no-vaccination window ---------------------------------------------


def plain(d: date) -> str:
    return f"{d.day} {d.strftime('%b %Y')}"


def vaccinate(session, sid, given: date, name="Influenza (inactivated)", **extra):
    return session.post(f"/subjects/{sid}/vaccinations", data={"name": name, "last_date": given.isoformat(), **extra})


def test_the_subject_page_shows_the_no_vaccination_window_in_plain_words(app, login):
    hz, nb = sid_of(app, "HZ-001"), sid_of(app, "NB-001")
    # HZ-001: first infusion T-6 -> from T-33; last infusion of the plan T+8 -> to T+92
    expected = f"No vaccines from {plain(day(-33))} to {plain(day(92))}."
    coord = login("coord-hz")
    for url in (f"/subjects/{hz}", f"/subjects/{hz}/vaccinations", f"/subjects/{hz}/infusions"):
        assert expected in text(coord.get(url)), url
    # NB-001: first infusion planned T+14 -> T-13 to T+28+84
    assert f"No vaccines from {plain(day(-13))} to {plain(day(112))}." in text(login("coord-nb").get(f"/subjects/{nb}"))
    # no window before enrolment
    assert "No vaccines from" not in text(coord.get(f"/subjects/{sid_of(app, 'HZ-S004')}"))


def test_a_vaccine_outside_the_window_is_recorded_plainly(app, login):
    sid = sid_of(app, "HZ-001")
    coord = login("coord-hz")
    response = vaccinate(coord, sid, day(-34), indication="Seasonal")  # the day before the window opens
    assert response.status_code == 302, text(response)[:3000]
    (v,) = vaccines(app, sid)
    assert (v["name"], v["last_date"], v["status"]) == ("Influenza (inactivated)", day(-34), "complete")
    assert not deviations(app, sid)
    trail = audit(app, form="exposure", form_id=v["id"])
    assert trail[0]["action"] == "create" and trail[0]["username"] == "coord-hz"
    assert not [r for r in trail if r["action"] == "sign"]
    page = text(coord.get(f"/subjects/{sid}/vaccinations"))
    assert "Influenza (inactivated)" in page and "protocol deviation" not in page


def test_a_vaccine_inside_the_window_needs_an_investigator_signature_and_a_deviation_reason(app, login):
    sid = sid_of(app, "HZ-001")
    coord, inv = login("coord-hz"), login("inv-hz")
    first_day = day(-33)  # the first day of the window
    page = text(vaccinate(coord, sid, first_day))
    assert any("inside the no-vaccination window" in e for e in field_errors(page, "deviation_reason"))
    page = text(vaccinate(coord, sid, first_day, deviation_reason="Outbreak on the ward", password=PW))
    assert (
        "A vaccine inside the no-vaccination window needs an investigator's e-signature: ask the investigator to "
        "record it." in errors(page)
    )
    page = text(vaccinate(inv, sid, day(-1), password=PW))
    assert any("give a protocol-deviation reason" in e for e in field_errors(page, "deviation_reason"))
    page = text(vaccinate(inv, sid, day(-1), deviation_reason="Outbreak on the ward"))
    assert field_errors(page, "password") == ["Sign the deviation: enter your password."]
    page = text(vaccinate(inv, sid, day(-1), deviation_reason="Outbreak on the ward", password="wrong"))
    assert any("Password not accepted" in e for e in field_errors(page, "password"))
    assert vaccines(app, sid) == [] and deviations(app, sid) == []
    refused = audit(app, subject_id=sid, action="sign_refused")
    assert [(r["username"], r["form"]) for r in refused] == [("inv-hz", "exposure")]

    response = vaccinate(inv, sid, day(-1), deviation_reason="Outbreak on the ward", password=PW)
    assert response.status_code == 302, text(response)[:3000]
    (v,) = vaccines(app, sid)
    (dev,) = deviations(app, sid)
    assert (dev["kind"], dev["reason"], dev["form"], dev["form_id"]) == (
        "vaccine_in_window",
        "Outbreak on the ward",
        "exposure",
        v["id"],
    )
    assert f"inside the no-vaccination window {day(-33).isoformat()} to {day(92).isoformat()}" in dev["description"]
    sig = signature(app, dev["signature_id"])
    assert (sig["printed_name"], sig["form"], sig["form_id"], sig["valid"]) == (
        "Dr Wang Lei",
        "exposure",
        v["id"],
        True,
    )
    assert "no-vaccination window as a protocol deviation" in sig["meaning"]
    assert [r["username"] for r in audit(app, subject_id=sid, action="sign", form="exposure")] == ["inv-hz"]
    # listed per subject and on the deviation list
    page = text(coord.get(f"/subjects/{sid}/vaccinations"))
    assert "protocol deviation</span> Outbreak on the ward" in page and "signed by Dr Wang Lei" in page
    subject_page = text(coord.get(f"/subjects/{sid}"))
    assert "vaccine in window" in subject_page and "Outbreak on the ward" in subject_page
    assert "vaccine in window" in text(login("monitor-hz").get("/deviations"))
    assert "vaccine in window" not in text(login("coord-nb").get("/deviations"))
    # the vaccine now locks the next infusion out until an investigator overrides (PROTOCOL 5.2)
    page = text(inv.get(f"/subjects/{sid}/infusions?proposed={day(8).isoformat()}"))
    item = re.search(r'<li class="lockout" data-code="vaccine">(.*?)</li>', page, re.S).group(1)
    assert "Lifted only by a change of the facts or an investigator override." in item


def test_a_vaccine_on_the_exposure_log_follows_the_same_rule(app, login):
    sid = sid_of(app, "HZ-001")
    coord, inv = login("coord-hz"), login("inv-hz")

    def post(session, given, **extra):
        return session.post(
            f"/subjects/{sid}/exposures/new",
            data={
                "category": "vaccine",
                "name": "Herpes zoster (recombinant)",
                "start_date": given.isoformat(),
                "last_date": given.isoformat(),
                **extra,
            },
        )

    page = text(post(coord, day(-2)))
    assert any("inside the no-vaccination window" in e for e in field_errors(page, "deviation_reason"))
    page = text(post(coord, day(-2), deviation_reason="Post-exposure prophylaxis", password=PW))
    assert any("needs an investigator's e-signature" in e for e in errors(page))
    page = text(post(inv, day(-2), password=PW))
    assert any("give a protocol-deviation reason" in e for e in field_errors(page, "deviation_reason"))
    assert vaccines(app, sid) == [] and deviations(app, sid) == []

    response = post(inv, day(-2), deviation_reason="Post-exposure prophylaxis", password=PW)
    assert response.status_code == 302, text(response)[:3000]
    (v,) = vaccines(app, sid)
    (dev,) = deviations(app, sid)
    assert (dev["kind"], dev["reason"], dev["form_id"]) == ("vaccine_in_window", "Post-exposure prophylaxis", v["id"])
    assert signature(app, dev["signature_id"])["printed_name"] == "Dr Wang Lei"
    assert "Post-exposure prophylaxis" in text(login("dm").get("/deviations"))
    # outside the window the log takes it plainly, from a coordinator
    assert post(coord, day(-40)).status_code == 302
    assert len(vaccines(app, sid)) == 2 and len(deviations(app, sid)) == 1
