"""PDF downloads (issue 5; PROTOCOL 8).

- /crfs/blank (page) and /crfs/blank/<form>.pdf: blank CRFs for paper source (view_clinical)
- /subjects/<id>/<form>/<record id>.pdf (screening, lymphodepletion, infusions, visits, aes,
  crs, icans; the DLT assessment is in the casebook) and /subjects/<id>/crf/<exposure|vaccination>.pdf: a filled CRF
  (view_clinical, the subject's site; a record of another subject is a 404)
- /subjects/<id>/casebook.pdf: the subject casebook with its audit trail (view_audit)
- /casebooks (page, POST submits a background job): every casebook of a site as a zip
  (export_casebooks, the site must be the user's)

Every PDF is audited ("export", field "pdf", new = {document, file, ...}) before it is
sent. ``?size=letter`` gives US Letter instead of A4.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField

from .. import jobs, registry
from ..auth.policy import allowed_sites, get_owned_or_404, get_subject_or_404, require
from ..extensions import db
from ..jobs.models import Job
from ..records import service as records
from . import build, tasks  # noqa: F401  (tasks registers the site casebook job)
from .forms import pdf_forms

bp = Blueprint("pdf", __name__)

SIZE_CHOICES = [("a4", "A4"), ("letter", "US Letter")]


def _size():
    try:
        return build.page_size(request.args.get("size"))
    except ValueError as error:
        return error


def _send(pdf: bytes, name: str) -> Response:
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _audited(pdf: bytes, name: str, **audit) -> Response:
    with records.transaction():  # a short write of its own, after the reads
        build.audit_export(current_user, name=name, **audit)
    return _send(pdf, name)


@bp.route("/crfs/blank")
@require("view_clinical")
def blank_crfs():
    return render_template("pdf/blank_crfs_page.html", form_types=pdf_forms().values(), sizes=SIZE_CHOICES)


@bp.route("/crfs/blank/<form>.pdf")
@require("view_clinical")
def blank_crf(form):
    if form not in pdf_forms():
        abort(404)
    size = _size()
    if isinstance(size, ValueError):
        flash(f"Paper size: {size}", "error")
        return redirect(url_for(".blank_crfs"))
    pdf, name = build.blank_crf(form, current_user, size)
    return _audited(
        pdf,
        name,
        what=f"blank CRF: {pdf_forms()[form].title}",
        form=pdf_forms()[form].form_name,
        details={"size": size},
    )


def _filled(subject_id: int, form: str, record_id: int):
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(pdf_forms()[form].model, record_id, subject)
    size = _size()
    if isinstance(size, ValueError):
        flash(f"Paper size: {size}", "error")
        return redirect(url_for("enrollment.subject", subject_id=subject.id))
    pdf, name = build.filled_crf(subject, form, record, current_user, size)
    return _audited(
        pdf,
        name,
        what=f"filled CRF: {pdf_forms()[form].title}",
        subject=subject,
        form=pdf_forms()[form].form_name,
        form_id=record.id,
        details={"size": size},
    )


# One rule per form, named like the form's own page (so the nested id is checked the same way).
@bp.route("/subjects/<int:subject_id>/screening/<int:screening_id>.pdf", endpoint="screening")
@require("view_clinical")
def screening_pdf(subject_id, screening_id):
    return _filled(subject_id, "screening", screening_id)


@bp.route("/subjects/<int:subject_id>/lymphodepletion/<int:day_id>.pdf", endpoint="lymphodepletion")
@require("view_clinical")
def lymphodepletion_pdf(subject_id, day_id):
    return _filled(subject_id, "lymphodepletion", day_id)


@bp.route("/subjects/<int:subject_id>/infusions/<int:infusion_id>.pdf", endpoint="infusion")
@require("view_clinical")
def infusion_pdf(subject_id, infusion_id):
    return _filled(subject_id, "infusion", infusion_id)


@bp.route("/subjects/<int:subject_id>/visits/<int:visit_id>.pdf", endpoint="visit")
@require("view_clinical")
def visit_pdf(subject_id, visit_id):
    return _filled(subject_id, "visit", visit_id)


@bp.route("/subjects/<int:subject_id>/aes/<int:ae_id>.pdf", endpoint="ae")
@require("view_clinical")
def ae_pdf(subject_id, ae_id):
    return _filled(subject_id, "ae", ae_id)


@bp.route("/subjects/<int:subject_id>/crs/<int:crs_id>.pdf", endpoint="crs")
@require("view_clinical")
def crs_pdf(subject_id, crs_id):
    return _filled(subject_id, "crs", crs_id)


@bp.route("/subjects/<int:subject_id>/icans/<int:icans_id>.pdf", endpoint="icans")
@require("view_clinical")
def icans_pdf(subject_id, icans_id):
    return _filled(subject_id, "icans", icans_id)


@bp.route("/subjects/<int:subject_id>/crf/<log>.pdf")
@require("view_clinical")
def filled_log(subject_id, log):
    if log not in registry.logs():
        abort(404)
    subject = get_subject_or_404(subject_id)
    size = _size()
    if isinstance(size, ValueError):
        flash(f"Paper size: {size}", "error")
        return redirect(url_for("enrollment.subject", subject_id=subject.id))
    pdf, name = build.filled_crf(subject, log, None, current_user, size)
    return _audited(
        pdf,
        name,
        what=f"filled CRF: {pdf_forms()[log].title}",
        subject=subject,
        form=pdf_forms()[log].form_name,
        details={"size": size},
    )


@bp.route("/subjects/<int:subject_id>/casebook.pdf", endpoint="casebook")
@require("view_audit")
def casebook_pdf(subject_id):
    subject = get_subject_or_404(subject_id)
    size = _size()
    if isinstance(size, ValueError):
        flash(f"Paper size: {size}", "error")
        return redirect(url_for("enrollment.subject", subject_id=subject.id))
    pdf, name, summary = build.casebook(subject.id, current_user, size)
    return _audited(
        pdf, name, what="subject casebook", subject=subject, form="casebook", details={"size": size, **summary}
    )


class SiteCasebooksForm(FlaskForm):
    site = SelectField("Site", choices=[])
    size = SelectField("Paper size", choices=SIZE_CHOICES, default="a4")


@bp.route("/casebooks", methods=["GET", "POST"])
@require("export_casebooks")
def site_casebooks():
    sites = allowed_sites()
    form = SiteCasebooksForm()
    form.site.choices = [(s.code, f"{s.code} · {s.name}") for s in sites]
    if form.validate_on_submit():
        site = next((s for s in sites if s.code == form.site.data), None)
        if site is None:  # not one of the user's sites (a forged value): refused, named
            form.site.errors.append("Choose one of your sites.")
        else:
            job = jobs.submit(tasks.SITE_CASEBOOKS, {"size": form.size.data}, current_user, site_id=site.id)
            flash(f"The casebooks of site {site.code} are being generated.", "success")
            return redirect(url_for("jobs.show", job_id=job.id))
    recent = (
        db.session.execute(
            select(Job)
            .where(Job.created_by_id == current_user.id, Job.kind == tasks.SITE_CASEBOOKS)
            .order_by(Job.id.desc())
            .limit(10)
        )
        .scalars()
        .all()
    )
    return render_template("pdf/casebooks_page.html", form=form, recent=recent)
