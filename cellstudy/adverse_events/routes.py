"""Adverse events of a subject: the AE form, grade changes, SAE reports, CRS/ICANS
assessments and lab-based suggestions (issue 4). Views stay thin: the rules are in
rules.py / grading.py, the writes in service.py."""

from datetime import date

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import inspect as sa_inspect

from ..auth.policy import can, get_owned_or_404, get_subject_or_404, require, user_sites
from ..extensions import db
from ..records import crf
from ..records.service import RecordError, StaleVersion
from ..records.views import form_errors, post_action, show_refusal
from ..timeutil import site_today, utcnow
from . import ctcae, service
from ..infusions.fields import VISIT_FIELDS
from ..registry.fields import sections as sections_of
from .fields import AE_FIELDS, GRADE_CHOICES, component_label
from . import crfs
from .forms import AeForm, ChangeGradeForm, CrsForm, DismissForm, IcansForm, RemoveAeForm, ReportForm
from .models import AdverseEvent, CrsAssessment, IcansAssessment

bp = Blueprint("adverse_events", __name__)
# "driven by hypotension": the component's label, never its code (issue 11)
bp.add_app_template_filter(component_label, "component_label")

#: the assessment pages: the registry's form (label, model, specs) and the page's WTForms class
KINDS = {"crs": (crfs.CRS_ASSESSMENT, CrsForm), "icans": (crfs.ICANS_ASSESSMENT, IcansForm)}


def _term_info(term: str | None) -> dict | None:
    """The picked term's dictionary entry: allowed grades with their definitions."""
    if not term:
        return None
    try:
        entry = ctcae.get(term)
    except KeyError:
        return None
    return {
        "term": entry.term,
        "soc": entry.soc,
        "meddra_code": entry.meddra_code,
        "other_specify": entry.requires_verbatim,
        "definition": getattr(entry, "definition", None),
        "grades": [
            {"grade": g, "text": ctcae.grade_definition(entry.term, g)} for g in ctcae.allowed_grades(entry.term)
        ],
    }


# --- the subject's adverse events ------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/adverse-events")
@require("view_clinical")
def subject_aes(subject_id):
    subject = get_subject_or_404(subject_id)
    now = utcnow()
    rows = [{"ae": ae, "clock": service.clocks(ae, now)} for ae in subject.adverse_events]
    return render_template(
        "adverse_events/subject_aes.html",
        subject=subject,
        rows=rows,
        suggestions=service.lab_suggestions(subject),
        dismiss_form=DismissForm(),
        crs=service.assessments(subject, "crs"),
        icans=service.assessments(subject, "icans"),
        queries=service.open_queries(subject),
        window=service.dlt_window(subject),
        lab_labels={spec.name: spec.label for spec in VISIT_FIELDS},
        can_edit=can("enter_data"),
    )


def _ae_page(subject, ae, prefill=None):
    today = site_today(subject.site)
    if request.method == "POST":
        if not can("enter_data"):
            abort(403)
        form = AeForm()
    else:
        data = service.values_of(ae) if ae.id else {}
        data = {
            **{k: v for k, v in (prefill or {}).items() if v is not None},
            **{k: v for k, v in data.items() if v is not None},
        }
        data["grade"] = str(data["grade"]) if data.get("grade") else None
        data["version"] = ae.version
        form = AeForm(data=data)
    form.today = today
    if request.method == "POST" and form.validate():
        try:
            service.save_ae(
                subject,
                ae,
                form.values(),
                user=current_user,
                expected_version=crf.opened_version(form.version.data),
                reason=form.reason.data,
                complete="complete" in request.form,
                today=today,
            )
        except StaleVersion as error:
            db.session.rollback()
            db.session.refresh(ae)
            form.version.data = str(ae.version)
            flash(str(error), "error")
        except RecordError as error:
            show_refusal(form, error)
            if not sa_inspect(ae).persistent:
                ae.status, ae.version = "draft", 0
        else:
            flash(f"{ae.label} saved." + (" Marked complete." if ae.status == "complete" else ""), "success")
            if ae.serious and ae.sae_reported_at is None:
                flash(
                    "Serious adverse event: the investigator must submit the SAE report within 24 hours "
                    "of site awareness.",
                    "warning",
                )
            return redirect(url_for(".ae", subject_id=subject.id, ae_id=ae.id))
    elif request.method == "POST":
        flash("Some answers need correcting: see the messages at the fields. Nothing was saved.", "error")
    info = _term_info(form.term.data)
    if info:  # only the term's grades are offered (also without JavaScript)
        allowed = {str(g["grade"]) for g in info["grades"]}
        form.grade.choices = [("", "— not answered —"), *[c for c in GRADE_CHOICES if c[0] in allowed]]
    window = service.dlt_window(subject)
    if window:
        form.dlt.description = f"Only for an onset inside the DLT window, {window[0]} to {window[1]}."
    return render_template(
        "adverse_events/ae.html",
        subject=subject,
        ae=ae,
        form=form,
        term_info=info,
        sections=sections_of(AE_FIELDS),
        specs=AE_FIELDS,
        window=window,
        clock=service.clocks(ae) if ae.id else None,
        grade_form=ChangeGradeForm(version=ae.version),
        remove_form=RemoveAeForm(version=ae.version),
        report_form=ReportForm(),
        queries=[q for q in service.open_queries(subject) if q.form_id == ae.id and q.form == ae.FORM_NAME]
        if ae.id
        else [],
        assessments=_event_assessments(ae),
        can_edit=can("enter_data") and ae.status != "deleted",
    )


def _event_assessments(ae) -> list:
    if not ae.id or ae.category not in KINDS:
        return []
    model = KINDS[ae.category][0].model
    return (
        db.session.execute(
            db.select(model).where(model.adverse_event_id == ae.id).order_by(model.assessed_on, model.id)
        )
        .scalars()
        .all()
    )


@bp.route("/subjects/<int:subject_id>/adverse-events/new", methods=["GET", "POST"])
@require("view_clinical")
def ae_new(subject_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    prefill = {}
    if request.method == "GET":  # from a lab-based suggestion: term, grade and onset proposed
        prefill["term"] = request.args.get("term")
        prefill["grade"] = (
            request.args.get("grade") if request.args.get("grade") in {c[0] for c in GRADE_CHOICES} else None
        )
        try:
            prefill["onset_date"] = date.fromisoformat(request.args["onset"]) if request.args.get("onset") else None
        except ValueError:
            prefill["onset_date"] = None
    return _ae_page(subject, service.new_ae(subject), prefill)


@bp.route("/subjects/<int:subject_id>/adverse-events/<int:ae_id>", methods=["GET", "POST"])
@require("view_clinical")
def ae(subject_id, ae_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    return _ae_page(subject, get_owned_or_404(AdverseEvent, ae_id, subject))


@bp.route("/subjects/<int:subject_id>/adverse-events/<int:ae_id>/grade", methods=["POST"])
@require("enter_data")
def change_grade(subject_id, ae_id):
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(AdverseEvent, ae_id, subject)
    form = ChangeGradeForm()
    return post_action(
        form,
        lambda: service.change_grade(
            record,
            int(form.new_grade.data),
            form.change_date.data,
            user=current_user,
            expected_version=crf.opened_version(form.version.data),
            today=site_today(subject.site),
        ),
        done=lambda _: f"{record.label}: grade {form.new_grade.data} since {form.change_date.data}.",
        refused=lambda error: (
            "The grade was not changed: " + " ".join((getattr(error, "errors", None) or {"": str(error)}).values())
        ),
        invalid=lambda form: "The grade was not changed: " + form_errors(form, " "),
        back=url_for(".ae", subject_id=subject.id, ae_id=record.id),
    )


@bp.route("/subjects/<int:subject_id>/adverse-events/<int:ae_id>/remove", methods=["POST"])
@require("enter_data")
def remove(subject_id, ae_id):
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(AdverseEvent, ae_id, subject)
    form = RemoveAeForm()
    return post_action(
        form,
        lambda: service.remove_ae(
            record, user=current_user, expected_version=crf.opened_version(form.version.data), reason=form.reason.data
        ),
        done=lambda _: f"{record.label} removed. It stays in the audit trail.",
        refused=lambda error: f"{record.label} was not removed: {error}",
        invalid="Not removed: give the reason.",
        back=url_for(".ae", subject_id=subject.id, ae_id=record.id),
    )


@bp.route("/subjects/<int:subject_id>/adverse-events/<int:ae_id>/report/<any(sae, susar):kind>", methods=["POST"])
@require("sign_eligibility")
def report(subject_id, ae_id, kind):
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(AdverseEvent, ae_id, subject)
    form = ReportForm()
    return post_action(
        form,
        lambda: service.report(record, kind, user=current_user, password=form.password.data),
        done=("SAE" if kind == "sae" else "SUSAR expedited") + " report submitted and signed.",
        refused="Not submitted: ",
        invalid="Not submitted: re-enter your password to sign the report.",
        back=url_for(".ae", subject_id=subject.id, ae_id=record.id),
    )


@bp.route("/subjects/<int:subject_id>/lab-suggestions/dismiss", methods=["POST"])
@require("enter_data")
def dismiss(subject_id):
    subject = get_subject_or_404(subject_id)
    form = DismissForm()
    return post_action(
        form,
        lambda: service.dismiss_suggestion(
            subject,
            visit_id=form.visit_id.data,
            lab=form.lab.data,
            grade=form.grade.data,
            reason=form.reason.data,
            user=current_user,
        ),
        done="Suggestion dismissed (recorded in the audit trail).",
        refused="Not dismissed: ",
        invalid="Not dismissed: give the reason.",
        back=url_for(".subject_aes", subject_id=subject.id),
    )


# --- CRS and ICANS assessments ----------------------------------------------------------------


def _assessment_page(subject, kind: str, record):
    form_type, form_cls = KINDS[kind]
    title, specs = form_type.label, form_type.specs
    today = site_today(subject.site)
    if request.method == "POST":
        form = form_cls()
    else:
        form = form_cls(data=crf.form_data(record, specs))
    form.today = today
    if request.method == "POST" and form.validate():
        try:
            service.save_assessment(
                subject,
                record,
                kind,
                form.values(),
                user=current_user,
                expected_version=crf.opened_version(form.version.data),
                reason=form.reason.data,
                complete="complete" in request.form,
                today=today,
                specs=specs,
            )
        except StaleVersion as error:
            db.session.rollback()
            db.session.refresh(record)
            form.version.data = str(record.version)
            flash(str(error), "error")
        except RecordError as error:
            show_refusal(form, error)
            if not sa_inspect(record).persistent:
                record.status, record.version, record.data = "draft", 0, {}
        else:
            message = f"{title} saved: " + (
                f"grade {record.grade}" if record.grade is not None else "not gradable yet (components missing)"
            )
            if record.grade and record.adverse_event_id:
                message += f", recorded on AE {record.adverse_event.number}"
            flash(message + ".", "success")
            return redirect(url_for(f".{kind}", subject_id=subject.id, **{f"{kind}_id": record.id}))
    elif request.method == "POST":
        flash("Some answers need correcting: see the messages at the fields. Nothing was saved.", "error")
    graded = None
    if record.id and record.grade is not None:
        graded = service.grade_assessment(kind, crf.form_data(record, specs))
    return render_template(
        "adverse_events/assessment.html",
        subject=subject,
        record=record,
        form=form,
        kind=kind,
        title=title,
        specs=specs,
        sections=sections_of(specs),
        graded=graded,
        can_edit=can("enter_data"),
        medications=_management(subject),
    )


def _management(subject) -> list:
    """Tocilizumab, steroids and other management: the subject's medication log."""
    return [e for e in subject.active_exposures if e.category in ("systemic_steroid", "other")]


@bp.route("/subjects/<int:subject_id>/crs/new", methods=["GET", "POST"])
@require("view_clinical")
def crs_new(subject_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    return _assessment_page(subject, "crs", service.new_assessment(subject, "crs"))


@bp.route("/subjects/<int:subject_id>/crs/<int:crs_id>", methods=["GET", "POST"])
@require("view_clinical")
def crs(subject_id, crs_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    return _assessment_page(subject, "crs", get_owned_or_404(CrsAssessment, crs_id, subject))


@bp.route("/subjects/<int:subject_id>/icans/new", methods=["GET", "POST"])
@require("view_clinical")
def icans_new(subject_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    return _assessment_page(subject, "icans", service.new_assessment(subject, "icans"))


@bp.route("/subjects/<int:subject_id>/icans/<int:icans_id>", methods=["GET", "POST"])
@require("view_clinical")
def icans(subject_id, icans_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    return _assessment_page(subject, "icans", get_owned_or_404(IcansAssessment, icans_id, subject))


# --- the CTCAE term picker (JSON) and the SAE worklist -------------------------------------------------


@bp.route("/ctcae/search")
@require("view_clinical")
def ctcae_search():
    query = (request.args.get("q") or "")[:100]
    hits = ctcae.search(query, limit=15) if query.strip() else []
    return jsonify([{"term": t.term, "soc": t.soc, "meddra_code": t.meddra_code} for t in hits])


@bp.route("/ctcae/term")
@require("view_clinical")
def ctcae_term():
    info = _term_info((request.args.get("term") or "")[:200])
    if info is None:  # an answer, not an error: the picker shows it
        return jsonify({"found": False, "error": "Not a CTCAE v5.0 term.", "grades": []})
    return jsonify({"found": True, **info})


@bp.route("/saes")
@require("view_clinical")
def saes():
    rows = service.sae_worklist(user_sites())
    return render_template("adverse_events/saes.html", rows=rows)
