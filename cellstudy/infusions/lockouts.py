"""The infusion lockout checker of PROTOCOL 5.2.

A pure function over plain data: no Flask, no database. The scheduler, the web form
and the API all call ``check``; the scheduler offers ``earliest_clear_date``.

The washout arithmetic is the one rule of PROTOCOL 4.4, shared with the eligibility
checker: ``parse_exposure``, ``blocking_washout`` and ``first_permitted_day`` come from
``cellstudy.enrollment.eligibility`` and are not re-implemented here.

Contract (PROTOCOL 5.2)::

    check({"proposed_date": date, "infusion_dates": [date, ...],
           "exposures": [exposure (4.4), ...],
           "open_adverse_events": [{"term", "grade", "category", "related"}, ...]})
    -> {"allowed": bool,
        "lockouts": [{"code", "until": ISO date | None, "reason"}, ...],
        "vaccination_window": {"start": ISO date, "end": ISO date}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from cellstudy.enrollment.eligibility import (
    EXPOSURE_CRITERIA,
    Exposure,
    blocking_washout,
    first_permitted_day,
    parse_date,
    parse_exposure,
    window_days,
)
from cellstudy.enrollment.fields import EXPOSURE_CATEGORY_LABELS
from cellstudy.study import STUDY, Study, Washout

# PROTOCOL 5.2: the lockout codes, in the order of its table (the eligibility codes of
# 4.4 first, then vaccine, min_interval, max_infusions, toxicity_hold). The washouts are the
# exposure criteria of eligibility (one declaration, enrollment/eligibility.py).
VACCINE = "vaccine"
WASHOUT_CODES: tuple[str, ...] = tuple(code for code in EXPOSURE_CRITERIA if code != VACCINE)
LOCKOUT_CODES: tuple[str, ...] = (
    *WASHOUT_CODES,
    VACCINE,
    "min_interval",
    "max_infusions",
    "toxicity_hold",
)
# What people read for each code (one declaration; pages show the label, the code on hover).
# `stagger` (PROTOCOL 5.3) and `before_enrolment` are the scheduler's, shown beside these.
LOCKOUT_LABELS: dict[str, str] = {
    "washout_steroid": "Steroid washout",
    "washout_antitumor": "Antitumor therapy washout",
    "washout_radiotherapy": "Radiotherapy washout",
    "washout_dli": "DLI washout",
    "washout_intrathecal": "Intrathecal treatment washout",
    "washout_cell_therapy": "Cell therapy washout",
    "major_surgery": "Major surgery",
    "vaccine": "Vaccine",
    "min_interval": "Minimum interval",
    "max_infusions": "Maximum number of infusions",
    "toxicity_hold": "Toxicity hold",
    "stagger": "Sentinel stagger",
    "before_enrolment": "Before enrolment",
}
CASE_KEYS: tuple[str, ...] = (
    "proposed_date",
    "infusion_dates",
    "exposures",
    "open_adverse_events",
)
AE_CATEGORIES: tuple[str, ...] = ("crs", "icans", "other")
_AE_CATEGORY_TEXT = {"crs": "CRS", "icans": "ICANS", "other": "other"}
MIN_GRADE, MAX_GRADE = 1, 5  # PROTOCOL 5.2: CTCAE grade 1..5


@dataclass(frozen=True)
class AdverseEvent:
    term: str
    grade: int
    category: str
    related: bool | None  # None = attribution not yet assessed


# --------------------------------------------------------------------------------------
# Input parsing (PROTOCOL 5.2 "as in 4.1": bad input raises ValueError naming the field)
# --------------------------------------------------------------------------------------


def _list(case: Mapping, key: str) -> list:
    raw = case[key]
    # PROTOCOL 5.2: all four keys are required, [] for none; null is not "none".
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"{key}: expected a list ([] for none), got {raw!r}")
    return list(raw)


def _parse_exposures(raw: list, study: Study) -> list[Exposure]:
    exposures = []
    for i, item in enumerate(raw):
        where = f"exposures[{i}]"
        exposure = parse_exposure(item, where, study=study)
        # PROTOCOL 5.2: an exposure here must have its last_date (no "missing" status:
        # a lockout is either on or off).
        if exposure.last_date is None:
            raise ValueError(
                f"{where}.last_date: required (the last dose or treatment day; for a vaccine, the day given)"
            )
        exposures.append(exposure)
    return exposures


def _parse_adverse_event(raw: Any, where: str) -> AdverseEvent:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(raw).__name__}")
    for key in ("term", "grade", "category"):
        if key not in raw:
            raise ValueError(f"{where}.{key}: required")
    term = raw["term"]
    if not isinstance(term, str) or not term.strip():
        raise ValueError(f"{where}.term: expected the AE term as text, got {term!r}")
    grade = raw["grade"]
    if isinstance(grade, bool) or not isinstance(grade, int):
        raise ValueError(f"{where}.grade: expected an integer {MIN_GRADE}..{MAX_GRADE}, got {grade!r}")
    if not MIN_GRADE <= grade <= MAX_GRADE:
        raise ValueError(f"{where}.grade: must be {MIN_GRADE}..{MAX_GRADE}, got {grade}")
    category = raw["category"]
    if not isinstance(category, str) or category not in AE_CATEGORIES:
        allowed = ", ".join(repr(c) for c in AE_CATEGORIES)
        raise ValueError(f"{where}.category: expected one of {allowed}, got {category!r}")
    # PROTOCOL 5.2: related null = not yet assessed. An absent key is the same as null
    # (as in 4.2), which is the cautious reading: it counts as related.
    related = raw.get("related")
    if related is not None and not isinstance(related, bool):
        raise ValueError(f"{where}.related: expected true, false or null, got {related!r}")
    return AdverseEvent(term=term, grade=int(grade), category=category, related=related)


@dataclass(frozen=True)
class _Case:
    proposed: date
    infusions: list[date]
    exposures: list[Exposure]
    adverse_events: list[AdverseEvent]


def _parse_case(case: Any, study: Study) -> _Case:
    if not isinstance(case, Mapping):
        raise ValueError(f"case: expected a dict, got {type(case).__name__}")
    for key in CASE_KEYS:
        if key not in case:
            raise ValueError(f"{key}: required (PROTOCOL 5.2: all of {', '.join(CASE_KEYS)}; [] for none)")
    proposed = parse_date(case["proposed_date"], "proposed_date")
    infusions = [parse_date(d, f"infusion_dates[{i}]") for i, d in enumerate(_list(case, "infusion_dates"))]
    exposures = _parse_exposures(_list(case, "exposures"), study)
    events = [
        _parse_adverse_event(ae, f"open_adverse_events[{i}]") for i, ae in enumerate(_list(case, "open_adverse_events"))
    ]
    return _Case(proposed, infusions, exposures, events)


def _shift(day: date, days: int, field: str) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        raise ValueError(
            f"{field}: {day.isoformat()} is too close to the end of the calendar for the lockouts to be computed"
        ) from None


# --------------------------------------------------------------------------------------
# Reason text
# --------------------------------------------------------------------------------------


def _num(x: Fraction | int) -> str:
    """An exact number as typed: exposure numbers come from int, float (by its shortest
    repr) or Decimal, so they are terminating decimals."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    text = format(Decimal(x.numerator) / Decimal(x.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _title(exposure: Exposure) -> str:
    label = EXPOSURE_CATEGORY_LABELS.get(exposure.category, exposure.category)
    if not exposure.name:
        return label
    # "Dexamethasone (systemic steroid)", but "(CAR-T, ...)" keeps its capitals
    if len(label) > 1 and not label[1].isupper():
        label = label[0].lower() + label[1:]
    return f"{exposure.name} ({label})"


def _washout_text(row: Washout, exposure: Exposure) -> str:
    if row.months is not None:
        return f"{row.months}-calendar-month washout"
    if row.half_lives is None:
        return f"{row.days}-day washout"
    if exposure.half_life_days is None:
        return f"{row.days}-day washout (half-life unknown)"
    window = window_days(row, exposure.half_life_days)
    return (
        f"{_num(window)}-day washout (min({row.days} days, {row.half_lives} x "
        f"half-life {_num(exposure.half_life_days)} days))"
    )


def _given(exposure: Exposure) -> str:
    verb = "given" if exposure.category == "vaccine" else "last given"
    return f"{_title(exposure)} {verb} {exposure.last_date.isoformat()}"


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


# --------------------------------------------------------------------------------------
# The lockouts of PROTOCOL 5.2
# --------------------------------------------------------------------------------------


def _lockout(code: str, until: date | None, reason: str) -> dict:
    return {"code": code, "until": until.isoformat() if until else None, "reason": reason}


def _exposure_lockouts(c: _Case, study: Study, first: bool) -> dict[str, dict]:
    """washout_* and major_surgery (before the first infusion only) and the vaccine
    exposure rule, each code once with ``until`` = the latest first permitted day."""
    blocking: dict[str, list[tuple[Exposure, Washout, date]]] = {}
    for exposure in c.exposures:
        # PROTOCOL 4.4: physiological steroids and diagnostic biopsies never block.
        row = blocking_washout(exposure, study)
        if row is None:
            continue
        if row.criterion not in LOCKOUT_CODES:
            raise ValueError(f"study: washout {row.category} feeds the unknown lockout code {row.criterion!r}")
        if row.criterion == VACCINE or not first:
            continue  # PROTOCOL 5.2: washouts apply before the FIRST infusion only
        until = first_permitted_day(exposure, study=study)
        # PROTOCOL 4.4: D blocks while D < first permitted day (an exposure dated after
        # D blocks too).
        if c.proposed < until:
            blocking.setdefault(row.criterion, []).append((exposure, row, until))
    lockouts = {}
    for code, items in blocking.items():
        until = max(u for _, _, u in items)
        reason = "; ".join(
            f"{_given(e)}: {_washout_text(row, e)}, first permitted {u.isoformat()}" for e, row, u in items
        )
        lockouts[code] = _lockout(
            code, until, f"{reason} (a washout before the first infusion, proposed for {c.proposed.isoformat()})"
        )
    return lockouts


def _vaccine_lockout(c: _Case, study: Study, first: bool, window: tuple[date, date]) -> dict | None:
    rows = [(e, blocking_washout(e, study)) for e in c.exposures]
    vaccines = [(e, row) for e, row in rows if row is not None and row.criterion == VACCINE]
    if first:
        # PROTOCOL 5.2/4.4: a vaccine inside its 28-day window of the first infusion.
        items = []
        for exposure, row in vaccines:
            until = first_permitted_day(exposure, study=study)
            if c.proposed < until:
                items.append((exposure, row, until))
        if not items:
            return None
        reason = "; ".join(
            f"{_given(e)}: {_washout_text(row, e)} before the first infusion, first permitted {u.isoformat()}"
            for e, row, u in items
        )
        return _lockout(VACCINE, max(u for _, _, u in items), reason)
    # PROTOCOL 5.2: at a later infusion, any vaccine inside the vaccination window is a
    # protocol deviation that blocks until the investigator overrides (until null).
    start, end = window
    inside = [e for e, _ in vaccines if start <= e.last_date <= end]
    if not inside:
        return None
    given = "; ".join(_given(e) for e in inside)
    return _lockout(
        VACCINE,
        None,
        f"{given}: inside the vaccination window "
        f"{start.isoformat()} to {end.isoformat()} (protocol "
        "deviation: blocks until the investigator overrides)",
    )


def _vaccination_window(c: _Case, study: Study) -> tuple[date, date]:
    """PROTOCOL 5.2: from (first infusion - 27 days) to (last infusion + 84 days), both
    inclusive; the proposed date counts as an infusion even when it is blocked."""
    regimen = study.regimen
    dated = [(c.proposed, "proposed_date"), *((d, f"infusion_dates[{i}]") for i, d in enumerate(c.infusions))]
    first, first_field = min(dated, key=lambda pair: pair[0])
    last, last_field = max(dated, key=lambda pair: pair[0])
    # "within 4 weeks before" = fewer than 28 days: the first day inside is first - 27
    start = _shift(first, -(regimen.vaccine_days_before_first - 1), first_field)
    end = _shift(last, regimen.vaccine_days_after_last, last_field)
    return start, end


def _min_interval_lockout(c: _Case, study: Study) -> dict | None:
    if not c.infusions:
        return None
    gap_days = study.regimen.min_interval_days
    index = max(range(len(c.infusions)), key=lambda i: c.infusions[i])
    latest = c.infusions[index]
    until = _shift(latest, gap_days, f"infusion_dates[{index}]")
    # PROTOCOL 5.2: on or before the latest infusion, or fewer than 6 days after it.
    if c.proposed >= until:
        return None
    gap = (c.proposed - latest).days
    if gap > 0:
        when = f"{_days(gap)} after"
    elif gap == 0:
        when = "on the day of"
    else:
        when = f"{_days(-gap)} before"
    return _lockout(
        "min_interval",
        until,
        f"proposed {c.proposed.isoformat()} is {when} the latest infusion "
        f"{latest.isoformat()} (minimum {_days(gap_days)} between two "
        f"infusions): first permitted {until.isoformat()}",
    )


def _max_infusions_lockout(c: _Case, study: Study) -> dict | None:
    count = study.regimen.infusion_count
    if len(c.infusions) < count:
        return None
    dates = ", ".join(d.isoformat() for d in sorted(c.infusions))
    return _lockout(
        "max_infusions",
        None,
        f"{len(c.infusions)} infusions already given or scheduled ({dates}); the protocol has {count}",
    )


def _toxicity_hold_lockout(c: _Case, study: Study) -> dict | None:
    hold = study.toxicity_hold
    reasons = []
    for ae in c.adverse_events:
        # PROTOCOL 5.2: CRS >= 2, ICANS >= 1, or a related AE >= 3; related null (not
        # yet assessed) counts as related.
        why = []
        if ae.category == "crs" and ae.grade >= hold.crs_min_grade:
            why.append(f"CRS grade >= {hold.crs_min_grade}")
        if ae.category == "icans" and ae.grade >= hold.icans_min_grade:
            why.append(f"ICANS grade >= {hold.icans_min_grade}")
        if ae.related is not False and ae.grade >= hold.related_min_grade:
            attribution = "related" if ae.related else "attribution not yet assessed"
            why.append(f"{attribution}, grade >= {hold.related_min_grade}")
        if why:
            reasons.append(f"open AE {ae.term!r} ({_AE_CATEGORY_TEXT[ae.category]}) grade {ae.grade}: {', '.join(why)}")
    if not reasons:
        return None
    return _lockout("toxicity_hold", None, "; ".join(reasons))


def check(case: Mapping[str, Any], *, study: Study = STUDY) -> dict:
    """Decide whether an NK infusion may be given on ``case["proposed_date"]``
    (PROTOCOL 5.2).

    Returns ``{"allowed", "lockouts", "vaccination_window"}``: ``lockouts`` holds one
    entry per blocking code, in the order of ``LOCKOUT_CODES``, each
    ``{"code", "until", "reason"}`` where ``until`` is the first day the lockout no
    longer blocks (ISO date) or None when only a change of the facts can lift it.
    ``allowed`` is True exactly when ``lockouts`` is empty. Keys of ``case`` beyond the
    four of the contract, and unknown keys inside an exposure or AE, are ignored.

    Bad input raises ``ValueError`` naming the field: a missing key, a null where a
    list belongs, a datetime or unparseable date, an unknown exposure or AE category,
    an exposure without last_date, half_life_days <= 0, a grade that is not an int
    1..5 (bools included), ``related`` not a bool or null.
    """
    c = _parse_case(case, study)
    # PROTOCOL 5.2: the proposal is the first infusion when infusion_dates is empty;
    # otherwise it is a later one (one on or before the latest is caught by
    # min_interval).
    first = not c.infusions
    window = _vaccination_window(c, study)
    found = _exposure_lockouts(c, study, first)
    for code, lockout in (
        (VACCINE, _vaccine_lockout(c, study, first, window)),
        ("min_interval", _min_interval_lockout(c, study)),
        ("max_infusions", _max_infusions_lockout(c, study)),
        ("toxicity_hold", _toxicity_hold_lockout(c, study)),
    ):
        if lockout is not None:
            found[code] = lockout
    lockouts = [found[code] for code in LOCKOUT_CODES if code in found]
    return {
        "allowed": not lockouts,
        "lockouts": lockouts,
        "vaccination_window": {"start": window[0].isoformat(), "end": window[1].isoformat()},
    }


def earliest_clear_date(case: Mapping[str, Any], *, study: Study = STUDY, horizon_days: int = 400) -> date | None:
    """The earliest date on or after ``case["proposed_date"]`` that clears all dated
    lockouts, for the scheduler to offer; None when an undated lockout (``until``
    null) would still block on that date, or when no such date lies within
    ``horizon_days`` of the proposed date.

    Every dated lockout blocks each day before its ``until`` (a washout, the vaccine
    exposure rule and min_interval only ever lift as the date moves later), so jumping
    to the latest ``until`` skips only blocked days; repeat until no dated lockout is
    left. The undated lockouts do not lift with time: max_infusions and toxicity_hold
    do not depend on the date, and the vaccine deviation of a later infusion only grows
    with it (the window ends 84 days after the proposed date). So the date returned,
    when not None, is the earliest date ``check`` allows.
    """
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, int) or horizon_days < 0:
        raise ValueError(f"horizon_days: expected a non-negative integer, got {horizon_days!r}")
    if not isinstance(case, Mapping):
        raise ValueError(f"case: expected a dict, got {type(case).__name__}")
    result = check(case, study=study)  # validates the whole case
    start = parse_date(case["proposed_date"], "proposed_date")
    try:
        limit = start + timedelta(days=horizon_days)
    except OverflowError:
        limit = date.max
    day = start
    while True:
        dated = [date.fromisoformat(lo["until"]) for lo in result["lockouts"] if lo["until"] is not None]
        if not dated:
            return None if result["lockouts"] else day
        day = max(dated)
        if day > limit:
            return None
        result = check({**case, "proposed_date": day}, study=study)
