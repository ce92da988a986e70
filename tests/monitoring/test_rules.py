"""Pure monitoring rules (issue 6): query life cycle, SDV status, signature need, edit
checks -- every boundary."""

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from cellstudy.monitoring import rules
from cellstudy.study import STUDY

LIMITS = STUDY.edit_checks
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

# --- the query life cycle ----------------------------------------------------------------------

EXPECTED = {
    ("open", "answer"): "answered",
    ("open", "close"): "closed",
    ("open", "reopen"): None,
    ("open", "cancel"): "cancelled",
    ("answered", "answer"): "answered",
    ("answered", "close"): "closed",
    ("answered", "reopen"): "open",
    ("answered", "cancel"): "cancelled",
    ("closed", "answer"): None,
    ("closed", "close"): None,
    ("closed", "reopen"): "open",
    ("closed", "cancel"): None,
    ("cancelled", "answer"): None,
    ("cancelled", "close"): None,
    ("cancelled", "reopen"): None,
    ("cancelled", "cancel"): None,
}


@pytest.mark.parametrize(("state", "action"), sorted(EXPECTED))
def test_every_state_and_action(state, action):
    expected = EXPECTED[(state, action)]
    if expected is None:
        with pytest.raises(ValueError, match=f"A query that is {state} cannot be"):
            rules.next_state(state, action)
        assert action not in rules.allowed_actions(state)
    else:
        assert rules.next_state(state, action) == expected
        assert action in rules.allowed_actions(state)


def test_unknown_states_and_actions_are_named():
    with pytest.raises(ValueError, match="state: unknown query state 'lost'"):
        rules.next_state("lost", "close")
    with pytest.raises(ValueError, match="action: unknown query action 'delete'"):
        rules.next_state("open", "delete")


@pytest.mark.parametrize(
    ("delta", "days"),
    [
        (timedelta(0), 0),
        (timedelta(hours=23, minutes=59), 0),
        (timedelta(days=1), 1),
        (timedelta(days=1, seconds=-1), 0),
        (timedelta(days=30, hours=5), 30),
        (timedelta(days=-1), 0),
    ],
)
def test_days_open(delta, days):
    assert rules.days_open(T0, T0 + delta) == days


def test_days_open_stops_at_closing():
    assert rules.days_open(T0, T0 + timedelta(days=40), closed_at=T0 + timedelta(days=3)) == 3


# --- SDV ---------------------------------------------------------------------------------------

ALL = ("a", "b", "c")


@pytest.mark.parametrize(
    ("plan", "verified", "status"),
    [
        ("all", (), "not verified"),
        ("all", ("a",), "partly verified"),
        ("all", ("a", "b"), "partly verified"),
        ("all", ALL, "verified"),
        ("all", (*ALL, "extra"), "verified"),
        ("none", (), "not required"),
        ("none", ALL, "not required"),
    ],
)
def test_sdv_status_under_the_full_plan(plan, verified, status):
    required = rules.required_fields(plan, (), ALL)
    assert rules.sdv_status(plan, required, verified) == status


@pytest.mark.parametrize(
    ("verified", "status"),
    [((), "not verified"), (("c",), "partly verified"), (("a",), "partly verified"), (("a", "b"), "verified")],
)
def test_sdv_status_under_the_key_fields_plan(verified, status):
    required = rules.required_fields("key", ("a", "b"), ALL)
    assert required == ("a", "b")
    assert rules.sdv_status("key", required, verified) == status


def test_a_key_plan_without_key_fields_requires_nothing_and_unknown_plans_are_refused():
    assert rules.sdv_status("key", (), ("a",)) == "not required"
    with pytest.raises(ValueError, match="plan: unknown SDV plan 'half'"):
        rules.required_fields("half", (), ALL)


# --- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "complete", "valid", "invalidated", "needed"),
    [
        ("adverse_event", True, 0, 0, True),
        ("adverse_event", False, 0, 0, False),
        ("adverse_event", True, 1, 0, False),
        ("adverse_event", True, 1, 2, False),
        ("visit", True, 0, 0, False),
        ("visit", True, 0, 1, True),
        ("visit", False, 0, 1, True),
    ],
)
def test_signature_needed(form, complete, valid, invalidated, needed):
    assert (
        rules.signature_needed(
            form, complete=complete, valid=valid, invalidated=invalidated, signature_forms=("adverse_event",)
        )
        is needed
    )


# --- edit checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "flagged"),
    [
        ("30", False),
        ("29.99", True),
        ("2", True),
        ("200", False),
        ("200.01", True),
        ("62.5", False),
        (None, False),
        ("", False),
        ("heavy", False),
    ],
)
@pytest.mark.parametrize("form", rules.WEIGHT_FORMS)
def test_weight_limits(form, weight, flagged):
    found = rules.edit_checks(form, {"weight_kg": weight}, LIMITS)
    assert (("weight_kg", "weight_range") in found) is flagged
    if flagged:
        assert f"Weight {Decimal(weight)} kg is" in found[("weight_kg", "weight_range")]


def test_weight_is_not_checked_on_other_forms():
    assert rules.edit_checks("visit", {"weight_kg": "5"}, LIMITS) == {}


@pytest.mark.parametrize(
    ("alt", "uln", "flagged"),
    [
        ("800", "40", False),
        ("800.01", "40", True),
        ("1000", "40", True),
        ("1000", "0", False),
        ("1000", None, False),
        (None, "40", False),
    ],
)
def test_alt_above_20_times_uln_on_screening(alt, uln, flagged):
    found = rules.edit_checks("screening", {"alt": alt, "alt_uln": uln}, LIMITS)
    assert (("alt", "alt_uln") in found) is flagged


@pytest.mark.parametrize(("alt", "flagged"), [("800", False), ("801", True)])
def test_alt_on_a_visit_uses_the_normal_range(alt, flagged):
    found = rules.edit_checks("visit", {"alt": alt}, LIMITS, {"alt_uln": Decimal("40")})
    assert (("alt", "alt_uln") in found) is flagged


@pytest.mark.parametrize(("qtc", "flagged"), [("600", False), ("600.1", True), ("480", False)])
def test_qtc(qtc, flagged):
    assert (("qtc_ms", "qtc_max") in rules.edit_checks("screening", {"qtc_ms": qtc}, LIMITS)) is flagged


WINDOW = {"earliest": date(2026, 1, 10), "latest": date(2026, 1, 12)}


@pytest.mark.parametrize(
    ("day", "flagged"),
    [
        ("2026-01-09", True),
        ("2026-01-10", False),
        ("2026-01-11", False),
        ("2026-01-12", False),
        ("2026-01-13", True),
        ("not a date", False),
    ],
)
def test_visit_window(day, flagged):
    found = rules.edit_checks("visit", {"visit_date": day}, LIMITS, WINDOW)
    assert (("visit_date", "visit_window") in found) is flagged
    if flagged:
        assert "outside the visit window 2026-01-10 to 2026-01-12" in found[("visit_date", "visit_window")]


def test_the_window_check_can_be_switched_off_and_limits_are_settings():
    off = replace(LIMITS, visit_window_check=0)
    assert rules.edit_checks("visit", {"visit_date": "2026-02-01"}, off, WINDOW) == {}
    strict = replace(LIMITS, qtc_max_ms=Decimal("500"))
    assert ("qtc_ms", "qtc_max") in rules.edit_checks("screening", {"qtc_ms": "501"}, strict)
