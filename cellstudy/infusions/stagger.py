"""PROTOCOL 5.3 sentinel stagger (amended 2026-12-02): the first infusions of a dose level
read from the database, the stagger hold they put on a proposed first infusion, and what
a first infusion would do to the level's other subjects. The rule itself is pure
(`escalation.sentinel_stagger`)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..enrollment.models import Subject
from ..extensions import db
from ..settings import current_study
from . import escalation
from .models import Infusion

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..study import Study


def first_infusions_of_level(
    level: str, session: Session | None = None, earliest: int | None = None
) -> dict[int, date]:
    """PROTOCOL 5.3: each subject of a dose level with a first infusion, and its date (the
    earliest infusion not cancelled, given or planned), in date order (ties: subject id).

    An infusion is recorded as given on its planned date (save_infusion refuses any other
    date: reschedule first), so the planned date is the date that counts for both. With
    `earliest`, only that many subjects: the sentinel stagger needs only the two earliest
    (the sentinel, and the sentinel of the others when a subject is the sentinel itself)."""
    session = session if session is not None else db.session
    first = func.min(Infusion.planned_date)
    stmt = (
        select(Infusion.subject_id, first)
        .join(Subject, Subject.id == Infusion.subject_id)
        .where(Subject.dose_level == level, Infusion.state != "cancelled")
        .group_by(Infusion.subject_id)
        .order_by(first, Infusion.subject_id)
    )
    if earliest is not None:
        stmt = stmt.limit(earliest)
    return {subject_id: day for subject_id, day in session.execute(stmt)}


def stagger_lockout(
    subject: Subject,
    proposed: date,
    is_first: bool,
    study: Study | None = None,
    level_firsts: dict[int, date] | None = None,
) -> dict | None:
    """PROTOCOL 5.3 sentinel stagger (amended 2026-12-02), shown beside the lockouts as code
    `stagger`: the sentinel is the level's subject with the earliest first infusion; no other
    subject of the level may have a first infusion before the sentinel's + N days.
    `level_firsts` ({subject id: first infusion date} of the level) saves the query when
    many infusions are judged at once."""
    days = (study or current_study()).regimen.sentinel_stagger_days
    if not days or not is_first or not subject.dose_level:
        return None
    if level_firsts is None:
        level_firsts = first_infusions_of_level(subject.dose_level, earliest=2)
    others = [(day, sid) for sid, day in level_firsts.items() if sid != subject.id]
    held = escalation.sentinel_stagger(proposed, subject.id, others, days)
    if held is None:
        return None
    sentinel = db.session.get(Subject, held.sentinel_key)
    name = sentinel.label if sentinel is not None else f"subject {held.sentinel_key}"
    return {
        "code": "stagger",
        "until": held.until.isoformat(),
        "reason": f"Sentinel stagger: {name} is the sentinel of {subject.dose_level} (first infusion "
        f"{held.sentinel_date.isoformat()}); other subjects of the level may have their first "
        f"infusion from {held.until.isoformat()}, {days} days later.",
    }


def stagger_effects(
    subject: Subject, proposed: date, study: Study, level_firsts: dict[int, date] | None = None
) -> list[str]:
    """A first infusion on `proposed` that would make this subject its level's sentinel holds
    the other subjects of the level whose first infusion falls inside the stagger: said
    before scheduling, since their planned infusions would then be locked (PROTOCOL 5.3)."""
    days = study.regimen.sentinel_stagger_days
    if not days or not subject.dose_level:
        return []
    if level_firsts is None:
        level_firsts = first_infusions_of_level(subject.dose_level)
    others = sorted((day, sid) for sid, day in level_firsts.items() if sid != subject.id)
    if not others or (proposed, subject.id) > others[0]:
        return []  # another subject stays the sentinel
    until = proposed + timedelta(days=days)
    held = [(day, sid) for day, sid in others if day < until]
    labels = (
        {
            sid: label
            for sid, label in db.session.execute(
                select(Subject.id, Subject.label).where(Subject.id.in_([sid for _, sid in held]))
            )
        }
        if held
        else {}
    )
    return [f"{labels.get(sid, sid)} (first infusion {day.isoformat()})" for day, sid in held]
