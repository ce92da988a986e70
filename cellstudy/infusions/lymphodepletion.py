"""The lymphodepletion days (PROTOCOL 5.1): their CRF, the BSA computed by the system
(Mosteller), the expected doses, and the AEs' treatment-emergent flag that follows the
first lymphodepletion day."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from ..enrollment.models import Subject
from ..records import service as records
from . import schedule
from .entry import save_crf, times_in_order
from .fields import LYMPHODEPLETION_FIELDS
from .models import LymphodepletionDay

if TYPE_CHECKING:
    from ..auth.models import User


def refresh_treatment_emergent(subject: Subject, *, user: User) -> None:
    """Treatment-emergent is computed from the first lymphodepletion day: when that day
    is recorded or corrected, the subject's AEs follow (audited)."""
    # inside the function: a cross-feature call (adverse events import this feature's models
    # and fields); the layering is left to issue 12's layer contract
    from ..adverse_events.service import refresh_treatment_emergent as refresh

    refresh(subject, user=user)


@records.transaction()
def save_lymphodepletion(
    day: LymphodepletionDay,
    values: dict,
    *,
    user: User,
    expected_version: int,
    reason: str | None,
    complete: bool,
    today: date,
) -> dict:
    def bsa(merged):
        if merged.get("height_cm") and merged.get("weight_kg"):
            try:
                schedule.bsa_mosteller(Decimal(merged["height_cm"]), Decimal(merged["weight_kg"]))
            except ValueError as error:
                return {"height_cm": str(error)}
        return {}

    def required(merged):
        return [s.name for s in LYMPHODEPLETION_FIELDS]

    changed = save_crf(
        day,
        LYMPHODEPLETION_FIELDS,
        values,
        user=user,
        expected_version=expected_version,
        reason=reason,
        complete=complete,
        required=required,
        checks=(bsa, times_in_order),
    )
    data = day.data or {}
    if data.get("height_cm") and data.get("weight_kg"):
        value = format(schedule.bsa_mosteller(Decimal(data["height_cm"]), Decimal(data["weight_kg"])), "f")
        if data.get("bsa_m2") != value:  # computed, never typed (Mosteller)
            records.save(
                day,
                user=user,
                changes={"bsa_m2": value},
                expected_version=day.version,
                reason=reason or "BSA computed from height and weight",
            )
    if "administration_date" in changed:
        refresh_treatment_emergent(day.subject, user=user)
    return changed


def expected_doses(day: LymphodepletionDay) -> dict[str, Decimal]:
    """mg expected from each drug's mg/m² dose and the computed BSA."""
    data = day.data or {}
    if not data.get("bsa_m2"):
        return {}
    bsa = Decimal(data["bsa_m2"])
    out = {}
    for drug in ("fludarabine", "cyclophosphamide"):
        if data.get(f"{drug}_mg_m2"):
            out[drug] = (Decimal(data[f"{drug}_mg_m2"]) * bsa).quantize(Decimal("0.1"))
    return out
