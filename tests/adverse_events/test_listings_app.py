"""Safety listings and summaries for investigators (issue 4; PROTOCOL 8), through the
web app against the real database: filters, sorting, paging, site isolation, the SAE
and DLT listings, the summary by SOC/term x worst grade and the CRS/ICANS summary.

Every expectation is computed here independently, in Python over the ORM rows (never
by calling cellstudy.safety.listings), so the test can disagree with the app.

The data: the demo study (HZ-001 on treatment with its AEs, NB-001 with a draft
headache) plus `safety_data`, written straight through the ORM (rows a listing reads;
how they are entered is tested in test_ae_app.py), and one AE entered through the
service (`test_an_ae_saved_through_the_service_is_listed`)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from statistics import median

import pytest
from sqlalchemy import select

from cellstudy.adverse_events import ctcae
from cellstudy.adverse_events.fields import ICANS_TERM, ICANS_VERBATIM
from cellstudy.adverse_events.models import AdverseEvent
from cellstudy.auth.models import Site, User
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.infusions.models import Infusion

T = date.today()
ATTRIBUTION = {
    "unrelated": "Unrelated",
    "unlikely": "Unlikely",
    "possible": "Possible",
    "probable": "Probable",
    "definite": "Definite",
}


def d(n: int) -> date:
    return T + timedelta(days=n)


# --- the data ------------------------------------------------------------------------------

#: subject number -> (site, dose level, infusions as (planned day, administered day or None, state))
SUBJECTS = {
    "HZ-101": ("HZ", "DL1", [(-40, -40, "given"), (-33, -33, "given")]),
    "HZ-102": ("HZ", "DL2", [(-21, -20, "given")]),  # given a day late: the administration date counts
    "HZ-103": ("HZ", "DL2", [(5, None, "scheduled")]),  # never infused: not in the safety population
    "NB-101": ("NB", "DL1", [(-30, -30, "given")]),
    "NB-102": ("NB", "DL2", [(-15, None, "cancelled"), (-10, -10, "given")]),
}


def _ae(term, onset, grade, **kw):
    return {"term": term, "onset": onset, "grade": grade, **kw}


#: subject number -> AEs (numbered 1, 2, ... in this order)
AES = {
    "HZ-101": [
        _ae("Nausea", -41, 1, te=False),  # the day before the first infusion: study day -1
        _ae("Nausea", -30, 3, nk="possible", related=True, end=-25, outcome="recovered"),
        _ae(
            "Febrile neutropenia",
            -29,
            4,
            serious=True,
            dlt=True,
            end=-20,
            outcome="recovered",
            aware=(-29, 10),
            reported_after_h=30,
            susar=True,
            criteria=("sae_hospitalisation",),
        ),
        _ae(
            "Cytokine release syndrome",
            -39,
            2,
            category="crs",
            end=-36,
            outcome="recovered",
            nk="probable",
            related=True,
        ),
        _ae("Sepsis", -35, 5, status="deleted"),
    ],
    "HZ-102": [
        _ae("Nausea", -19, 2),
        _ae(
            "Cytokine release syndrome",
            -18,
            3,
            category="crs",
            serious=True,
            dlt=True,
            aware=(-18, 8),
            criteria=("sae_life_threatening",),
        ),
        _ae("Fatigue", -5, None, status="draft", ongoing=True),
    ],
    "HZ-103": [
        _ae("Headache", -3, 2, te=False, ongoing=True),
    ],
    "NB-101": [
        _ae(ICANS_TERM, -28, 1, category="icans", verbatim=ICANS_VERBATIM, end=-27, outcome="recovered"),
        _ae(
            "Nausea",
            -2,
            5,
            serious=True,
            outcome="fatal",
            ld="definite",
            related=True,
            death=-2,
            aware=(-2, 6),
            reported_after_h=2,
            criteria=("sae_death",),
        ),
    ],
    "NB-102": [
        _ae("Cytokine release syndrome", -9, 1, category="crs", end=-9, outcome="recovered"),
    ],
}


def add_safety_data() -> dict[str, int]:
    """Insert SUBJECTS and AES (inside an app context); returns subject number -> id."""
    sites = {s.code: s for s in db.session.scalars(select(Site))}
    ids = {}
    for number, (site, level, infusions) in SUBJECTS.items():
        subject = Subject(
            site_id=sites[site].id,
            screening_number="S" + number,
            subject_number=number,
            status="on_treatment",
            dose_level=level,
        )
        db.session.add(subject)
        db.session.flush()
        ids[number] = subject.id
        for i, (planned, given, state) in enumerate(infusions, start=1):
            db.session.add(
                Infusion(
                    subject_id=subject.id,
                    number=i,
                    planned_date=d(planned),
                    state=state,
                    dose_level=level,
                    status="complete" if given is not None else "draft",
                    data={"administration_date": d(given).isoformat()} if given is not None else {},
                    version=1,
                )
            )
        for n, spec in enumerate(AES[number], start=1):
            db.session.add(make_ae(subject, n, spec))
    db.session.commit()
    return ids


def make_ae(subject, number, spec) -> AdverseEvent:
    entry = ctcae.get(spec["term"])
    aware = None
    if spec.get("aware"):
        day, hour = spec["aware"]
        aware = datetime.combine(d(day), datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=hour)
    related = spec.get("related", False)
    end = spec.get("end")
    return AdverseEvent(
        subject_id=subject.id,
        site_id=subject.site_id,
        number=number,
        category=spec.get("category", "other"),
        term=entry.term,
        soc=entry.soc,
        meddra_code=entry.meddra_code,
        verbatim=spec.get("verbatim"),
        onset_date=d(spec["onset"]),
        end_date=d(end) if end is not None else None,
        ongoing=spec.get("ongoing", end is None),
        grade=spec["grade"],
        serious=spec.get("serious", False),
        related_nk=spec.get("nk", "unlikely"),
        related_ld=spec.get("ld", "unrelated"),
        related=related,
        expectedness="unexpected" if spec.get("susar") else "expected",
        action="none",
        outcome=spec.get("outcome", "not_recovered"),
        death_date=d(spec["death"]) if spec.get("death") else None,
        dlt=spec.get("dlt", False),
        treatment_emergent=spec.get("te", True),
        awareness_at=aware,
        sae_due_at=aware + timedelta(hours=24) if aware else None,
        sae_reported_at=aware + timedelta(hours=spec["reported_after_h"]) if spec.get("reported_after_h") else None,
        susar=bool(spec.get("susar")),
        susar_due_at=aware + timedelta(days=15) if spec.get("susar") else None,
        status=spec.get("status", "complete"),
        version=1,
        data={c: True for c in spec.get("criteria", ())},
    )


@pytest.fixture
def safety_data(app):
    with app.app_context():
        ids = add_safety_data()
        db.session.remove()
    return ids


# --- the independent expectation -------------------------------------------------------------


@dataclass
class Expected:
    id: int
    subject_id: int
    subject: str
    site: str
    dose_level: str | None
    first: date | None  # first NK-cell infusion given
    ae: AdverseEvent

    @property
    def day(self):
        if self.first is None or self.ae.onset_date is None:
            return None
        delta = (self.ae.onset_date - self.first).days
        return delta + 1 if delta >= 0 else delta


def first_given(subject) -> date | None:
    dates = [i.date for i in subject.infusions if i.state == "given"]
    return min(dates) if dates else None


def expected(app, sites=("HZ", "NB")) -> list[Expected]:
    """Every AE not removed, of the given sites, from the ORM."""
    with app.app_context():
        out = []
        for ae in db.session.scalars(select(AdverseEvent)):
            subject = ae.subject
            if ae.status == "deleted" or subject.site.code not in sites:
                continue
            db.session.expunge(ae)
            out.append(
                Expected(
                    ae.id, subject.id, subject.label, subject.site.code, subject.dose_level, first_given(subject), ae
                )
            )
        db.session.remove()
    return out


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def listed_ids(page: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr class="[^"]*" data-ae="(\d+)"', page)]


def total_of(page: str) -> int:
    return int(re.search(r"([\d,]+) in all", page).group(1).replace(",", ""))


def plain(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


# --- the AE listing ------------------------------------------------------------------------------


def test_ae_listing_lists_every_ae_not_removed_with_drafts_marked(app, login, safety_data):
    rows = expected(app)
    page = text(login("dm").get("/safety/ae"))
    assert total_of(page) == len(rows)
    assert sorted(listed_ids(page)) == sorted(r.id for r in rows)
    # default order: most recent onset first, the AE id breaking ties
    order = sorted(rows, key=lambda r: (r.ae.onset_date, r.id), reverse=True)
    assert listed_ids(page) == [r.id for r in order]
    draft = next(r for r in rows if r.subject == "HZ-102" and r.ae.number == 3)
    row = re.search(rf'<tr class="draft" data-ae="{draft.id}">(.*?)</tr>', page, re.S).group(1)
    assert "s-draft" in row and "Fatigue" in row
    assert "Sepsis" not in page  # removed


def test_ae_listing_row_shows_every_column(app, login, safety_data):
    page = text(login("dm").get("/safety/ae"))
    rows = {r.id: r for r in expected(app)}
    fn = next(r for r in rows.values() if r.subject == "HZ-101" and r.ae.number == 3)
    cells = [
        plain(c).strip()
        for c in re.findall(
            r"<td[^>]*>(.*?)</td>", re.search(rf'data-ae="{fn.id}">(.*?)</tr>', page, re.S).group(1), re.S
        )
    ]
    entry = ctcae.get("Febrile neutropenia")
    assert cells == [
        "HZ-101",
        "HZ",
        "DL1",
        "12",
        "AE 3",
        "Febrile neutropenia",
        entry.soc,
        entry.meddra_code,
        "",
        "4",
        "Yes",
        "Unlikely",
        "Unrelated",
        "Yes",
        d(-29).isoformat(),
        d(-20).isoformat(),
        "Recovered / resolved",
        "complete",
    ]
    ongoing = next(r for r in rows.values() if r.subject == "HZ-103")
    cells = re.findall(
        r"<td[^>]*>(.*?)</td>", re.search(rf'data-ae="{ongoing.id}">(.*?)</tr>', page, re.S).group(1), re.S
    )
    assert cells[3].strip() == ""  # no infusion given: no study day
    assert cells[15].strip() == "Ongoing"


def test_study_day_counts_the_first_infusion_as_day_one(app, login, safety_data):
    """SDTM convention: day 1 = the day of the first NK-cell infusion given (its
    administration date, not the plan); the day before is -1 (no day 0)."""
    page = text(login("dm").get("/safety/ae"))
    rows = expected(app)
    by_key = {(r.subject, r.ae.number): r for r in rows}
    for key, day in (
        (("HZ-101", 1), -1),
        (("HZ-101", 2), 11),
        (("HZ-101", 4), 2),
        (("HZ-102", 1), 2),
        (("NB-102", 1), 2),
        (("HZ-103", 1), None),
    ):
        row = by_key[key]
        assert row.day == day, key
        cells = re.findall(
            r"<td[^>]*>(.*?)</td>", re.search(rf'data-ae="{row.id}">(.*?)</tr>', page, re.S).group(1), re.S
        )
        assert cells[3].strip() == ("" if day is None else str(day)), key


FILTERS = {
    "site=HZ": lambda r: r.site == "HZ",
    "site=nb": lambda r: r.site == "NB",  # codes match case-insensitively
    "dose_level=DL2": lambda r: r.dose_level == "DL2",
    "grade_min=3": lambda r: r.ae.grade is not None and r.ae.grade >= 3,
    "grade_min=5": lambda r: r.ae.grade == 5,
    "serious_only=1": lambda r: r.ae.serious is True,
    "related_only=1": lambda r: r.ae.related is True,
    "te_only=1": lambda r: r.ae.treatment_emergent is True,
    f"date_from={d(-20).isoformat()}": lambda r: r.ae.onset_date >= d(-20),
    f"date_to={d(-20).isoformat()}": lambda r: r.ae.onset_date <= d(-20),
    f"date_from={d(-30).isoformat()}&date_to={d(-28).isoformat()}": lambda r: d(-30) <= r.ae.onset_date <= d(-28),
    "site=HZ&grade_min=3&serious_only=1": lambda r: r.site == "HZ" and (r.ae.grade or 0) >= 3 and r.ae.serious,
    "dose_level=DL1&related_only=1&te_only=1": lambda r: (
        r.dose_level == "DL1" and r.ae.related and r.ae.treatment_emergent
    ),
}


@pytest.mark.parametrize("query", FILTERS)
def test_each_filter_narrows_the_listing(app, login, safety_data, query):
    rows = expected(app)
    wanted = sorted(r.id for r in rows if FILTERS[query](r))
    assert 0 < len(wanted) < len(rows), "the filter must narrow, not empty, the listing"
    page = text(login("dm").get("/safety/ae?" + query))
    assert sorted(listed_ids(page)) == wanted
    assert total_of(page) == len(wanted)
    assert "Some filters were not applied" not in page


SORT_KEYS = {
    "grade": lambda r: r.ae.grade,
    "onset": lambda r: r.ae.onset_date,
    "end": lambda r: r.ae.end_date,
    "ae": lambda r: r.ae.number,
    "subject": lambda r: (r.subject, r.ae.number),
    "site": lambda r: r.site,
    "dose_level": lambda r: r.dose_level,
    "serious": lambda r: r.ae.serious,
    "dlt": lambda r: r.ae.dlt,
    "related_nk": lambda r: list(ATTRIBUTION).index(r.ae.related_nk) if r.ae.related_nk else None,
    "outcome": lambda r: (
        ["recovered", "recovering", "not_recovered", "recovered_with_sequelae", "fatal", "unknown"].index(r.ae.outcome)
        if r.ae.outcome
        else None
    ),
    "meddra_code": lambda r: r.ae.meddra_code,
}


def sort_expected(rows, key, descending):
    """Empty values last in both directions, the AE id breaking ties (in the same direction)."""
    present = [r for r in rows if key(r) is not None]
    empty = [r for r in rows if key(r) is None]
    present.sort(key=lambda r: (key(r), r.id), reverse=descending)
    empty.sort(key=lambda r: r.id, reverse=descending)
    return [r.id for r in present + empty]


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("column", SORT_KEYS)
def test_sorting_by_a_column(app, login, safety_data, column, direction):
    rows = expected(app)
    page = text(login("dm").get(f"/safety/ae?sort={column}&dir={direction}"))
    assert listed_ids(page) == sort_expected(rows, SORT_KEYS[column], direction == "desc")
    assert re.search(rf'data-key="{column}" aria-sort="{"ascending" if direction == "asc" else "descending"}"', page)


def test_column_headings_link_to_the_sorted_listing_keeping_the_filters(login, safety_data):
    page = text(login("dm").get("/safety/ae?site=HZ&grade_min=2"))
    link = re.search(r'data-key="term" aria-sort="none">\s*<a href="([^"]+)"', page).group(1)
    assert "sort=term" in link and "dir=asc" in link and "site=HZ" in link and "grade_min=2" in link
    # the active column flips direction
    page = text(login("dm").get("/safety/ae?sort=term&dir=asc"))
    link = re.search(r'data-key="term" aria-sort="ascending">\s*<a href="([^"]+)"', page).group(1)
    assert "dir=desc" in link
    # the study day is computed per row: not a sort key
    assert 'data-key="day" aria-sort' not in page


def test_paging_50_a_page_with_the_total(app, login, safety_data):
    with app.app_context():
        subject = db.session.get(Subject, safety_data["NB-101"])
        for n in range(3, 123):
            db.session.add(make_ae(subject, n, _ae("Nausea", -1 - n % 20, 1 + n % 4)))
        db.session.commit()
        db.session.remove()
    rows = expected(app)
    order = [r.id for r in sorted(rows, key=lambda r: (r.ae.onset_date, r.id), reverse=True)]
    session = login("dm")
    seen = []
    pages = -(-len(rows) // 50)
    for number in range(1, pages + 1):
        page = text(session.get(f"/safety/ae?page={number}"))
        ids = listed_ids(page)
        assert len(ids) == (50 if number < pages else len(rows) - 50 * (pages - 1))
        assert total_of(page) == len(rows)
        assert f"page {number} of {pages}" in page
        assert ('rel="next"' in page) == (number < pages) and ('rel="prev"' in page) == (number > 1)
        seen += ids
    assert seen == order
    # past the end: the last page
    page = text(session.get("/safety/ae?page=999"))
    assert f"page {pages} of {pages}" in page and listed_ids(page) == order[50 * (pages - 1) :]


@pytest.mark.parametrize(
    "username, sites", [("coord-nb", ("NB",)), ("inv-hz", ("HZ",)), ("monitor-hz", ("HZ",)), ("dm", ("HZ", "NB"))]
)
def test_listings_show_only_the_users_sites(app, login, safety_data, username, sites):
    session = login(username)
    for listing, keep in (("ae", lambda r: True), ("sae", lambda r: r.ae.serious), ("dlt", lambda r: r.ae.dlt)):
        page = text(session.get(f"/safety/{listing}"))
        wanted = sorted(r.id for r in expected(app, sites) if keep(r))
        assert sorted(listed_ids(page)) == wanted, listing
    hidden = {n for n, (site, _, _) in SUBJECTS.items() if site not in sites}
    for url in ("/safety/ae", "/safety/summary", "/safety/crs-icans"):
        page = text(session.get(url))
        assert not [n for n in hidden if n in page], url


def test_a_site_the_user_cannot_see_is_refused_as_a_filter(app, login, safety_data):
    page = text(login("coord-nb").get("/safety/ae?site=HZ"))
    assert "Site: “HZ” is not one of your sites (NB)" in page
    assert sorted(listed_ids(page)) == sorted(r.id for r in expected(app, ("NB",)))


@pytest.mark.parametrize(
    "query, filter_name, message",
    [
        ("grade_min=7", "grade_min", "Grade ≥: “7” is not a grade from 1 to 5"),
        ("grade_min=high", "grade_min", "Grade ≥: “high” is not a grade from 1 to 5"),
        ("date_from=25/12/2026", "date_from", "Onset from: “25/12/2026” is not a date; enter it as YYYY-MM-DD"),
        ("date_to=2026-02-30", "date_to", "Onset to: “2026-02-30” is not a date"),
        (
            "date_from=2026-03-01&date_to=2026-02-01",
            "date_to",
            "Onset to (2026-02-01) is before Onset from (2026-03-01)",
        ),
        ("dose_level=DL9", "dose_level", "Dose level: “DL9” is not a dose level of the study (DL1, DL2, DL3)"),
        ("site=XX", "site", "Site: “XX” is not one of your sites (HZ, NB)"),
        ("serious_only=maybe", "serious_only", "Serious only: “maybe” is not yes or no"),
        ("sort=password", "sort", "Sort: “password” is not a column of this listing"),
        ("dir=sideways", "dir", "Sort direction: “sideways” is not asc or desc"),
        ("page=-3", "page", "Page: “-3” is not a page number"),
    ],
)
def test_a_bad_filter_shows_the_page_with_a_message_naming_it(app, login, safety_data, query, filter_name, message):
    """Never a 500: the page, the message naming the filter, and that filter not applied;
    the other filters still apply."""
    response = login("dm").get(f"/safety/ae?{query}&site=HZ" if "site=" not in query else f"/safety/ae?{query}")
    assert response.status_code == 200
    page = text(response)
    assert message in page
    assert f'data-filter="{filter_name}"' in page
    sites = ("HZ",) if "site=" not in query else ("HZ", "NB")
    assert sorted(listed_ids(page)) == sorted(r.id for r in expected(app, sites))


def test_bad_filters_on_every_page_are_messages_not_errors(login, safety_data):
    session = login("dm")
    for url in ("/safety/sae", "/safety/dlt", "/safety/summary", "/safety/crs-icans"):
        response = session.get(url + "?grade_min=0&date_from=yesterday&te_only=2")
        assert response.status_code == 200, url
        page = text(response)
        assert "Onset from: “yesterday” is not a date" in page and "Treatment-emergent only: “2”" in page, url


# --- SAE and DLT listings -----------------------------------------------------------------------------


def test_sae_listing_shows_serious_aes_with_their_reporting_clocks(app, login, safety_data):
    rows = [r for r in expected(app) if r.ae.serious]
    page = text(login("dm").get("/safety/sae"))
    assert sorted(listed_ids(page)) == sorted(r.id for r in rows)

    def cells(number, ae):
        row = next(r for r in rows if r.subject == number and r.ae.number == ae)
        return [
            plain(c).strip()
            for c in re.findall(
                r"<td[^>]*>(.*?)</td>", re.search(rf'data-ae="{row.id}">(.*?)</tr>', page, re.S).group(1), re.S
            )
        ]

    fn = cells("HZ-101", 3)  # reported 30 h after awareness: late; SUSAR not reported after 15 days: overdue
    assert fn[8] == "Hospitalisation" and fn[11] == "Unexpected"
    assert fn[16] == "late" and fn[17] == "Yes" and fn[20] == "overdue"
    crs = cells("HZ-102", 2)  # aware 18 days ago, never reported: overdue; not a SUSAR
    assert crs[8] == "Life-threatening" and crs[16] == "overdue" and crs[17] == "No" and crs[20] == ""
    fatal = cells("NB-101", 2)  # reported 2 h after awareness
    assert fatal[8] == "Death" and fatal[16] == "on time"
    # times in the site's zone on screen (HZ and NB are UTC+8)
    assert f"{d(-29).isoformat()} 18:00 UTC+8" in " ".join(fn)


def test_dlt_listing_shows_the_flagged_dlts(app, login, safety_data):
    rows = [r for r in expected(app) if r.ae.dlt]
    assert len(rows) >= 2
    page = text(login("dm").get("/safety/dlt?sort=subject"))
    assert listed_ids(page) == [r.id for r in sorted(rows, key=lambda r: (r.subject, r.ae.number, r.id))]


# --- the summary by SOC and term x worst grade ------------------------------------------------------------


def safety_population(app, sites=("HZ", "NB")) -> dict[int, str | None]:
    """subject id -> dose level, for the subjects with an NK-cell infusion given."""
    with app.app_context():
        out = {
            s.id: s.dose_level
            for s in db.session.scalars(select(Subject))
            if s.site.code in sites and any(i.state == "given" for i in s.infusions)
        }
        db.session.remove()
    return out


def expected_summary(app, keep=lambda r: True, sites=("HZ", "NB")):
    """{(soc, term) | (soc, None) | (None, None): {group: {1..5, "any", "ge3"}}}, N."""
    population = safety_population(app, sites)
    groups = ["DL1", "DL2", "DL3", "Overall"]
    worst: dict[tuple, dict[int, int | None]] = {}
    for r in expected(app, sites):
        if r.subject_id not in population or r.ae.term is None or not keep(r):
            continue
        for key in ((None, None), (r.ae.soc, None), (r.ae.soc, r.ae.term)):
            per_subject = worst.setdefault(key, {})
            grades = [g for g in (per_subject.get(r.subject_id), r.ae.grade) if g is not None]
            per_subject[r.subject_id] = max(grades) if grades else None
    table = {}
    for key, per_subject in worst.items():
        cells = {g: {**{k: 0 for k in range(1, 6)}, "any": 0, "ge3": 0} for g in groups}
        for sid, grade in per_subject.items():
            for group in (population[sid], "Overall"):
                cells[group]["any"] += 1
                if grade is not None:
                    cells[group][grade] += 1
                    cells[group]["ge3"] += grade >= 3
        table[key] = cells
    n = {g: sum(1 for level in population.values() if g in ("Overall", level)) for g in groups}
    return table, n


def summary_cells(page: str) -> tuple[dict, dict]:
    """The summary table of the page as {(soc, term) | ...: [28 counts]} and N per group."""
    n = dict(re.findall(r'class="group">(\w+)<br><span class="n">N = (\d+)</span>', page))
    body = re.search(r'<table class="grid summary" id="summary">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    rows = {}
    soc = None
    for level, head, tail in re.findall(r'<tr class="row-(\w+)">\s*<th scope="row">(.*?)</th>(.*?)</tr>', body, re.S):
        label = plain(head).strip()
        counts = [int(x) for x in re.findall(r"<td[^>]*>(\d+)</td>", tail)]
        if level == "all":
            rows[None, None] = counts
        elif level == "soc":
            soc = label
            rows[soc, None] = counts
        else:
            rows[soc, label] = counts
    return rows, {k: int(v) for k, v in n.items()}


def flatten(cells) -> list[int]:
    return [cells[g][k] for g in ("DL1", "DL2", "DL3", "Overall") for k in (1, 2, 3, 4, 5, "any", "ge3")]


@pytest.mark.parametrize(
    "query, keep, sites",
    [
        ("", lambda r: True, ("HZ", "NB")),
        ("site=HZ", lambda r: True, ("HZ",)),
        ("serious_only=1", lambda r: r.ae.serious, ("HZ", "NB")),
        ("related_only=1&te_only=1", lambda r: r.ae.related and r.ae.treatment_emergent, ("HZ", "NB")),
        (
            f"date_from={d(-30).isoformat()}&date_to={d(-9).isoformat()}",
            lambda r: d(-30) <= r.ae.onset_date <= d(-9),
            ("HZ", "NB"),
        ),
        ("grade_min=4", lambda r: True, ("HZ", "NB")),  # does not apply to the summary (the grades are its columns)
    ],
)
def test_summary_counts_subjects_once_per_row_at_their_worst_grade(app, login, safety_data, query, keep, sites):
    page = text(login("dm").get("/safety/summary?" + query))
    rows, n = summary_cells(page)
    table, n_expected = expected_summary(app, keep, sites)
    assert n == n_expected
    assert rows == {key: flatten(cells) for key, cells in table.items()}
    assert "N = the safety population" in plain(page) or "safety population" in page


def test_summary_details_for_known_subjects(app, login, safety_data):
    """Nausea: HZ-101 had grades 1 and 3 (counted once, at 3, in DL1); HZ-102 grade 2
    (DL2); NB-101 grade 5 (DL1); HZ-001 (demo, DL1) grade 1. The Fatigue draft has no
    grade: "Any" only. HZ-103 was never infused: its headache is not counted, and it is
    not in N."""
    rows, n = summary_cells(text(login("dm").get("/safety/summary")))
    nausea = dict(
        zip(
            [(g, k) for g in ("DL1", "DL2", "DL3", "Overall") for k in (1, 2, 3, 4, 5, "any", "ge3")],
            rows["Gastrointestinal disorders", "Nausea"],
            strict=False,
        )
    )
    assert nausea["DL1", 3] == 1 and nausea["DL1", 5] == 1 and nausea["DL2", 2] == 1
    assert nausea["DL1", "ge3"] == 2 and nausea["Overall", "any"] == nausea["DL1", "any"] + nausea["DL2", "any"]
    fatigue = rows["General disorders and administration site conditions", "Fatigue"]
    assert fatigue[7 * 1 + 5] == 1 and sum(fatigue[7:12]) == 0  # DL2: any 1, no grade column
    assert ("Nervous system disorders", "Headache") not in rows or rows["Nervous system disorders", "Headache"][
        7 * 3 + 5
    ] == 0
    assert n["DL2"] == 2  # HZ-102 and NB-102, not HZ-103


# --- CRS and ICANS ----------------------------------------------------------------------------------------


def expected_crs_icans(app, sites=("HZ", "NB")):
    population = safety_population(app, sites)
    firsts = {}
    with app.app_context():
        for s in db.session.scalars(select(Subject)):
            firsts[s.id] = first_given(s)
        db.session.remove()
    out = {}
    for kind in ("crs", "icans"):
        events = [
            r
            for r in expected(app, sites)
            if r.subject_id in population
            and (
                r.ae.category == kind
                or (kind == "crs" and r.ae.term == "Cytokine release syndrome")
                or (kind == "icans" and r.ae.term == ICANS_TERM and r.ae.verbatim == ICANS_VERBATIM)
            )
        ]
        for group in ("DL1", "DL2", "DL3", "Overall"):
            chosen = [e for e in events if group in ("Overall", e.dose_level)]
            subjects = {e.subject_id for e in chosen}
            n_group = sum(1 for level in population.values() if group in ("Overall", level))
            worst = {s: max((e.ae.grade or 0) for e in chosen if e.subject_id == s) for s in subjects}
            onset = [(min(e.ae.onset_date for e in chosen if e.subject_id == s) - firsts[s]).days for s in subjects]
            durations = [(e.ae.end_date - e.ae.onset_date).days + 1 for e in chosen if e.ae.end_date]
            out[kind, group] = {
                "n": len(subjects),
                "N": n_group,
                "worst": worst,
                "onset": onset,
                "durations": durations,
                "ongoing": sum(1 for e in chosen if e.ae.end_date is None),
            }
    return out


def fmt_range(values):
    if not values:
        return "—"
    m = median(values)
    return f"{m:g} ({min(values)}–{max(values)}), n={len(values)}"


def test_crs_icans_summary(app, login, safety_data):
    page = text(login("dm").get("/safety/crs-icans"))
    table = re.search(r'<table class="grid summary" id="crs-icans">(.*?)</table>', page, re.S).group(1)
    lines = {}
    event = None
    for chunk in re.findall(r"<tr.*?</tr>", table, re.S):
        if 'scope="rowgroup"' in chunk:
            event = plain(chunk).strip()
            continue
        cells = [plain(c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", chunk, re.S)]
        if event:
            lines[event, cells[0]] = cells[1:]
    wanted = expected_crs_icans(app)
    for kind, label in (("crs", "CRS"), ("icans", "ICANS")):
        for i, group in enumerate(("DL1", "DL2", "DL3", "Overall")):
            e = wanted[kind, group]
            pct = f" ({100 * e['n'] / e['N']:.1f}%)" if e["N"] else ""
            assert lines[label, f"Subjects with {label}, n/N (%)"][i] == f"{e['n']}/{e['N']}{pct}", (kind, group)
            for g in range(1, 6):
                assert lines[label, f"Worst grade {g}, n"][i] == str(sum(1 for w in e["worst"].values() if w == g))
            assert lines[label, "Time to onset, days from first infusion: median (range)"][i] == fmt_range(e["onset"])
            assert lines[label, "Duration, days: median (range) of ended events"][i] == fmt_range(e["durations"])
            assert lines[label, "Events ongoing (not in the duration), n"][i] == str(e["ongoing"])
    # the known values: HZ-101 CRS day 1 after infusion (onset T-39, infusion T-40), 4 days;
    # NB-102 CRS 1 day after; HZ-102 (DL2) ongoing
    assert wanted["crs", "DL2"]["ongoing"] == 1 and 1 in wanted["crs", "DL2"]["durations"]
    assert wanted["icans", "DL1"]["n"] == 1 and wanted["icans", "DL1"]["durations"] == [2]


# --- the service path and the navigation ---------------------------------------------------------------------


def test_an_ae_saved_through_the_service_is_listed(app, login):
    from cellstudy.adverse_events import service

    with app.app_context():
        subject = db.session.scalar(select(Subject).where(Subject.subject_number == "HZ-001"))
        user = db.session.scalar(select(User).where(User.username == "coord-hz"))
        first = first_given(subject)
        ae = service.save_ae(
            subject,
            service.new_ae(subject),
            {
                "term": "Vomiting",
                "onset_date": first + timedelta(days=3),
                "ongoing": True,
                "grade": "2",
                "serious": False,
                "related_nk": "probable",
                "related_ld": "unlikely",
                "expectedness": "expected",
                "action": "none",
                "outcome": "recovering",
            },
            user=user,
            expected_version=0,
            reason=None,
            complete=True,
            today=date.today(),
        )
        ae_id = ae.id
        db.session.remove()
    page = text(login("inv-hz").get("/safety/ae?related_only=1"))
    row = re.search(rf'data-ae="{ae_id}">(.*?)</tr>', page, re.S).group(1)
    cells = [plain(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[0] == "HZ-001" and cells[3] == "4" and cells[5] == "Vomiting" and cells[9] == "2"
    assert cells[11] == "Probable" and cells[6] == "Gastrointestinal disorders"


def test_safety_pages_are_in_the_navigation_and_exports_only_for_export_safety(login):
    page = text(login("coord-hz").get("/safety/ae"))
    assert 'href="/safety/ae">Safety</a>' in page
    assert 'id="exports"' not in page and "/safety/ae.csv" not in page
    page = text(login("inv-hz").get("/safety/ae?grade_min=3"))
    assert 'href="/safety/ae.csv?grade_min=3"' in page and 'href="/safety/sdtm/ae.csv"' in page
    for listing in ("sae", "dlt", "summary", "crs-icans"):
        assert f'href="/safety/{listing}.xlsx' in text(login("monitor-hz").get(f"/safety/{listing}"))
