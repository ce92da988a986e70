"""The study-wide audit export as a background job (issue 6): the whole trail of the
requesting user's sites (data managers: every record), or a filtered view too long to
stream from a web worker, as CSV, written by the job pool of
cellstudy.jobs in keyset batches of short transactions, with its progress in the
database. The web request only queues it, so the pages others use are not slowed."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flask import url_for

from .. import jobs
from ..auth.policy import ALL_SITES, Sites, user_sites
from ..exports import tabular
from ..settings import current_study
from ..timeutil import utcnow
from . import service

if TYPE_CHECKING:
    from ..auth.models import User
    from ..jobs.models import Job

KIND = "audit_csv"
BATCH = 2000
NICE = 10


def _set_priority(nice: int | None) -> int | None:
    """Set this thread's nice value (Linux: per thread); returns the previous one, or None
    when the platform or the account does not allow it (the job then runs as it is)."""
    try:
        tid = threading.get_native_id()
        old = os.getpriority(os.PRIO_PROCESS, tid)
        if nice is not None:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        return old
    except (AttributeError, OSError):
        return None


@jobs.task(KIND, permission="export_audit", title="Audit trail, whole study (CSV)")
def audit_csv(job: Job, report_progress: Callable[..., None]) -> tuple[str, str]:
    # the web threads of this process come first: the job takes the CPU they leave
    before = _set_priority(NICE)
    try:
        return _write(job, report_progress)
    finally:
        if before is not None:
            _set_priority(before)  # the pool thread runs other jobs afterwards


def _write(job, report_progress):
    scope = user_sites(job.created_by)
    filters = service.Filters.from_params(job.params.get("filters"))
    total = service.count(filters, scope)
    report_progress(0, total)  # commits: the count's transaction ends here
    now = utcnow()
    name = f"{current_study().protocol_id}_audit_trail_{now.strftime('%Y%m%dT%H%MZ')}.csv"
    path = jobs.result_file(job, "audit_trail.csv")
    done = 0

    def rows():
        nonlocal done
        for row in service.iter_rows(filters, scope, batch=BATCH, short_transactions=True):
            yield row
            done += 1
            if done % BATCH == 0:
                report_progress(done)

    with open(path, "w", encoding="utf-8", newline="") as out:
        # issue 13: the byte-order mark unless the filtered export was asked without it
        for chunk in tabular.csv_stream(service.export_columns(), rows(), bom=job.params.get("bom", True)):
            out.write(chunk)
    report_progress(done, max(total, done))
    return path, name


def start(
    user: User, scope: Sites, sites: Iterable[str], filters: service.Filters | None = None, *, bom: bool = True
) -> Job:
    """Queue the export (the whole trail of the user's sites, or the filtered view) for
    `user`; `bom`: the CSV starts with the UTF-8 byte-order mark."""
    params = {
        "sites": "all" if scope is ALL_SITES else sorted(sites),
        "filters": (filters or service.Filters()).active(),
    }
    if not bom:
        params["bom"] = False  # the default is not stored: jobs queued before keep their params
    return jobs.submit(KIND, params, user)


def progress_url(job: Job) -> str:
    return url_for("jobs.show", job_id=job.id)
