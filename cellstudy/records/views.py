"""Helpers the CRF views share (Flask side; the rules stay in the services)."""

from __future__ import annotations

from typing import Any, Callable

from flask import before_render_template, flash, g, get_template_attribute, redirect, request, url_for
from markupsafe import Markup

from .. import urls
from ..extensions import db
from . import hooks
from .service import RecordError

#: where a CRF page's context holds the record it shows: `record` (infusion, lymphodepletion,
#: visit, DLT, CRS/ICANS assessments), `ae`, `screening`, `exposure`
_RECORD_KEYS = ("record", "ae", "screening", "exposure")


def init_app(app) -> None:
    before_render_template.connect(_locked_crf_read_only, app)


def show_refusal(form, error, default_field: str | None = None) -> None:
    """Show a refused write at its fields (or as a flash when no field matches); the
    session is rolled back, so nothing of the refused write is kept."""
    db.session.rollback()
    errors = getattr(error, "errors", None) or {getattr(error, "field", None) or default_field: str(error)}
    for name, message in errors.items():
        if name and name in form:
            form[name].errors = list(form[name].errors) + [message]
        else:
            flash(message, "error")
    message = str(error)
    flash(message if "Nothing was saved" in message else "Nothing was saved: " + message, "error")


# --- a POST action: validate, run, flash, redirect (issue 12) ---------------------------------------

Message = str | Callable[..., str | None] | None
Url = str | Callable[[], str]


def form_errors(form, sep: str = "; ") -> str:
    """The form's validation messages, joined."""
    return sep.join(e for errs in form.errors.values() for e in errs)


def post_action(
    form,
    do: Callable[[], Any],
    *,
    done: Message,
    refused: str | Callable[[RecordError], str],
    invalid: Message = None,
    back: Url,
    back_done: Url | None = None,
):
    """The one POST action of a page: when `form` validates, `do()` runs the service; its
    success flashes `done` (a text, or a callable of do's result giving the text or None
    for no flash), a refusal (a RecordError) rolls the session back, so nothing of the
    refused write is kept, and flashes `refused` followed by the error (or `refused(error)`
    when it is a callable). A form that does not validate flashes `invalid` (a text or a
    callable of the form; by default `refused` and the form's messages) and runs nothing.
    Answers with a redirect to `back` (a URL or a callable giving it), after a success to
    `back_done` when given."""
    if form.validate_on_submit():
        try:
            result = do()
        except RecordError as error:
            db.session.rollback()
            flash(refused(error) if callable(refused) else f"{refused}{error}", "error")
        else:
            message = done(result) if callable(done) else done
            if message:
                flash(message, "success")
            return redirect(_url(back_done if back_done is not None else back))
    else:
        if invalid is None:
            message = (refused if isinstance(refused, str) else "") + form_errors(form)
        else:
            message = invalid(form) if callable(invalid) else invalid
        flash(message, "error")
    return redirect(_url(back))


def _url(target: Url) -> str:
    return target() if callable(target) else target


# --- a refused write that escapes a view: never a 500 (issue 12) ---------------------------------

REFUSED_PREFIX = "Nothing was saved: "


def local_path(url: str | None) -> str | None:
    """`url` (a referrer) as a path on this site, with its query, or None: the one check of
    a redirect target (cellstudy/urls.py), which also takes this host's absolute URLs."""
    return urls.local_path(url, host=request.host)


def safe_back() -> str:
    """Where a refused request returns: the page it came from (a same-host referrer that is
    not this request's own URL), else the start page."""
    path = local_path(request.referrer)
    if path is not None and path.split("?", 1)[0] != request.path:
        return path
    return url_for("main.index")


def refused_anywhere(error: RecordError):
    """The app-wide handler of a RecordError no view caught: the session is rolled back
    (nothing of the refused write is kept), the message flashed, and the user sent back."""
    db.session.rollback()
    message = str(error)
    flash(message if "Nothing was saved" in message else REFUSED_PREFIX + message, "error")
    return redirect(safe_back())


# --- a locked CRF renders read-only (issue 11) ----------------------------------------------------


def crf_lock(record, subject):
    """The lock in force on a CRF's record: the study's, its subject's or its own; for a
    record not saved yet, the study's or the subject's. None when it may change."""
    return hooks.write_path().lock_in_force(record, subject)


def _locked_crf_read_only(sender, template, context, **extra) -> None:
    """Every CRF page (a template given `can_edit` and the `subject`) whose record is locked
    renders read-only, once for all forms: `can_edit` becomes False (no save bar, no
    actions), and g.crf_lock makes records/render.py disable every field and field_badges
    show who locked it and when (lock_notice). PROTOCOL 7: locked data cannot be changed,
    so the page must not offer to."""
    if "can_edit" not in context or "subject" not in context:
        return
    record = next((context[k] for k in _RECORD_KEYS if context.get(k) is not None), None)
    lock = crf_lock(record, context["subject"])
    g.crf_lock, g.crf_site, g.crf_record = lock, getattr(context["subject"], "site", None), record
    if lock is not None:
        context["can_edit"] = False


def lock_notice(lock, site) -> Markup:
    """The notice of a locked form (_macros.html lock_notice): who locked what, and when."""
    html = get_template_attribute("_macros.html", "lock_notice")(lock, site)
    return Markup(html)  # an autoescaped macro  # nosec B704
