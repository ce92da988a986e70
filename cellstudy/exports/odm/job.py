"""The whole study (the requester's sites) as ODM 1.3.2, written by a background job
(cellstudy.jobs) with its progress per chunk of subjects (issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ... import jobs
from ...auth.policy import user_sites
from ...settings import current_study
from ...timeutil import utcnow
from .writer import OdmError, count_subjects, write_odm

if TYPE_CHECKING:
    from ...auth.models import User
    from ...jobs.models import Job

KIND = "odm_export"
PERMISSION = "export_audit"  # the file carries the audit trail: the audit export's roles


@jobs.task(KIND, permission=PERMISSION, title="Study export, CDISC ODM 1.3.2 (XML)")
def odm_export(job: Job, report_progress: Callable[..., None]) -> tuple[str, str]:
    scope = user_sites(job.created_by)
    params = job.params or {}
    mode = params.get("mode", "snapshot")
    report_progress(0, count_subjects(scope))  # commits: the count's read ends here
    name = f"{current_study().protocol_id}_odm_{mode}_{utcnow().strftime('%Y%m%dT%H%MZ')}.xml"
    path = jobs.result_file(job, "study.odm.xml")
    try:
        with open(path, "wb") as out:
            write_odm(
                out,
                sites=scope,
                mode=mode,
                granularity=params.get("granularity", "AllClinicalData"),
                site=params.get("site"),
                user=job.created_by,
                progress=report_progress,
                short_transactions=True,
            )
    except OdmError as error:
        raise jobs.JobError(str(error)) from error
    return path, name


def start(user: User, mode: str, granularity: str = "AllClinicalData", site: str | None = None) -> Job:
    params = {"mode": mode, "granularity": granularity}
    if site:
        params["site"] = site
    return jobs.submit(KIND, params, user)
