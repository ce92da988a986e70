"""Recording an infusion as given (PROTOCOL 5.2, issue 11): its CRF, the last gate that
judges the date afresh (an investigator may override with a reason and an e-signature),
dose deviations and the subject's treatment status."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from ..auth.policy import can
from ..enrollment.models import Subject
from ..records import service as records
from ..records.service import InvalidForm
from ..settings import current_study
from . import proposal, schedule
from .deviations import record_deviation
from .entry import save_crf, times_in_order
from .fields import INFUSION_FIELDS
from .judgement import mark_overrides
from .lockouts import LOCKOUT_LABELS
from .lymphodepletion import refresh_treatment_emergent
from .models import Infusion
from .proposal import covered
from .scheduling import SchedulingRefused, lock_subject

if TYPE_CHECKING:
    from ..auth.models import User

ADMINISTRATION_OVERRIDE_MEANING = "I authorise giving this infusion despite the lockouts listed, for the reason given"


def administration_gate(infusion: Infusion) -> dict:
    """The last gate (issue 11): the infusion judged afresh for its date at the moment its
    administration is recorded; `open` holds the lockouts no signed override covers."""
    evaluation = proposal.evaluate_proposal(
        infusion.subject, infusion.planned_date, exclude=infusion, with_earliest=False
    )
    marked = mark_overrides(evaluation["lockouts"], infusion.override_lockouts, evaluation["overridable"])
    return {**evaluation, "marked": marked, "open": [lo for lo in marked if not lo["overridden"]]}


def _gate_administration(infusion: Infusion, *, user, override_reason: str | None, password: str | None):
    """Refuse recording as given an infusion whose date is locked, unless an investigator
    overrides where PROTOCOL 5.2 allows it (reason + e-signature). Returns (gate, signature)."""
    gate = administration_gate(infusion)
    if not gate["open"]:
        return gate, None
    text = "; ".join(
        f"{LOCKOUT_LABELS.get(lo['code'], lo['code'])}: {lo['reason']}"
        + (f" (until {lo['until']})" if lo["until"] else "")
        for lo in gate["open"]
    )
    hard = [lo for lo in gate["open"] if lo["code"] not in gate["overridable"]]
    if hard:
        raise InvalidForm(
            {
                "administration_date": f"Infusion {infusion.number} cannot be given on "
                f"{infusion.planned_date.isoformat()}: {text}. This lockout cannot "
                "be overridden: reschedule the infusion."
            }
        )
    locked = f"Infusion {infusion.number} is locked on {infusion.planned_date.isoformat()}: {text}."
    if not can("sign_eligibility", user):
        raise InvalidForm(
            {
                "administration_date": locked + " Only an investigator can override this lockout, with a "
                "reason and an e-signature."
            }
        )
    if not (override_reason or "").strip():
        raise InvalidForm(
            {
                "administration_date": locked,
                "override_reason": "Give the reason for giving the infusion despite the lockout, and sign "
                "with your password.",
            }
        )
    if not password:
        raise InvalidForm({"override_password": "Sign the override: enter your password."})
    signature = records.sign(infusion, user=user, password=password, meaning=ADMINISTRATION_OVERRIDE_MEANING)
    return gate, signature


@records.transaction()
def save_infusion(
    infusion: Infusion,
    values: dict,
    *,
    user: User,
    expected_version: int,
    reason: str | None,
    complete: bool,
    today: date,
    override_reason: str | None = None,
    override_password: str | None = None,
) -> dict:
    subject = infusion.subject
    if infusion.state == "cancelled":
        raise SchedulingRefused("This infusion was cancelled.")
    study = current_study()
    gate = signature = None
    if complete and infusion.state == "scheduled":
        lock_subject(subject)
        gate, signature = _gate_administration(
            infusion, user=user, override_reason=override_reason, password=override_password
        )

    def dates(merged):
        given = merged.get("administration_date")
        if given and date.fromisoformat(given) != infusion.planned_date:
            return {
                "administration_date": f"The infusion is scheduled for {infusion.planned_date.isoformat()}: "
                "reschedule it first, so the lockouts are checked for the new date."
            }
        if given and date.fromisoformat(given) > today:
            return {"administration_date": "An infusion cannot be recorded before it is given."}
        return {}

    def dose(merged):
        planned, actual = merged.get("planned_cells"), merged.get("actual_cells")
        if (
            planned
            and actual
            and schedule.dose_deviation(planned, actual, study.regimen.dose_tolerance_percent)
            and not merged.get("dose_deviation_reason")
        ):
            return {
                "dose_deviation_reason": f"The dose given differs from the planned dose by more than "
                f"{study.regimen.dose_tolerance_percent}%: give a deviation reason."
            }
        return {}

    def required(merged):
        names = [
            "administration_date",
            "start_time",
            "stop_time",
            "product_lot",
            "viability_percent",
            "weight_kg",
            "planned_cells",
            "actual_cells",
            "infusion_reaction",
        ]
        names += [f"{p}_{v}" for p in ("pre", "post") for v in ("temp_c", "hr", "sbp", "dbp", "spo2")]
        if merged.get("infusion_reaction"):
            names.append("reaction_description")
        return names

    was_complete = infusion.status == "complete"
    changed = save_crf(
        infusion,
        INFUSION_FIELDS,
        values,
        user=user,
        expected_version=expected_version,
        reason=reason,
        complete=complete,
        required=required,
        checks=(dates, times_in_order, dose),
    )
    if infusion.status == "complete" and not was_complete:
        records.set_value(infusion, "state", "given", user=user, form="infusion")
        data = infusion.data
        if schedule.dose_deviation(data["planned_cells"], data["actual_cells"], study.regimen.dose_tolerance_percent):
            record_deviation(
                subject,
                kind="dose_outside_tolerance",
                description=f"Infusion {infusion.number}: {data['actual_cells']} cells given for a "
                f"planned {data['planned_cells']}",
                reason=data["dose_deviation_reason"],
                user=user,
                form="infusion",
                form_id=infusion.id,
            )
        if signature is not None:
            infusion.override_lockouts = covered(gate["lockouts"])
            infusion.override_reason = override_reason.strip()
            infusion.override_signature_id = signature.id
            record_deviation(
                subject,
                kind="lockout_override",
                description=f"Infusion {infusion.number} given on {infusion.planned_date.isoformat()} "
                "despite: " + "; ".join(lo["reason"] for lo in gate["open"]),
                reason=override_reason.strip(),
                user=user,
                form="infusion",
                form_id=infusion.id,
                signature=signature,
            )
        _advance_status(subject, user=user)
        refresh_treatment_emergent(subject, user=user)
    return changed


def cells_per_kg(data: dict) -> dict[str, str]:
    """Planned and given dose per kg of the day's weight, for display ("1.6 x 10^6")."""
    weight = data.get("weight_kg")
    out = {}
    for key in ("planned_cells", "actual_cells"):
        if weight and data.get(key):
            mantissa, exponent = f"{Decimal(data[key]) / Decimal(weight):.2e}".split("e")
            out[key] = f"{mantissa} x 10^{int(exponent)}"
    return out


def _advance_status(subject: Subject, *, user) -> None:
    """PROTOCOL 3: enrolled -> on_treatment at the first infusion given -> follow_up when
    every protocol infusion is given."""
    given = [i for i in subject.infusions if i.state == "given"]
    if subject.status == "enrolled" and given:
        records.set_status(subject, "on_treatment", user=user, form="subject", reason="first infusion given")
    if len(given) >= current_study().regimen.infusion_count and subject.status == "on_treatment":
        records.set_status(subject, "follow_up", user=user, form="subject", reason="all protocol infusions given")
