"""Property tests of the lockout checker (Hypothesis): the algebra of PROTOCOL 5.2 that
must hold for any valid case, not just the boundary table."""

import random
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellstudy.infusions.lockouts import LOCKOUT_CODES, check, earliest_clear_date

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

R = date(2026, 3, 2)
CATEGORIES = (
    "systemic_steroid",
    "systemic_antitumor",
    "radiotherapy",
    "donor_lymphocyte_infusion",
    "intrathecal",
    "gene_modified_cell_therapy",
    "vaccine",
    "major_surgery",
    "diagnostic_biopsy",
)
WASHOUT_CODES = frozenset(LOCKOUT_CODES[:7])  # washout_* and major_surgery
HORIZON = 320  # beyond any lockout the strategies below can produce


# --- strategies -----------------------------------------------------------------------


def near(low, high):
    """A day R + n, as a date or an ISO string (PROTOCOL 5.2 takes both)."""
    return (
        st.integers(low, high)
        .map(lambda n: R + timedelta(days=n))
        .flatmap(lambda d: st.sampled_from([d, d.isoformat()]))
    )


@st.composite
def exposures(draw):
    item = {"category": draw(st.sampled_from(CATEGORIES)), "last_date": draw(near(-220, 100))}
    if draw(st.booleans()):
        half_life = draw(st.decimals(Decimal("0.01"), Decimal("5"), places=2))
        item["half_life_days"] = draw(st.sampled_from([half_life, float(str(half_life))]))
    if draw(st.booleans()):
        item["physiological_replacement"] = draw(st.booleans())
    if draw(st.booleans()):
        item["name"] = draw(st.text(max_size=8))
    return item


adverse_events = st.fixed_dictionaries(
    {
        "term": st.sampled_from(["Cytokine release syndrome", "ICANS", "Anemia", "Sepsis"]),
        "grade": st.integers(1, 5),
        "category": st.sampled_from(["crs", "icans", "other"]),
        "related": st.sampled_from([True, False, None]),
    }
)


@st.composite
def cases(draw):
    first = draw(st.booleans())  # half the cases are a first infusion
    return {
        "proposed_date": draw(near(-30, 30)),
        "infusion_dates": [] if first else draw(st.lists(near(-40, 20), min_size=1, max_size=4)),
        "exposures": draw(st.lists(exposures(), max_size=5)),
        "open_adverse_events": draw(st.lists(adverse_events, max_size=2)),
    }


def on(case, day):
    return {**case, "proposed_date": day}


def proposed(case):
    value = case["proposed_date"]
    return value if isinstance(value, date) else date.fromisoformat(value)


def codes(result):
    return [lo["code"] for lo in result["lockouts"]]


def dated(result):
    return {lo["code"]: date.fromisoformat(lo["until"]) for lo in result["lockouts"] if lo["until"] is not None}


# --- properties -----------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_the_answer_keeps_the_contract(case):
    result = check(case)
    found = codes(result)
    # allowed iff no lockouts; one entry per code; table order
    assert result["allowed"] is (not found)
    assert found == [c for c in LOCKOUT_CODES if c in found]
    day = proposed(case)
    for lo in result["lockouts"]:
        # until is the first day it no longer blocks: always after the proposed date
        assert lo["until"] is None or date.fromisoformat(lo["until"]) > day
        if lo["code"] in ("max_infusions", "toxicity_hold"):
            assert lo["until"] is None
        if lo["code"] == "vaccine":  # dated before the first infusion only
            assert (lo["until"] is None) is bool(case["infusion_dates"])
    if case["infusion_dates"]:
        assert not WASHOUT_CODES & set(found), "washouts apply before the first only"
    window = result["vaccination_window"]
    start, end = date.fromisoformat(window["start"]), date.fromisoformat(window["end"])
    # the proposed date counts as an infusion
    assert start + timedelta(days=27) <= day <= end - timedelta(days=84)


@SETTINGS
@given(cases())
def test_proposing_on_until_clears_that_lockout(case):
    # Each dated lockout blocks every day before its until and none from it on: on
    # until, that code is gone, and so is every dated lockout that lifted by then.
    # Other lockouts (an undated one, or a dated one that lifts later) may remain.
    for code, until in dated(check(case)).items():
        again = check(on(case, until))
        assert code not in codes(again)
        for other, other_until in dated(check(case)).items():
            if other_until <= until:
                assert other not in codes(again)


@SETTINGS
@given(cases(), st.integers(0, 200))
def test_moving_the_date_later_never_adds_a_washout_lockout(case, shift):
    early = check(case)
    later = check(on(case, proposed(case) + timedelta(days=shift)))
    monotone = set(WASHOUT_CODES) | {"min_interval"}
    if not case["infusion_dates"]:
        monotone.add("vaccine")  # the exposure rule of a first infusion
    early_dated, later_dated = dated(early), dated(later)
    for code in monotone & set(codes(later)):
        assert code in codes(early)
        assert later_dated[code] == early_dated[code], "until depends on the facts only"


@SETTINGS
@given(cases(), st.integers(-60, 60))
def test_undated_holds_do_not_depend_on_the_date(case, shift):
    a = check(case)
    b = check(on(case, proposed(case) + timedelta(days=shift)))
    for code in ("max_infusions", "toxicity_hold"):
        assert [lo for lo in a["lockouts"] if lo["code"] == code] == [lo for lo in b["lockouts"] if lo["code"] == code]


@SETTINGS
@given(cases(), st.randoms(use_true_random=False))
def test_the_order_of_the_lists_does_not_matter(case, rnd: random.Random):
    shuffled = {
        key: (rnd.sample(value, len(value)) if isinstance(value, list) else value) for key, value in case.items()
    }
    a, b = check(case), check(shuffled)
    assert [(lo["code"], lo["until"]) for lo in a["lockouts"]] == [(lo["code"], lo["until"]) for lo in b["lockouts"]]
    assert a["vaccination_window"] == b["vaccination_window"]


@SETTINGS
@given(cases())
def test_earliest_clear_date_is_the_first_day_without_dated_lockouts(case):
    start = proposed(case)
    found = earliest_clear_date(case, horizon_days=HORIZON)
    # brute force: the first day in range without a dated lockout
    first_clear = None
    for n in range(HORIZON + 1):
        day = start + timedelta(days=n)
        if not dated(check(on(case, day))):
            first_clear = day
            break
    assert first_clear is not None, "the strategies keep every lockout within HORIZON"
    if check(on(case, first_clear))["allowed"]:
        assert found == first_clear
    else:
        # an undated lockout remains there, and (it never lifts with time) later too
        assert found is None
        for n in (1, 30, 200):
            assert not check(on(case, first_clear + timedelta(days=n)))["allowed"]
