"""Property (issue 11): for random sequences of fact changes made over HTTP as site staff
would make them, every stored judgement of a planned infusion equals a fresh
`lockouts.check` of the same facts.

The oracle builds each case from this test's own log of the changes it made (the demo's
starting facts read once, then only what each accepted request changed), never from the
app's fact-gathering code; the stored judgements are read by SQL. A request the app refuses
(a lockout, a validation) changes nothing and is not logged: whether it was accepted is read
from the row's version."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cellstudy.extensions import db
from cellstudy.infusions import lockouts
from tests.helpers import subject_by_number
from tests.helpers import post_related_ae

PW = "cellstudy-demo"
T = date.today()
EXPOSURE_CATEGORIES = (
    "systemic_steroid",
    "systemic_antitumor",
    "radiotherapy",
    "intrathecal",
    "vaccine",
    "major_surgery",
    "donor_lymphocyte_infusion",
    "diagnostic_biopsy",
)
RELATED = {"unrelated": False, "unlikely": False, "possible": True, "probable": True, "definite": True}


def d(n: int) -> date:
    return T + timedelta(days=n)


@dataclass
class Facts:
    """What the test knows of one subject, from its own log."""

    subject_id: int
    enrolled: date | None
    exposures: dict = field(default_factory=dict)  # id -> {category, name, last_date, half_life_days, ...}
    aes: dict = field(default_factory=dict)  # id -> {term, grade, category, related, open}
    infusions: dict = field(default_factory=dict)  # id -> {number, planned, given, state}


def _rows(app, sql: str, **params):
    with app.app_context():
        return db.session.execute(sa.text(sql), params).mappings().all()


def _start(app, number: str) -> Facts:
    """The demo's starting facts, read once."""
    with app.app_context():
        subject = subject_by_number(number)
        from cellstudy.timeutil import site_date

        facts = Facts(subject.id, site_date(subject.enrolled_at, subject.site) if subject.enrolled_at else None)
    for e in _rows(app, "SELECT * FROM exposure WHERE subject_id = :s AND status != 'deleted'", s=facts.subject_id):
        facts.exposures[e["id"]] = {
            "category": e["category"],
            "name": e["name"],
            "last_date": _date(e["last_date"]),
            "half_life_days": Decimal(e["half_life_days"]) if e["half_life_days"] else None,
            "physiological_replacement": bool(e["physiological_replacement"]),
        }
    for a in _rows(
        app, "SELECT * FROM adverse_event WHERE subject_id = :s AND status != 'deleted'", s=facts.subject_id
    ):
        facts.aes[a["id"]] = {
            "term": a["term"] or a["verbatim"] or "unspecified",
            "grade": a["grade"],
            "category": a["category"],
            "related": a["related"] if a["related"] is None else bool(a["related"]),
            "open": a["end_date"] is None,
        }
    for i in _rows(app, "SELECT * FROM infusion WHERE subject_id = :s", s=facts.subject_id):
        data = i["data"] if isinstance(i["data"], dict) else __import__("json").loads(i["data"] or "{}")
        facts.infusions[i["id"]] = {
            "number": i["number"],
            "planned": _date(i["planned_date"]),
            "given": _date(data.get("administration_date")),
            "state": i["state"],
        }
    return facts


def _date(value):
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _version(app, table: str, row_id: int):
    rows = _rows(app, f"SELECT version FROM {table} WHERE id = :i", i=row_id)
    return rows[0]["version"] if rows else None


# --- the oracle -------------------------------------------------------------------------------------


def expected(facts: Facts) -> dict[int, list[tuple]]:
    """{infusion id: [(code, until, reason or None)]} for every planned infusion, from the log."""
    out = {}
    active = {i: inf for i, inf in facts.infusions.items() if inf["state"] != "cancelled"}
    exposures = [dict(e) for e in facts.exposures.values() if e["last_date"] is not None]
    aes = [
        {"term": a["term"], "grade": a["grade"], "category": a["category"], "related": a["related"]}
        for a in facts.aes.values()
        if a["open"] and a["grade"] is not None
    ]
    for inf_id, inf in active.items():
        if inf["state"] != "scheduled":
            continue
        proposed = inf["planned"]
        others = [o["given"] or o["planned"] for i, o in active.items() if i != inf_id]
        case = {
            "proposed_date": proposed,
            "infusion_dates": [x for x in others if x < proposed],
            "exposures": exposures,
            "open_adverse_events": aes,
        }
        result = lockouts.check(case)
        found = [(lo["code"], lo["until"], lo["reason"]) for lo in result["lockouts"]]
        # moving/keeping an infusion keeps the minimum interval to the infusions after it too
        close = [x for x in others if x >= proposed and (x - proposed).days < 6]
        if close and not any(code == "min_interval" for code, _, _ in found):
            found.append(("min_interval", None, None))
        if facts.enrolled and proposed < facts.enrolled:
            found.insert(0, ("before_enrolment", facts.enrolled.isoformat(), None))
        out[inf_id] = found
    return out


def stored(app, facts: Facts) -> dict[int, list[tuple]]:
    rows = _rows(
        app,
        "SELECT j.infusion_id, j.lockouts FROM infusion_judgement j JOIN infusion i "
        "ON i.id = j.infusion_id WHERE j.subject_id = :s AND i.state = 'scheduled'",
        s=facts.subject_id,
    )
    out = {}
    for row in rows:
        value = row["lockouts"] if isinstance(row["lockouts"], list) else __import__("json").loads(row["lockouts"])
        out[row["infusion_id"]] = [(lo["code"], lo["until"], lo["reason"]) for lo in value]
    return out


def assert_consistent(app, facts: Facts, step: str) -> None:
    want, got = expected(facts), stored(app, facts)
    assert set(got) == set(want), f"after {step}: judged infusions {sorted(got)} != planned {sorted(want)}"
    for inf_id, lockout_list in want.items():
        have = got[inf_id]
        assert [(c, u) for c, u, _ in have] == [(c, u) for c, u, _ in lockout_list], (step, inf_id, have, lockout_list)
        for (_, _, reason), (_, _, mine) in zip(have, lockout_list, strict=False):
            if mine is not None:
                assert reason == mine, (step, inf_id)


# --- the actions (each: a request as staff make it; logged only when accepted) -------------------------


class Actor:
    def __init__(self, app, rng, coord, inv, facts: Facts):
        self.app, self.rng, self.coord, self.inv, self.facts = app, rng, coord, inv, facts
        self.sid = facts.subject_id

    def add_exposure(self):
        category = self.rng.choice(EXPOSURE_CATEGORIES)
        last = d(self.rng.randint(-40, 30))
        data = {
            "category": category,
            "name": f"{category} {self.rng.randint(1, 999)}",
            "last_date": last.isoformat(),
            "deviation_reason": "Property test",
            "password": PW,
        }
        if category == "systemic_antitumor" and self.rng.random() < 0.5:
            data["half_life_days"] = str(self.rng.choice(["0.5", "1", "2.5", "4"]))
        who = self.inv if category == "vaccine" else self.coord
        path = f"/subjects/{self.sid}/vaccinations" if category == "vaccine" else f"/subjects/{self.sid}/exposures/new"
        if category == "vaccine":
            data = {
                "name": data["name"],
                "last_date": min(last, d(0)).isoformat(),
                "deviation_reason": "Property test",
                "password": PW,
            }
            last = min(last, d(0))
        before = {r["id"] for r in _rows(self.app, "SELECT id FROM exposure WHERE subject_id = :s", s=self.sid)}
        who.post(path, data=data)
        new = [
            r["id"]
            for r in _rows(self.app, "SELECT id FROM exposure WHERE subject_id = :s", s=self.sid)
            if r["id"] not in before
        ]
        for exposure_id in new:
            self.facts.exposures[exposure_id] = {
                "category": category,
                "name": data["name"],
                "last_date": last,
                "half_life_days": Decimal(data["half_life_days"]) if data.get("half_life_days") else None,
                "physiological_replacement": False,
            }
        return f"add {category} {last}" if new else None

    def correct_exposure(self):
        if not self.facts.exposures:
            return None
        exposure_id = self.rng.choice(sorted(self.facts.exposures))
        e = self.facts.exposures[exposure_id]
        last = d(self.rng.randint(-40, 30))
        if e["category"] == "vaccine":
            last = min(last, d(0))
        version = _version(self.app, "exposure", exposure_id)
        data = {
            "version": str(version),
            "category": e["category"],
            "name": e["name"],
            "last_date": last.isoformat(),
            "reason": "corrected date",
        }
        if e["half_life_days"]:
            data["half_life_days"] = format(e["half_life_days"], "f")
        self.inv.post(f"/subjects/{self.sid}/exposures/{exposure_id}", data=data)
        if _version(self.app, "exposure", exposure_id) != version:
            e["last_date"] = last
            return f"correct exposure {exposure_id} to {last}"
        return None

    def remove_exposure(self):
        if not self.facts.exposures:
            return None
        exposure_id = self.rng.choice(sorted(self.facts.exposures))
        version = _version(self.app, "exposure", exposure_id)
        self.coord.post(
            f"/subjects/{self.sid}/exposures/{exposure_id}/remove",
            data={"version": str(version), "reason": "entered in error"},
        )
        if _rows(self.app, "SELECT status FROM exposure WHERE id = :i", i=exposure_id)[0]["status"] == "deleted":
            del self.facts.exposures[exposure_id]
            return f"remove exposure {exposure_id}"
        return None

    def open_ae(self):
        grade = self.rng.randint(1, 4)
        related_nk = self.rng.choice([*RELATED, None])
        data = {
            "version": "0",
            "term": "Nausea",
            "onset_date": d(-1).isoformat(),
            "ongoing": "yes",
            "grade": str(grade),
            "serious": "no",
            "related_ld": "unlikely",
            "expectedness": "expected",
            "action": "none",
            "outcome": "recovering",
        }
        if related_nk is not None:
            data["related_nk"] = related_nk
            data["complete"] = "1"
        else:
            data.pop("related_ld")
        response = self.coord.post(f"/subjects/{self.sid}/adverse-events/new", data=data)
        if response.status_code != 302:
            return None
        ae_id = int(response.headers["Location"].rsplit("/", 1)[1])
        related = None if related_nk is None else RELATED[related_nk]
        self.facts.aes[ae_id] = {
            "term": "Nausea",
            "grade": grade,
            "category": "other",
            "related": related,
            "open": True,
        }
        return f"open AE {ae_id} grade {grade} related {related}"

    def regrade_ae(self):
        open_aes = [i for i, a in self.facts.aes.items() if a["open"] and a["category"] == "other"]
        if not open_aes:
            return None
        ae_id = self.rng.choice(sorted(open_aes))
        grade = self.rng.randint(1, 4)
        version = _version(self.app, "adverse_event", ae_id)
        self.coord.post(
            f"/subjects/{self.sid}/adverse-events/{ae_id}/grade",
            data={"version": str(version), "new_grade": str(grade), "change_date": d(0).isoformat()},
        )
        if _version(self.app, "adverse_event", ae_id) != version:
            row = _rows(self.app, "SELECT grade FROM adverse_event WHERE id = :i", i=ae_id)[0]
            # the AE's grade is the worst of its episodes: the log keeps the worst it recorded
            self.facts.aes[ae_id]["grade"] = max(self.facts.aes[ae_id]["grade"], grade)
            assert row["grade"] == self.facts.aes[ae_id]["grade"]
            return f"regrade AE {ae_id} to {grade}"
        return None

    def remove_ae(self):
        if not self.facts.aes:
            return None
        ae_id = self.rng.choice(sorted(self.facts.aes))
        version = _version(self.app, "adverse_event", ae_id)
        self.coord.post(
            f"/subjects/{self.sid}/adverse-events/{ae_id}/remove", data={"version": str(version), "reason": "duplicate"}
        )
        if _rows(self.app, "SELECT status FROM adverse_event WHERE id = :i", i=ae_id)[0]["status"] == "deleted":
            del self.facts.aes[ae_id]
            return f"remove AE {ae_id}"
        return None

    def reschedule(self):
        planned = [i for i, inf in self.facts.infusions.items() if inf["state"] == "scheduled"]
        if not planned:
            return None
        inf_id = self.rng.choice(sorted(planned))
        new = self.facts.infusions[inf_id]["planned"] + timedelta(days=self.rng.choice([-2, -1, 1, 2, 3]))
        version = _version(self.app, "infusion", inf_id)
        self.inv.post(
            f"/subjects/{self.sid}/infusions/{inf_id}/reschedule",
            data={
                "version": str(version),
                "proposed_date": new.isoformat(),
                "reason": "clinic capacity",
                "deviation_reason": "clinic capacity",
                "override_reason": "benefit outweighs the risk",
                "password": PW,
            },
        )
        if _version(self.app, "infusion", inf_id) != version:
            self.facts.infusions[inf_id]["planned"] = new
            return f"reschedule infusion {inf_id} to {new}"
        return None

    def schedule(self):
        active = [inf for inf in self.facts.infusions.values() if inf["state"] != "cancelled"]
        if len(active) >= 3 or not active:
            return None
        last = max(inf["given"] or inf["planned"] for inf in active)
        proposed = last + timedelta(days=7)
        before = {r["id"] for r in _rows(self.app, "SELECT id FROM infusion WHERE subject_id = :s", s=self.sid)}
        self.inv.post(
            f"/subjects/{self.sid}/infusions",
            data={
                "proposed_date": proposed.isoformat(),
                "deviation_reason": "clinic capacity",
                "override_reason": "benefit outweighs the risk",
                "password": PW,
            },
        )
        for r in _rows(self.app, "SELECT id, number FROM infusion WHERE subject_id = :s", s=self.sid):
            if r["id"] not in before:
                self.facts.infusions[r["id"]] = {
                    "number": r["number"],
                    "planned": proposed,
                    "given": None,
                    "state": "scheduled",
                }
                return f"schedule infusion {r['number']} on {proposed}"
        return None

    def cancel(self):
        planned = [i for i, inf in self.facts.infusions.items() if inf["state"] == "scheduled" and inf["number"] != 1]
        if not planned:
            return None
        inf_id = self.rng.choice(sorted(planned))
        version = _version(self.app, "infusion", inf_id)
        self.coord.post(
            f"/subjects/{self.sid}/infusions/{inf_id}/cancel",
            data={"version": str(version), "reason": "patient request"},
        )
        if _version(self.app, "infusion", inf_id) != version:
            self.facts.infusions[inf_id]["state"] = "cancelled"
            return f"cancel infusion {inf_id}"
        return None


ACTIONS = (
    "add_exposure",
    "add_exposure",
    "correct_exposure",
    "remove_exposure",
    "open_ae",
    "open_ae",
    "regrade_ae",
    "remove_ae",
    "reschedule",
    "schedule",
    "cancel",
)


@pytest.mark.parametrize("seed", range(4))
def test_every_stored_judgement_equals_a_fresh_check_of_the_logged_facts(app, login, seed):
    rng = random.Random(seed)
    actors = [
        Actor(app, rng, login("coord-hz"), login("inv-hz"), _start(app, "HZ-001")),
        Actor(app, rng, login("coord-nb"), login("inv-nb"), _start(app, "NB-001")),
    ]
    for actor in actors:
        assert_consistent(app, actor.facts, "the demo's start")
    accepted = []
    for step in range(18):
        actor = rng.choice(actors)
        done = getattr(actor, rng.choice(ACTIONS))()
        if done:
            accepted.append(done)
        for each in actors:
            assert_consistent(app, each.facts, f"step {step}: {done or 'refused'} ({accepted})")
    assert len(accepted) >= 6, accepted  # the sequence really changed facts


def test_the_oracle_sees_a_related_grade_3_ae_that_the_judgement_must_store(app, login):
    """The property cannot pass vacuously: a related grade 3 AE puts toxicity_hold in both."""
    facts = _start(app, "HZ-001")
    actor = Actor(app, random.Random(0), login("coord-hz"), login("inv-hz"), facts)
    response = post_related_ae(actor.coord, facts.subject_id, onset=d(-1))
    assert response.status_code == 302
    facts.aes[int(response.headers["Location"].rsplit("/", 1)[1])] = {
        "term": "Nausea",
        "grade": 3,
        "category": "other",
        "related": True,
        "open": True,
    }
    assert any(code == "toxicity_hold" for lst in expected(facts).values() for code, _, _ in lst)
    assert_consistent(app, facts, "related grade 3 AE")
    assert any(re.search("toxicity_hold", str(lst)) for lst in stored(app, facts).values())
