"""The background job table (issue 5): one row per job, progress kept in the database
so any web worker can show it."""

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow

STATUSES = ("queued", "running", "done", "failed")


class Job(db.Model):
    __tablename__ = "job"
    __table_args__ = (Index("ix_job_created_by", "created_by_id", "id"), Index("ix_job_status", "status"))
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    #: relative to the instance folder (never an absolute path: the folder may move)
    result_path: Mapped[str | None] = mapped_column(String(255))
    #: the download's file name
    result_name: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    #: the site the job's data comes from (None: several or all, decided by the task)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    created_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    #: "host:pid" of the process running it, to recognise a job whose process died
    worker: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    created_by = relationship("User")
    site = relationship("Site")

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    @property
    def percent(self) -> int:
        if self.status == "done":
            return 100
        return int(100 * self.progress_done / self.progress_total) if self.progress_total else 0

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self.status}>"
