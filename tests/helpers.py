"""Small helpers shared by the app tests."""

from __future__ import annotations

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
