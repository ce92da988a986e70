"""Infusions, lymphodepletion, visits, DLT assessments, deviations and dose-escalation
reviews (PROTOCOL 5, issue 3)."""

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..records.formrecord import ClinicalRecord, DataFormRecord
from ..timeutil import utcnow

INFUSION_STATES = ("scheduled", "given", "cancelled")
VISIT_STATES = ("planned", "done", "missed")


class Infusion(DataFormRecord, db.Model):
    """One NK-cell infusion: scheduled (state), then administered (the CRF in `data`).
    Rescheduling and cancelling keep the history in the audit trail."""

    __tablename__ = "infusion"
    FORM_NAME = "infusion"
    # the calendar: covering (the subject is joined for its site), so the count and the page
    # of a 4-week window read the index alone (issue 14)
    __table_args__ = (Index("ix_infusion_calendar", "state", "planned_date", "subject_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    planned_date: Mapped[date] = mapped_column(Date, index=True)
    state: Mapped[str] = mapped_column(String(20), default="scheduled")
    dose_level: Mapped[str | None] = mapped_column(String(20))
    target_deviation_reason: Mapped[str | None] = mapped_column(Text)
    override_reason: Mapped[str | None] = mapped_column(Text)
    override_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    # the lockouts ({code, reason}) the override's signature covers: a lockout that appears
    # later (another AE, a new exposure) is not covered and locks the infusion again
    override_lockouts: Mapped[list | None] = mapped_column(JSON)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # issue 15: an infusion already given, brought in by an ODM import (the FileOID)
    imported_from: Mapped[str | None] = mapped_column(String(120))

    subject = relationship("Subject", back_populates="infusions")
    # loaded with the infusions, in the same statement (a page's infusions need no query of their own)
    judgement = relationship("InfusionJudgement", back_populates="infusion", uselist=False, lazy="joined")

    @property
    def date(self) -> date:
        """The day that counts: the administration date once given, else the plan."""
        given = (self.data or {}).get("administration_date")
        return date.fromisoformat(given) if given else self.planned_date


class InfusionJudgement(db.Model):
    """The stored judgement of a planned (not yet given) infusion: the lockouts of PROTOCOL
    5.2 and the stagger of 5.3 for its planned date, judged again in the transaction that
    changes any fact it depends on (issue 11, infusions/judgement.py). Pages read it; they
    never recompute it per row. Derived data: not an audited clinical record."""

    __tablename__ = "infusion_judgement"
    __table_args__ = (Index("ix_infusion_judgement_site_locked", "site_id", "locked"),)
    infusion_id: Mapped[int] = mapped_column(ForeignKey("infusion.id"), primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    number: Mapped[int] = mapped_column(Integer)
    planned_date: Mapped[date] = mapped_column(Date)
    # any lockout the scheduling override does not cover
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{code, until, reason, overridden}] in the order of PROTOCOL 5.2, then stagger
    lockouts: Mapped[list] = mapped_column(JSON, default=list)
    study_version: Mapped[str] = mapped_column(String(60))
    judged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    infusion = relationship("Infusion", back_populates="judgement")
    subject = relationship("Subject")

    @property
    def open_lockouts(self) -> list[dict]:
        return [lo for lo in self.lockouts if not lo.get("overridden")]


class LymphodepletionDay(DataFormRecord, db.Model):
    """Lymphodepletion CRF, one per day (-5, -4, -3): drugs, doses, BSA, times."""

    __tablename__ = "lymphodepletion_day"
    FORM_NAME = "lymphodepletion"
    __table_args__ = (UniqueConstraint("subject_id", "day"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    day: Mapped[int] = mapped_column(Integer)
    planned_date: Mapped[date] = mapped_column(Date)

    subject = relationship("Subject", back_populates="lymphodepletion_days")


class Visit(DataFormRecord, db.Model):
    """A follow-up visit of the schedule (PROTOCOL 5.1) with its window and its CRF."""

    __tablename__ = "visit"
    FORM_NAME = "visit"
    __table_args__ = (
        UniqueConstraint("subject_id", "code"),
        Index("ix_visit_calendar", "state", "target_date", "latest", "subject_id"),
    )  # the calendar, covering as the infusions' (issue 14)
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    code: Mapped[str] = mapped_column(String(10))
    label: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(Integer)
    target_date: Mapped[date] = mapped_column(Date, index=True)
    earliest: Mapped[date] = mapped_column(Date)
    latest: Mapped[date] = mapped_column(Date, index=True)
    state: Mapped[str] = mapped_column(String(20), default="planned")
    missed_reason: Mapped[str | None] = mapped_column(Text)

    subject = relationship("Subject", back_populates="visits")


class DltAssessment(DataFormRecord, db.Model):
    """DLT assessment at the end of the DLT window (PROTOCOL 5.3/6), signed by the investigator."""

    __tablename__ = "dlt_assessment"
    FORM_NAME = "dlt_assessment"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), unique=True)

    subject = relationship("Subject", back_populates="dlt_assessment")


class Deviation(ClinicalRecord, db.Model):
    """A protocol deviation: what happened, the reason given, and who signed it."""

    __tablename__ = "deviation"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    form: Mapped[str | None] = mapped_column(String(40))
    form_id: Mapped[int | None] = mapped_column(Integer)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))

    subject = relationship("Subject", back_populates="deviations")
    signature = relationship("Signature")
    created_by = relationship("User")


class EscalationReview(db.Model):
    """The investigator's signed dose-escalation review of a decision (PROTOCOL 5.3)."""

    __tablename__ = "escalation_review"
    FORM_NAME = "escalation_review"
    version = 1  # signed once, never edited
    id: Mapped[int] = mapped_column(primary_key=True)
    decision: Mapped[str] = mapped_column(String(20))
    level: Mapped[str | None] = mapped_column(String(20))
    counts: Mapped[list] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    # set in the same transaction, once the review row exists to be signed
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    signature = relationship("Signature")


AMENDMENT_STATUSES = ("proposed", "approved", "rejected", "withdrawn")
