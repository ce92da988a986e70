"""Scheduling, administration and follow-up of the NK-cell treatment (PROTOCOL 5,
issue 3). Rules come from the pure modules (lockouts, schedule, escalation); every
write goes through `records`."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import case, func, literal, select, union_all
from sqlalchemy.orm import contains_eager, joinedload, selectinload

from ..enrollment.models import Exposure, Subject
from ..extensions import db
from ..records import crf
from ..records import service as records
from ..records.service import InvalidForm, RecordError
from ..settings import current_study
from ..timeutil import site_date, site_today, utcnow
from . import escalation, lockouts, schedule
from .fields import DLT_FIELDS, INFUSION_FIELDS, LYMPHODEPLETION_FIELDS, VISIT_FIELDS, by_name
from .models import (Deviation, DltAssessment, EscalationReview, Infusion, InfusionJudgement, LymphodepletionDay,
                     Visit)

# PROTOCOL 5.2: before the first infusion the eligibility codes cannot be overridden.
ELIGIBILITY_CODES = frozenset({"washout_steroid", "washout_antitumor", "washout_radiotherapy", "washout_dli",
                               "washout_intrathecal", "washout_cell_therapy", "major_surgery", "vaccine"})
TREATMENT_STATUSES = ("enrolled", "on_treatment")
OVERRIDE_MEANING = "I authorise this infusion despite the lockouts listed, for the reason given"
DLT_MEANING = "I confirm this dose-limiting toxicity assessment"
REVIEW_MEANING = "I have reviewed the dose-escalation data and approve this decision"


class SchedulingRefused(RecordError):
    field = "proposed_date"

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result


# --- facts about a subject ---------------------------------------------------------------

def active_infusions(subject: Subject, exclude: Infusion | None = None) -> list[Infusion]:
    return [i for i in subject.infusions if i.state != "cancelled" and i is not exclude]


def first_infusion_date(subject: Subject) -> date | None:
    """The anchor of the schedule: infusion 1 (given or scheduled), else the planned
    first infusion date of the screening form."""
    infusions = active_infusions(subject)
    if infusions:
        return min(i.date for i in infusions)
    screening = subject.current_screening
    planned = (screening.data or {}).get("first_infusion_date") if screening else None
    return date.fromisoformat(planned) if planned else None


def lockout_exposures(subject: Subject, study=None) -> list[dict]:
    """The subject's exposure log as lockout input: categories of the washout table,
    with a last date (an undated entry cannot be judged: it is listed as missing data
    on the scheduling screen instead)."""
    study = study or current_study()
    out = []
    for e in subject.active_exposures:
        if e.category in study.exposure_categories and e.last_date is not None:
            out.append({"category": e.category, "name": e.name, "last_date": e.last_date,
                        "half_life_days": Decimal(e.half_life_days) if e.half_life_days else None,
                        "physiological_replacement": bool(e.physiological_replacement)})
    return out


def undated_exposures(subject: Subject, study=None) -> list[Exposure]:
    study = study or current_study()
    return [e for e in subject.active_exposures
            if e.category in study.exposure_categories and e.last_date is None
            and study.washout(e.category).blocks]


def open_adverse_events(subject: Subject) -> list[dict]:
    """PROTOCOL 5.2 toxicity hold input: the subject's open adverse events (issue 4)."""
    from ..adverse_events.service import open_for_lockouts

    return open_for_lockouts(subject)


def refresh_treatment_emergent(subject: Subject, *, user) -> None:
    """Treatment-emergent is computed from the first lymphodepletion day: when that day
    is recorded or corrected, the subject's AEs follow (audited)."""
    from ..adverse_events.service import refresh_treatment_emergent as refresh

    refresh(subject, user=user)


def lockout_case(subject: Subject, proposed: date, exclude: Infusion | None = None, study=None) -> dict:
    """The lockout checker's case. A new infusion is judged after every other infusion
    (PROTOCOL 5.2); a rescheduled one after the infusions that stay before it, its later
    neighbours being checked separately (`_later_neighbours`)."""
    dates = [i.date for i in active_infusions(subject, exclude)]
    if exclude is not None:
        dates = [d for d in dates if d < proposed]
    return {"proposed_date": proposed, "infusion_dates": dates,
            "exposures": lockout_exposures(subject, study), "open_adverse_events": open_adverse_events(subject)}


def _later_neighbours(subject: Subject, proposed: date, exclude: Infusion, study) -> dict | None:
    """Moving an infusion must keep the minimum interval to the infusions after it too."""
    gap = study.regimen.min_interval_days
    close = [i.date for i in active_infusions(subject, exclude) if i.date >= proposed
             and (i.date - proposed).days < gap]
    if not close:
        return None
    return {"code": "min_interval", "until": None,
            "reason": f"the next infusion is on {min(close).isoformat()}: infusions must be at least {gap} days "
                      "apart (move or cancel that infusion first)"}


def first_infusions_of_level(level: str, session=None, earliest: int | None = None) -> dict[int, date]:
    """PROTOCOL 5.3: each subject of a dose level with a first infusion, and its date (the
    earliest infusion not cancelled, given or planned), in date order (ties: subject id).

    An infusion is recorded as given on its planned date (save_infusion refuses any other
    date: reschedule first), so the planned date is the date that counts for both. With
    `earliest`, only that many subjects: the sentinel stagger needs only the two earliest
    (the sentinel, and the sentinel of the others when a subject is the sentinel itself)."""
    session = session if session is not None else db.session
    first = func.min(Infusion.planned_date)
    stmt = (select(Infusion.subject_id, first).join(Subject, Subject.id == Infusion.subject_id)
            .where(Subject.dose_level == level, Infusion.state != "cancelled")
            .group_by(Infusion.subject_id).order_by(first, Infusion.subject_id))
    if earliest is not None:
        stmt = stmt.limit(earliest)
    return {subject_id: day for subject_id, day in session.execute(stmt)}


def stagger_lockout(subject: Subject, proposed: date, is_first: bool, study=None,
                    level_firsts: dict[int, date] | None = None) -> dict | None:
    """PROTOCOL 5.3 sentinel stagger (amended 2026-12-02), shown beside the lockouts as code
    `stagger`: the sentinel is the level's subject with the earliest first infusion; no other
    subject of the level may have a first infusion before the sentinel's + N days.
    `level_firsts` ({subject id: first infusion date} of the level) saves the query when
    many infusions are judged at once."""
    days = (study or current_study()).regimen.sentinel_stagger_days
    if not days or not is_first or not subject.dose_level:
        return None
    if level_firsts is None:
        level_firsts = first_infusions_of_level(subject.dose_level, earliest=2)
    others = [(day, sid) for sid, day in level_firsts.items() if sid != subject.id]
    held = escalation.sentinel_stagger(proposed, subject.id, others, days)
    if held is None:
        return None
    sentinel = db.session.get(Subject, held.sentinel_key)
    name = sentinel.label if sentinel is not None else f"subject {held.sentinel_key}"
    return {"code": "stagger", "until": held.until.isoformat(),
            "reason": f"Sentinel stagger: {name} is the sentinel of {subject.dose_level} (first infusion "
                      f"{held.sentinel_date.isoformat()}); other subjects of the level may have their first "
                      f"infusion from {held.until.isoformat()}, {days} days later."}


def evaluate_proposal(subject: Subject, proposed: date, exclude: Infusion | None = None,
                      with_earliest: bool = True, *, study=None,
                      level_firsts: dict[int, date] | None = None) -> dict:
    """The one judgement of an infusion date (PROTOCOL 5.2 lockouts + the 5.3 stagger):
    what the scheduling screen shows for a proposed date (a new infusion, or `exclude`
    moved to that date), and what is stored for every planned infusion (judgement.py).
    `study` is the definition to judge under (default: the one in force for the request)."""
    study = study or current_study()
    case = lockout_case(subject, proposed, exclude, study)
    result = lockouts.check(case, study=study)
    is_first = not case["infusion_dates"]
    blocks = list(result["lockouts"])
    if exclude is not None:
        later = _later_neighbours(subject, proposed, exclude, study)
        if later and not any(lo["code"] == "min_interval" for lo in blocks):
            blocks.append(later)
    stagger = stagger_lockout(subject, proposed, is_first, study, level_firsts)
    if stagger:
        blocks.append(stagger)
    # what scheduling this date would do to the level's other subjects: for the screen only
    effects = stagger_effects(subject, proposed, study, level_firsts) if with_earliest and is_first and not stagger \
        else []
    earliest = lockouts.earliest_clear_date(case, study=study) if with_earliest and blocks else (
        proposed if not blocks else None)
    if stagger and earliest is not None:
        earliest = max(earliest, date.fromisoformat(stagger["until"]))
    if exclude is not None and any(lo["until"] is None for lo in blocks):
        earliest = None
    number = exclude.number if exclude is not None else len(case["infusion_dates"]) + 1
    others = [i.date for i in active_infusions(subject, exclude)]
    anchor = min(others + [proposed]) if number != 1 else proposed
    deviation = (schedule.target_deviation(number, anchor, proposed, study)
                 if 1 < number <= study.regimen.infusion_count else None)
    latest = max(case["infusion_dates"], default=None)
    enrolled = site_date(subject.enrolled_at, subject.site) if subject.enrolled_at else None
    if enrolled and proposed < enrolled:
        blocks.insert(0, {"code": "before_enrolment", "until": enrolled.isoformat(),
                          "reason": f"the subject was enrolled on {enrolled.isoformat()}: an infusion cannot "
                                    "precede enrolment"})
    return {"proposed": proposed, "number": number, "is_first": is_first, "lockouts": blocks,
            "allowed": not blocks, "earliest": earliest, "target_deviation": deviation,
            "vaccination_window": result["vaccination_window"],
            "overridable": [lo["code"] for lo in blocks if _overridable(lo, is_first, proposed, latest)],
            "undated": undated_exposures(subject, study), "study_version": study.version,
            "stagger_effects": effects}


def stagger_effects(subject: Subject, proposed: date, study, level_firsts: dict[int, date] | None = None) -> list[str]:
    """A first infusion on `proposed` that would make this subject its level's sentinel holds
    the other subjects of the level whose first infusion falls inside the stagger: said
    before scheduling, since their planned infusions would then be locked (PROTOCOL 5.3)."""
    days = study.regimen.sentinel_stagger_days
    if not days or not subject.dose_level:
        return []
    if level_firsts is None:
        level_firsts = first_infusions_of_level(subject.dose_level)
    others = sorted((day, sid) for sid, day in level_firsts.items() if sid != subject.id)
    if not others or (proposed, subject.id) > others[0]:
        return []  # another subject stays the sentinel
    until = proposed + timedelta(days=days)
    held = [(day, sid) for day, sid in others if day < until]
    labels = {sid: label for sid, label in db.session.execute(
        select(Subject.id, func.coalesce(Subject.subject_number, Subject.screening_number))
        .where(Subject.id.in_([sid for _, sid in held])))} if held else {}
    return [f"{labels.get(sid, sid)} (first infusion {day.isoformat()})" for day, sid in held]


def _overridable(lockout: dict, is_first: bool, proposed: date, latest: date | None) -> bool:
    """PROTOCOL 5.2: before the first infusion the eligibility codes cannot be overridden.
    Neither can what is bad input rather than a judgement: a second infusion on the same
    day (or before the latest), more infusions than the protocol has, or an infusion before
    enrolment."""
    code = lockout["code"]
    if is_first and code in ELIGIBILITY_CODES:
        return False
    if code in ("max_infusions", "before_enrolment"):
        return False
    if code == "min_interval" and (lockout["until"] is None or (latest is not None and proposed <= latest)):
        return False
    return True


# --- scheduling ------------------------------------------------------------------------------

def _lock_subject(subject: Subject) -> None:
    """Serialise scheduling for one subject: two coordinators scheduling at once cannot
    both take infusion n; the second sees the first's infusion (a lockout or a conflict).
    On SQLite every write transaction is already exclusive (BEGIN IMMEDIATE)."""
    from .judgement import lock_levels

    lock_levels(db.session, [subject.dose_level])  # the stagger: see judgement.lock_levels
    records.lock(subject)
    db.session.expire(subject, ["infusions"])


def _require_treatment(subject: Subject) -> None:
    if subject.status not in TREATMENT_STATUSES:
        raise SchedulingRefused(f"Infusions are scheduled for enrolled subjects; this subject is "
                                f"{subject.status.replace('_', ' ')}.")


def _authorise(subject, evaluation, *, user, override_reason, password, record) -> object | None:
    """Lockouts block a date; an investigator may override the overridable ones with an
    e-signature and a reason (PROTOCOL 5.2). Returns the override signature or None."""
    if evaluation["allowed"]:
        return None
    from .lockouts import LOCKOUT_LABELS

    codes = [lo["code"] for lo in evaluation["lockouts"]]
    hard = [LOCKOUT_LABELS.get(c, c) for c in codes if c not in evaluation["overridable"]]
    labels = [LOCKOUT_LABELS.get(c, c) for c in codes]
    details = " " + " ".join(f"{LOCKOUT_LABELS.get(lo['code'], lo['code'])}: {lo['reason']}."
                             for lo in evaluation["lockouts"])
    if hard:
        raise SchedulingRefused("This date is locked out (" + ", ".join(hard) + ") and that cannot be overridden: "
                                "before the first infusion the eligibility washouts cannot be overridden, nor can "
                                "a second infusion on the same day, more infusions than the protocol has, or an "
                                "infusion before enrolment. Choose another date." + details, evaluation)
    if not override_reason or not password:
        raise SchedulingRefused("This date is locked out (" + ", ".join(labels) + "). An investigator can override "
                                "with a reason and an e-signature." + details, evaluation)
    from ..auth.policy import can

    if not can("sign_eligibility", user):
        raise SchedulingRefused("Only an investigator can override a lockout.", evaluation)
    signature = records.sign(record, user=user, password=password, meaning=OVERRIDE_MEANING)
    return signature


def _deviation(subject, *, kind, description, reason, user, form=None, form_id=None, signature=None):
    deviation = Deviation(subject_id=subject.id, kind=kind, description=description, reason=reason, form=form,
                          form_id=form_id, signature_id=signature.id if signature else None,
                          created_by_id=user.id, created_at=utcnow())
    records.create(deviation, user=user, form="deviation",
                   fields={"kind": kind, "description": description, "reason": reason})
    return deviation


def schedule_infusion(subject: Subject, proposed: date, *, user, deviation_reason: str | None = None,
                      override_reason: str | None = None, password: str | None = None) -> Infusion:
    _lock_subject(subject)
    _require_treatment(subject)
    evaluation = evaluate_proposal(subject, proposed)
    if evaluation["target_deviation"] and not (deviation_reason or "").strip():
        raise SchedulingRefused(evaluation["target_deviation"] + " Give a deviation reason.", evaluation)
    study = current_study()
    infusion = Infusion(subject_id=subject.id, number=evaluation["number"], planned_date=proposed, state="scheduled",
                        dose_level=subject.dose_level, status="draft", data={}, created_at=utcnow(),
                        updated_at=utcnow(), target_deviation_reason=(deviation_reason or "").strip() or None)
    if evaluation["number"] > study.regimen.infusion_count and evaluation["allowed"]:
        raise SchedulingRefused("Every protocol infusion is already scheduled or given.", evaluation)
    records.create(infusion, user=user, fields={"number": infusion.number, "planned_date": proposed,
                                                "dose_level": subject.dose_level})
    signature = _authorise(subject, evaluation, user=user, override_reason=override_reason, password=password,
                           record=infusion)
    _note_deviations(subject, infusion, evaluation, user=user, deviation_reason=deviation_reason,
                     override_reason=override_reason, signature=signature)
    if evaluation["is_first"]:
        anchor_schedule(subject, proposed, user=user)
    records.commit()
    return infusion


def covered(lockout_list: list[dict]) -> list[dict]:
    """What an override's signature covers: each lockout's code and reason as shown."""
    return [{"code": lo["code"], "reason": lo["reason"]} for lo in lockout_list]


def _note_deviations(subject, infusion, evaluation, *, user, deviation_reason, override_reason, signature):
    # the override covers exactly the lockouts it was signed for (judgement.py)
    infusion.override_lockouts = covered(evaluation["lockouts"]) if signature is not None else None
    if signature is not None:
        infusion.override_reason = override_reason.strip()
        infusion.override_signature_id = signature.id
        _deviation(subject, kind="lockout_override",
                   description=f"Infusion {infusion.number} on {infusion.planned_date.isoformat()} despite: " +
                               "; ".join(lo["reason"] for lo in evaluation["lockouts"]),
                   reason=override_reason.strip(), user=user, form="infusion", form_id=infusion.id,
                   signature=signature)
    if evaluation["target_deviation"]:
        _deviation(subject, kind="infusion_outside_target", description=evaluation["target_deviation"],
                   reason=deviation_reason.strip(), user=user, form="infusion", form_id=infusion.id)


def reschedule(infusion: Infusion, proposed: date, *, user, expected_version: int, reason: str,
               deviation_reason: str | None = None, override_reason: str | None = None,
               password: str | None = None) -> Infusion:
    subject = infusion.subject
    _lock_subject(subject)
    if infusion.state != "scheduled":
        raise SchedulingRefused(f"Infusion {infusion.number} is {infusion.state}: it cannot be rescheduled.")
    if infusion.version != expected_version:
        raise records.StaleVersion(infusion)
    if not (reason or "").strip():
        raise records.ReasonRequired()
    evaluation = evaluate_proposal(subject, proposed, exclude=infusion)
    if evaluation["number"] != infusion.number:
        evaluation["number"] = infusion.number
    if evaluation["target_deviation"] and not (deviation_reason or "").strip():
        raise SchedulingRefused(evaluation["target_deviation"] + " Give a deviation reason.", evaluation)
    signature = _authorise(subject, evaluation, user=user, override_reason=override_reason, password=password,
                           record=infusion)
    records.save(infusion, user=user, changes={"planned_date": proposed}, expected_version=expected_version,
                 reason=reason.strip(), commit=False)
    _note_deviations(subject, infusion, evaluation, user=user, deviation_reason=deviation_reason,
                     override_reason=override_reason, signature=signature)
    if infusion.number == 1:
        anchor_schedule(subject, proposed, user=user, reason=f"infusion 1 rescheduled: {reason.strip()}")
    records.commit_or_stale(infusion)
    return infusion


def cancel(infusion: Infusion, *, user, expected_version: int, reason: str) -> None:
    _lock_subject(infusion.subject)
    if infusion.state != "scheduled":
        raise SchedulingRefused(f"Infusion {infusion.number} is {infusion.state}: it cannot be cancelled.")
    if infusion.version != expected_version:
        raise records.StaleVersion(infusion)
    if not (reason or "").strip():
        raise records.ReasonRequired()
    records.save(infusion, user=user, changes={"state": "cancelled", "cancel_reason": reason.strip()},
                 expected_version=expected_version, reason=reason.strip())


# --- the visit schedule -------------------------------------------------------------------

def anchor_schedule(subject: Subject, first: date, *, user, reason: str | None = None) -> None:
    """Generate (or shift) the lymphodepletion days and the follow-up visits from the
    first infusion date (PROTOCOL 5.1). Done visits and completed forms keep their dates;
    every shift is audited."""
    study = current_study()
    existing = {v.code: v for v in subject.visits}
    for seq, item in enumerate(schedule.visit_plan(first, study), start=1):
        window = item["window"]
        visit = existing.get(item["code"])
        if visit is None:
            visit = Visit(subject_id=subject.id, code=item["code"], label=item["label"], seq=seq,
                          target_date=window.target, earliest=window.earliest, latest=window.latest,
                          state="planned", status="draft", data={}, created_at=utcnow(), updated_at=utcnow())
            records.create(visit, user=user, fields={"code": visit.code, "target_date": window.target})
        elif visit.state == "planned" and visit.target_date != window.target:
            records.set_value(visit, "target_date", window.target, user=user, form="visit",
                              reason=reason or "schedule re-anchored on the first infusion")
            visit.earliest, visit.latest = window.earliest, window.latest
    days = {d.day: d for d in subject.lymphodepletion_days}
    for item in schedule.lymphodepletion_plan(first, study):
        day = days.get(item["day"])
        if day is None:
            day = LymphodepletionDay(subject_id=subject.id, day=item["day"], planned_date=item["date"],
                                     status="draft", data={}, created_at=utcnow(), updated_at=utcnow())
            records.create(day, user=user, fields={"day": item["day"], "planned_date": item["date"]})
        elif day.status != "complete" and day.planned_date != item["date"]:
            records.set_value(day, "planned_date", item["date"], user=user, form="lymphodepletion",
                              reason=reason or "schedule re-anchored on the first infusion")


def vaccination_window(subject: Subject) -> tuple[date, date] | None:
    """The subject's no-vaccination window (PROTOCOL 5.2), from the first infusion
    (given, scheduled or planned) to 12 weeks after the last infusion of the plan."""
    first = first_infusion_date(subject)
    if first is None:
        return None
    regimen = current_study().regimen
    dates = [i.date for i in active_infusions(subject)]
    last = max(dates + [first + timedelta(days=regimen.infusion_days[-1])])
    return (first - timedelta(days=regimen.vaccine_days_before_first - 1),
            last + timedelta(days=regimen.vaccine_days_after_last))


def visit_status(visit: Visit, today: date) -> str:
    window = schedule.Window(visit.target_date, visit.earliest, visit.latest)
    return window.status(today, done=visit.state == "done", missed=visit.state == "missed")


# --- CRFs ------------------------------------------------------------------------------------

def _save_crf(record, specs, values, *, user, expected_version, reason, complete, required, checks=()):
    """Save a CRF: canonical values, cross-field checks, completion, one transaction."""
    values = crf.stored_values(by_name(specs), values)
    merged = {k: v for k, v in {**(record.data or {}), **values}.items() if v is not None}
    errors = {}
    for check in checks:
        errors.update(check(merged) or {})
    if complete:
        for name in required(merged):
            if merged.get(name) is None:
                errors.setdefault(name, "Required to complete the form.")
    if errors:
        raise InvalidForm(errors)
    changed = records.save(record, user=user, changes=values, expected_version=expected_version, reason=reason,
                           commit=False)
    if complete and record.status != "complete":
        records.set_status(record, "complete", user=user, commit=False)
    return changed


def _times_in_order(merged):
    if merged.get("start_time") and merged.get("stop_time") and merged["stop_time"] < merged["start_time"]:
        return {"stop_time": "The stop time cannot be before the start time."}
    return {}


ADMINISTRATION_OVERRIDE_MEANING = ("I authorise giving this infusion despite the lockouts listed, for the reason "
                                   "given")


def administration_gate(infusion: Infusion) -> dict:
    """The last gate (issue 11): the infusion judged afresh for its date at the moment its
    administration is recorded; `open` holds the lockouts no signed override covers."""
    from .judgement import mark_overrides

    evaluation = evaluate_proposal(infusion.subject, infusion.planned_date, exclude=infusion, with_earliest=False)
    marked = mark_overrides(evaluation["lockouts"], infusion.override_lockouts, evaluation["overridable"])
    return {**evaluation, "marked": marked, "open": [lo for lo in marked if not lo["overridden"]]}


def _gate_administration(infusion: Infusion, *, user, override_reason: str | None, password: str | None):
    """Refuse recording as given an infusion whose date is locked, unless an investigator
    overrides where PROTOCOL 5.2 allows it (reason + e-signature). Returns (gate, signature)."""
    from ..auth.policy import can
    from .lockouts import LOCKOUT_LABELS

    gate = administration_gate(infusion)
    if not gate["open"]:
        return gate, None
    text = "; ".join(f"{LOCKOUT_LABELS.get(lo['code'], lo['code'])}: {lo['reason']}"
                     + (f" (until {lo['until']})" if lo["until"] else "") for lo in gate["open"])
    hard = [lo for lo in gate["open"] if lo["code"] not in gate["overridable"]]
    if hard:
        raise InvalidForm({"administration_date": f"Infusion {infusion.number} cannot be given on "
                                                  f"{infusion.planned_date.isoformat()}: {text}. This lockout cannot "
                                                  "be overridden: reschedule the infusion."})
    locked = f"Infusion {infusion.number} is locked on {infusion.planned_date.isoformat()}: {text}."
    if not can("sign_eligibility", user):
        raise InvalidForm({"administration_date": locked + " Only an investigator can override this lockout, with a "
                                                           "reason and an e-signature."})
    if not (override_reason or "").strip():
        raise InvalidForm({"administration_date": locked,
                           "override_reason": "Give the reason for giving the infusion despite the lockout, and sign "
                                              "with your password."})
    if not password:
        raise InvalidForm({"override_password": "Sign the override: enter your password."})
    signature = records.sign(infusion, user=user, password=password, meaning=ADMINISTRATION_OVERRIDE_MEANING)
    return gate, signature


def save_infusion(infusion: Infusion, values: dict, *, user, expected_version: int, reason: str | None,
                  complete: bool, today: date, override_reason: str | None = None,
                  override_password: str | None = None) -> dict:
    subject = infusion.subject
    if infusion.state == "cancelled":
        raise SchedulingRefused("This infusion was cancelled.")
    study = current_study()
    gate = signature = None
    if complete and infusion.state == "scheduled":
        _lock_subject(subject)
        gate, signature = _gate_administration(infusion, user=user, override_reason=override_reason,
                                               password=override_password)

    def dates(merged):
        given = merged.get("administration_date")
        if given and date.fromisoformat(given) != infusion.planned_date:
            return {"administration_date": f"The infusion is scheduled for {infusion.planned_date.isoformat()}: "
                                           "reschedule it first, so the lockouts are checked for the new date."}
        if given and date.fromisoformat(given) > today:
            return {"administration_date": "An infusion cannot be recorded before it is given."}
        return {}

    def dose(merged):
        planned, actual = merged.get("planned_cells"), merged.get("actual_cells")
        if planned and actual and schedule.dose_deviation(planned, actual, study.regimen.dose_tolerance_percent) \
                and not merged.get("dose_deviation_reason"):
            return {"dose_deviation_reason": f"The dose given differs from the planned dose by more than "
                                             f"{study.regimen.dose_tolerance_percent}%: give a deviation reason."}
        return {}

    def required(merged):
        names = ["administration_date", "start_time", "stop_time", "product_lot", "viability_percent", "weight_kg",
                 "planned_cells", "actual_cells", "infusion_reaction"]
        names += [f"{p}_{v}" for p in ("pre", "post") for v in ("temp_c", "hr", "sbp", "dbp", "spo2")]
        if merged.get("infusion_reaction"):
            names.append("reaction_description")
        return names

    was_complete = infusion.status == "complete"
    changed = _save_crf(infusion, INFUSION_FIELDS, values, user=user, expected_version=expected_version,
                        reason=reason, complete=complete, required=required, checks=(dates, _times_in_order, dose))
    if infusion.status == "complete" and not was_complete:
        records.set_value(infusion, "state", "given", user=user, form="infusion")
        data = infusion.data
        if schedule.dose_deviation(data["planned_cells"], data["actual_cells"], study.regimen.dose_tolerance_percent):
            _deviation(subject, kind="dose_outside_tolerance",
                       description=f"Infusion {infusion.number}: {data['actual_cells']} cells given for a planned "
                                   f"{data['planned_cells']}", reason=data["dose_deviation_reason"], user=user,
                       form="infusion", form_id=infusion.id)
        if signature is not None:
            infusion.override_lockouts = covered(gate["lockouts"])
            infusion.override_reason = override_reason.strip()
            infusion.override_signature_id = signature.id
            _deviation(subject, kind="lockout_override",
                       description=f"Infusion {infusion.number} given on {infusion.planned_date.isoformat()} despite: "
                                   + "; ".join(lo["reason"] for lo in gate["open"]),
                       reason=override_reason.strip(), user=user, form="infusion", form_id=infusion.id,
                       signature=signature)
        _advance_status(subject, user=user)
        refresh_treatment_emergent(subject, user=user)
    records.commit_or_stale(infusion)
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
        records.set_status(subject, "on_treatment", user=user, form="subject", commit=False,
                           reason="first infusion given")
    if len(given) >= current_study().regimen.infusion_count and subject.status == "on_treatment":
        records.set_status(subject, "follow_up", user=user, form="subject", commit=False,
                           reason="all protocol infusions given")


def save_lymphodepletion(day: LymphodepletionDay, values: dict, *, user, expected_version: int,
                         reason: str | None, complete: bool, today: date) -> dict:
    def bsa(merged):
        if merged.get("height_cm") and merged.get("weight_kg"):
            try:
                schedule.bsa_mosteller(Decimal(merged["height_cm"]), Decimal(merged["weight_kg"]))
            except ValueError as error:
                return {"height_cm": str(error)}
        return {}

    def required(merged):
        return [s.name for s in LYMPHODEPLETION_FIELDS]

    changed = _save_crf(day, LYMPHODEPLETION_FIELDS, values, user=user, expected_version=expected_version,
                        reason=reason, complete=complete, required=required, checks=(bsa, _times_in_order))
    data = day.data or {}
    if data.get("height_cm") and data.get("weight_kg"):
        value = format(schedule.bsa_mosteller(Decimal(data["height_cm"]), Decimal(data["weight_kg"])), "f")
        if data.get("bsa_m2") != value:  # computed, never typed (Mosteller)
            records.save(day, user=user, changes={"bsa_m2": value}, expected_version=day.version,
                         reason=reason or "BSA computed from height and weight", commit=False)
    if "administration_date" in changed:
        refresh_treatment_emergent(day.subject, user=user)
    records.commit_or_stale(day)
    return changed


def expected_doses(day: LymphodepletionDay) -> dict[str, Decimal]:
    """mg expected from each drug's mg/m² dose and the computed BSA."""
    data = day.data or {}
    if not data.get("bsa_m2"):
        return {}
    bsa = Decimal(data["bsa_m2"])
    out = {}
    for drug in ("fludarabine", "cyclophosphamide"):
        if data.get(f"{drug}_mg_m2"):
            out[drug] = (Decimal(data[f"{drug}_mg_m2"]) * bsa).quantize(Decimal("0.1"))
    return out


def save_visit(visit: Visit, values: dict, *, user, expected_version: int, reason: str | None, complete: bool,
               consent: date | None) -> dict:
    def dates(merged):
        if merged.get("visit_date") and consent and date.fromisoformat(merged["visit_date"]) < consent:
            return {"visit_date": f"A visit cannot be before the informed consent ({consent.isoformat()})."}
        return {}

    def required(merged):
        return ["visit_date", "ecog", "response"]

    was_complete = visit.status == "complete"
    changed = _save_crf(visit, VISIT_FIELDS, values, user=user, expected_version=expected_version, reason=reason,
                        complete=complete, required=required, checks=(dates,))
    if visit.status == "complete" and not was_complete:
        records.set_value(visit, "state", "done", user=user, form="visit")
    records.commit_or_stale(visit)
    return changed


def mark_missed(visit: Visit, *, user, expected_version: int, reason: str) -> None:
    if visit.state != "planned":
        raise RecordError(f"The visit is {visit.state}.")
    if not (reason or "").strip():
        raise records.ReasonRequired()
    records.save(visit, user=user, changes={"state": "missed", "missed_reason": reason.strip()},
                 expected_version=expected_version, reason=reason.strip())


def dlt_window_end(subject: Subject) -> date | None:
    given = [i.date for i in subject.infusions if i.state == "given"]
    if not given:
        return None
    return min(given) + timedelta(days=current_study().regimen.dlt_window_days)


def dlt_form(subject: Subject, *, user) -> DltAssessment:
    """The subject's DLT assessment, created (uncommitted) at its first save."""
    if subject.dlt_assessment is not None:
        return subject.dlt_assessment
    form = DltAssessment(subject_id=subject.id, status="draft", data={}, created_at=utcnow(), updated_at=utcnow())
    records.create(form, user=user, fields={})
    return form


def save_dlt(form: DltAssessment, values: dict, *, user, expected_version: int, reason: str | None,
             complete: bool, password: str | None, today: date | None = None, window_end: date | None = None) -> dict:
    """The DLT assessment; completing it is the investigator's e-signature."""
    def consistent(merged):
        errors = {}
        # PROTOCOL 5.3: evaluable = completed the DLT window or had a DLT. Signing a subject
        # evaluable without DLT before the window ends would count toward escalation too early.
        if complete and merged.get("evaluable") and not merged.get("dlt") and today and window_end \
                and today < window_end:
            errors["evaluable"] = (f"The DLT window ends on {window_end.isoformat()}: without a DLT the subject "
                                   "becomes evaluable once the window is completed.")
        if merged.get("dlt") and merged.get("evaluable") is False:
            errors["evaluable"] = "A subject with a DLT is evaluable (PROTOCOL 5.3)."
        if merged.get("evaluable") is False and not merged.get("evaluable_reason"):
            errors["evaluable_reason"] = "Give the reason the subject is not evaluable."
        if merged.get("dlt") and not merged.get("dlt_description"):
            errors["dlt_description"] = "Describe the DLT."
        return errors

    def required(merged):
        return ["evaluable", "dlt"]

    if complete and not password:
        raise InvalidForm({"password": "The investigator signs the DLT assessment: enter your password."})
    changed = _save_crf(form, DLT_FIELDS, values, user=user, expected_version=expected_version, reason=reason,
                        complete=complete, required=required, checks=(consistent,))
    if complete:
        records.sign(form, user=user, password=password, meaning=DLT_MEANING)
    records.commit_or_stale(form)
    return changed


# --- vaccines ------------------------------------------------------------------------------

def record_vaccine(subject: Subject, values: dict, *, user, deviation_reason: str | None = None,
                   password: str | None = None) -> Exposure:
    """A vaccine on the exposure log. Inside the no-vaccination window it is a protocol
    deviation: allowed only with a reason and an investigator's e-signature (PROTOCOL 5.2)."""
    from ..auth.policy import can
    from ..enrollment import service as enrollment

    given = values.get("last_date")
    window = vaccination_window(subject)
    inside = window is not None and given is not None and window[0] <= given <= window[1]
    if inside:
        if not (deviation_reason or "").strip():
            raise InvalidForm({"deviation_reason": f"{given.isoformat()} is inside the no-vaccination window "
                                                   f"({window[0].isoformat()} to {window[1].isoformat()}): give a "
                                                   "protocol-deviation reason."})
        if not can("sign_eligibility", user):
            raise InvalidForm({"password": "A vaccine inside the no-vaccination window needs an investigator's "
                                           "e-signature: ask the investigator to record it."})
        if not password:
            raise InvalidForm({"password": "Sign the deviation: enter your password."})
    exposure = enrollment.add_exposure(subject, {**values, "category": "vaccine"}, user=user, commit=False)
    if inside:
        signature = records.sign(exposure, user=user, password=password,
                                 meaning="I confirm this vaccination inside the no-vaccination window as a protocol "
                                         "deviation")
        _deviation(subject, kind="vaccine_in_window",
                   description=f"{values.get('name')} given {given.isoformat()}, inside the no-vaccination window "
                               f"{window[0].isoformat()} to {window[1].isoformat()}",
                   reason=deviation_reason.strip(), user=user, form="exposure", form_id=exposure.id,
                   signature=signature)
    records.commit()
    return exposure


# --- dose escalation --------------------------------------------------------------------------

def escalation_counts() -> list[dict]:
    """Per dose level (study-wide): assigned, evaluable, DLT, pending, from the DLT forms
    (a subject with a DLT is evaluable at once)."""
    study = current_study()
    # every assigned subject with its DLT form and infusions in three queries, not per subject
    subjects = db.session.execute(select(Subject).where(Subject.dose_level.is_not(None)).options(
        selectinload(Subject.dlt_assessment), selectinload(Subject.infusions))).scalars().all()
    levels = {lv.name: {"level": lv.name, "evaluable": 0, "dlt": 0, "pending": 0, "assigned": 0, "not_evaluable": 0,
                        "subjects": []} for lv in study.regimen.dose_levels}
    for subject in subjects:
        row = levels.get(subject.dose_level)
        if row is None:
            continue
        data = (subject.dlt_assessment.data or {}) if subject.dlt_assessment else {}
        signed = subject.dlt_assessment is not None and subject.dlt_assessment.status == "complete"
        row["assigned"] += 1
        if data.get("dlt") and signed:
            row["dlt"] += 1
            row["evaluable"] += 1
            state = "DLT"
        elif signed and data.get("evaluable"):
            row["evaluable"] += 1
            state = "evaluable"
        elif signed and data.get("evaluable") is False:
            row["not_evaluable"] += 1
            state = "not evaluable"
        else:
            row["pending"] += 1
            state = "pending"
        row["subjects"].append({"subject": subject, "state": state, "window_end": dlt_window_end(subject)})
    return list(levels.values())


def escalation_decision() -> dict:
    counts = escalation_counts()
    return escalation.decide([{k: row[k] for k in ("level", "evaluable", "dlt", "pending")} for row in counts])


def latest_review() -> EscalationReview | None:
    return db.session.execute(select(EscalationReview).order_by(EscalationReview.id.desc()).limit(1)).scalar()


def proposed_dose_level() -> tuple[str | None, str]:
    """The dose level enrolment proposes, and why (PROTOCOL 5.3). An escalation opens
    the next level only after the investigator has signed the review of that decision."""
    decision = escalation_decision()
    if decision["decision"] == "enrol":
        return decision["level"], decision["reason"]
    if decision["decision"] == "escalate":
        review = latest_review()
        if review and review.decision == "escalate" and review.level == decision["level"]:
            return decision["level"], decision["reason"] + " (review signed)"
        return None, decision["reason"] + ": the next level opens when the dose-escalation review is signed"
    return None, decision["reason"]


def sign_review(*, user, password: str, comment: str | None) -> EscalationReview:
    decision = escalation_decision()
    counts = [{k: row[k] for k in ("level", "evaluable", "dlt", "pending")} for row in escalation_counts()]
    review = EscalationReview(decision=decision["decision"], level=decision["level"] or decision["mtd"],
                              counts=counts, reason=decision["reason"], comment=(comment or "").strip() or None,
                              created_at=utcnow())
    db.session.add(review)
    db.session.flush()
    signature = records.sign(review, user=user, password=password, meaning=REVIEW_MEANING)
    review.signature_id = signature.id
    records.commit()
    return review


class DoseLevelRefused(RecordError):
    field = "dose_level"


def check_dose_level(level: str | None, reason: str | None) -> None:
    """Before anything is written: a known level, and a reason when it is not the proposed one."""
    names = [lv.name for lv in current_study().regimen.dose_levels]
    if level not in names:
        raise DoseLevelRefused("Choose the subject's dose level.")
    proposed, why = proposed_dose_level()
    if level != proposed and not (reason or "").strip():
        raise DoseLevelRefused(f"The proposed dose level is {proposed or 'none'} ({why}): "
                               f"give a reason for assigning {level}.")


def assign_dose_level(subject: Subject, level: str | None, reason: str | None, *, user) -> None:
    """At enrolment: the investigator's dose level; one other than proposed needs a reason
    and is listed as a deviation (PROTOCOL 5.3). Called inside the enrolment transaction,
    after check_dose_level."""
    proposed, why = proposed_dose_level()
    records.set_value(subject, "dose_level", level, user=user, form="subject",
                      reason=None if level == proposed else reason.strip())
    if level != proposed:
        _deviation(subject, kind="dose_level_assignment",
                   description=f"Assigned {level}; the escalation rule proposed {proposed or 'no level'} ({why}).",
                   reason=reason.strip(), user=user, form="subject", form_id=subject.id)


def on_enrolled(subject: Subject, *, user) -> None:
    """Generate the schedule at enrolment from the planned first infusion date."""
    first = first_infusion_date(subject)
    if first is not None:
        anchor_schedule(subject, first, user=user)


# --- lists across sites ------------------------------------------------------------------------

CALENDAR_PAGE = 50


def calendar(site_ids: list[int] | None, start: date, days: int = 28, page: int = 1,
             per_page: int = CALENDAR_PAGE) -> dict:
    """Infusions and visits in [start, start + days) across the sites, a page at a time,
    ordered in the database; the infusions' lockouts are their stored judgements."""
    end = start + timedelta(days=days)
    visit_day = case((Visit.target_date < start, start), else_=Visit.target_date)
    infusions = (select(Infusion.id.label("id"), Infusion.planned_date.label("day"), literal(0).label("kind"))
                 .join(Subject, Subject.id == Infusion.subject_id)
                 .where(Infusion.state == "scheduled", Infusion.planned_date >= start, Infusion.planned_date < end))
    visits = (select(Visit.id.label("id"), visit_day.label("day"), literal(1).label("kind"))
              .join(Subject, Subject.id == Visit.subject_id)
              .where(Visit.state == "planned", Visit.latest >= start, Visit.target_date < end))
    if site_ids is not None:
        infusions = infusions.where(Subject.site_id.in_(site_ids))
        visits = visits.where(Subject.site_id.in_(site_ids))
    both = union_all(infusions, visits).subquery()
    total = db.session.execute(select(func.count()).select_from(both)).scalar()
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    rows = db.session.execute(select(both.c.id, both.c.day, both.c.kind)
                              .order_by(both.c.day, both.c.kind, both.c.id)
                              .limit(per_page).offset((page - 1) * per_page)).all()
    inf_ids = [r.id for r in rows if r.kind == 0]
    visit_ids = [r.id for r in rows if r.kind == 1]
    # one query per kind, the subjects with what the lockouts need: no query per row
    loaded_infusions = {i.id: i for i in db.session.execute(
        select(Infusion).where(Infusion.id.in_(inf_ids))
        .options(joinedload(Infusion.subject).joinedload(Subject.site))).scalars()} if inf_ids else {}
    loaded_visits = {v.id: v for v in db.session.execute(
        select(Visit).where(Visit.id.in_(visit_ids))
        .options(joinedload(Visit.subject).joinedload(Subject.site))).scalars()} if visit_ids else {}
    items = []
    for row in rows:
        if row.kind == 0:
            infusion = loaded_infusions[row.id]
            judgement = infusion.judgement  # stored, kept current (judgement.py): never recomputed per row
            items.append({"date": infusion.planned_date, "kind": "infusion", "subject": infusion.subject,
                          "label": f"Infusion {infusion.number}", "record": infusion, "judgement": judgement,
                          "warnings": judgement.lockouts if judgement else [],
                          "locked": bool(judgement and judgement.locked),
                          "overridden": bool(infusion.override_signature_id)})
        else:
            visit = loaded_visits[row.id]
            items.append({"date": max(visit.target_date, start), "kind": "visit", "subject": visit.subject,
                          "label": f"Visit {visit.label}", "record": visit, "warnings": [],
                          "window": (visit.earliest, visit.latest)})
    return {"items": items, "total": total, "page": page, "pages": pages}


def overdue(site_ids: list[int] | None, today: date) -> dict:
    """Visits past their window with nothing recorded, and forms still missing."""
    with_subject = (contains_eager(Visit.subject).joinedload(Subject.site),)
    vstmt = select(Visit).join(Subject).options(*with_subject).where(Visit.state == "planned", Visit.latest < today)
    istmt = select(Infusion).join(Subject).options(contains_eager(Infusion.subject).joinedload(Subject.site)).where(
        Infusion.state == "scheduled", Infusion.planned_date < today)
    dstmt = select(Visit).join(Subject).options(*with_subject).where(Visit.state == "done",
                                                                      Visit.status != "complete")
    if site_ids is not None:
        vstmt, istmt, dstmt = (s.where(Subject.site_id.in_(site_ids)) for s in (vstmt, istmt, dstmt))
    return {"visits": db.session.execute(vstmt.order_by(Visit.latest)).scalars().all(),
            "infusions": db.session.execute(istmt.order_by(Infusion.planned_date)).scalars().all(),
            "forms": db.session.execute(dstmt).scalars().all()}


def locked_planned(site_ids: list[int] | None) -> list[InfusionJudgement]:
    """Planned infusions now locked (issue 11): their stored judgements, soonest first."""
    stmt = (select(InfusionJudgement).where(InfusionJudgement.locked.is_(True))
            .options(joinedload(InfusionJudgement.subject).joinedload(Subject.site),
                     joinedload(InfusionJudgement.infusion))
            .order_by(InfusionJudgement.planned_date, InfusionJudgement.infusion_id))
    if site_ids is not None:
        stmt = stmt.where(InfusionJudgement.site_id.in_(site_ids))
    return db.session.execute(stmt).scalars().all()


def deviations(site_ids: list[int] | None) -> list[Deviation]:
    stmt = select(Deviation).join(Subject).order_by(Deviation.id.desc()).options(
        contains_eager(Deviation.subject).joinedload(Subject.site), joinedload(Deviation.signature))
    if site_ids is not None:
        stmt = stmt.where(Subject.site_id.in_(site_ids))
    return db.session.execute(stmt).scalars().all()


def subject_today(subject: Subject) -> date:
    return site_today(subject.site)


# --- public wrappers for other features ------------------------------------------------------------

def record_deviation(subject: Subject, *, kind: str, description: str, reason: str, user, form: str | None = None,
                     form_id: int | None = None, signature=None) -> Deviation:
    """A protocol deviation recorded by another feature (issue 11: enrollment/reconfirm.py), the
    same row and audit as this module's own (`_deviation`); not committed."""
    return _deviation(subject, kind=kind, description=description, reason=reason, user=user, form=form,
                      form_id=form_id, signature=signature)
