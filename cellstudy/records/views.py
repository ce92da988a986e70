"""Helpers the CRF views share (Flask side; the rules stay in the services)."""
from __future__ import annotations

from flask import flash

from ..extensions import db


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
