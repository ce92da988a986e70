"""The case report forms and audited records of treatment, declared once (issue 12):
lymphodepletion days, NK-cell infusions, follow-up visits and the DLT assessment."""

from __future__ import annotations

from datetime import date

from .. import registry
from .fields import DLT_FIELDS, INFUSION_FIELDS, LYMPHODEPLETION_FIELDS, VISIT_FIELDS
from .models import DltAssessment, Infusion, LymphodepletionDay, Visit

#: infusions and visits share a place in the casebook: one timeline, by date
TREATMENT_TIMELINE = 40


def _visit_day(visit: Visit) -> date:
    given = (visit.data or {}).get("visit_date")
    return date.fromisoformat(given) if given else visit.target_date


LYMPHODEPLETION = registry.register(
    registry.FormType(
        "lymphodepletion",
        "Lymphodepletion day",
        model=LymphodepletionDay,
        specs=LYMPHODEPLETION_FIELDS,
        position=30,
        records_of=lambda subject: subject.lymphodepletion_days,
        sort_key=lambda r: (r.day, r.id),
        title_of=lambda form, r: f"{form.label} {r.day}",
        endpoint=("infusions.lymphodepletion", "day_id"),
        note="One form per lymphodepletion day. BSA is computed by the system (Mosteller).",
        sdv="key",
        sdv_fields=("administration_date", "weight_kg"),
    )
)

INFUSION = registry.register(
    registry.FormType(
        "infusion",
        "NK-cell infusion",
        model=Infusion,
        specs=INFUSION_FIELDS,
        position=TREATMENT_TIMELINE,
        records_of=lambda subject: [i for i in subject.infusions if i.state != "cancelled"],
        sort_key=lambda r: (r.date, 0, r.number),
        title_of=lambda form, r: f"Infusion {r.number}",
        endpoint=("infusions.infusion", "infusion_id"),
        sdv="all",
    )
)

VISIT = registry.register(
    registry.FormType(
        "visit",
        "Follow-up visit",
        model=Visit,
        specs=VISIT_FIELDS,
        position=TREATMENT_TIMELINE,
        records_of=lambda subject: subject.visits,
        sort_key=lambda r: (_visit_day(r), 1, r.seq),
        title_of=lambda form, r: f"Visit {r.label}",
        endpoint=("infusions.visit", "visit_id"),
        sdv="key",
        sdv_fields=("visit_date", "ecog", "anc", "platelets", "alt", "ast", "response"),
    )
)

DLT_ASSESSMENT = registry.register(
    registry.FormType(
        "dlt_assessment",
        "DLT assessment",
        model=DltAssessment,
        specs=DLT_FIELDS,
        position=50,
        records_of=lambda subject: [subject.dlt_assessment] if subject.dlt_assessment is not None else [],
        endpoint=("infusions.dlt", None),
        pdf_key="dlt",
        note="Signed by the investigator at the end of the DLT window.",
        sdv="all",
        signature=True,
    )
)

for _name, _label in (("deviation", "Protocol deviation"), ("escalation_review", "Dose-escalation review")):
    registry.register(registry.RecordType(_name, _label))
