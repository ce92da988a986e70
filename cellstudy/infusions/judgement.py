"""Every planned infusion judged, and kept judged (issue 11).

A planned (scheduled, not yet given) infusion carries a stored judgement: the lockouts of
PROTOCOL 5.2 and the sentinel stagger of 5.3 for its planned date, from the one judgement
function `proposal.evaluate_proposal`. Pages read the stored judgement (`InfusionJudgement`,
listed by `locked_planned`); they never recompute it per row.

It is kept current by the write path's hooks (records/hooks.py), not by calls in the
services: the write hook notes, for every row a transaction writes, which subjects' planned
infusions the change can affect; just before the transaction commits, those infusions are
judged again under the study definition in force read in that same transaction, and the
result is stored in it. What a change can affect:

- an exposure, an adverse event (or its grade episodes), a CRS/ICANS assessment, an
  infusion, or the subject itself (enrolment, dose level): that subject's planned infusions;
- an infusion number 1 (its date, its state) or a subject's dose level: also the planned
  first infusions of every subject of that dose level (the stagger);
- a study amendment coming into force (its `in_force_at` written): every planned infusion.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, text
from sqlalchemy.orm import Session, joinedload, selectinload

from ..auth.policy import Sites, scoped
from ..enrollment.models import Subject
from ..extensions import db
from ..records import hooks
from ..records.transaction import transaction
from ..settings import study_in_force
from ..timeutil import utcnow
from . import proposal, stagger
from .lockouts import LOCKOUT_LABELS
from .models import Infusion, InfusionJudgement

if TYPE_CHECKING:
    from flask import Flask

    from ..study import Study

_PENDING = "cellstudy_rejudge"
# rows whose change can change the lockouts of their subject's planned infusions
_SUBJECT_FACTS = frozenset({"Exposure", "AdverseEvent", "CrsAssessment", "IcansAssessment", "Infusion"})
_CHUNK = 500


def _pending(session: Session) -> dict:
    return session.info.setdefault(_PENDING, {"subjects": set(), "levels": set(), "all": False})


def request_rejudge_all(session: Session) -> None:
    """Judge every planned infusion again at this transaction's commit."""
    _pending(session)["all"] = True


def request_rejudge(session: Session, subject_ids: Iterable[int] = (), levels: Iterable[str] = ()) -> None:
    pending = _pending(session)
    pending["subjects"].update(i for i in subject_ids if i is not None)
    pending["levels"].update(lv for lv in levels if lv)


def _history_values(obj, name: str) -> set:
    history = sa_inspect(obj).attrs[name].history
    return {v for v in (*history.added, *history.deleted, *history.unchanged) if v is not None}


def _noted(session: Session, obj, created: bool, deleted: bool) -> None:
    """The write hook: note what the written row can affect (no reads, no writes)."""
    name = type(obj).__name__
    if name == "StudyAmendment":
        # an amendment changes the judgements when it comes into force (or stops being in
        # force), not while it is proposed, approved for a later date, rejected or withdrawn
        if sa_inspect(obj).attrs.in_force_at.history.has_changes() or deleted:
            request_rejudge_all(session)
    elif name == "Subject":
        levels = (
            _history_values(obj, "dose_level")
            if (created or sa_inspect(obj).attrs.dose_level.history.has_changes())
            else ()
        )
        request_rejudge(session, [obj.id], levels)
    elif name in _SUBJECT_FACTS:
        levels = ()
        if name == "Infusion" and obj.number == 1:
            levels = {obj.dose_level} | ({obj.subject.dose_level} if obj.subject is not None else set())
        request_rejudge(session, [obj.subject_id or (obj.subject.id if obj.subject is not None else None)], levels)
    elif name == "GradeEpisode":
        ae = obj.adverse_event
        if ae is not None:
            request_rejudge(session, [ae.subject_id])


_LEVEL_LOCK_NAMESPACE = 7_220_118  # pg_advisory_xact_lock(namespace, level): see lock_levels


def lock_levels(session: Session, levels: Iterable[str | None]) -> None:
    """Serialise the transactions that can change a dose level's stagger (PostgreSQL; SQLite's
    write transactions are exclusive already). Taken, in name order, at the start of every
    infusion write (scheduling.lock_subject) and before the judges lock subject rows, so that a
    first infusion being scheduled and an amendment re-judging everything (or two first
    infusions of one level) wait for each other instead of deadlocking on the subjects."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for level in sorted({lv for lv in levels if lv}):
        key = zlib.crc32(level.encode()) - 2**31  # a signed 32-bit int
        session.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": _LEVEL_LOCK_NAMESPACE, "key": key})


def _rejudge(session: Session) -> None:
    """The commit hook: judge the noted planned infusions again, in this transaction."""
    pending = session.info.pop(_PENDING, None)
    if not pending or not (pending["all"] or pending["subjects"] or pending["levels"]):
        return
    study = study_in_force(session)
    lock_levels(session, [lv.name for lv in study.regimen.dose_levels] if pending["all"] else pending["levels"])
    if pending["all"]:
        ids = set(session.execute(select(Infusion.subject_id).where(Infusion.state == "scheduled")).scalars())
        ids |= set(session.execute(select(InfusionJudgement.subject_id)).scalars())
    else:
        ids = set(pending["subjects"])
        if pending["levels"] and study.regimen.sentinel_stagger_days:
            # the planned first infusions of those levels: subjects with nothing given yet
            given = select(Infusion.subject_id).where(Infusion.state == "given")
            ids |= set(
                session.execute(
                    select(Infusion.subject_id)
                    .join(Subject, Subject.id == Infusion.subject_id)
                    .where(
                        Subject.dose_level.in_(pending["levels"]),
                        Infusion.state == "scheduled",
                        Infusion.subject_id.not_in(given),
                    )
                ).scalars()
            )
    judge_subjects(session, sorted(ids), study)


def judge_subjects(session: Session, subject_ids: list[int], study: Study) -> int:
    """Judge (and store) every planned infusion of these subjects; drop the judgements of
    infusions no longer planned. Returns how many planned infusions were judged."""
    level_firsts: dict[str, dict] = {}
    judged = 0
    for start in range(0, len(subject_ids), _CHUNK):
        chunk = subject_ids[start : start + _CHUNK]
        # Serialise with any other transaction judging these subjects (PostgreSQL; SQLite's
        # write transactions are exclusive already): the facts are read after the lock, so a
        # concurrent change committed meanwhile is seen and its judgement is not overwritten
        # by one made without it. In id order: two judges never wait on each other in a cycle.
        session.execute(
            select(Subject.id).where(Subject.id.in_(chunk)).order_by(Subject.id).with_for_update(key_share=True)
        )  # FOR NO KEY UPDATE: inserts referencing the subject pass
        subjects = (
            session.execute(
                select(Subject)
                .where(Subject.id.in_(chunk))
                .options(
                    selectinload(Subject.infusions).joinedload(Infusion.judgement),
                    selectinload(Subject.exposures),
                    selectinload(Subject.adverse_events),
                    joinedload(Subject.site),
                )
                .execution_options(populate_existing=True)
            )
            .scalars()
            .all()
        )
        for subject in subjects:
            for infusion in subject.infusions:
                if infusion.state != "scheduled":
                    if infusion.judgement is not None:
                        session.delete(infusion.judgement)
                    continue
                firsts = None
                if subject.dose_level and study.regimen.sentinel_stagger_days:
                    if subject.dose_level not in level_firsts:
                        level_firsts[subject.dose_level] = stagger.first_infusions_of_level(
                            subject.dose_level, session, earliest=2
                        )
                    firsts = level_firsts[subject.dose_level]
                evaluation = proposal.evaluate_proposal(
                    subject,
                    infusion.planned_date,
                    exclude=infusion,
                    with_earliest=False,
                    study=study,
                    level_firsts=firsts,
                )
                _store(
                    session,
                    subject,
                    infusion,
                    mark_overrides(evaluation["lockouts"], infusion.override_lockouts, evaluation["overridable"]),
                    study.version,
                )
                judged += 1
    return judged


def mark_overrides(
    lockout_list: list[dict], override_lockouts: list[dict] | None, overridable: list[str] = ()
) -> list[dict]:
    """Each lockout with `overridden`: covered by the infusion's signed override (same code
    and reason: a lockout that changed or appeared since is not covered), and whether an
    investigator may override it (PROTOCOL 5.2)."""
    covered = {(lo["code"], lo["reason"]) for lo in (override_lockouts or ())}
    return [
        {
            "code": lo["code"],
            "until": lo["until"],
            "reason": lo["reason"],
            "overridden": (lo["code"], lo["reason"]) in covered,
            "overridable": lo["code"] in overridable,
        }
        for lo in lockout_list
    ]


def _store(session: Session, subject, infusion, marked: list[dict], version: str) -> None:
    locked = any(not lo["overridden"] for lo in marked)
    row = infusion.judgement
    if row is None:
        session.add(
            InfusionJudgement(
                infusion_id=infusion.id,
                subject_id=subject.id,
                site_id=subject.site_id,
                number=infusion.number,
                planned_date=infusion.planned_date,
                locked=locked,
                lockouts=marked,
                study_version=version,
                judged_at=utcnow(),
            )
        )
        return
    if (row.lockouts, row.locked, row.study_version, row.planned_date, row.number, row.site_id) != (
        marked,
        locked,
        version,
        infusion.planned_date,
        infusion.number,
        subject.site_id,
    ):
        row.lockouts, row.locked, row.study_version = marked, locked, version
        row.planned_date, row.number, row.site_id = infusion.planned_date, infusion.number, subject.site_id
        row.judged_at = utcnow()


def locked_planned(sites: Sites) -> list[InfusionJudgement]:
    """Planned infusions now locked (issue 11): their stored judgements, soonest first."""
    stmt = (
        select(InfusionJudgement)
        .where(InfusionJudgement.locked.is_(True))
        .options(joinedload(InfusionJudgement.subject).joinedload(Subject.site), joinedload(InfusionJudgement.infusion))
        .order_by(InfusionJudgement.planned_date, InfusionJudgement.infusion_id)
    )
    stmt = scoped(stmt, InfusionJudgement.site_id, sites)
    return db.session.execute(stmt).scalars().all()


def rejudge_everything(session: Session) -> int:
    """Judge every planned infusion now (after a bulk import that bypassed the ORM, or on an
    installation upgraded to issue 11), in a transaction of its own. Returns how many were judged."""
    with transaction():
        ids = sorted(set(session.execute(select(Infusion.subject_id).where(Infusion.state == "scheduled")).scalars()))
        return judge_subjects(session, ids, study_in_force(session))


def init_app(app: Flask) -> None:
    """Register the re-judging with the write path (called by the application factory)."""
    hooks.on_write(_noted)
    hooks.before_commit(_rejudge)
    app.jinja_env.globals["lockout_labels"] = LOCKOUT_LABELS

    @app.cli.command("rejudge-infusions")
    def rejudge_infusions_command():
        """Judge every planned infusion again and store the judgements (issue 11)."""
        click.echo(f"{rejudge_everything(db.session)} planned infusions judged.")
