"""Monitoring records (issue 6): query threads, source data verification marks and
data locks. None of them is clinical data; every change to them is audited."""

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..records.models import MESSAGE_KINDS, QueryMessage  # noqa: F401  (declared with the query, in records)
from ..timeutil import utcnow

LOCK_SCOPES = ("form", "subject", "study")


class SdvMark(db.Model):
    """A field verified against source by a monitor. A later change of the field clears
    the mark (cleared_at, cleared_reason); the row stays as history."""

    __tablename__ = "sdv_mark"
    __table_args__ = (Index("ix_sdv_mark_form", "form", "form_id", "cleared_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"), index=True)
    form: Mapped[str] = mapped_column(String(40))
    form_id: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(64))
    form_version: Mapped[int] = mapped_column(Integer)
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    verified_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cleared_reason: Mapped[str | None] = mapped_column(Text)

    verified_by = relationship("User")


class SdvStatus(db.Model):
    """The stored SDV status of one completed form under an SDV plan (issue 14): how many of
    the fields the plan requires carry a current mark, and whether that is all of them.
    Judged again in the transaction that writes any fact it depends on (the form, its
    subject's site, its marks, the study in force: monitoring/sdv_status.py); the SDV page
    and the dashboards read it instead of counting marks per request. Derived data, not an
    audited record: `flask rejudge-sdv` rebuilds it from the facts."""

    __tablename__ = "sdv_status"
    __table_args__ = (Index("ix_sdv_status_site_form", "site_id", "form", "verified"),)
    form: Mapped[str] = mapped_column(String(40), primary_key=True)
    form_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    done: Mapped[int] = mapped_column(Integer)  # required fields with a current mark
    required: Mapped[int] = mapped_column(Integer)  # fields the plan requires
    verified: Mapped[bool] = mapped_column(Boolean)  # done >= required
    study_version: Mapped[str] = mapped_column(String(60))  # the definition it was judged under


class DataLock(db.Model):
    """A data manager's lock of one form, one subject or the whole study. Active while
    unlocked_at is null; unlocking needs a reason. Rows are never deleted."""

    __tablename__ = "data_lock"
    __table_args__ = (
        Index("ix_data_lock_form", "form", "form_id"),
        Index("ix_data_lock_scope", "scope", "unlocked_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(10))  # form | subject | study
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"), index=True)
    form: Mapped[str | None] = mapped_column(String(40))
    form_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    locked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    locked_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    unlocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unlocked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    unlock_reason: Mapped[str | None] = mapped_column(Text)

    locked_by = relationship("User", foreign_keys=[locked_by_id])
    unlocked_by = relationship("User", foreign_keys=[unlocked_by_id])
