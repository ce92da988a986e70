"""The per-subject audit trail view (PROTOCOL 7: who changed what, when, why)."""
from flask import Blueprint, render_template

from ..auth.policy import get_subject_or_404, require
from . import audit

bp = Blueprint("records", __name__)


@bp.route("/subjects/<int:subject_id>/audit")
@require("view_audit")
def subject_audit(subject_id):
    subject = get_subject_or_404(subject_id)
    return render_template("records/audit.html", subject=subject, entries=audit.for_subject(subject.id))
