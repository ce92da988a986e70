"""The form types monitoring knows: model, field specs, label and the page to open.
Every clinical form of the app is here, so queries, SDV, signatures and locks cover
them all (issue 6)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from flask import url_for


@dataclass(frozen=True)
class FormType:
    name: str
    label: str
    model: type
    specs: tuple  # FieldSpecs (name, label, ...)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def label_of(self, field: str | None) -> str:
        if not field:
            return "whole form"
        for spec in self.specs:
            if spec.name == field:
                return spec.label
        return field.replace("_", " ")


@dataclass(frozen=True)
class _Spec:  # for forms whose fields are table columns without FieldSpecs
    name: str
    label: str


@functools.cache
def form_types() -> dict[str, FormType]:
    from ..adverse_events.fields import AE_FIELDS, CRS_FIELDS, ICANS_FIELDS
    from ..adverse_events.models import AdverseEvent, CrsAssessment, IcansAssessment
    from ..enrollment.fields import EXPOSURE_FIELDS, SCREENING_FIELDS
    from ..enrollment.models import Exposure, Screening
    from ..infusions.fields import DLT_FIELDS, INFUSION_FIELDS, LYMPHODEPLETION_FIELDS, VISIT_FIELDS
    from ..infusions.models import DltAssessment, Infusion, LymphodepletionDay, Visit

    rows = (
        ("screening", "Screening form", Screening, SCREENING_FIELDS),
        ("exposure", "Therapy log entry", Exposure, EXPOSURE_FIELDS),
        ("lymphodepletion", "Lymphodepletion day", LymphodepletionDay, LYMPHODEPLETION_FIELDS),
        ("infusion", "Infusion", Infusion, INFUSION_FIELDS),
        ("visit", "Visit", Visit, VISIT_FIELDS),
        ("dlt_assessment", "DLT assessment", DltAssessment, DLT_FIELDS),
        ("adverse_event", "Adverse event", AdverseEvent, AE_FIELDS),
        ("crs_assessment", "CRS assessment", CrsAssessment, CRS_FIELDS),
        ("icans_assessment", "ICANS assessment", IcansAssessment, ICANS_FIELDS),
    )
    return {name: FormType(name, label, model, tuple(specs)) for name, label, model, specs in rows}


def get(name: str) -> FormType | None:
    return form_types().get(name)


def label(name: str) -> str:
    if name == "casebook":
        return "Casebook"
    ft = get(name)
    return ft.label if ft else name.replace("_", " ")


def record_title(form: str, record) -> str:
    """How a form instance is named in lists: 'AE 2', 'Visit Day 7', 'Infusion 1', ..."""
    if record is None:
        return label(form)
    if form == "adverse_event":
        return f"AE {record.number}: {record.term or 'term not recorded'}"
    if form == "visit":
        return f"Visit {record.label}"
    if form == "infusion":
        return f"Infusion {record.number}"
    if form == "lymphodepletion":
        return f"Lymphodepletion day {record.day}"
    if form == "screening":
        return f"Screening (attempt {record.attempt})"
    if form == "exposure":
        return f"Therapy log: {record.name}"
    if form in ("crs_assessment", "icans_assessment"):
        return f"{label(form)} {record.assessed_on or ''}".strip()
    return label(form)


def url_of(form: str, form_id: int | None, subject_id: int) -> str:
    """The page of a form instance (the subject page when there is none yet)."""
    endpoints = {
        "screening": ("enrollment.screening", "screening_id"),
        "exposure": ("enrollment.exposure_edit", "exposure_id"),
        "lymphodepletion": ("infusions.lymphodepletion", "day_id"),
        "infusion": ("infusions.infusion", "infusion_id"),
        "visit": ("infusions.visit", "visit_id"),
        "adverse_event": ("adverse_events.ae", "ae_id"),
        "crs_assessment": ("adverse_events.crs", "crs_id"),
        "icans_assessment": ("adverse_events.icans", "icans_id"),
    }
    if form == "dlt_assessment":
        return url_for("infusions.dlt", subject_id=subject_id)
    if form_id is not None and form in endpoints:
        endpoint, arg = endpoints[form]
        return url_for(endpoint, subject_id=subject_id, **{arg: form_id})
    return url_for("enrollment.subject", subject_id=subject_id)
