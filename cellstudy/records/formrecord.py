"""Columns and behaviour shared by every clinical form (versioned, audited, signable)."""

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from ..timeutil import utcnow


class ClinicalRecord:
    """Mixin: a row of a subject's clinical data. A study, subject or form lock protects
    exactly these rows (PROTOCOL 7): the lock guard of every flush refuses to write one of
    a locked subject, whatever code path wrote it. Reference data (the CTCAE dictionary),
    the study definition and derived rows (the infusion judgements) are not clinical records."""

    def locked_subject_id(self) -> int | None:
        """The subject whose locks protect this row."""
        subject_id = getattr(self, "subject_id", None)
        if subject_id is None and getattr(self, "subject", None) is not None:
            subject_id = self.subject.id
        return subject_id


class FormRecord(ClinicalRecord):
    """Mixin: optimistic-locking version, life-cycle status, who changed it last.

    Subclasses say how a field is read and written (`get_field` / `set_field`), so
    `records.save` can diff, audit and apply changes the same way for every form."""

    FORM_NAME = "form"

    version: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The study-definition version in force at the record's last save (issue 11), set by the
    # write path (records.service); its PDF prints it. Null only for rows written outside it.
    study_version: Mapped[str | None] = mapped_column(String(60))

    @declared_attr
    def updated_by_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("user.id"))

    @declared_attr
    def updated_by(cls):
        return relationship("User", foreign_keys=[cls.updated_by_id])

    @declared_attr.directive
    def __mapper_args__(cls):
        # The UPDATE carries "WHERE version = <loaded>": a concurrent save cannot slip
        # between our version check and our write (PROTOCOL 7, no lost update).
        # records.bump() sets the new number once per user action, not once per flush.
        return {"version_id_col": cls.version, "version_id_generator": False}

    def get_field(self, name):
        return getattr(self, name)

    def set_field(self, name, value) -> None:
        setattr(self, name, value)

    @property
    def site_id(self) -> int:
        return self.subject.site_id


class DataFormRecord(FormRecord):
    """A CRF whose answers live in one JSON column as canonical values (records/crf.py):
    exact decimal text, ISO dates, booleans; nothing is rounded on the way in or out."""

    data: Mapped[dict] = mapped_column(JSON, default=dict)

    def _is_column(self, name: str) -> bool:
        """Structural fields (a planned date, a state, a reason) are table columns; the
        CRF's answers are keys of `data`."""
        return name != "data" and name in self.__table__.columns

    def get_field(self, name):
        if self._is_column(name):
            return getattr(self, name)
        return (self.data or {}).get(name)

    def set_field(self, name, value) -> None:
        if self._is_column(name):
            setattr(self, name, value)
            return
        data = dict(self.data or {})  # a new dict so the JSON column is marked dirty
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
        self.data = data
