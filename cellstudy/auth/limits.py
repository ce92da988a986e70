"""Rate limits (issue 13), declared once here and applied at start-up through Flask-Limiter.

- log-in: POSTs to /login, per client address and, separately, per user name typed (a burst
  against one account from many addresses is held too); RATELIMIT_LOGIN.
- e-signatures: every signature attempt, per signer, wherever it is made: counted where every
  e-signature's password is checked (`auth.service.signature_refusal`), so a new signing page
  needs no declaration; RATELIMIT_SIGNATURE.
- exports: every endpoint whose URL ends in .csv, .xlsx or .pdf, plus the job starters and the
  job download below, per user, all sharing one count; RATELIMIT_EXPORT.

The limits are read from the app's config at each request; the counts live where
RATELIMIT_STORAGE_URI says (memory, or the Redis of REDIS_URL that several workers share).
Going over answers 429 with the app's error page and a Retry-After header; nothing is saved.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask, current_app, has_request_context, request
from flask_limiter.util import get_remote_address
from flask_login import current_user

from ..extensions import limiter

EXPORT_SUFFIXES = (".csv", ".xlsx", ".pdf")
#: exports whose URL does not end in a file suffix: endpoint -> the methods that export
EXPORT_ENDPOINTS: dict[str, tuple[str, ...] | None] = {
    "safety.export": None,  # /safety/<listing>.<csv|xlsx|pdf>: the suffix is a URL argument
    "audit_viewer.study_export": ("POST",),  # starts the study-wide audit export job
    "pdf.site_casebooks": ("POST",),  # starts a site's casebooks job
    "jobs.download": None,  # a finished job's file
    "odm.study_export": ("POST",),  # starts the ODM study export job (issue 15)
    "odm.subject_export": None,  # /subjects/<id>/odm.xml (issue 15)
}


def _login_limit() -> str:
    return current_app.config["RATELIMIT_LOGIN"]


def _signature_limit() -> str:
    return current_app.config["RATELIMIT_SIGNATURE"]


def _export_limit() -> str:
    return current_app.config["RATELIMIT_EXPORT"]


def _posted_username() -> str:
    # an empty key skips the limit (a GET, an empty field: the address limit still counts)
    name = (request.form.get("username") or "").strip().lower()
    return f"name:{name[:64]}" if name else ""


def _user() -> str:
    return f"user:{current_user.get_id()}" if current_user.is_authenticated else get_remote_address()


LOGIN_BY_ADDRESS = limiter.shared_limit(
    _login_limit, scope="login-address", key_func=get_remote_address, methods=("POST",)
)
LOGIN_BY_USERNAME = limiter.shared_limit(
    _login_limit, scope="login-username", key_func=_posted_username, methods=("POST",)
)
SIGNATURE = limiter.shared_limit(_signature_limit, scope="signature", key_func=_user)


def _export(methods: tuple[str, ...] | None):
    return limiter.shared_limit(_export_limit, scope="export", key_func=_user, methods=methods)


def export_endpoints(app: Flask) -> Iterator[tuple[str, tuple[str, ...] | None]]:
    """Every export endpoint of the app, with the methods that export (None: all)."""
    seen = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in seen:
            continue
        if rule.rule.endswith(EXPORT_SUFFIXES):
            seen.add(rule.endpoint)
            yield rule.endpoint, None
    for endpoint, methods in EXPORT_ENDPOINTS.items():
        if endpoint not in app.view_functions:
            raise ValueError(f"rate limit declared for an endpoint the app does not have: {endpoint}")
        if endpoint not in seen:
            yield endpoint, methods


def init_app(app: Flask) -> None:
    """Bind the limiter to the app and apply the limits (after every blueprint is registered)."""
    limiter.init_app(app)
    views = app.view_functions
    views["auth.login"] = LOGIN_BY_USERNAME(LOGIN_BY_ADDRESS(views["auth.login"]))
    limited = {"auth.login": ("POST",)}
    for endpoint, methods in export_endpoints(app):
        views[endpoint] = _export(methods)(views[endpoint])
        limited[endpoint] = methods
    app.extensions["cellstudy_rate_limited"] = limited


def count_signature_attempt() -> None:
    """One e-signature attempt by the signed-in user: 429 (RateLimitExceeded) past the limit.
    Outside a request (the command line, a job) nothing is counted."""
    if has_request_context():
        with SIGNATURE:
            pass
