"""Server-side sessions (issue 13): a log-in is a `UserSession` row, the cookie only names it.

The Flask session cookie carries a random id (`sid`); the database keeps its SHA-256. Every
request loads the user through `load_user` with one indexed query (the session row, its
user and the user's sites, joined): a revoked, unknown or idle session signs nobody in,
whatever copy of the cookie is replayed, from whichever browser. The idle limit
(PERMANENT_SESSION_LIFETIME) is judged here from `last_seen_at`, which is written at most
once per SESSION_TOUCH_SECONDS, not on every request.

Time is the machine's clock (`timeutil.wall_clock`): idleness is real time away from the
browser, and a test moving the study clock by days keeps its sessions."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from flask import current_app, g, request, session
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..records.transaction import transaction
from ..timeutil import as_utc, wall_clock
from .models import User, UserSession

#: the cookie's key for the session id
SID = "sid"
#: why a request's session ended (g.session_ended), for the page that says so
IDLE, REVOKED = "idle", "revoked"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(user: User) -> None:
    """A new session for `user` in this browser (at log-in, and when a password change
    re-issues it): the row, and its id in the cookie."""
    token = secrets.token_urlsafe(32)
    now = wall_clock()
    agent = (request.user_agent.string or "")[:200] or None
    with transaction():
        db.session.add(
            UserSession(token_hash=_digest(token), user_id=user.id, created_at=now, last_seen_at=now, user_agent=agent)
        )
    session[SID] = token
    session.permanent = True  # the browser drops the cookie after the idle limit too


def load_user(user_id: str) -> User | None:
    """Flask-Login's user loader: the user of this request's open session, else None (and
    g.session_ended says why, when the cookie named a session that has ended)."""
    token = session.get(SID)
    if not isinstance(token, str) or not user_id.isdigit():
        return None
    row = (
        db.session.execute(
            select(UserSession)
            .where(UserSession.token_hash == _digest(token), UserSession.revoked_at.is_(None))
            .options(joinedload(UserSession.user).joinedload(User.sites))
        )
        .unique()
        .scalar_one_or_none()
    )
    if row is None or row.user_id != int(user_id):
        g.session_ended = REVOKED
        return None
    now = wall_clock()
    idle = now - as_utc(row.last_seen_at)
    row_id, user = row.id, row.user  # read before a write transaction expires them (SQLite)
    if idle > current_app.config["PERMANENT_SESSION_LIFETIME"]:
        with transaction():
            _revoke(UserSession.id == row_id, IDLE, now)
        g.session_ended = IDLE
        return None
    if idle >= timedelta(seconds=current_app.config["SESSION_TOUCH_SECONDS"]):
        with transaction():
            db.session.execute(
                update(UserSession)
                .where(UserSession.id == row_id, UserSession.revoked_at.is_(None))
                .values(last_seen_at=now)
                .execution_options(synchronize_session=False)
            )
    return user


def _revoke(condition: ColumnElement[bool], reason: str, now: datetime | None = None) -> None:
    db.session.execute(
        update(UserSession)
        .where(condition, UserSession.revoked_at.is_(None))
        .values(revoked_at=now or wall_clock(), revoke_reason=reason)
        .execution_options(synchronize_session=False)
    )


def end(reason: str = "logout") -> None:
    """End this browser's session (log-out)."""
    token = session.get(SID)
    if isinstance(token, str):
        with transaction():
            _revoke(UserSession.token_hash == _digest(token), reason)


def revoke_all(user_id: int, reason: str) -> None:
    """End every open session of a user (part of the caller's action: a password change,
    disabling the account, a role or site change, an account lock)."""
    with transaction():
        _revoke(UserSession.user_id == user_id, reason)


def open_sessions(user_id: int) -> int:
    """How many sessions of the user are open (not revoked; idle ones end at their next use)."""
    return len(
        db.session.execute(
            select(UserSession.id).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        ).all()
    )
