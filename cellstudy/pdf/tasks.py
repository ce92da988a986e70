"""The casebooks of a whole site as a background job (issue 5): one PDF per subject in
a zip, progress after every subject, each casebook audited like a download."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import jobs
from ..auth.policy import can, covers, user_sites
from ..enrollment.models import Subject
from ..extensions import db
from ..records import service as records
from . import build

if TYPE_CHECKING:
    from ..jobs.models import Job

SITE_CASEBOOKS = "site_casebooks"


@jobs.task(SITE_CASEBOOKS, permission="export_casebooks", title="Casebooks of a site (PDF, zip)")
def site_casebooks(job: Job, report_progress: Callable[..., None]) -> tuple[str, str]:
    user = job.created_by
    site = job.site
    # the permission is checked again when the job runs: a role or site removed meanwhile
    if site is None or not can("export_casebooks", user) or not covers(user_sites(user), site.id):
        raise jobs.JobError("You may no longer export the casebooks of this site.")
    size = build.page_size(job.params.get("size"))
    subject_ids = (
        db.session.execute(select(Subject.id).where(Subject.site_id == site.id).order_by(Subject.screening_number))
        .scalars()
        .all()
    )
    if not subject_ids:
        raise jobs.JobError(f"Site {site.code} has no subjects yet: there is no casebook to make.")
    study_id = build.filename(build._study().protocol_id, site.code, "casebooks").removesuffix(".pdf")
    user_id, site_code, job_id = user.id, site.code, job.id
    report_progress(0, len(subject_ids))
    path = jobs.result_file(job, f"{study_id}.zip")
    db.session.rollback()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for done, subject_id in enumerate(subject_ids, start=1):
            user = db.session.get(type(user), user_id)
            data = build.casebook_data(subject_id, user, size)
            # End the read before the slow rendering: the objects keep what was loaded,
            # detached.
            db.session.expunge_all()
            db.session.rollback()
            pdf, name, summary = build.render_casebook(data)
            archive.writestr(name, pdf)
            with records.transaction():
                build.audit_export(
                    db.session.get(type(user), user_id),
                    what=f"subject casebook (site {site_code} job {job_id})",
                    name=name,
                    subject=db.session.get(Subject, subject_id),
                    form="casebook",
                    details={"size": size, **summary},
                )
            report_progress(done)
    return path, f"{study_id}.zip"


__all__ = ["SITE_CASEBOOKS", "site_casebooks"]
