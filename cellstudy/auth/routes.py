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
@require("manage_users")
def study_settings():
    """The study definition in force, and the admin's amendment of its settings."""
    from ..infusions.models import StudyAmendment
    from ..settings import amend, current_study, editable_settings

    form = AmendmentForm()
    settings = editable_settings(current_study())
    values = {key: request.form.get(key, "") for key, _v, _t in settings} if request.method == "POST" else {
        key: "" if value is None else str(value) for key, value, _t in settings}
    error = None
    if form.validate_on_submit():
        try:
            amend(values, version=form.version.data.strip(), reason=form.reason.data.strip(), user=current_user)
        except ValueError as exc:
            error = str(exc)
        else:
            flash("Study settings amended.", "success")
            return redirect(url_for("auth.study_settings"))
    history = db.session.execute(select(StudyAmendment).order_by(StudyAmendment.id.desc())).scalars().all()
    return render_template("auth/study.html", form=form, settings=settings, values=values, error=error,
                           history=history)
