"""The audit trail: the one module that writes it (PROTOCOL 7, 21 CFR 11.10(e)).

Each record carries the SHA-256 of its canonical content and of the previous record's
hash, so any edit, deletion or insertion breaks the chain; `verify()` walks it.

`append()` queues a record in the caller's transaction; the queue is written when the
transaction commits (a `before_commit` hook): the chain's tail is read and extended
under a lock held only for those few statements (a PostgreSQL advisory lock; SQLite
write transactions are BEGIN IMMEDIATE), so concurrent saves cannot fork the chain
and do not queue behind each other's page work. A rollback discards the queue with
the change it described: if it is not committed, it did not happen, and neither did
its audit record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import Session

from ..extensions import db
from ..timeutil import as_utc, utcnow
from .models import AuditRecord

if TYPE_CHECKING:
    from ..auth.models import User

GENESIS = "0" * 64
_PENDING = "cellstudy_audit_pending"
_CHAIN_LOCK_KEY = 7_220_117  # arbitrary constant for pg_advisory_xact_lock
_HASHED = (
    "at",
    "user_id",
    "username",
    "action",
    "site_id",
    "subject_id",
    "form",
    "form_id",
    "field",
    "old_value",
    "new_value",
    "reason",
)


def to_text(value: Any) -> str | None:
    """How a value is written into the audit trail: exact, readable, stable."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _stamp(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _encode(parts) -> bytes:
    """Length-prefixed fields ("-" for null): unambiguous, whatever the text contains."""
    return "".join("-" if p is None else f"{len(s)}:{s}" for p in parts for s in (str(p),)).encode()


def canonical(values: dict) -> bytes:
    return _encode(_stamp(values[k]) if k == "at" else values[k] for k in _HASHED)


def chain_hash(prev_hash: str, values: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(values)).hexdigest()


def append(
    action: str,
    *,
    user: User | None = None,
    username: str | None = None,
    site_id: int | None = None,
    subject_id: int | None = None,
    form: str | None = None,
    form_id: int | None = None,
    field: str | None = None,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Queue one record; it is written, chained, with the transaction's commit."""
    values = {
        "at": utcnow(),
        "user_id": user.id if user is not None else None,
        "username": user.username if user is not None else (username or "system"),
        "action": action,
        "site_id": site_id,
        "subject_id": subject_id,
        "form": form,
        "form_id": form_id,
        "field": field,
        "old_value": to_text(old),
        "new_value": to_text(new),
        "reason": reason or None,
    }
    db.session.info.setdefault(_PENDING, []).append(values)
    return values


def pending() -> list[dict]:
    """The records queued in this transaction (for a view that wants to show them)."""
    return list(db.session.info.get(_PENDING, ()))


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    queued = session.info.pop(_PENDING, None)
    if not queued:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK_KEY})
    prev = session.execute(select(AuditRecord.hash).order_by(AuditRecord.id.desc()).limit(1)).scalar() or GENESIS
    rows = []
    for values in queued:
        digest = chain_hash(prev, values)
        rows.append({**values, "prev_hash": prev, "hash": digest})
        prev = digest
    session.execute(insert(AuditRecord), rows)


@event.listens_for(Session, "after_soft_rollback")
def _discard_pending(session: Session, previous_transaction) -> None:
    discard_pending(session)


def discard_pending(session: Session) -> None:
    """Forget the records queued by an action that rolled back (also when it had not
    reached the database yet, so no rollback event fires)."""
    session.info.pop(_PENDING, None)


@dataclass
class Verification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None


def verify(batch: int = 20000) -> Verification:
    """Walk the chain in id order; stop at the first record that does not match.

    Reads the stored values through the driver (the time as canonical text computed by
    the database), so the cost is about hashing the stored bytes."""
    dialect = db.session.get_bind().dialect.name
    stamp = (
        "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        if dialect == "postgresql"
        else "replace(at, ' ', 'T')"
    )
    columns = ", ".join([stamp] + list(_HASHED[1:]))
    sql = f"SELECT id, prev_hash, hash, {columns} FROM audit_record ORDER BY id"
    connection = db.session.connection()
    result = (
        connection.exec_driver_sql(sql)
        if dialect != "postgresql"
        else connection.execution_options(stream_results=True, max_row_buffer=batch).exec_driver_sql(sql)
    )
    sha256 = hashlib.sha256
    prev = GENESIS
    checked = 0
    for row in result:
        rid, prev_hash, stored = row[0], row[1], row[2]
        if prev_hash != prev:
            return Verification(
                False,
                checked,
                rid,
                f"record {rid}: previous-hash link broken (expected {prev[:12]}…, stored {prev_hash[:12]}…)",
            )
        if sha256(prev.encode() + _encode(row[3:])).hexdigest() != stored:
            return Verification(False, checked, rid, f"record {rid}: content does not match its hash")
        prev = stored
        checked += 1
    return Verification(True, checked)


def for_subject(subject_id: int) -> Sequence[AuditRecord]:
    return (
        db.session.execute(
            select(AuditRecord).where(AuditRecord.subject_id == subject_id).order_by(AuditRecord.id.desc())
        )
        .scalars()
        .all()
    )
