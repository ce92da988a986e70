"""Helpers the CRF views share (Flask side; the rules stay in the services)."""
from __future__ import annotations

from flask import before_render_template, flash, g, get_template_attribute
from markupsafe import Markup

from ..extensions import db
from . import hooks

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
    g.crf_lock, g.crf_site = lock, getattr(context["subject"], "site", None)
    if lock is not None:
        context["can_edit"] = False


def lock_notice(lock, site) -> Markup:
    """The notice of a locked form (_macros.html lock_notice): who locked what, and when."""
    return Markup(get_template_attribute("_macros.html", "lock_notice")(lock, site))
