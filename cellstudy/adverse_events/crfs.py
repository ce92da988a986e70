"""The case report forms and audited records of adverse events, declared once (issue 12):
the AE form with its grade episodes, and the CRS and ICANS assessments (ASTCT 2019)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from .. import registry
from ..extensions import db
from .fields import AE_FIELDS, CATEGORIES, CRS_FIELDS, GRADE_CHOICES, ICANS_FIELDS
from .models import AdverseEvent, CrsAssessment, IcansAssessment


def _assessments(model):
    def records_of(subject) -> list:
        return (
            db.session.execute(
                select(model).where(model.subject_id == subject.id).order_by(model.assessed_on, model.id)
            )
            .scalars()
            .all()
        )

    return records_of


def _assessment_title(form, record) -> str:
    when = record.assessed_on or (record.data or {}).get("assessment_date") or "undated"
    return f"{form.label} {when}"


def _assessed(record) -> tuple:
    return (record.assessed_on or date.min, record.id)


ADVERSE_EVENT = registry.register(
    registry.FormType(
        "adverse_event",
        "Adverse event",
        model=AdverseEvent,
        specs=AE_FIELDS,
        position=60,
        fields={"category": ("Category", dict(CATEGORIES))},
        records_of=lambda subject: subject.adverse_events,
        sort_key=lambda r: (r.number,),
        title_of=lambda form, r: f"AE {r.number}: {r.term or r.verbatim or 'term not recorded'}",
        endpoint=("adverse_events.ae", "ae_id"),
        pdf_key="ae",
        note="SOC, MedDRA code, relatedness, treatment-emergent and the SAE clocks are computed by the system.",
        sdv="key",
        sdv_fields=("term", "onset_date", "end_date", "grade", "serious", "related_nk", "related_ld", "outcome"),
        signature=True,
    )
)

CRS_ASSESSMENT = registry.register(
    registry.FormType(
        "crs_assessment",
        "CRS assessment",
        model=CrsAssessment,
        specs=CRS_FIELDS,
        position=70,
        records_of=_assessments(CrsAssessment),
        sort_key=_assessed,
        title_of=_assessment_title,
        endpoint=("adverse_events.crs", "crs_id"),
        pdf_key="crs",
        note="The grade is computed by the system (ASTCT 2019).",
        sdv="all",
    )
)

ICANS_ASSESSMENT = registry.register(
    registry.FormType(
        "icans_assessment",
        "ICANS assessment",
        model=IcansAssessment,
        specs=ICANS_FIELDS,
        position=80,
        records_of=_assessments(IcansAssessment),
        sort_key=_assessed,
        title_of=_assessment_title,
        endpoint=("adverse_events.icans", "icans_id"),
        pdf_key="icans",
        note="The ICE score and the grade are computed by the system (ASTCT 2019).",
        sdv="all",
    )
)

registry.register(
    registry.RecordType(
        "ae_grade_episode", "AE grade episode", fields={"grade": ("Grade (CTCAE v5.0)", dict(GRADE_CHOICES))}
    )
)
for _name, _label in (("lab_suggestion", "Lab-based AE suggestion"), ("ctcae_term", "CTCAE dictionary")):
    registry.register(registry.RecordType(_name, _label))
