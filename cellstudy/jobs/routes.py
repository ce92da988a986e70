"""The pages of background jobs: progress (refreshing itself), status as JSON, the
result's download, and the user's own jobs. A job is only ever visible to the user who
submitted it (see cellstudy.jobs.may_download); anything else is a 404."""

from __future__ import annotations

import os

from flask import Blueprint, abort, jsonify, render_template, send_file, url_for
from flask_login import current_user
from sqlalchemy import select

from ..auth.policy import can, covers, require, user_sites
from ..extensions import db
from ..records import audit
from ..records import service as records
from . import TASKS, Job, check_interrupted, result_abspath

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


def _own_job_or_404(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None or job.created_by_id != current_user.id:
        abort(404)
    if job.site_id is not None:
        if not covers(user_sites(), job.site_id):
            abort(404)
    definition = TASKS.get(job.kind)
    if definition is None:
        abort(404)
    if not can(definition.permission):
        abort(403)
    return check_interrupted(job)


def _state(job: Job) -> dict:
    return {
        "id": job.id,
        "status": job.status,
        "done": job.progress_done,
        "total": job.progress_total,
        "percent": job.percent,
        "error": job.error,
        "name": job.result_name,
        "download": url_for(".download", job_id=job.id) if job.status == "done" and job.result_path else None,
    }


@bp.route("", endpoint="index")
@require(None)
def job_list():
    jobs = (
        db.session.execute(select(Job).where(Job.created_by_id == current_user.id).order_by(Job.id.desc()).limit(50))
        .scalars()
        .all()
    )
    return render_template("jobs/index.html", jobs=[check_interrupted(j) for j in jobs], tasks=TASKS)


@bp.route("/<int:job_id>", endpoint="show")
@require(None)
def job_show(job_id):
    job = _own_job_or_404(job_id)
    return render_template("jobs/job.html", job=job, task=TASKS[job.kind], state=_state(job))


@bp.route("/<int:job_id>/status", endpoint="status")
@require(None)
def job_status(job_id):
    return jsonify(_state(_own_job_or_404(job_id)))


@bp.route("/<int:job_id>/download", endpoint="download")
@require(None)
def job_download(job_id):
    job = _own_job_or_404(job_id)
    path = result_abspath(job)
    if job.status != "done" or path is None or not os.path.exists(path):
        abort(404)
    # The file's content was audited when it was generated; the download is audited too.
    with records.transaction():
        audit.append(
            "download",
            user=current_user,
            form="job",
            form_id=job.id,
            site_id=job.site_id,
            field=job.kind,
            new=job.result_name,
        )
    return send_file(path, as_attachment=True, download_name=job.result_name or os.path.basename(path))
