"""CellStudy: an EDC for cell-therapy trials. `create_app()` is the application factory."""

from __future__ import annotations

import os
import sqlite3

from flask import Flask, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, logout_user
from sqlalchemy import event
from sqlalchemy.engine import Engine

from config import CONFIGS

from . import registry
from .extensions import csrf, db, login_manager, migrate

# the features declare their forms and records (cellstudy.registry) when they load: all of
# them load with the package, so every reader of the registry sees every form
from . import adverse_events, amendments, audit_viewer, auth, enrollment, infusions, jobs, monitoring  # noqa: F401,E402
from .records import transaction as _transaction  # noqa: F401,E402  (how SQLite transactions begin)
from .timeutil import fmt_site, fmt_utc, wall_clock


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        # We issue BEGIN ourselves (records/transaction.py); pysqlite's own handling would not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def create_app(config_name: str | None = None, overrides: dict | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    config_name = config_name or os.environ.get("CELLSTUDY_CONFIG", "development")
    config_class = CONFIGS[config_name]
    if hasattr(config_class, "validate"):
        config_class.validate()
    app.config.from_object(config_class)
    if overrides:
        app.config.update(overrides)
    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "cellstudy.db")

    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.session_protection = "strong"

    # The factory imports the app's parts when an app is built, not when the package is
    # imported: `cellstudy` is the parent of every module, so `import cellstudy.timeutil`
    # (a pure rule, a test, a job) must not load every feature. The same for the helpers below.
    from . import models  # noqa: F401  (every table known to Alembic)
    from .auth.models import User

    @login_manager.user_loader
    def load_user(user_id: str):
        from sqlalchemy.orm import joinedload

        # the user's sites come with the user: every page's permission check needs them
        return db.session.get(User, int(user_id), options=[joinedload(User.sites)])

    # the blueprints (the factory's parts: see above)
    from .safety.routes import bp as safety_bp
    from .audit_viewer.routes import bp as audit_viewer_bp
    from .dashboards.routes import bp as dashboards_bp
    from .adverse_events.routes import bp as adverse_events_bp
    from .auth.routes import bp as auth_bp
    from .enrollment.routes import bp as enrollment_bp
    from .infusions.routes import bp as infusions_bp
    from .jobs.routes import bp as jobs_bp
    from .main.routes import bp as main_bp
    from .monitoring.routes import bp as monitoring_bp
    from .pdf.routes import bp as pdf_bp

    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(enrollment_bp)
    app.register_blueprint(infusions_bp)
    app.register_blueprint(adverse_events_bp)
    app.register_blueprint(safety_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(pdf_bp)
    app.register_blueprint(audit_viewer_bp)
    app.register_blueprint(dashboards_bp)
    app.register_blueprint(monitoring_bp)
    # the factory's parts (see above): the amendments' pages, the template helpers, the CLI
    # and the hooks that features register on the write path at start-up
    from .amendments.routes import bp as amendments_bp
    from .cli import register_cli
    from .enrollment import reconfirm
    from .infusions import judgement
    from .monitoring.routes import field_badges, monitoring_panel
    from .records import views as crf_views

    app.register_blueprint(amendments_bp)
    app.jinja_env.globals.update(field_badges=field_badges, monitoring_panel=monitoring_panel)
    crf_views.init_app(app)  # a locked CRF renders read-only, whichever form it is (issue 11)
    register_cli(app)
    judgement.init_app(app)  # planned infusions re-judged when their facts change (issue 11)
    reconfirm.init_app(app)  # screening changes after enrolment open an eligibility review (issue 11)
    amendments.init_app(app)  # amendments whose effective date arrived come into force (issue 11)
    _register_hooks(app)
    _register_errors(app)
    return app


def _register_hooks(app: Flask) -> None:
    # part of the factory (create_app: the package must not import its features)
    from .auth.policy import can
    from .auth.service import is_locked
    from .enrollment.eligibility import INCLUSION_CODES
    from .records.render import render_field
    from .settings import current_study

    @app.before_request
    def idle_timeout():
        if request.endpoint == "static" or not current_user.is_authenticated:
            return None
        if is_locked(current_user) or not current_user.active:
            # A lock (e.g. from wrong signature passwords) ends the session at once.
            logout_user()
            session.clear()
            flash("Your account is locked or disabled: you have been logged out.", "error")
            return redirect(url_for("auth.login"))
        # The machine's clock, not the study's (timeutil): 30 minutes a person really was away;
        # a test moving the study clock by days keeps its sessions. Nothing here is recorded.
        now = wall_clock().timestamp()
        last = session.get("last_seen")
        limit = app.config["PERMANENT_SESSION_LIFETIME"].total_seconds()
        if last is not None and now - last > limit:
            logout_user()
            session.clear()
            flash("You were logged out after 30 minutes without activity.", "warning")
            return redirect(url_for("auth.login", next=request.full_path))
        session.permanent = True
        if last is None or now - last > 30:  # re-signing the cookie on every hit buys nothing
            session["last_seen"] = now
        return None

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        if current_user.is_authenticated:
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    # a form is named by its registry label everywhere (issue 12)
    app.jinja_env.globals.update(
        can=can,
        inclusion_codes=INCLUSION_CODES,
        render_field=render_field,
        form_label=registry.label,
        log_label=registry.log_label,
        record_title=registry.record_title,
    )

    @app.context_processor
    def study_in_force():
        return {"study": current_study()}

    app.jinja_env.filters["utc"] = fmt_utc
    app.jinja_env.filters["sitetime"] = fmt_site


def _register_errors(app: Flask) -> None:
    from flask_wtf.csrf import CSRFError

    # part of the factory (create_app: the package must not import its features)
    from .records.service import RecordError
    from .records.views import refused_anywhere

    # a refused write that no view caught is never a 500: rolled back, said, sent back
    # (a more specific handler, e.g. monitoring's for Locked, still answers first)
    app.register_error_handler(RecordError, refused_anywhere)

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return render_template(
            "errors/error.html",
            code=400,
            title="Form expired",
            message="The form had expired or was not sent by this site. Go back, reload the page and submit again.",
        ), 400

    for code, title, message in (
        (403, "Not permitted", "Your role does not allow this action."),
        (404, "Not found", "There is no such page or record, or it is not at one of your sites."),
        (405, "Not allowed", "This address does not accept that kind of request."),
        (500, "Something went wrong", "The error was logged. Nothing was half-saved: the change was rolled back."),
    ):

        def handler(error, code=code, title=title, message=message):
            if code == 500:
                db.session.rollback()
            return render_template("errors/error.html", code=code, title=title, message=message), code

        app.register_error_handler(code, handler)
