from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from ..extensions import db
from . import service
from .forms import AmendmentForm, LoginForm, UserForm
from .models import Site, User
from .policy import require

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    if target and urlsplit(target).netloc == "" and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("main.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = service.authenticate(form.username.data, form.password.data)
        except service.AuthError as error:
            form.password.errors.append(str(error))
        else:
            session.clear()
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/admin/users", methods=["GET", "POST"])
@require("manage_users")
def users():
    form = UserForm()
    sites = db.session.execute(select(Site).order_by(Site.code)).scalars().all()
    form.sites.choices = [(s.code, f"{s.code} — {s.name}") for s in sites]
    if form.validate_on_submit():
        try:
            user = service.create_user(form.username.data.strip(), form.full_name.data.strip(), form.role.data,
                                       form.password.data, form.sites.data, actor=current_user)
        except service.AuthError as error:
            form.username.errors.append(str(error))
        else:
            flash(f"User {user.username} created.", "success")
            return redirect(url_for("auth.users"))
    all_users = db.session.execute(select(User).order_by(User.username)).scalars().all()
    return render_template("auth/users.html", users=all_users, form=form, is_locked=service.is_locked)


@bp.route("/admin/study", methods=["GET", "POST"])
@require("propose_amendment")
def study_settings():
    """The study definition in force, and the admin's proposal of an amendment of its
    settings (issue 11: it takes effect once an investigator approves it, cellstudy/amendments)."""
    from ..amendments import service as amendments
    from ..settings import SETTING_SECTIONS, current_study, editable_settings, setting_errors, setting_label, values_of
    from ..timeutil import utcnow

    form = AmendmentForm()
    base = amendments.proposal_base()  # a proposal builds on the latest approved amendment
    rows = editable_settings(base)
    values = {key: request.form.get(key, "") for key, _v, _t in rows} if request.method == "POST" else {
        key: "" if value is None else str(value) for key, value, _t in rows}
    if request.method == "GET":
        form.effective_date.data = utcnow().date().isoformat()
    errors: dict = {}
    if form.validate_on_submit():
        try:
            amendment = amendments.propose(values, label=form.version.data, reason=form.reason.data,
                                           effective_date=form.effective_date.data, user=current_user)
        except amendments.AmendmentError as exc:
            db.session.rollback()
            for key, message in exc.errors.items():
                target = getattr(form, key) if key in ("version", "reason", "effective_date") else None
                if target is not None:
                    target.errors = list(target.errors) + [message]
                else:
                    errors[key] = message
        else:
            flash(f"Amendment {amendment.label} proposed. It takes effect only once an investigator approves it "
                  "with an e-signature; until then the settings in force are unchanged.", "success")
            return redirect(url_for("auth.study_settings"))
    elif request.method == "POST":
        errors = setting_errors(values, base)
    in_force = values_of(current_study())
    sections = [(label, [(key, setting_label(key), in_force[key]) for key, _v, _t in rows
                         if key.startswith(section + ".")]) for section, label in SETTING_SECTIONS.items()]
    return render_template("auth/study.html", form=form, sections=sections, values=values, errors=errors,
                           awaiting=amendments.awaiting(), history=amendments.history(),
                           in_force_id=amendments.in_force_id(), state=amendments.state,
                           base_version=base.version)
