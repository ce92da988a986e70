"""The amendment pages (issue 11): the list with the proposals awaiting approval (before and
after of each setting, the eligibility impact), the investigator's approval with an
e-signature or rejection, the admin's withdrawal. The proposal itself is made on the study
settings page (amendments.study_settings, /admin/study). Actions name the amendment in the POSTed form."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..auth.policy import can, covers, require, user_sites
from .. import settings
from ..settings import SETTING_SECTIONS, current_study, editable_settings, setting_errors, setting_label, values_of
from ..timeutil import utcnow
from ..extensions import db
from ..records.service import RecordError
from . import service
from .forms import AmendmentForm, ApproveForm, DecisionForm

bp = Blueprint("amendments", __name__)


def _impact_for(amendment) -> dict | None:
    """The impact list split by the reader's sites: own-site subjects by name, with the
    criteria whose status would change; the others only counted (a subject of another site
    is never named, PROTOCOL 2)."""
    rows = service.impact(amendment)
    if rows is None:
        return None
    sites = user_sites()
    names = service.criterion_names(amendment)
    own = []
    for row in rows:
        subject = row["subject"]
        if not covers(sites, subject.site_id):
            continue
        own.append(
            {
                "subject": subject,
                "error": row["after"].get("error"),
                "changes": [
                    (names.get(code, code), _status(row["before"], code), _status(row["after"], code))
                    for code in row["changed_criteria"]
                ],
            }
        )
    return {"own": own, "others": len(rows) - len(own), "total": len(rows)}


def _status(result: dict, code: str) -> str:
    return ((result.get("criteria") or {}).get(code) or {}).get("status", "—")


def _page(approve_form=None, reject_form=None, withdraw_form=None, errors_for=None, status=200):
    awaiting = service.awaiting()
    in_force = service.in_force_id()
    items = [{"amendment": a, "changes": service.changes(a), "impact": _impact_for(a)} for a in awaiting]
    past = [
        {"amendment": a, "changes": service.changes(a), "state": service.state(a, in_force)}
        for a in service.history()
        if a.status != "proposed"
    ]
    forms = {}
    for item in items:
        a = item["amendment"]
        mine = errors_for == a.id
        forms[a.id] = {
            "approve": approve_form
            if mine and approve_form is not None
            else ApproveForm(amendment_id=a.id, formdata=None),
            "reject": reject_form
            if mine and reject_form is not None
            else DecisionForm(prefix="reject", amendment_id=a.id, formdata=None),
            "withdraw": withdraw_form
            if mine and withdraw_form is not None
            else DecisionForm(prefix="withdraw", amendment_id=a.id, formdata=None),
        }
    # times in the reader's site time when they have one site (UTC on hover), else UTC
    sites = list(current_user.sites)
    return render_template(
        "amendments/list.html",
        items=items,
        past=past,
        forms=forms,
        meaning=service.MEANING,
        max_failures=current_app.config["LOGIN_MAX_FAILURES"],
        viewer_site=sites[0] if len(sites) == 1 else None,
        moment=settings.effective_moment,
    ), status


@bp.route("/amendments", methods=["GET"], endpoint="index")
@require("view_amendments")
def amendment_list():
    return _page()


def _target_error(form, error) -> None:
    for name, message in error.errors.items():
        field = getattr(form, name, None) if name else None
        if field is None or name == "amendment_id":
            flash(message, "error")
        else:
            field.errors = list(field.errors) + [message]


def _amendment_id(form) -> int | None:
    try:
        return int(form.amendment_id.data)
    except (TypeError, ValueError):
        return None


@bp.route("/amendments/approve", methods=["POST"], endpoint="approve")
@require("approve_amendment")
def approve_amendment():
    form = ApproveForm()
    target = _amendment_id(form)
    if form.validate_on_submit() and target is not None:
        try:
            amendment = service.approve(target, user=current_user, password=form.password.data)
        except RecordError as error:  # the signature was refused (and recorded)
            db.session.rollback()
            form.password.errors = list(form.password.errors) + [str(error)]
        except service.AmendmentError as error:
            db.session.rollback()
            _target_error(form, error)
        else:
            when = (
                "It is in force now."
                if amendment.in_force_at
                else f"It comes into force on {amendment.effective_date.isoformat()} (00:00 UTC)."
            )
            flash(f"Amendment {amendment.label} approved with your e-signature. {when}", "success")
            return redirect(url_for(".index"))
    elif target is None:
        flash("Choose the amendment to approve.", "error")
    return _page(approve_form=form, errors_for=target)


def _decide(action: str, prefix: str, verb: str):
    form = DecisionForm(prefix=prefix)
    target = _amendment_id(form)
    if form.validate_on_submit() and target is not None:
        try:
            amendment = action(target, user=current_user, reason=form.reason.data)
        except service.AmendmentError as error:
            db.session.rollback()
            _target_error(form, error)
        else:
            flash(f"Amendment {amendment.label} {verb}: the definition in force is unchanged.", "success")
            return redirect(url_for(".index"))
    elif target is None:
        flash("Choose the amendment.", "error")
    return _page(**{f"{prefix}_form": form}, errors_for=target)


@bp.route("/amendments/reject", methods=["POST"], endpoint="reject")
@require("approve_amendment")
def reject_amendment():
    return _decide(service.reject, "reject", "rejected")


@bp.route("/amendments/withdraw", methods=["POST"], endpoint="withdraw")
@require("propose_amendment")
def withdraw_amendment():
    return _decide(service.withdraw, "withdraw", "withdrawn")


@bp.app_template_global("amendments_awaiting")
def amendments_awaiting() -> list:
    """For the start page of investigators: the proposals awaiting their approval."""
    if not can("approve_amendment"):
        return []
    return [{"amendment": a, "changes": service.changes(a)} for a in service.awaiting()]


@bp.route("/admin/study", methods=["GET", "POST"])
@require("propose_amendment")
def study_settings():
    """The study definition in force, and the admin's proposal of an amendment of its
    settings (issue 11: it takes effect once an investigator approves it, cellstudy/amendments)."""
    form = AmendmentForm()
    base = service.proposal_base()  # a proposal builds on the latest approved amendment
    rows = editable_settings(base)
    values = (
        {key: request.form.get(key, "") for key, _v, _t in rows}
        if request.method == "POST"
        else {key: "" if value is None else str(value) for key, value, _t in rows}
    )
    if request.method == "GET":
        form.effective_date.data = utcnow().date().isoformat()
    errors: dict = {}
    if form.validate_on_submit():
        try:
            amendment = service.propose(
                values,
                label=form.version.data,
                reason=form.reason.data,
                effective_date=form.effective_date.data,
                user=current_user,
            )
        except service.AmendmentError as exc:
            db.session.rollback()
            for key, message in exc.errors.items():
                target = getattr(form, key) if key in ("version", "reason", "effective_date") else None
                if target is not None:
                    target.errors = list(target.errors) + [message]
                else:
                    errors[key] = message
        else:
            flash(
                f"Amendment {amendment.label} proposed. It takes effect only once an investigator approves it "
                "with an e-signature; until then the settings in force are unchanged.",
                "success",
            )
            return redirect(url_for(".study_settings"))
    elif request.method == "POST":
        errors = setting_errors(values, base)
    in_force = values_of(current_study())
    sections = [
        (label, [(key, setting_label(key), in_force[key]) for key, _v, _t in rows if key.startswith(section + ".")])
        for section, label in SETTING_SECTIONS.items()
    ]
    return render_template(
        "amendments/study.html",
        form=form,
        sections=sections,
        values=values,
        errors=errors,
        awaiting=service.awaiting(),
        history=service.history(),
        in_force_id=service.in_force_id(),
        state=service.state,
        base_version=base.version,
    )
