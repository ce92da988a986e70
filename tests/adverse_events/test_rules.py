"""PROTOCOL 6: the AE form rules, relatedness, treatment-emergent, the DLT window, the
SAE/SUSAR clocks and lab-based suggestions (cellstudy.adverse_events.rules).

Pure: no app, no database. Every rule is checked at its boundary."""

from __future__ import annotations

import csv
import itertools
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cellstudy.adverse_events import ctcae, rules
from cellstudy.adverse_events.fields import AE_REQUIRED, CRITERIA_CODES
from cellstudy.infusions.fields import VISIT_FIELDS

DATA = Path(ctcae.__file__).resolve().parent.parent / "data"

TODAY = date(2026, 3, 10)
CONSENT = date(2026, 2, 1)
WINDOW = (date(2026, 2, 20), date(2026, 3, 19))
ONSET = date(2026, 3, 2)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def ctx(**changes):
    return {"today": TODAY, "consent_date": CONSENT, "dlt_window": WINDOW, "computed_grade": None, **changes}


def ae(**changes):
    """A complete, valid, non-serious AE, changed."""
    return {
        "term": "Nausea",
        "verbatim": None,
        "onset_date": ONSET,
        "ongoing": False,
        "end_date": date(2026, 3, 4),
        "grade": 2,
        "grade_reason": None,
        "serious": False,
        "awareness_date": None,
        "awareness_time": None,
        "related_nk": "possible",
        "related_ld": "unrelated",
        "expectedness": "expected",
        "action": "none",
        "outcome": "recovered",
        "death_date": None,
        "dlt": False,
        "comments": None,
        **changes,
    }


def sae(**changes):
    """A complete, valid SAE (hospitalisation), changed."""
    return ae(
        **{"serious": True, "sae_hospitalisation": True, "awareness_date": ONSET, "awareness_time": "09:15", **changes}
    )


def fatal(**changes):
    """A complete, valid fatal SAE (grade 5), changed."""
    return sae(
        **{
            "term": "Cytokine release syndrome",
            "grade": 5,
            "outcome": "fatal",
            "sae_death": True,
            "death_date": date(2026, 3, 4),
            **changes,
        }
    )


def check(values, *, complete=True, **context):
    return rules.validate(values, ctx(**context), complete=complete)


# --- valid forms -------------------------------------------------------------------------


@pytest.mark.parametrize("make", [ae, sae, fatal], ids=["ae", "sae", "fatal"])
@pytest.mark.parametrize("complete", [True, False])
def test_valid_forms_have_no_errors(make, complete):
    assert check(make(), complete=complete) == {}


def test_empty_draft_is_valid_and_empty_complete_needs_every_required_field():
    assert check({}, complete=False) == {}
    errors = check({}, complete=True)
    assert errors == {
        **{name: rules.REQUIRED for name in AE_REQUIRED},
        "end_date": "Give the end date or tick Ongoing.",
    }


@pytest.mark.parametrize("name", AE_REQUIRED)
def test_each_required_field_only_on_complete(name):
    values = ae(**{name: None})
    assert check(values, complete=False) == {}
    assert check(values, complete=True) == {name: "Required to complete the form."}


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_text_answer_is_no_answer(blank):
    assert check(ae(term=blank), complete=False) == {}
    assert check(ae(term=blank), complete=True) == {"term": rules.REQUIRED}


def test_end_date_or_ongoing_only_on_complete():
    values = ae(end_date=None, ongoing=None, outcome="recovering")
    assert check(values, complete=False) == {}
    assert check(values, complete=True) == {"end_date": "Give the end date or tick Ongoing."}
    assert check(ae(end_date=None, ongoing=True, outcome="recovering")) == {}


def test_a_specific_message_is_not_replaced_by_required():
    errors = check(ae(term="Cytokine release syndrome", grade=5, outcome=None, death_date=TODAY), complete=True)
    assert errors["outcome"] == "A grade 5 AE is a death: the outcome must be Fatal."


# --- term and grade ----------------------------------------------------------------------


@pytest.mark.parametrize("term", ["Baldness", "CRS", "Nausea and vomiting"])
def test_term_must_be_a_ctcae_term(term):
    assert check(ae(term=term), complete=False) == {"term": "Choose a term from CTCAE v5.0."}


@pytest.mark.parametrize("term", ["nausea", "  NAUSEA  "])
def test_term_matched_case_insensitively(term):
    assert check(ae(term=term)) == {}


def test_other_specify_term_needs_the_verbatim_term():
    other = "Nervous system disorders - Other, specify"
    errors = check(ae(term=other), complete=False)
    assert set(errors) == {"verbatim"} and "verbatim" in errors["verbatim"]
    assert check(ae(term=other, verbatim="  "), complete=False).keys() == {"verbatim"}
    assert check(ae(term=other, verbatim="ICANS")) == {}


@pytest.mark.parametrize("grade", [1, 2, 3, 4, 5])
def test_grade_allowed_only_where_the_dictionary_defines_it(grade):
    errors = check(ae(term="Alopecia", grade=grade), complete=False)
    if grade in (1, 2):
        assert errors == {}
    else:
        assert errors["grade"].startswith(f"Alopecia has no grade {grade} in CTCAE v5.0")
        assert "allowed: 1, 2" in errors["grade"]


def test_grade_without_a_known_term_is_not_checked_against_the_dictionary():
    assert check(ae(term="Baldness", grade=5), complete=False).keys() == {"term", "outcome", "death_date"}
    assert check(ae(term=None, grade=3), complete=False) == {}


def test_grade_may_be_the_forms_choice_value():
    assert check(ae(grade="2")) == {}


# --- grade 5, fatal outcome, date of death ---------------------------------------------------


def test_grade_5_needs_outcome_fatal_and_the_date_of_death():
    errors = check(ae(term="Cytokine release syndrome", grade=5), complete=False)
    assert errors.keys() == {"outcome", "death_date"}
    assert "Fatal" in errors["outcome"]


def test_fatal_outcome_needs_grade_5():
    errors = check(fatal(grade=4), complete=False)
    assert errors == {"grade": "An AE with the outcome Fatal is grade 5 (death related to the AE)."}
    assert check(fatal(grade=None), complete=False).keys() == {"grade"}


def test_fatal_with_a_term_that_has_no_grade_5_explains_both():
    errors = check(fatal(term="Alopecia"), complete=False)
    assert "Alopecia has no grade 5" in errors["grade"]


def test_fatal_needs_the_date_of_death():
    assert check(fatal(death_date=None)) == {"death_date": "Give the date of death."}


@pytest.mark.parametrize(
    "death, ok",
    [(ONSET - DAY, False), (ONSET, True), (TODAY, True), (TODAY + DAY, False)],
    ids=["onset-1", "onset", "today", "today+1"],
)
def test_date_of_death_between_onset_and_today(death, ok):
    errors = check(fatal(death_date=death, end_date=None), complete=False)
    assert (errors == {}) is ok
    if not ok:
        assert errors.keys() == {"death_date"}


def test_date_of_death_without_fatal_outcome_is_refused():
    errors = check(ae(death_date=date(2026, 3, 4)), complete=False)
    assert errors == {"death_date": "A date of death is given but the outcome is not Fatal."}


def test_end_date_after_death_is_refused():
    errors = check(fatal(end_date=date(2026, 3, 5)))
    assert errors.keys() == {"end_date"} and "(2026-03-04)" in errors["end_date"]


# --- onset and end ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "onset, consent, ok, words",
    [
        (TODAY, CONSENT, True, None),
        (TODAY + DAY, CONSENT, False, "cannot be in the future"),
        (CONSENT, CONSENT, True, None),
        (CONSENT - DAY, CONSENT, False, "before informed consent (2026-02-01)"),
        (CONSENT - DAY, None, True, None),  # consent date unknown: not checked
    ],
    ids=["today", "today+1", "consent", "consent-1", "no-consent-date"],
)
def test_onset_not_in_future_not_before_consent(onset, consent, ok, words):
    errors = check(ae(onset_date=onset, end_date=None, ongoing=True, outcome="not_recovered"), consent_date=consent)
    assert (errors == {}) is ok
    if not ok:
        assert errors.keys() == {"onset_date"} and words in errors["onset_date"]


@pytest.mark.parametrize(
    "end, ok",
    [(ONSET - DAY, False), (ONSET, True), (TODAY, True), (TODAY + DAY, False)],
    ids=["onset-1", "onset", "today", "today+1"],
)
def test_end_date_between_onset_and_today(end, ok):
    errors = check(ae(end_date=end))
    assert (errors == {}) is ok
    if not ok:
        assert errors.keys() == {"end_date"}


def test_end_before_onset_names_the_onset():
    assert check(ae(end_date=ONSET - DAY)) == {"end_date": "The end date is before the onset date (2026-03-02)."}


def test_ongoing_with_an_end_date_is_refused():
    errors = check(ae(ongoing=True, outcome="recovering"), complete=False)
    assert errors.keys() == {"end_date"} and "ongoing" in errors["end_date"].lower()


@pytest.mark.parametrize(
    "outcome, ok",
    [
        ("recovered", False),
        ("recovered_with_sequelae", False),
        ("fatal", False),
        ("recovering", True),
        ("not_recovered", True),
        ("unknown", True),
    ],
)
def test_an_ended_outcome_cannot_be_ongoing(outcome, ok):
    errors = check(ae(ongoing=True, end_date=None, outcome=outcome), complete=False)
    assert ("ongoing" not in errors) is ok


# --- seriousness ----------------------------------------------------------------------------


def test_serious_needs_a_criterion():
    values = sae(sae_hospitalisation=None)
    assert check(values, complete=False) == {"serious": "Tick at least one seriousness criterion for a serious AE."}


@pytest.mark.parametrize("criterion", CRITERIA_CODES)
def test_each_criterion_makes_the_ae_serious(criterion):
    extra = (
        {"outcome": "fatal", "grade": 5, "term": "Cytokine release syndrome", "death_date": date(2026, 3, 4)}
        if criterion == "sae_death"
        else {}
    )
    assert check(sae(**{"sae_hospitalisation": None, criterion: True, **extra}), complete=False) == {}
    errors = check(ae(**{criterion: True, **extra}), complete=False)
    assert "serious" in errors and "Tick Serious" in errors["serious"]


def test_serious_not_answered_with_a_criterion_is_left_to_complete():
    assert check(ae(serious=None, sae_hospitalisation=True), complete=False) == {}


@pytest.mark.parametrize("field", ["awareness_date", "awareness_time"])
def test_serious_needs_awareness_date_and_time_even_in_a_draft(field):
    assert check(sae(**{field: None}), complete=False).keys() == {field}


def test_awareness_not_needed_for_a_non_serious_ae():
    assert check(ae(awareness_date=None, awareness_time=None)) == {}


@pytest.mark.parametrize("time", ["9:15", "24:00", "12:60", "0915", "09:15:00", "noon"])
def test_awareness_time_must_be_hhmm(time):
    assert check(sae(awareness_time=time)) == {"awareness_time": "Enter the time as HH:MM (24-hour clock)."}


@pytest.mark.parametrize("time", ["00:00", "23:59", " 09:15 "])
def test_awareness_time_accepted(time):
    assert check(sae(awareness_time=time)) == {}


@pytest.mark.parametrize(
    "aware, ok",
    [(ONSET - DAY, False), (ONSET, True), (TODAY, True), (TODAY + DAY, False)],
    ids=["onset-1", "onset", "today", "today+1"],
)
def test_awareness_date_between_onset_and_today(aware, ok):
    errors = check(sae(awareness_date=aware))
    assert (errors == {}) is ok
    if not ok:
        assert errors.keys() == {"awareness_date"}


def test_results_in_death_needs_outcome_fatal():
    errors = check(sae(sae_death=True, outcome="recovered"), complete=False)
    assert errors == {"outcome": "'Results in death' is ticked: the outcome must be Fatal."}


def test_fatal_sae_needs_results_in_death():
    assert check(fatal(sae_death=None)) == {"sae_death": "A fatal SAE must have 'Results in death' ticked."}


def test_fatal_ae_is_serious():
    errors = check(fatal(serious=False, sae_death=None, sae_hospitalisation=None), complete=False)
    assert errors.keys() == {"serious"}


# --- DLT ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "onset, ok",
    [(WINDOW[0] - DAY, False), (WINDOW[0], True), (WINDOW[1], True), (WINDOW[1] + DAY, False)],
    ids=["day-before", "first-day", "last-day", "day-after"],
)
def test_dlt_only_with_onset_inside_the_window(onset, ok):
    values = ae(onset_date=onset, end_date=None, ongoing=True, outcome="not_recovered", dlt=True)
    errors = check(values, today=WINDOW[1] + DAY, consent_date=None)
    assert (errors == {}) is ok
    if not ok:
        assert errors == {"dlt": "Only an AE with onset inside the DLT window (2026-02-20 to 2026-03-19) can be a DLT."}


def test_dlt_without_an_infusion_is_refused():
    errors = check(ae(dlt=True), dlt_window=None)
    assert errors.keys() == {"dlt"} and "no infusion" in errors["dlt"]


def test_dlt_without_onset_is_refused():
    assert check(ae(dlt=True, onset_date=None), complete=False).keys() == {"dlt"}


@pytest.mark.parametrize("dlt", [False, None])
def test_no_dlt_needs_no_window(dlt):
    assert check(ae(dlt=dlt), dlt_window=None) == {}


# --- computed CRS/ICANS grade ----------------------------------------------------------------


@pytest.mark.parametrize(
    "grade, computed, reason, ok",
    [
        (2, 2, None, True),
        (3, 2, None, False),
        (3, 2, "  ", False),
        (3, 2, "tocilizumab given", True),
        (1, 0, None, False),
        (2, None, None, True),
        (None, 2, None, True),
    ],
)
def test_grade_other_than_computed_needs_a_reason(grade, computed, reason, ok):
    values = ae(term="Cytokine release syndrome", grade=grade, grade_reason=reason)
    errors = check(values, complete=False, computed_grade=computed)
    assert (errors == {}) is ok
    if not ok:
        assert errors.keys() == {"grade_reason"} and f"({computed})" in errors["grade_reason"]


# --- bad input (programming errors) ------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("onset_date", "2026-03-02"),
        ("onset_date", datetime(2026, 3, 2)),
        ("grade", 6),
        ("grade", 0),
        ("grade", True),
        ("grade", 2.0),
        ("grade", "6"),
        ("serious", "yes"),
        ("ongoing", 1),
        ("related_nk", "maybe"),
        ("outcome", "dead"),
        ("term", 5),
    ],
)
def test_wrong_type_or_unknown_code_is_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        check(ae(**{field: value}))


@pytest.mark.parametrize(
    "context",
    [
        {"today": None},
        {"today": "2026-03-10"},
        {"consent_date": datetime(2026, 2, 1)},
        {"dlt_window": (WINDOW[1], WINDOW[0])},
        {"dlt_window": WINDOW[0]},
        {"computed_grade": "2"},
    ],
)
def test_bad_context_is_value_error(context):
    with pytest.raises(ValueError, match="ctx"):
        check(ae(), **context)


# --- relatedness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, expected",
    [
        (None, None),
        ("", None),
        ("unrelated", False),
        ("unlikely", False),
        ("possible", True),
        ("probable", True),
        ("definite", True),
    ],
)
def test_is_related(code, expected):
    assert rules.is_related(code) is expected


def test_is_related_unknown_code():
    with pytest.raises(ValueError):
        rules.is_related("likely")


NOT_RELATED = ("unrelated", "unlikely")
RELATED = ("possible", "probable", "definite")


@pytest.mark.parametrize(
    "nk, ld, expected",
    [
        ("possible", None, True),
        (None, "definite", True),
        ("unrelated", "probable", True),
        ("definite", "definite", True),
        ("unlikely", None, None),
        (None, "unrelated", None),
        (None, None, None),
        ("unrelated", "unlikely", False),
        ("unlikely", "unlikely", False),
    ],
)
def test_related_table(nk, ld, expected):
    assert rules.related(nk, ld) is expected


@pytest.mark.parametrize("nk, ld", itertools.product((None, *NOT_RELATED, *RELATED), repeat=2))
def test_related_every_pair(nk, ld):
    if nk in RELATED or ld in RELATED:
        expected = True
    elif nk is None or ld is None:
        expected = None
    else:
        expected = False
    assert rules.related(nk, ld) is expected


# --- treatment-emergent and DLT window --------------------------------------------------------


@pytest.mark.parametrize(
    "onset, first, expected",
    [
        (date(2026, 3, 1), date(2026, 3, 1), True),
        (date(2026, 2, 28), date(2026, 3, 1), False),
        (date(2026, 3, 2), date(2026, 3, 1), True),
        (None, date(2026, 3, 1), False),
        (date(2026, 3, 1), None, False),
    ],
)
def test_treatment_emergent_from_the_first_lymphodepletion_day(onset, first, expected):
    assert rules.treatment_emergent(onset, first) is expected


@pytest.mark.parametrize(
    "onset, window, expected",
    [
        (WINDOW[0], WINDOW, True),
        (WINDOW[1], WINDOW, True),
        (WINDOW[0] - DAY, WINDOW, False),
        (WINDOW[1] + DAY, WINDOW, False),
        (None, WINDOW, False),
        (WINDOW[0], None, False),
    ],
)
def test_in_dlt_window(onset, window, expected):
    assert rules.in_dlt_window(onset, window) is expected


# --- awareness time -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day, hhmm, zone, utc",
    [
        (date(2026, 3, 5), "00:30", "Asia/Shanghai", datetime(2026, 3, 4, 16, 30, tzinfo=timezone.utc)),
        (date(2026, 1, 1), "07:59", "Asia/Shanghai", datetime(2025, 12, 31, 23, 59, tzinfo=timezone.utc)),
        (date(2026, 3, 5), "08:00", "Asia/Shanghai", datetime(2026, 3, 5, 0, 0, tzinfo=timezone.utc)),
        (date(2026, 3, 5), "23:59", "UTC", datetime(2026, 3, 5, 23, 59, tzinfo=timezone.utc)),
        (date(2026, 7, 1), "12:00", "Europe/London", datetime(2026, 7, 1, 11, 0, tzinfo=timezone.utc)),
    ],
)
def test_awareness_utc(day, hhmm, zone, utc):
    got = rules.awareness_utc(day, hhmm, zone)
    assert got == utc and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "day, hhmm, zone",
    [
        (date(2026, 3, 5), "24:00", "UTC"),
        (date(2026, 3, 5), "9:30", "UTC"),
        (date(2026, 3, 5), None, "UTC"),
        (date(2026, 3, 5), "09:30", "Mars/Olympus"),
        (date(2026, 3, 5), "09:30", ""),
        ("2026-03-05", "09:30", "UTC"),
    ],
)
def test_awareness_utc_bad_input(day, hhmm, zone):
    with pytest.raises(ValueError):
        rules.awareness_utc(day, hhmm, zone)


# --- SAE and SUSAR clocks --------------------------------------------------------------------------

AWARE = datetime(2026, 3, 4, 16, 30, tzinfo=timezone.utc)
DUE = AWARE + timedelta(hours=24)


@pytest.mark.parametrize(
    "now, state, remaining",
    [
        (AWARE, "due", 24 * 3600),
        (DUE - SECOND, "due", 1),
        (DUE, "due", 0),
        (DUE + timedelta(microseconds=500_000), "overdue", -1),
        (DUE + SECOND, "overdue", -1),
        (DUE + timedelta(days=2), "overdue", -2 * 86400),
    ],
    ids=["aware", "due-1s", "exactly-24h", "due+0.5s", "due+1s", "due+2d"],
)
def test_sae_clock_not_reported(now, state, remaining):
    assert rules.sae_clock(AWARE, None, now) == {"due_at": DUE, "state": state, "remaining_seconds": remaining}


@pytest.mark.parametrize(
    "reported, state",
    [(AWARE, "reported"), (DUE, "reported"), (DUE + SECOND, "reported_late")],
    ids=["at-awareness", "exactly-at-due", "1s-late"],
)
def test_sae_clock_reported(reported, state):
    clock = rules.sae_clock(AWARE, reported, DUE + timedelta(days=3))
    assert clock == {"due_at": DUE, "state": state, "remaining_seconds": 0}


def test_sae_clock_is_utc_whatever_zone_it_is_given():
    shanghai = ZoneInfo("Asia/Shanghai")
    clock = rules.sae_clock(AWARE.astimezone(shanghai), None, DUE.astimezone(shanghai) + SECOND)
    assert clock["due_at"] == DUE and clock["due_at"].utcoffset() == timedelta(0)
    assert clock["state"] == "overdue"


def test_sae_clock_other_hours():
    assert rules.sae_clock(AWARE, None, AWARE, hours=48)["due_at"] == AWARE + timedelta(hours=48)


@pytest.mark.parametrize(
    "aware, reported, now, hours",
    [
        (AWARE.replace(tzinfo=None), None, AWARE, 24),
        (AWARE, DUE.replace(tzinfo=None), AWARE, 24),
        (AWARE, None, AWARE.replace(tzinfo=None), 24),
        (AWARE, None, AWARE, 0),
        (AWARE, None, AWARE, True),
        ("2026-03-04T16:30Z", None, AWARE, 24),
    ],
)
def test_sae_clock_bad_input(aware, reported, now, hours):
    with pytest.raises(ValueError):
        rules.sae_clock(aware, reported, now, hours)


@pytest.mark.parametrize(
    "serious, expectedness, nk, ld, expected",
    [
        (True, "unexpected", "possible", "unrelated", True),
        (True, "unexpected", "unrelated", "definite", True),
        (True, "unexpected", "possible", None, True),
        (True, "unexpected", "unlikely", None, False),  # relatedness not fully assessed
        (True, "unexpected", "unrelated", "unlikely", False),
        (True, "expected", "definite", "definite", False),
        (True, None, "definite", "definite", False),
        (False, "unexpected", "definite", "definite", False),
        (None, "unexpected", "definite", "definite", False),
    ],
)
def test_is_susar(serious, expectedness, nk, ld, expected):
    assert rules.is_susar(serious, expectedness, nk, ld) is expected


@pytest.mark.parametrize(
    "criteria, outcome, days",
    [
        ({"sae_death": True}, "fatal", 7),
        ({"sae_death": True}, None, 7),
        ({"sae_life_threatening": True}, "recovered", 7),
        ({"sae_hospitalisation": True}, "fatal", 7),  # outcome fatal alone
        ({"sae_hospitalisation": True}, "recovered", 15),
        ({"sae_hospitalisation": True, "sae_death": False, "sae_life_threatening": None}, None, 15),
        ({"sae_disability": True}, "recovered_with_sequelae", 15),
        ({}, None, 15),
    ],
    ids=[
        "death",
        "death-outcome-unknown",
        "life-threatening",
        "outcome-fatal",
        "hospitalisation-only",
        "unticked",
        "disability",
        "none",
    ],
)
def test_susar_days_ich_e2a(criteria, outcome, days):
    assert rules.susar_days(criteria, outcome) == days


def test_susar_days_are_the_study_definitions():
    from cellstudy.study import SafetyReporting

    other = SafetyReporting(susar_fatal_days=5, susar_days=10)
    assert rules.susar_days({"sae_death": True}, None, other) == 5
    assert rules.susar_days({}, "recovered", other) == 10
    for bad in (0, -1, True, 7.0):
        with pytest.raises(ValueError, match="SUSAR report days"):
            SafetyReporting(susar_days=bad)


@pytest.mark.parametrize("days", [7, 15])
def test_susar_clock_calendar_days(days):
    due = AWARE + timedelta(days=days)
    assert rules.susar_clock(AWARE, days, None, due) == {"due_at": due, "state": "due", "remaining_seconds": 0}
    assert rules.susar_clock(AWARE, days, None, due + SECOND)["state"] == "overdue"
    assert rules.susar_clock(AWARE, days, due, due + SECOND)["state"] == "reported"
    assert rules.susar_clock(AWARE, days, due + SECOND, due + SECOND)["state"] == "reported_late"


@pytest.mark.parametrize("days", [0, -7, True, 7.0, None])
def test_susar_clock_bad_days(days):
    with pytest.raises(ValueError):
        rules.susar_clock(AWARE, days, None, AWARE)


# --- lab suggestions ---------------------------------------------------------------------------


def _csv_terms(name):
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return {row["term"] for row in csv.DictReader(f)}


def test_lab_terms_exist_in_both_ctcae_files():
    for term in rules.LAB_TERMS.values():
        assert term in _csv_terms("ctcae_v5.0.csv"), term
        assert term in _csv_terms("ctcae_v5.0_lab_grading.csv"), term


def test_lab_ranges_cover_the_lab_terms_in_the_visit_units_spelled_as_the_grading_file():
    assert rules.LAB_RANGES.keys() == rules.LAB_TERMS.keys()
    visit_units = {spec.name: spec.unit for spec in VISIT_FIELDS}
    for lab, limits in rules.LAB_RANGES.items():
        assert limits["unit"] == visit_units[lab], lab
        grading_unit = ctcae.lab_unit(rules.LAB_TERMS[lab])
        assert grading_unit is None or grading_unit == limits["unit"], lab
        if limits["lln"] is not None and limits["uln"] is not None:
            assert limits["lln"] < limits["uln"], lab


@pytest.mark.parametrize(
    "lab, value, grade",
    [
        ("wbc", Decimal("4.0"), 0),
        ("wbc", Decimal("3.9"), 1),
        ("wbc", Decimal("1.5"), 3),
        ("anc", Decimal("1.8"), 0),
        ("anc", Decimal("0.4"), 4),
        ("hemoglobin", 120, 0),
        ("hemoglobin", 119, 1),
        ("hemoglobin", 95, 2),
        ("hemoglobin", 79, 3),
        ("platelets", 150, 0),
        ("platelets", 40, 3),
        ("platelets", 20, 4),
        ("alt", 40, 0),
        ("alt", 41, 1),
        ("alt", 201, 3),
        ("ast", 121, 2),
        ("total_bilirubin", 21, 0),
        ("total_bilirubin", 32, 2),
        ("creatinine", 105, 1),
        ("creatinine", 625, 4),
    ],
)
def test_lab_ranges_give_every_grade_with_the_absolute_thresholds(lab, value, grade):
    limits = rules.LAB_RANGES[lab]
    got = ctcae.suggest_lab_grade(
        rules.LAB_TERMS[lab], value, uln=limits["uln"], lln=limits["lln"], unit=limits["unit"]
    )
    assert got == grade


def lab(visit_id, day, name, value, **extra):
    limits = rules.LAB_RANGES[name]
    return {
        "visit_id": visit_id,
        "visit_label": f"Visit {visit_id}",
        "date": day,
        "lab": name,
        "value": value,
        "uln": limits["uln"],
        "lln": limits["lln"],
        "unit": limits["unit"],
        **extra,
    }


D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 8), date(2026, 3, 15)


def test_a_normal_value_suggests_nothing():
    assert rules.lab_suggestions([lab(1, D1, "anc", Decimal("1.8")), lab(1, D1, "alt", 40)], set(), set()) == []


def test_a_suggestion():
    got = rules.lab_suggestions([lab(1, D1, "anc", Decimal("0.4"))], set(), set())
    assert got == [
        {
            "visit_id": 1,
            "visit_label": "Visit 1",
            "date": D1,
            "lab": "anc",
            "term": "Neutrophil count decreased",
            "grade": 4,
            "value": Decimal("0.4"),
            "unit": "10^9/L",
        }
    ]


@pytest.mark.parametrize(
    "open_term", ["Neutrophil count decreased", "neutrophil COUNT decreased", " Neutrophil count decreased "]
)
def test_an_open_ae_with_the_term_suppresses_it(open_term):
    labs = [lab(1, D1, "anc", Decimal("0.4")), lab(1, D1, "platelets", 40)]
    assert [s["term"] for s in rules.lab_suggestions(labs, {open_term}, set())] == ["Platelet count decreased"]


def test_dismissed_suppresses_only_that_visit_lab_and_grade():
    labs = [lab(1, D1, "anc", Decimal("0.9")), lab(2, D2, "anc", Decimal("1.2"))]  # grade 3, grade 2
    assert [(s["visit_id"], s["grade"]) for s in rules.lab_suggestions(labs, set(), set())] == [(1, 3)]
    # dismissing visit 1's grade 3 leaves visit 2's grade 2
    assert [(s["visit_id"], s["grade"]) for s in rules.lab_suggestions(labs, set(), {(1, "anc", 3)})] == [(2, 2)]
    # a dismissal of another grade or visit does not count
    assert [(s["visit_id"], s["grade"]) for s in rules.lab_suggestions(labs, set(), {(1, "anc", 2)})] == [(1, 3)]
    assert [(s["visit_id"], s["grade"]) for s in rules.lab_suggestions(labs, set(), {(2, "anc", 3)})] == [(1, 3)]
    # the value worsening at the same visit (grade 4) is a new suggestion
    worse = [lab(1, D1, "anc", Decimal("0.4"))]
    assert [s["grade"] for s in rules.lab_suggestions(worse, set(), {(1, "anc", 3)})] == [4]
    assert rules.lab_suggestions(labs, set(), {(1, "anc", 3), (2, "anc", 2)}) == []


def test_the_highest_grade_of_a_term_is_kept_earliest_on_a_tie():
    labs = [
        lab(1, D1, "platelets", 100),
        lab(2, D2, "platelets", 20),
        lab(3, D3, "platelets", 10),
        lab(4, D3, "platelets", 60),
    ]
    got = rules.lab_suggestions(labs, set(), set())
    assert [(s["visit_id"], s["grade"], s["value"]) for s in got] == [(2, 4, 20)]
    # order of the input does not matter
    assert rules.lab_suggestions(list(reversed(labs)), set(), set()) == got


def test_suggestions_sorted_by_date_then_term():
    labs = [
        lab(3, D3, "alt", 300),
        lab(1, D1, "platelets", 100),
        lab(1, D1, "anc", Decimal("1.0")),
        lab(2, D2, "hemoglobin", 90),
    ]
    got = rules.lab_suggestions(labs, set(), set())
    assert [(s["date"], s["term"]) for s in got] == [
        (D1, "Neutrophil count decreased"),
        (D1, "Platelet count decreased"),
        (D2, "Anemia"),
        (D3, "Alanine aminotransferase increased"),
    ]


def test_stored_text_values_and_default_ranges():
    # the visit CRF keeps exact decimals as text; missing limits take LAB_RANGES
    labs = [{"visit_id": 7, "visit_label": "Day 7", "date": D1, "lab": "anc", "value": "0.45"}]
    got = rules.lab_suggestions(labs, set(), set())
    assert [(s["grade"], s["value"], s["unit"]) for s in got] == [(4, Decimal("0.45"), "10^9/L")]


def test_a_value_that_cannot_be_graded_suggests_nothing():
    # platelets 100 without a LLN may be grade 1 or 0: suggest nothing (ctcae README)
    assert rules.lab_suggestions([lab(1, D1, "platelets", 100, lln=None)], set(), set()) == []
    # a unit other than the grading file's: absolute thresholds unused
    assert rules.lab_suggestions([lab(1, D1, "hemoglobin", 9, lln=12, uln=16, unit="g/dL")], set(), set()) == []


def test_unknown_labs_and_missing_values_are_skipped():
    labs = [lab(1, D1, "anc", None), {**lab(1, D1, "anc", 1), "lab": "marrow_blasts_percent", "value": 40}]
    assert rules.lab_suggestions(labs, set(), set()) == []


@pytest.mark.parametrize("value", ["abc", True, -1, "NaN"])
def test_bad_lab_value_is_value_error(value):
    with pytest.raises(ValueError, match=r"labs\[0\]"):
        rules.lab_suggestions([lab(1, D1, "anc", value)], set(), set())
