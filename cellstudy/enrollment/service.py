"""Subject registration, the screening form's data, enrolment and screen failure
(PROTOCOL 3, 4). Views call these; these call `records` for every write."""

from __future__ import annotations

import functools
import json
import re
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..auth.models import Site
from ..auth.policy import can
from ..extensions import db
from ..records import crf
from ..records import service as records
from ..records.crf import from_stored
from ..infusions.deviations import record_deviation
from ..infusions.dose_levels import assign_dose_level, check_dose_level
from ..infusions.scheduling import on_enrolled
from ..infusions.vaccination import vaccination_window
from ..records.service import InvalidForm, RecordError
from ..settings import current_study
from ..timeutil import site_date, utcnow
from . import eligibility
from .fields import FIELDS_BY_NAME, SCREENING_FIELDS
from .models import EligibilityDecision, Exposure, Screening, Subject

if TYPE_CHECKING:
    from ..auth.models import User

NO_PRIOR_THERAPIES = "prior_therapies_none"  # the coordinator's "no prior therapies" tick
ENROL_MEANING = "I confirm this subject meets all eligibility criteria"


# --- stored text <-> checker values -------------------------------------------------


def stored_values(values: dict) -> dict:
    """Form answers -> the canonical values kept on the screening form."""
    return crf.stored_values(FIELDS_BY_NAME, values)


def exposure_case(exposure: Exposure) -> dict:
    return {
        "category": exposure.category,
        "name": exposure.name,
        "last_date": exposure.last_date,
        "half_life_days": Decimal(exposure.half_life_days) if exposure.half_life_days else None,
        "physiological_replacement": bool(exposure.physiological_replacement),
    }


def build_case(screening: Screening, data: dict | None = None) -> dict:
    """The checker's `case` (PROTOCOL 4.2) from a screening form's data (the saved data
    unless given) and the subject's exposure log: rows given -> a list; none but ticked
    "none" -> []; otherwise not yet recorded -> None."""
    data = (screening.data or {}) if data is None else data
    case = {spec.name: from_stored(spec, data.get(spec.name)) for spec in SCREENING_FIELDS}
    study = current_study()
    # Prior therapies only. Before enrolment, a medication started on or after the planned
    # first infusion belongs to treatment; once enrolled, every exposure dated on or after
    # the enrolment date is on-study (issue 11): a lockout input of the scheduler (PROTOCOL
    # 5.2), never an eligibility input.
    cutoff = enrolment_date(screening.subject) or case.get("first_infusion_date")
    rows = [
        e
        for e in screening.subject.active_exposures
        if e.category in study.exposure_categories
        and not is_on_study(exposure_anchor(e.start_date, e.last_date), cutoff)
    ]
    if rows:
        case["prior_therapies"] = [exposure_case(e) for e in rows]
    elif data.get(NO_PRIOR_THERAPIES):
        case["prior_therapies"] = []
    else:
        case["prior_therapies"] = None
    return case


def exposure_anchor(start_date: date | None, last_date: date | None) -> date | None:
    """The date that places an exposure before or after enrolment: its start (first dose),
    else its last date; None when undated."""
    return start_date or last_date


def is_on_study(anchor: date | None, cutoff: date | None) -> bool:
    """On-study = dated on or after the cutoff (the enrolment date of an enrolled subject).
    An undated exposure cannot be placed: it stays an eligibility input (it makes its
    criterion missing, PROTOCOL 4.4), so nothing is silently dropped."""
    return cutoff is not None and anchor is not None and anchor >= cutoff


def enrolment_date(subject: Subject) -> date | None:
    """The site-calendar date the subject was enrolled (None before enrolment)."""
    if subject.status in ("screening", "screen_failed") or subject.enrolled_at is None:
        return None
    return site_date(subject.enrolled_at, subject.site)


def evaluate(screening: Screening) -> dict:
    """The checker's result for the saved form, or a bad-input result naming the field."""
    case = build_case(screening)
    result = _evaluate_cached(json.dumps(_jsonable(case), sort_keys=True), current_study())
    # a copy: the cached answer must never be changed by a caller
    return {**result, "criteria": {code: dict(c) for code, c in result["criteria"].items()}}


@functools.lru_cache(maxsize=4096)
def _evaluate_cached(case_json: str, study) -> dict:
    """check() is pure: the same case and study definition give the same answer, so a
    page shown again (the same form version, the same therapy log) reuses it. The key is
    the whole input, never an id, so a changed value can never hit a stale entry."""
    case = json.loads(case_json)
    try:
        return eligibility.check(_from_json(case), study=study)
    except ValueError as error:
        return {"eligible": None, "criteria": {}, "error": str(error)}


def _from_json(case: dict) -> dict:
    """Decimals come back from their exact text (json.loads gives str for them)."""
    out = {}
    for name, value in case.items():
        spec = FIELDS_BY_NAME.get(name)
        out[name] = from_stored(spec, value) if spec else value
    if case.get("prior_therapies"):
        out["prior_therapies"] = [
            {**e, "half_life_days": Decimal(e["half_life_days"]) if e.get("half_life_days") else None}
            for e in case["prior_therapies"]
        ]
    return out


def field_of_error(message: str) -> str | None:
    """Which screening field a checker ValueError names (longest name first)."""
    for name in sorted(FIELDS_BY_NAME, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", message):
            return name
    return None


def missing_for_completion(values: dict, has_exposures: bool) -> list[str]:
    """Fields that must be answered before the form can be marked complete. Female-only
    fields are not asked for males; the CR date only with a malignancy history."""
    missing = []
    for spec in SCREENING_FIELDS:
        if spec.female_only and values.get("sex") == "M":
            continue
        if spec.name == "other_malignancy_cr_date" and values.get("other_malignancy_history") is not True:
            continue
        if values.get(spec.name) is None:
            missing.append(spec.name)
    if not has_exposures and not values.get(NO_PRIOR_THERAPIES):
        missing.append(NO_PRIOR_THERAPIES)
    return missing


# --- subjects -------------------------------------------------------------------------


def _next_number(site: Site, attr: str) -> int:
    """Take the next value of a site sequence under a row lock: numbers are never reused."""
    locked = db.session.execute(select(Site).where(Site.id == site.id).with_for_update()).scalar_one()
    value = getattr(locked, attr)
    setattr(locked, attr, value + 1)
    return value


@records.transaction()
def register_subject(site: Site, *, user: User) -> Subject:
    seq = _next_number(site, "next_screening_seq")
    subject = Subject(
        site_id=site.id, screening_number=f"{site.code}-S{seq:03d}", status="screening", created_at=utcnow()
    )
    records.create(
        subject, user=user, form="subject", fields={"screening_number": subject.screening_number, "status": "screening"}
    )
    _new_screening(subject, attempt=1, previous=None, data={}, user=user)
    return subject


def _new_screening(subject: Subject, *, attempt: int, previous, data: dict, user) -> Screening:
    screening = Screening(
        subject_id=subject.id,
        attempt=attempt,
        previous_id=previous.id if previous else None,
        data=data,
        status="draft",
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    records.create(
        screening,
        user=user,
        fields=dict(data),
        reason=f"re-screening after attempt {previous.attempt}" if previous else None,
    )
    return screening


@records.transaction()
def save_screening(
    screening: Screening, values: dict, *, user: User, expected_version: int, reason: str | None, complete: bool
) -> dict:
    """Save the form (draft or complete). Returns the changed fields."""
    values = stored_values(values)
    merged = {k: v for k, v in {**(screening.data or {}), **values}.items() if v is not None}
    try:  # the checker is the judge of bad input too (PROTOCOL 4.1): refuse before saving
        eligibility.check(build_case(screening, merged), study=current_study())
    except ValueError as error:
        raise InvalidValue(str(error), field_of_error(str(error))) from None
    if complete:
        missing = missing_for_completion(merged, bool(screening.subject.active_exposures))
        if missing:
            raise IncompleteForm(missing)
    changed = records.save(screening, user=user, changes=values, expected_version=expected_version, reason=reason)
    if complete and screening.status != "complete":
        screening.completed_at = utcnow()
        records.set_status(screening, "complete", user=user)
    return changed


class InvalidValue(RecordError):
    def __init__(self, message: str, field: str | None):
        super().__init__(message)
        self.field = field


class IncompleteForm(RecordError):
    def __init__(self, missing: list[str]):
        super().__init__("Answer every question before marking the form complete.")
        self.missing = missing


# --- exposures (prior / concomitant therapy log) -------------------------------------


@records.transaction()
def add_exposure(subject: Subject, values: dict, *, user: User) -> Exposure:
    exposure = Exposure(subject_id=subject.id, status="complete", created_at=utcnow(), updated_at=utcnow(), **values)
    records.create(exposure, user=user, fields=values)
    return exposure


@records.transaction()
def record_vaccine(
    subject: Subject, values: dict, *, user: User, deviation_reason: str | None = None, password: str | None = None
) -> Exposure:
    """A vaccine on the exposure log. Inside the no-vaccination window it is a protocol
    deviation: allowed only with a reason and an investigator's e-signature (PROTOCOL 5.2)."""
    given = values.get("last_date")
    window = vaccination_window(subject)
    inside = window is not None and given is not None and window[0] <= given <= window[1]
    if inside:
        if not (deviation_reason or "").strip():
            raise InvalidForm(
                {
                    "deviation_reason": f"{given.isoformat()} is inside the no-vaccination window "
                    f"({window[0].isoformat()} to {window[1].isoformat()}): give a "
                    "protocol-deviation reason."
                }
            )
        if not can("sign_eligibility", user):
            raise InvalidForm(
                {
                    "password": "A vaccine inside the no-vaccination window needs an investigator's "
                    "e-signature: ask the investigator to record it."
                }
            )
        if not password:
            raise InvalidForm({"password": "Sign the deviation: enter your password."})
    exposure = add_exposure(subject, {**values, "category": "vaccine"}, user=user)
    if inside:
        signature = records.sign(
            exposure,
            user=user,
            password=password,
            meaning="I confirm this vaccination inside the no-vaccination window as a protocol deviation",
        )
        record_deviation(
            subject,
            kind="vaccine_in_window",
            description=f"{values.get('name')} given {given.isoformat()}, inside the no-vaccination "
            f"window {window[0].isoformat()} to {window[1].isoformat()}",
            reason=deviation_reason.strip(),
            user=user,
            form="exposure",
            form_id=exposure.id,
            signature=signature,
        )
    return exposure


@records.transaction()
def update_exposure(exposure: Exposure, values: dict, *, user: User, expected_version: int, reason: str | None) -> dict:
    window = vaccination_window(exposure.subject)
    given = values.get("last_date")
    moved = given != exposure.last_date or values.get("category") != exposure.category
    if values.get("category") == "vaccine" and moved and window and given and window[0] <= given <= window[1]:
        raise RecordError(
            "A vaccine inside the no-vaccination window is a protocol deviation: record it on the "
            "vaccination log, with the deviation reason and the investigator's signature."
        )
    return records.save(exposure, user=user, changes=values, expected_version=expected_version, reason=reason)


@records.transaction()
def remove_exposure(exposure: Exposure, *, user: User, expected_version: int, reason: str) -> None:
    """Nothing is physically deleted (PROTOCOL 7): status 'deleted' with the reason."""
    if exposure.version != expected_version:
        raise records.StaleVersion(exposure)
    if not (reason or "").strip():
        raise records.ReasonRequired()
    exposure.deleted_reason = reason.strip()
    records.set_status(exposure, "deleted", user=user, reason=reason.strip())


# --- enrolment and screen failure -------------------------------------------------------


class EnrolmentRefused(RecordError):
    pass


def enrolment_blockers(subject: Subject, screening: Screening, result: dict) -> list[str]:
    """Why the subject cannot be enrolled now (empty = can be)."""
    reasons = []
    if subject.status != "screening":
        reasons.append(f"The subject's status is {subject.status.replace('_', ' ')}, not screening.")
    if screening.status != "complete":
        reasons.append("The screening form is not marked complete.")
    if result.get("error"):
        reasons.append(f"The screening data is invalid: {result['error']}")
    elif result["eligible"] is False:
        reasons.append("At least one eligibility criterion fails.")
    elif result["eligible"] is None:
        reasons.append("Data needed for at least one criterion is missing.")
    return reasons


@records.transaction()
def enrol(
    subject: Subject,
    *,
    user: User,
    password: str,
    screening_version: int,
    dose_level: str | None = None,
    dose_level_reason: str | None = None,
) -> EligibilityDecision:
    """PROTOCOL 3: only when check() says eligible for the saved, complete form, and an
    investigator confirms with an e-signature. The decision is kept as signed."""
    screening = subject.current_screening
    if screening.version != screening_version:
        raise records.StaleVersion(screening)
    case = build_case(screening)
    result = evaluate(screening)
    blockers = enrolment_blockers(subject, screening, result)
    if blockers:
        raise EnrolmentRefused(" ".join(blockers))
    check_dose_level(dose_level, dose_level_reason)
    signature = records.sign(screening, user=user, password=password, meaning=ENROL_MEANING)
    seq = _next_number(subject.site, "next_subject_seq")
    records.set_value(subject, "subject_number", f"{subject.site.code}-{seq:03d}", user=user, form="subject")
    subject.enrolled_at = utcnow()
    decision = _decision(subject, screening, case, result, outcome="enrolled", user=user, signature=signature)
    records.set_status(subject, "enrolled", user=user, form="subject", reason="eligibility confirmed by e-signature")
    assign_dose_level(subject, dose_level, dose_level_reason, user=user)
    on_enrolled(subject, user=user)
    return decision


@records.transaction()
def screen_fail(subject: Subject, *, user: User, note: str | None = None) -> EligibilityDecision:
    """A screen failure records the failing criteria from the checker, not typed ones."""
    if subject.status != "screening":
        raise EnrolmentRefused(f"The subject's status is {subject.status.replace('_', ' ')}, not screening.")
    screening = subject.current_screening
    result = evaluate(screening)
    if result.get("error") or result["eligible"] is not False:
        raise EnrolmentRefused(
            "A screen failure needs at least one failing criterion on the saved screening "
            "form: enter the value that excludes the subject first."
        )
    decision = _decision(
        subject, screening, build_case(screening), result, outcome="screen_failed", user=user, note=note
    )
    records.set_status(
        subject,
        "screen_failed",
        user=user,
        form="subject",
        reason="failed: " + "; ".join(eligibility.criterion_texts(decision.failed_criteria, current_study())),
    )
    return decision


@records.transaction()
def rescreen(subject: Subject, *, user: User, reason: str) -> Screening:
    """Re-screening is a new screening record linked to the earlier one (PROTOCOL 3).
    Only the stable demographics are carried over; everything else is collected anew."""
    if subject.status != "screen_failed":
        raise EnrolmentRefused("Only a screen-failed subject can be re-screened.")
    if not (reason or "").strip():
        raise records.ReasonRequired()
    previous = subject.current_screening
    carried = {k: v for k, v in (previous.data or {}).items() if k in ("date_of_birth", "sex")}
    screening = _new_screening(subject, attempt=previous.attempt + 1, previous=previous, data=carried, user=user)
    records.set_status(subject, "screening", user=user, form="subject", reason=reason.strip())
    return screening


def _decision(subject, screening, case, result, *, outcome, user, signature=None, note=None):
    failed = [code for code, c in result["criteria"].items() if c["status"] == "fail"]
    decision = EligibilityDecision(
        subject_id=subject.id,
        screening_id=screening.id,
        screening_version=screening.version,
        outcome=outcome,
        eligible={True: "true", False: "false", None: "null"}[result["eligible"]],
        inputs=_jsonable(case),
        criteria=result["criteria"],
        failed_criteria=failed,
        study_version=current_study().version,
        signature_id=signature.id if signature else None,
        decided_by_id=user.id,
        decided_at=utcnow(),
        note=(note or "").strip() or None,
    )
    records.create(
        decision,
        user=user,
        form="eligibility_decision",
        fields={"outcome": outcome, "failed_criteria": failed, "study_version": current_study().version},
    )
    return decision


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value
