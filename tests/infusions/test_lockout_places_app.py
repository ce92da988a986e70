"""A planned infusion that is now locked shows its lockout (label with the code, reason,
until) wherever staff work (issue 11, item 2): one test per lockout code x place.

Each case makes a fact change after the infusion was scheduled, as site staff would (an
exposure, a vaccine, an AE, an amendment approved by the investigator), so the lockout exists
only because the stored judgement was kept current. HZ-S004 is enrolled as HZ-002 (DL1) and its first infusion is
scheduled for T+14; HZ-001 has infusion 1 given on T-6 and infusion 2 planned on T+1."""

from __future__ import annotations

import html
import re
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from cellstudy.extensions import db
from cellstudy.infusions.lockouts import LOCKOUT_LABELS
from cellstudy.infusions.models import Infusion, InfusionJudgement
from tests.infusions.test_scheduling_app import PW, add_exposure, clock, day, enrol, schedule, sid_of  # noqa: F401
from tests.helpers import amend_study, post_related_ae, post_vaccine_deviation

FIRST = day(14)


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.get_data(as_text=True))


def _first_infusion(app, login):
    sid = enrol(app, login)
    assert schedule(login("coord-hz"), sid, FIRST).status_code == 302
    return sid


def _exposure(category, last):
    def setup(app, login):
        sid = _first_infusion(app, login)
        add_exposure(login("coord-hz"), sid, category, f"{category} for the test", last)
        return sid, 1

    return setup


def _vaccine(app, login):
    sid = _first_infusion(app, login)
    response = post_vaccine_deviation(login("inv-hz"), sid, last_date=day(-1), password=PW)
    assert response.status_code == 302
    return sid, 1


def _toxicity_hold(app, login):
    sid = sid_of(app, "HZ-001")  # infusion 2 planned on T+1: a related grade 3 AE holds it
    response = post_related_ae(login("coord-hz"), sid, onset=day(-1))
    assert response.status_code == 302
    return sid, 2


def _min_interval(app, login):
    """HZ-001: infusion 1 given on T-6, infusion 2 planned on T+1; the interval becomes 8 days."""
    amend_study(app, {"regimen.min_interval_days": "8"}, "1.1 (minimum interval 8 days)", password=PW)
    return sid_of(app, "HZ-001"), 2


def _stagger(app, login):
    """HZ-002's first infusion on T+14 is 20 days after the sentinel HZ-001's (T-6); a 21-day stagger."""
    sid = _first_infusion(app, login)
    amend_study(app, {"regimen.sentinel_stagger_days": "21"}, "1.1 (sentinel stagger 21 days)", password=PW)
    return sid, 1


CASES = {
    "washout_steroid": _exposure("systemic_steroid", FIRST - timedelta(days=2)),
    "washout_antitumor": _exposure("systemic_antitumor", FIRST - timedelta(days=13)),
    "washout_radiotherapy": _exposure("radiotherapy", FIRST - timedelta(days=27)),
    "washout_dli": _exposure("donor_lymphocyte_infusion", FIRST - timedelta(days=41)),
    "washout_intrathecal": _exposure("intrathecal", FIRST - timedelta(days=6)),
    "washout_cell_therapy": _exposure("gene_modified_cell_therapy", day(-30)),
    "major_surgery": _exposure("major_surgery", FIRST - timedelta(days=27)),
    "vaccine": _vaccine,
    "toxicity_hold": _toxicity_hold,
    "min_interval": _min_interval,
    "stagger": _stagger,
}
# max_infusions and before_enrolment cannot arise for an infusion once scheduled (docs/decisions.md)

# place -> (who looks, the page, must the lockout appear inside an element with this id)
PLACES = {
    "subject page": ("coord-hz", lambda sid, inf: f"/subjects/{sid}", "treatment"),
    "infusions page": ("coord-hz", lambda sid, inf: f"/subjects/{sid}/infusions", "plan"),
    "administration CRF": ("coord-hz", lambda sid, inf: f"/subjects/{sid}/infusions/{inf}", "infusion-judgement"),
    "calendar": ("coord-hz", lambda sid, inf: "/calendar", "calendar"),
    "overdue list": ("coord-hz", lambda sid, inf: "/overdue", "overdue-infusions"),
    "coordinator start page": ("coord-hz", lambda sid, inf: "/", "locked-infusions"),
    "investigator start page": ("inv-hz", lambda sid, inf: "/", "locked-infusions"),
    "monitor dashboard": ("monitor-hz", lambda sid, inf: "/dashboards/monitor?site=HZ", "locked-infusions"),
    "data manager dashboard": ("dm", lambda sid, inf: "/dashboards/data-manager", "locked-infusions"),
}


def section(page: str, element_id: str) -> str:
    """The element with that id, up to its closing tag (tables and sections are not nested
    in themselves on these pages)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"', page)
    assert match, f"no #{element_id} on the page"
    tag = match.group(1)
    end = page.find(f"</{tag}>", match.end())
    return page[match.start() : end]


def stored(app, infusion_id: int) -> InfusionJudgement:
    with app.app_context():
        row = db.session.get(InfusionJudgement, infusion_id)
        db.session.expunge_all()
        return row


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("code", CASES)
def test_a_locked_planned_infusion_shows_its_lockout(app, login, clock, code, place):  # noqa: F811
    sid, number = CASES[code](app, login)
    with app.app_context():
        infusion = db.session.execute(
            select(Infusion).where(Infusion.subject_id == sid, Infusion.number == number, Infusion.state == "scheduled")
        ).scalar_one()
        infusion_id, planned = infusion.id, infusion.planned_date
    judgement = stored(app, infusion_id)
    assert judgement is not None and judgement.locked
    (lockout,) = [lo for lo in judgement.lockouts if lo["code"] == code]
    username, path, element = PLACES[place]
    if place == "overdue list":
        clock((planned - date.today()).days + 1)  # the day after: planned, not given, now overdue
    page = section(text(login(username).get(path(sid, infusion_id))), element)
    item = re.search(rf'<li class="lockout" data-code="{code}"[^>]*>(.*?)</li>', page, re.S)
    assert item, f"{code} not shown on the {place}"
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", item.group(0)))
    assert LOCKOUT_LABELS[code] in shown and f'title="code: {code}"' in item.group(0)
    assert lockout["reason"] in shown
    if lockout["until"]:
        assert f"First permitted date: {lockout['until']}" in shown
    else:
        assert "Lifted only by a change of the facts" in shown


def test_every_place_stays_quiet_when_nothing_is_locked(app, login):
    """The counterpart: the demo's planned infusions are clear, and no place says locked."""
    with app.app_context():
        assert not db.session.execute(select(InfusionJudgement).where(InfusionJudgement.locked.is_(True))).first()
    sid = sid_of(app, "HZ-001")
    with app.app_context():
        inf = db.session.execute(select(Infusion.id).where(Infusion.subject_id == sid, Infusion.number == 2)).scalar()
    for place, (username, path, element) in PLACES.items():
        if place == "overdue list":
            continue
        page = text(login(username).get(path(sid, inf)))
        assert 'class="lockout"' not in page, place
        if element == "locked-infusions":
            assert "No planned infusion is locked." in section(page, element), place
