"""Audit trail and e-signatures (PROTOCOL 7, 21 CFR Part 11)."""

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow


class AuditRecord(db.Model):
    """One append-only, hash-chained entry. No code path updates or deletes it; the
    database refuses it too (triggers created by the migration)."""

    __tablename__ = "audit_record"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"))
    form: Mapped[str | None] = mapped_column(String(40))
    form_id: Mapped[int | None] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # issue 13: None = plain SHA-256 (the records written before the keyed chain), else the
    # id of the HMAC key that hashed it (records/audit_keys.py)
    key_id: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_audit_record_subject", "subject_id", "id"),
        Index("ix_audit_record_form", "form", "form_id"),
        # the audit trail viewer's filters, each ending in id for its keyset pages (issue 6)
        Index("ix_audit_record_site", "site_id", "id"),
        Index("ix_audit_record_form_type", "form", "id"),
        Index("ix_audit_record_form_action", "form", "action", "id"),
        Index("ix_audit_record_username", "username", "id"),
        Index("ix_audit_record_action", "action", "id"),
        Index("ix_audit_record_at", "at"),
    )


class AuditHead(db.Model):
    """The chain's head, checkpointed outside the audited table in the transaction that
    appends the records (issue 13): one row, id 1. Triggers (migration 0013) refuse
    deleting it or moving it backwards."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    record_count: Mapped[int] = mapped_column(Integer)
    last_id: Mapped[int | None] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Signature(db.Model):
    """An electronic signature: printed name, UTC time and meaning (21 CFR 11.50).
    A change to the signed record invalidates it (PROTOCOL 7)."""

    __tablename__ = "signature"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    printed_name: Mapped[str] = mapped_column(String(120))
    meaning: Mapped[str] = mapped_column(String(200))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"), index=True)
    form: Mapped[str] = mapped_column(String(40))
    form_id: Mapped[int] = mapped_column(Integer)
    form_version: Mapped[int] = mapped_column(Integer)
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    invalidated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    invalidated_reason: Mapped[str | None] = mapped_column(Text)
    # issue 15: a historical signature brought in by an ODM import (the FileOID), never re-signed
    imported_from: Mapped[str | None] = mapped_column(String(120))

    user = relationship("User")

    #: a form's signatures, valid or not: the lookup of the monitoring state and the
    #: signatures list (issue 14: without it PostgreSQL scanned the table once per form)
    __table_args__ = (Index("ix_signature_form", "form", "form_id", "valid"),)


class Query(db.Model):
    """A data clarification query on a form or one of its fields (PROTOCOL 7). Issue 4
    opens system queries (discrepancies found by the app, e.g. an AE grade that differs
    from the grade computed from the CRS/ICANS assessments); issue 6 adds the thread,
    manual queries and the monitor's workflow on this table."""

    __tablename__ = "query"
    __table_args__ = (
        Index("ix_query_form", "form", "form_id", "field"),
        Index("ix_query_state_site", "state", "site_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"), index=True)
    form: Mapped[str] = mapped_column(String(40))
    form_id: Mapped[int | None] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(10), default="system")  # system | manual
    state: Mapped[str] = mapped_column(String(12), default="open")  # open | answered | closed | cancelled
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))  # None: opened by the system
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    close_note: Mapped[str | None] = mapped_column(Text)
    # issue 6 (monitoring): who is to answer, when it was answered, last activity;
    # the thread: QueryMessage (query.messages)
    assignee_role: Mapped[str | None] = mapped_column(String(20))  # coordinator | investigator
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    answered_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rule: Mapped[str | None] = mapped_column(String(40))  # the edit check that opened a system query

    created_by = relationship("User", foreign_keys=[created_by_id])
    closed_by = relationship("User", foreign_keys=[closed_by_id])
    assignee = relationship("User", foreign_keys=[assignee_id])
    answered_by = relationship("User", foreign_keys=[answered_by_id])


MESSAGE_KINDS = ("open", "answer", "close", "reopen", "cancel", "note")


class QueryMessage(db.Model):
    """One entry of a query's thread: who, when, what kind, the text."""

    __tablename__ = "query_message"
    id: Mapped[int] = mapped_column(primary_key=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("query.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))  # None: the system
    kind: Mapped[str] = mapped_column(String(10))
    text: Mapped[str] = mapped_column(Text)

    user = relationship("User")
    query = relationship("Query", backref=backref("messages", order_by="QueryMessage.id"))
