"""The follow-up visits (PROTOCOL 5.1): their window status, their CRF, a visit missed."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from ..records import service as records
from ..records.service import RecordError
from . import schedule
from .entry import save_crf
from .fields import VISIT_FIELDS
from .models import Visit

if TYPE_CHECKING:
    from ..auth.models import User


def visit_status(visit: Visit, today: date) -> str:
    window = schedule.Window(visit.target_date, visit.earliest, visit.latest)
    return window.status(today, done=visit.state == "done", missed=visit.state == "missed")


@records.transaction()
def save_visit(
    visit: Visit,
    values: dict,
    *,
    user: User,
    expected_version: int,
    reason: str | None,
    complete: bool,
    consent: date | None,
) -> dict:
    def dates(merged):
        if merged.get("visit_date") and consent and date.fromisoformat(merged["visit_date"]) < consent:
            return {"visit_date": f"A visit cannot be before the informed consent ({consent.isoformat()})."}
        return {}

    def required(merged):
        return ["visit_date", "ecog", "response"]

    was_complete = visit.status == "complete"
    changed = save_crf(
        visit,
        VISIT_FIELDS,
        values,
        user=user,
        expected_version=expected_version,
        reason=reason,
        complete=complete,
        required=required,
        checks=(dates,),
    )
    if visit.status == "complete" and not was_complete:
        records.set_value(visit, "state", "done", user=user, form="visit")
    return changed


@records.transaction()
def mark_missed(visit: Visit, *, user: User, expected_version: int, reason: str) -> None:
    if visit.state != "planned":
        raise RecordError(f"The visit is {visit.state}.")
    if not (reason or "").strip():
        raise records.ReasonRequired()
    records.save(
        visit,
        user=user,
        changes={"state": "missed", "missed_reason": reason.strip()},
        expected_version=expected_version,
        reason=reason.strip(),
    )
