"""Saving a treatment CRF (infusion, lymphodepletion day, visit, DLT assessment): canonical
values, cross-field checks and completion, through `records`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..records import crf
from ..records import service as records
from ..records.service import InvalidForm
from .fields import by_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..auth.models import User
    from ..records.formrecord import DataFormRecord
    from ..registry.fields import FieldSpec


def save_crf(
    record: DataFormRecord,
    specs: Iterable[FieldSpec],
    values: dict,
    *,
    user: User,
    expected_version: int,
    reason: str | None,
    complete: bool,
    required: Callable[[dict], Iterable[str]],
    checks: Iterable[Callable[[dict], dict[str, str] | None]] = (),
) -> dict:
    """Save a CRF: canonical values, cross-field checks, completion, one transaction."""
    values = crf.stored_values(by_name(specs), values)
    merged = {k: v for k, v in {**(record.data or {}), **values}.items() if v is not None}
    errors = {}
    for check in checks:
        errors.update(check(merged) or {})
    if complete:
        for name in required(merged):
            if merged.get(name) is None:
                errors.setdefault(name, "Required to complete the form.")
    if errors:
        raise InvalidForm(errors)
    changed = records.save(record, user=user, changes=values, expected_version=expected_version, reason=reason)
    if complete and record.status != "complete":
        records.set_status(record, "complete", user=user)
    return changed


def times_in_order(merged: dict) -> dict[str, str]:
    if merged.get("start_time") and merged.get("stop_time") and merged["stop_time"] < merged["start_time"]:
        return {"stop_time": "The stop time cannot be before the start time."}
    return {}
