"""Rules that had two or three copies (issue 12), now one definition each: the study day
(listings and SDTM), the reporting-clock states (AE pages, worklists and listings), the
SAE report hours (the study definition) and the AE's derived values (service and bench)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

import pytest

from cellstudy import settings
from cellstudy.adverse_events import rules, service
from cellstudy.safety import listings
from cellstudy.adverse_events.models import AdverseEvent
from cellstudy.exports import sdtm
from cellstudy.study import STUDY, SafetyReporting

FIRST = date(2026, 3, 10)  # the first NK-cell infusion given


# --- study day (PROTOCOL 8; SDTM --DY) -----------------------------------------------------------


@pytest.mark.parametrize(
    "day, expected",
    [
        (FIRST, 1),  # the day of the first infusion is day 1
        (FIRST + timedelta(days=1), 2),
        (FIRST - timedelta(days=1), -1),  # the day before is -1: there is no day 0
        (FIRST - timedelta(days=2), -2),
        (date(2027, 3, 10), 366),  # a year later, over no leap day: 365 days after, day 366
        (date(2028, 3, 10), 732),  # over 29 February 2028
    ],
)
def test_study_day_has_no_day_zero(day, expected):
    assert rules.study_day(day, FIRST) == expected
    assert rules.study_day(day, FIRST) != 0


def test_study_day_is_empty_without_either_date():
    assert rules.study_day(None, FIRST) is None
    assert rules.study_day(FIRST, None) is None


def test_study_day_of_a_datetime_is_that_of_its_date():
    assert rules.study_day(datetime(2026, 3, 9, 23, 59), FIRST) == -1


def test_study_day_refuses_text():
    with pytest.raises(ValueError):
        rules.study_day("2026-03-10", FIRST)


def test_sdtm_and_the_listings_use_the_one_study_day():
    record = sdtm.ae_record(
        {
            "usubjid": "S-1",
            "term": "Fever",
            "onset_date": FIRST - timedelta(days=1),
            "end_date": FIRST,
            "rfstdtc": FIRST,
        },
        studyid="S",
        seq=1,
    )
    assert (record["AESTDY"], record["AEENDY"]) == (-1, 1)
    assert sdtm.study_day is rules.study_day and listings.study_day is rules.study_day


# --- reporting-clock states ------------------------------------------------------------------------

DUE = datetime(2026, 3, 11, 10, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    "reported, now, state, label",
    [
        (None, DUE - SECOND, "due", "due"),
        (None, DUE, "due", "due"),  # the due instant itself is still due
        (None, DUE + SECOND, "overdue", "overdue"),
        (DUE, DUE + timedelta(days=3), "reported", "on time"),  # reported at the due instant: on time
        (DUE + SECOND, DUE + timedelta(days=3), "reported_late", "late"),
    ],
)
def test_one_clock_state_rule_for_pages_and_listings(reported, now, state, label):
    assert rules.clock_state(DUE, reported, now) == state
    assert listings.report_state(DUE, reported, now) == label
    aware = DUE - timedelta(hours=24)
    assert rules.sae_clock(aware, reported, now, 24)["state"] == state


def test_a_clock_not_started_has_no_listing_state():
    assert listings.report_state(None, None, DUE) is None


def test_every_clock_state_has_a_listing_label():
    assert set(listings.REPORT_STATE_LABELS) == set(rules.CLOCK_STATES)


# --- the SAE report hours are the study definition's ------------------------------------------------

AWARE = datetime(2026, 3, 4, 8, 30, tzinfo=timezone.utc)
LONGER = dataclasses.replace(STUDY, safety_reporting=SafetyReporting(sae_report_hours=48))


def test_the_original_protocol_reports_an_sae_within_24_hours():
    assert STUDY.safety_reporting.sae_report_hours == 24
    assert rules.sae_clock(AWARE, None, AWARE)["due_at"] == AWARE + timedelta(hours=24)


def test_sae_report_hours_are_not_an_amendable_setting():
    # PROTOCOL 6 does not call them a study setting (it does the DLT window)
    keys = {key for key, _value, _kind in settings.editable_settings()}
    assert "regimen.dlt_window_days" in keys
    assert not any("sae_report" in key for key in keys)


@pytest.mark.parametrize("hours", [0, -1, True, 24.0])
def test_sae_report_hours_must_be_a_positive_whole_number(hours):
    with pytest.raises(ValueError):
        SafetyReporting(sae_report_hours=hours)


def _sae(**values) -> AdverseEvent:
    return AdverseEvent(
        status="complete",
        serious=True,
        awareness_at=AWARE,
        sae_reported_at=None,
        susar=False,
        susar_due_at=None,
        **values,
    )


def test_the_sae_clock_reads_the_hours_of_the_study_given():
    now = AWARE + timedelta(hours=30)
    assert service.clocks(_sae(), now, STUDY)["sae"]["state"] == "overdue"
    clock = service.clocks(_sae(), now, LONGER)["sae"]
    assert clock["due_at"] == AWARE + timedelta(hours=48) and clock["state"] == "due"
    assert clock["remaining_seconds"] == 18 * 3600


def test_the_sae_clock_reads_the_definition_in_force_by_default():
    # outside a request the definition in force is the original protocol's
    assert service.clocks(_sae(), AWARE)["sae"]["due_at"] == AWARE + timedelta(hours=24)


SERIOUS = {
    "term": "Febrile neutropenia",
    "serious": True,
    "awareness_date": date(2026, 3, 4),
    "awareness_time": "16:30",
    "related_nk": "possible",
    "related_ld": "unrelated",
    "expectedness": "expected",
    "outcome": "recovered",
    "onset_date": date(2026, 3, 3),
}


def test_the_saved_sae_deadline_is_awareness_plus_the_study_hours():
    for study, hours in ((STUDY, 24), (LONGER, 48)):
        derived = service.derived_values(
            SERIOUS,
            first_lymphodepletion=date(2026, 2, 20),
            zone="Asia/Shanghai",
            sae_report_hours=study.safety_reporting.sae_report_hours,
        )
        aware = datetime(2026, 3, 4, 8, 30, tzinfo=timezone.utc)  # 16:30 in Shanghai
        assert derived["awareness_at"] == aware
        assert derived["sae_due_at"] == aware + timedelta(hours=hours)


def test_ae_changes_hold_the_columns_the_derived_values_and_the_answers():
    changes = service.ae_changes(SERIOUS, first_lymphodepletion=date(2026, 2, 20), zone="UTC", sae_report_hours=24)
    assert changes["term"] == "Febrile neutropenia" and changes["treatment_emergent"] is True
    assert changes["related"] is True and changes["susar"] is False and changes["susar_due_at"] is None
    assert changes["awareness_date"] == "2026-03-04"  # an answer kept in `data`, as text
    assert changes["sae_due_at"] == datetime(2026, 3, 5, 16, 30, tzinfo=timezone.utc)


def test_the_pages_state_the_reporting_timelines_of_the_study(app):
    """The SAE worklist says the study's hours and days (a new definition changes them),
    and no page template writes the timelines as literals."""
    from pathlib import Path

    from flask import render_template

    import cellstudy

    other = dataclasses.replace(
        STUDY, safety_reporting=SafetyReporting(sae_report_hours=48, susar_fatal_days=5, susar_days=10)
    )
    with app.test_request_context("/saes"):
        page = render_template("adverse_events/saes.html", rows=[], study=other)
    assert "due 48 hours after site awareness" in page and "5 days (fatal or life-threatening) or 10 days" in page
    templates = Path(cellstudy.__file__).parent / "templates"
    literal = [
        str(p.relative_to(templates))
        for p in templates.rglob("*.html")
        if "24 hours after" in p.read_text() or "15 days (ICH" in p.read_text()
    ]
    assert not literal, literal
