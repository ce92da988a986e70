"""The study definition in force: the defaults of study.py plus the approved amendments
(issue 3: "a change of a setting is an admin action with an audit record"; issue 11:
an amendment is a controlled change, see cellstudy/amendments).

Scalar settings of `eligibility`, `regimen`, `toxicity_hold` and `edit_checks` can be
amended; tables (washouts, dose levels, visits, infusion days) change with the code of a
new study definition, reviewed like any code change.

**The definition in force** is the latest *approved* amendment whose effective date has
arrived, else the original protocol (study.STUDY). The effective date is a UTC calendar
date: an amendment effective 2027-01-10 is in force from 2027-01-10 00:00 UTC, at every
site (08:00 in Hangzhou), because one study has one definition at a time. A proposal
awaiting approval, a rejected or a withdrawn amendment never changes it.

Two readers:

- `current_study()`: for pages and checks in a request; cached for the request and, per
  process, for a few seconds, but never past the moment the next approved amendment's
  effective date arrives (and the process that approves an amendment drops its cache).
- `study_in_force(session)`: read in the caller's transaction without any cache: what a
  rule that stores its result (the infusion judgements, the record's study version) uses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from flask import g, has_app_context
from sqlalchemy import func, select

from .. import timeutil
from ..extensions import db
from ..study import SETTING_LABELS, SETTING_SECTIONS, STUDY, Study, setting_label
from .models import StudyAmendment

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SECTIONS = ("eligibility", "regimen", "toxicity_hold", "edit_checks")  # edit_checks: issue 6 (monitoring)

__all__ = [
    "SECTIONS",
    "SETTING_LABELS",
    "SETTING_SECTIONS",
    "SettingError",
    "apply",
    "current_study",
    "editable_settings",
    "setting_label",
    "study_in_force",
    "definition",
    "invalidate_cache",
    "effective_moment",
    "amend",
]

#: inclusive bounds of settings whose meaning has them (a grade, a class, a switch, a percentage)
_RANGES: dict[str, tuple[int, int]] = {
    "eligibility.ecog_max": (0, 5),
    "eligibility.nyha_fail_at": (1, 4),
    "eligibility.max_prior_toxicity_grade": (0, 5),
    "eligibility.lvef_min_percent": (0, 100),
    "eligibility.spo2_fail_at_or_below": (0, 100),
    "regimen.dose_tolerance_percent": (0, 100),
    "toxicity_hold.crs_min_grade": (1, 4),
    "toxicity_hold.icans_min_grade": (1, 4),
    "toxicity_hold.related_min_grade": (1, 5),
    "edit_checks.visit_window_check": (0, 1),
}
_OPTIONAL = frozenset({"regimen.sentinel_stagger_days"})  # empty: no stagger


class SettingError(ValueError):
    """A refused setting value; `key` names the setting (the message its label)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{setting_label(key)}: {message}")
        self.key = key


def editable_settings(study: Study = STUDY) -> list[tuple[str, object, type]]:
    """(dotted key, current value, type) of every scalar setting."""
    out = []
    for section in SECTIONS:
        obj = getattr(study, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            kind = int if f.type in ("int", "int | None") else Decimal if f.type == "Decimal" else None
            # Physical constants of the Cockcroft-Gault formula are not study settings.
            if kind is not None and not f.name.startswith(("cg_", "creatinine_umol")):
                out.append((f"{section}.{f.name}", value, kind))
    return out


def apply(overrides: dict, base: Study = STUDY, version: str | None = None) -> Study:
    """A Study with the overrides applied; SettingError naming the setting on bad values."""
    changes: dict[str, dict] = {}
    types = {key: kind for key, _value, kind in editable_settings(base)}
    for key, raw in overrides.items():
        if key not in types:
            raise SettingError(key, "not an editable setting")
        section, name = key.split(".")
        changes.setdefault(section, {})[name] = parse(key, raw, types[key])
    study = dataclasses.replace(
        base, **{section: dataclasses.replace(getattr(base, section), **values) for section, values in changes.items()}
    )
    return dataclasses.replace(study, version=version) if version else study


def parse(key: str, raw: Any, kind: type[int] | type[Decimal]) -> int | Decimal | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if key in _OPTIONAL:
            return None
        raise SettingError(key, "a value is required")
    try:
        value = kind(str(raw).strip())
    except (ValueError, InvalidOperation):
        raise SettingError(key, f"{raw!r} is not a valid {'whole number' if kind is int else 'number'}") from None
    if isinstance(value, Decimal) and not value.is_finite():
        raise SettingError(key, f"{raw!r} is not a valid number")
    if value < 0:
        raise SettingError(key, "must not be negative")
    if key in _RANGES:
        low, high = _RANGES[key]
        if not low <= value <= high:
            raise SettingError(key, f"must be between {low} and {high}")
    return value


def setting_errors(values: dict, base: Study = STUDY) -> dict[str, str]:
    """{key: message} for every refused value (not only the first), for a form."""
    types = {key: kind for key, _value, kind in editable_settings(base)}
    errors = {}
    for key, raw in values.items():
        try:
            if key not in types:
                raise SettingError(key, "not an editable setting")
            parse(key, raw, types[key])
        except SettingError as error:
            errors[key] = str(error)
    return errors


def values_of(study: Study) -> dict[str, object]:
    return {key: value for key, value, _ in editable_settings(study)}


# --- the definition in force ---------------------------------------------------------------------


def effective_moment(day: date) -> datetime:
    """An effective date is a UTC date: the amendment is in force from its 00:00 UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _today(now: datetime | None = None) -> date:
    return timeutil.as_utc(now or timeutil.utcnow()).date()


def _in_force_row(session, today: date):
    A = StudyAmendment
    return session.execute(
        select(A.id, A.label, A.overrides)
        .where(A.status == "approved", A.effective_date <= today)
        .order_by(A.effective_date.desc(), A.id.desc())
        .limit(1)
    ).first()


def _next_effective(session, today: date) -> date | None:
    A = StudyAmendment
    return session.execute(
        select(func.min(A.effective_date)).where(A.status == "approved", A.effective_date > today)
    ).scalar()


def _study_of(row) -> Study:
    return _amended(row.id, row.label, json.dumps(row.overrides, sort_keys=True)) if row else STUDY


def study_in_force(session: Session | None = None, now: datetime | None = None) -> Study:
    """The definition in force, read in the caller's transaction (no per-process cache):
    what a rule that stores its judgement must use (issue 11)."""
    session = session if session is not None else db.session
    return _study_of(_in_force_row(session, _today(now)))


def definition(amendment: StudyAmendment) -> Study:
    """The definition an amendment sets (whatever its status)."""
    return _amended(amendment.id, amendment.label, json.dumps(amendment.overrides, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _amended(amendment_id: int, version: str, overrides_json: str) -> Study:
    """Amendments never change once written: each is built once per process."""
    return apply(json.loads(overrides_json), version=version)


#: database URL -> (monotonic read time, UTC read time, UTC end of validity or None, study)
_IN_FORCE: dict[str, tuple[float, datetime, datetime | None, Study]] = {}
REFRESH_SECONDS = 5.0


def current_study() -> Study:
    """The definition in force now (cached for the request, and per process for a few
    seconds, never past the next effective date; the process that records an amendment
    sees it at once)."""
    if not has_app_context():
        return STUDY
    if "cellstudy_study" not in g:
        key = str(db.engine.url)
        cached = _IN_FORCE.get(key)
        now = timeutil.as_utc(timeutil.utcnow())
        if (
            cached is None
            or time.monotonic() - cached[0] > REFRESH_SECONDS
            or now < cached[1]
            or (cached[2] is not None and now >= cached[2])
        ):
            today = now.date()
            study = _study_of(_in_force_row(db.session, today))
            upcoming = _next_effective(db.session, today)
            cached = (time.monotonic(), now, effective_moment(upcoming) if upcoming else None, study)
            _IN_FORCE[key] = cached
        g.cellstudy_study = cached[3]
    return g.cellstudy_study


def invalidate_cache() -> None:
    """Drop this process's cached definition (after an approval, withdrawal or coming into force)."""
    if has_app_context():
        g.pop("cellstudy_study", None)
        _IN_FORCE.pop(str(db.engine.url), None)
