"""Adverse events (PROTOCOL 6, issue 4): the CTCAE v5.0 dictionary in the database
(loaded by `flask ctcae load` from cellstudy/data/ctcae_v5.0.csv), AEs with their
grade episodes, CRS and ICANS assessments, and dismissed lab-based suggestions."""

from datetime import date, datetime

from sqlalchemy import Boolean, Date, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..enrollment.models import Subject
from ..extensions import db
from ..records.formrecord import ClinicalRecord, DataFormRecord
from ..timeutil import utcnow


class CtcaeTerm(db.Model):
    __tablename__ = "ctcae_term"
    id: Mapped[int] = mapped_column(primary_key=True)
    meddra_code: Mapped[str] = mapped_column(String(12), index=True)
    soc: Mapped[str] = mapped_column(String(120), index=True)
    term: Mapped[str] = mapped_column(String(200), unique=True)
    grade_1: Mapped[str | None] = mapped_column(Text)
    grade_2: Mapped[str | None] = mapped_column(Text)
    grade_3: Mapped[str | None] = mapped_column(Text)
    grade_4: Mapped[str | None] = mapped_column(Text)
    grade_5: Mapped[str | None] = mapped_column(Text)
    definition: Mapped[str | None] = mapped_column(Text)
    navigational_note: Mapped[str | None] = mapped_column(Text)


#: the covering index of the listings' count (cellstudy.safety.queries.count forces it on SQLite)
LISTING_COUNT_INDEX = "ix_adverse_event_listing_count"


class AdverseEvent(DataFormRecord, db.Model):
    """One adverse event (PROTOCOL 6). What the listings filter and sort on is a column;
    the rest of the CRF's answers live in `data`. The grade is the worst grade of its
    grade episodes; removal is a status with a reason (PROTOCOL 7)."""

    __tablename__ = "adverse_event"
    FORM_NAME = "adverse_event"
    __table_args__ = (
        UniqueConstraint("subject_id", "number"),
        Index("ix_adverse_event_onset", "onset_date", "id"),
        Index("ix_adverse_event_grade", "grade", "onset_date"),
        Index("ix_adverse_event_serious", "serious", "onset_date"),
        Index("ix_adverse_event_site_onset", "site_id", "onset_date"),
        # the safety listings at 100,000 AEs (migration 0006): the count reads this index
        # alone; PostgreSQL's descending sorts put empty values last (DESC NULLS LAST),
        # which needs indexes of their own there (SQLite's backward scan gives it as is)
        Index(
            LISTING_COUNT_INDEX,
            "onset_date",
            "status",
            "site_id",
            "grade",
            "serious",
            "related",
            "treatment_emergent",
            "dlt",
            "subject_id",
        ),
        Index("ix_adverse_event_grade_id", "grade", "id"),
        Index("ix_adverse_event_onset_desc", text("onset_date DESC NULLS LAST"), text("id DESC")).ddl_if(
            dialect="postgresql"
        ),
        Index("ix_adverse_event_grade_desc", text("grade DESC NULLS LAST"), text("id DESC")).ddl_if(
            dialect="postgresql"
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))  # the subject's, kept for the listings
    number: Mapped[int] = mapped_column(Integer)  # AE 1, 2, ... of the subject
    category: Mapped[str] = mapped_column(String(10), default="other")  # other | crs | icans
    term: Mapped[str | None] = mapped_column(String(200))
    soc: Mapped[str | None] = mapped_column(String(120))
    meddra_code: Mapped[str | None] = mapped_column(String(12))
    verbatim: Mapped[str | None] = mapped_column(String(200))
    onset_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    ongoing: Mapped[bool | None] = mapped_column(Boolean)
    grade: Mapped[int | None] = mapped_column(Integer)  # worst grade (of the episodes)
    computed_grade: Mapped[int | None] = mapped_column(Integer)  # CRS/ICANS: worst assessed grade
    serious: Mapped[bool | None] = mapped_column(Boolean)
    related_nk: Mapped[str | None] = mapped_column(String(20))
    related_ld: Mapped[str | None] = mapped_column(String(20))
    related: Mapped[bool | None] = mapped_column(Boolean)  # either attribution possible or more
    expectedness: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str | None] = mapped_column(String(20))
    outcome: Mapped[str | None] = mapped_column(String(30))
    death_date: Mapped[date | None] = mapped_column(Date)
    dlt: Mapped[bool | None] = mapped_column(Boolean)
    treatment_emergent: Mapped[bool] = mapped_column(Boolean, default=False)
    # SAE: the 24-hour clock runs from site awareness to the investigator's signed report
    awareness_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sae_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    sae_reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sae_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    # SUSAR: expedited report in 7 or 15 calendar days (ICH E2A)
    susar: Mapped[bool] = mapped_column(Boolean, default=False)
    susar_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    susar_reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    susar_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    deleted_reason: Mapped[str | None] = mapped_column(Text)

    subject = relationship("Subject", back_populates="adverse_events")
    site = relationship("Site")
    episodes: Mapped[list["GradeEpisode"]] = relationship(
        back_populates="adverse_event", order_by="(GradeEpisode.start_date, GradeEpisode.id)"
    )
    sae_signature = relationship("Signature", foreign_keys=[sae_signature_id])
    susar_signature = relationship("Signature", foreign_keys=[susar_signature_id])

    @property
    def label(self) -> str:
        return f"AE {self.number}"

    @property
    def current_grade(self) -> int | None:
        return self.episodes[-1].grade if self.episodes else self.grade


class GradeEpisode(ClinicalRecord, db.Model):
    """A stretch of an AE at one grade: a change in the patient ends the current episode
    and starts the next (issue 4). Corrections of a mistake edit the episode instead."""

    __tablename__ = "ae_grade_episode"
    FORM_NAME = "ae_grade_episode"
    id: Mapped[int] = mapped_column(primary_key=True)
    adverse_event_id: Mapped[int] = mapped_column(ForeignKey("adverse_event.id"), index=True)
    grade: Mapped[int] = mapped_column(Integer)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))

    adverse_event = relationship("AdverseEvent", back_populates="episodes")
    created_by = relationship("User")

    @property
    def subject(self):
        return self.adverse_event.subject


class CrsAssessment(DataFormRecord, db.Model):
    """One CRS assessment (ASTCT 2019): the components in `data`, the computed grade and
    what drove it. Assessments of one episode form a CRS event: the AE they feed."""

    __tablename__ = "crs_assessment"
    FORM_NAME = "crs_assessment"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    adverse_event_id: Mapped[int | None] = mapped_column(ForeignKey("adverse_event.id"), index=True)
    assessed_on: Mapped[date | None] = mapped_column(Date)
    grade: Mapped[int | None] = mapped_column(Integer)
    driver: Mapped[str | None] = mapped_column(String(80))

    subject = relationship("Subject")
    adverse_event = relationship("AdverseEvent")


class IcansAssessment(DataFormRecord, db.Model):
    """One ICANS assessment (ASTCT 2019) with the ten ICE items summed by the app."""

    __tablename__ = "icans_assessment"
    FORM_NAME = "icans_assessment"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    adverse_event_id: Mapped[int | None] = mapped_column(ForeignKey("adverse_event.id"), index=True)
    assessed_on: Mapped[date | None] = mapped_column(Date)
    ice_score: Mapped[int | None] = mapped_column(Integer)
    grade: Mapped[int | None] = mapped_column(Integer)
    driver: Mapped[str | None] = mapped_column(String(80))

    subject = relationship("Subject")
    adverse_event = relationship("AdverseEvent")


class LabSuggestionDismissal(ClinicalRecord, db.Model):
    """A lab-based AE suggestion the user dismissed (audited; it stays dismissed)."""

    __tablename__ = "lab_suggestion_dismissal"
    __table_args__ = (UniqueConstraint("visit_id", "lab", "grade"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visit.id"))
    lab: Mapped[str] = mapped_column(String(40))
    term: Mapped[str] = mapped_column(String(200))
    grade: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))


# The subject label the safety listings sort by (subject number, else screening number):
# `sort=subject` walks the subjects in this order and reads each one's AEs through
# ix_adverse_event_subject_id, instead of sorting every AE (migration 0006). Declared
# here, with the listings it serves, on the enrollment module's table.
Index("ix_subject_label", Subject.label)
