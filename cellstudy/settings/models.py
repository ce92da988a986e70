"""The study amendments table: the bottom layer reads the definition in force from it
(cellstudy.settings); the amendments feature (cellstudy.amendments) writes it."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Date, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow


class StudyAmendment(db.Model):
    """An amendment of the study settings (issue 3), a controlled change (issue 11): the
    admin proposes it (a version label, a reason, an effective date and the complete
    overrides of the default definition, study.py, built on the amendment it follows,
    `base`); it takes effect only once an investigator approves it with an e-signature.
    The definition in force is the latest approved amendment whose effective date (a UTC
    date) has arrived; `in_force_at` is written when it comes into force (cellstudy/amendments)."""

    __tablename__ = "study_amendment"
    __table_args__ = (Index("ix_study_amendment_status_effective", "status", "effective_date"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    # The version label ("2.0 (amendment 1)"). The column is "version" (issue 3); the attribute
    # is `label` so that nothing mistakes it for a record's optimistic-locking version.
    label: Mapped[str] = mapped_column("version", String(60))
    overrides: Mapped[dict] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    status: Mapped[str] = mapped_column(String(20), default="proposed")
    effective_date: Mapped[date] = mapped_column(Date)
    base_id: Mapped[int | None] = mapped_column(ForeignKey("study_amendment.id"))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    in_force_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    created_by = relationship("User", foreign_keys=[created_by_id])
    decided_by = relationship("User", foreign_keys=[decided_by_id])
    base = relationship("StudyAmendment", remote_side=[id])
    signature = relationship("Signature")
