from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from ..extensions import db
from . import service
from .forms import LoginForm, UserForm
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
            user = service.create_user(
                form.username.data.strip(),
                form.full_name.data.strip(),
                form.role.data,
                form.password.data,
                form.sites.data,
                actor=current_user,
            )
        except service.AuthError as error:
            form.username.errors.append(str(error))
        else:
            flash(f"User {user.username} created.", "success")
            return redirect(url_for("auth.users"))
    all_users = db.session.execute(select(User).order_by(User.username)).scalars().all()
    return render_template("auth/users.html", users=all_users, form=form, is_locked=service.is_locked)
