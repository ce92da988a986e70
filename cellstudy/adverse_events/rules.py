"""The adverse-event rules of PROTOCOL 6: form checks, relatedness, treatment-emergent,
the DLT window, the SAE and SUSAR reporting clocks and lab-based AE suggestions.

Pure: no Flask, no database. The AE service calls these on plain values.

- ``validate(ae, ctx, *, complete)`` returns ``{field: message}`` for every problem
  the site can correct (empty = valid). Messages are plain English for site staff.
  A value of the wrong Python type or an unknown code (something no form can post)
  is a programming error: ``ValueError`` naming the field, as in
  ``enrollment.eligibility``.
- Dates are compared as dates; datetimes are aware and compared exactly (UTC);
  lab values are compared exactly by ``ctcae.suggest_lab_grade``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..study import STUDY, SafetyReporting
from . import ctcae
from .fields import (
    AE_REQUIRED,
    ATTRIBUTIONS,
    CRITERIA_CODES,
    EXPECTEDNESS,
    ACTIONS,
    OUTCOMES,
    RELATED,
    SERIOUSNESS_CRITERIA,
)

REQUIRED = "Required to complete the form."

#: outcomes that say the AE is over, so it cannot be ongoing
ENDED_OUTCOMES = frozenset({"recovered", "recovered_with_sequelae", "fatal"})

#: the visit lab -> the CTCAE term it grades (every term is in both CTCAE files)
LAB_TERMS: dict[str, str] = {
    "wbc": "White blood cell decreased",
    "anc": "Neutrophil count decreased",
    "hemoglobin": "Anemia",
    "platelets": "Platelet count decreased",
    "alt": "Alanine aminotransferase increased",
    "ast": "Aspartate aminotransferase increased",
    "total_bilirubin": "Blood bilirubin increased",
    "creatinine": "Creatinine increased",
}

#: default adult normal ranges of the visit labs, in the visit CRF's units
#: (infusions/fields.py VISIT_FIELDS); a unit is spelled as in
#: ctcae_v5.0_lab_grading.csv, or its absolute thresholds are not used
LAB_RANGES: dict[str, dict[str, Decimal | str | None]] = {
    "wbc": {"lln": Decimal("4.0"), "uln": Decimal("10.0"), "unit": "10^9/L"},
    "anc": {"lln": Decimal("1.8"), "uln": Decimal("7.5"), "unit": "10^9/L"},
    "hemoglobin": {"lln": Decimal("120"), "uln": Decimal("160"), "unit": "g/L"},
    "platelets": {"lln": Decimal("150"), "uln": Decimal("400"), "unit": "10^9/L"},
    "alt": {"lln": None, "uln": Decimal("40"), "unit": "U/L"},
    "ast": {"lln": None, "uln": Decimal("40"), "unit": "U/L"},
    "total_bilirubin": {"lln": None, "uln": Decimal("21"), "unit": "µmol/L"},
    "creatinine": {"lln": Decimal("45"), "uln": Decimal("104"), "unit": "µmol/L"},
}

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_OUTCOME_LABELS = dict(OUTCOMES)
_CRITERION_LABELS = {code: label for code, label, _ in SERIOUSNESS_CRITERIA}
_ATTRIBUTION_CODES = tuple(code for code, _ in ATTRIBUTIONS)
_CHOICES: dict[str, tuple[str, ...]] = {
    "related_nk": _ATTRIBUTION_CODES,
    "related_ld": _ATTRIBUTION_CODES,
    "expectedness": tuple(code for code, _ in EXPECTEDNESS),
    "action": tuple(code for code, _ in ACTIONS),
    "outcome": tuple(code for code, _ in OUTCOMES),
}
_DATES = ("onset_date", "end_date", "awareness_date", "death_date")
_BOOLS = ("ongoing", "serious", "dlt", *CRITERIA_CODES)
_TEXTS = ("term", "verbatim", "grade_reason", "awareness_time", "comments")


# ---------------------------------------------------------------------------
# Input parsing (a wrong type is a programming error: ValueError naming the field)


def _date(value: Any, field: str, *, optional: bool = True) -> date | None:
    if value is None and optional:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValueError(f"{field}: expected a date, got {value!r}")
    return value


def _bool(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{field}: expected true, false or None, got {value!r}")


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected text, got {value!r}")
    return value.strip() or None  # a blank answer is no answer


def _choice(value: Any, field: str, codes: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in codes:
        raise ValueError(f"{field}: expected one of {', '.join(codes)}, got {value!r}")
    return value


def _grade(value: Any, field: str = "grade") -> int | None:
    # an int 1..5, or the form's choice value "1".."5"
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip() in ("1", "2", "3", "4", "5"):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValueError(f"{field}: expected a grade 1-5, got {value!r}")
    return value


def _aware(value: Any, field: str, *, optional: bool = False) -> datetime | None:
    if value is None and optional:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}: expected a timezone-aware datetime, got {value!r}")
    return value.astimezone(timezone.utc)


def _window(value: Any, field: str = "dlt_window") -> tuple[date, date] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{field}: expected (start date, end date) or None, got {value!r}")
    start, end = _date(value[0], f"{field}[0]", optional=False), _date(value[1], f"{field}[1]", optional=False)
    if end < start:
        raise ValueError(f"{field}: ends ({end}) before it starts ({start})")
    return start, end


def parse_hhmm(hhmm: Any, field: str = "awareness_time") -> time:
    """A 24-hour "HH:MM" (surrounding spaces allowed) -> ``time``; else ValueError."""
    match = _HHMM.fullmatch(hhmm.strip()) if isinstance(hhmm, str) else None
    if match is None:
        raise ValueError(f"{field}: expected a time as HH:MM (24-hour clock), got {hhmm!r}")
    return time(int(match[1]), int(match[2]))


def _parse_ae(ae: Any) -> dict[str, Any]:
    if not isinstance(ae, Mapping):
        raise ValueError(f"ae: expected a dict, got {type(ae).__name__}")
    v: dict[str, Any] = {}
    for name in _DATES:
        v[name] = _date(ae.get(name), name)
    for name in _BOOLS:
        v[name] = _bool(ae.get(name), name)
    for name in _TEXTS:
        v[name] = _text(ae.get(name), name)
    for name, codes in _CHOICES.items():
        v[name] = _choice(ae.get(name), name, codes)
    v["grade"] = _grade(ae.get("grade"))
    return v


def _parse_ctx(ctx: Any) -> dict[str, Any]:
    if not isinstance(ctx, Mapping):
        raise ValueError(f"ctx: expected a dict, got {type(ctx).__name__}")
    computed = ctx.get("computed_grade")
    if computed is not None and (isinstance(computed, bool) or not isinstance(computed, int) or not 0 <= computed <= 5):
        raise ValueError(f"ctx.computed_grade: expected a grade 0-5 or None, got {computed!r}")
    return {
        "today": _date(ctx.get("today"), "ctx.today", optional=False),
        "consent_date": _date(ctx.get("consent_date"), "ctx.consent_date"),
        "dlt_window": _window(ctx.get("dlt_window"), "ctx.dlt_window"),
        "computed_grade": computed,
    }


# ---------------------------------------------------------------------------
# The AE form (PROTOCOL 6)


def validate(ae: dict, ctx: dict, *, complete: bool) -> dict[str, str]:
    """Every problem of an AE form as {field: message}; empty when valid.

    The rules hold for draft and complete forms alike, for the values given (a value
    given can make another one necessary: grade 5 needs the date of death). A form
    marked complete also needs every field of ``fields.AE_REQUIRED`` and either an end
    date or "ongoing". Several problems at one field are joined in one message.

    ``ae``: the answers keyed as ``fields.AE_FIELDS`` (None, missing or blank = not
    answered); ``ctx``: ``today`` (the site's date), ``consent_date``, ``dlt_window``
    ((first, last) inclusive, or None before the first infusion) and
    ``computed_grade`` (CRS/ICANS, else None). Wrong types: ValueError.
    """
    v = _parse_ae(ae)
    c = _parse_ctx(ctx)
    today = c["today"]
    errors: dict[str, str] = {}

    def add(field: str, message: str) -> None:
        if field not in errors:
            errors[field] = message
        elif message not in errors[field]:
            errors[field] = f"{errors[field]} {message}"

    onset, end, death, aware_day = v["onset_date"], v["end_date"], v["death_date"], v["awareness_date"]
    grade, outcome, serious = v["grade"], v["outcome"], v["serious"]
    fatal = outcome == "fatal"

    # --- term and grade
    entry = None
    if v["term"] is not None:
        try:
            entry = ctcae.get(v["term"])
        except KeyError:
            add("term", "Choose a term from CTCAE v5.0.")
    if entry is not None and entry.requires_verbatim and v["verbatim"] is None:
        add("verbatim", f"Describe the event: the term '{entry.term}' needs a verbatim term.")
    if entry is not None and grade is not None and grade not in entry.grades:
        allowed = ", ".join(str(g) for g in sorted(entry.grades))
        add("grade", f"{entry.term} has no grade {grade} in CTCAE v5.0 (allowed: {allowed}).")

    # --- grade 5 is death (CTCAE), and an AE with a fatal outcome is grade 5
    if grade == 5 and not fatal:
        add("outcome", "A grade 5 AE is a death: the outcome must be Fatal.")
    if fatal and grade != 5:
        add("grade", "An AE with the outcome Fatal is grade 5 (death related to the AE).")
    if (grade == 5 or fatal) and death is None:
        add("death_date", "Give the date of death.")
    if death is not None:
        if not fatal:
            add("death_date", "A date of death is given but the outcome is not Fatal.")
        if onset is not None and death < onset:
            add("death_date", f"The date of death is before the onset date ({onset}).")
        if death > today:
            add("death_date", f"The date of death cannot be in the future (today is {today}).")

    # --- onset
    if onset is not None:
        if onset > today:
            add("onset_date", f"The onset date cannot be in the future (today is {today}).")
        if c["consent_date"] is not None and onset < c["consent_date"]:
            add("onset_date", f"The onset date is before informed consent ({c['consent_date']}).")

    # --- end, ongoing, outcome
    if end is not None:
        if onset is not None and end < onset:
            add("end_date", f"The end date is before the onset date ({onset}).")
        if end > today:
            add("end_date", f"The end date cannot be in the future (today is {today}).")
        if death is not None and end > death:
            add("end_date", f"The end date is after the date of death ({death}).")
        if v["ongoing"] is True:
            add("end_date", "An ongoing AE has no end date: clear the end date or untick Ongoing.")
    if v["ongoing"] is True and outcome in ENDED_OUTCOMES:
        add("ongoing", f"An AE with the outcome {_OUTCOME_LABELS[outcome]} is not ongoing.")

    # --- seriousness (ICH E2A)
    ticked = [code for code in CRITERIA_CODES if v[code] is True]
    if serious is True and not ticked:
        add("serious", "Tick at least one seriousness criterion for a serious AE.")
    if serious is False and ticked:
        names = "; ".join(f"'{_CRITERION_LABELS[code]}'" for code in ticked)
        add(
            "serious",
            f"A seriousness criterion is ticked ({names}): the AE is serious. Tick Serious or untick the criterion.",
        )
    if serious is False and fatal:
        add("serious", "An AE with the outcome Fatal is serious (results in death).")
    if serious is True:
        if aware_day is None:
            add("awareness_date", "Give the date the site became aware of the SAE: it starts the 24-hour clock.")
        if v["awareness_time"] is None:
            add("awareness_time", "Give the time the site became aware of the SAE (HH:MM, site time).")
    if v["awareness_time"] is not None and _HHMM.fullmatch(v["awareness_time"]) is None:
        add("awareness_time", "Enter the time as HH:MM (24-hour clock).")
    if aware_day is not None:
        if onset is not None and aware_day < onset:
            add("awareness_date", f"The awareness date is before the onset date ({onset}).")
        if aware_day > today:
            add("awareness_date", f"The awareness date cannot be in the future (today is {today}).")
    if v["sae_death"] is True and not fatal:
        add("outcome", "'Results in death' is ticked: the outcome must be Fatal.")
    if fatal and serious is True and v["sae_death"] is not True:
        add("sae_death", "A fatal SAE must have 'Results in death' ticked.")

    # --- DLT (PROTOCOL 6: the investigator flags DLTs inside the window)
    if v["dlt"] is True:
        window = c["dlt_window"]
        if window is None:
            add("dlt", "Only an AE with onset inside the DLT window can be a DLT: the subject has had no infusion yet.")
        elif onset is None:
            add(
                "dlt",
                f"Give the onset date: only an AE with onset inside the DLT window "
                f"({window[0]} to {window[1]}) can be a DLT.",
            )
        elif not in_dlt_window(onset, window):
            add("dlt", f"Only an AE with onset inside the DLT window ({window[0]} to {window[1]}) can be a DLT.")

    # --- CRS / ICANS: a grade other than the computed one needs a reason
    computed = c["computed_grade"]
    if computed is not None and grade is not None and grade != computed and v["grade_reason"] is None:
        add(
            "grade_reason",
            f"The grade differs from the grade computed from the assessments ({computed}): give the reason.",
        )

    if complete:
        for name in AE_REQUIRED:
            if v.get(name) is None and name not in errors:
                errors[name] = REQUIRED
        if v["ongoing"] is not True and end is None and "end_date" not in errors:
            errors["end_date"] = "Give the end date or tick Ongoing."
    return errors


# ---------------------------------------------------------------------------
# Relatedness, treatment-emergent, DLT window


def is_related(code: str | None) -> bool | None:
    """PROTOCOL 6: possible, probable and definite count as related; None (or a blank
    answer) when not assessed. An unknown code: ValueError."""
    code = _choice(code, "attribution", _ATTRIBUTION_CODES)
    return None if code is None else code in RELATED


def related(nk: str | None, ld: str | None) -> bool | None:
    """Related to the study treatment (NK cells or lymphodepletion): True when either is
    related; otherwise None when either is not assessed; else False."""
    a, b = is_related(nk), is_related(ld)
    if a or b:
        return True
    if a is None or b is None:
        return None
    return False


def treatment_emergent(onset: date | None, first_lymphodepletion: date | None) -> bool:
    """PROTOCOL 6: onset on or after the first lymphodepletion day; False when either
    date is unknown."""
    onset = _date(onset, "onset")
    first = _date(first_lymphodepletion, "first_lymphodepletion")
    return onset is not None and first is not None and onset >= first


def study_day(day: date | None, reference: date | None) -> int | None:
    """The study day of ``day`` (PROTOCOL 8: the safety listings' "Study day" and SDTM
    --DY): the reference day (the first NK-cell infusion given, RFSTDTC) is day 1, the
    day before it is -1; there is no day 0. None when either date is unknown; a datetime
    counts as its date. Not a date: ValueError."""
    if day is None or reference is None:
        return None
    if not isinstance(day, date) or not isinstance(reference, date):
        raise ValueError(f"study day: expected dates, got {day!r} and {reference!r}")
    delta = day.toordinal() - reference.toordinal()
    return delta + 1 if delta >= 0 else delta


def in_dlt_window(onset: date | None, window: tuple[date, date] | None) -> bool:
    """Onset inside the DLT window (first and last day included); False when either is
    unknown."""
    onset = _date(onset, "onset")
    window = _window(window, "window")
    return onset is not None and window is not None and window[0] <= onset <= window[1]


# ---------------------------------------------------------------------------
# SAE and SUSAR clocks


def awareness_utc(d: date, hhmm: str, zone: str) -> datetime:
    """The site-local awareness date and "HH:MM" time as an aware UTC datetime.

    Bad date, time or time zone: ValueError. A local time skipped or repeated by a
    daylight-saving change is taken as ``zoneinfo`` does (fold=0).
    """
    d = _date(d, "awareness_date", optional=False)
    t = parse_hhmm(hhmm)
    if not isinstance(zone, str) or not zone.strip():
        raise ValueError(f"zone: expected an IANA time zone name, got {zone!r}")
    try:
        tz = ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"zone: unknown time zone {zone!r}") from None
    return datetime.combine(d, t, tzinfo=tz).astimezone(timezone.utc)


#: the states of a reporting clock (SAE report, SUSAR expedited report)
REPORTED, REPORTED_LATE, DUE, OVERDUE = "reported", "reported_late", "due", "overdue"
CLOCK_STATES = (REPORTED, REPORTED_LATE, DUE, OVERDUE)


def clock_state(due: datetime, reported: datetime | None, now: datetime) -> str:
    """The one rule of a reporting clock's state, for every page, list and export:
    reported by the due instant (included) is "reported", after it "reported_late";
    not reported, "due" up to the due instant itself and "overdue" after it. Aware
    datetimes (the callers check or convert)."""
    if reported is not None:
        return REPORTED if reported <= due else REPORTED_LATE
    return DUE if now <= due else OVERDUE


def _clock(aware: datetime, due: datetime, reported: datetime | None, now: datetime) -> dict:
    state = clock_state(due, reported, now)
    if reported is not None:
        return {"due_at": due, "state": state, "remaining_seconds": 0}
    # floor: any part of a second past the due time is overdue (negative)
    remaining = math.floor((due - now).total_seconds())
    return {"due_at": due, "state": state, "remaining_seconds": remaining}


def sae_clock(
    awareness_at: datetime,
    reported_at: datetime | None,
    now: datetime,
    hours: int = STUDY.safety_reporting.sae_report_hours,
) -> dict:
    """The SAE reporting clock (PROTOCOL 6: within 24 hours of site awareness; the hours
    are the study definition's, ``Study.safety_reporting``: the caller passes the
    definition in force, the default is the original protocol's).

    {"due_at": aware UTC datetime, "state": "reported" | "reported_late" | "due" |
    "overdue", "remaining_seconds": int}. Reported at the due instant is on time; not
    reported, the due instant itself is still "due" (0 s left), a second later
    "overdue" (-1). Once reported, remaining_seconds is 0. Naive datetimes: ValueError.
    """
    aware = _aware(awareness_at, "awareness_at")
    reported = _aware(reported_at, "reported_at", optional=True)
    now = _aware(now, "now")
    if isinstance(hours, bool) or not isinstance(hours, int) or hours <= 0:
        raise ValueError(f"hours: expected a positive integer, got {hours!r}")
    return _clock(aware, aware + timedelta(hours=hours), reported, now)


def is_susar(serious: bool | None, expectedness: str | None, nk: str | None, ld: str | None) -> bool:
    """A suspected unexpected serious adverse reaction: serious, unexpected and related
    (to NK cells or lymphodepletion). Anything not assessed: not (yet) a SUSAR."""
    expectedness = _choice(expectedness, "expectedness", _CHOICES["expectedness"])
    return serious is True and expectedness == "unexpected" and related(nk, ld) is True


def susar_days(criteria: dict, outcome: str | None, reporting: SafetyReporting = STUDY.safety_reporting) -> int:
    """ICH E2A expedited reporting: 7 calendar days for a fatal or life-threatening
    SUSAR (``sae_death``, outcome fatal or ``sae_life_threatening``), else 15 (the numbers
    of the study definition, `Study.safety_reporting`). ``criteria`` may be the whole AE dict."""
    if not isinstance(criteria, Mapping):
        raise ValueError(f"criteria: expected a dict, got {type(criteria).__name__}")
    outcome = _choice(outcome, "outcome", _CHOICES["outcome"])
    death = _bool(criteria.get("sae_death"), "sae_death")
    threat = _bool(criteria.get("sae_life_threatening"), "sae_life_threatening")
    return reporting.susar_fatal_days if death or threat or outcome == "fatal" else reporting.susar_days


def susar_clock(awareness_at: datetime, days: int, reported_at: datetime | None, now: datetime) -> dict:
    """The SUSAR expedited-report clock: due ``days`` calendar days (timedelta) after
    awareness. Same shape and edge rules as ``sae_clock``."""
    aware = _aware(awareness_at, "awareness_at")
    reported = _aware(reported_at, "reported_at", optional=True)
    now = _aware(now, "now")
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ValueError(f"days: expected a positive integer, got {days!r}")
    return _clock(aware, aware + timedelta(days=days), reported, now)


# ---------------------------------------------------------------------------
# Lab-based AE suggestions (PROTOCOL 6: suggested grade, the user confirms)


def _lab_number(value: Any, field: str) -> Decimal | int | float | Fraction | None:
    # the visit CRF stores exact decimals as text ("1.25"): accept that too
    if value is None or (isinstance(value, (int, float, Decimal, Fraction)) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            pass
        else:
            if number.is_finite():
                return number
    raise ValueError(f"{field}: expected a number, got {value!r}")


def lab_suggestions(labs: list[dict], open_terms: set[str], dismissed: set[tuple]) -> list[dict]:
    """AEs the visit labs suggest: one per CTCAE term, at its highest grade (earliest
    date on a tie), sorted by date then term.

    ``labs``: {"visit_id", "visit_label", "date", "lab" (a LAB_TERMS key), "value",
    "uln", "lln", "unit"} per value measured; a missing uln/lln/unit key takes the
    LAB_RANGES default (an explicit None is kept), a lab without a CTCAE mapping or a
    None value is skipped. A value grading 0 or None (cannot be graded) suggests
    nothing; nor does a term already open (``open_terms``, case-insensitive) or a
    dismissed (visit_id, lab, grade). Each suggestion: {"visit_id", "visit_label",
    "date", "lab", "term", "grade", "value", "unit"}. Bad values: ValueError.
    """
    if isinstance(labs, (str, bytes)) or not isinstance(labs, Iterable):
        raise ValueError(f"labs: expected a list, got {type(labs).__name__}")
    open_keys = {t.strip().casefold() for t in (open_terms or ()) if isinstance(t, str)}
    dismissed = set(dismissed or ())
    best: dict[str, dict] = {}
    for n, lab in enumerate(labs):
        where = f"labs[{n}]"
        if not isinstance(lab, Mapping):
            raise ValueError(f"{where}: expected a dict, got {type(lab).__name__}")
        name = lab.get("lab")
        term = LAB_TERMS.get(name) if isinstance(name, str) else None
        value = _lab_number(lab.get("value"), f"{where}.value")
        if term is None or value is None:
            continue
        if term.casefold() in open_keys:
            continue
        day = _date(lab.get("date"), f"{where}.date", optional=False)
        defaults = LAB_RANGES[name]
        uln = _lab_number(lab["uln"] if "uln" in lab else defaults["uln"], f"{where}.uln")
        lln = _lab_number(lab["lln"] if "lln" in lab else defaults["lln"], f"{where}.lln")
        unit = lab["unit"] if "unit" in lab else defaults["unit"]
        try:
            grade = ctcae.suggest_lab_grade(term, value, uln=uln, lln=lln, unit=unit)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not grade or (lab.get("visit_id"), name, grade) in dismissed:
            continue
        kept = best.get(term)
        if kept is not None and (kept["grade"], -kept["date"].toordinal()) >= (grade, -day.toordinal()):
            continue
        best[term] = {
            "visit_id": lab.get("visit_id"),
            "visit_label": lab.get("visit_label"),
            "date": day,
            "lab": name,
            "term": term,
            "grade": grade,
            "value": value,
            "unit": unit,
        }
    return sorted(best.values(), key=lambda s: (s["date"], s["term"]))
