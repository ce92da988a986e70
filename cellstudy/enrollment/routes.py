"""Subjects, the screening CRF, the exposure log, enrolment and screen failure."""

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload, undefer

from ..auth.policy import allowed_sites, get_owned_or_404, get_subject_or_404, require, scoped, user_sites
from .. import registry
from ..extensions import db
from ..records import crf
from ..records.service import RecordError, StaleVersion
from ..records.views import post_action
from ..timeutil import site_today, utcnow
from ..urls import page_number
from . import reconfirm, render, service
from ..settings import current_study
from .eligibility import criteria as criteria_of
from .eligibility import criterion_texts
from .fields import EXPOSURE_CATEGORY_LABELS, FIELDS_BY_NAME, SCREENING_FIELDS, SECTIONS
from .forms import (
    EligibilityDeviationForm,
    EnrolForm,
    ExposureForm,
    ReconfirmForm,
    RegisterForm,
    RemoveForm,
    RescreenForm,
    ScreenFailForm,
    ScreeningForm,
)
from .models import SUBJECT_STATUSES, Exposure, Screening, Subject
from ..auth.policy import can
from ..adverse_events import service as adverse_events
from ..infusions.dose_levels import dlt_window_end
from ..infusions.vaccination import vaccination_window
from ..infusions.visits import visit_status
from ..infusions.dose_levels import proposed_dose_level

bp = Blueprint("enrollment", __name__, url_prefix="/subjects")


bp.add_app_template_global(render.criteria_list, "criteria_html")


@bp.app_template_filter("criterion_labels")
def criterion_labels(codes) -> str:
    """Criteria as the protocol words them, under the definition in force ("ALT and AST <= 3 x
    ULN; radiotherapy within 4 weeks"), never their codes (issue 11)."""
    return "; ".join(criterion_texts(codes, current_study()))


@bp.route("/")
@require("view_clinical")
def subject_list():
    q = (request.args.get("q") or "").strip()
    status = request.args.get("status") or ""
    stmt = scoped(select(Subject).options(joinedload(Subject.site)), Subject.site_id, user_sites()).order_by(
        Subject.screening_number
    )
    if q:
        like = f"%{q.upper()}%"
        stmt = stmt.where(
            or_(func.upper(Subject.screening_number).like(like), func.upper(Subject.subject_number).like(like))
        )
    if status in SUBJECT_STATUSES:
        stmt = stmt.where(Subject.status == status)
    page = db.paginate(stmt, page=page_number(request.args.get("page")), per_page=25, error_out=False)
    return render_template(
        "enrollment/subject_list.html",
        page=page,
        q=q,
        status=status,
        statuses=SUBJECT_STATUSES,
        register_form=_register_form(),
    )


def _register_form() -> RegisterForm:
    form = RegisterForm()
    form.site.choices = [(str(s.id), f"{s.code} — {s.name}") for s in allowed_sites()]
    return form


@bp.route("/new", methods=["POST"])
@require("enter_data")
def register():
    form = _register_form()
    if not form.validate_on_submit():
        flash("Choose one of your sites to register the subject.", "error")
        return redirect(url_for(".subject_list"))
    site = next(s for s in allowed_sites() if str(s.id) == form.site.data)
    subject = service.register_subject(site, user=current_user)
    flash(f"Subject {subject.screening_number} registered. Enter the screening form.", "success")
    return redirect(url_for(".screening", subject_id=subject.id))


@bp.route("/<int:subject_id>")
@require("view_clinical")
def subject(subject_id):
    subject = get_subject_or_404(subject_id, undefer(Subject.has_reviews))
    screening = subject.current_screening
    reviews = reconfirm.reviews_of(subject) if subject.has_reviews else []
    record = reconfirm.decision_of_record(subject)
    # the live checker: before enrolment, or beside an open review (after enrolment the
    # signed decision of record is shown, never recomputed)
    live = subject.status in ("screening", "screen_failed") or record is None or any(r.is_open for r in reviews)
    result = service.evaluate(screening) if live else None

    now = utcnow()
    aes = [
        {"ae": ae, "clock": adverse_events.clocks(ae, now)} for ae in subject.adverse_events if ae.status != "deleted"
    ]
    return render_template(
        "enrollment/subject.html",
        subject=subject,
        aes=aes,
        reviews=reviews,
        decision_of_record=record,
        lab_suggestions=len(adverse_events.lab_suggestions(subject)),
        screening=screening,
        result=result,
        blockers=service.enrolment_blockers(subject, screening, result) if live else [],
        screen_fail_form=ScreenFailForm(),
        rescreen_form=RescreenForm(),
        criteria=criteria_of(current_study()),
        window=vaccination_window(subject),
        today=site_today(subject.site),
        visit_status=visit_status,
        dlt_window_end=dlt_window_end(subject),
    )


@bp.route("/<int:subject_id>/screening", methods=["GET", "POST"])
@bp.route("/<int:subject_id>/screening/<int:screening_id>", methods=["GET", "POST"])
@require("view_clinical")
def screening(subject_id, screening_id=None):
    if request.method == "POST" and not _can_enter():
        abort(403)  # role before site, as everywhere (auth/policy.py)
    subject = get_subject_or_404(subject_id)
    screening = get_owned_or_404(Screening, screening_id, subject) if screening_id else subject.current_screening
    if request.method == "POST":
        form = ScreeningForm()
    else:
        form = ScreeningForm(data=_form_data(screening))
    form.today = site_today(subject.site)
    conflict = None
    if request.method == "POST" and form.validate():
        values = form.values()
        done_url = url_for(".screening", subject_id=subject.id, screening_id=screening.id)
        completing = "complete" in request.form and screening.status != "complete"
        try:
            service.save_screening(
                screening,
                values,
                user=current_user,
                expected_version=crf.opened_version(form.version.data),
                reason=form.reason.data,
                complete="complete" in request.form,
            )
        except StaleVersion as error:
            conflict = _conflict(screening, values)
            form.version.data = str(screening.version)  # a deliberate re-save now overrides
            flash(str(error), "error")
        except service.IncompleteForm as error:
            for name in error.missing:
                field = form[name] if name in form else form.prior_therapies_none
                field.errors = list(field.errors) + ["Required to complete the form."]
            flash(str(error), "error")
        except RecordError as error:
            _field_error(form, error)
            flash("Nothing was saved: " + str(error), "error")
        else:
            flash(f"{registry.label('screening')} saved." + (" Marked complete." if completing else ""), "success")
            return redirect(done_url)  # built before the commit: no reload of the saved rows
    elif request.method == "POST":
        flash("Some answers need correcting: see the messages at the fields. Nothing was saved.", "error")
    result = service.evaluate(screening)
    if result.get("error"):
        _field_error(form, result["error"])
    return render_template(
        "enrollment/screening.html",
        subject=subject,
        screening=screening,
        form=form,
        result=result,
        sections=SECTIONS,
        fields=SCREENING_FIELDS,
        criteria=criteria_of(current_study()),
        conflict=conflict,
        labels=EXPOSURE_CATEGORY_LABELS,
        can_edit=_can_enter(),
    )


def _can_enter() -> bool:
    return can("enter_data")


def _form_data(screening: Screening) -> dict:
    data = crf.form_data(screening, SCREENING_FIELDS)
    data["prior_therapies_none"] = bool((screening.data or {}).get(service.NO_PRIOR_THERAPIES))
    return data


def _conflict(screening: Screening, values: dict) -> list[dict]:
    """Both edits side by side: what the user typed and what is saved now."""
    rows = []
    for name, (saved, mine) in service.records.diff(screening, values).items():
        spec = FIELDS_BY_NAME.get(name)
        rows.append(
            {
                "label": spec.label if spec else "No prior therapies",
                "mine": mine,
                "saved": crf.from_stored(spec, saved) if spec else saved,
            }
        )
    return rows


def _field_error(form, error) -> None:
    message = str(error)
    name = getattr(error, "field", None) or service.field_of_error(message)
    if name and name in form:
        form[name].errors = list(form[name].errors) + [message]
    else:
        flash(message, "error")


@bp.route("/<int:subject_id>/medications")
@require("view_clinical")
def medications(subject_id):
    """The therapy log: prior therapies and concomitant medications/procedures (one log)."""
    subject = get_subject_or_404(subject_id)
    # the same cutoff as the eligibility case (service.build_case): the enrolment date once
    # enrolled, before that the planned first infusion
    enrolled_on = service.enrolment_date(subject)
    first = enrolled_on
    if (
        first is None
        and subject.current_screening
        and (subject.current_screening.data or {}).get("first_infusion_date")
    ):
        from datetime import date as _date

        first = _date.fromisoformat(subject.current_screening.data["first_infusion_date"])
    removed = [e for e in subject.exposures if e.status == "deleted"]
    return render_template(
        "enrollment/medications.html",
        subject=subject,
        first=first,
        enrolled_on=enrolled_on,
        labels=EXPOSURE_CATEGORY_LABELS,
        removed=removed,
    )


def _back(subject) -> str:
    """Where the therapy log forms return: the log page or the screening form."""
    if request.args.get("next") == "medications":
        return url_for(".medications", subject_id=subject.id)
    return url_for(".screening", subject_id=subject.id)


@bp.route("/<int:subject_id>/exposures/new", methods=["GET", "POST"])
@require("enter_data")
def exposure_new(subject_id):
    subject = get_subject_or_404(subject_id)
    form = ExposureForm()
    form.today = site_today(subject.site)
    if form.validate_on_submit():
        values = form.values()
        try:
            if values["category"] == "vaccine":  # PROTOCOL 5.2: the no-vaccination window applies here too
                values.pop("category")
                service.record_vaccine(
                    subject,
                    values,
                    user=current_user,
                    deviation_reason=form.deviation_reason.data,
                    password=form.password.data,
                )
            else:
                service.add_exposure(subject, values, user=current_user)
        except RecordError as error:
            db.session.rollback()
            for name, message in (getattr(error, "errors", None) or {"name": str(error)}).items():
                form[name].errors = list(form[name].errors) + [message]
        else:
            flash("Therapy added to the log.", "success")
            return redirect(_back(subject))
    return render_template("enrollment/exposure.html", subject=subject, form=form, exposure=None, can_edit=True)


@bp.route("/<int:subject_id>/exposures/<int:exposure_id>", methods=["GET", "POST"])
@require("enter_data")
def exposure_edit(subject_id, exposure_id):
    subject = get_subject_or_404(subject_id)
    exposure = get_owned_or_404(Exposure, exposure_id, subject)
    if exposure.status == "deleted":
        abort(404)
    form = ExposureForm(obj=exposure) if request.method == "GET" else ExposureForm()
    form.today = site_today(subject.site)
    if request.method == "GET":
        form.version.data = exposure.version
    if form.validate_on_submit():
        try:
            service.update_exposure(
                exposure,
                form.values(),
                user=current_user,
                expected_version=crf.opened_version(form.version.data),
                reason=form.reason.data,
            )
        except RecordError as error:
            db.session.rollback()
            (form.reason.errors if error.field == "reason" else form.name.errors).append(str(error))
        else:
            flash("Therapy updated.", "success")
            return redirect(_back(subject))
    return render_template(
        "enrollment/exposure.html",
        subject=subject,
        form=form,
        exposure=exposure,
        remove_form=RemoveForm(version=exposure.version),
        can_edit=True,
    )


@bp.route("/<int:subject_id>/exposures/<int:exposure_id>/remove", methods=["POST"])
@require("enter_data")
def exposure_remove(subject_id, exposure_id):
    subject = get_subject_or_404(subject_id)
    exposure = get_owned_or_404(Exposure, exposure_id, subject)
    form = RemoveForm()
    return post_action(
        form,
        lambda: service.remove_exposure(
            exposure, user=current_user, expected_version=crf.opened_version(form.version.data), reason=form.reason.data
        ),
        done="Therapy removed from the log (kept in the audit trail).",
        refused="",
        invalid="Give a reason for the removal.",
        back=url_for(".exposure_edit", subject_id=subject.id, exposure_id=exposure.id),
        back_done=url_for(".screening", subject_id=subject.id),
    )


@bp.route("/<int:subject_id>/enrol", methods=["GET", "POST"])
@require("sign_eligibility")
def enrol(subject_id):
    subject = get_subject_or_404(subject_id)
    screening = subject.current_screening
    form = EnrolForm()
    proposed, why = proposed_dose_level()
    form.dose_level.choices = [(lv.name, lv.label) for lv in current_study().regimen.dose_levels]
    if request.method == "GET":
        form.screening_version.data = screening.version
        form.dose_level.data = proposed
    if form.validate_on_submit():
        try:
            service.enrol(
                subject,
                user=current_user,
                password=form.password.data,
                screening_version=crf.opened_version(form.screening_version.data),
                dose_level=form.dose_level.data,
                dose_level_reason=form.dose_level_reason.data,
            )
        except RecordError as error:
            db.session.rollback()
            target = {"password": form.password, "dose_level": form.dose_level_reason}.get(error.field, form.confirm)
            target.errors = list(target.errors) + [str(error)]
        else:
            flash(f"Subject enrolled as {subject.subject_number}.", "success")
            return redirect(url_for(".subject", subject_id=subject.id))
    result = service.evaluate(screening)
    return render_template(
        "enrollment/enrol.html",
        subject=subject,
        screening=screening,
        form=form,
        result=result,
        blockers=service.enrolment_blockers(subject, screening, result),
        criteria=criteria_of(current_study()),
        proposed=proposed,
        proposal_reason=why,
        meaning=service.ENROL_MEANING,
        max_failures=current_app.config["LOGIN_MAX_FAILURES"],
    )


@bp.route("/<int:subject_id>/screen-fail", methods=["POST"])
@require("enter_data")
def screen_fail(subject_id):
    subject = get_subject_or_404(subject_id)
    form = ScreenFailForm()
    return post_action(
        form,
        lambda: service.screen_fail(subject, user=current_user, note=form.note.data),
        done=lambda decision: "Screen failure recorded: " + criterion_labels(decision.failed_criteria) + ".",
        refused="",
        invalid="The note is too long (500 characters at most).",
        back=url_for(".subject", subject_id=subject.id),
    )


@bp.route("/<int:subject_id>/rescreen", methods=["POST"])
@require("enter_data")
def rescreen(subject_id):
    subject = get_subject_or_404(subject_id)
    form = RescreenForm()
    return post_action(
        form,
        lambda: service.rescreen(subject, user=current_user, reason=form.reason.data),
        done=lambda screening: f"Re-screening started (attempt {screening.attempt}).",
        refused="",
        invalid="Give the reason for re-screening.",
        back=url_for(".subject", subject_id=subject.id),
        back_done=url_for(".screening", subject_id=subject.id),
    )


# --- eligibility after enrolment (issue 11) -------------------------------------------------------------


@bp.route("/eligibility-reviews")
@require("view_clinical")
def eligibility_reviews():
    """The open eligibility reviews of the user's sites: the investigator's worklist."""
    return render_template("enrollment/reviews.html", reviews=reconfirm.open_reviews(user_sites()))


def _review_page(subject, reconfirm_form=None, deviation_form=None):
    screening = subject.current_screening
    result = service.evaluate(screening)
    if reconfirm_form is None:
        reconfirm_form = ReconfirmForm(prefix="reconfirm")
    reconfirm_form.screening_version.data = screening.version  # judged on the data shown now
    decision = reconfirm.decision_of_record(subject)
    reviews = reconfirm.reviews_of(subject)
    return render_template(
        "enrollment/review.html",
        subject=subject,
        screening=screening,
        result=result,
        open_reviews=[r for r in reviews if r.is_open],
        resolved=[r for r in reviews if not r.is_open],
        decision=decision,
        blockers=reconfirm.reconfirm_blockers(subject, result),
        changed=reconfirm.changed_statuses(reconfirm.signed_result(decision), result) if decision else [],
        reconfirm_form=reconfirm_form,
        deviation_form=deviation_form or EligibilityDeviationForm(prefix="deviation"),
        criteria=criteria_of(current_study()),
        reconfirm_meaning=reconfirm.RECONFIRM_MEANING,
        deviation_meaning=reconfirm.DEVIATION_MEANING,
        max_failures=current_app.config["LOGIN_MAX_FAILURES"],
    )


@bp.route("/<int:subject_id>/eligibility-review")
@require("sign_eligibility")
def eligibility_review(subject_id):
    """The subject's open eligibility reviews, the current check and the two actions."""
    return _review_page(get_subject_or_404(subject_id))


def _refusal(form, error) -> None:
    """A refused action's message at the field it names (the password, the reason), else at
    the confirmation box."""
    name = getattr(error, "field", None)
    target = form[name] if name in ("password", "reason") and name in form else form.confirm
    target.errors = list(target.errors) + [str(error)]


@bp.route("/<int:subject_id>/eligibility-review/reconfirm", methods=["POST"])
@require("sign_eligibility")
def eligibility_reconfirm(subject_id):
    subject = get_subject_or_404(subject_id)
    form = ReconfirmForm(prefix="reconfirm")
    if form.validate_on_submit():
        try:
            reconfirm.reconfirm(
                subject,
                user=current_user,
                password=form.password.data,
                screening_version=crf.opened_version(form.screening_version.data),
            )
        except StaleVersion:
            db.session.rollback()
            form.confirm.errors = list(form.confirm.errors) + [
                "The screening data changed since you opened this page: review the criteria again and sign again."
            ]
        except RecordError as error:
            db.session.rollback()
            _refusal(form, error)
        else:
            flash("Eligibility re-confirmed and signed; the earlier decision is kept in the history.", "success")
            return redirect(url_for(".subject", subject_id=subject.id))
    return _review_page(subject, reconfirm_form=form)


@bp.route("/<int:subject_id>/eligibility-review/deviation", methods=["POST"])
@require("sign_eligibility")
def eligibility_deviation(subject_id):
    subject = get_subject_or_404(subject_id)
    form = EligibilityDeviationForm(prefix="deviation")
    if form.validate_on_submit():
        try:
            reconfirm.record_deviation(subject, user=current_user, password=form.password.data, reason=form.reason.data)
        except RecordError as error:
            db.session.rollback()
            _refusal(form, error)
        else:
            flash("Protocol deviation recorded and signed; the eligibility review is resolved.", "success")
            return redirect(url_for(".subject", subject_id=subject.id))
    return _review_page(subject, deviation_form=form)
