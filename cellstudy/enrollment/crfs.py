"""The case report forms and audited records of enrolment, declared once (issue 12):
the screening form and the therapy log (prior and concomitant therapies, vaccines)."""

from __future__ import annotations

from .. import registry
from .fields import EXPOSURE_CATEGORY_LABELS, EXPOSURE_FIELDS, SCREENING_FIELDS
from .forms import ExposureForm
from .models import EligibilityDecision, EligibilityReview, Exposure, Screening, Subject


def _screening_title(form, record) -> str:
    return form.label + (f" (attempt {record.attempt})" if record.attempt > 1 else "")


def _exposure_columns():
    return registry.columns.columns_of_form(
        ExposureForm,
        ("category", "name", "start_date", "last_date", "half_life_days", "physiological_replacement", "indication"),
        (5, 5, 3, 3, 2, 2, 4),
    )


def _vaccination_columns():
    # the vaccination screen is the infusions package's; read when a log is printed, so that
    # loading enrolment does not load infusions
    from ..infusions.forms import VaccineForm

    return registry.columns.columns_of_form(VaccineForm, ("name", "last_date", "indication"), (6, 3, 6))


SCREENING = registry.register(
    registry.FormType(
        "screening",
        "Screening form",
        model=Screening,
        specs=SCREENING_FIELDS,
        position=10,
        records_of=lambda subject: subject.screenings,
        sort_key=lambda r: (r.attempt, r.id),
        title_of=_screening_title,
        endpoint=("enrollment.screening", "screening_id"),
        note="Questions marked ♀ are asked for female subjects only.",
        sdv="all",
    )
)

EXPOSURE = registry.register(
    registry.FormType(
        "exposure",
        "Therapy log",
        model=Exposure,
        specs=EXPOSURE_FIELDS,
        position=20,
        fields={"category": ("Category", EXPOSURE_CATEGORY_LABELS)},
        records_of=lambda subject: subject.active_exposures,
        sort_key=lambda r: (r.last_date is None, r.last_date, r.id),
        title_of=lambda form, r: f"{form.label}: {r.name}",
        endpoint=("enrollment.exposure_edit", "exposure_id"),
        sdv="key",
        sdv_fields=("category", "name", "last_date"),
        logs=(
            registry.Log("exposure", "Therapy log", position=20, columns_of=_exposure_columns),
            registry.Log(
                "vaccination",
                "Vaccination log",
                position=90,
                columns_of=_vaccination_columns,
                select=lambda r: r.category == "vaccine",
                note="A vaccine inside the no-vaccination window is a protocol deviation: record the "
                "reason; the investigator signs it.",
            ),
        ),
    )
)

registry.register(registry.RecordType("subject", "Subject", model=Subject))
registry.register(registry.RecordType("eligibility_decision", "Eligibility decision", model=EligibilityDecision))
registry.register(
    registry.RecordType("eligibility_review", "Eligibility review (after enrolment)", model=EligibilityReview)
)
