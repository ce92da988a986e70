"""Pure monitoring rules (issue 6): SDV status, the query life cycle, signature need and
the edit checks. No Flask, no database: values in, decisions out."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..study import EditChecks

SDV_PLANS = ("all", "key", "none")
SDV_STATES = ("verified", "partly verified", "not verified", "not required")

# the query life cycle is declared with the query, in records (the one write path of queries)
from ..records.queries import ACTIONS, QUERY_STATES, TRANSITIONS, UNRESOLVED, allowed_actions, next_state  # noqa: E402

__all__ = ["ACTIONS", "QUERY_STATES", "TRANSITIONS", "UNRESOLVED", "allowed_actions", "next_state"]


def days_open(created_at: datetime, now: datetime, closed_at: datetime | None = None) -> int:
    """Whole days from opening to closing (or to now while unresolved); never negative."""
    end = closed_at or now
    return max(0, (end - created_at).days)


def required_fields(plan: str, key_fields: Iterable[str], all_fields: Iterable[str]) -> tuple[str, ...]:
    if plan not in SDV_PLANS:
        raise ValueError(f"plan: unknown SDV plan {plan!r}")
    if plan == "none":
        return ()
    return tuple(all_fields) if plan == "all" else tuple(f for f in key_fields)


def sdv_status(plan: str, required: Iterable[str], verified: Collection[str]) -> str:
    """'verified' when every required field is verified, 'partly verified' when some field
    is, 'not verified' when none is, 'not required' under the plan 'none'."""
    required = set(required_fields(plan, required, required))
    verified = set(verified)
    if plan == "none":
        return "not required"
    if required and required <= verified:
        return "verified"
    if not required:  # a "key" plan without key fields: nothing can be verified
        return "not required"
    return "partly verified" if verified else "not verified"


def signature_needed(
    form: str, *, complete: bool, valid: int, invalidated: int, signature_forms: Collection[str]
) -> bool:
    """A form needs the investigator's signature when a change invalidated its signature
    and it was not signed again, or when its type must be signed once complete."""
    if valid:
        return False
    if invalidated:
        return True
    return bool(complete and form in signature_forms)


def casebook_confirmation(query_ids: Sequence[int], drafts: Sequence[str], unsigned: Sequence[str]) -> str | None:
    """What the investigator confirms to sign a casebook that still has work outstanding
    (issue 11), naming it: the unresolved queries (their numbers), the draft forms and the
    forms still needing a signature (their titles). None when nothing is outstanding: the
    casebook is then signed without it. The text is kept in the signature's audit record."""
    parts = []
    if query_ids:
        n = len(query_ids)
        parts.append(f"{n} unresolved {'query' if n == 1 else 'queries'} ({', '.join(f'#{i}' for i in query_ids)})")
    if drafts:
        n = len(drafts)
        parts.append(f"{n} draft {'form' if n == 1 else 'forms'} ({', '.join(drafts)})")
    if unsigned:
        n = len(unsigned)
        parts.append(f"{n} {'form' if n == 1 else 'forms'} still needing a signature ({', '.join(unsigned)})")
    if not parts:
        return None
    return "I sign this casebook knowing that it still has " + "; ".join(parts) + "."


# --- edit checks --------------------------------------------------------------------------------


def _number(value) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _date(value) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


WEIGHT_FORMS = ("screening", "lymphodepletion", "infusion")


def edit_checks(form: str, values: dict, limits: EditChecks, context: dict | None = None) -> dict[tuple[str, str], str]:
    """Implausible values of a form: {(field, rule): message}. `limits` is the study's
    EditChecks; `context` adds what the form does not hold (a visit's window
    `earliest`/`latest`, the ALT upper limit `alt_uln` for a visit)."""
    context = context or {}
    found: dict[tuple[str, str], str] = {}
    if form in WEIGHT_FORMS:
        weight = _number(values.get("weight_kg"))
        if weight is not None and weight < limits.weight_min_kg:
            found[("weight_kg", "weight_range")] = (
                f"Weight {weight} kg is below {limits.weight_min_kg} kg: please check it against the source."
            )
        elif weight is not None and weight > limits.weight_max_kg:
            found[("weight_kg", "weight_range")] = (
                f"Weight {weight} kg is above {limits.weight_max_kg} kg: please check it against the source."
            )
    if form in ("screening", "visit"):
        alt = _number(values.get("alt"))
        uln = _number(values.get("alt_uln") if form == "screening" else context.get("alt_uln"))
        if alt is not None and uln is not None and uln > 0 and alt > limits.alt_uln_multiple * uln:
            found[("alt", "alt_uln")] = (
                f"ALT {alt} is more than {limits.alt_uln_multiple} x the upper limit of normal ({uln}): "
                "please check it against the source."
            )
    if form == "screening":
        qtc = _number(values.get("qtc_ms"))
        if qtc is not None and qtc > limits.qtc_max_ms:
            found[("qtc_ms", "qtc_max")] = (
                f"QTc {qtc} ms is above {limits.qtc_max_ms} ms: please check it against the source."
            )
    if form == "visit" and limits.visit_window_check:
        day = _date(values.get("visit_date"))
        earliest, latest = _date(context.get("earliest")), _date(context.get("latest"))
        if day is not None and earliest is not None and latest is not None and not earliest <= day <= latest:
            found[("visit_date", "visit_window")] = (
                f"Visit date {day.isoformat()} is outside the visit window {earliest.isoformat()} to "
                f"{latest.isoformat()}: please confirm the date or record a deviation."
            )
    return found
