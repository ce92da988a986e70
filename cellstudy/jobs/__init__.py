"""Background jobs (issue 5): long exports run in a thread pool of the app process,
with their progress in the database, so a web worker answers at once and any worker
can show the progress page.

Why a thread pool and not Redis + RQ: see docs/decisions.md ("Issue 5"). In short:
one more server to run, secure and monitor for a handful of exports a day; the work
is mostly WeasyPrint layout (C code holding the GIL only part of the time) and I/O.

The API (everything a feature needs)
------------------------------------
Declare a task once, at import time of your module (import the module in your
blueprint's module so it is registered when the app starts)::

    from cellstudy import jobs

    @jobs.task("audit_csv", permission="view_audit", title="Audit trail (CSV)")
    def audit_csv(job, report_progress):
        # Runs in a worker thread with the app context pushed; db.session is the
        # thread's own. job.params is the dict given to submit(); job.created_by is the
        # user who asked (scope your queries to *their* sites: policy.user_sites(job.created_by)).
        total = ...
        report_progress(0, total)                 # commits the session: call it between units
        path = jobs.result_file(job, "audit.csv") # absolute path in instance/jobs/<id>-.../
        with open(path, "w") as out:
            ...
            report_progress(done, total)
        return path, "CS-CARNK-01_audit_20261126.csv"   # (file, download name); or just the path

Submit it from a view (after your own permission checks), then send the user to the
job's page, which refreshes itself and offers the download when it is done::

    job = jobs.submit("audit_csv", {"site": "HZ"}, current_user, site_id=site.id)
    return redirect(url_for("jobs.show", job_id=job.id))

- ``submit(kind, params, user, site_id=None) -> Job`` inserts the job (status "queued"),
  commits (the caller's session too) and hands it to the pool; the Job returned is a
  detached snapshot (its columns, not its relationships). ``params`` must be JSON-serialisable. ``site_id`` is
  the site whose data the result holds (None: several sites or the whole study).
  Raises ``PermissionError`` when the user's role lacks the task's permission.
- ``@task(kind, permission, title)``: ``fn(job, report_progress) -> path | (path, name)``.
  Raise ``JobError("message for the user")`` for an expected failure; any other
  exception fails the job with a generic message (the traceback goes to the log).
  Status: queued -> running -> done | failed, with started/finished times.
- ``result_file(job, name) -> str``: where to write the result.
- ``wait(job_id, timeout)``: block until the job finished in this process (tests, CLI).
- ``may_download(job, user)``: the rule of the download route ``jobs.download``:
  only the user who submitted the job, while their role still holds the task's
  permission and (for a job of one site) they are still assigned to that site; anything
  else is a 404 (a job is not acknowledged to exist), a missing permission a 403.
- Pages: ``jobs.show`` (/jobs/<id>, progress, refreshes itself), ``jobs.status``
  (/jobs/<id>/status, JSON), ``jobs.download`` (/jobs/<id>/download), ``jobs.index``
  (/jobs, the user's own jobs).

A task runs inside an app context of its own (no request: build URLs before you submit).
A task reads as a web request does (on SQLite a deferred transaction, no write lock) and
writes only inside ``records.transaction()`` blocks, kept short: the write lock is held
from the block's start to its end (web saves wait for it). Read a batch, end the read
(``db.session.rollback()``), do the slow work (rendering, writing the file) outside any
transaction; ``with records.transaction(): audit.append(...)`` is a short write, and so is
``report_progress``.

Config: ``JOBS_WORKERS`` (default 1) threads per process. A job whose process ended
before it finished (a restart) is shown as failed ("interrupted") the next time it is
looked at from that host.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from flask import current_app
from sqlalchemy import update

from ..extensions import db
from ..records.transaction import active as transaction_active
from ..records.transaction import after_commit, reads_only, transaction
from ..timeutil import utcnow
from .models import Job
from .. import registry
from ..timeutil import as_utc
from ..auth.policy import can, covers, user_sites

if TYPE_CHECKING:
    from flask import Flask

    from ..auth.models import User

TaskFn = TypeVar("TaskFn", bound=Callable[..., Any])

registry.register(registry.RecordType("job", "Background job"))

log = logging.getLogger(__name__)

__all__ = ["Job", "JobError", "task", "submit", "result_file", "wait", "may_download", "TASKS"]


class JobError(Exception):
    """An expected failure: its message is shown to the user on the job's page."""


@dataclass(frozen=True)
class Task:
    kind: str
    fn: Callable
    permission: str
    title: str


TASKS: dict[str, Task] = {}


def task(kind: str, *, permission: str, title: str) -> Callable[[TaskFn], TaskFn]:
    """Register ``fn(job, report_progress)`` as the task of ``kind``."""

    def decorator(fn):
        TASKS[kind] = Task(kind, fn, permission, title)
        return fn

    return decorator


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:80]


class _Runner:
    """The pool of one app in one process, and the futures of the jobs it runs."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cellstudy-job")
        self.futures: dict[int, Future] = {}


_runner_lock = threading.Lock()


def _runner(app) -> _Runner:
    with _runner_lock:
        runner = app.extensions.get("cellstudy.jobs")
        if runner is None:
            runner = app.extensions["cellstudy.jobs"] = _Runner(int(app.config.get("JOBS_WORKERS", 1)))
        return runner


def submit(kind: str, params: dict[str, Any], user: User, *, site_id: int | None = None) -> Job:
    definition = TASKS.get(kind)
    if definition is None:
        raise ValueError(f"no job task of kind {kind!r}")
    if not can(definition.permission, user):
        raise PermissionError(f"{user.username} may not run {kind}")
    job = Job(
        kind=kind,
        params=dict(params or {}),
        status="queued",
        progress_done=0,
        progress_total=0,
        site_id=site_id,
        created_by_id=user.id,
        worker=_worker_id(),
        created_at=utcnow(),
    )
    app = current_app._get_current_object()
    nested = transaction_active()
    with transaction():  # the job row with the caller's writes (its audit record), if any
        db.session.add(job)
        db.session.flush()
        job_id = job.id
        # the worker starts once the row is committed, never before (it could not see it)
        after_commit(lambda: _start(app, job_id))
    if nested:
        return job
    # A detached snapshot for the caller: no transaction of the caller's stays open (on
    # SQLite, on the command line, it would hold the write lock the job needs).
    job = db.session.get(Job, job_id)
    db.session.expunge(job)
    db.session.rollback()
    return job


def _start(app, job_id: int) -> None:
    runner = _runner(app)
    runner.futures[job_id] = runner.pool.submit(_run, app, job_id)


def wait(job_id: int, timeout: float | None = 60) -> None:
    future = _runner(current_app._get_current_object()).futures.get(job_id)
    if future is not None:
        future.result(timeout=timeout)


def jobs_folder(app: Flask | None = None) -> str:
    return os.path.join((app or current_app).instance_path, "jobs")


def _job_folder(job: Job) -> str:
    """instance/jobs/<id>-<created>-<database>: unique even when several databases (tests,
    a restored copy) share the instance folder and number their jobs from 1."""
    import hashlib

    database = hashlib.sha1(str(db.engine.url).encode(), usedforsecurity=False).hexdigest()[:8]  # a name, not a secret
    return f"{job.id}-{as_utc(job.created_at):%Y%m%dT%H%M%S%f}-{database}"


def result_file(job: Job, name: str) -> str:
    folder = os.path.join(jobs_folder(), _job_folder(job))
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, os.path.basename(name))


def result_abspath(job: Job) -> str | None:
    if not job.result_path:
        return None
    path = os.path.normpath(os.path.join(current_app.instance_path, job.result_path))
    # never outside the jobs folder, whatever the row says
    if not path.startswith(os.path.normpath(jobs_folder()) + os.sep):
        return None
    return path


def _set(job_id: int, **values) -> None:
    """Write the job's state in a short transaction of its own (the task's reads end
    first, so the UPDATE is the write transaction's first statement)."""
    with transaction():
        db.session.execute(update(Job).where(Job.id == job_id).values(**values))


def _run(app, job_id: int) -> None:
    # A job reads as a request does (no write lock on SQLite) and writes in short
    # records.transaction() blocks (see the module docstring).
    with app.app_context(), reads_only():
        try:
            job = db.session.get(Job, job_id)
            definition = TASKS.get(job.kind)
            if definition is None:
                _set(job_id, status="failed", error=f"Unknown kind of job: {job.kind}", finished_at=utcnow())
                return
            _set(job_id, status="running", started_at=utcnow(), worker=_worker_id())
            job = db.session.get(Job, job_id)

            def report_progress(done: int, total: int | None = None) -> None:
                values = {"progress_done": int(done)}
                if total is not None:
                    values["progress_total"] = int(total)
                _set(job_id, **values)

            result = definition.fn(job, report_progress)
            path, name = result if isinstance(result, tuple) else (result, None)
            values = {"status": "done", "finished_at": utcnow(), "error": None}
            if path:
                values["result_path"] = os.path.relpath(path, app.instance_path)
                values["result_name"] = name or os.path.basename(path)
            db.session.rollback()
            _set(job_id, **values)
        except JobError as exc:
            db.session.rollback()
            _set(job_id, status="failed", error=str(exc), finished_at=utcnow())
        except Exception:
            log.exception("job %s failed", job_id)
            db.session.rollback()
            try:
                _set(
                    job_id,
                    status="failed",
                    finished_at=utcnow(),
                    error="The job failed with an internal error (logged). Nothing was half-delivered: "
                    "submit it again, or tell the study team if it fails again.",
                )
            except Exception:  # the database itself is gone: the log has it
                log.exception("job %s: could not record the failure", job_id)
        finally:
            db.session.remove()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_interrupted(job: Job) -> Job:
    """A queued/running job whose process (on this host) is gone is marked failed."""
    if job.finished or not job.worker or ":" not in job.worker:
        return job
    host, _, pid = job.worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        with transaction():
            job.status, job.finished_at = "failed", utcnow()
            job.error = "Interrupted: the server process running it ended. Submit it again."
    return job


def may_download(job: Job, user: User) -> bool:
    definition = TASKS.get(job.kind)
    if definition is None or job.created_by_id != user.id or not can(definition.permission, user):
        return False
    if job.site_id is not None:
        return covers(user_sites(user), job.site_id)
    return True
