"""ODM 1.3.2 files (export_audit, the requester's sites only; issue 15):

  /odm/study-export (POST)           the whole study as a background job (mode=snapshot|
                                     transactional), then the job's progress page
  /subjects/<id>/odm.xml             one subject (SingleSubject), streamed from memory
                                     (?mode=transactional for its audit trail)

Every export writes an audit record ("export", form "odm", field "odm-<mode>", new =
{"granularity", "sites", "subject"}) before the file is written."""

from __future__ import annotations

import io
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, request, url_for
from flask_login import current_user

from ...auth.policy import ALL_SITES, Sites, get_subject_or_404, require, sites_of, user_sites
from ...records import audit
from ...records import service as records
from ...timeutil import utcnow
from . import job
from .writer import MODES, write_odm

bp = Blueprint("odm", __name__)


def audit_export(user: Any, mode: str, granularity: str, scope: Sites, **where: Any) -> None:
    """The export's audit record (queued in the caller's transaction)."""
    sites = "all" if scope is ALL_SITES else sorted(s.code for s in sites_of(scope))
    value = {"granularity": granularity, "sites": sites, **{k: v for k, v in where.items() if k != "subject_id"}}
    audit.append(
        "export",
        user=user,
        username=None if user is not None else "system",
        form="odm",
        field=f"odm-{mode}",
        subject_id=where.get("subject_id"),
        new=value,
    )


def _mode() -> str:
    mode = (request.values.get("mode") or "snapshot").lower()
    if mode not in MODES:
        abort(400)
    return mode


@bp.route("/odm/study-export", methods=["POST"], endpoint="study_export")
@require(job.PERMISSION)
def odm_study_export():
    mode = _mode()
    scope = user_sites()
    with records.transaction():  # the audit record and the job: one write
        audit_export(current_user, mode, "AllClinicalData", scope, note="written by a background job")
        queued = job.start(current_user, mode)
    flash("The ODM study export is running; this page shows its progress.", "info")
    return redirect(url_for("jobs.show", job_id=queued.id))


@bp.route("/subjects/<int:subject_id>/odm.xml", endpoint="subject_export")
@require(job.PERMISSION)
def odm_subject_export(subject_id: int):
    subject = get_subject_or_404(subject_id)
    mode = _mode()
    scope = user_sites()
    with records.transaction():
        audit_export(current_user, mode, "SingleSubject", scope, subject=subject.label, subject_id=subject.id)
    out = io.BytesIO()  # one subject: small
    write_odm(out, sites=scope, mode=mode, granularity="SingleSubject", subject=subject.label, user=current_user)
    name = f"{subject.label}_odm_{mode}_{utcnow().strftime('%Y%m%dT%H%MZ')}.xml"
    return Response(
        out.getvalue(),
        mimetype="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
