"""The per-subject audit trail view (PROTOCOL 7: who changed what, when, why)."""
from flask import Blueprint, render_template

from ..auth.policy import get_subject_or_404, require
from . import audit

bp = Blueprint("records", __name__)


@bp.route("/subjects/<int:subject_id>/audit")
@require("view_audit")
def subject_audit(subject_id):
    from ..enrollment.fields import EXPOSURE_FIELDS, SCREENING_FIELDS

    subject = get_subject_or_404(subject_id)
    labels = {spec.name: spec.label for spec in (*EXPOSURE_FIELDS, *SCREENING_FIELDS)}
    labels.update(prior_therapies_none="No prior therapies", physiological_replacement="Physiological replacement",
                  start_date="Start date", half_life_days="Half-life (days)", indication="Indication")
    return render_template("records/audit.html", subject=subject, entries=audit.for_subject(subject.id),
                           labels=labels, forms=FORM_LABELS)


FORM_LABELS = {"subject": "Subject", "screening": "Screening form", "exposure": "Therapy log entry",
               "eligibility_decision": "Eligibility decision"}
