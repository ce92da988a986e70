"""Scheduling the NK-cell infusions (PROTOCOL 5, issue 3): schedule, reschedule and cancel
an infusion on the judgement of its date (proposal.py), an investigator's signed override
of a lockout, and the visit schedule anchored on the first infusion (PROTOCOL 5.1). Every
write goes through `records`."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from ..auth.policy import can
from ..enrollment.models import Subject
from ..extensions import db
from ..records import service as records
from ..records.service import RecordError
from ..settings import current_study
from ..timeutil import utcnow
from . import proposal, schedule
from .deviations import record_deviation
from .judgement import lock_levels
from .lockouts import LOCKOUT_LABELS
from .models import Infusion, LymphodepletionDay, Visit
from .proposal import covered

if TYPE_CHECKING:
    from ..auth.models import User

TREATMENT_STATUSES = ("enrolled", "on_treatment")
OVERRIDE_MEANING = "I authorise this infusion despite the lockouts listed, for the reason given"


class SchedulingRefused(RecordError):
    field = "proposed_date"

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result


def lock_subject(subject: Subject) -> None:
    """Serialise scheduling for one subject: two coordinators scheduling at once cannot
    both take infusion n; the second sees the first's infusion (a lockout or a conflict).
    On SQLite every write transaction is already exclusive (BEGIN IMMEDIATE)."""
    lock_levels(db.session, [subject.dose_level])  # the stagger: see judgement.lock_levels
    records.lock(subject)
    db.session.expire(subject, ["infusions"])


def _require_treatment(subject: Subject) -> None:
    if subject.status not in TREATMENT_STATUSES:
        raise SchedulingRefused(
            f"Infusions are scheduled for enrolled subjects; this subject is {subject.status.replace('_', ' ')}."
        )


def _authorise(subject, evaluation, *, user, override_reason, password, record) -> object | None:
    """Lockouts block a date; an investigator may override the overridable ones with an
    e-signature and a reason (PROTOCOL 5.2). Returns the override signature or None."""
    if evaluation["allowed"]:
        return None
    codes = [lo["code"] for lo in evaluation["lockouts"]]
    hard = [LOCKOUT_LABELS.get(c, c) for c in codes if c not in evaluation["overridable"]]
    labels = [LOCKOUT_LABELS.get(c, c) for c in codes]
    details = " " + " ".join(
        f"{LOCKOUT_LABELS.get(lo['code'], lo['code'])}: {lo['reason']}." for lo in evaluation["lockouts"]
    )
    if hard:
        raise SchedulingRefused(
            "This date is locked out (" + ", ".join(hard) + ") and that cannot be overridden: "
            "before the first infusion the eligibility washouts cannot be overridden, nor can "
            "a second infusion on the same day, more infusions than the protocol has, or an "
            "infusion before enrolment. Choose another date." + details,
            evaluation,
        )
    if not override_reason or not password:
        raise SchedulingRefused(
            "This date is locked out (" + ", ".join(labels) + "). An investigator can override "
            "with a reason and an e-signature." + details,
            evaluation,
        )
    if not can("sign_eligibility", user):
        raise SchedulingRefused("Only an investigator can override a lockout.", evaluation)
    signature = records.sign(record, user=user, password=password, meaning=OVERRIDE_MEANING)
    return signature


@records.transaction()
def schedule_infusion(
    subject: Subject,
    proposed: date,
    *,
    user: User,
    deviation_reason: str | None = None,
    override_reason: str | None = None,
    password: str | None = None,
) -> Infusion:
    lock_subject(subject)
    _require_treatment(subject)
    evaluation = proposal.evaluate_proposal(subject, proposed)
    if evaluation["target_deviation"] and not (deviation_reason or "").strip():
        raise SchedulingRefused(evaluation["target_deviation"] + " Give a deviation reason.", evaluation)
    study = current_study()
    infusion = Infusion(
        subject_id=subject.id,
        number=evaluation["number"],
        planned_date=proposed,
        state="scheduled",
        dose_level=subject.dose_level,
        status="draft",
        data={},
        created_at=utcnow(),
        updated_at=utcnow(),
        target_deviation_reason=(deviation_reason or "").strip() or None,
    )
    if evaluation["number"] > study.regimen.infusion_count and evaluation["allowed"]:
        raise SchedulingRefused("Every protocol infusion is already scheduled or given.", evaluation)
    records.create(
        infusion,
        user=user,
        fields={"number": infusion.number, "planned_date": proposed, "dose_level": subject.dose_level},
    )
    signature = _authorise(
        subject, evaluation, user=user, override_reason=override_reason, password=password, record=infusion
    )
    _note_deviations(
        subject,
        infusion,
        evaluation,
        user=user,
        deviation_reason=deviation_reason,
        override_reason=override_reason,
        signature=signature,
    )
    if evaluation["is_first"]:
        anchor_schedule(subject, proposed, user=user)
    return infusion


def _note_deviations(subject, infusion, evaluation, *, user, deviation_reason, override_reason, signature):
    # the override covers exactly the lockouts it was signed for (judgement.py)
    infusion.override_lockouts = covered(evaluation["lockouts"]) if signature is not None else None
    if signature is not None:
        infusion.override_reason = override_reason.strip()
        infusion.override_signature_id = signature.id
        record_deviation(
            subject,
            kind="lockout_override",
            description=f"Infusion {infusion.number} on {infusion.planned_date.isoformat()} despite: "
            + "; ".join(lo["reason"] for lo in evaluation["lockouts"]),
            reason=override_reason.strip(),
            user=user,
            form="infusion",
            form_id=infusion.id,
            signature=signature,
        )
    if evaluation["target_deviation"]:
        record_deviation(
            subject,
            kind="infusion_outside_target",
            description=evaluation["target_deviation"],
            reason=deviation_reason.strip(),
            user=user,
            form="infusion",
            form_id=infusion.id,
        )


@records.transaction()
def reschedule(
    infusion: Infusion,
    proposed: date,
    *,
    user: User,
    expected_version: int,
    reason: str,
    deviation_reason: str | None = None,
    override_reason: str | None = None,
    password: str | None = None,
) -> Infusion:
    subject = infusion.subject
    lock_subject(subject)
    if infusion.state != "scheduled":
        raise SchedulingRefused(f"Infusion {infusion.number} is {infusion.state}: it cannot be rescheduled.")
    if infusion.version != expected_version:
        raise records.StaleVersion(infusion)
    if not (reason or "").strip():
        raise records.ReasonRequired()
    evaluation = proposal.evaluate_proposal(subject, proposed, exclude=infusion)
    if evaluation["number"] != infusion.number:
        evaluation["number"] = infusion.number
    if evaluation["target_deviation"] and not (deviation_reason or "").strip():
        raise SchedulingRefused(evaluation["target_deviation"] + " Give a deviation reason.", evaluation)
    signature = _authorise(
        subject, evaluation, user=user, override_reason=override_reason, password=password, record=infusion
    )
    records.save(
        infusion,
        user=user,
        changes={"planned_date": proposed},
        expected_version=expected_version,
        reason=reason.strip(),
    )
    _note_deviations(
        subject,
        infusion,
        evaluation,
        user=user,
        deviation_reason=deviation_reason,
        override_reason=override_reason,
        signature=signature,
    )
    if infusion.number == 1:
        anchor_schedule(subject, proposed, user=user, reason=f"infusion 1 rescheduled: {reason.strip()}")
    return infusion


@records.transaction()
def cancel(infusion: Infusion, *, user: User, expected_version: int, reason: str) -> None:
    lock_subject(infusion.subject)
    if infusion.state != "scheduled":
        raise SchedulingRefused(f"Infusion {infusion.number} is {infusion.state}: it cannot be cancelled.")
    if infusion.version != expected_version:
        raise records.StaleVersion(infusion)
    if not (reason or "").strip():
        raise records.ReasonRequired()
    records.save(
        infusion,
        user=user,
        changes={"state": "cancelled", "cancel_reason": reason.strip()},
        expected_version=expected_version,
        reason=reason.strip(),
    )


# --- the visit schedule -------------------------------------------------------------------


def anchor_schedule(subject: Subject, first: date, *, user: User, reason: str | None = None) -> None:
    """Generate (or shift) the lymphodepletion days and the follow-up visits from the
    first infusion date (PROTOCOL 5.1). Done visits and completed forms keep their dates;
    every shift is audited."""
    study = current_study()
    existing = {v.code: v for v in subject.visits}
    for seq, item in enumerate(schedule.visit_plan(first, study), start=1):
        window = item["window"]
        visit = existing.get(item["code"])
        if visit is None:
            visit = Visit(
                subject_id=subject.id,
                code=item["code"],
                label=item["label"],
                seq=seq,
                target_date=window.target,
                earliest=window.earliest,
                latest=window.latest,
                state="planned",
                status="draft",
                data={},
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            records.create(visit, user=user, fields={"code": visit.code, "target_date": window.target})
        elif visit.state == "planned" and visit.target_date != window.target:
            records.set_value(
                visit,
                "target_date",
                window.target,
                user=user,
                form="visit",
                reason=reason or "schedule re-anchored on the first infusion",
            )
            visit.earliest, visit.latest = window.earliest, window.latest
    days = {d.day: d for d in subject.lymphodepletion_days}
    for item in schedule.lymphodepletion_plan(first, study):
        day = days.get(item["day"])
        if day is None:
            day = LymphodepletionDay(
                subject_id=subject.id,
                day=item["day"],
                planned_date=item["date"],
                status="draft",
                data={},
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            records.create(day, user=user, fields={"day": item["day"], "planned_date": item["date"]})
        elif day.status != "complete" and day.planned_date != item["date"]:
            records.set_value(
                day,
                "planned_date",
                item["date"],
                user=user,
                form="lymphodepletion",
                reason=reason or "schedule re-anchored on the first infusion",
            )


def on_enrolled(subject: Subject, *, user: User) -> None:
    """Generate the schedule at enrolment from the planned first infusion date."""
    first = proposal.first_infusion_date(subject)
    if first is not None:
        anchor_schedule(subject, first, user=user)
