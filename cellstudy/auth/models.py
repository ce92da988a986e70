"""Users, roles and sites (PROTOCOL 2)."""

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, String, Table, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow

ROLES = ("coordinator", "investigator", "monitor", "data_manager", "admin")

user_site = Table(
    "user_site",
    db.metadata,
    Column("user_id", ForeignKey("user.id"), primary_key=True),
    Column("site_id", ForeignKey("site.id"), primary_key=True),
)


class Site(db.Model):
    __tablename__ = "site"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(8), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Sequences for screening and subject numbers: never reused (PROTOCOL 3).
    next_screening_seq: Mapped[int] = mapped_column(Integer, default=1)
    next_subject_seq: Mapped[int] = mapped_column(Integer, default=1)

    def __repr__(self) -> str:
        return f"<Site {self.code}>"


class User(UserMixin, db.Model):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # issue 13: set by an administrator's reset; every page leads to the change page until done
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    sites: Mapped[list[Site]] = relationship(secondary=user_site, order_by=Site.code)

    @property
    def is_active(self) -> bool:  # Flask-Login: disabled users cannot log in
        return self.active

    def __repr__(self) -> str:
        return f"<User {self.username} {self.role}>"


class UserSession(db.Model):
    """A log-in, on the server (issue 13): the browser's session cookie carries a random id
    whose SHA-256 is `token_hash` (the id itself is never stored). A request is signed in only
    while its row is not revoked and was seen within the idle limit, so log-out, a password
    change, disabling the account or changing its role or sites ends it everywhere, whatever
    copy of the cookie is replayed."""

    __tablename__ = "user_session"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    # the machine's clock (timeutil.wall_clock): real time away from the browser
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(String(40))
    user_agent: Mapped[str | None] = mapped_column(String(200))
    user: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return f"<UserSession {self.id} user={self.user_id} {'revoked' if self.revoked_at else 'open'}>"
