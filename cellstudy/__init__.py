"""CellStudy: an EDC for cell-therapy trials. `create_app()` is the application factory."""

from __future__ import annotations

import logging
import os
import sqlite3

from flask import Flask, flash, g, redirect, render_template, request, session, url_for
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
from .timeutil import fmt_site, fmt_utc
from .urls import IdConverter


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        # We issue BEGIN ourselves (records/transaction.py); pysqlite's own handling would not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_transaction.BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def create_app(config_name: str | None = None, overrides: dict | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    # an id in a URL fits the databases' integers, else 404 (issue 13; before any route is added)
    app.url_map.converters["int"] = IdConverter
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
    from .auth import sessions

    # a server-side session (issue 13): one indexed query brings the open session, its user
    # and the user's sites (every page's permission check needs them)
    login_manager.user_loader(sessions.load_user)

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
    from .monitoring import sdv_status
    from .monitoring.routes import field_badges, monitoring_panel
    from .records import views as crf_views

    app.register_blueprint(amendments_bp)
    from .exports.odm.routes import bp as odm_bp  # issue 15: ODM 1.3.2 export

    app.register_blueprint(odm_bp)
    app.jinja_env.globals.update(field_badges=field_badges, monitoring_panel=monitoring_panel)
    crf_views.init_app(app)  # a locked CRF renders read-only, whichever form it is (issue 11)
    register_cli(app)
    judgement.init_app(app)  # planned infusions re-judged when their facts change (issue 11)
    reconfirm.init_app(app)  # screening changes after enrolment open an eligibility review (issue 11)
    amendments.init_app(app)  # amendments whose effective date arrived come into force (issue 11)
    sdv_status.init_app(app)  # completed forms' SDV status re-judged when their facts change (issue 14; the last
    # commit hook, so that a form written by an earlier one is judged too)
    from .auth import limits  # the factory's part: the limits name endpoints of every blueprint

    limits.init_app(app)  # rate limits on log-in, e-signatures and exports (issue 13)
    _register_hooks(app)
    _register_errors(app)
    _register_db_faults(app)
    return app


def _register_hooks(app: Flask) -> None:
    # part of the factory (create_app: the package must not import its features)
    from .auth import sessions
    from .auth.policy import can
    from .auth.service import is_locked
    from .enrollment.eligibility import INCLUSION_CODES
    from .records.render import render_field
    from .settings import current_study

    @app.before_request
    def session_check():
        # the session lives on the server (auth/sessions.py, issue 13): loading the user judged
        # it (revoked, unknown, idle); here the browser is told and its cookie cleared
        if request.endpoint == "static":
            return None
        if not current_user.is_authenticated:
            ended = g.pop("session_ended", None)
            if ended is None:
                return None
            session.clear()
            if request.endpoint in ("auth.login", "auth.logout"):
                return None
            minutes = int(app.config["PERMANENT_SESSION_LIFETIME"].total_seconds() // 60)
            if ended == "idle":
                flash(f"You were logged out after {minutes} minutes without activity.", "warning")
            else:
                flash("Your session has ended (logged out, or your account was changed): log in again.", "warning")
            back = request.full_path if request.method == "GET" else None  # a form is not re-posted
            return redirect(url_for("auth.login", next=back))
        if is_locked(current_user) or not current_user.active:
            # A lock (e.g. from wrong signature passwords) ends the session at once.
            sessions.end("account locked or disabled")
            logout_user()
            session.clear()
            flash("Your account is locked or disabled: you have been logged out.", "error")
            return redirect(url_for("auth.login"))
        if current_user.must_change_password and request.endpoint not in ("auth.change_password", "auth.logout"):
            # an administrator's reset: nothing else until the user has chosen a password
            return redirect(url_for("auth.change_password"))
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
        if app.config.get("HSTS"):  # production only (config.py): browsers then refuse plain http
            response.headers.setdefault("Strict-Transport-Security", app.config["HSTS"])
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

    @app.errorhandler(429)
    def too_many_requests(error):
        # Flask-Limiter's RateLimitExceeded (auth/limits.py, issue 13); its Retry-After header is
        # added after the response
        scope = getattr(getattr(error, "limit", None), "scope", None)
        what = {"login-address": "Logging in", "login-username": "Logging in", "signature": "Signing"}
        what = {**what, "export": "Exporting"}.get(scope, "This kind of request")
        return render_template("errors/429.html", what=what, limit=error.description), 429

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
                _rollback_quietly()
            return render_template("errors/error.html", code=code, title=title, message=message), code

        app.register_error_handler(code, handler)


# --- database faults (issue 13) ---------------------------------------------------------------------


def _rollback_quietly() -> None:
    """Roll the session back (an error page); on a connection the server ended, the rollback
    itself fails: the session lets its connections go instead, never raises."""
    try:
        db.session.rollback()
    except Exception:  # any driver's error: the connection is gone either way
        _drop_session()


def _remove_session_quietly(_error=None) -> None:
    """The end of every app context: Flask-SQLAlchemy's own `session.remove()`, except that a
    dead connection never raises out of it (the WSGI server's bare "Internal Server Error"
    after the view had answered)."""
    try:
        db.session.remove()
    except Exception:  # any driver's error: the connection is gone either way
        _drop_session()


def _drop_session() -> None:
    logging.getLogger(__name__).warning("the database connection was lost: session dropped", exc_info=True)
    try:
        db.session.invalidate()  # out of the pool, not back into it
    except Exception:  # nothing is left to release; the warning above has it
        pass
    db.session.registry.clear()  # the next use in this context starts a new session


def _register_db_faults(app: Flask) -> None:
    """A database that cannot be reached (a terminated connection, a restarting or busy
    server) answers the app's 503 page with Retry-After, never a 500; the next request gets
    a fresh connection (pool_pre_ping, config.py), so the app recovers by itself."""
    from sqlalchemy import exc

    # Flask-SQLAlchemy's own teardown (session.remove()) raises on a dead connection: replaced
    app.teardown_appcontext_funcs[:] = [
        _remove_session_quietly if f == db._teardown_session else f for f in app.teardown_appcontext_funcs
    ]

    def unavailable(error):
        app.logger.error("database unavailable: %s", error, exc_info=error)
        _rollback_quietly()
        # the page must not reach for the database again: no user (the security headers and
        # the page ask for one), no base layout (it reads the study definition)
        g._login_user = login_manager.anonymous_user()
        page = app.jinja_env.get_template("errors/503.html").render()
        return page, 503, {"Retry-After": "10"}

    for error_class in (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError):
        app.register_error_handler(error_class, unavailable)
