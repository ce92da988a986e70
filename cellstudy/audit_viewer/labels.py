"""What the audit trail's stored names mean to a reader: form and field labels, and coded
values shown as their labels (issue 6: "field labels, not column names; coded values
shown as their labels").

Pure. The field labels and choice lists are read from the form specs
(enrollment/fields.py, infusions/fields.py, adverse_events/fields.py), so a label changes
in one place. Only the values the system sets itself (statuses, computed fields, the
signature) have no spec; they are named in SYSTEM_FIELDS below.
"""

from __future__ import annotations

import json

from .. import registry
from ..adverse_events import fields as ae_fields
from ..enrollment.eligibility import criterion_texts

_STATUS = {"draft": "Draft", "complete": "Complete", "deleted": "Deleted (removed)"}
_YES_NO = {"yes": "Yes", "no": "No"}
_SUBJECT_STATUS = {
    s: s.replace("_", " ").capitalize()
    for s in ("screening", "screen_failed", "enrolled", "on_treatment", "follow_up", "completed", "withdrawn", "died")
}

#: field -> (label, {code: label} or None) for values the system sets (no spec)
SYSTEM_FIELDS: dict[str, tuple[str, dict | None]] = {
    "status": ("Status", {**_STATUS, **_SUBJECT_STATUS}),
    "signature": ("E-signature", None),
    "state": (
        "State",
        {
            "scheduled": "Scheduled",
            "given": "Given",
            "cancelled": "Cancelled",
            "planned": "Planned",
            "done": "Done",
            "missed": "Missed",
        },
    ),
    "screening_number": ("Screening number", None),
    "subject_number": ("Subject number", None),
    "dose_level": ("Dose level", None),
    "number": ("Number", None),
    "planned_date": ("Planned date", None),
    "target_date": ("Target date", None),
    "day": ("Lymphodepletion day", None),
    "code": ("Visit", None),
    "bsa_m2": ("Body surface area (m²)", None),
    "cancel_reason": ("Cancellation reason", None),
    "missed_reason": ("Reason the visit was missed", None),
    "start_date": ("Start date", None),
    "end_date": ("End date", None),
    "indication": ("Indication", None),
    "soc": ("System organ class", None),
    "meddra_code": ("MedDRA code", None),
    "related": ("Related (possible, probable or definite)", _YES_NO),
    "treatment_emergent": ("Treatment-emergent", _YES_NO),
    "susar": ("SUSAR", _YES_NO),
    "awareness_at": ("Site awareness (UTC)", None),
    "sae_due_at": ("SAE report due (UTC)", None),
    "sae_reported_at": ("SAE reported (UTC)", None),
    "susar_reported_at": ("SUSAR reported (UTC)", None),
    "computed_grade": ("Computed grade", None),
    "adverse_event_id": ("Adverse event", None),
    "assessed_on": ("Assessed on", None),
    "driver": ("Component that drove the grade", ae_fields.COMPONENT_LABELS),
    "ice_score": (ae_fields.COMPONENT_LABELS["ice_score"], None),
    "outcome": (
        "Outcome",
        {"enrolled": "Enrolled", "screen_failed": "Screen failed", "reconfirmed": "Eligibility re-confirmed"},
    ),
    "cause": (
        "Cause",
        {
            "screening_changed": "Screening data changed after enrolment",
            "amendment": "Study amendment changed an eligibility rule",
        },
    ),
    "detail": ("Detail", None),
    "resolution": (
        "Resolution",
        {"reconfirmed": "Eligibility re-confirmed", "deviation": "Protocol deviation recorded"},
    ),
    "failed_criteria": ("Failed criteria", None),
    "study_version": ("Study definition version", None),
    "role": ("Role", None),
    "sites": ("Sites", None),
    "active": ("Active", _YES_NO),
    "locked_until": ("Locked until (UTC)", None),
    "prior_therapies_none": ("No prior therapies", _YES_NO),
}

#: actions (AuditRecord.action) as a reader says them
ACTIONS: dict[str, str] = {
    "create": "Created",
    "set": "Value entered",
    "update": "Changed",
    "status": "Status changed",
    "assign": "Set by the system",
    "sign": "Signed",
    "unsign": "Signature invalidated",
    "sign_refused": "Signature refused",
    "sign_imported": "Historical signature imported (ODM)",
    "query_open": "Query opened",
    "query_answer": "Query answered",
    "query_close": "Query closed",
    "query_reopen": "Query re-opened",
    "query_cancel": "Query cancelled",
    "sdv": "Verified (SDV)",
    "sdv_clear": "Verification cleared",
    "lock": "Locked",
    "unlock": "Unlocked",
    "dismiss": "Suggestion dismissed",
    "export": "Exported",
    "download": "Downloaded",
    "setting": "Amendment: setting changed",
    "reference_load": "Reference data loaded",
    "account_locked": "Account locked",
    "user_create": "User created",
    "user_role": "Role changed",
    "user_site": "Sites changed",
    "user_active": "Account enabled/disabled",
}


def _field_map() -> dict[str, dict[str, tuple[str, dict | None]]]:
    """form -> field -> (label, codes), from the registry: each form's field specs, then
    the labels it declares for the fields the system sets."""
    out: dict[str, dict[str, tuple[str, dict | None]]] = {}
    for name, entry in registry.record_types().items():
        fields: dict[str, tuple[str, dict | None]] = {}
        for spec in getattr(entry, "specs", ()):
            label = f"{spec.label} ({spec.unit})" if spec.unit else spec.label
            codes = dict(spec.choices) if spec.choices else (_YES_NO if spec.kind == "bool" else None)
            fields[spec.name] = (label, codes)
        fields.update(
            {field: (label, dict(codes) if codes else None) for field, (label, codes) in entry.fields.items()}
        )
        out[name] = fields
    return out


_DERIVED: dict = {}


def _fields_of(form: str) -> dict[str, tuple[str, dict | None]]:
    if _DERIVED.get("generation") != registry.generation():
        _DERIVED.update(generation=registry.generation(), fields=_field_map())
    return _DERIVED["fields"].get(form, {})


def form_label(form: str | None) -> str:
    if not form:
        return ""
    if registry.record_type(form) is None and form.startswith("safety_"):
        return "Safety listing: " + form.removeprefix("safety_").replace("_", " ").upper()
    return registry.label(form)


def _field(form: str | None, field: str | None) -> tuple[str, dict | None] | None:
    if not field:
        return None
    return _fields_of(form or "").get(field) or SYSTEM_FIELDS.get(field)


def field_label(form: str | None, field: str | None) -> str:
    """The label a reader knows the field by; an unknown name is shown as it is stored."""
    if not field:
        return ""
    found = _field(form, field)
    return found[0] if found else field


def value_label(form: str | None, field: str | None, value: str | None) -> str:
    """A stored (audit text) value as its label: a code of a choice list, yes/no, a status.
    A value that is not a code is shown as stored (free text, numbers, dates)."""
    if value is None:
        return ""
    found = _field(form, field)
    codes = found[1] if found else None
    if codes and value in codes:
        return codes[value]
    if field == "failed_criteria":  # a JSON list of criterion codes: as the protocol words them
        try:
            listed = json.loads(value)
        except ValueError:
            return value
        return "; ".join(criterion_texts(listed)) if isinstance(listed, list) else value
    return value


#: actions whose old/new values are the field's own values (codes are shown as labels);
#: the others (queries, SDV, locks, signatures, exports) carry text about the field
VALUE_ACTIONS = frozenset({"create", "set", "update", "status", "assign"})


def action_label(action: str | None) -> str:
    return ACTIONS.get(action or "", (action or "").replace("_", " ").capitalize())


def form_choices() -> list[tuple[str, str]]:
    """(form, label) for the viewer's form-type filter."""
    return sorted(((n, t.label) for n, t in registry.record_types().items()), key=lambda x: x[1].lower())


def action_choices() -> list[tuple[str, str]]:
    return sorted(ACTIONS.items(), key=lambda x: x[1].lower())
