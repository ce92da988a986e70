"""The one write path for clinical data (ARCHITECTURE rule 2, PROTOCOL 7).

Views never add or commit clinical records themselves: they call these functions,
which check the version, require a reason for a change to a completed form, write
the audit records, invalidate signatures of the changed form and commit, all in
one transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from ..extensions import db
from ..timeutil import fmt_utc, utcnow
from . import audit, hooks
from .models import Signature
from .transaction import after_commit, after_rollback, reads_only, require_active, saving, transaction
from ..auth.service import register_signature_failure, signature_refusal
from ..settings import study_in_force

if TYPE_CHECKING:
    from ..auth.models import User
    from .formrecord import FormRecord

#: An audited row: a clinical record (`formrecord.ClinicalRecord`) or a study-level row that
#: the write path audits the same way (an amendment, a dose-level review, a query).
Row = Any

# the transaction owner (records/transaction.py), re-exported with the write path
__all__ = ["after_commit", "after_rollback", "reads_only", "transaction"]


class RecordError(Exception):
    """A refused write, with a message for the person who tried it."""

    field: str | None = None


class StaleVersion(RecordError):
    def __init__(self, record):
        by = record.updated_by.full_name if record.updated_by else "another user"
        super().__init__(
            f"This form was changed by {by} at {fmt_utc(record.updated_at)} since you opened it. "
            "Your entries are kept below next to the saved values: review them and save again."
        )
        self.record = record


class InvalidForm(RecordError):
    """A save refused with messages at the fields ({field: message}); nothing is saved."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("Some answers need correcting: see the messages at the fields. Nothing was saved.")
        self.errors = errors
        self.field = next(iter(errors), None)


class ReasonRequired(RecordError):
    field = "reason"

    def __init__(self):
        super().__init__("This form is complete: give a reason for the change.")


class SignatureRefused(RecordError):
    field = "password"


def _subject_scope(record) -> dict:
    subject = getattr(record, "subject", None)
    if subject is None and record.__class__.__name__ == "Subject":
        subject = record
    return {"subject_id": subject.id if subject else None, "site_id": subject.site_id if subject else None}


def check_writable(record: Row) -> None:
    """Refuse a write that a lock forbids (the monitoring layer's locks, through the hook)."""
    hooks.write_path().check_writable(record)


def create(
    record: Row, *, user: User | None, fields: dict[str, Any], reason: str | None = None, form: str | None = None
) -> Row:
    """Add a new clinical record and audit its creation and every value set (a part of the
    caller's action: inside ``transaction()``)."""
    require_active("records.create()")
    form = form or record.FORM_NAME
    db.session.add(record)
    if hasattr(record, "updated_by_id"):
        record.updated_by_id = user.id
    stamp_study_version(record)
    db.session.flush()
    check_writable(record)
    scope = _subject_scope(record)
    audit.append("create", user=user, form=form, form_id=record.id, reason=reason, **scope)
    for name, value in fields.items():
        if audit.to_text(value) is not None:
            audit.append("set", user=user, form=form, form_id=record.id, field=name, new=value, **scope)
    hooks.write_path().after_write(
        record, user=user, changed={n: (None, v) for n, v in fields.items()}, reason=reason, created=True
    )
    return record


def diff(record: FormRecord, changes: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (old, new)} for the values that really change (compared as audit text)."""
    out = {}
    for name, new in changes.items():
        old = record.get_field(name)
        if audit.to_text(old) != audit.to_text(new):
            out[name] = (old, new)
    return out


def save(
    record: FormRecord, *, user: User, changes: dict[str, Any], expected_version: int, reason: str | None = None
) -> dict[str, tuple[Any, Any]]:
    """Apply `changes` to a form record; returns {field: (old, new)} of what changed. Its own
    transaction, or a part of the caller's."""
    with transaction():
        return _save(record, user=user, changes=changes, expected_version=expected_version, reason=reason)


def _save(record, *, user, changes: dict, expected_version: int, reason: str | None) -> dict:
    if record.version != expected_version:
        raise StaleVersion(record)
    monitoring = hooks.write_path()
    monitoring.check_writable(record)
    changed = diff(record, changes)
    if not changed:
        return {}
    reason = (reason or "").strip() or None
    if record.status == "complete" and not reason:
        raise ReasonRequired()
    reason, answered = monitoring.link_queries(record, changed, reason)
    scope = _subject_scope(record)
    touch(record, user)
    for name, (old, new) in changed.items():
        record.set_field(name, new)
        audit.append(
            "update",
            user=user,
            form=record.FORM_NAME,
            form_id=record.id,
            field=name,
            old=old,
            new=new,
            reason=reason,
            **scope,
        )
    _flush_or_stale(record)  # a concurrent save shows here, before any hook reads the database
    invalidate_signatures(record, user=user, reason=reason or "form changed")
    monitoring.after_write(record, user=user, changed=changed, reason=reason, answered=answered)
    return changed


def set_status(record: Row, status: str, *, user: User, reason: str | None = None, form: str | None = None) -> None:
    """Its own transaction, or a part of the caller's."""
    with transaction():
        _set_status(record, status, user=user, reason=reason, form=form)


def _set_status(record, status: str, *, user, reason: str | None, form: str | None) -> None:
    old = record.status
    if old == status:
        return
    check_writable(record)
    if hasattr(record, "updated_by_id"):
        touch(record, user)
    record.status = status
    audit.append(
        "status",
        user=user,
        form=form or getattr(record, "FORM_NAME", "subject"),
        form_id=record.id,
        field="status",
        old=old,
        new=status,
        reason=reason,
        **_subject_scope(record),
    )
    if hasattr(record, "updated_by_id"):
        _flush_or_stale(record)
    hooks.write_path().after_status(record, user=user, reason=reason)


def set_value(
    record: Row, name: str, value: Any, *, user: User | None, reason: str | None = None, form: str | None = None
) -> None:
    """A system-assigned value (e.g. the subject number), audited in the caller's transaction."""
    require_active("records.set_value()")
    check_writable(record)
    old = getattr(record, name)
    setattr(record, name, value)
    audit.append(
        "assign",
        user=user,
        form=form or getattr(record, "FORM_NAME", "subject"),
        form_id=record.id,
        field=name,
        old=old,
        new=value,
        reason=reason,
        **_subject_scope(record),
    )


def update(
    row: Row, changes: dict[str, Any], *, user: User | None, reason: str | None = None, form: str | None = None
) -> dict[str, tuple[Any, Any]]:
    """Change attributes of a row that has no form version of its own (a grade episode of
    an AE): lock-checked and one audit record per value that really changes, in the
    caller's transaction. Returns {name: (old, new)}."""
    require_active("records.update()")
    check_writable(row)
    changed = {}
    for name, new in changes.items():
        old = getattr(row, name)
        if audit.to_text(old) == audit.to_text(new):
            continue
        setattr(row, name, new)
        changed[name] = (old, new)
        audit.append(
            "update",
            user=user,
            form=form or row.FORM_NAME,
            form_id=row.id,
            field=name,
            old=old,
            new=new,
            reason=reason,
            **_subject_scope(row),
        )
    return changed


def sign(
    record: Row, *, user: User, password: str, meaning: str, form: str | None = None, reason: str | None = None
) -> Signature:
    """An e-signature: the signer re-enters the password (21 CFR 11.200). `reason`: what the
    signer confirmed beyond the meaning (issue 11: a casebook signed with work outstanding),
    kept in the signature's audit record."""
    # auth builds on records (its audit records): a call, not a module-level import
    from ..auth.models import User

    require_active("records.sign()")
    scope = _subject_scope(record)
    form = form or record.FORM_NAME
    record_id, model = record.id, type(record)
    if signature_refusal(user, password):
        # Nothing of the refused action is kept (the raise rolls the caller's transaction
        # back); the failed attempt is recorded after it (21 CFR 11.300(d)) and counts
        # toward the account lock.
        user_id = user.id
        refused = SignatureRefused("Password not accepted: the signature was not applied.")

        def record_refusal() -> None:
            signer = db.session.get(User, user_id)
            kept_id = record_id
            if kept_id is not None and db.session.get(model, kept_id) is None:
                kept_id = None  # the record itself was part of the refused action
            refused.args = (register_signature_failure(signer),)  # the count after this attempt
            audit.append(
                "sign_refused",
                user=signer,
                form=form,
                form_id=kept_id,
                field="signature",
                new=meaning,
                reason="password not accepted",
                **scope,
            )

        after_rollback(record_refusal)
        raise refused
    signature = Signature(
        user_id=user.id,
        printed_name=user.full_name,
        meaning=meaning,
        signed_at=utcnow(),
        subject_id=scope["subject_id"],
        form=form or record.FORM_NAME,
        form_id=record.id,
        form_version=getattr(record, "version", None) or 0,
    )  # a casebook (subject): 0
    db.session.add(signature)
    db.session.flush()
    audit.append(
        "sign",
        user=user,
        form=signature.form,
        form_id=record.id,
        field="signature",
        new=f"{user.full_name}: {meaning}",
        reason=reason,
        **scope,
    )
    return signature


def invalidate_signatures(record: Row, *, user: User | None, reason: str) -> None:
    signatures = db.session.execute(
        select(Signature).where(
            Signature.form == record.FORM_NAME, Signature.form_id == record.id, Signature.valid.is_(True)
        )
    ).scalars()
    for signature in signatures:
        signature.valid = False
        signature.invalidated_at = utcnow()
        signature.invalidated_reason = reason
        audit.append(
            "unsign",
            user=user,
            form=record.FORM_NAME,
            form_id=record.id,
            field="signature",
            old=f"{signature.printed_name}: {signature.meaning}",
            reason=reason,
            **_subject_scope(record),
        )


def lock(row: Row) -> None:
    """Lock one row for the rest of the transaction (SELECT ... FOR UPDATE), so writes that
    depend on it (numbering, scheduling) are serialised. SQLite's write transactions are
    already exclusive."""
    model = type(row)
    db.session.execute(select(model.id).where(model.id == row.id).with_for_update())


def touch(record: FormRecord, user: User) -> None:
    """One new version per user action, however many fields and flushes it takes."""
    record.updated_at = utcnow()
    record.updated_by_id = user.id
    stamp_study_version(record)
    bumped = db.session.info.setdefault("cellstudy_bumped", set())
    if id(record) not in bumped:
        bumped.add(id(record))
        record.version = (record.version or 0) + 1


def stamp_study_version(record: Row) -> None:
    """The study-definition version in force at this save (issue 11), read in this
    transaction (no per-process cache), once per transaction."""
    if not hasattr(type(record), "study_version"):
        return

    memo = db.session.info.get("cellstudy_study_version")
    if memo is None or memo[0] is None or memo[0] is not db.session().get_transaction():
        with db.session.no_autoflush:  # the versioned UPDATE is flushed by _flush_or_stale, not here
            version = study_in_force(db.session).version
        memo = db.session.info["cellstudy_study_version"] = (db.session().get_transaction(), version)
    record.study_version = memo[1]


def _flush_or_stale(record) -> None:
    """Write the versioned UPDATE now: a save that lost the race (PostgreSQL: the row was
    updated by a transaction that committed meanwhile) is refused as a version conflict
    here, not as an error from a later autoflush; a conflict that shows only at the commit
    names the same record (``saving``)."""
    saving(record)
    try:
        db.session.flush()
    except StaleDataError:
        db.session.rollback()
        db.session.refresh(record)
        raise StaleVersion(record) from None
