"""The write path's hooks: what a feature needs to know of every write, registered at start-up.

Three kinds, all run inside the writing transaction:

- ``on_write(fn)``: ``fn(session, obj, created: bool, deleted: bool)`` for every row the
  transaction adds, changes or deletes, at each flush (so a row written by any code path is
  seen, not only those that call ``records.service``). A write hook only *notes* what the
  change affects (in ``session.info``); it must not write.
- ``before_commit(fn)``: ``fn(session)`` once the transaction's writes are flushed, just
  before it commits (and before the audit queue is chained): a hook here re-derives what
  the noted changes affect, in the same transaction, so that what commits is consistent.

- ``write_path()``: what ``records.service`` asks, at each write, of the layer that keeps
  locks, SDV, queries and casebook signatures (monitoring serves it at start-up with
  ``serve_write_path``): whether the record may be written, which queries a correction
  answers, and what to clear after it. Until it is served, nothing is locked or linked.

The records layer knows no feature: features register their hooks at start-up."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

WriteHook = Callable[[Session, object, bool, bool], None]
CommitHook = Callable[[Session], None]

_WRITE_HOOKS: list[WriteHook] = []
_COMMIT_HOOKS: list[CommitHook] = []
_RUNNING = "cellstudy_commit_hooks_running"


def on_write(fn: WriteHook) -> WriteHook:
    if fn not in _WRITE_HOOKS:
        _WRITE_HOOKS.append(fn)
    return fn


def before_commit(fn: CommitHook) -> CommitHook:
    if fn not in _COMMIT_HOOKS:
        _COMMIT_HOOKS.append(fn)
    return fn


@event.listens_for(Session, "before_flush")
def _notify_writes(session: Session, flush_context, instances) -> None:
    if not _WRITE_HOOKS:
        return
    with session.no_autoflush:
        for obj in list(session.new):
            for hook in _WRITE_HOOKS:
                hook(session, obj, True, False)
        for obj in list(session.dirty):
            if not session.is_modified(obj, include_collections=False):
                continue
            for hook in _WRITE_HOOKS:
                hook(session, obj, False, False)
        for obj in list(session.deleted):
            for hook in _WRITE_HOOKS:
                hook(session, obj, False, True)


def _run_commit_hooks(session: Session) -> None:
    if not _COMMIT_HOOKS or session.info.get(_RUNNING):
        return
    session.info[_RUNNING] = True
    try:
        session.flush()  # every pending write passes the write hooks first
        for hook in _COMMIT_HOOKS:
            hook(session)
        session.flush()
    finally:
        session.info.pop(_RUNNING, None)


# Inserted first: the commit hooks' own writes are flushed (and any audit records they
# queue are chained) by the listeners that run after this one.
event.listen(Session, "before_commit", _run_commit_hooks, insert=True)


class WritePathHooks:
    """The write path's questions to the monitoring layer; this base answers "nothing to do"."""

    def check_writable(self, record) -> None:
        """Raise a RecordError if a lock forbids writing `record`."""

    def lock_in_force(self, record, subject):
        """The lock that keeps `record` (or, unsaved, its subject) from changing, or None."""
        return None

    def link_queries(self, record, changed: dict, reason: str | None) -> tuple[str | None, list]:
        """The reason of a correction, carrying the queries it answers, and those queries."""
        return reason, []

    def after_write(
        self, record, *, user, changed: dict, reason: str | None, created: bool = False, answered: list = ()
    ) -> None:
        """After a create or save of a form record."""

    def after_status(self, record, *, user, reason: str | None) -> None:
        """After a status change of a form record."""


_WRITE_PATH: list[WritePathHooks] = [WritePathHooks()]


def serve_write_path(hooks: WritePathHooks) -> None:
    _WRITE_PATH[0] = hooks


def write_path() -> WritePathHooks:
    return _WRITE_PATH[0]
