"""Treatment and follow-up screens: scheduling with lockouts, administration and visit
CRFs, vaccinations, DLT assessment, dose escalation, calendar, overdue and deviations."""

from datetime import date, timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import inspect as sa_inspect

from ..auth.policy import allowed_sites, can, covers, get_owned_or_404, get_subject_or_404, require, user_sites
from ..enrollment import service as enrollment
from ..extensions import db
from ..records import crf
from ..records import service as records
from ..records.service import InvalidForm, RecordError, StaleVersion
from ..records.views import form_errors, post_action, show_refusal
from ..settings import current_study
from ..timeutil import site_today, utcnow
from . import proposal, schedule, scheduling, worklists
from .administration import cells_per_kg, save_infusion
from .deviations import deviations as deviation_list  # the view below is called `deviations`
from .dose_levels import (
    dlt_form,
    dlt_window_end,
    escalation_counts,
    escalation_decision,
    proposed_dose_level,
    reviews,
    save_dlt,
    sign_review,
)
from ..registry.fields import sections
from .fields import DLT_FIELDS, INFUSION_FIELDS, LYMPHODEPLETION_FIELDS, VISIT_FIELDS
from .forms import (
    CancelForm,
    DltForm,
    InfusionForm,
    LymphodepletionForm,
    MissedForm,
    RescheduleForm,
    ReviewForm,
    ScheduleForm,
    VaccineForm,
    VisitForm,
)
from .lockouts import LOCKOUT_LABELS
from .lymphodepletion import expected_doses, save_lymphodepletion
from .models import DltAssessment, Infusion, LymphodepletionDay, Visit
from .vaccination import vaccination_window
from .visits import mark_missed, save_visit, visit_status

bp = Blueprint("infusions", __name__)


# --- scheduling ---------------------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/infusions", methods=["GET", "POST"])
@require("view_clinical")
def infusions(subject_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    form = ScheduleForm()
    evaluation = None
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                infusion = scheduling.schedule_infusion(
                    subject,
                    form.proposed_date.data,
                    user=current_user,
                    deviation_reason=form.deviation_reason.data,
                    override_reason=form.override_reason.data,
                    password=form.password.data,
                )
            except RecordError as error:
                show_refusal(form, error, "proposed_date")
                evaluation = getattr(error, "result", None)
            else:
                flash(f"Infusion {infusion.number} scheduled for {infusion.planned_date.isoformat()}.", "success")
                return redirect(url_for(".infusions", subject_id=subject.id))
    else:
        raw = request.args.get("proposed")
        if raw:
            try:
                form.proposed_date.data = date.fromisoformat(raw)
            except ValueError:
                form.proposed_date.errors = ["Enter the proposed date as YYYY-MM-DD."]
    if evaluation is None and form.proposed_date.data and not form.proposed_date.errors:
        evaluation = proposal.evaluate_proposal(subject, form.proposed_date.data)
    return render_template(
        "infusions/schedule.html", subject=subject, form=form, evaluation=evaluation, **_plan_context(subject)
    )


def _plan_context(subject) -> dict:
    study = current_study()
    first = proposal.first_infusion_date(subject)
    plan = schedule.infusion_plan(first, study) if first else []
    by_number = {}
    for infusion in subject.infusions:
        by_number.setdefault(infusion.number, []).append(infusion)
    return {
        "plan": plan,
        "by_number": by_number,
        "first": first,
        "window": vaccination_window(subject),
        "lockout_labels": LOCKOUT_LABELS,
        "today": site_today(subject.site),
        "study": study,
        "cancel_form": CancelForm(),
        "reschedule_form": RescheduleForm(),
    }


@bp.route("/subjects/<int:subject_id>/infusions/<int:infusion_id>/reschedule", methods=["POST"])
@require("enter_data")
def reschedule(subject_id, infusion_id):
    subject = get_subject_or_404(subject_id)
    infusion = get_owned_or_404(Infusion, infusion_id, subject)
    form = RescheduleForm()
    return post_action(
        form,
        lambda: scheduling.reschedule(
            infusion,
            form.proposed_date.data,
            user=current_user,
            expected_version=crf.opened_version(form.version.data),
            reason=form.reason.data,
            deviation_reason=form.deviation_reason.data,
            override_reason=form.override_reason.data,
            password=form.password.data,
        ),
        done=lambda _: f"Infusion {infusion.number} rescheduled to {form.proposed_date.data.isoformat()}.",
        refused=f"Infusion {infusion.number} was not rescheduled: ",
        invalid=lambda form: "Not rescheduled: " + form_errors(form),
        back=url_for(".infusions", subject_id=subject.id),
    )


@bp.route("/subjects/<int:subject_id>/infusions/<int:infusion_id>/cancel", methods=["POST"])
@require("enter_data")
def cancel(subject_id, infusion_id):
    subject = get_subject_or_404(subject_id)
    infusion = get_owned_or_404(Infusion, infusion_id, subject)
    form = CancelForm()
    return post_action(
        form,
        lambda: scheduling.cancel(
            infusion, user=current_user, expected_version=crf.opened_version(form.version.data), reason=form.reason.data
        ),
        done=f"Infusion {infusion.number} cancelled.",
        refused=f"Infusion {infusion.number} was not cancelled: ",
        invalid="Give the reason for cancelling.",
        back=url_for(".infusions", subject_id=subject.id),
    )


# --- CRFs -------------------------------------------------------------------------------------


def _crf_page(subject, record, form_cls, specs, save, title, template="infusions/crf.html", prefill=None, **extra):
    """GET shows the CRF; POST saves it through `save(form, values, version, reason, complete)`.
    `prefill` suggests values for empty fields (e.g. the planned dose from the dose level)."""
    if request.method == "POST":
        if not can("enter_data"):
            abort(403)
        form = form_cls()
    else:
        data = crf.form_data(record, specs)
        form = form_cls(data={**data, **{k: v for k, v in (prefill or {}).items() if data.get(k) is None}})
    form.today = site_today(subject.site)
    if request.method == "POST" and form.validate():
        try:
            save(
                form, form.values(), crf.opened_version(form.version.data), form.reason.data, "complete" in request.form
            )
        except StaleVersion as error:
            db.session.rollback()
            if sa_inspect(record).persistent:
                db.session.refresh(record)
            form.version.data = str(record.version)
            flash(str(error), "error")
        except RecordError as error:
            show_refusal(form, error)
            if not sa_inspect(record).persistent:  # a first save that was refused: nothing exists yet
                record.status, record.version, record.data = "draft", 0, {}
        else:
            flash(f"{title} saved." + (" Marked complete." if record.status == "complete" else ""), "success")
            return redirect(request.path)
    elif request.method == "POST":
        flash("Some answers need correcting: see the messages at the fields. Nothing was saved.", "error")
    return render_template(
        template,
        subject=subject,
        record=record,
        form=form,
        specs=specs,
        title=title,
        sections=sections(specs),
        can_edit=can("enter_data"),
        **extra,
    )


@bp.route("/subjects/<int:subject_id>/infusions/<int:infusion_id>", methods=["GET", "POST"])
@require("view_clinical")
def infusion(subject_id, infusion_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(Infusion, infusion_id, subject)
    prefill = (
        {
            "planned_cells": current_study().regimen.dose_level(record.dose_level).cells,
            "administration_date": record.planned_date,
        }
        if record.dose_level
        else {}
    )

    def save(form, values, version, reason, complete):
        save_infusion(
            record,
            values,
            user=current_user,
            expected_version=version,
            reason=reason,
            complete=complete,
            today=site_today(subject.site),
            override_reason=form.override_reason.data,
            override_password=form.override_password.data,
        )

    page = _crf_page(
        subject,
        record,
        InfusionForm,
        INFUSION_FIELDS,
        save,
        f"Infusion {record.number}",
        prefill=prefill,
        kind="infusion",
        per_kg=cells_per_kg(record.data or {}),
    )
    return page


@bp.route("/subjects/<int:subject_id>/lymphodepletion/<int:day_id>", methods=["GET", "POST"])
@require("view_clinical")
def lymphodepletion(subject_id, day_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(LymphodepletionDay, day_id, subject)

    def save(form, values, version, reason, complete):
        save_lymphodepletion(
            record,
            values,
            user=current_user,
            expected_version=version,
            reason=reason,
            complete=complete,
            today=site_today(subject.site),
        )

    return _crf_page(
        subject,
        record,
        LymphodepletionForm,
        LYMPHODEPLETION_FIELDS,
        save,
        f"Lymphodepletion day {record.day}",
        expected=expected_doses(record),
        kind="lymphodepletion",
    )


@bp.route("/subjects/<int:subject_id>/visits/<int:visit_id>", methods=["GET", "POST"])
@require("view_clinical")
def visit(subject_id, visit_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(Visit, visit_id, subject)
    consent = (subject.current_screening.data or {}).get("icf_signed_date") if subject.current_screening else None

    def save(form, values, version, reason, complete):
        save_visit(
            record,
            values,
            user=current_user,
            expected_version=version,
            reason=reason,
            complete=complete,
            consent=date.fromisoformat(consent) if consent else None,
        )

    return _crf_page(
        subject,
        record,
        VisitForm,
        VISIT_FIELDS,
        save,
        f"Visit {record.label}",
        kind="visit",
        missed_form=MissedForm(version=record.version),
        visit_status=visit_status(record, site_today(subject.site)),
    )


@bp.route("/subjects/<int:subject_id>/visits/<int:visit_id>/missed", methods=["POST"])
@require("enter_data")
def visit_missed(subject_id, visit_id):
    subject = get_subject_or_404(subject_id)
    record = get_owned_or_404(Visit, visit_id, subject)
    form = MissedForm()
    return post_action(
        form,
        lambda: mark_missed(
            record, user=current_user, expected_version=crf.opened_version(form.version.data), reason=form.reason.data
        ),
        done=f"Visit {record.label} recorded as missed.",
        refused="",
        invalid="Give the reason the visit was missed.",
        back=url_for(".visit", subject_id=subject.id, visit_id=record.id),
    )


@bp.route("/subjects/<int:subject_id>/dlt", methods=["GET", "POST"])
@require("view_clinical")
def dlt(subject_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    window_end = dlt_window_end(subject)
    if window_end is None:
        flash("The DLT assessment opens once the first infusion is given.", "info")
        return redirect(url_for("enrollment.subject", subject_id=subject.id))
    record = subject.dlt_assessment
    created = record is None
    if created:  # shown empty; the record is created by its first save, nothing by a GET
        record = DltAssessment(subject_id=subject.id, status="draft", data={}, version=0)

    def save(form, values, version, reason, complete):
        if complete and not can("sign_eligibility"):
            raise InvalidForm({"password": "Only an investigator completes and signs the DLT assessment."})
        with records.transaction():  # created and saved in one write, or neither
            target = dlt_form(subject, user=current_user) if created else record
            if created and version <= 0:  # the first save of a form opened before it existed
                version = target.version
            save_dlt(
                target,
                values,
                user=current_user,
                expected_version=version,
                reason=reason,
                complete=complete,
                password=form.password.data,
                today=site_today(subject.site),
                window_end=window_end,
            )

    return _crf_page(subject, record, DltForm, DLT_FIELDS, save, "DLT assessment", kind="dlt", window_end=window_end)


# --- vaccinations --------------------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/vaccinations", methods=["GET", "POST"])
@require("view_clinical")
def vaccinations(subject_id):
    if request.method == "POST" and not can("enter_data"):
        abort(403)
    subject = get_subject_or_404(subject_id)
    form = VaccineForm()
    form.today = site_today(subject.site)
    if form.validate_on_submit():
        values = {
            "name": form.name.data.strip(),
            "last_date": form.last_date.data,
            "start_date": form.last_date.data,
            "indication": (form.indication.data or "").strip() or None,
        }
        try:
            enrollment.record_vaccine(
                subject,
                values,
                user=current_user,
                deviation_reason=form.deviation_reason.data,
                password=form.password.data,
            )
        except RecordError as error:
            show_refusal(form, error)
        else:
            flash("Vaccination recorded.", "success")
            return redirect(url_for(".vaccinations", subject_id=subject.id))
    vaccines = [e for e in subject.active_exposures if e.category == "vaccine"]
    return render_template(
        "infusions/vaccinations.html",
        subject=subject,
        form=form,
        vaccines=vaccines,
        window=vaccination_window(subject),
        deviations={d.form_id: d for d in subject.deviations if d.form == "exposure"},
    )


# --- across subjects -------------------------------------------------------------------------


@bp.route("/calendar")
@require("view_clinical")
def calendar():
    sites = allowed_sites()
    start = min((site_today(s) for s in sites), default=utcnow().date())
    page = request.args.get("page", 1, type=int)
    result = worklists.calendar(user_sites(), start, 28, page=page)
    return render_template("infusions/calendar.html", start=start, end=start + timedelta(days=27), **result)


@bp.route("/overdue")
@require("view_clinical")
def overdue():
    lists = worklists.overdue(user_sites(), utcnow().date())
    return render_template("infusions/overdue.html", **lists)


@bp.route("/deviations")
@require("view_clinical")
def deviations():
    return render_template("infusions/deviations.html", deviations=deviation_list(user_sites()))


@bp.route("/escalation", methods=["GET", "POST"])
@require("view_clinical")
def escalation():
    if request.method == "POST" and not can("sign_eligibility"):
        abort(403)
    form = ReviewForm()
    if form.validate_on_submit():
        try:
            review = sign_review(user=current_user, password=form.password.data, comment=form.comment.data)
        except RecordError as error:
            show_refusal(form, error, "password")
        else:
            flash(
                f"Dose-escalation review signed: {review.decision}{' ' + review.level if review.level else ''}.",
                "success",
            )
            return redirect(url_for(".escalation"))
    counts = escalation_counts()
    visible = user_sites()
    for row in counts:  # subjects of other sites are counted, never named (PROTOCOL 2)
        row["subjects"] = [s for s in row["subjects"] if covers(visible, s["subject"].site_id)]
    return render_template(
        "infusions/escalation.html",
        counts=counts,
        decision=escalation_decision(),
        proposal=proposed_dose_level(),
        form=form,
        reviews=reviews(),
    )
