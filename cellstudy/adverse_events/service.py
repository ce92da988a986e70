"""Adverse events: the write path and the subject-level reads (PROTOCOL 6, issue 4).

The rules themselves are pure (`rules.py`, `grading.py`, `ctcae.py`); this module
applies them to records through the one write path (`records.service`), so every
value set, grade episode, assessment, SAE report and dismissal is audited."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from ..auth.policy import Sites, scoped
from ..enrollment.models import Subject
from ..extensions import db
from ..records import audit
from ..records import service as records
from ..records import queries
from ..records.models import Query
from ..records.service import RecordError
from ..settings import current_study
from ..study import Study
from ..timeutil import as_utc, utcnow
from . import ctcae, grading, rules
from .fields import AE_FIELDS, CRITERIA_CODES, CRS_TERM, ICANS_TERM, ICANS_VERBATIM, ICE_ITEMS
from .models import AdverseEvent, CrsAssessment, GradeEpisode, IcansAssessment, LabSuggestionDismissal
from ..records.crf import stored_values

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..auth.models import User
    from ..registry.fields import FieldSpec

#: AE columns a form value goes to directly (the rest of the answers live in `data`)
_COLUMNS = (
    "term",
    "verbatim",
    "onset_date",
    "end_date",
    "ongoing",
    "serious",
    "related_nk",
    "related_ld",
    "expectedness",
    "action",
    "outcome",
    "death_date",
    "dlt",
)


# --- the subject's treatment dates -----------------------------------------------------


def first_lymphodepletion_date(subject: Subject) -> date | None:
    """The first lymphodepletion day given (treatment-emergent starts there, PROTOCOL 6);
    failing a recorded day, the first NK-cell infusion given."""
    days = [
        date.fromisoformat(d.data["administration_date"])
        for d in subject.lymphodepletion_days
        if (d.data or {}).get("administration_date")
    ]
    if days:
        return min(days)
    return first_infusion_given(subject)


def first_infusion_given(subject: Subject) -> date | None:
    given = [i.date for i in subject.infusions if i.state == "given"]
    return min(given) if given else None


def dlt_window(subject: Subject) -> tuple[date, date] | None:
    first = first_infusion_given(subject)
    if first is None:
        return None
    return first, first + timedelta(days=current_study().regimen.dlt_window_days)


def consent_date(subject: Subject) -> date | None:
    screening = subject.current_screening
    raw = (screening.data or {}).get("icf_signed_date") if screening else None
    return date.fromisoformat(raw) if raw else None


def context(subject: Subject, today: date, ae: AdverseEvent | None = None) -> dict:
    return {
        "today": today,
        "consent_date": consent_date(subject),
        "dlt_window": dlt_window(subject),
        "computed_grade": ae.computed_grade if ae is not None else None,
    }


# --- reading an AE into the form and back ---------------------------------------------------


def values_of(ae: AdverseEvent) -> dict:
    """The AE's answers as Python values, keyed as AE_FIELDS (grade = current episode)."""
    data = ae.data or {}
    out = {}
    for spec in AE_FIELDS:
        if spec.name in _COLUMNS:
            out[spec.name] = getattr(ae, spec.name)
        elif spec.name == "grade":
            out["grade"] = ae.current_grade
        elif spec.kind == "date":
            out[spec.name] = date.fromisoformat(data[spec.name]) if data.get(spec.name) else None
        else:
            out[spec.name] = data.get(spec.name)
    return out


def _normalise(values: dict) -> dict:
    v = dict(values)
    term = (v.get("term") or "").strip() or None
    if term:
        try:
            term = ctcae.get(term).term
        except KeyError:
            pass  # refused by rules.validate, at the field
    v["term"] = term
    grade = v.get("grade")
    v["grade"] = int(grade) if grade not in (None, "") else None
    return v


def derived_values(v: dict, *, first_lymphodepletion: date | None, zone: str, sae_report_hours: int) -> dict:
    """Values the app computes: never typed (the dictionary's SOC and code, relatedness,
    treatment-emergent, the SAE and SUSAR clocks). Pure: the subject's first
    lymphodepletion day, its site's time zone and the study's SAE report hours are
    passed in (the bench's bulk writer, bench/dataset.py, calls it too)."""
    out = {"soc": None, "meddra_code": None}
    if v.get("term"):
        entry = ctcae.get(v["term"])
        out["soc"], out["meddra_code"] = entry.soc, entry.meddra_code
    out["related"] = rules.related(v.get("related_nk"), v.get("related_ld"))
    out["treatment_emergent"] = rules.treatment_emergent(v.get("onset_date"), first_lymphodepletion)
    aware = None
    if v.get("serious") and v.get("awareness_date") and v.get("awareness_time"):
        aware = rules.awareness_utc(v["awareness_date"], v["awareness_time"], zone)
    out["awareness_at"] = aware
    out["sae_due_at"] = aware + timedelta(hours=sae_report_hours) if aware else None
    susar = bool(v.get("serious")) and rules.is_susar(
        v.get("serious"), v.get("expectedness"), v.get("related_nk"), v.get("related_ld")
    )
    out["susar"] = susar
    out["susar_due_at"] = aware + timedelta(days=rules.susar_days(v, v.get("outcome"))) if susar and aware else None
    return out


def _changes(subject: Subject, v: dict) -> dict:
    """Everything a save writes to the AE except the grade (kept by its episodes)."""
    return ae_changes(
        v,
        first_lymphodepletion=first_lymphodepletion_date(subject),
        zone=subject.site.timezone,
        sae_report_hours=current_study().safety_reporting.sae_report_hours,
    )


def ae_changes(v: dict, *, first_lymphodepletion: date | None, zone: str, sae_report_hours: int) -> dict:
    """`_changes` over plain values (pure, as `derived_values`): the columns, the derived
    values, then the answers kept in `data`, in that order."""
    changes = {name: v.get(name) for name in _COLUMNS}
    changes.update(
        derived_values(v, first_lymphodepletion=first_lymphodepletion, zone=zone, sae_report_hours=sae_report_hours)
    )
    for spec in AE_FIELDS:
        if spec.name not in _COLUMNS and spec.name != "grade":
            value = v.get(spec.name)
            if spec.kind == "date" and value is not None:
                value = value.isoformat()
            if spec.kind == "bool" and value is False and spec.name in CRITERIA_CODES:
                value = None  # an unticked criterion is not an answer
            changes[spec.name] = value
    return changes


# --- AE create / save ------------------------------------------------------------------------------


def new_ae(subject: Subject, category: str = "other") -> AdverseEvent:
    """A transient AE for the empty form (numbered when first saved)."""
    # subject_id, not the relationship: a transient AE must not be cascaded into the
    # session (and flushed half-made) by the subject's collection
    return AdverseEvent(
        subject_id=subject.id,
        site_id=subject.site_id,
        category=category,
        status="draft",
        version=0,
        data={},
        treatment_emergent=False,
        susar=False,
    )


def _next_number(subject: Subject) -> int:
    records.lock(subject)
    top = db.session.execute(
        select(func.max(AdverseEvent.number)).where(AdverseEvent.subject_id == subject.id)
    ).scalar()
    return (top or 0) + 1


@records.transaction()
def save_ae(
    subject: Subject,
    ae: AdverseEvent,
    values: dict,
    *,
    user: User,
    expected_version: int,
    reason: str | None,
    complete: bool,
    today: date,
) -> AdverseEvent:
    """Create or change an AE. Refused (nothing saved) with messages at the fields."""
    v = _normalise(values)
    errors = rules.validate(v, context(subject, today, ae), complete=complete)
    if errors:
        raise records.InvalidForm(errors)
    changes = _changes(subject, v)
    grade = v.get("grade")
    if ae.id is None:
        ae.number = _next_number(subject)
        ae.version = 1
        for name, value in changes.items():
            ae.set_field(name, value)
        ae.grade = grade
        records.create(ae, user=user, fields={**changes, "grade": grade})
    else:
        if ae.status == "deleted":
            raise RecordError("This adverse event was removed; it can no longer be changed.")
        worst = _worst_after_correction(ae, grade)
        records.save(
            ae,
            user=user,
            changes={**changes, "grade": worst},
            expected_version=expected_version,
            reason=reason,
        )
    _sync_episodes(ae, grade, user=user, reason=reason)
    _sync_discrepancy(ae, user=user)
    if complete:
        records.set_status(ae, "complete", user=user)
    return ae


def _worst_after_correction(ae: AdverseEvent, grade: int | None) -> int | None:
    grades = [e.grade for e in ae.episodes[:-1]] + ([grade] if grade is not None else [])
    if not ae.episodes:
        return grade
    return max(grades) if grades else None


def _sync_episodes(ae: AdverseEvent, grade: int | None, *, user, reason: str | None) -> None:
    """The form's grade is the current episode's: a different value there is a correction
    of that episode, not a change in the patient (that is `change_grade`)."""
    if grade is None or ae.onset_date is None:
        return
    if not ae.episodes:
        _add_episode(ae, grade, ae.onset_date, user=user, end=ae.end_date)
        return
    first, current = ae.episodes[0], ae.episodes[-1]
    if first.start_date != ae.onset_date and (len(ae.episodes) == 1 or ae.onset_date <= ae.episodes[1].start_date):
        _episode_update(ae, first, "start_date", ae.onset_date, user=user, reason=reason)
    if current.grade != grade:
        _episode_update(ae, current, "grade", grade, user=user, reason=reason)
    if ae.end_date and current.end_date != ae.end_date:
        _episode_update(ae, current, "end_date", ae.end_date, user=user, reason=reason)


def _add_episode(ae: AdverseEvent, grade: int, start: date, *, user, end: date | None = None) -> GradeEpisode:
    episode = GradeEpisode(adverse_event=ae, grade=grade, start_date=start, end_date=end, created_by_id=user.id)
    fields = {"grade": grade, "start_date": start, "end_date": end}
    records.create(episode, user=user, fields={k: v for k, v in fields.items() if v is not None})
    return episode


def _episode_update(ae, episode, name, value, *, user, reason) -> None:
    records.update(episode, {name: value}, user=user, reason=reason or "correction")


@records.transaction()
def change_grade(ae: AdverseEvent, grade: int, start: date, *, user: User, expected_version: int, today: date) -> None:
    """A change in the patient: the current grade episode ends on `start` and a new one
    begins there. The AE's grade stays the worst of its episodes."""
    if ae.version != expected_version:
        raise records.StaleVersion(ae)
    if not ae.episodes:
        raise records.InvalidForm({"grade": "Save the AE with its onset and grade first."})
    current = ae.episodes[-1]
    errors = {}
    if grade == current.grade:
        errors["new_grade"] = f"The AE is already grade {grade}."
    if start < current.start_date:
        errors["change_date"] = f"The change cannot be before the current grade began ({current.start_date})."
    if start > today:
        errors["change_date"] = "This date cannot be in the future."
    if ae.end_date and start > ae.end_date:
        errors["change_date"] = f"The AE ended on {ae.end_date}."
    values = {**values_of(ae), "grade": max([grade, *(e.grade for e in ae.episodes)])}
    problems = rules.validate(values, context(ae.subject, today, None), complete=False)
    if "grade" in problems or "outcome" in problems or "death_date" in problems:
        errors["new_grade"] = problems.get("grade") or problems.get("outcome") or problems.get("death_date")
    if errors:
        raise records.InvalidForm(errors)
    _episode_update(ae, current, "end_date", start, user=user, reason="grade changed")
    _add_episode(ae, grade, start, user=user)
    worst = max(e.grade for e in ae.episodes)
    records.save(
        ae,
        user=user,
        changes={"grade": worst},
        expected_version=expected_version,
        reason=f"grade changed to {grade} on {start.isoformat()}",
    )
    if ae.version == expected_version:  # the worst grade did not move: still a new version of the AE
        records.touch(ae, user)
    _sync_discrepancy(ae, user=user)


@records.transaction()
def remove_ae(ae: AdverseEvent, *, user: User, expected_version: int, reason: str) -> None:
    """Nothing is deleted: the AE's status becomes 'deleted' with the reason (PROTOCOL 7)."""
    if not (reason or "").strip():
        raise RecordError("Give the reason for removing this adverse event.")
    if ae.version != expected_version:
        raise records.StaleVersion(ae)
    ae.deleted_reason = reason.strip()
    records.set_status(ae, "deleted", user=user, reason=reason.strip())


# --- SAE and SUSAR reports ---------------------------------------------------------------------------------


@records.transaction()
def report(ae: AdverseEvent, kind: str, *, user: User, password: str) -> None:
    """The investigator's signed SAE report (or SUSAR expedited report)."""
    if kind == "sae":
        if not ae.serious or ae.awareness_at is None:
            raise RecordError("Only a serious AE with its awareness time can be reported as an SAE.")
        if ae.sae_reported_at is not None:
            raise RecordError("The SAE report was already submitted.")
        meaning = "I submit this serious adverse event report"
    elif kind == "susar":
        if not ae.susar:
            raise RecordError("This AE is not a suspected unexpected serious adverse reaction.")
        if ae.susar_reported_at is not None:
            raise RecordError("The expedited SUSAR report was already submitted.")
        meaning = "I submit this SUSAR expedited report"
    else:
        raise ValueError(kind)
    signature = records.sign(ae, user=user, password=password, meaning=meaning)
    now = utcnow()
    if kind == "sae":
        ae.sae_reported_at, ae.sae_signature_id = now, signature.id
    else:
        ae.susar_reported_at, ae.susar_signature_id = now, signature.id
    audit.append(
        "assign",
        user=user,
        form=ae.FORM_NAME,
        form_id=ae.id,
        field=f"{kind}_reported_at",
        new=now,
        subject_id=ae.subject_id,
        site_id=ae.site_id,
    )


def clocks(ae: AdverseEvent, now: datetime | None = None, study: Study | None = None) -> dict:
    """{"sae": clock or None, "susar": clock or None} (rules.sae_clock's shape); the SAE
    report hours are those of `study`, by default the definition in force."""
    now = now or utcnow()
    out = {"sae": None, "susar": None}
    if ae.status != "deleted" and ae.serious and ae.awareness_at:
        aware = as_utc(ae.awareness_at)
        hours = (study or current_study()).safety_reporting.sae_report_hours
        out["sae"] = rules.sae_clock(aware, as_utc(ae.sae_reported_at), now, hours)
        if ae.susar and ae.susar_due_at:
            days = (as_utc(ae.susar_due_at) - aware).days
            out["susar"] = rules.susar_clock(aware, days, as_utc(ae.susar_reported_at), now)
    return out


# --- discrepancies (system queries) --------------------------------------------------------------------------


def _sync_discrepancy(ae: AdverseEvent, *, user) -> None:
    """A CRS/ICANS grade entered that differs from the computed one raises a system query
    for the monitor; once they agree again it closes with a note."""
    differs = ae.computed_grade is not None and ae.grade is not None and ae.grade != ae.computed_grade
    open_queries = (
        db.session.execute(
            select(Query).where(
                Query.form == ae.FORM_NAME,
                Query.form_id == ae.id,
                Query.field == "grade",
                Query.origin == "system",
                Query.state == "open",
            )
        )
        .scalars()
        .all()
    )
    if differs and not open_queries:
        reason = (ae.data or {}).get("grade_reason") or "no reason given"
        queries.new_query(
            site_id=ae.site_id,
            subject_id=ae.subject_id,
            form=ae.FORM_NAME,
            form_id=ae.id,
            field="grade",
            text=f"Grade {ae.grade} differs from grade {ae.computed_grade} computed from the "
            f"{ae.category.upper()} assessments (ASTCT 2019). Site's reason: {reason}",
        )
    elif not differs:
        for query in open_queries:
            queries.transition(
                query, "close", user=None, text="Closed by the system: the grade now equals the computed grade."
            )


def open_queries(subject: Subject) -> list[Query]:
    return (
        db.session.execute(
            select(Query).where(Query.subject_id == subject.id, Query.state == "open").order_by(Query.id)
        )
        .scalars()
        .all()
    )


# --- CRS and ICANS assessments --------------------------------------------------------------------------------------


def _assessment_input(kind: str, v: dict) -> dict | None:
    """The grading function's input, or None while the form is too incomplete to grade."""
    if kind == "crs":
        needed = ("hypotension", "hypoxia")
        if any(v.get(k) in (None, "") for k in needed):
            return None
        masked = bool(v.get("fever_masked"))
        if v.get("max_temp_c") is None and not masked:
            return None
        return {
            "max_temp_c": v.get("max_temp_c"),
            "fever_masked": masked,
            "hypotension": v["hypotension"],
            "hypoxia": v["hypoxia"],
        }
    needed = ("consciousness", "seizure", "motor_weakness", "cerebral_edema")
    if any(v.get(k) in (None, "") for k in needed):
        return None
    if v.get("ice_not_assessable"):
        ice = None
    else:
        items = {name: v.get(name) for name, _ in ICE_ITEMS}
        if any(value is None for value in items.values()):
            return None
        ice = grading.ice_score({k: bool(x) for k, x in items.items()})
    return {"ice_score": ice, **{k: v[k] for k in needed}}


def grade_assessment(kind: str, values: dict) -> dict | None:
    """{"grade", "driver", "components", "ice_score"} or None when not gradable yet."""
    case = _assessment_input(kind, values)
    if case is None:
        return None
    result = grading.crs_components(case) if kind == "crs" else grading.icans_components(case)
    return {**result, "ice_score": case.get("ice_score")}


def new_assessment(subject: Subject, kind: str) -> CrsAssessment | IcansAssessment:
    model = CrsAssessment if kind == "crs" else IcansAssessment
    return model(subject_id=subject.id, status="draft", version=0, data={})


@records.transaction()
def save_assessment(
    subject: Subject,
    record: CrsAssessment | IcansAssessment,
    kind: str,
    values: dict,
    *,
    user: User,
    expected_version: int,
    reason: str | None,
    complete: bool,
    today: date,
    specs: Sequence[FieldSpec],
) -> None:
    """Save a CRS/ICANS assessment, grade it, and feed its event (the AE)."""
    errors = {}
    when = values.get("assessment_date")
    if when is None and complete:
        errors["assessment_date"] = "Required to complete the form."
    if when is not None and when > today:
        errors["assessment_date"] = "This date cannot be in the future."
    try:
        graded = grade_assessment(kind, values)
    except ValueError as error:
        graded = None
        key = str(error).split(":")[0]
        errors[key if any(s.name == key for s in specs) else "hypotension" if kind == "crs" else "consciousness"] = str(
            error
        )
    if complete and graded is None and not errors:
        errors["hypotension" if kind == "crs" else "consciousness"] = (
            "Every component is needed to compute the grade: complete them or save a draft."
        )
    if errors:
        raise records.InvalidForm(errors)
    by_name = {s.name: s for s in specs}
    changes = stored_values(by_name, values)
    changes["assessed_on"] = when
    changes["grade"] = graded["grade"] if graded else None
    changes["driver"] = graded["driver"] if graded else None
    if kind == "icans":
        changes["ice_score"] = graded["ice_score"] if graded else None
    if record.id is None:
        record.version = 1
        for name, value in changes.items():
            record.set_field(name, value)
        records.create(record, user=user, fields=changes)
    else:
        records.save(record, user=user, changes=changes, expected_version=expected_version, reason=reason)
    if complete:
        records.set_status(record, "complete", user=user)
    if graded and graded["grade"] >= 1 and when is not None:
        _feed_event(subject, record, kind, user=user)
    elif record.adverse_event is not None:
        _sync_event(record.adverse_event, kind, user=user)


def _open_event(subject: Subject, kind: str) -> AdverseEvent | None:
    for ae in reversed(subject.adverse_events):
        if ae.category == kind and ae.status != "deleted" and ae.end_date is None:
            return ae
    return None


def _feed_event(subject: Subject, record, kind: str, *, user) -> None:
    """Assessments over time form one event: the subject's open CRS (ICANS) AE, or a new
    one opened on the first assessment with a grade of 1 or more."""
    ae = record.adverse_event or _open_event(subject, kind)
    if ae is None:
        ae = new_ae(subject, kind)
        ae.number = _next_number(subject)
        ae.version = 1
        fields = {
            "term": CRS_TERM if kind == "crs" else ICANS_TERM,
            "verbatim": None if kind == "crs" else ICANS_VERBATIM,
            "onset_date": record.assessed_on,
            "ongoing": True,
            "grade": record.grade,
        }
        entry = ctcae.get(fields["term"])
        fields.update(
            {
                "soc": entry.soc,
                "meddra_code": entry.meddra_code,
                "treatment_emergent": rules.treatment_emergent(record.assessed_on, first_lymphodepletion_date(subject)),
            }
        )
        for name, value in fields.items():
            ae.set_field(name, value)
        ae.computed_grade = record.grade
        records.create(
            ae, user=user, fields=fields, reason=f"opened from the {kind.upper()} assessment of {record.assessed_on}"
        )
        subject.adverse_events.append(ae)
    if record.adverse_event_id != ae.id:
        records.set_value(record, "adverse_event_id", ae.id, user=user, form=record.FORM_NAME)
        record.adverse_event = ae
    _sync_event(ae, kind, user=user)


def _sync_event(ae: AdverseEvent, kind: str, *, user) -> None:
    """The event's computed grade is the worst of its assessments; the latest assessment
    moves the grade course (a new episode from its date) when it differs."""
    model = CrsAssessment if kind == "crs" else IcansAssessment
    db.session.flush()
    assessments = (
        db.session.execute(
            select(model)
            .where(model.adverse_event_id == ae.id, model.grade.is_not(None))
            .order_by(model.assessed_on, model.id)
        )
        .scalars()
        .all()
    )
    graded = [a for a in assessments if a.assessed_on is not None]
    computed = max((a.grade for a in graded), default=None)
    if computed != ae.computed_grade:
        records.set_value(ae, "computed_grade", computed, user=user, form=ae.FORM_NAME)
    if graded:
        latest = graded[-1]
        if not ae.episodes:
            _add_episode(ae, max(latest.grade, 1), ae.onset_date or latest.assessed_on, user=user)
        else:
            current = ae.episodes[-1]
            if latest.grade >= 1 and latest.grade != current.grade:
                if latest.assessed_on > current.start_date:
                    _episode_update(
                        ae,
                        current,
                        "end_date",
                        latest.assessed_on,
                        user=user,
                        reason=f"{kind.upper()} assessment of {latest.assessed_on}",
                    )
                    _add_episode(ae, latest.grade, latest.assessed_on, user=user)
                else:
                    _episode_update(
                        ae,
                        current,
                        "grade",
                        latest.grade,
                        user=user,
                        reason=f"{kind.upper()} assessment of {latest.assessed_on}",
                    )
        worst = max(e.grade for e in ae.episodes)
        if worst != ae.grade:
            records.set_value(
                ae,
                "grade",
                worst,
                user=user,
                form=ae.FORM_NAME,
                reason=f"worst grade of the {kind.upper()} assessments",
            )
    _sync_discrepancy(ae, user=user)


def assessments(subject: Subject, kind: str) -> list:
    model = CrsAssessment if kind == "crs" else IcansAssessment
    return (
        db.session.execute(
            select(model).where(model.subject_id == subject.id).order_by(model.assessed_on.desc(), model.id.desc())
        )
        .scalars()
        .all()
    )


def refresh_treatment_emergent(subject: Subject, *, user: User) -> None:
    db.session.flush()
    db.session.refresh(subject, ["lymphodepletion_days", "infusions", "adverse_events"])
    first = first_lymphodepletion_date(subject)
    for ae in subject.adverse_events:
        value = rules.treatment_emergent(ae.onset_date, first)
        if ae.treatment_emergent != value:
            records.set_value(
                ae,
                "treatment_emergent",
                value,
                user=user,
                form=ae.FORM_NAME,
                reason="first lymphodepletion day recorded or changed",
            )


# --- the toxicity hold (PROTOCOL 5.2) and lab-based suggestions -----------------------------------------------------


def is_open(ae: AdverseEvent) -> bool:
    return ae.status != "deleted" and ae.end_date is None


def open_for_lockouts(subject: Subject) -> list[dict]:
    """The lockout checker's open_adverse_events: every AE not removed and without an end
    date (drafts included: an entered grade 3 holds the next infusion even before the
    form is complete), with its worst grade; `related` None (not assessed) counts as related."""
    out = []
    for ae in subject.adverse_events:
        if is_open(ae) and ae.grade is not None:
            out.append(
                {
                    "term": ae.term or ae.verbatim or "unspecified",
                    "grade": ae.grade,
                    "category": ae.category,
                    "related": ae.related,
                }
            )
    return out


def visit_labs(subject: Subject) -> list[dict]:
    ranges = rules.LAB_RANGES
    labs = []
    for visit in subject.visits:
        data = visit.data or {}
        when = data.get("visit_date")
        if not when:
            continue
        for lab, limits in ranges.items():
            value = data.get(lab)
            if value is None:
                continue
            labs.append(
                {
                    "visit_id": visit.id,
                    "visit_label": visit.label,
                    "date": date.fromisoformat(when),
                    "lab": lab,
                    "value": value,
                    "uln": limits.get("uln"),
                    "lln": limits.get("lln"),
                    "unit": limits.get("unit"),
                }
            )
    return labs


def lab_suggestions(subject: Subject) -> list[dict]:
    open_terms = {ae.term.lower() for ae in subject.adverse_events if is_open(ae) and ae.term}
    # A dismissal covers its lab at that grade and below, at every visit: the same finding
    # is not suggested again; a worse value (a higher grade) is.
    visit_ids = [v.id for v in subject.visits]
    dismissed = {
        (visit_id, d.lab, grade)
        for d in db.session.execute(
            select(LabSuggestionDismissal).where(LabSuggestionDismissal.subject_id == subject.id)
        ).scalars()
        for visit_id in visit_ids
        for grade in range(1, d.grade + 1)
    }
    return rules.lab_suggestions(visit_labs(subject), open_terms, dismissed)


@records.transaction()
def dismiss_suggestion(subject: Subject, *, visit_id: int, lab: str, grade: int, reason: str, user: User) -> None:
    suggestion = next(
        (s for s in lab_suggestions(subject) if s["visit_id"] == visit_id and s["lab"] == lab and s["grade"] == grade),
        None,
    )
    if suggestion is None:
        raise RecordError("That suggestion is no longer open.")
    if not (reason or "").strip():
        raise RecordError("Give the reason for dismissing the suggestion.")
    row = LabSuggestionDismissal(
        subject_id=subject.id,
        visit_id=visit_id,
        lab=lab,
        term=suggestion["term"],
        grade=grade,
        reason=reason.strip(),
        created_by_id=user.id,
    )
    db.session.add(row)
    db.session.flush()
    audit.append(
        "dismiss",
        user=user,
        form="lab_suggestion",
        form_id=row.id,
        field=lab,
        new=f"{suggestion['term']} grade {grade} ({suggestion['value']} {suggestion['unit'] or ''})".strip(),
        reason=reason.strip(),
        subject_id=subject.id,
        site_id=subject.site_id,
    )


# --- SAE lists ---------------------------------------------------------------------------------------------------


def sae_worklist(sites: Sites, now: datetime | None = None) -> list[dict]:
    """Serious AEs whose SAE report or SUSAR report is due, overdue or was late."""
    now = now or utcnow()
    stmt = (
        select(AdverseEvent)
        .where(AdverseEvent.serious.is_(True), AdverseEvent.status != "deleted", AdverseEvent.awareness_at.is_not(None))
        .options(joinedload(AdverseEvent.subject), joinedload(AdverseEvent.site))
        .order_by(AdverseEvent.sae_due_at)
    )
    stmt = scoped(stmt, AdverseEvent.site_id, sites)
    rows = []
    study = current_study()
    for ae in db.session.execute(stmt).scalars():
        clock = clocks(ae, now, study)
        rows.append({"ae": ae, "sae": clock["sae"], "susar": clock["susar"]})
    return rows
