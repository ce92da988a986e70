"""Dose levels and escalation (PROTOCOL 5.3): the DLT assessment signed by the
investigator, the counts per level and the decision (`escalation`, pure), the signed
escalation review, and the level proposed and assigned at enrolment."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..enrollment.models import Subject
from ..extensions import db
from ..records import service as records
from ..records.service import InvalidForm, RecordError
from ..settings import current_study
from ..timeutil import utcnow
from . import escalation
from .deviations import record_deviation
from .entry import save_crf
from .fields import DLT_FIELDS
from .models import DltAssessment, EscalationReview

if TYPE_CHECKING:
    from ..auth.models import User

DLT_MEANING = "I confirm this dose-limiting toxicity assessment"
REVIEW_MEANING = "I have reviewed the dose-escalation data and approve this decision"


# --- the DLT assessment --------------------------------------------------------------------


def dlt_window_end(subject: Subject) -> date | None:
    given = [i.date for i in subject.infusions if i.state == "given"]
    if not given:
        return None
    return min(given) + timedelta(days=current_study().regimen.dlt_window_days)


def dlt_form(subject: Subject, *, user: User) -> DltAssessment:
    """The subject's DLT assessment, created (uncommitted) at its first save."""
    if subject.dlt_assessment is not None:
        return subject.dlt_assessment
    form = DltAssessment(subject_id=subject.id, status="draft", data={}, created_at=utcnow(), updated_at=utcnow())
    records.create(form, user=user, fields={})
    return form


@records.transaction()
def save_dlt(
    form: DltAssessment,
    values: dict,
    *,
    user: User,
    expected_version: int,
    reason: str | None,
    complete: bool,
    password: str | None,
    today: date | None = None,
    window_end: date | None = None,
) -> dict:
    """The DLT assessment; completing it is the investigator's e-signature."""

    def consistent(merged):
        errors = {}
        # PROTOCOL 5.3: evaluable = completed the DLT window or had a DLT. Signing a subject
        # evaluable without DLT before the window ends would count toward escalation too early.
        if (
            complete
            and merged.get("evaluable")
            and not merged.get("dlt")
            and today
            and window_end
            and today < window_end
        ):
            errors["evaluable"] = (
                f"The DLT window ends on {window_end.isoformat()}: without a DLT the subject "
                "becomes evaluable once the window is completed."
            )
        if merged.get("dlt") and merged.get("evaluable") is False:
            errors["evaluable"] = "A subject with a DLT is evaluable (PROTOCOL 5.3)."
        if merged.get("evaluable") is False and not merged.get("evaluable_reason"):
            errors["evaluable_reason"] = "Give the reason the subject is not evaluable."
        if merged.get("dlt") and not merged.get("dlt_description"):
            errors["dlt_description"] = "Describe the DLT."
        return errors

    def required(merged):
        return ["evaluable", "dlt"]

    if complete and not password:
        raise InvalidForm({"password": "The investigator signs the DLT assessment: enter your password."})
    changed = save_crf(
        form,
        DLT_FIELDS,
        values,
        user=user,
        expected_version=expected_version,
        reason=reason,
        complete=complete,
        required=required,
        checks=(consistent,),
    )
    if complete:
        records.sign(form, user=user, password=password, meaning=DLT_MEANING)
    return changed


# --- dose escalation --------------------------------------------------------------------------


def escalation_counts() -> list[dict]:
    """Per dose level (study-wide): assigned, evaluable, DLT, pending, from the DLT forms
    (a subject with a DLT is evaluable at once)."""
    study = current_study()
    # every assigned subject with its DLT form and infusions in three queries, not per subject
    subjects = (
        db.session.execute(
            select(Subject)
            .where(Subject.dose_level.is_not(None))
            .options(selectinload(Subject.dlt_assessment), selectinload(Subject.infusions))
        )
        .scalars()
        .all()
    )
    levels = {
        lv.name: {
            "level": lv.name,
            "evaluable": 0,
            "dlt": 0,
            "pending": 0,
            "assigned": 0,
            "not_evaluable": 0,
            "subjects": [],
        }
        for lv in study.regimen.dose_levels
    }
    for subject in subjects:
        row = levels.get(subject.dose_level)
        if row is None:
            continue
        data = (subject.dlt_assessment.data or {}) if subject.dlt_assessment else {}
        signed = subject.dlt_assessment is not None and subject.dlt_assessment.status == "complete"
        row["assigned"] += 1
        if data.get("dlt") and signed:
            row["dlt"] += 1
            row["evaluable"] += 1
            state = "DLT"
        elif signed and data.get("evaluable"):
            row["evaluable"] += 1
            state = "evaluable"
        elif signed and data.get("evaluable") is False:
            row["not_evaluable"] += 1
            state = "not evaluable"
        else:
            row["pending"] += 1
            state = "pending"
        row["subjects"].append({"subject": subject, "state": state, "window_end": dlt_window_end(subject)})
    return list(levels.values())


def escalation_decision() -> dict:
    counts = escalation_counts()
    return escalation.decide([{k: row[k] for k in ("level", "evaluable", "dlt", "pending")} for row in counts])


def latest_review() -> EscalationReview | None:
    return db.session.execute(select(EscalationReview).order_by(EscalationReview.id.desc()).limit(1)).scalar()


def reviews() -> list[EscalationReview]:
    """Every signed dose-escalation review, the latest first."""
    return db.session.execute(select(EscalationReview).order_by(EscalationReview.id.desc())).scalars().all()


def proposed_dose_level() -> tuple[str | None, str]:
    """The dose level enrolment proposes, and why (PROTOCOL 5.3). An escalation opens
    the next level only after the investigator has signed the review of that decision."""
    decision = escalation_decision()
    if decision["decision"] == "enrol":
        return decision["level"], decision["reason"]
    if decision["decision"] == "escalate":
        review = latest_review()
        if review and review.decision == "escalate" and review.level == decision["level"]:
            return decision["level"], decision["reason"] + " (review signed)"
        return None, decision["reason"] + ": the next level opens when the dose-escalation review is signed"
    return None, decision["reason"]


@records.transaction()
def sign_review(*, user: User, password: str, comment: str | None) -> EscalationReview:
    decision = escalation_decision()
    counts = [{k: row[k] for k in ("level", "evaluable", "dlt", "pending")} for row in escalation_counts()]
    review = EscalationReview(
        decision=decision["decision"],
        level=decision["level"] or decision["mtd"],
        counts=counts,
        reason=decision["reason"],
        comment=(comment or "").strip() or None,
        created_at=utcnow(),
    )
    db.session.add(review)
    db.session.flush()
    signature = records.sign(review, user=user, password=password, meaning=REVIEW_MEANING)
    review.signature_id = signature.id
    return review


class DoseLevelRefused(RecordError):
    field = "dose_level"


def check_dose_level(level: str | None, reason: str | None) -> None:
    """Before anything is written: a known level, and a reason when it is not the proposed one."""
    names = [lv.name for lv in current_study().regimen.dose_levels]
    if level not in names:
        raise DoseLevelRefused("Choose the subject's dose level.")
    proposed, why = proposed_dose_level()
    if level != proposed and not (reason or "").strip():
        raise DoseLevelRefused(
            f"The proposed dose level is {proposed or 'none'} ({why}): give a reason for assigning {level}."
        )


def assign_dose_level(subject: Subject, level: str | None, reason: str | None, *, user: User) -> None:
    """At enrolment: the investigator's dose level; one other than proposed needs a reason
    and is listed as a deviation (PROTOCOL 5.3). Called inside the enrolment transaction,
    after check_dose_level."""
    proposed, why = proposed_dose_level()
    records.set_value(
        subject, "dose_level", level, user=user, form="subject", reason=None if level == proposed else reason.strip()
    )
    if level != proposed:
        record_deviation(
            subject,
            kind="dose_level_assignment",
            description=f"Assigned {level}; the escalation rule proposed {proposed or 'no level'} ({why}).",
            reason=reason.strip(),
            user=user,
            form="subject",
            form_id=subject.id,
        )
