"""The per-subject audit trail view (PROTOCOL 7: who changed what, when, why).

Served by the audit trail viewer (cellstudy/audit_viewer, issue 6) with the subject fixed;
the URL and the endpoint name stay as other pages and tests link them."""
from flask import Blueprint

from ..auth.policy import get_subject_or_404, require

bp = Blueprint("records", __name__)


@bp.route("/subjects/<int:subject_id>/audit")
@require("view_audit")
def subject_audit(subject_id):
    from ..audit_viewer.routes import render_trail

    return render_trail(get_subject_or_404(subject_id))
