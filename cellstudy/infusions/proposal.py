"""The one judgement of an infusion date (PROTOCOL 5.2 lockouts + the 5.3 stagger): what
the scheduling screen shows for a proposed date, what is stored for every planned
infusion (judgement.py) and what the administration gate checks. The lockout rules are
pure (`lockouts`, `schedule`); this module gathers their input from the subject."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from ..enrollment.models import Exposure, Subject
from ..settings import current_study
from ..timeutil import site_date
from . import lockouts, schedule
from .models import Infusion
from .stagger import stagger_effects, stagger_lockout

if TYPE_CHECKING:
    from ..study import Study

# PROTOCOL 5.2: before the first infusion the eligibility codes cannot be overridden.
ELIGIBILITY_CODES = frozenset((*lockouts.WASHOUT_CODES, lockouts.VACCINE))


# --- facts about a subject ---------------------------------------------------------------


def active_infusions(subject: Subject, exclude: Infusion | None = None) -> list[Infusion]:
    return [i for i in subject.infusions if i.state != "cancelled" and i is not exclude]


def first_infusion_date(subject: Subject) -> date | None:
    """The anchor of the schedule: infusion 1 (given or scheduled), else the planned
    first infusion date of the screening form."""
    infusions = active_infusions(subject)
    if infusions:
        return min(i.date for i in infusions)
    screening = subject.current_screening
    planned = (screening.data or {}).get("first_infusion_date") if screening else None
    return date.fromisoformat(planned) if planned else None


def lockout_exposures(subject: Subject, study: Study | None = None) -> list[dict]:
    """The subject's exposure log as lockout input: categories of the washout table,
    with a last date (an undated entry cannot be judged: it is listed as missing data
    on the scheduling screen instead)."""
    study = study or current_study()
    out = []
    for e in subject.active_exposures:
        if e.category in study.exposure_categories and e.last_date is not None:
            out.append(
                {
                    "category": e.category,
                    "name": e.name,
                    "last_date": e.last_date,
                    "half_life_days": Decimal(e.half_life_days) if e.half_life_days else None,
                    "physiological_replacement": bool(e.physiological_replacement),
                }
            )
    return out


def undated_exposures(subject: Subject, study: Study | None = None) -> list[Exposure]:
    study = study or current_study()
    return [
        e
        for e in subject.active_exposures
        if e.category in study.exposure_categories and e.last_date is None and study.washout(e.category).blocks
    ]


def open_adverse_events(subject: Subject) -> list[dict]:
    """PROTOCOL 5.2 toxicity hold input: the subject's open adverse events (issue 4)."""
    # inside the function: a cross-feature read (adverse events import this feature's models
    # and fields); the layering is left to issue 12's layer contract
    from ..adverse_events.service import open_for_lockouts

    return open_for_lockouts(subject)


def lockout_case(subject: Subject, proposed: date, exclude: Infusion | None = None, study: Study | None = None) -> dict:
    """The lockout checker's case. A new infusion is judged after every other infusion
    (PROTOCOL 5.2); a rescheduled one after the infusions that stay before it, its later
    neighbours being checked separately (`_later_neighbours`)."""
    dates = [i.date for i in active_infusions(subject, exclude)]
    if exclude is not None:
        dates = [d for d in dates if d < proposed]
    return {
        "proposed_date": proposed,
        "infusion_dates": dates,
        "exposures": lockout_exposures(subject, study),
        "open_adverse_events": open_adverse_events(subject),
    }


def _later_neighbours(subject: Subject, proposed: date, exclude: Infusion, study) -> dict | None:
    """Moving an infusion must keep the minimum interval to the infusions after it too."""
    gap = study.regimen.min_interval_days
    close = [
        i.date for i in active_infusions(subject, exclude) if i.date >= proposed and (i.date - proposed).days < gap
    ]
    if not close:
        return None
    return {
        "code": "min_interval",
        "until": None,
        "reason": f"the next infusion is on {min(close).isoformat()}: infusions must be at least {gap} days "
        "apart (move or cancel that infusion first)",
    }


def evaluate_proposal(
    subject: Subject,
    proposed: date,
    exclude: Infusion | None = None,
    with_earliest: bool = True,
    *,
    study: Study | None = None,
    level_firsts: dict[int, date] | None = None,
) -> dict:
    """The one judgement of an infusion date (PROTOCOL 5.2 lockouts + the 5.3 stagger):
    what the scheduling screen shows for a proposed date (a new infusion, or `exclude`
    moved to that date), and what is stored for every planned infusion (judgement.py).
    `study` is the definition to judge under (default: the one in force for the request)."""
    study = study or current_study()
    case = lockout_case(subject, proposed, exclude, study)
    result = lockouts.check(case, study=study)
    is_first = not case["infusion_dates"]
    blocks = list(result["lockouts"])
    if exclude is not None:
        later = _later_neighbours(subject, proposed, exclude, study)
        if later and not any(lo["code"] == "min_interval" for lo in blocks):
            blocks.append(later)
    stagger = stagger_lockout(subject, proposed, is_first, study, level_firsts)
    if stagger:
        blocks.append(stagger)
    # what scheduling this date would do to the level's other subjects: for the screen only
    effects = (
        stagger_effects(subject, proposed, study, level_firsts) if with_earliest and is_first and not stagger else []
    )
    earliest = (
        lockouts.earliest_clear_date(case, study=study)
        if with_earliest and blocks
        else (proposed if not blocks else None)
    )
    if stagger and earliest is not None:
        earliest = max(earliest, date.fromisoformat(stagger["until"]))
    if exclude is not None and any(lo["until"] is None for lo in blocks):
        earliest = None
    number = exclude.number if exclude is not None else len(case["infusion_dates"]) + 1
    others = [i.date for i in active_infusions(subject, exclude)]
    anchor = min(others + [proposed]) if number != 1 else proposed
    deviation = (
        schedule.target_deviation(number, anchor, proposed, study)
        if 1 < number <= study.regimen.infusion_count
        else None
    )
    latest = max(case["infusion_dates"], default=None)
    enrolled = site_date(subject.enrolled_at, subject.site) if subject.enrolled_at else None
    if enrolled and proposed < enrolled:
        blocks.insert(
            0,
            {
                "code": "before_enrolment",
                "until": enrolled.isoformat(),
                "reason": f"the subject was enrolled on {enrolled.isoformat()}: an infusion cannot precede enrolment",
            },
        )
    return {
        "proposed": proposed,
        "number": number,
        "is_first": is_first,
        "lockouts": blocks,
        "allowed": not blocks,
        "earliest": earliest,
        "target_deviation": deviation,
        "vaccination_window": result["vaccination_window"],
        "overridable": [lo["code"] for lo in blocks if _overridable(lo, is_first, proposed, latest)],
        "undated": undated_exposures(subject, study),
        "study_version": study.version,
        "stagger_effects": effects,
    }


def _overridable(lockout: dict, is_first: bool, proposed: date, latest: date | None) -> bool:
    """PROTOCOL 5.2: before the first infusion the eligibility codes cannot be overridden.
    Neither can what is bad input rather than a judgement: a second infusion on the same
    day (or before the latest), more infusions than the protocol has, or an infusion before
    enrolment."""
    code = lockout["code"]
    if is_first and code in ELIGIBILITY_CODES:
        return False
    if code in ("max_infusions", "before_enrolment"):
        return False
    if code == "min_interval" and (lockout["until"] is None or (latest is not None and proposed <= latest)):
        return False
    return True


def covered(lockout_list: list[dict]) -> list[dict]:
    """What an override's signature covers: each lockout's code and reason as shown."""
    return [{"code": lo["code"], "reason": lo["reason"]} for lo in lockout_list]
