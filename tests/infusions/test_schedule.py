"""The schedule of PROTOCOL 5.1 and its target windows (5.2): infusion, lymphodepletion
and visit plans anchored on the first infusion, the Window class, target deviations,
Mosteller BSA and the dose deviation check."""

from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellstudy.enrollment.eligibility import add_months
from cellstudy.infusions.schedule import (
    Window,
    bsa_mosteller,
    dose_deviation,
    infusion_plan,
    lymphodepletion_plan,
    target_deviation,
    visit_plan,
)
from cellstudy.study import STUDY, Visit

SETTINGS = settings(max_examples=300, deadline=None)
FIRST = date(2024, 3, 4)  # a Monday
D = timedelta


# --- Window --------------------------------------------------------------------------

WINDOW = Window(date(2024, 3, 11), date(2024, 3, 10), date(2024, 3, 12))


@pytest.mark.parametrize(
    "day, inside",
    [
        (date(2024, 3, 9), False),  # a day before earliest
        (date(2024, 3, 10), True),  # earliest, inclusive
        (date(2024, 3, 11), True),  # target
        (date(2024, 3, 12), True),  # latest, inclusive
        (date(2024, 3, 13), False),  # a day after latest
    ],
)
def test_window_contains_both_ends_inclusive(day, inside):
    assert WINDOW.contains(day) is inside


@pytest.mark.parametrize(
    "today, done, missed, expected",
    [
        (date(2024, 3, 9), False, False, "upcoming"),  # the day before earliest
        (date(2024, 3, 10), False, False, "due"),  # earliest
        (date(2024, 3, 11), False, False, "due"),
        (date(2024, 3, 12), False, False, "due"),  # latest
        (date(2024, 3, 13), False, False, "overdue"),  # the day after latest
        (date(2025, 1, 1), False, False, "overdue"),
        # done wins over the date, whenever it happened
        (date(2024, 3, 9), True, False, "done"),
        (date(2024, 3, 11), True, False, "done"),
        (date(2024, 3, 13), True, False, "done"),
        # missed only when marked missed, at any date
        (date(2024, 3, 9), False, True, "missed"),
        (date(2024, 3, 11), False, True, "missed"),
        (date(2024, 3, 13), False, True, "missed"),
    ],
)
def test_window_status_at_each_boundary(today, done, missed, expected):
    assert WINDOW.status(today, done, missed=missed) == expected


def test_window_status_default_is_not_missed():
    assert WINDOW.status(date(2024, 3, 13), False) == "overdue"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"today": datetime(2024, 3, 11, 8, 0), "done": False}, "today"),
        ({"today": "2024-03-11", "done": False}, "today"),
        ({"today": date(2024, 3, 11), "done": None}, "done"),
        ({"today": date(2024, 3, 11), "done": False, "missed": 1}, "missed"),
        ({"today": date(2024, 3, 11), "done": True, "missed": True}, "both done and missed"),
    ],
)
def test_window_status_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WINDOW.status(**kwargs)


def test_window_around():
    assert Window.around(date(2024, 3, 1), 2, 3) == Window(date(2024, 3, 1), date(2024, 2, 28), date(2024, 3, 4))
    assert Window.around(date(2024, 3, 1), 0, 0).contains(date(2024, 3, 1))


@pytest.mark.parametrize(
    "args, message",
    [
        ((date(2024, 3, 2), date(2024, 3, 1), date(2024, 3, 1)), "earliest <= target <= latest"),
        ((date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)), "earliest <= target <= latest"),
        ((datetime(2024, 3, 1), date(2024, 3, 1), date(2024, 3, 1)), "window.target"),
        ((date(2024, 3, 1), "2024-03-01", date(2024, 3, 1)), "window.earliest"),
    ],
)
def test_window_bad_construction(args, message):
    with pytest.raises(ValueError, match=message):
        Window(*args)


@pytest.mark.parametrize(
    "before, after, message",
    [
        (-1, 0, "before"),
        (0, -1, "after"),
        (1.0, 1, "before"),
        (True, 1, "before"),
    ],
)
def test_window_around_bad_days(before, after, message):
    with pytest.raises(ValueError, match=message):
        Window.around(FIRST, before, after)


def test_window_contains_refuses_a_datetime():
    with pytest.raises(ValueError, match="day"):
        WINDOW.contains(datetime(2024, 3, 11, 12, 0))


def test_window_is_frozen():
    with pytest.raises(AttributeError):
        WINDOW.target = FIRST  # type: ignore[misc]


# --- infusion plan (PROTOCOL 5.1: day 0, 7, 14 +/- 1) ---------------------------------


def test_infusion_plan_defaults():
    plan = infusion_plan(FIRST)
    assert [(p["number"], p["day"], p["target"]) for p in plan] == [
        (1, 0, date(2024, 3, 4)),
        (2, 7, date(2024, 3, 11)),
        (3, 14, date(2024, 3, 18)),
    ]
    assert [p["window"] for p in plan] == [
        Window(date(2024, 3, 4), date(2024, 3, 3), date(2024, 3, 5)),
        Window(date(2024, 3, 11), date(2024, 3, 10), date(2024, 3, 12)),
        Window(date(2024, 3, 18), date(2024, 3, 17), date(2024, 3, 19)),
    ]


def test_infusion_plan_accepts_an_iso_string_and_refuses_a_datetime():
    assert infusion_plan("2024-03-04") == infusion_plan(FIRST)
    with pytest.raises(ValueError, match="first_infusion"):
        infusion_plan(datetime(2024, 3, 4, 9, 0))
    with pytest.raises(ValueError, match="first_infusion"):
        infusion_plan(None)


def test_infusion_plan_follows_the_study_definition():
    amended = replace(STUDY, regimen=replace(STUDY.regimen, infusion_days=(0, 14), infusion_window_days=2))
    plan = infusion_plan(FIRST, amended)
    assert [(p["number"], p["target"]) for p in plan] == [(1, FIRST), (2, date(2024, 3, 18))]
    assert plan[1]["window"] == Window(date(2024, 3, 18), date(2024, 3, 16), date(2024, 3, 20))


def test_infusion_plan_crosses_month_and_year_ends():
    plan = infusion_plan(date(2024, 12, 25))
    assert [p["target"] for p in plan] == [date(2024, 12, 25), date(2025, 1, 1), date(2025, 1, 8)]


def test_schedule_beyond_the_calendar_is_bad_input():
    with pytest.raises(ValueError, match="calendar"):
        infusion_plan(date(9999, 12, 25))
    with pytest.raises(ValueError, match="calendar"):
        visit_plan(date(9999, 9, 1))


# --- lymphodepletion (PROTOCOL 5.1: days -5, -4, -3) -----------------------------------


def test_lymphodepletion_plan():
    plan = lymphodepletion_plan(FIRST)
    assert [(p["day"], p["date"]) for p in plan] == [
        (-5, date(2024, 2, 28)),
        (-4, date(2024, 2, 29)),
        (-3, date(2024, 3, 1)),
    ]
    for p in plan:
        assert p["drugs"] == [
            {"name": "fludarabine", "dose_mg_per_m2": Decimal("30")},
            {"name": "cyclophosphamide", "dose_mg_per_m2": Decimal("300")},
        ]


def test_lymphodepletion_days_do_not_share_their_drug_lists():
    plan = lymphodepletion_plan(FIRST)
    plan[0]["drugs"][0]["dose_mg_per_m2"] = Decimal("0")
    assert plan[1]["drugs"][0]["dose_mg_per_m2"] == Decimal("30")


# --- visit plan ----------------------------------------------------------------------


def test_visit_plan_defaults():
    plan = visit_plan(FIRST)
    assert [p["code"] for p in plan] == [v.code for v in STUDY.visits]
    by_code = {p["code"]: p for p in plan}
    assert by_code["D1"]["target"] == date(2024, 3, 5)
    assert by_code["D1"]["window"] == Window(date(2024, 3, 5), date(2024, 3, 5), date(2024, 3, 5))
    assert by_code["D28"]["target"] == date(2024, 4, 1)
    assert by_code["D28"]["window"] == Window(date(2024, 4, 1), date(2024, 3, 29), date(2024, 4, 4))
    assert by_code["M2"]["target"] == date(2024, 5, 4)
    assert by_code["M6"]["window"] == Window(date(2024, 9, 4), date(2024, 8, 21), date(2024, 9, 18))
    assert by_code["M6"]["label"] == "Month 6"
    assert set(by_code["D3"]) == {"code", "label", "target", "window"}


@pytest.mark.parametrize(
    "first, m2, m3, m6",
    [
        # month visits are calendar months clamped to the month's end (PROTOCOL 4.4 style)
        (date(2023, 8, 31), date(2023, 10, 31), date(2023, 11, 30), date(2024, 2, 29)),
        (date(2024, 8, 31), date(2024, 10, 31), date(2024, 11, 30), date(2025, 2, 28)),
        (date(2023, 12, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 6, 30)),
        (date(2024, 1, 30), date(2024, 3, 30), date(2024, 4, 30), date(2024, 7, 30)),
        (date(2024, 2, 29), date(2024, 4, 29), date(2024, 5, 29), date(2024, 8, 29)),
    ],
)
def test_month_visits_are_anchored_on_calendar_months(first, m2, m3, m6):
    by_code = {p["code"]: p["target"] for p in visit_plan(first)}
    assert (by_code["M2"], by_code["M3"], by_code["M6"]) == (m2, m3, m6)


def test_month_visit_window_is_in_days_around_the_clamped_target():
    m6 = {p["code"]: p for p in visit_plan(date(2023, 8, 31))}["M6"]["window"]
    assert m6 == Window(date(2024, 2, 29), date(2024, 2, 15), date(2024, 3, 14))


def test_visit_plan_follows_the_study_definition():
    amended = replace(
        STUDY,
        visits=(
            Visit("D2", "Day 2", day=2, before=0, after=1),
            Visit("M12", "Month 12", months=12, before=30, after=30),
        ),
    )
    plan = visit_plan(FIRST, amended)
    assert [(p["code"], p["target"]) for p in plan] == [("D2", date(2024, 3, 6)), ("M12", date(2025, 3, 4))]
    assert plan[0]["window"] == Window(date(2024, 3, 6), date(2024, 3, 6), date(2024, 3, 7))


def test_re_anchoring_moves_every_date():
    """PROTOCOL 5.1: the schedule shifts with the actual first infusion date."""
    planned, actual = FIRST, FIRST + D(3)
    for make in (infusion_plan, visit_plan):
        for old, new in zip(make(planned), make(actual), strict=False):
            assert new["target"] > old["target"]
    old_ld, new_ld = lymphodepletion_plan(planned), lymphodepletion_plan(actual)
    assert [n["date"] - o["date"] for o, n in zip(old_ld, new_ld, strict=False)] == [D(3)] * 3


@SETTINGS
@given(st.dates(date(2000, 1, 1), date(2090, 12, 31)), st.integers(-60, 60))
def test_re_anchoring_property(first, shift):
    moved = first + D(shift)
    for old, new in zip(infusion_plan(first), infusion_plan(moved), strict=False):
        assert new["target"] - old["target"] == D(shift)
        assert new["window"].earliest - old["window"].earliest == D(shift)
        assert new["window"].latest - old["window"].latest == D(shift)
    visits = {v.code: v for v in STUDY.visits}
    for p in visit_plan(moved):
        visit = visits[p["code"]]
        if visit.day is not None:
            assert p["target"] == moved + D(visit.day)
        else:
            assert p["target"] == add_months(moved, visit.months)
        assert p["window"].target - p["window"].earliest == D(visit.before)
        assert p["window"].latest - p["window"].target == D(visit.after)


@SETTINGS
@given(st.dates(date(2000, 1, 1), date(2090, 12, 31)))
def test_plans_are_in_order_and_windows_contain_their_targets(first):
    ld = [p["date"] for p in lymphodepletion_plan(first)]
    inf = [p["target"] for p in infusion_plan(first)]
    assert ld == sorted(ld) and ld[-1] < first == inf[0]
    assert inf == sorted(inf)
    visits = visit_plan(first)
    assert [p["target"] for p in visits] == sorted(p["target"] for p in visits)
    for p in infusion_plan(first) + visits:
        assert p["window"].contains(p["target"])
    assert all(p["target"] > first for p in visits)


# --- target deviation (PROTOCOL 5.2: targets, not lockouts) ----------------------------


@pytest.mark.parametrize(
    "number, proposed, needs_reason",
    [
        (1, date(2024, 3, 2), True),  # 2 days before day 0
        (1, date(2024, 3, 3), False),  # day -1
        (1, date(2024, 3, 4), False),  # day 0
        (1, date(2024, 3, 5), False),  # day +1
        (1, date(2024, 3, 6), True),
        (2, date(2024, 3, 9), True),  # day 5
        (2, date(2024, 3, 10), False),  # day 6
        (2, date(2024, 3, 11), False),  # day 7
        (2, date(2024, 3, 12), False),  # day 8
        (2, date(2024, 3, 13), True),  # day 9
        (3, date(2024, 3, 16), True),  # day 12
        (3, date(2024, 3, 17), False),  # day 13
        (3, date(2024, 3, 19), False),  # day 15
        (3, date(2024, 3, 20), True),  # day 16
        (3, date(2024, 4, 30), True),
    ],
)
def test_target_deviation_at_the_window_boundaries(number, proposed, needs_reason):
    message = target_deviation(number, FIRST, proposed, STUDY)
    assert (message is not None) is needs_reason
    if needs_reason:
        assert "deviation reason" in message
        assert f"Infusion {number}" in message
        assert proposed.isoformat() in message


def test_target_deviation_message_says_how_far_and_which_window():
    message = target_deviation(2, FIRST, date(2024, 3, 13))
    assert "2024-03-10 to 2024-03-12" in message
    assert "2 days after" in message
    assert "2 days before" in target_deviation(2, FIRST, date(2024, 3, 9))
    exact = replace(STUDY, regimen=replace(STUDY.regimen, infusion_window_days=0))
    assert "1 day before the target" in target_deviation(2, FIRST, date(2024, 3, 10), exact)
    assert target_deviation(2, FIRST, date(2024, 3, 11), exact) is None


def test_target_deviation_day_8_then_13_is_in_window_for_infusion_3():
    """PROTOCOL 5.2's example: day 8 then day 13 is refused by min_interval (a lockout,
    not this function); as a target, day 13 is inside infusion 3's window."""
    assert target_deviation(3, FIRST, FIRST + D(13)) is None


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, FIRST, FIRST), "number"),
        ((4, FIRST, FIRST), "number"),
        ((True, FIRST, FIRST), "number"),
        (("1", FIRST, FIRST), "number"),
        ((1, FIRST, datetime(2024, 3, 4, 9)), "proposed"),
        ((1, FIRST, "4 March"), "proposed"),
        ((1, None, FIRST), "first_infusion"),
    ],
)
def test_target_deviation_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        target_deviation(*args)


# --- Mosteller BSA -------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, weight, bsa",
    [
        (170, 70, "1.82"),  # sqrt(11900 / 3600) = 1.8181...
        (180, 80, "2.00"),  # sqrt(4) exactly
        (160, 60, "1.63"),  # 1.63299...
        (150, 50, "1.44"),  # 1.44337...
        (Decimal("175.5"), Decimal("68.2"), "1.82"),  # 1.8228...
        (175.5, 68.2, "1.82"),  # a float by its shortest repr
        (50, 2, "0.17"),  # the lower limits, inclusive: 0.1666...
        (250, 400, "5.27"),  # the upper limits, inclusive: 5.2704...
        (100, 36, "1.00"),  # sqrt(1) exactly
        # a root exactly on a half rounds up: 1.825^2 x 3600 = 11990.25 = 159.87 x 75
        (Decimal("159.87"), 75, "1.83"),
        # 1.815^2 x 3600 = 11859.21 = 119.79 x 99: exactly 1.815 -> 1.82 (half-up, not even)
        (Decimal("119.79"), 99, "1.82"),
        # just under the half: 1.8149... -> 1.81
        (Decimal("119.78"), 99, "1.81"),
    ],
)
def test_bsa_mosteller_known_values(height, weight, bsa):
    result = bsa_mosteller(height, weight)
    assert isinstance(result, Decimal)
    assert result == Decimal(bsa) and str(result) == bsa


@SETTINGS
@given(st.decimals(50, 250, places=1), st.decimals(2, 400, places=1))
def test_bsa_mosteller_is_the_half_up_rounded_root(height, weight):
    bsa = bsa_mosteller(height, weight)
    x = height * weight / 3600
    low, high = bsa - Decimal("0.005"), bsa + Decimal("0.005")
    assert low * low <= x < high * high  # exact: Decimal squares of 3-decimal numbers


@pytest.mark.parametrize(
    "height, weight, message",
    [
        (0, 70, "height_cm"),
        (-170, 70, "height_cm"),
        (49, 70, "height_cm"),
        (Decimal("250.1"), 70, "height_cm"),
        (1700, 70, "height_cm"),
        (170, 0, "weight_kg"),
        (170, -70, "weight_kg"),
        (170, Decimal("1.9"), "weight_kg"),
        (170, 401, "weight_kg"),
        (170, 70000, "weight_kg"),
        ("170", 70, "height_cm"),
        (True, 70, "height_cm"),
        (None, 70, "height_cm"),
        (170, float("nan"), "weight_kg"),
        (float("inf"), 70, "height_cm"),
        (Decimal("NaN"), 70, "height_cm"),
        (170, Decimal("Infinity"), "weight_kg"),
    ],
)
def test_bsa_mosteller_bad_input(height, weight, message):
    with pytest.raises(ValueError, match=message):
        bsa_mosteller(height, weight)


# --- dose deviation ------------------------------------------------------------------

TEN = Decimal("10")


@pytest.mark.parametrize(
    "planned, actual, tolerance, deviation",
    [
        (100_000_000, 100_000_000, TEN, False),
        (100_000_000, 110_000_000, TEN, False),  # exactly +10 %
        (100_000_000, 90_000_000, TEN, False),  # exactly -10 %
        (100_000_000, 110_000_001, TEN, True),  # just over +10 %
        (100_000_000, 89_999_999, TEN, True),  # just over -10 %
        (3_000_000_000, 3_300_000_000, TEN, False),
        (3_000_000_000, 3_300_000_001, TEN, True),
        (3, 4, Decimal("33.3"), True),  # 33.33... % > 33.3 %
        (3, 4, Decimal("33.34"), False),
        (1_000_000_000, 1_000_000_000, Decimal("0"), False),
        (1_000_000_000, 1_000_000_001, Decimal("0"), True),
        (1_000_000_000, 0, TEN, True),  # nothing given
        (100_000_000, 110_000_000, 10, False),  # an int tolerance
        (100_000_000, 105_000_000, Decimal("5.0"), False),
    ],
)
def test_dose_deviation(planned, actual, tolerance, deviation):
    assert dose_deviation(planned, actual, tolerance) is deviation


def test_dose_deviation_default_tolerance_is_ten_percent():
    assert STUDY.regimen.dose_tolerance_percent == TEN
    level = STUDY.regimen.dose_level("DL2")
    assert dose_deviation(level.cells, level.cells * 11 // 10, STUDY.regimen.dose_tolerance_percent) is False


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 1, TEN), "planned_cells"),
        ((-1, 1, TEN), "planned_cells"),
        ((1e8, 100_000_000, TEN), "planned_cells"),
        ((100_000_000, 1e8, TEN), "actual_cells"),
        ((100_000_000, -1, TEN), "actual_cells"),
        ((True, 1, TEN), "planned_cells"),
        ((100_000_000, "1", TEN), "actual_cells"),
        ((100_000_000, 1, 10.0), "tolerance_percent"),
        ((100_000_000, 1, "10"), "tolerance_percent"),
        ((100_000_000, 1, Decimal("-1")), "tolerance_percent"),
        ((100_000_000, 1, Decimal("NaN")), "tolerance_percent"),
        ((100_000_000, 1, None), "tolerance_percent"),
    ],
)
def test_dose_deviation_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        dose_deviation(*args)
