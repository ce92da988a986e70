"""The audit trail: the one module that writes it (PROTOCOL 7, 21 CFR 11.10(e)).

Each record carries a hash of its canonical content and of the previous record's hash, so
any edit, deletion or insertion breaks the chain; `verify()` walks it.

Issue 13: the chain is keyed and anchored.
- New records are hashed with HMAC-SHA256 under a secret key that is neither in the database
  nor in the instance folder (records/audit_keys.py); `key_id` names the key. Records written
  before that keep their plain SHA-256 (re-hashing them would itself be tampering): the
  first keyed record, "audit_chain_keyed", chains onto the last of them and so anchors them.
  A new key is announced in the chain by an "audit_key_rotated" record under the new key.
- The head (record count, last id, last hash, key id) is checkpointed in `audit_head`, in
  the same transaction as the records and under the same lock, so it is never ahead of the
  trail nor behind it, with any number of workers and across a crash. New ids follow the
  head's last id (no gaps, whatever rolled back). `flask audit checkpoint` exports the head
  signed with Ed25519: an attacker with the database and even the HMAC key cannot rewrite
  the trail up to an exported head without the signature showing it.

`append()` queues a record in the caller's transaction; the queue is written when the
transaction commits (a `before_commit` hook): the chain's head is read and extended
under a lock held only for those few statements (a PostgreSQL advisory lock; SQLite
write transactions are BEGIN IMMEDIATE), so concurrent saves cannot fork the chain
and do not queue behind each other's page work. A rollback discards the queue with
the change it described: if it is not committed, it did not happen, and neither did
its audit record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import contextvars
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.orm import Session

from .. import registry
from ..extensions import db
from ..timeutil import as_utc, utcnow
from . import audit_keys
from .formrecord import ClinicalRecord
from .models import AuditHead, AuditRecord

if TYPE_CHECKING:
    from ..auth.models import User

log = logging.getLogger(__name__)

GENESIS = "0" * 64
ANCHOR = "audit_chain_keyed"
ROTATION = "audit_key_rotated"
_KEYS = "cellstudy_audit_keys"
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


def chain_hash(prev_hash: str, values: dict, key: bytes | None = None) -> str:
    """The record's hash: plain SHA-256 (the records before issue 13) or, with a key,
    HMAC-SHA256 of the same bytes."""
    message = prev_hash.encode() + canonical(values)
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.digest(key, message, "sha256").hex()


def hmac_keys() -> audit_keys.HmacKeys:
    """The app's HMAC keys, read once per app (records/audit_keys.py says where from)."""
    app = current_app._get_current_object()
    keys = app.extensions.get(_KEYS)
    if keys is None:
        keys = app.extensions[_KEYS] = _load_keys(app)
    return keys


def _load_keys(app) -> audit_keys.HmacKeys:
    config = app.config
    forbidden = (app.instance_path,)
    keys = audit_keys.load_hmac_keys(
        key=config.get("AUDIT_KEY"),
        key_file=config.get("AUDIT_KEY_FILE"),
        retired=config.get("AUDIT_RETIRED_KEYS"),
        forbidden_dirs=forbidden,
    )
    if keys is not None:
        return keys
    dev_file = config.get("AUDIT_DEV_KEY_FILE")
    if not dev_file:
        raise audit_keys.AuditKeyError(
            "no audit trail key: set CELLSTUDY_AUDIT_KEY or CELLSTUDY_AUDIT_KEY_FILE (`flask audit keygen` makes one)"
        )
    audit_keys.refuse_inside(dev_file, forbidden, what="development audit key file")
    if not os.path.exists(dev_file):
        audit_keys.write_secret(dev_file, audit_keys.new_hmac_key() + "\n")
        log.warning("development: generated the audit trail's HMAC key in %s (outside the instance folder)", dev_file)
    return audit_keys.read_key_file(dev_file)


#: issue 15: the provenance every record appended inside ``provenance()`` carries in its reason
_PROVENANCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("cellstudy_audit_provenance", default=None)


@contextmanager
def provenance(text: str) -> Iterator[None]:
    """Every record appended inside carries `text` in its reason (after the record's own
    reason, if it has one): the ODM import's "imported from ODM file <name>, FileOID <oid>",
    written by the same services as the screens."""
    token = _PROVENANCE.set(text)
    try:
        yield
    finally:
        _PROVENANCE.reset(token)


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
    context = _PROVENANCE.get()
    if context:
        reason = f"{reason}; {context}" if reason else context
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
    keys = hmac_keys()  # before the lock: a missing key refuses the action, holding nothing
    key, kid = keys.current, keys.current_id
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK_KEY})
    head = session.execute(
        select(AuditHead.record_count, AuditHead.last_id, AuditHead.last_hash, AuditHead.key_id).where(
            AuditHead.id == 1
        )
    ).one_or_none()
    new_head = head is None
    if new_head:  # a database without migration 0013's row: the head is the trail as it is
        head = _head_from_trail(session)
    count, last_id, prev, head_kid = head
    last_id = last_id or 0
    if head_kid != kid:
        first = queued[0]
        if head_kid is None:
            marker = _system_record(
                ANCHOR,
                first["at"],
                new=kid,
                reason=f"records from here on are keyed (HMAC-SHA256); this one anchors the {count} before it",
            )
        else:
            marker = _system_record(ROTATION, first["at"], old=head_kid, new=kid, reason="audit trail key rotated")
        queued = [marker, *queued]
    rows = []
    for values in queued:
        last_id += 1
        digest = chain_hash(prev, values, key)
        rows.append({**values, "id": last_id, "prev_hash": prev, "hash": digest, "key_id": kid})
        prev = digest
    session.execute(insert(AuditRecord), rows)
    checkpoint = {"record_count": count + len(rows), "last_id": last_id, "last_hash": prev, "key_id": kid}
    if new_head:
        session.execute(insert(AuditHead).values(id=1, updated_at=utcnow(), **checkpoint))
    else:
        session.execute(update(AuditHead).where(AuditHead.id == 1).values(updated_at=utcnow(), **checkpoint))


def _system_record(action: str, at: datetime, *, old=None, new=None, reason=None) -> dict:
    return {
        "at": at,
        "user_id": None,
        "username": "system",
        "action": action,
        "site_id": None,
        "subject_id": None,
        "form": None,
        "form_id": None,
        "field": None,
        "old_value": old,
        "new_value": new,
        "reason": reason,
    }


def _head_from_trail(session) -> tuple:
    count, last_id = session.execute(select(func.count(), func.max(AuditRecord.id))).one()
    if last_id is None:
        return 0, None, GENESIS, None
    last_hash, kid = session.execute(
        select(AuditRecord.hash, AuditRecord.key_id).where(AuditRecord.id == last_id)
    ).one()
    return count, last_id, last_hash, kid


@event.listens_for(Session, "after_soft_rollback")
def _discard_pending(session: Session, previous_transaction) -> None:
    discard_pending(session)


def discard_pending(session: Session) -> None:
    """Forget the records queued by an action that rolled back (also when it had not
    reached the database yet, so no rollback event fires)."""
    session.info.pop(_PENDING, None)


@dataclass
class Finding:
    """One thing `verify()` found: the record it is at (None: the trail as a whole), what
    kind of problem, and a sentence for the person reading the report."""

    record_id: int | None
    kind: str
    message: str


#: the kinds of finding, in the words of the report
KINDS = {
    "link": "previous-hash link broken (a record deleted, inserted or re-chained)",
    "content": "content does not match its hash (a record rewritten)",
    "unkeyed": "a plain SHA-256 record after the keyed chain began (a forged append)",
    "key": "a change of key that the chain does not announce, or a key that is not configured",
    "gap": "ids missing in the keyed chain (records deleted)",
    "head": "the trail's end does not match audit_head (truncation or a forged append)",
    "signed_head": "the trail does not match the exported signed head",
}


@dataclass
class Verification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None
    findings: list[Finding] = field(default_factory=list)
    #: findings beyond `limit` are counted, not listed
    more: int = 0
    #: facts that are not tampering (gaps among the unkeyed records: a rolled-back insert)
    notes: list[str] = field(default_factory=list)
    last_id: int | None = None
    last_hash: str = GENESIS
    keyed: int = 0

    @property
    def total(self) -> int:
        return len(self.findings) + self.more


class _Report:
    def __init__(self, limit: int):
        self.limit = limit
        self.findings: list[Finding] = []
        self.more = 0

    def add(self, record_id: int | None, kind: str, message: str) -> None:
        if len(self.findings) < self.limit:
            self.findings.append(Finding(record_id, kind, message))
        else:
            self.more += 1


def _canonical_sql(dialect: str) -> str:
    """The canonical encoding (`_encode`) built by the database: one text per record, so
    the walk hashes without assembling fields in Python ("-" for null: length(NULL) is
    NULL). A record whose hash does not match is re-checked from its columns in Python
    (`_recheck`) before anything is reported."""
    stamp = _stamp_sql(dialect)
    if dialect == "postgresql":
        return " || ".join(
            [f"length({stamp}) || ':' || {stamp}"]
            + [f"coalesce(length({c}::text) || ':' || {c}::text, '-')" for c in _HASHED[1:]]
        )
    return "||".join([f"length({stamp})||':'||{stamp}"] + [f"ifnull(length({c})||':'||{c},'-')" for c in _HASHED[1:]])


def _stamp_sql(dialect: str) -> str:
    if dialect == "postgresql":
        return "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    return "replace(at, ' ', 'T')"


def _hmac_hex(key: bytes):
    """HMAC-SHA256 (RFC 2104) with the key's pads hashed once: a copy per record instead of
    a new HMAC context (about twice as fast in the walk). Checked against `hmac` below."""
    padded = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def digest(message: bytes) -> str:
        h = inner.copy()
        h.update(message)
        o = outer.copy()
        o.update(h.digest())
        return o.hexdigest()

    if digest(b"cellstudy") != hmac.digest(key, b"cellstudy", "sha256").hex():
        raise AssertionError("HMAC pads differ from hmac.digest")
    return digest


def _recheck(connection, dialect: str, rid: int, stored: str, key: bytes | None) -> tuple[str, bool]:
    """The slow, exact check of one record, its columns encoded in Python: (its stored
    prev_hash, whether its hash matches its content)."""
    columns = ", ".join(["prev_hash", _stamp_sql(dialect)] + list(_HASHED[1:]))
    row = connection.exec_driver_sql(
        f"SELECT {columns} FROM audit_record WHERE id = {int(rid)}"  # rid is an int from the walk
    ).one()
    message = row[0].encode() + _encode(row[1:])
    digest = hashlib.sha256(message).hexdigest() if key is None else hmac.digest(key, message, "sha256").hex()
    return row[0], digest == stored


def _marker(connection, rid: int) -> tuple:
    return connection.exec_driver_sql(
        f"SELECT action, old_value, new_value FROM audit_record WHERE id = {int(rid)}"
    ).one()


def verify(batch: int = 20000, *, signed_head: dict | None = None, limit: int = 50) -> Verification:
    """Walk the whole chain in id order and report every record that does not match (up to
    `limit` listed, the rest counted); then compare its end with `audit_head` and, when given,
    with an exported `signed_head` (already checked with the public key:
    `audit_keys.verify_signed_head`).

    Streams the records through the driver with the canonical text computed by the database,
    so the cost is about hashing the stored bytes. Each record is hashed onto the previous
    record's stored hash; only a record that does not match is read again, whole, to tell a
    broken link from rewritten content."""
    keys = hmac_keys()
    dialect = db.session.get_bind().dialect.name
    sql = f"SELECT id, hash, key_id, {_canonical_sql(dialect)} FROM audit_record ORDER BY id"  # the SQL is our own constant text per dialect, no input  # nosec B608
    connection = db.session.connection()
    result = (
        connection.exec_driver_sql(sql)
        if dialect != "postgresql"
        else connection.execution_options(stream_results=True, max_row_buffer=batch).exec_driver_sql(sql)
    )
    report = _Report(limit)
    notes: list[str] = []
    sha256 = hashlib.sha256
    prev = GENESIS
    checked = keyed = 0
    expected_id = 1
    walk_kid: str | None = None  # the key of the chain so far (None: the unkeyed records)
    key: bytes | None = None
    keyed_hex = None
    head_id = signed_head.get("last_id") if signed_head else None
    at_signed: tuple[int, str] | None = None  # (records up to the signed head's last id, its hash)
    last_id = None
    for rid, stored, kid, text_ in result:
        if rid != expected_id and checked:
            if walk_kid is None and kid is None:
                notes.append(f"ids {expected_id}..{rid - 1} are unused among the unkeyed records")
            else:
                report.add(rid, "gap", f"record {rid}: ids {expected_id}..{rid - 1} are missing (records deleted)")
        if kid != walk_kid:
            key = _key_change(connection, report, keys, rid, walk_kid, kid)
            keyed_hex = _hmac_hex(key) if key is not None else None
            walk_kid = kid
        if kid is None:
            if keyed:
                report.add(rid, "unkeyed", f"record {rid}: a plain SHA-256 record after the keyed chain began")
            digest = sha256((prev + text_).encode()).hexdigest()
        else:
            keyed += 1
            digest = keyed_hex((prev + text_).encode()) if keyed_hex is not None else stored
        if digest != stored:
            _mismatch(connection, dialect, report, rid, prev, stored, kid, key)
        prev = stored
        checked += 1
        last_id = rid
        expected_id = rid + 1
        if rid == head_id:
            at_signed = (checked, stored)
    _check_head(report, checked, last_id, prev)
    if signed_head is not None:
        _check_signed_head(report, signed_head, at_signed, checked, last_id)
    first = report.findings[0] if report.findings else None
    return Verification(
        ok=first is None,
        checked=checked,
        first_bad_id=first.record_id if first else None,
        problem=first.message if first else None,
        findings=report.findings,
        more=report.more,
        notes=notes,
        last_id=last_id,
        last_hash=prev,
        keyed=keyed,
    )


def _mismatch(connection, dialect, report: _Report, rid: int, prev: str, stored: str, kid, key) -> None:
    """Why a record's hash differs: a broken link to the record before it, rewritten content,
    or both (a record that really matches, e.g. text the database measures differently, is no
    finding)."""
    prev_hash, content_ok = _recheck(connection, dialect, rid, stored, key)
    if prev_hash != prev:
        report.add(
            rid,
            "link",
            f"record {rid}: previous-hash link broken (expected {prev[:12]}…, stored {prev_hash[:12]}…)",
        )
    if not content_ok:
        scheme = f"HMAC-SHA256, key {kid}" if kid else "SHA-256"
        report.add(rid, "content", f"record {rid}: content does not match its hash ({scheme})")


def _key_change(connection, report: _Report, keys, rid: int, was: str | None, kid: str | None) -> bytes | None:
    """A record whose key differs from the one before: it must be the anchor (the first keyed
    record) or a rotation record naming both keys. Returns the key (None: not configured)."""
    if kid is None:
        return None  # reported as "unkeyed" by the walk
    action, old, new = _marker(connection, rid)
    if was is None and not (action == ANCHOR and new == kid):
        report.add(rid, "key", f"record {rid}: the first keyed record is not the chain's anchor ({ANCHOR})")
    if was is not None and not (action == ROTATION and old == was and new == kid):
        report.add(rid, "key", f"record {rid}: key {kid} replaces {was} without a {ROTATION} record")
    key = keys.by_id.get(kid)
    if key is None:
        report.add(rid, "key", f"record {rid}: key id {kid} is not configured: the records from here cannot be checked")
    return key


def _check_head(report: _Report, count: int, last_id: int | None, last_hash: str) -> None:
    head = db.session.execute(
        select(AuditHead.record_count, AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)
    ).one_or_none()
    if head is None:
        report.add(None, "head", "audit_head has no row: the trail's end cannot be checked")
        return
    if tuple(head) == (count, last_id, last_hash):
        return
    if head.record_count > count or (head.last_id or 0) > (last_id or 0):
        what = f"records after id {last_id} were deleted (truncation)"
    elif head.record_count < count:
        what = f"{count - head.record_count} record(s) were added without the write path (a forged append)"
    else:
        what = "the last record's hash differs (rewritten)"
    report.add(
        last_id,
        "head",
        f"audit_head records {head.record_count} records ending at id {head.last_id} ({head.last_hash[:12]}…); "
        f"the trail has {count} ending at id {last_id} ({last_hash[:12]}…): {what}",
    )


def _check_signed_head(report: _Report, doc: dict, at_signed, count: int, last_id: int | None) -> None:
    head_id, head_count, head_hash = doc["last_id"], doc["count"], doc["last_hash"]
    signed = f"the signed head of {doc.get('at')} ({head_count} records ending at id {head_id})"
    if head_id is None:
        if count < head_count:
            report.add(None, "signed_head", f"{signed}: the trail has fewer records ({count})")
        return
    if at_signed is None:
        report.add(
            head_id,
            "signed_head",
            f"record {head_id} is missing: {signed}; the trail ends at id {last_id} (truncation)",
        )
        return
    upto, stored = at_signed
    if stored != head_hash:
        report.add(
            head_id,
            "signed_head",
            f"record {head_id}: its hash {stored[:12]}… differs from {signed}, {head_hash[:12]}…: "
            "the trail was rewritten up to it",
        )
    if upto != head_count:
        report.add(
            head_id,
            "signed_head",
            f"{upto} records up to id {head_id}, {signed} says {head_count}: records deleted or inserted",
        )


def signed_head_payload() -> dict:
    """The head to export: audit_head as committed (the caller verified the trail first)."""
    head = db.session.execute(
        select(AuditHead.record_count, AuditHead.last_id, AuditHead.last_hash, AuditHead.key_id).where(
            AuditHead.id == 1
        )
    ).one()
    return {
        "count": head.record_count,
        "last_id": head.last_id,
        "last_hash": head.last_hash,
        "key_id": head.key_id,
        "at": utcnow().isoformat(),
    }


def for_subject(subject_id: int) -> Sequence[AuditRecord]:
    return (
        db.session.execute(
            select(AuditRecord).where(AuditRecord.subject_id == subject_id).order_by(AuditRecord.id.desc())
        )
        .scalars()
        .all()
    )


# --- replay: the clinical tables against the trail (issue 13) --------------------------------

#: the actions that set a field's value ("field old -> new"; create opens the row)
_VALUE_ACTIONS = ("set", "update", "status", "assign")
_MISSING = object()


@dataclass
class Replay:
    ok: bool
    rows: int
    values: int
    findings: list[Finding] = field(default_factory=list)
    more: int = 0

    @property
    def total(self) -> int:
        return len(self.findings) + self.more


def audited_models() -> dict[str, type]:
    """{stored form name: model} of every clinical record (`ClinicalRecord`) the registry
    declares: what the write path audits, field by field."""
    return {
        name: entry.model
        for name, entry in registry.record_types().items()
        if entry.model is not None and issubclass(entry.model, ClinicalRecord)
    }


def _declared_fields(name: str) -> tuple[str, ...]:
    """The CRF's own fields: each is set through the write path, so one that the trail never
    set must be empty. (Fields the system derives at creation, such as an AE's category, are
    compared only where the trail names them.)"""
    form = registry.get(name)
    return form.field_names if form is not None else ()


def _stored(row, name: str):
    """The row's value of an audited field, as the write path read it (`get_field`)."""
    if hasattr(row, "_is_column") and not row._is_column(name):
        return row.get_field(name)  # an answer in the CRF's JSON data
    if not hasattr(type(row), name):
        return _MISSING
    value = getattr(row, name)
    # SQLite returns a naive UTC datetime where the trail wrote an aware one
    return as_utc(value) if isinstance(value, datetime) else value


def replay(limit: int = 50) -> Replay:
    """Rebuild every clinical record's current values from the trail (the last "field
    old -> new" of each field) and name each stored value that differs: a value changed in
    the database with no audit record, a row with no "create" record, a created row gone."""
    models = audited_models()
    sql = (
        "SELECT action, form, form_id, field, new_value FROM audit_record "
        "WHERE form IN ({}) AND action IN ('create', {}) ORDER BY id"
    ).format(
        ", ".join(f"'{n}'" for n in models), ", ".join(f"'{a}'" for a in _VALUE_ACTIONS)
    )  # registry names and our constants, no input  # nosec B608
    trail: dict[tuple[str, int], dict[str, str | None]] = {}
    for action, form, form_id, name, new in db.session.connection().exec_driver_sql(sql):
        values = trail.setdefault((form, form_id), {})
        if action != "create" and name:
            values[name] = new
    report = _Report(limit)
    rows = compared = 0
    for form, model in models.items():
        declared = _declared_fields(form)
        seen = set()
        for row in db.session.execute(select(model).order_by(model.id)).scalars():
            rows += 1
            seen.add(row.id)
            where = f"{model.__tablename__} row {row.id} ({form})"
            expected = trail.get((form, row.id))
            if expected is None:
                report.add(None, "replay", f"{where}: no audit record created it")
                continue
            for name in {*expected, *declared}:
                stored = _stored(row, name)
                if stored is _MISSING:
                    continue
                compared += 1
                want = expected.get(name)
                if to_text(stored) != want:
                    report.add(
                        None,
                        "replay",
                        f"{where}, field {name}: stored {to_text(stored)!r}, the audit trail says {want!r}",
                    )
        for key in trail:
            if key[0] == form and key[1] not in seen:
                report.add(None, "replay", f"{model.__tablename__} row {key[1]} ({form}): audited but not in the table")
    return Replay(not report.findings and not report.more, rows, compared, report.findings, report.more)
