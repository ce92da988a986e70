"""The form types monitoring knows are the registry's (issue 12): every case report form
declared in cellstudy.registry, so queries, SDV, signatures and locks cover them all.
What monitoring adds is the page a record opens on."""

from __future__ import annotations

from flask import url_for

from .. import registry
from ..registry import FormType, form_types, get, label, record_title

__all__ = ["FormType", "form_types", "get", "label", "record_title", "url_of"]


def url_of(form: str, form_id: int | None, subject_id: int) -> str:
    """The page of a form instance (the subject page when there is none yet)."""
    ft = registry.get(form)
    if ft is not None and ft.endpoint is not None:
        endpoint, arg = ft.endpoint
        if arg is None:
            return url_for(endpoint, subject_id=subject_id)
        if form_id is not None:
            return url_for(endpoint, subject_id=subject_id, **{arg: form_id})
    return url_for("enrollment.subject", subject_id=subject_id)
