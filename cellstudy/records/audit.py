"""The audit trail: the one module that writes it (PROTOCOL 7, 21 CFR 11.10(e)).

Each record carries the SHA-256 of its canonical content and of the previous record's
hash, so any edit, deletion or insertion breaks the chain; `verify()` walks it.
Appends are serialised (PostgreSQL advisory lock; SQLite write transactions are
BEGIN IMMEDIATE, see extensions setup) so two requests cannot fork the chain.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import select, text

from ..extensions import db
from ..timeutil import as_utc, utcnow
from .models import AuditRecord

GENESIS = "0" * 64
_CHAIN_LOCK_KEY = 7_220_117  # arbitrary constant for pg_advisory_xact_lock
_HASHED = ("at", "user_id", "username", "action", "site_id", "subject_id", "form",
           "form_id", "field", "old_value", "new_value", "reason")


def to_text(value) -> str | None:
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


def canonical(values: dict) -> bytes:
    row = [(_stamp(values[k]) if k == "at" else values[k]) for k in _HASHED]
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, values: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(values)).hexdigest()


def _lock_chain() -> None:
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK_KEY})


def _last_hash() -> str:
    last = db.session.execute(select(AuditRecord.hash).order_by(AuditRecord.id.desc()).limit(1)).scalar()
    return last or GENESIS


def append(action: str, *, user=None, username: str | None = None, site_id=None, subject_id=None,
           form=None, form_id=None, field=None, old=None, new=None, reason=None) -> AuditRecord:
    """Append one record in the caller's transaction (committed with the change it records)."""
    _lock_chain()
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
    prev = _last_hash()
    record = AuditRecord(**values, prev_hash=prev, hash=chain_hash(prev, values))
    db.session.add(record)
    db.session.flush()  # the next append in this transaction must see this hash
    return record


@dataclass
class Verification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None


def verify(batch: int = 5000) -> Verification:
    """Walk the chain in id order; stop at the first record that does not match."""
    cols = [AuditRecord.id, AuditRecord.prev_hash, AuditRecord.hash] + [getattr(AuditRecord, k) for k in _HASHED]
    stmt = select(*cols).order_by(AuditRecord.id).execution_options(yield_per=batch)
    prev = GENESIS
    checked = 0
    for row in db.session.execute(stmt):
        rid, prev_hash, stored = row[0], row[1], row[2]
        values = dict(zip(_HASHED, row[3:]))
        if prev_hash != prev:
            return Verification(False, checked, rid, f"record {rid}: previous-hash link broken "
                                f"(expected {prev[:12]}…, stored {prev_hash[:12]}…)")
        if chain_hash(prev, values) != stored:
            return Verification(False, checked, rid, f"record {rid}: content does not match its hash")
        prev = stored
        checked += 1
    return Verification(True, checked)


def for_subject(subject_id: int):
    return db.session.execute(
        select(AuditRecord).where(AuditRecord.subject_id == subject_id).order_by(AuditRecord.id.desc())
    ).scalars().all()
