"""Small helpers shared by the app tests."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from cellstudy.demo import eligible_values
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db


def form_text(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def screening_post(version: int, overrides: dict | None = None, *, complete=False, reason=None, no_prior=True) -> dict:
    """The screening form as a browser posts it: every field, text values."""
    values = {**eligible_values(), **(overrides or {})}
    data = {name: ("" if value is None else form_text(value)) for name, value in values.items()}
    data["version"] = str(version)
    if no_prior:
        data["prior_therapies_none"] = "y"
    if complete:
        data["complete"] = "1"
    else:
        data["save"] = "1"
    if reason:
        data["reason"] = reason
    return data


def subject_by_number(number: str) -> Subject:
    return db.session.execute(
        select(Subject).where((Subject.screening_number == number) | (Subject.subject_number == number))
    ).scalar_one()


def new_subject(session, site_id: int = 1) -> int:
    """Register a subject through the web route; returns its id."""
    response = session.post("/subjects/new", data={"site": str(site_id)})
    assert response.status_code == 302, response.data[:500]
    return int(response.location.split("/subjects/")[1].split("/")[0])


# --- reading a page and the database back (the CRF, scheduling, escalation and AE tests) --------------

ERROR = re.compile(r'<div class="error" role="alert">(.*?)</div>', re.S)
FLASH = re.compile(r'<div class="flash [a-z]+" role="[a-z]+">(.*?)</div>', re.S)


def errors(page: str) -> list[str]:
    """Every error message on the page, at a field or not."""
    return ERROR.findall(page)


def field_errors(page: str, name: str) -> list[str]:
    """The error messages shown at one field (its <div class="field"> block)."""
    for chunk in page.split('<div class="field')[1:]:
        if f'name="{name}"' in chunk:
            return ERROR.findall(chunk)
    raise AssertionError(f"no field {name} on the page")


def flashes(page: str) -> list[str]:
    return FLASH.findall(page)


def sid_of(app, number: str) -> int:
    with app.app_context():
        return subject_by_number(number).id


AUDIT_KEYS = ("action", "username", "form", "form_id", "field", "old", "new", "reason")
_AUDIT_COLUMNS = {"old": "old_value", "new": "new_value"}


def audit(app, *, keys: tuple[str, ...] = AUDIT_KEYS, **where) -> list[dict]:
    """The audit records matching `where` (column=value), oldest first, as dicts of `keys`."""
    from cellstudy.records.models import AuditRecord

    with app.app_context():
        stmt = select(AuditRecord).order_by(AuditRecord.id)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditRecord, name) == value)
        return [
            {key: getattr(r, _AUDIT_COLUMNS.get(key, key)) for key in keys} for r in db.session.execute(stmt).scalars()
        ]


def deviations(app, sid: int) -> list[dict]:
    from cellstudy.infusions.models import Deviation

    with app.app_context():
        rows = db.session.execute(select(Deviation).where(Deviation.subject_id == sid).order_by(Deviation.id)).scalars()
        return [
            {
                "kind": d.kind,
                "reason": d.reason,
                "description": d.description,
                "form": d.form,
                "form_id": d.form_id,
                "signature_id": d.signature_id,
            }
            for d in rows
        ]


# --- the facts that lock an infusion out, as site staff enter them ------------------------------------

RELATED_AE = {
    "version": "0",
    "term": "Nausea",
    "ongoing": "yes",
    "serious": "no",
    "related_nk": "probable",
    "related_ld": "unlikely",
    "expectedness": "expected",
    "action": "none",
    "outcome": "recovering",
    "complete": "1",
}


def post_related_ae(session, sid: int, *, onset: date, grade: int = 3):
    """A complete, ongoing AE related to the NK cells (grade 3: a toxicity hold)."""
    return session.post(
        f"/subjects/{sid}/adverse-events/new", data={**RELATED_AE, "onset_date": onset.isoformat(), "grade": str(grade)}
    )


def post_vaccine_deviation(session, sid: int, *, last_date: date, password: str):
    """An influenza vaccine inside the no-vaccination window, recorded with a signed deviation."""
    return session.post(
        f"/subjects/{sid}/vaccinations",
        data={
            "name": "Influenza (inactivated)",
            "last_date": last_date.isoformat(),
            "deviation_reason": "Outbreak on the ward",
            "password": password,
        },
    )


def amend_study(app, values: dict, version: str, *, password: str) -> None:
    """A study amendment through the controlled path: proposed by the admin, approved with an
    investigator's e-signature (amendments.service.amend)."""
    from cellstudy.amendments import service as amendments
    from cellstudy.auth.models import User

    with app.app_context():
        users = {u.username: u for u in db.session.execute(select(User)).scalars()}
        amendments.amend(
            values,
            version=version,
            reason="DSMB recommendation",
            user=users["admin"],
            approver=users["inv-hz"],
            password=password,
        )
        db.session.remove()
