from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from ..extensions import db
from ..urls import safe_next
from . import service, sessions
from .forms import ChangePasswordForm, LoginForm, ResetPasswordForm, UserForm
from .models import Site, User
from .policy import require

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    return safe_next(target, url_for("main.index"))  # the one check of a redirect target (issue 13)


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
            sessions.start(user)
            if user.must_change_password:
                flash("Your password was reset by an administrator: choose a new password.", "warning")
                return redirect(url_for("auth.change_password"))
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    sessions.end("logout")  # on the server: a copy of the cookie no longer signs anyone in
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@require(None)
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            service.change_password(current_user, form.current_password.data, form.new_password.data)
        except service.AuthError as error:
            form[error.field or "new_password"].errors.append(str(error))
        else:
            flash("Your password was changed. Your other sessions have ended.", "success")
            return redirect(url_for("main.index"))
    return render_template("auth/change_password.html", form=form)


@bp.route("/admin/password-reset", methods=["GET", "POST"])
@require("manage_users")
def reset_password():
    form = ResetPasswordForm(username=request.args.get("user"))
    form.username.choices = [
        (u, u) for u in db.session.execute(select(User.username).order_by(User.username)).scalars()
    ]
    if form.validate_on_submit():
        try:
            user = service.reset_password(form.username.data, form.password.data, actor=current_user)
        except service.AuthError as error:
            form.password.errors.append(str(error))
        else:
            flash(f"Temporary password set for {user.username}: they must change it at their next log-in.", "success")
            return redirect(url_for("auth.users"))
    return render_template("auth/reset_password.html", form=form)


@bp.route("/admin/users", methods=["GET", "POST"])
@require("manage_users")
def users():
    form = UserForm()
    sites = db.session.execute(select(Site).order_by(Site.code)).scalars().all()
    form.sites.choices = [(s.code, f"{s.code} — {s.name}") for s in sites]
    if form.validate_on_submit():
        try:
            user = service.create_user(
                form.username.data.strip(),
                form.full_name.data.strip(),
                form.role.data,
                form.password.data,
                form.sites.data,
                actor=current_user,
            )
        except service.AuthError as error:
            form[error.field or "username"].errors.append(str(error))
        else:
            flash(f"User {user.username} created.", "success")
            return redirect(url_for("auth.users"))
    all_users = db.session.execute(select(User).order_by(User.username)).scalars().all()
    return render_template("auth/users.html", users=all_users, form=form, is_locked=service.is_locked)
