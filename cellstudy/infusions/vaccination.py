"""The no-vaccination window (PROTOCOL 5.2): from the first infusion to 12 weeks after the
last. A vaccine inside it is a signed protocol deviation (enrollment.service.record_vaccine)."""

from __future__ import annotations

from datetime import date, timedelta

from ..enrollment.models import Subject
from ..settings import current_study
from .proposal import active_infusions, first_infusion_date


def vaccination_window(subject: Subject) -> tuple[date, date] | None:
    """The subject's no-vaccination window (PROTOCOL 5.2), from the first infusion
    (given, scheduled or planned) to 12 weeks after the last infusion of the plan."""
    first = first_infusion_date(subject)
    if first is None:
        return None
    regimen = current_study().regimen
    dates = [i.date for i in active_infusions(subject)]
    last = max(dates + [first + timedelta(days=regimen.infusion_days[-1])])
    return (
        first - timedelta(days=regimen.vaccine_days_before_first - 1),
        last + timedelta(days=regimen.vaccine_days_after_last),
    )
