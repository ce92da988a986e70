"""The infusion lockout checker (PROTOCOL 5.2), table-driven at every boundary.

Each case names the protocol text it checks. D is the proposed infusion date unless a
case says otherwise; "first infusion" means infusion_dates is empty.
"""

import re
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from cellstudy.infusions.lockouts import LOCKOUT_CODES, check, earliest_clear_date
from cellstudy.study import STUDY

D = date(2026, 3, 2)

WASHOUT_CODES = (
    "washout_steroid",
    "washout_antitumor",
    "washout_radiotherapy",
    "washout_dli",
    "washout_intrathecal",
    "washout_cell_therapy",
    "major_surgery",
)

CATEGORY_CODE = {
    "systemic_steroid": "washout_steroid",
    "systemic_antitumor": "washout_antitumor",
    "radiotherapy": "washout_radiotherapy",
    "donor_lymphocyte_infusion": "washout_dli",
    "intrathecal": "washout_intrathecal",
    "gene_modified_cell_therapy": "washout_cell_therapy",
    "major_surgery": "major_surgery",
    "vaccine": "vaccine",
}


def day(n):
    """D + n days as an ISO string."""
    return (D + timedelta(days=n)).isoformat()


def exposure(category, last_date, **extra):
    return {"category": category, "last_date": last_date, **extra}


def ae(term="Neutrophil count decreased", grade=3, category="other", related=True):
    return {"term": term, "grade": grade, "category": category, "related": related}


def make_case(proposed=D, infusions=(), exposures=(), events=()):
    return {
        "proposed_date": proposed,
        "infusion_dates": list(infusions),
        "exposures": list(exposures),
        "open_adverse_events": list(events),
    }


def run(case, **kwargs):
    """check() plus the invariants every answer must satisfy (PROTOCOL 5.2)."""
    result = check(case, **kwargs)
    assert set(result) == {"allowed", "lockouts", "vaccination_window"}
    codes = [lo["code"] for lo in result["lockouts"]]
    assert result["allowed"] is (not codes)
    assert len(codes) == len(set(codes)), "one entry per code"
    assert codes == [c for c in LOCKOUT_CODES if c in codes], "table order"
    for lo in result["lockouts"]:
        assert set(lo) == {"code", "until", "reason"}
        assert lo["until"] is None or date.fromisoformat(lo["until"])
        assert isinstance(lo["reason"], str) and lo["reason"]
    return result


def codes(result):
    return [lo["code"] for lo in result["lockouts"]]


def lockout(result, code):
    found = [lo for lo in result["lockouts"] if lo["code"] == code]
    return found[0] if found else None


# --- the contract ---------------------------------------------------------------------


def test_lockout_codes_are_the_table_of_protocol_5_2_in_order():
    assert LOCKOUT_CODES == (*WASHOUT_CODES, "vaccine", "min_interval", "max_infusions", "toxicity_hold")


def test_nothing_recorded_allows_the_first_infusion():
    assert run(make_case()) == {
        "allowed": True,
        "lockouts": [],
        "vaccination_window": {"start": day(-27), "end": day(84)},
    }


def test_dates_as_iso_strings_or_date_objects_give_the_same_answer():
    as_strings = make_case(day(0), [day(-7)], [exposure("vaccine", day(-3))], [ae(grade=3)])
    as_dates = make_case(D, [D - timedelta(days=7)], [exposure("vaccine", D - timedelta(days=3))], [ae(grade=3)])
    assert run(as_strings) == run(as_dates)


def test_the_case_may_carry_other_keys_and_is_not_modified():
    case = make_case(
        D,
        [],
        [exposure("systemic_steroid", day(-1), name="Dexamethasone", route="iv")],
        [{**ae(grade=4), "onset": "2026-02-01"}],
    )
    case["subject"] = "HZ-001"
    before = repr(case)
    assert codes(run(case)) == ["washout_steroid", "toxicity_hold"]
    assert repr(case) == before


# --- 4.4 washouts, before the first infusion ------------------------------------------

# (category, extra, last_date, first permitted day): proposing on the day before the
# first permitted day is blocked with until = that day; proposing on it is allowed.
FIRST_PERMITTED = [
    pytest.param(
        "systemic_steroid", {}, "2026-03-01", "2026-03-04", id="steroid within 3 days: 3 days after is permitted"
    ),
    pytest.param(
        "systemic_steroid",
        {"physiological_replacement": False},
        "2026-03-01",
        "2026-03-04",
        id="physiological_replacement false blocks",
    ),
    pytest.param(
        "systemic_steroid",
        {"physiological_replacement": None},
        "2026-03-01",
        "2026-03-04",
        id="physiological_replacement null means false",
    ),
    pytest.param("systemic_antitumor", {}, "2026-03-01", "2026-03-15", id="antitumor, half-life unknown = 14 days"),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 2.5},
        "2026-03-01",
        "2026-03-14",
        id="antitumor 5 x 2.5 = 12.5 days: first permitted = last + 13",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": Decimal("2.6")},
        "2026-03-01",
        "2026-03-14",
        id="antitumor 5 x 2.6 = 13 days exactly",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 2.8},
        "2026-03-01",
        "2026-03-15",
        id="antitumor 5 x 2.8 = 14 days (float exactly 2.8)",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 30},
        "2026-03-01",
        "2026-03-15",
        id="antitumor: whichever is less, 14 days not 150",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 0.1},
        "2026-03-01",
        "2026-03-02",
        id="antitumor 5 x 0.1 = 0.5 days: the next day is permitted",
    ),
    pytest.param("radiotherapy", {}, "2026-03-01", "2026-03-29", id="radiotherapy within 4 weeks = 28 days"),
    pytest.param("donor_lymphocyte_infusion", {}, "2026-03-01", "2026-04-12", id="DLI within 6 weeks = 42 days"),
    pytest.param("intrathecal", {}, "2026-03-01", "2026-03-08", id="intrathecal within 1 week = 7 days"),
    pytest.param("major_surgery", {}, "2026-03-01", "2026-03-29", id="major surgery within 4 weeks = 28 days"),
    pytest.param(
        "vaccine", {}, "2026-03-01", "2026-03-29", id="vaccine within 4 weeks before the first infusion = 28 days"
    ),
    pytest.param(
        "gene_modified_cell_therapy",
        {},
        "2023-08-31",
        "2024-02-29",
        id="cell therapy: Aug 31 + 6 months = Feb 29 in a leap year",
    ),
    pytest.param(
        "gene_modified_cell_therapy", {}, "2022-08-31", "2023-02-28", id="cell therapy: Aug 31 + 6 months = Feb 28"
    ),
    pytest.param(
        "gene_modified_cell_therapy", {}, "2026-03-31", "2026-09-30", id="cell therapy: Mar 31 + 6 months = Sep 30"
    ),
    pytest.param(
        "gene_modified_cell_therapy",
        {},
        "2025-12-31",
        "2026-06-30",
        id="cell therapy: Dec 31 + 6 months = Jun 30 (year change)",
    ),
    pytest.param(
        "gene_modified_cell_therapy",
        {},
        "2025-07-31",
        "2026-01-31",
        id="cell therapy: Jul 31 + 6 months = Jan 31 of the next year",
    ),
]


@pytest.mark.parametrize("category, extra, last_date, first", FIRST_PERMITTED)
def test_washout_last_blocked_day_and_first_permitted_day(category, extra, last_date, first):
    first = date.fromisoformat(first)
    item = exposure(category, last_date, **extra)
    blocked = run(make_case(first - timedelta(days=1), [], [item]))
    assert codes(blocked) == [CATEGORY_CODE[category]]
    assert lockout(blocked, CATEGORY_CODE[category])["until"] == first.isoformat()
    assert run(make_case(first, [], [item]))["allowed"] is True


# (category, extra, days from the exposure to the proposed date D, blocked)
WASHOUT_BOUNDARIES = [
    pytest.param("systemic_steroid", {}, 2, True, id="steroid 2 days before blocks"),
    pytest.param("systemic_steroid", {}, 3, False, id="steroid 3 days before is permitted"),
    pytest.param(
        "systemic_steroid",
        {"physiological_replacement": True},
        0,
        False,
        id="physiological steroid replacement is ignored",
    ),
    pytest.param("systemic_antitumor", {}, 13, True, id="antitumor unknown: 13 days blocks"),
    pytest.param("systemic_antitumor", {}, 14, False, id="antitumor unknown: 14 days"),
    pytest.param(
        "systemic_antitumor", {"half_life_days": 2.5}, 12, True, id="antitumor 12.5-day window: day 12 blocks"
    ),
    pytest.param(
        "systemic_antitumor", {"half_life_days": 2.5}, 13, False, id="antitumor 12.5-day window: day 13 is permitted"
    ),
    pytest.param(
        "systemic_antitumor", {"half_life_days": 0.1}, 0, True, id="antitumor 0.5-day window: the same day blocks"
    ),
    pytest.param("radiotherapy", {}, 27, True, id="radiotherapy 27 days blocks"),
    pytest.param("radiotherapy", {}, 28, False, id="radiotherapy 28 days"),
    pytest.param("donor_lymphocyte_infusion", {}, 41, True, id="DLI 41 days blocks"),
    pytest.param("donor_lymphocyte_infusion", {}, 42, False, id="DLI 42 days"),
    pytest.param("intrathecal", {}, 6, True, id="intrathecal 6 days blocks"),
    pytest.param("intrathecal", {}, 7, False, id="intrathecal 7 days"),
    pytest.param("major_surgery", {}, 27, True, id="major surgery 27 days blocks"),
    pytest.param("major_surgery", {}, 28, False, id="major surgery 28 days"),
    pytest.param("vaccine", {}, 27, True, id="vaccine 27 days before the first blocks"),
    pytest.param("vaccine", {}, 28, False, id="vaccine exactly 28 days before the first does not block"),
    pytest.param("diagnostic_biopsy", {}, 0, False, id="diagnostic biopsy never blocks"),
    pytest.param("radiotherapy", {}, 0, True, id="an exposure on the proposed day blocks"),
    pytest.param("radiotherapy", {}, -5, True, id="an exposure dated after the proposed day blocks"),
    pytest.param("vaccine", {}, -100, True, id="a vaccine dated after the first infusion blocks (4.4 rule)"),
]


@pytest.mark.parametrize("category, extra, gap, blocked", WASHOUT_BOUNDARIES)
def test_washout_boundaries_before_the_first_infusion(category, extra, gap, blocked):
    result = run(make_case(D, [], [exposure(category, day(-gap), **extra)]))
    assert codes(result) == ([CATEGORY_CODE[category]] if blocked else [])


def test_several_exposures_of_one_category_give_one_entry_until_the_latest():
    result = run(
        make_case(
            D,
            [],
            [
                exposure("radiotherapy", day(-20), name="Cranial RT"),
                exposure("radiotherapy", day(-2), name="Spinal RT"),
                exposure("radiotherapy", day(-10), name="Boost"),
                exposure("radiotherapy", day(-40), name="Old course"),  # cleared: not named
            ],
        )
    )
    assert codes(result) == ["washout_radiotherapy"]
    entry = lockout(result, "washout_radiotherapy")
    assert entry["until"] == day(26)
    for name in ("Cranial RT", "Spinal RT", "Boost"):
        assert name in entry["reason"]
    assert "Old course" not in entry["reason"]


def test_antitumor_until_is_the_latest_first_permitted_day_not_the_latest_dose():
    # the later dose has the shorter window: 5 x 1 = 5 days vs 14 days (unknown)
    result = run(
        make_case(
            D,
            [],
            [
                exposure("systemic_antitumor", day(-10), name="Azacitidine"),
                exposure("systemic_antitumor", day(-1), name="Venetoclax", half_life_days=1),
            ],
        )
    )
    assert lockout(result, "washout_antitumor")["until"] == day(4)


def test_the_reason_names_the_exposure_the_window_and_the_first_permitted_day():
    result = run(make_case("2026-03-03", [], [exposure("systemic_steroid", "2026-03-01", name="Dexamethasone")]))
    reason = lockout(result, "washout_steroid")["reason"]
    assert reason.startswith(
        "Dexamethasone (systemic steroid) last given 2026-03-01: 3-day washout, first permitted 2026-03-04"
    )


def test_a_fractional_antitumor_window_is_shown_exactly():
    result = run(make_case(D, [], [exposure("systemic_antitumor", day(-1), half_life_days=2.5, name="Cytarabine")]))
    reason = lockout(result, "washout_antitumor")["reason"]
    assert "12.5-day washout" in reason and "half-life 2.5 days" in reason
    assert lockout(result, "washout_antitumor")["until"] == day(12)


# --- later infusions ------------------------------------------------------------------


@pytest.mark.parametrize("category", [c for c in CATEGORY_CODE if c != "vaccine"])
def test_washouts_do_not_apply_to_a_later_infusion(category):
    # PROTOCOL 5.2: the washout codes block before the FIRST infusion only.
    case = make_case(D, [day(-7)], [exposure(category, day(0))])
    assert run(case)["allowed"] is True


def test_a_proposal_before_the_earliest_infusion_is_caught_by_min_interval_not_washouts():
    case = make_case(D, [day(10)], [exposure("systemic_steroid", day(-1))])
    assert codes(run(case)) == ["min_interval"]


# (infusion_dates, vaccine day, blocked): PROTOCOL 5.2 at a later infusion, any vaccine
# inside the vaccination window (first infusion - 27 .. last infusion + 84) blocks with
# until null; the proposed date D counts as an infusion.
LATER_VACCINE = [
    pytest.param([-7], -3, True, id="vaccine between the first and the proposed infusion"),
    pytest.param([-7], -34, True, id="vaccine on the window start (first - 27)"),
    pytest.param([-7], -35, False, id="vaccine the day before the window start (first - 28)"),
    pytest.param([-7], 84, True, id="vaccine on the window end (proposed + 84)"),
    pytest.param([-7], 85, False, id="vaccine the day after the window end"),
    pytest.param([-14, -7], -41, True, id="window starts at the earliest infusion - 27"),
    pytest.param([-14, -7], -42, False, id="before the earliest infusion - 27"),
    pytest.param([-7], 0, True, id="vaccine on the proposed day"),
]


@pytest.mark.parametrize("infusions, vaccine_day, blocked", LATER_VACCINE)
def test_later_infusion_vaccine_inside_the_window_is_a_deviation(infusions, vaccine_day, blocked):
    result = run(make_case(D, [day(n) for n in infusions], [exposure("vaccine", day(vaccine_day), name="Influenza")]))
    assert codes(result) == (["vaccine"] if blocked else [])
    if blocked:
        entry = lockout(result, "vaccine")
        assert entry["until"] is None
        assert "Influenza" in entry["reason"] and "deviation" in entry["reason"]
        assert result["vaccination_window"]["start"] in entry["reason"]


def test_first_infusion_vaccine_has_a_date_later_infusion_vaccine_has_none():
    vaccine = exposure("vaccine", day(-10))
    first = run(make_case(D, [], [vaccine]))
    assert lockout(first, "vaccine")["until"] == day(18)
    later = run(make_case(D, [day(-7)], [vaccine]))
    assert lockout(later, "vaccine")["until"] is None


# --- vaccination window ---------------------------------------------------------------

# (infusion_dates, proposed, start, end): both ends inclusive; first = earliest of
# infusion_dates and the proposed date, last = latest of them.
WINDOWS = [
    pytest.param([], 0, -27, 84, id="first infusion: proposed - 27 to proposed + 84"),
    pytest.param([-7], 0, -34, 84, id="later: first given - 27 to proposed + 84"),
    pytest.param([-14, -7], 0, -41, 84, id="earliest given - 27"),
    pytest.param([-7, -14], 0, -41, 84, id="infusion_dates need not be sorted"),
    pytest.param([7], 0, -27, 91, id="a blocked proposal before the earliest counts"),
    pytest.param([-7, 7], 0, -34, 91, id="a blocked proposal between infusions"),
    pytest.param([-14, -7, 0], 7, -41, 91, id="after all three infusions"),
]


@pytest.mark.parametrize("infusions, proposed, start, end", WINDOWS)
def test_vaccination_window(infusions, proposed, start, end):
    result = run(make_case(day(proposed), [day(n) for n in infusions]))
    assert result["vaccination_window"] == {"start": day(start), "end": day(end)}


def test_vaccination_window_is_reported_even_when_everything_blocks():
    result = run(make_case(D, [day(-21), day(-14), day(-7)], [exposure("vaccine", day(-1))], [ae(grade=5)]))
    assert result["allowed"] is False
    assert result["vaccination_window"] == {"start": day(-48), "end": day(84)}


# --- min_interval ---------------------------------------------------------------------

# (infusion_dates, proposed, until or None): PROTOCOL 5.2, until = latest + 6 days.
MIN_INTERVAL = [
    pytest.param([0], 0, 6, id="same day as the latest infusion"),
    pytest.param([0], 1, 6, id="1 day after"),
    pytest.param([0], 5, 6, id="5 days after: last blocked day"),
    pytest.param([0], 6, None, id="6 days after: first permitted day"),
    pytest.param([0], 7, None, id="7 days after (the day 7 target)"),
    pytest.param([0], -3, 6, id="proposal before the latest infusion"),
    pytest.param([0, 7], 3, 13, id="proposal between two infusions: latest + 6"),
    pytest.param([7, 0], 12, 13, id="unsorted infusion_dates: the latest counts"),
    pytest.param([0, 8], 13, 14, id="PROTOCOL 5.2: day 8 then day 13 is refused"),
    pytest.param([0, 8], 14, None, id="day 8 then day 14 is allowed"),
]


@pytest.mark.parametrize("infusions, proposed, until", MIN_INTERVAL)
def test_min_interval(infusions, proposed, until):
    result = run(make_case(day(proposed), [day(n) for n in infusions]))
    if until is None:
        assert result["allowed"] is True
    else:
        assert codes(result) == ["min_interval"]
        assert lockout(result, "min_interval")["until"] == day(until)


def test_min_interval_reason_names_the_dates():
    reason = lockout(run(make_case(day(3), [day(0)])), "min_interval")["reason"]
    assert day(3) in reason and day(0) in reason and day(6) in reason
    assert "6 days" in reason


# --- max_infusions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "infusions, proposed, blocked",
    [
        pytest.param([], 0, False, id="none given: the first is allowed"),
        pytest.param([0], 7, False, id="1 given"),
        pytest.param([0, 7], 14, False, id="2 given: the third is allowed"),
        pytest.param([0, 7, 14], 21, True, id="3 given: a fourth is blocked"),
        pytest.param([0, 7, 14, 21], 28, True, id="more than 3 given"),
    ],
)
def test_max_infusions(infusions, proposed, blocked):
    result = run(make_case(day(proposed), [day(n) for n in infusions]))
    assert codes(result) == (["max_infusions"] if blocked else [])
    if blocked:
        entry = lockout(result, "max_infusions")
        assert entry["until"] is None
        assert str(len(infusions)) in entry["reason"] and "3" in entry["reason"]


# --- toxicity_hold --------------------------------------------------------------------

# (category, grade, related, blocks): PROTOCOL 5.2 CRS >= 2, ICANS >= 1, related >= 3;
# related null (not yet assessed) counts as related.
TOXICITY = [
    pytest.param("crs", 1, True, False, id="CRS grade 1 does not hold"),
    pytest.param("crs", 1, None, False, id="CRS grade 1, attribution pending"),
    pytest.param("crs", 2, False, True, id="CRS grade 2 holds (whatever the attribution)"),
    pytest.param("crs", 4, False, True, id="CRS grade 4 holds"),
    pytest.param("icans", 1, False, True, id="ICANS grade 1 holds"),
    pytest.param("icans", 3, True, True, id="ICANS grade 3 holds"),
    pytest.param("other", 2, True, False, id="related grade 2 does not hold"),
    pytest.param("other", 3, True, True, id="related grade 3 holds"),
    pytest.param("other", 5, True, True, id="related grade 5 holds"),
    pytest.param("other", 2, None, False, id="grade 2 with attribution pending"),
    pytest.param("other", 3, None, True, id="related null counts as related: grade 3"),
    pytest.param("other", 3, False, False, id="unrelated grade 3 does not hold"),
    pytest.param("other", 4, False, False, id="unrelated grade 4 does not hold"),
    pytest.param("other", 5, False, False, id="unrelated grade 5 does not hold"),
]


@pytest.mark.parametrize("category, grade, related, blocks", TOXICITY)
def test_toxicity_hold_thresholds(category, grade, related, blocks):
    for infusions, proposed in (([], 0), ([0], 7)):  # first and later infusions alike
        event = ae("Febrile neutropenia", grade, category, related)
        result = run(make_case(day(proposed), [day(n) for n in infusions], [], [event]))
        assert codes(result) == (["toxicity_hold"] if blocks else [])
        if blocks:
            entry = lockout(result, "toxicity_hold")
            assert entry["until"] is None
            assert "Febrile neutropenia" in entry["reason"]
            assert f"grade {grade}" in entry["reason"]


def test_toxicity_hold_names_every_holding_ae_once():
    result = run(
        make_case(
            D,
            [],
            [],
            [
                ae("Cytokine release syndrome", 2, "crs", False),
                ae("Anemia", 4, "other", False),  # unrelated: does not hold
                ae("Encephalopathy", 1, "icans", None),
                ae("Sepsis", 3, "other", None),
            ],
        )
    )
    assert codes(result) == ["toxicity_hold"]
    reason = lockout(result, "toxicity_hold")["reason"]
    for term in ("Cytokine release syndrome", "Encephalopathy", "Sepsis"):
        assert term in reason
    assert "Anemia" not in reason
    assert "not yet assessed" in reason


# --- order, one entry per code, allowed ------------------------------------------------


def test_first_infusion_lockouts_are_listed_in_table_order():
    exposures = [
        exposure("major_surgery", day(-1)),
        exposure("vaccine", day(-1)),
        exposure("gene_modified_cell_therapy", day(-1)),
        exposure("intrathecal", day(-1)),
        exposure("donor_lymphocyte_infusion", day(-1)),
        exposure("radiotherapy", day(-1)),
        exposure("systemic_antitumor", day(-1)),
        exposure("systemic_steroid", day(-1)),
        exposure("systemic_steroid", day(-2)),
        exposure("diagnostic_biopsy", day(-1)),
    ]
    result = run(make_case(D, [], exposures, [ae(grade=3)]))
    assert codes(result) == [*WASHOUT_CODES, "vaccine", "toxicity_hold"]
    assert result["allowed"] is False


def test_later_infusion_lockouts_are_listed_in_table_order():
    result = run(
        make_case(
            D,
            [day(0), day(-7), day(-14)],
            [exposure("vaccine", day(-20)), exposure("systemic_steroid", day(0))],
            [ae("CRS", 2, "crs", False)],
        )
    )
    assert codes(result) == ["vaccine", "min_interval", "max_infusions", "toxicity_hold"]
    assert [lo["until"] for lo in result["lockouts"]] == [None, day(6), None, None]


# --- study settings (an amendment changes numbers, not code) -----------------------------


def test_an_amendment_changes_the_numbers():
    amended = replace(
        STUDY,
        regimen=replace(STUDY.regimen, infusion_days=(0, 7, 14, 21), min_interval_days=5),
        toxicity_hold=replace(STUDY.toxicity_hold, related_min_grade=2),
    )
    case = make_case(day(5), [day(-14), day(-7), day(0)])
    assert codes(run(case)) == ["min_interval", "max_infusions"]
    assert run(case, study=amended)["allowed"] is True
    held = make_case(D, [], [], [ae(grade=2)])
    assert run(held)["allowed"] is True
    assert codes(run(held, study=amended)) == ["toxicity_hold"]


# --- bad input ------------------------------------------------------------------------


def good_case():
    return make_case(
        day(0),
        [day(-7)],
        [exposure("systemic_steroid", day(-1), name="Dexamethasone")],
        [ae("Anemia", 2, "other", False)],
    )


def _set(path, value):
    """A mutation of good_case(): path is a key, or (list key, index, item key)."""

    def mutate(case):
        if isinstance(path, str):
            case[path] = value
        elif len(path) == 2:
            case[path[0]][path[1]] = value
        else:
            case[path[0]][path[1]][path[2]] = value

    return mutate


def _drop(path):
    def mutate(case):
        if isinstance(path, str):
            del case[path]
        else:
            del case[path[0]][path[1]][path[2]]

    return mutate


def _append(key, item):
    return lambda case: case[key].append(item)


BAD_INPUT = [
    pytest.param(_drop("proposed_date"), "proposed_date", id="missing proposed_date"),
    pytest.param(_drop("infusion_dates"), "infusion_dates", id="missing infusion_dates"),
    pytest.param(_drop("exposures"), "exposures", id="missing exposures"),
    pytest.param(_drop("open_adverse_events"), "open_adverse_events", id="missing open_adverse_events"),
    pytest.param(_set("proposed_date", None), "proposed_date", id="proposed_date null"),
    pytest.param(_set("proposed_date", datetime(2026, 3, 2, 9, 0)), "proposed_date", id="proposed_date a datetime"),
    pytest.param(_set("proposed_date", "2026-02-30"), "proposed_date", id="proposed_date not a calendar date"),
    pytest.param(_set("proposed_date", "02/03/2026"), "proposed_date", id="proposed_date not ISO"),
    pytest.param(_set("proposed_date", 20260302), "proposed_date", id="proposed_date a number"),
    pytest.param(_set("infusion_dates", None), "infusion_dates", id="infusion_dates null ([] for none)"),
    pytest.param(_set("infusion_dates", "2026-02-23"), "infusion_dates", id="infusion_dates a string"),
    pytest.param(
        _set(("infusion_dates", 0), datetime(2026, 2, 23)), "infusion_dates[0]", id="infusion date a datetime"
    ),
    pytest.param(_append("infusion_dates", "2026-2-9"), "infusion_dates[1]", id="infusion date not ISO"),
    pytest.param(_set("exposures", None), "exposures", id="exposures null"),
    pytest.param(_set(("exposures", 0), "steroid"), "exposures[0]", id="exposure not a dict"),
    pytest.param(
        _set(("exposures", 0, "category"), "steroid"), "exposures[0].category", id="unknown exposure category"
    ),
    pytest.param(_drop(("exposures", 0, "last_date")), "exposures[0].last_date", id="exposure without last_date"),
    pytest.param(
        _set(("exposures", 0, "last_date"), None), "exposures[0].last_date", id="exposure with last_date null"
    ),
    pytest.param(
        _append("exposures", {"category": "diagnostic_biopsy"}),
        "exposures[1].last_date",
        id="an exposure that never blocks still needs last_date",
    ),
    pytest.param(
        _append("exposures", {"category": "systemic_steroid", "physiological_replacement": True}),
        "exposures[1].last_date",
        id="physiological steroid without last_date",
    ),
    pytest.param(
        _set(("exposures", 0, "last_date"), datetime(2026, 3, 1)),
        "exposures[0].last_date",
        id="exposure last_date a datetime",
    ),
    pytest.param(
        _append("exposures", exposure("systemic_antitumor", "2026-03-01", half_life_days=0)),
        "exposures[1].half_life_days",
        id="half_life 0",
    ),
    pytest.param(
        _append("exposures", exposure("systemic_antitumor", "2026-03-01", half_life_days=-1)),
        "exposures[1].half_life_days",
        id="half_life negative",
    ),
    pytest.param(
        _append("exposures", exposure("systemic_antitumor", "2026-03-01", half_life_days="2")),
        "exposures[1].half_life_days",
        id="half_life a string",
    ),
    pytest.param(
        _append("exposures", exposure("systemic_antitumor", "2026-03-01", half_life_days=True)),
        "exposures[1].half_life_days",
        id="half_life a bool",
    ),
    pytest.param(
        _set(("exposures", 0, "physiological_replacement"), "yes"),
        "exposures[0].physiological_replacement",
        id="physiological_replacement not a bool",
    ),
    pytest.param(_set("open_adverse_events", None), "open_adverse_events", id="open_adverse_events null"),
    pytest.param(_append("open_adverse_events", "CRS"), "open_adverse_events[1]", id="AE not a dict"),
    pytest.param(_append("open_adverse_events", ae(grade=0)), "open_adverse_events[1].grade", id="grade 0"),
    pytest.param(_append("open_adverse_events", ae(grade=6)), "open_adverse_events[1].grade", id="grade 6"),
    pytest.param(_append("open_adverse_events", ae(grade=True)), "open_adverse_events[1].grade", id="grade a bool"),
    pytest.param(_append("open_adverse_events", ae(grade=3.0)), "open_adverse_events[1].grade", id="grade a float"),
    pytest.param(_append("open_adverse_events", ae(grade="3")), "open_adverse_events[1].grade", id="grade a string"),
    pytest.param(_append("open_adverse_events", ae(grade=None)), "open_adverse_events[1].grade", id="grade null"),
    pytest.param(_drop(("open_adverse_events", 0, "grade")), "open_adverse_events[0].grade", id="grade missing"),
    pytest.param(
        _append("open_adverse_events", ae(category="CRS")), "open_adverse_events[1].category", id="category in capitals"
    ),
    pytest.param(
        _append("open_adverse_events", ae(category="neurotoxicity")),
        "open_adverse_events[1].category",
        id="unknown AE category",
    ),
    pytest.param(
        _drop(("open_adverse_events", 0, "category")), "open_adverse_events[0].category", id="AE category missing"
    ),
    pytest.param(
        _append("open_adverse_events", ae(related="yes")), "open_adverse_events[1].related", id="related a string"
    ),
    pytest.param(_append("open_adverse_events", ae(related=1)), "open_adverse_events[1].related", id="related an int"),
    pytest.param(_append("open_adverse_events", ae(term="")), "open_adverse_events[1].term", id="empty term"),
    pytest.param(_append("open_adverse_events", ae(term=42)), "open_adverse_events[1].term", id="term not text"),
    pytest.param(_drop(("open_adverse_events", 0, "term")), "open_adverse_events[0].term", id="term missing"),
    pytest.param(_set("proposed_date", "9999-12-01"), "proposed_date", id="a date too late for the vaccination window"),
]


@pytest.mark.parametrize("mutate, field", BAD_INPUT)
def test_bad_input_raises_value_error_naming_the_field(mutate, field):
    case = good_case()
    run(case)  # the unmutated case is valid
    mutate(case)
    with pytest.raises(ValueError, match="^" + re.escape(field) + ":"):
        check(case)


@pytest.mark.parametrize("case", [None, [], "2026-03-02"])
def test_a_case_that_is_not_a_dict_is_bad_input(case):
    with pytest.raises(ValueError, match="^case:"):
        check(case)


def test_related_absent_counts_as_not_yet_assessed():
    event = ae(grade=3)
    del event["related"]
    assert codes(run(make_case(D, [], [], [event]))) == ["toxicity_hold"]


# --- earliest_clear_date --------------------------------------------------------------

# (infusion_dates, exposures, events, expected day offset or None)
EARLIEST = [
    pytest.param([], [], [], 0, id="nothing blocks: the proposed date itself"),
    pytest.param([], [exposure("systemic_steroid", day(-1))], [], 2, id="one washout: its first permitted day"),
    pytest.param(
        [],
        [
            exposure("systemic_steroid", day(-1)),
            exposure("donor_lymphocyte_infusion", day(-40)),
            exposure("vaccine", day(-20)),
        ],
        [],
        8,
        id="several washouts: the latest until",
    ),
    pytest.param(
        [],
        [exposure("gene_modified_cell_therapy", "2025-08-31")],
        [],
        0,
        id="cell therapy first permitted Feb 28, before D: D is clear",
    ),
    pytest.param(
        [],
        [exposure("gene_modified_cell_therapy", "2025-12-31")],
        [],
        (date(2026, 6, 30) - D).days,
        id="cell therapy: Dec 31 + 6 months",
    ),
    pytest.param(
        [day(-3)],
        [exposure("systemic_steroid", day(0))],
        [],
        3,
        id="later infusion: min_interval only, washouts do not apply",
    ),
    pytest.param([], [exposure("systemic_steroid", day(-1))], [ae(grade=3)], None, id="toxicity hold stays: None"),
    pytest.param([day(-14), day(-7), day(-1)], [], [], None, id="max_infusions stays: None"),
    pytest.param(
        [day(-7)], [exposure("vaccine", day(-1))], [], None, id="vaccine deviation at a later infusion stays: None"
    ),
    pytest.param(
        [day(0)],
        [exposure("vaccine", day(88))],
        [],
        None,
        id="moving to latest + 6 brings a recorded vaccine into the window: None",
    ),
    pytest.param(
        [day(0)], [exposure("vaccine", day(91))], [], 6, id="a vaccine after the moved window end does not block"
    ),
]


@pytest.mark.parametrize("infusions, exposures, events, expected", EARLIEST)
def test_earliest_clear_date(infusions, exposures, events, expected):
    case = make_case(day(0), infusions, exposures, events)
    found = earliest_clear_date(case)
    if expected is None:
        assert found is None
        return
    assert found == D + timedelta(days=expected)
    assert type(found) is date
    assert run({**case, "proposed_date": found})["allowed"] is True
    if expected:
        before = run({**case, "proposed_date": found - timedelta(days=1)})
        assert any(lo["until"] for lo in before["lockouts"])


def test_earliest_clear_date_stops_at_the_horizon():
    case = make_case(D, [], [exposure("gene_modified_cell_therapy", day(-1))])
    assert earliest_clear_date(case, horizon_days=30) is None
    # 2026-03-01 + 6 calendar months = 2026-09-01, 183 days after D
    assert earliest_clear_date(case) == date(2026, 9, 1)
    assert earliest_clear_date(case, horizon_days=183) == date(2026, 9, 1)
    assert earliest_clear_date(case, horizon_days=182) is None


@pytest.mark.parametrize("horizon", [-1, 1.5, True, None])
def test_earliest_clear_date_refuses_a_bad_horizon(horizon):
    with pytest.raises(ValueError, match="^horizon_days:"):
        earliest_clear_date(make_case(), horizon_days=horizon)


def test_earliest_clear_date_validates_the_case():
    case = make_case()
    del case["exposures"]
    with pytest.raises(ValueError, match="^exposures:"):
        earliest_clear_date(case)
