"""The 3+3 decision of PROTOCOL 5.3 (``decide``) and the sentinel stagger
(``sentinel_stagger``): a table for every path of rules 1 and 2, bad input, and Hypothesis
properties of the decision."""

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellstudy.infusions.escalation import DECISIONS, decide, sentinel_stagger

SETTINGS = settings(max_examples=500, deadline=None)


def lv(name, evaluable=0, dlt=0, pending=0):
    return {"level": name, "evaluable": evaluable, "dlt": dlt, "pending": pending}


def levels(*counts):
    """levels((3, 0, 0), (1, 0, 2)): DL1, DL2, ... with (evaluable, dlt, pending);
    missing trailing levels up to DL3 are empty."""
    rows = [lv(f"DL{i + 1}", *c) for i, c in enumerate(counts)]
    rows += [lv(f"DL{i + 1}") for i in range(len(rows), 3)]
    return rows


# (case id, levels, decision, level, mtd)
CASES = [
    # --- rule 1: T = lowest level with dlt >= 2 -------------------------------------
    ("rule1: 2 DLT at the lowest level stops", levels((2, 2, 0)), "stop", None, None),
    ("rule1: 3 DLT in 6 at the lowest level stops", levels((6, 3, 0)), "stop", None, None),
    ("rule1: 2 DLT at the lowest level stops even with pending", levels((2, 2, 1)), "stop", None, None),
    ("rule1: lowest level T wins over higher levels", levels((3, 2, 0), (6, 0, 0)), "stop", None, None),
    ("rule1: single level with 2 DLT stops", [lv("DL1", 2, 2, 0)], "stop", None, None),
    # M below T: mtd needs evaluable >= 6, dlt <= 1, pending == 0
    ("rule1: M 6 evaluable 0 DLT -> mtd M", levels((3, 0, 0), (6, 0, 0), (3, 2, 0)), "mtd", None, "DL2"),
    ("rule1: M 6 evaluable 1 DLT -> mtd M", levels((6, 1, 0), (3, 2, 0)), "mtd", None, "DL1"),
    ("rule1: M 7 evaluable 1 DLT -> mtd M", levels((7, 1, 0), (3, 2, 0)), "mtd", None, "DL1"),
    ("rule1: T highest level, M 6 evaluable -> mtd M", levels((3, 0, 0), (6, 1, 0), (2, 2, 1)), "mtd", None, "DL2"),
    # else enrol at M while evaluable + pending < 6 (boundaries 2..5)
    ("rule1: M 3+0 -> enrol M", levels((3, 0, 0), (3, 2, 0)), "enrol", "DL1", None),
    ("rule1: M 3+2 = 5 -> enrol M", levels((3, 0, 2), (3, 2, 0)), "enrol", "DL1", None),
    ("rule1: M 5+0 -> enrol M", levels((5, 1, 0), (3, 2, 0)), "enrol", "DL1", None),
    ("rule1: M 2+2 = 4 -> enrol M", levels((2, 0, 2), (2, 2, 1)), "enrol", "DL1", None),
    ("rule1: M empty (0+0) -> enrol M", levels((0, 0, 0), (2, 2, 0)), "enrol", "DL1", None),
    # else wait
    ("rule1: M 6 evaluable + 1 pending -> wait", levels((6, 0, 1), (3, 2, 0)), "wait", None, None),
    ("rule1: M 5+1 = 6 -> wait", levels((5, 1, 1), (3, 2, 0)), "wait", None, None),
    ("rule1: M 3+3 = 6 -> wait", levels((3, 0, 3), (3, 2, 0)), "wait", None, None),
    ("rule1: M 0+6 -> wait", levels((0, 0, 6), (2, 2, 0)), "wait", None, None),
    # T is the LOWEST level with dlt >= 2 even when a higher one also has it
    ("rule1: T is the lowest of two levels with >= 2 DLT", levels((6, 0, 0), (3, 2, 0), (3, 3, 0)), "mtd", None, "DL1"),
    # --- rule 2: no level with dlt >= 2 ---------------------------------------------
    ("rule2: no subjects -> enrol lowest", levels(), "enrol", "DL1", None),
    ("rule2: no subjects, single level -> enrol it", [lv("only")], "enrol", "only", None),
    # cohort of 3 (dlt 0, assigned <= 3, not highest or evaluable < 3)
    ("rule2: 1+0 of 3 -> enrol L", levels((1, 0, 0)), "enrol", "DL1", None),
    ("rule2: 0+2 of 3 -> enrol L", levels((0, 0, 2)), "enrol", "DL1", None),
    ("rule2: 2+0 of 3 -> enrol L", levels((2, 0, 0)), "enrol", "DL1", None),
    ("rule2: 2+1 = 3 of 3, pending -> wait", levels((2, 0, 1)), "wait", None, None),
    ("rule2: 0+3 = 3 of 3 -> wait", levels((0, 0, 3)), "wait", None, None),
    ("rule2: 3+0 0 DLT not highest -> escalate", levels((3, 0, 0)), "escalate", "DL2", None),
    ("rule2: L is DL2, 3+0 -> escalate to DL3", levels((3, 0, 0), (3, 0, 0)), "escalate", "DL3", None),
    # cohort of 6 because dlt == 1
    ("rule2: dlt 1 in 1 -> cohort 6, enrol", levels((1, 1, 0)), "enrol", "DL1", None),
    ("rule2: dlt 1 in 3 -> cohort 6, enrol", levels((3, 1, 0)), "enrol", "DL1", None),
    ("rule2: dlt 1, 3+2 = 5 -> enrol", levels((3, 1, 2)), "enrol", "DL1", None),
    ("rule2: dlt 1, 3+3 = 6 -> wait", levels((3, 1, 3)), "wait", None, None),
    ("rule2: dlt 1, 5+1 = 6 -> wait", levels((5, 1, 1)), "wait", None, None),
    ("rule2: dlt 1 in 6, none pending, not highest -> escalate", levels((6, 1, 0)), "escalate", "DL2", None),
    ("rule2: dlt 1 in 6 at highest -> mtd", levels((3, 0, 0), (3, 0, 0), (6, 1, 0)), "mtd", None, "DL3"),
    # cohort of 6 because evaluable + pending > 3
    ("rule2: 4+0 > 3 -> cohort 6, enrol", levels((4, 0, 0)), "enrol", "DL1", None),
    ("rule2: 3+1 = 4 > 3 -> cohort 6, enrol", levels((3, 0, 1)), "enrol", "DL1", None),
    ("rule2: 0+4 > 3 -> cohort 6, enrol", levels((0, 0, 4)), "enrol", "DL1", None),
    ("rule2: 5+0 -> enrol", levels((5, 0, 0)), "enrol", "DL1", None),
    ("rule2: 4+2 = 6 -> wait", levels((4, 0, 2)), "wait", None, None),
    ("rule2: 6+0 0 DLT not highest -> escalate", levels((6, 0, 0)), "escalate", "DL2", None),
    ("rule2: 7+0 not highest -> escalate", levels((7, 0, 0)), "escalate", "DL2", None),
    # cohort of 6 because L is the highest level with evaluable >= 3
    ("rule2: highest 3+0 -> cohort 6, enrol", levels((3, 0, 0), (3, 0, 0), (3, 0, 0)), "enrol", "DL3", None),
    (
        "rule2: highest 2+1 (evaluable < 3) -> cohort 3 full -> wait",
        levels((3, 0, 0), (3, 0, 0), (2, 0, 1)),
        "wait",
        None,
        None,
    ),
    ("rule2: highest 2+0 -> cohort 3, enrol", levels((3, 0, 0), (3, 0, 0), (2, 0, 0)), "enrol", "DL3", None),
    ("rule2: highest 0+3 -> cohort 3 full -> wait", levels((3, 0, 0), (3, 0, 0), (0, 0, 3)), "wait", None, None),
    ("rule2: highest 6+0 -> mtd", levels((3, 0, 0), (3, 0, 0), (6, 0, 0)), "mtd", None, "DL3"),
    ("rule2: highest 5+1 -> wait", levels((3, 0, 0), (3, 0, 0), (5, 0, 1)), "wait", None, None),
    ("rule2: single level 3+0 is the highest -> enrol", [lv("DL1", 3, 0, 0)], "enrol", "DL1", None),
    ("rule2: single level 6+0 -> mtd", [lv("DL1", 6, 0, 0)], "mtd", None, "DL1"),
    # rule 2 looks at L only (PROTOCOL 5.3, as written)
    ("rule2: a lower level's 1 DLT in 3 is not revisited", levels((3, 1, 0), (3, 0, 0)), "escalate", "DL3", None),
    (
        "rule2: L is the highest level with subjects, lower pending ignored",
        levels((2, 0, 1), (1, 0, 0)),
        "enrol",
        "DL2",
        None,
    ),
    ("rule2: an empty level between is skipped for L", levels((3, 0, 0), (0, 0, 0), (1, 0, 0)), "enrol", "DL3", None),
]


@pytest.mark.parametrize("rows, decision, level, mtd", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_table(rows, decision, level, mtd):
    result = decide(rows)
    assert set(result) == {"decision", "level", "mtd", "reason"}
    assert (result["decision"], result["level"], result["mtd"]) == (decision, level, mtd)


@pytest.mark.parametrize(
    "rows, fragments",
    [
        (levels((3, 2, 1)), ["DL1: 3 evaluable, 2 DLT, 1 pending", "lowest"]),
        (
            levels((6, 1, 0), (4, 2, 0)),
            ["DL2: 4 evaluable, 2 DLT, 0 pending", "DL1: 6 evaluable, 1 DLT, 0 pending", "MTD is DL1"],
        ),
        (levels((3, 0, 2), (3, 2, 0)), ["DL1: 3 evaluable, 0 DLT, 2 pending", "3 + 2 = 5 < 6"]),
        (levels((5, 1, 1), (3, 2, 0)), ["5 + 1 = 6 >= 6", "1 pending"]),
        (levels((3, 1, 0)), ["DL1: 3 evaluable, 1 DLT, 0 pending", "cohort of 6 (1 DLT)", "3 + 0 = 3 < 6"]),
        (levels((3, 0, 1)), ["cohort of 6 (4 > 3 assigned)"]),
        (levels((3, 0, 0), (3, 0, 0), (3, 0, 0)), ["highest level", "3 >= 3 evaluable"]),
        (levels((2, 0, 1)), ["cohort of 3", "3 assigned", "1 pending"]),
        (levels((3, 0, 0)), ["0 DLT in 3 evaluable", "escalate to DL2"]),
        (levels(), ["no subjects", "DL1: 0 evaluable, 0 DLT, 0 pending"]),
    ],
)
def test_reason_names_the_counts_used(rows, fragments):
    reason = decide(rows)["reason"]
    for fragment in fragments:
        assert fragment in reason


def test_decide_accepts_a_tuple_and_ignores_extra_keys():
    rows = tuple({**row, "cells": 10**8} for row in levels((3, 0, 0)))
    assert decide(rows)["decision"] == "escalate"


def test_decide_does_not_modify_its_input():
    rows = levels((3, 1, 0), (2, 0, 1))
    before = [dict(r) for r in rows]
    decide(rows)
    assert rows == before


@pytest.mark.parametrize(
    "rows, message",
    [
        ([], "at least one"),
        (None, "levels"),
        ("DL1", "levels"),
        ({"level": "DL1", "evaluable": 0, "dlt": 0, "pending": 0}, "levels"),
        ([lv("DL1"), lv("DL1")], "listed twice"),
        (["DL1"], "levels[0]: expected a dict"),
        ([lv("DL1"), None], "levels[1]: expected a dict"),
        ([{"level": "DL1", "evaluable": 0, "dlt": 0}], "missing pending"),
        ([{"evaluable": 0, "dlt": 0, "pending": 0}], "missing level"),
        ([lv(1)], "levels[0].level"),
        ([lv(None)], "levels[0].level"),
        ([lv("")], "levels[0].level"),
        ([lv("DL1", evaluable=-1)], "levels[0].evaluable"),
        ([lv("DL1", pending=-1)], "levels[0].pending"),
        ([lv("DL1", 3, dlt=-1)], "levels[0].dlt"),
        ([lv("DL1", evaluable=3.0)], "levels[0].evaluable"),
        ([lv("DL1", evaluable="3")], "levels[0].evaluable"),
        ([lv("DL1", evaluable=None)], "levels[0].evaluable"),
        ([lv("DL1", evaluable=True)], "levels[0].evaluable"),
        ([lv("DL1", 3, pending=False)], "levels[0].pending"),
        ([lv("DL1", 3, dlt=True)], "levels[0].dlt"),
        ([lv("DL1", 1, dlt=2)], "levels[0].dlt: 2 DLT but only 1 evaluable"),
        ([lv("DL1", 0, dlt=1, pending=3)], "levels[0].dlt"),
        ([lv("DL1"), lv("DL2", 2, 3)], "levels[1].dlt"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(rows, message):
    with pytest.raises(ValueError) as excinfo:
        decide(rows)
    assert message in str(excinfo.value)


# --- properties ----------------------------------------------------------------------


@st.composite
def level_lists(draw, max_levels=5):
    n = draw(st.integers(1, max_levels))
    rows = []
    for i in range(n):
        evaluable = draw(st.integers(0, 8))
        # DLTs are rare in real data: weight 0 and 1 up so rule 2 is well explored
        dlt = draw(st.one_of(st.integers(0, min(1, evaluable)), st.integers(0, evaluable)))
        pending = draw(st.integers(0, 7))
        rows.append(lv(f"L{i}", evaluable, dlt, pending))
    return rows


@st.composite
def trial_states(draw, max_levels=5):
    """Realistic histories: completed cohorts below a current level L, nothing above,
    so that every decision (escalate included) is reached often."""
    n = draw(st.integers(1, max_levels))
    current = draw(st.integers(0, n - 1))
    rows = []
    for i in range(n):
        if i < current:
            evaluable = draw(st.sampled_from([3, 6]))
            dlt = draw(st.integers(0, 1 if evaluable == 6 else 0))
            rows.append(lv(f"L{i}", evaluable, dlt, 0))
        elif i == current:
            evaluable = draw(st.integers(0, 7))
            rows.append(
                lv(
                    f"L{i}",
                    evaluable,
                    draw(st.integers(0, min(evaluable, 3))),
                    draw(st.integers(0, 6 - min(evaluable, 6))),
                )
            )
        else:
            rows.append(lv(f"L{i}"))
    return rows


ANY_LEVELS = st.one_of(level_lists(), trial_states())


def _index(rows, name):
    return [r["level"] for r in rows].index(name)


@SETTINGS
@given(ANY_LEVELS)
def test_output_shape_is_always_valid(rows):
    result = decide(rows)
    assert set(result) == {"decision", "level", "mtd", "reason"}
    assert result["decision"] in DECISIONS
    names = [r["level"] for r in rows]
    if result["decision"] in ("enrol", "escalate"):
        assert result["level"] in names
    else:
        assert result["level"] is None
    if result["decision"] == "mtd":
        assert result["mtd"] in names
    else:
        assert result["mtd"] is None
    assert isinstance(result["reason"], str) and result["reason"]


@SETTINGS
@given(ANY_LEVELS)
def test_escalate_only_to_the_next_level_up(rows):
    result = decide(rows)
    if result["decision"] == "escalate":
        i = _index(rows, result["level"])
        assert i >= 1
        below = rows[i - 1]
        # the level escalated from has a complete cohort and nobody pending
        assert below["pending"] == 0 and below["evaluable"] >= 3
        # nobody is yet at the new level or above
        assert all(r["evaluable"] + r["pending"] == 0 for r in rows[i:])


@SETTINGS
@given(ANY_LEVELS)
def test_never_enrol_at_or_above_a_level_with_two_dlt(rows):
    result = decide(rows)
    if result["decision"] == "enrol":
        i = _index(rows, result["level"])
        assert all(r["dlt"] < 2 for r in rows[: i + 1])


@SETTINGS
@given(ANY_LEVELS)
def test_mtd_only_at_a_full_cohort_of_six_with_at_most_one_dlt(rows):
    result = decide(rows)
    if result["decision"] == "mtd":
        row = rows[_index(rows, result["mtd"])]
        assert row["evaluable"] >= 6 and row["dlt"] <= 1 and row["pending"] == 0


@SETTINGS
@given(ANY_LEVELS)
def test_stop_exactly_when_the_lowest_level_has_two_dlt(rows):
    assert (decide(rows)["decision"] == "stop") == (rows[0]["dlt"] >= 2)


@SETTINGS
@given(ANY_LEVELS)
def test_names_do_not_matter(rows):
    renamed = [{**r, "level": f"dose {i}"} for i, r in enumerate(rows)]
    a, b = decide(rows), decide(renamed)
    assert a["decision"] == b["decision"]
    for key in ("level", "mtd"):
        assert (a[key] is None) == (b[key] is None)
        if a[key] is not None:
            assert _index(rows, a[key]) == _index(renamed, b[key])


# --- sentinel stagger (PROTOCOL 5.3, amended 2026-12-02) ------------------------------

FIRST = date(2024, 3, 1)


@pytest.mark.parametrize(
    "own, key, others, stagger, expected",
    [
        # the second subject waits N days after the sentinel's first infusion
        (FIRST, 2, [(FIRST, 1)], 7, date(2024, 3, 8)),
        (date(2024, 3, 7), 2, [(FIRST, 1)], 7, date(2024, 3, 8)),  # the day before: held
        (date(2024, 3, 8), 2, [(FIRST, 1)], 7, None),  # the day itself: free
        (date(2024, 3, 1), 2, [(FIRST, 1)], 1, date(2024, 3, 2)),
        (date(2024, 3, 9), 2, [(date(2024, 2, 25), 1)], 14, date(2024, 3, 10)),
        # every later subject, not only the second (the amendment)
        (date(2024, 3, 3), 5, [(FIRST, 1), (date(2024, 3, 8), 2), (date(2024, 3, 9), 3)], 7, date(2024, 3, 8)),
        (date(2024, 3, 5), 5, [(date(2024, 3, 9), 3), (FIRST, 1)], 7, date(2024, 3, 8)),
        # the sentinel is the earliest first infusion, this subject included
        (date(2024, 2, 28), 9, [(FIRST, 1)], 7, None),
        # same day: the lower key is the sentinel
        (FIRST, 1, [(FIRST, 2)], 7, None),
        (FIRST, 2, [(FIRST, 1)], 7, date(2024, 3, 8)),
        # no stagger set: the study default
        (FIRST, 2, [(FIRST, 1)], None, None),
        (FIRST, 2, [(FIRST, 1)], 0, None),
        # the first subject of a level is the sentinel: nothing to wait for
        (FIRST, 1, [], 7, None),
    ],
)
def test_sentinel_stagger(own, key, others, stagger, expected):
    result = sentinel_stagger(own, key, others, stagger)
    assert (result.until if result else None) == expected
    if result:
        assert (result.sentinel_date, result.sentinel_key) == min(others)


@pytest.mark.parametrize(
    "args, message",
    [
        ((FIRST, 2, [(FIRST, 1)], -1), "stagger_days"),
        ((FIRST, 2, [(FIRST, 1)], 1.5), "stagger_days"),
        ((FIRST, 2, [(FIRST, 1)], True), "stagger_days"),
        ((datetime(2024, 3, 1, 9, 0), 2, [(FIRST, 1)], 7), "own_date"),
        (("2024-03-01", 2, [(FIRST, 1)], 7), "own_date"),
        ((FIRST, 2, [("2024-03-01", 1)], 7), r"level_firsts\[0\]"),
        ((FIRST, 2, [(datetime(2024, 3, 1, 9, 0), 1)], 7), r"level_firsts\[0\]"),
        ((FIRST, 2, [FIRST], 7), r"level_firsts\[0\]"),
        ((FIRST, 2, [(FIRST, 2)], 7), "among the others"),
        ((FIRST, 2, None, 7), "level_firsts"),
        ((date(9999, 12, 30), 2, [(date(9999, 12, 30), 1)], 7), "calendar"),
    ],
)
def test_stagger_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        sentinel_stagger(*args)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dates(min_value=date(2024, 1, 1), max_value=date(2024, 12, 31)), st.integers(min_value=1, max_value=50)
        ),
        min_size=1,
        max_size=8,
        unique_by=lambda t: t[1],
    ),
    st.integers(min_value=1, max_value=30),
)
def test_stagger_holds_every_subject_but_the_sentinel(firsts, days):
    """Whatever the dates: exactly the sentinel is free of the stagger, and every other
    subject is held back exactly when before the sentinel's + N days."""
    sentinel = min(firsts)
    for own in firsts:
        others = [f for f in firsts if f is not own]
        result = sentinel_stagger(own[0], own[1], others, days)
        if own == sentinel:
            assert result is None
        else:
            held = own[0] < sentinel[0] + timedelta(days=days)
            assert (result is not None) == held
            if held:
                assert result.until == sentinel[0] + timedelta(days=days)
