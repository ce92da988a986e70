"""Eligibility after enrolment (issue 11, item 5).

An enrolled subject's eligibility is the signed decision of record: the enrolment decision,
or the latest signed re-confirmation (an EligibilityDecision with outcome "reconfirmed",
kept beside the earlier ones, never overwriting them). Two things can put that decision in
doubt, and each opens an *eligibility review* on the site investigator's worklist:

- ``screening_changed``: the screening form corrected, or a prior-therapy exposure added,
  corrected or removed, after enrolment. Detected by the write path's hooks
  (records/hooks.py), whatever code path wrote the row. An on-study exposure (dated on or
  after the enrolment date, `service.is_on_study`) is a lockout input (PROTOCOL 5.2), not
  screening data: it does not count.
- ``amendment``: an amendment changes an eligibility rule such that the checker, re-run on
  the subject's signed inputs under the new definition, no longer gives the signed outcome
  (`amendment_impact`, `flag_amendment_impact`).

The investigator resolves a review by re-confirming eligibility (offered only when the
checker says eligible for the current screening data; an e-signature) or by recording a
protocol deviation (reason + e-signature). Nobody is ever un-enrolled by this module.

Public API for other features: `open_review`, `amendment_impact`, `flag_amendment_impact`
(none of them commits: the caller's transaction does).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload

from ..auth.policy import Sites, scoped
from .. import registry
from ..extensions import db
from ..records import hooks
from ..records import service as records
from ..records.service import InvalidForm, RecordError, StaleVersion
from ..settings import current_study
from ..timeutil import utcnow
from . import eligibility, service
from .fields import EXPOSURE_CATEGORY_LABELS, FIELDS_BY_NAME
from .models import EligibilityDecision, EligibilityReview, Exposure, Screening, Subject
from ..auth.policy import can
from ..auth.models import User
from ..infusions import deviations as protocol_deviations

if TYPE_CHECKING:
    from flask import Flask

    from ..infusions.models import Deviation
    from ..study import Study

log = logging.getLogger(__name__)

CAUSES = {
    "screening_changed": "Screening data changed after enrolment",
    "amendment": "A study amendment changes an eligibility rule",
}
RESOLUTIONS = {"reconfirmed": "eligibility re-confirmed", "deviation": "protocol deviation recorded"}
# A signed enrolment stands for every status after it; a screening correction of a subject
# who has completed or left the study still puts the basis of its enrolment in doubt.
POST_ENROLMENT = ("enrolled", "on_treatment", "follow_up", "completed", "withdrawn", "died")
# An amendment concerns the subjects still on study.
ON_STUDY = ("enrolled", "on_treatment", "follow_up")
RECORD_OUTCOMES = ("enrolled", "reconfirmed")
RECONFIRM_MEANING = "I re-confirm this subject meets all eligibility criteria for the current screening data"
DEVIATION_MEANING = (
    "I record a protocol deviation: this subject's eligibility is not re-confirmed after the change described"
)
DEVIATION_KIND = "eligibility_not_reconfirmed"
MAX_REASON = 2000
_NOTES = "cellstudy_eligibility_changes"


class ReviewRefused(RecordError):
    pass


# --- reading --------------------------------------------------------------------------------


def decision_of_record(subject: Subject) -> EligibilityDecision | None:
    """The latest signed enrolment or re-confirmation decision of the subject."""
    for decision in reversed(subject.decisions):
        if decision.outcome in RECORD_OUTCOMES:
            return decision
    return None


def signed_result(decision: EligibilityDecision) -> dict:
    """The checker's result as signed (PROTOCOL 4.1 shape)."""
    return {"eligible": {"true": True, "false": False}.get(decision.eligible), "criteria": decision.criteria}


def signed_case(decision: EligibilityDecision) -> dict:
    """The checker's case as signed (the decision's stored inputs, exact values restored)."""
    return service._from_json(decision.inputs)


def reviews_of(subject: Subject) -> list[EligibilityReview]:
    """The subject's reviews, open first, then the resolved ones newest first."""
    rows = (
        db.session.execute(
            select(EligibilityReview)
            .where(EligibilityReview.subject_id == subject.id)
            # selectin: the related rows are read only when there is a review (rarely)
            .options(
                selectinload(EligibilityReview.opened_by),
                selectinload(EligibilityReview.resolved_by),
                selectinload(EligibilityReview.decision),
                selectinload(EligibilityReview.deviation),
            )
            .order_by(EligibilityReview.id.desc())
        )
        .scalars()
        .all()
    )
    return [r for r in rows if r.is_open] + [r for r in rows if not r.is_open]


def open_reviews(sites: Sites) -> list[EligibilityReview]:
    """The open reviews at these sites oldest first: the worklist."""
    stmt = (
        select(EligibilityReview)
        .join(Subject, Subject.id == EligibilityReview.subject_id)
        .where(EligibilityReview.resolved_at.is_(None))
        .options(
            contains_eager(EligibilityReview.subject).joinedload(Subject.site), joinedload(EligibilityReview.opened_by)
        )
        .order_by(EligibilityReview.opened_at, EligibilityReview.id)
    )
    stmt = scoped(stmt, Subject.site_id, sites)
    return db.session.execute(stmt).scalars().all()


def changed_statuses(before: dict, after: dict) -> list[str]:
    """Criterion codes whose status differs between two results (a reason whose text
    changes with a limit while the status stays is not a change of the decision)."""
    codes = list(dict.fromkeys([*(after.get("criteria") or {}), *(before.get("criteria") or {})]))
    return [
        code
        for code in codes
        if ((before.get("criteria") or {}).get(code) or {}).get("status")
        != ((after.get("criteria") or {}).get(code) or {}).get("status")
    ]


# --- opening a review -------------------------------------------------------------------------


def open_review(subject: Subject, cause: str, detail: str, *, user: User | None) -> EligibilityReview:
    """Put the subject on its site's investigator worklist. Idempotent per unresolved
    subject and cause: an open review of that cause gets the new detail line added (when
    it is not already there). Audited through records; not committed (the caller's
    transaction commits). Refused (records' Locked) when the subject's data is locked."""
    if cause not in CAUSES:
        raise ValueError(f"cause: {cause!r} is not one of {', '.join(CAUSES)}")
    detail = " ".join((detail or "").split()) or CAUSES[cause]
    records.check_writable(subject)  # the write path's lock check, before anything is added
    records.lock(subject)  # one open review per subject and cause, also under concurrent writes
    existing = db.session.execute(
        select(EligibilityReview).where(
            EligibilityReview.subject_id == subject.id,
            EligibilityReview.cause == cause,
            EligibilityReview.resolved_at.is_(None),
        )
    ).scalar_one_or_none()
    if existing is not None:
        lines = existing.detail.split("\n")
        if detail not in lines:
            records.set_value(
                existing,
                "detail",
                "\n".join([*lines, detail]),
                user=user,
                form="eligibility_review",
                reason=CAUSES[cause],
            )
            existing.updated_at = utcnow()
        return existing
    review = EligibilityReview(
        subject_id=subject.id,
        subject=subject,
        cause=cause,
        detail=detail,
        opened_at=utcnow(),
        opened_by_id=user.id if user is not None else None,
    )
    records.create(
        review, user=user, form="eligibility_review", fields={"cause": cause, "detail": detail}, reason=CAUSES[cause]
    )
    return review


def amendment_impact(study_after: Study) -> list[dict]:
    """No writes. For every subject on study, re-run the checker on the inputs of its
    signed decision of record under `study_after`; return those whose outcome (eligible,
    or any criterion's status) differs from the signed one:
    {"subject", "decision", "before", "after", "changed_criteria": [codes]}."""
    subjects = (
        db.session.execute(
            select(Subject)
            .where(Subject.status.in_(ON_STUDY))
            .options(selectinload(Subject.decisions), joinedload(Subject.site))
            .order_by(Subject.id)
        )
        .scalars()
        .all()
    )
    out = []
    for subject in subjects:
        decision = decision_of_record(subject)
        if decision is None:
            continue
        before = signed_result(decision)
        try:
            after = eligibility.check(signed_case(decision), study=study_after)
        except ValueError as error:  # the signed inputs no longer pass the checker's input rules
            after = {"eligible": None, "criteria": {}, "error": str(error)}
        changed = changed_statuses(before, after)
        if changed or before["eligible"] is not after["eligible"]:
            out.append(
                {
                    "subject": subject,
                    "decision": decision,
                    "before": before,
                    "after": after,
                    "changed_criteria": changed,
                }
            )
    return out


def flag_amendment_impact(study_after: Study, *, amendment_label: str, user: User | None) -> list[Subject]:
    """Open a review (cause "amendment") for every subject `amendment_impact` lists; returns
    them. A subject whose data is locked cannot take a review: it is logged and left out
    (it is still in `amendment_impact`). Not committed."""
    flagged = []
    for row in amendment_impact(study_after):
        detail = amendment_detail(row, amendment_label, study_after)
        try:
            open_review(row["subject"], "amendment", detail, user=user)
        except RecordError as error:
            log.warning("eligibility review not opened for %s: %s", row["subject"].label, error)
            continue
        flagged.append(row["subject"])
    return flagged


def amendment_detail(row: dict, amendment_label: str, study_after: Study) -> str:
    names = dict(eligibility.criteria(study_after))
    parts = [
        f"{names.get(code, code)}: {_status(row['before'], code)} → {_status(row['after'], code)}"
        for code in row["changed_criteria"]
    ]
    if row["after"].get("error"):
        parts.append(f"the signed inputs are refused: {row['after']['error']}")
    version = (
        ""
        if amendment_label in (study_after.version, f"v{study_after.version}")
        else f" (study definition v{study_after.version})"
    )
    return f"Amendment {amendment_label}{version} changes the signed decision (v{row['decision'].study_version}): " + (
        "; ".join(parts) or "eligibility outcome changes"
    )


def _status(result: dict, code: str) -> str:
    return ((result.get("criteria") or {}).get(code) or {}).get("status", "absent")


# --- resolving a review -------------------------------------------------------------------------


def _open_of(subject: Subject) -> list[EligibilityReview]:
    reviews = [r for r in reviews_of(subject) if r.is_open]
    if not reviews:
        raise ReviewRefused(
            "No eligibility review is open for this subject (it may have been resolved meanwhile): "
            "see the subject page."
        )
    return reviews


def _require_investigator(user) -> None:
    if not can("sign_eligibility", user):
        raise ReviewRefused("Only an investigator can re-confirm eligibility or record this deviation.")


def reconfirm_blockers(subject: Subject, result: dict) -> list[str]:
    """Why eligibility cannot be re-confirmed now (empty = it can)."""
    screening = subject.current_screening
    reasons = []
    if screening is None or screening.status != "complete":
        reasons.append("The screening form is not marked complete.")
    if result.get("error"):
        reasons.append(f"The screening data is invalid: {result['error']}")
    elif result["eligible"] is not True:
        names = dict(eligibility.criteria(current_study()))
        failing = [names.get(c, c) for c, v in result["criteria"].items() if v["status"] == "fail"]
        missing = [names.get(c, c) for c, v in result["criteria"].items() if v["status"] == "missing"]
        if failing:
            reasons.append(
                "The checker says not eligible for the current screening data (failing: " + "; ".join(failing) + ")."
            )
        if missing:
            reasons.append("Data needed for a criterion is missing (" + "; ".join(missing) + ").")
    return reasons


@records.transaction()
def reconfirm(subject: Subject, *, user: User, password: str, screening_version: int) -> EligibilityDecision:
    """Re-confirm eligibility for the current screening data: only when the checker says
    eligible; the investigator's e-signature on the screening form; a new decision
    (outcome "reconfirmed") kept beside the earlier ones. It resolves every open review of
    the subject: it is a full check of the current data under the definition in force."""
    reviews = _open_of(subject)
    _require_investigator(user)
    screening = subject.current_screening
    if screening.version != screening_version:
        raise StaleVersion(screening)
    result = service.evaluate(screening)
    blockers = reconfirm_blockers(subject, result)
    if blockers:
        raise ReviewRefused(" ".join(blockers) + " Record a protocol deviation instead, or correct the data first.")
    case = service.build_case(screening)
    numbers = ", ".join(f"#{r.id}" for r in reviews)
    signature = records.sign(screening, user=user, password=password, meaning=RECONFIRM_MEANING)
    decision = service._decision(
        subject,
        screening,
        case,
        result,
        outcome="reconfirmed",
        user=user,
        signature=signature,
        note=f"Re-confirmation after eligibility review {numbers}",
    )
    for review in _open_of(subject):
        _resolve(review, "reconfirmed", user=user, decision=decision)
    return decision


@records.transaction()
def record_deviation(subject: Subject, *, user: User, password: str, reason: str) -> Deviation:
    """Resolve the subject's open reviews with one protocol deviation: the reason and the
    investigator's e-signature, listed with the subject's deviations."""
    reviews = _open_of(subject)
    _require_investigator(user)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidForm({"reason": "Give the reason for the deviation."})
    if len(reason) > MAX_REASON:
        raise InvalidForm({"reason": f"The reason is too long ({MAX_REASON} characters at most)."})

    description = "Eligibility not re-confirmed after enrolment: " + " / ".join(
        f"{CAUSES[r.cause]}: " + "; ".join(r.detail.split("\n")) for r in reviews
    )
    signature = records.sign(
        reviews[0], user=user, password=password, meaning=DEVIATION_MEANING, form="eligibility_review"
    )
    deviation = protocol_deviations.record_deviation(
        subject,
        kind=DEVIATION_KIND,
        description=description,
        reason=reason,
        user=user,
        form="eligibility_review",
        form_id=reviews[0].id,
        signature=signature,
    )
    for review in _open_of(subject):
        _resolve(review, "deviation", user=user, deviation=deviation)
    return deviation


def _resolve(review: EligibilityReview, resolution: str, *, user, decision=None, deviation=None) -> None:
    reference = f"decision #{decision.id}" if decision is not None else f"deviation #{deviation.id}"
    review.resolved_at = utcnow()
    review.resolved_by_id = user.id
    review.decision_id = decision.id if decision is not None else None
    review.deviation_id = deviation.id if deviation is not None else None
    records.set_value(
        review,
        "resolution",
        resolution,
        user=user,
        form="eligibility_review",
        reason=f"{RESOLUTIONS[resolution]} ({reference})",
    )


# --- detecting a change of screening data (the write path's hooks) -----------------------------

_BOOKKEEPING = {"version", "updated_at", "updated_by_id", "study_version", "created_at", "deleted_reason"}


_UNKNOWN = object()


def _history(obj, name: str) -> tuple:
    """(value before this flush, value now) of an attribute; the value before is _UNKNOWN
    when it changed without its old value loaded."""
    history = sa_inspect(obj).attrs[name].history
    now = getattr(obj, name)
    if history.deleted:
        return history.deleted[0], now
    return (_UNKNOWN if history.added else now), now


def _changed_attrs(obj, names) -> list[str]:
    state = sa_inspect(obj)
    return [n for n in names if state.attrs[n].history.has_changes()]


def _note(session: Session, subject_id, user_id, change: dict) -> None:
    if subject_id is None:
        return
    notes = session.info.setdefault(_NOTES, {})
    entry = notes.setdefault(subject_id, {"user_id": user_id, "changes": []})
    entry["user_id"] = user_id or entry["user_id"]
    entry["changes"].append(change)


def _noted(session: Session, obj, created: bool, deleted: bool) -> None:
    """The write hook: note a screening form's changed answers, or a therapy log row's
    change with its dates before and after (whether it is screening data is decided at
    commit, against the subject's status and enrolment date). No reads, no writes."""
    if isinstance(obj, Screening):
        if created or deleted:
            return  # a new screening attempt exists only before enrolment (PROTOCOL 3)
        before, after = _history(obj, "data")
        after = after or {}
        if before is _UNKNOWN:
            fields = ["(answers)"]
        else:
            before = before or {}
            fields = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if fields:
            _note(session, obj.subject_id, obj.updated_by_id, {"kind": "screening", "fields": fields})
    elif isinstance(obj, Exposure):
        if created:
            kind, anchors = "added", [service.exposure_anchor(obj.start_date, obj.last_date)]
        elif deleted:  # not a path of the app (PROTOCOL 7: a removal is a status), but seen all the same
            kind, anchors = "removed", [service.exposure_anchor(obj.start_date, obj.last_date)]
        else:
            changed = _changed_attrs(obj, [*Exposure.FIELDS, "status"])
            if not changed:
                return
            old_start, new_start = _history(obj, "start_date")
            old_last, new_last = _history(obj, "last_date")
            old_status, new_status = _history(obj, "status")
            old_start = None if old_start is _UNKNOWN else old_start  # unknown: undated, i.e. prior (counts)
            old_last = None if old_last is _UNKNOWN else old_last
            kind = "removed" if new_status == "deleted" and old_status != "deleted" else "corrected"
            anchors = [service.exposure_anchor(old_start, old_last), service.exposure_anchor(new_start, new_last)]
            if kind == "removed":
                anchors = anchors[:1]
        old_category = obj.category if created else _history(obj, "category")[0]
        old_category = obj.category if old_category is _UNKNOWN else old_category
        _note(
            session,
            obj.subject_id or (obj.subject.id if obj.subject is not None else None),
            obj.updated_by_id,
            {"kind": kind, "anchors": anchors, "categories": {old_category, obj.category}, "name": obj.name},
        )


def _open_noted(session: Session) -> None:
    """The commit hook: open (or add to) a review for each enrolled subject whose screening
    data the transaction changed."""
    notes = session.info.pop(_NOTES, None)
    if not notes:
        return
    if session is not db.session():
        log.warning("screening data changed outside the application session: no eligibility review opened")
        return

    categories = set(current_study().exposure_categories)
    for subject_id, entry in sorted(notes.items()):
        subject = session.get(Subject, subject_id)
        if subject is None or subject.status not in POST_ENROLMENT or decision_of_record(subject) is None:
            continue
        cutoff = service.enrolment_date(subject)
        lines = []
        for change in entry["changes"]:
            line = _describe(change, cutoff, categories)
            if line and line not in lines:
                lines.append(line)
        if not lines:
            continue
        user = session.get(User, entry["user_id"]) if entry["user_id"] else None
        review = None
        for line in lines:
            review = open_review(subject, "screening_changed", line, user=user)
        session.flush()
        log.info("eligibility review #%s for %s: %s", review.id, subject.label, "; ".join(lines))


def _describe(change: dict, cutoff, categories: set) -> str | None:
    if change["kind"] == "screening":
        labels = [
            FIELDS_BY_NAME[n].label
            if n in FIELDS_BY_NAME
            else ("No prior therapies" if n == service.NO_PRIOR_THERAPIES else n)
            for n in change["fields"]
        ]
        changed = f"{registry.label('screening')} changed"
        return f"{changed}: " + ", ".join(labels) if labels != ["(answers)"] else changed
    if not (change["categories"] & categories):
        return None  # not an exposure of the washout table: never an eligibility input
    if all(service.is_on_study(anchor, cutoff) for anchor in change["anchors"]):
        return None  # on-study before and after the change: a lockout input only (PROTOCOL 5.2)
    category = next(iter(sorted(c for c in change["categories"] if c)), "")
    what = EXPOSURE_CATEGORY_LABELS.get(category, category.replace("_", " "))
    return f"Prior therapy {change['kind']}: {change['name']} ({what})"


def _forget_notes(session: Session, previous_transaction) -> None:
    """A rolled-back change did not happen: nor does its review."""
    if not getattr(previous_transaction, "nested", False):
        session.info.pop(_NOTES, None)


def init_app(app: Flask) -> None:
    """Register the detection with the write path and the pages' helpers (application factory)."""
    from sqlalchemy import event

    hooks.on_write(_noted)
    hooks.before_commit(_open_noted)
    if not event.contains(Session, "after_soft_rollback", _forget_notes):
        event.listen(Session, "after_soft_rollback", _forget_notes)
    app.jinja_env.globals.update(eligibility_review_causes=CAUSES, eligibility_resolutions=RESOLUTIONS)
