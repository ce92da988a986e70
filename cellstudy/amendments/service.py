"""Amendments as controlled changes (issue 11; PROTOCOL 1, 7; 21 CFR 11.50/11.200).

Life cycle of a `StudyAmendment`::

    proposed --(investigator approves with an e-signature)--> approved --(effective date)--> in force
        |--(investigator rejects, reason)--> rejected
        '--(admin withdraws, reason)-------> withdrawn

- The admin proposes: a version label, a reason, an effective date (a UTC date, today or
  later) and the settings. A proposal builds on the latest approved amendment (its "base":
  the definition it changes) and stores the complete overrides of the default definition,
  so one row says what the whole definition is. One proposal awaits approval at a time.
- An investigator approves with an e-signature (`records.service.sign`: password
  re-entered) or rejects with a reason; the admin may withdraw a proposal. Every step is
  audited (`records.audit`), the approval by the signature's "sign" record too.
- It comes into force when it is approved and its effective date has arrived: at once at
  the approval for a date today or past, else by `apply_due()` (the scheduled run in each
  app process, `flask study apply-due`, and a check at start-up). Coming into force is a
  write on the row (`in_force_at`), made by one transaction only (the row is re-read under
  a lock and skipped once marked), so the write path's hooks see it (every planned infusion
  is judged again, infusions/judgement.py), and when the eligibility rules change, the
  enrolled subjects whose signed decision would change are put on the investigators'
  worklist (enrollment/reconfirm.py): nobody is silently un-enrolled.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from .. import settings, timeutil
from ..extensions import db
from ..settings.models import StudyAmendment
from ..records import audit
from ..records import service as records
from ..study import STUDY, Study
from . import STATUS_LABELS
from ..auth.policy import can
from ..enrollment.reconfirm import amendment_impact
from ..enrollment.eligibility import criteria
from ..enrollment.reconfirm import flag_amendment_impact

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from ..auth.models import User

log = logging.getLogger(__name__)

FORM = "study_amendment"
MEANING = "I approve this amendment of the study definition"
_LOCK_KEY = 7_220_118  # pg_advisory_xact_lock: amendment state changes, one transaction at a time


class AmendmentError(ValueError):
    """A refused step, with messages for the person ({field: message}; field None: the whole form)."""

    def __init__(self, errors: dict[str | None, str] | str):
        self.errors = errors if isinstance(errors, dict) else {None: errors}
        super().__init__(" ".join(self.errors.values()))


# --- reading -------------------------------------------------------------------------------------


def _now() -> datetime:
    return timeutil.as_utc(timeutil.utcnow())


def _latest_approved(session=None) -> StudyAmendment | None:
    """The amendment a new proposal builds on: the latest approved one, in force or not yet."""
    session = session or db.session
    return session.execute(
        select(StudyAmendment)
        .where(StudyAmendment.status == "approved")
        .order_by(StudyAmendment.effective_date.desc(), StudyAmendment.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def awaiting() -> list[StudyAmendment]:
    return list(
        db.session.execute(
            select(StudyAmendment).where(StudyAmendment.status == "proposed").order_by(StudyAmendment.id)
        ).scalars()
    )


def history() -> list[StudyAmendment]:
    return list(db.session.execute(select(StudyAmendment).order_by(StudyAmendment.id.desc())).scalars())


def base_definition(amendment: StudyAmendment) -> Study:
    return settings.definition(amendment.base) if amendment.base is not None else STUDY


def proposal_base() -> Study:
    """The definition a new proposal starts from (and whose values the form shows)."""
    latest = _latest_approved()
    return settings.definition(latest) if latest is not None else STUDY


@dataclass(frozen=True)
class Change:
    key: str
    label: str
    section: str
    before: str
    after: str


def _shown(value) -> str:
    return "none" if value is None else str(value)


def changes(amendment: StudyAmendment) -> list[Change]:
    """The settings this amendment changes, before (its base) and after."""
    before, after = settings.values_of(base_definition(amendment)), settings.values_of(settings.definition(amendment))
    return [
        Change(
            key,
            settings.setting_label(key),
            settings.SETTING_SECTIONS.get(key.split(".")[0], ""),
            _shown(before[key]),
            _shown(after[key]),
        )
        for key in after
        if after[key] != before.get(key)
    ]


def changes_eligibility(amendment: StudyAmendment) -> bool:
    return base_definition(amendment).eligibility != settings.definition(amendment).eligibility


def impact(amendment: StudyAmendment) -> list[dict] | None:
    """The enrolled subjects whose signed eligibility decision this amendment would change
    (None when it changes no eligibility rule). Reads only."""
    if not changes_eligibility(amendment):
        return None

    return amendment_impact(settings.definition(amendment))


def criterion_names(amendment: StudyAmendment) -> dict[str, str]:
    return dict(criteria(settings.definition(amendment)))


def state(amendment: StudyAmendment, in_force_id: int | None, today: date | None = None) -> str:
    """What a reader calls the amendment now."""
    today = today or _now().date()
    if amendment.status != "approved":
        return STATUS_LABELS[amendment.status]
    if amendment.id == in_force_id:
        return "In force"
    if amendment.effective_date > today:
        return f"Approved, in force from {amendment.effective_date.isoformat()} (00:00 UTC)"
    return "Superseded"


def in_force_id(session: Session | None = None) -> int | None:
    row = settings._in_force_row(session or db.session, _now().date())
    return row.id if row else None


# --- the steps -----------------------------------------------------------------------------------


def _serialise() -> None:
    """Amendment steps one at a time (SQLite: a records.transaction() is BEGIN IMMEDIATE already)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def _locked(amendment_id) -> StudyAmendment | None:
    try:
        amendment_id = int(amendment_id)
    except (TypeError, ValueError):
        return None
    return db.session.execute(
        select(StudyAmendment)
        .where(StudyAmendment.id == amendment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _require(user, permission: str, what: str) -> None:
    if not can(permission, user):
        raise PermissionError(f"{user.username} ({user.role}) may not {what}")


def parse_effective_date(raw: date | str | None) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    try:
        return date.fromisoformat(str(raw or "").strip())
    except ValueError:
        raise AmendmentError({"effective_date": "Effective date: enter the date as YYYY-MM-DD (a UTC date)."}) from None


@records.transaction()
def propose(values: dict, *, label: str, reason: str, effective_date: date | str | None, user: User) -> StudyAmendment:
    """The admin's proposal; nothing of the definition in force changes."""
    _require(user, "propose_amendment", "propose an amendment")
    _serialise()
    label, reason = (label or "").strip(), (reason or "").strip()
    errors: dict[str | None, str] = {}
    pending = awaiting()
    if pending:
        raise AmendmentError(
            f"Amendment {pending[0].label!r} awaits an investigator's approval: withdraw it before proposing another."
        )
    base = _latest_approved()
    if not label:
        errors["version"] = "Name the amendment, e.g. '2.0 (amendment 1)'."
    elif len(label) > 60:
        errors["version"] = "Version label: 60 characters at most."
    elif (
        label == STUDY.version
        or db.session.execute(
            select(StudyAmendment.id).where(StudyAmendment.label == label, StudyAmendment.status == "approved")
        ).first()
    ):
        errors["version"] = f"Version label: {label!r} is already used by an approved definition; choose a new one."
    if not reason:
        errors["reason"] = "Give the reason for the change."
    try:
        effective = parse_effective_date(effective_date)
    except AmendmentError as error:
        errors.update(error.errors)
    else:
        today = _now().date()
        if effective < today:
            errors["effective_date"] = (
                f"Effective date: {effective.isoformat()} has passed; an amendment takes "
                f"effect today ({today.isoformat()}, UTC) or later."
            )
        elif base is not None and effective < base.effective_date:
            errors["effective_date"] = (
                f"Effective date: it builds on {base.label}, in force from "
                f"{base.effective_date.isoformat()}; choose that date or later."
            )
    before = settings.definition(base) if base is not None else STUDY
    bad = settings.setting_errors(values, before)
    errors.update(bad)
    after = None if bad else settings.apply(values, base=before, version=label or None)
    if after is not None:
        old, new = settings.values_of(before), settings.values_of(after)
        changed = {k: (old[k], new[k]) for k in new if new[k] != old[k]}
        if not changed:
            errors.setdefault(None, "No setting was changed.")
    if errors:
        raise AmendmentError(errors)
    defaults = settings.values_of(STUDY)
    overrides = {k: (str(v) if v is not None else None) for k, v in new.items() if v != defaults[k]}
    amendment = StudyAmendment(
        label=label,
        overrides=overrides,
        reason=reason,
        created_by_id=user.id,
        created_at=_now(),
        status="proposed",
        effective_date=effective,
        base_id=base.id if base is not None else None,
    )
    db.session.add(amendment)
    db.session.flush()
    why = f"{label}: {reason}"
    audit.append("create", user=user, form=FORM, form_id=amendment.id, field="version", new=label, reason=why)
    audit.append("set", user=user, form=FORM, form_id=amendment.id, field="effective_date", new=effective)
    for key, (old_value, new_value) in changed.items():
        audit.append(
            "setting", user=user, form=FORM, form_id=amendment.id, field=key, old=old_value, new=new_value, reason=why
        )
    return amendment


def _pending_for_decision(amendment_id) -> StudyAmendment:
    amendment = _locked(amendment_id)
    if amendment is None:
        raise AmendmentError("There is no such amendment: reload the page.")
    if amendment.status != "proposed":
        raise AmendmentError(
            f"Amendment {amendment.label!r} is {STATUS_LABELS[amendment.status].lower()} already: nothing was changed."
        )
    return amendment


@records.transaction()
def approve(amendment_id: int, *, user: User, password: str) -> StudyAmendment:
    """The investigator's approval with an e-signature; in force at once when its effective
    date has arrived."""
    _require(user, "approve_amendment", "approve an amendment")
    _serialise()
    amendment = _pending_for_decision(amendment_id)
    latest = _latest_approved()
    if (latest.id if latest else None) != amendment.base_id:
        raise AmendmentError(
            f"The study definition changed since {amendment.label!r} was proposed (now "
            f"{latest.label if latest else STUDY.version}): the admin withdraws it and proposes again."
        )
    # records.sign rolls back and records the refusal on a wrong password (SignatureRefused)
    signature = records.sign(amendment, user=user, password=password, meaning=MEANING, form=FORM)
    now = _now()
    amendment.status, amendment.decided_at, amendment.decided_by_id = "approved", now, user.id
    amendment.signature_id = signature.id
    audit.append(
        "status",
        user=user,
        form=FORM,
        form_id=amendment.id,
        field="status",
        old="proposed",
        new="approved",
        reason=f"{amendment.label}: approved with an e-signature",
    )
    db.session.flush()
    if amendment.effective_date <= now.date():
        _mark_due(user=user, now=now)  # this one, and any earlier one whose run has not come yet
    records.after_commit(settings.invalidate_cache)
    return amendment


@records.transaction()
def _decide(amendment_id, *, user, reason: str, status: str, permission: str, what: str) -> StudyAmendment:
    _require(user, permission, what)
    reason = (reason or "").strip()
    if not reason:
        raise AmendmentError({"reason": "Give the reason."})
    _serialise()
    amendment = _pending_for_decision(amendment_id)
    amendment.status, amendment.decided_at, amendment.decided_by_id = status, _now(), user.id
    amendment.decision_reason = reason
    audit.append(
        "status",
        user=user,
        form=FORM,
        form_id=amendment.id,
        field="status",
        old="proposed",
        new=status,
        reason=f"{amendment.label}: {reason}",
    )
    records.after_commit(settings.invalidate_cache)
    return amendment


def reject(amendment_id: int, *, user: User, reason: str) -> StudyAmendment:
    return _decide(
        amendment_id,
        user=user,
        reason=reason,
        status="rejected",
        permission="approve_amendment",
        what="reject an amendment",
    )


def withdraw(amendment_id: int, *, user: User, reason: str) -> StudyAmendment:
    return _decide(
        amendment_id,
        user=user,
        reason=reason,
        status="withdrawn",
        permission="propose_amendment",
        what="withdraw an amendment",
    )


def _previously_in_force() -> Study:
    row = db.session.execute(
        select(StudyAmendment)
        .where(StudyAmendment.in_force_at.is_not(None))
        .order_by(StudyAmendment.effective_date.desc(), StudyAmendment.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return settings.definition(row) if row is not None else STUDY


def _come_into_force(amendments: list[StudyAmendment], *, user, now: datetime) -> None:
    """Mark them in force (the write the hooks see) and flag the eligibility impact."""
    before = _previously_in_force()
    for amendment in amendments:
        amendment.in_force_at = now
        when = (
            "approved on or after its effective date"
            if amendment.decided_at and timeutil.as_utc(amendment.decided_at).date() >= amendment.effective_date
            else "its effective date arrived"
        )
        audit.append(
            "assign",
            user=user,
            form=FORM,
            form_id=amendment.id,
            field="in_force_at",
            new=now,
            reason=f"{amendment.label}: in force from {amendment.effective_date.isoformat()} (UTC date; {when})",
        )
    db.session.flush()
    after = settings.study_in_force(db.session, now)
    if after.eligibility != before.eligibility:
        flag_amendment_impact(after, amendment_label=after.version, user=user)


def due(now: datetime | None = None) -> list[int]:
    now = now or _now()
    return list(
        db.session.execute(
            select(StudyAmendment.id)
            .where(
                StudyAmendment.status == "approved",
                StudyAmendment.in_force_at.is_(None),
                StudyAmendment.effective_date <= now.date(),
            )
            .order_by(StudyAmendment.effective_date, StudyAmendment.id)
        ).scalars()
    )


def _mark_due(*, user, now: datetime) -> list[StudyAmendment]:
    """Mark in force every due amendment still unmarked, re-read under a lock (a worker
    that waited for another's transaction finds them marked and skips them)."""
    ids = due(now)
    if not ids:
        return []
    rows = list(
        db.session.execute(
            select(StudyAmendment)
            .where(StudyAmendment.id.in_(ids), StudyAmendment.in_force_at.is_(None))
            .with_for_update()
            .order_by(StudyAmendment.effective_date, StudyAmendment.id)
            .execution_options(populate_existing=True)
        ).scalars()
    )
    if rows:
        _come_into_force(rows, user=user, now=now)
    return rows


def apply_due(*, user: User | None = None) -> list[StudyAmendment]:
    """Bring every approved amendment whose effective date has arrived into force.
    Idempotent, and safe with several workers: each row is re-read under a lock and only
    the transaction that finds it unmarked marks it. The look for due ones is a read (no
    write lock); only when one is due does a write transaction start."""
    now = _now()
    if not due(now):
        db.session.rollback()  # end the read
        return []
    with records.transaction():
        _serialise()
        rows = _mark_due(user=user, now=now)
        if rows:
            records.after_commit(settings.invalidate_cache)
    if rows:
        log.info("amendments in force: %s", ", ".join(r.label for r in rows))
    return rows


def amend(
    values: dict,
    *,
    version: str,
    reason: str,
    user: User,
    approver: User,
    password: str,
    effective_date: date | None = None,
) -> Study:
    """Propose and approve in one call (tests and scripts); returns the definition in force."""
    amendment = propose(values, label=version, reason=reason, effective_date=effective_date or _now().date(), user=user)
    approve(amendment.id, user=approver, password=password)
    return settings.study_in_force(db.session)


# --- when the effective date arrives: the start-up check and the scheduled run ----------------------


def check_due(app: Flask) -> list[str]:
    """apply_due() in an app context of its own; a database without the schema yet (before
    `flask db upgrade`) is skipped, not an error."""
    with app.app_context(), records.reads_only():
        try:
            return [a.label for a in apply_due()]
        except (OperationalError, ProgrammingError) as error:
            db.session.rollback()
            log.warning("amendments: due check skipped (%s)", str(error).splitlines()[0])
            return []
        finally:
            db.session.remove()


class _Scheduler:
    def __init__(self, app, interval: float):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(app, interval), name="cellstudy-amendments", daemon=True)

    def _run(self, app, interval: float) -> None:
        while not self.stop.is_set():
            try:
                check_due(app)
            except Exception:  # the next run tries again; the log has it
                log.exception("amendments: the scheduled due check failed")
            self.stop.wait(interval)


_scheduler_lock = threading.Lock()


def start_scheduler(app: Flask | None = None) -> None:
    """The scheduled run: a daemon thread per app process checking every
    AMENDMENTS_CHECK_SECONDS (default 60)."""
    app = app or current_app._get_current_object()
    with _scheduler_lock:
        if app.extensions.get("cellstudy.amendments") is None:
            scheduler = _Scheduler(app, float(app.config.get("AMENDMENTS_CHECK_SECONDS", 60)))
            app.extensions["cellstudy.amendments"] = scheduler
            scheduler.thread.start()


def stop_scheduler(app: Flask) -> None:
    scheduler = app.extensions.pop("cellstudy.amendments", None)
    if scheduler is not None:
        scheduler.stop.set()
        scheduler.thread.join(timeout=10)
