"""The one owner of a write transaction (issue 12): ``with records.transaction(): ...``.

A user action that writes (a save, an enrolment, a query reply, an export's audit record)
runs inside one ``transaction()`` block. The outermost block commits when it ends and rolls
back on any exception; a block opened by a service that another service calls joins the
caller's transaction, so no ``commit=False`` flags travel between functions and a refusal
anywhere leaves nothing of the action behind.

SQLite: a write transaction takes the write lock when it starts (``BEGIN IMMEDIATE``,
below) and nothing else does. Reads (a page, an export's rows, the form a POST validates) run in ordinary deferred transactions, which take no write lock, so a long
read never holds the write lock and never has to upgrade to it. When ``transaction()`` starts
while a read transaction is open, it ends the read first (the rows read are re-read inside
the write transaction, so a decision is taken on current data). A statement that writes in a
read transaction is a bug: under the ``STRICT_TRANSACTIONS`` setting (on in tests) it raises
:class:`WriteOutsideTransaction` at the statement, otherwise it is logged.

Hooks around the end of an action:
- :func:`after_commit`: work that must follow the commit, never precede it (dropping a
  per-process cache of what the action changed).
- :func:`after_rollback`: a write that must outlive a refused action, run in a fresh
  transaction once the action rolled back (a refused e-signature is itself recorded,
  21 CFR 11.300(d)).
- A :class:`~sqlalchemy.orm.exc.StaleDataError` at the commit is a version conflict of the
  record being saved (:func:`saving` names it): it becomes ``StaleVersion`` with that record
  re-read, as a conflict caught at the flush does.
"""

from __future__ import annotations

import contextvars
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm.exc import StaleDataError

from ..extensions import db
from . import audit

log = logging.getLogger(__name__)

_DEPTH = "cellstudy_tx_depth"
_AFTER_ROLLBACK = "cellstudy_after_rollback"
_AFTER_COMMIT = "cellstudy_after_commit"
_SAVING = "cellstudy_saving"
_BUMPED = "cellstudy_bumped"

# "write": inside transaction(); "read": a background job outside it; unset: see begin_mode().
_mode: contextvars.ContextVar[str | None] = contextvars.ContextVar("cellstudy_tx_mode", default=None)


class WriteOutsideTransaction(RuntimeError):
    """A statement wrote in a read transaction (SQLite would have to upgrade its lock)."""


def depth() -> int:
    return db.session.info.get(_DEPTH, 0)


def active() -> bool:
    """Whether the caller runs inside ``transaction()``."""
    return depth() > 0


def require_active(what: str) -> None:
    """For the write functions that are only ever a part of an action (create, sign, ...)."""
    if not active():
        raise RuntimeError(f"{what} must run inside records.transaction()")


@contextmanager
def reads_only() -> Iterator[None]:
    """Mark the current work (a background job) as one whose transactions are reads unless
    they are a ``transaction()``, as a request's are."""
    token = _mode.set("read")
    try:
        yield
    finally:
        _mode.reset(token)


def begin_mode() -> str:
    """How a new database transaction starts: "write" (SQLite: BEGIN IMMEDIATE) or "read".
    Inside ``transaction()``: write. In a request or a background job: read. Elsewhere (the
    command line, scripts): write, so a command's read-then-write never meets a stale
    snapshot."""
    mode = _mode.get()
    if mode is not None:
        return mode
    from flask import has_request_context

    return "read" if has_request_context() else "write"


@contextmanager
def transaction() -> Iterator[None]:
    session = db.session()
    level = session.info.get(_DEPTH, 0)
    if level > 0:  # a part of the caller's action
        session.info[_DEPTH] = level + 1
        try:
            yield
        finally:
            session.info[_DEPTH] = level
        return
    _end_read(session)
    queue = _writers_queue(session)
    token = _mode.set("write")
    session.info[_DEPTH] = 1
    try:
        yield
        _commit(session)
    except BaseException:
        session.rollback()
        _leave(queue)
        queue = None
        audit.discard_pending(session)  # queued before any statement: no rollback event saw them
        _mode.reset(token)
        token = None
        session.info[_DEPTH] = 0
        session.info.pop(_AFTER_COMMIT, None)
        _run_after_rollback(session)
        raise
    finally:
        _leave(queue)
        session.info[_DEPTH] = 0
        session.info.pop(_SAVING, None)
        session.info.pop(_BUMPED, None)
        if token is not None:
            _mode.reset(token)
    for fn in session.info.pop(_AFTER_COMMIT, None) or []:
        fn()


def after_commit(fn: Callable[[], None]) -> None:
    """Run `fn` once the current action has committed (e.g. drop a per-process cache of
    what it changed); never when it rolls back."""
    require_active("records.after_commit()")
    db.session.info.setdefault(_AFTER_COMMIT, []).append(fn)


def after_rollback(fn: Callable[[], None]) -> None:
    """Run `fn` in a transaction of its own after the current action has rolled back."""
    require_active("records.after_rollback()")
    db.session.info.setdefault(_AFTER_ROLLBACK, []).append(fn)


def saving(record: Any) -> None:
    """The record whose version this action bumps (a conflict at the commit names it)."""
    db.session.info.setdefault(_SAVING, []).append(record)


def _end_read(session) -> None:
    if not session.in_transaction():
        return
    if session.new or session.dirty or session.deleted:
        # changes made before the action began belong to it: keep them for the write transaction
        _check_pending_without_owner(session)
        return
    if db.engine.dialect.name == "sqlite":
        session.commit()  # ends the read snapshot; loaded rows are re-read in the write transaction


def _check_pending_without_owner(session) -> None:
    log.debug("changes pending before records.transaction(): %s", list(session.new) + list(session.dirty))


def _commit(session) -> None:
    session.info.pop(_BUMPED, None)
    try:
        session.commit()
    except StaleDataError:
        from .service import StaleVersion  # the message names the record's last editor

        session.rollback()
        records = session.info.pop(_SAVING, None) or []
        if not records:
            raise
        session.refresh(records[0])
        raise StaleVersion(records[0]) from None


def _run_after_rollback(session) -> None:
    pending = session.info.pop(_AFTER_ROLLBACK, None) or []
    for fn in pending:
        with transaction():
            fn()


# --- SQLite: the queue of the requests' writers ---------------------------------------------------
#
# SQLite has one write lock. A writer that finds it taken waits in SQLite's busy handler, which
# sleeps and retries (1, 2, 5, ... then 100 ms between tries) and serves nobody in order: a writer
# that just committed and begins again finds the lock free while the others sleep, so under load
# some saves wait a second or more (issue 14: the save's p99 was 1.4 s at 8 connections while its
# p50 was 160 ms). The requests' write transactions therefore first queue on an exclusive
# flock(2) of a file beside the database: the kernel wakes a waiter the moment the lock is
# released, and BEGIN IMMEDIATE then finds the write lock free. bench/RESULTS.md ("Issue 14",
# the writers' queue) has the figures. Only requests queue: their transactions are short by design;
# a background job or a command (which may hold a transaction for long) keeps SQLite's own wait,
# bounded by busy_timeout, and a request behind it waits there as before. The lock is released
# when the transaction ends (and by the kernel if the process dies).

BUSY_TIMEOUT_MS = 10_000  # SQLite's own wait for its locks (PRAGMA busy_timeout, cellstudy/__init__.py)


def _queue_path(session) -> str | None:
    url = session.get_bind().url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or "mode=memory" in str(url):
        return None
    return url.database + "-writers"


def _writers_queue(session) -> int | None:
    """Wait for this request's turn to write (SQLite, a file database); the lock's descriptor."""
    from flask import has_request_context  # the records layer runs outside Flask too (commands)

    if not has_request_context():
        return None
    path = _queue_path(session)
    if path is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _leave(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


# --- SQLite: how a transaction begins, and the guard against upgrading a read ----------------


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return
    mode = begin_mode()
    conn.info["cellstudy_read_tx"] = mode == "read"
    conn.exec_driver_sql("BEGIN" if mode == "read" else "BEGIN IMMEDIATE")


@event.listens_for(Engine, "before_cursor_execute")
def _refuse_upgrade(conn, cursor, statement, parameters, context, executemany) -> None:
    if conn.dialect.name != "sqlite" or not conn.info.get("cellstudy_read_tx"):
        return
    verb = statement.lstrip()[:6].upper()
    if verb not in ("INSERT", "UPDATE", "DELETE"):
        return
    message = f"a write in a read transaction (not inside records.transaction()): {statement[:80]}"
    from flask import current_app, has_app_context

    if has_app_context() and current_app.config.get("STRICT_TRANSACTIONS"):
        raise WriteOutsideTransaction(message)
    log.warning(message)
