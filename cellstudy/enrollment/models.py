"""Subjects, screening forms, exposures and eligibility decisions (PROTOCOL 3, 4)."""

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    exists,
    func,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from ..extensions import db
from ..records.formrecord import ClinicalRecord, DataFormRecord, FormRecord
from ..timeutil import utcnow

# PROTOCOL 3: screening -> (screen_failed | enrolled) -> on_treatment -> follow_up -> (completed | withdrawn | died)
SUBJECT_STATUSES = (
    "screening",
    "screen_failed",
    "enrolled",
    "on_treatment",
    "follow_up",
    "completed",
    "withdrawn",
    "died",
)


class Subject(ClinicalRecord, db.Model):
    __tablename__ = "subject"
    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    screening_number: Mapped[str] = mapped_column(String(20), unique=True)
    subject_number: Mapped[str | None] = mapped_column(String(20), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="screening", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enrolled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dose_level: Mapped[str | None] = mapped_column(String(20), index=True)

    site = relationship("Site")
    screenings: Mapped[list["Screening"]] = relationship(back_populates="subject", order_by="Screening.attempt")
    exposures: Mapped[list["Exposure"]] = relationship(
        back_populates="subject", order_by="(Exposure.last_date, Exposure.id)"
    )
    decisions: Mapped[list["EligibilityDecision"]] = relationship(
        back_populates="subject", order_by="EligibilityDecision.id"
    )
    infusions = relationship("Infusion", back_populates="subject", order_by="(Infusion.number, Infusion.id)")
    lymphodepletion_days = relationship(
        "LymphodepletionDay", back_populates="subject", order_by="LymphodepletionDay.day"
    )
    visits = relationship("Visit", back_populates="subject", order_by="Visit.seq")
    dlt_assessment = relationship("DltAssessment", back_populates="subject", uselist=False)
    deviations = relationship("Deviation", back_populates="subject", order_by="Deviation.id")
    adverse_events = relationship("AdverseEvent", back_populates="subject", order_by="AdverseEvent.number")

    @hybrid_property
    def label(self) -> str:
        """The subject number once enrolled, else the screening number (in SQL: the
        coalesce that ix_subject_label indexes)."""
        return self.subject_number or self.screening_number

    @label.inplace.expression
    @classmethod
    def _label_expression(cls):
        return func.coalesce(cls.subject_number, cls.screening_number)

    def locked_subject_id(self) -> int | None:
        return self.id

    @property
    def current_screening(self) -> "Screening | None":
        return self.screenings[-1] if self.screenings else None

    @property
    def active_exposures(self) -> list["Exposure"]:
        return [e for e in self.exposures if e.status != "deleted"]

    @property
    def enrolment_decision(self) -> "EligibilityDecision | None":
        for decision in reversed(self.decisions):
            if decision.outcome == "enrolled":
                return decision
        return None


class Screening(DataFormRecord, db.Model):
    """The screening CRF (PROTOCOL 4.2); its answers live in `data` (DataFormRecord)."""

    __tablename__ = "screening"
    FORM_NAME = "screening"
    __table_args__ = (UniqueConstraint("subject_id", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("screening.id"))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    subject: Mapped[Subject] = relationship(back_populates="screenings")
    previous = relationship("Screening", remote_side="Screening.id")


class Exposure(FormRecord, db.Model):
    """A prior or concomitant therapy/procedure (PROTOCOL 4.4). One log per subject:
    the screening form's prior-therapy rows and the later concomitant log are the same
    records. Never deleted: status 'deleted' with a reason (PROTOCOL 7)."""

    __tablename__ = "exposure"
    FORM_NAME = "exposure"
    FIELDS = (
        "category",
        "name",
        "start_date",
        "last_date",
        "half_life_days",
        "physiological_replacement",
        "indication",
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    category: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    start_date: Mapped[date | None] = mapped_column(Date)
    last_date: Mapped[date | None] = mapped_column(Date)
    half_life_days: Mapped[str | None] = mapped_column(String(20))  # exact decimal text
    physiological_replacement: Mapped[bool] = mapped_column(Boolean, default=False)
    indication: Mapped[str | None] = mapped_column(String(200))
    deleted_reason: Mapped[str | None] = mapped_column(Text)

    subject: Mapped[Subject] = relationship(back_populates="exposures")


class EligibilityDecision(ClinicalRecord, db.Model):
    """The eligibility decision as signed or as recorded at a screen failure: the
    inputs, every criterion's status and reason, and the study-definition version."""

    __tablename__ = "eligibility_decision"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    screening_id: Mapped[int] = mapped_column(ForeignKey("screening.id"))
    screening_version: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))  # enrolled | screen_failed
    eligible: Mapped[str] = mapped_column(String(8))  # "true" | "false" | "null"
    inputs: Mapped[dict] = mapped_column(JSON)
    criteria: Mapped[dict] = mapped_column(JSON)
    failed_criteria: Mapped[list] = mapped_column(JSON, default=list)
    study_version: Mapped[str] = mapped_column(String(60))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
    # issue 15: a historical decision brought in by an ODM import (the FileOID), not re-taken
    imported_from: Mapped[str | None] = mapped_column(String(120))

    subject: Mapped[Subject] = relationship(back_populates="decisions")
    signature = relationship("Signature")
    decided_by = relationship("User")


class EligibilityReview(ClinicalRecord, db.Model):
    """An enrolled subject's eligibility to look at again (issue 11): the screening data
    changed after enrolment, or an amendment changes a criterion the signed decision
    rests on. The site's investigator re-confirms (a new signed EligibilityDecision kept
    beside the old one) or records a protocol deviation; either resolves it. At most one
    unresolved review per subject and cause (enforced in enrollment/reconfirm.py under the
    subject's row lock, and by the partial unique index behind it)."""

    __tablename__ = "eligibility_review"
    FORM_NAME = "eligibility_review"
    __table_args__ = (
        Index(
            "ux_eligibility_review_open",
            "subject_id",
            "cause",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    cause: Mapped[str] = mapped_column(String(20))  # screening_changed | amendment
    detail: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    opened_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    resolution: Mapped[str | None] = mapped_column(String(20))  # reconfirmed | deviation
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("eligibility_decision.id"))
    deviation_id: Mapped[int | None] = mapped_column(ForeignKey("deviation.id"))

    subject: Mapped[Subject] = relationship()
    opened_by = relationship("User", foreign_keys=[opened_by_id])
    resolved_by = relationship("User", foreign_keys=[resolved_by_id])
    decision = relationship("EligibilityDecision")
    deviation = relationship("Deviation")

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


# Whether the subject has any eligibility review, as a correlated EXISTS that the subject page
# reads in the same statement as the subject (undefer it there): most subjects have none, and
# the page then needs no query of the reviews at all.
Subject.has_reviews = column_property(
    exists().where(EligibilityReview.subject_id == Subject.id).correlate_except(EligibilityReview), deferred=True
)
