"""Monitoring writes (issue 6): queries and their thread, SDV marks, form and casebook
signatures, locks; and the hooks the one write path (records/service.py) calls on every
create, save and status change: the lock check, SDV clearing, edit-check queries,
casebook signature invalidation and the query link of a correction.

Every write here is audited through records/audit.py; each public action is one
records.transaction() (or joins its caller's)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, event, select
from sqlalchemy.orm import Session

from ..auth.models import User
from ..auth.policy import ALL_SITES, Sites, scoped, within
from ..extensions import db
from ..records import audit
from ..records import queries as queries_
from ..records import service as records
from ..records.formrecord import ClinicalRecord
from ..records.models import Query, Signature
from ..records.service import RecordError
from ..timeutil import fmt_utc, utcnow
from . import catalog, rules, state
from .models import DataLock, SdvMark
from ..enrollment.models import Subject
from ..adverse_events.rules import LAB_RANGES
from ..settings import current_study
from ..adverse_events.models import CrsAssessment, IcansAssessment

if TYPE_CHECKING:
    from ..infusions.models import Visit
    from ..records.formrecord import FormRecord

MAX_TEXT = 2000
FORM_SIGN_MEANING = "I approve the data recorded on this form"
CASEBOOK_MEANING = "I approve this casebook"


class Locked(RecordError):
    """A write refused because the data is locked (PROTOCOL 7)."""

    def __init__(self, lock: DataLock):
        where = {"study": "The whole study", "subject": "This subject's data", "form": "This form"}[lock.scope]
        by = lock.locked_by.full_name if lock.locked_by else "the data manager"
        super().__init__(
            f"{where} was locked by {by} at {fmt_utc(lock.locked_at)}"
            f"{': ' + lock.reason if lock.reason else ''}. Locked data cannot be changed; "
            "a data manager must unlock it (with a reason) first. Nothing was saved."
        )
        self.lock = lock


def _scope(subject_id, site_id) -> dict:
    return {"subject_id": subject_id, "site_id": site_id}


def _record_scope(record) -> dict:
    subject = getattr(record, "subject", None)
    if subject is None and type(record).__name__ == "Subject":
        subject = record
    if subject is None and getattr(record, "subject_id", None) is not None:
        subject = db.session.get(Subject, record.subject_id)
    return _scope(subject.id if subject else None, subject.site_id if subject else None)


def _text(value, what: str, required: bool = True) -> str | None:
    value = (value or "").strip()
    if not value:
        if required:
            raise RecordError(f"{what}: write a text.")
        return None
    if len(value) > MAX_TEXT:
        raise RecordError(f"{what}: at most {MAX_TEXT} characters.")
    return value


# --- hooks of the one write path -------------------------------------------------------------------


def form_of(record: Any) -> str | None:
    name = getattr(record, "FORM_NAME", None)
    return name if catalog.get(name) else None


def check_writable(record: Any) -> None:
    """Refuse any write to a record under a study, subject or form lock."""
    subject_id = record.id if type(record).__name__ == "Subject" else getattr(record, "subject_id", None)
    form = form_of(record)
    lock = state.lock_in_force(form, getattr(record, "id", None), subject_id)
    if lock is not None:
        raise Locked(lock)


def link_queries(
    record: Any, changed: dict[str, tuple[Any, Any]], reason: str | None
) -> tuple[str | None, list[Query]]:
    """The reason for a correction of fields under an unresolved manual query, carrying the
    link "[query #N]" (hashed with the audit record), and the queries it answers."""
    form = form_of(record)
    if not form or record.id is None or not changed:
        return reason, []
    queries = (
        db.session.execute(
            select(Query)
            .where(
                Query.form == form,
                Query.form_id == record.id,
                Query.state.in_(rules.UNRESOLVED),
                Query.origin == "manual",
                Query.field.in_(list(changed)),
            )
            .order_by(Query.id)
        )
        .scalars()
        .all()
    )
    if not queries:
        return reason, []
    links = " ".join(f"[query #{q.id}]" for q in queries)
    return (f"{reason} {links}" if reason else f"Correction for {links}"), queries


def after_write(
    record: Any,
    *,
    user: User | None,
    changed: dict[str, tuple[Any, Any]],
    reason: str | None,
    created: bool = False,
    answered: Sequence[Query] = (),
) -> None:
    """After a create or save of a form: clear SDV of changed fields, answer the linked
    queries, open/close edit-check queries, invalidate the subject's casebook signature."""
    form = form_of(record)
    if not form or record.id is None:
        return
    scope = _record_scope(record)
    if not created:
        _clear_sdv(record, form, changed, user=user, scope=scope)
    for query in answered:
        old, new = changed[query.field]
        note = (
            f"Corrected {catalog.get(form).label_of(query.field)}: {audit.to_text(old) or '—'} → "
            f"{audit.to_text(new) or '—'}. Reason: {reason}"
        )
        queries_.transition(query, "answer", user=user, text=note)
    _edit_checks(record, form, changed, user=user, scope=scope)
    invalidate_casebook(scope["subject_id"], user=user, reason=f"{catalog.label(form)} changed")


def after_status(record: Any, *, user: User | None, reason: str | None) -> None:
    form = form_of(record)
    if form and record.id is not None:
        scope = _record_scope(record)
        invalidate_casebook(scope["subject_id"], user=user, reason=f"{catalog.label(form)} status changed")


def _clear_sdv(record, form: str, changed: dict, *, user, scope) -> None:
    if not changed:
        return
    marks = (
        db.session.execute(
            select(SdvMark).where(
                SdvMark.form == form,
                SdvMark.form_id == record.id,
                SdvMark.cleared_at.is_(None),
                SdvMark.field.in_(list(changed)),
            )
        )
        .scalars()
        .all()
    )
    for mark in marks:
        old, new = changed[mark.field]
        mark.cleared_at = utcnow()
        mark.cleared_reason = f"value changed from {audit.to_text(old) or '—'} to {audit.to_text(new) or '—'}"
        audit.append(
            "sdv_clear",
            user=user,
            form=form,
            form_id=record.id,
            field=mark.field,
            old="verified",
            new="not verified",
            reason=f"SDV cleared: {mark.cleared_reason}",
            **scope,
        )


def _edit_check_context(record, form: str) -> dict:
    if form != "visit":
        return {}

    return {"earliest": record.earliest, "latest": record.latest, "alt_uln": LAB_RANGES["alt"]["uln"]}


def _edit_checks(record, form: str, changed: dict, *, user, scope) -> None:
    fields = {"weight_kg", "alt", "alt_uln", "qtc_ms", "visit_date"}
    touched = fields & set(changed)
    if not touched:
        return
    values = {name: record.get_field(name) for name in fields}
    findings = rules.edit_checks(form, values, current_study().edit_checks, _edit_check_context(record, form))
    # alt_uln changes re-check alt
    touched = touched | ({"alt"} if "alt_uln" in touched else set())
    existing = (
        db.session.execute(
            select(Query).where(
                Query.form == form,
                Query.form_id == record.id,
                Query.origin == "system",
                Query.rule.is_not(None),
                Query.state.in_(rules.UNRESOLVED),
            )
        )
        .scalars()
        .all()
    )
    open_keys = {(q.field, q.rule) for q in existing}
    for query in existing:
        if query.field in touched and (query.field, query.rule) not in findings:
            value = audit.to_text(record.get_field(query.field)) or "—"
            queries_.transition(
                query, "close", user=None, text=f"Closed by the system: the value was corrected (now {value})."
            )
    for (field, rule), message in findings.items():
        if field in touched and (field, rule) not in open_keys:
            queries_.new_query(
                site_id=scope["site_id"],
                subject_id=scope["subject_id"],
                form=form,
                form_id=record.id,
                field=field,
                text=f"Edit check: {message}",
                rule=rule,
            )


def invalidate_casebook(subject_id: int | None, *, user: User | None, reason: str) -> None:
    if subject_id is None:
        return
    signatures = (
        db.session.execute(
            select(Signature).where(
                Signature.form == "casebook", Signature.form_id == subject_id, Signature.valid.is_(True)
            )
        )
        .scalars()
        .all()
    )
    for signature in signatures:
        signature.valid = False
        signature.invalidated_at = utcnow()
        signature.invalidated_reason = reason

        subject = db.session.get(Subject, subject_id)
        audit.append(
            "unsign",
            user=user,
            form="casebook",
            form_id=subject_id,
            field="signature",
            old=f"{signature.printed_name}: {signature.meaning}",
            reason=reason,
            **_scope(subject_id, subject.site_id if subject else None),
        )


# --- the lock guard: every flush of clinical data --------------------------------------------------


def _clinical_subject_id(obj):
    """(whether a lock protects the row, its subject): the rows marked ClinicalRecord."""
    if not isinstance(obj, ClinicalRecord):
        return False, None
    return True, obj.locked_subject_id()


@event.listens_for(Session, "before_flush")
def _refuse_locked(session: Session, flush_context, instances) -> None:
    """Belt and braces behind records.service: no clinical row of a locked subject (or of
    a locked study, or a locked form) reaches the database, whatever code path wrote it."""
    if session.info.get("cellstudy_no_lock_guard"):
        return
    with session.no_autoflush:
        _guard(session)


def _guard(session: Session) -> None:
    touched = []
    for obj in list(session.new) + list(session.dirty) + list(session.deleted):
        clinical, subject_id = _clinical_subject_id(obj)
        if not clinical:
            continue
        if obj in session.dirty and not session.is_modified(obj, include_collections=False):
            continue
        touched.append((obj, subject_id))
    if not touched:
        return
    any_lock = session.execute(select(DataLock.id).where(DataLock.unlocked_at.is_(None)).limit(1)).scalar()
    if any_lock is None:
        return
    for obj, subject_id in touched:
        form = form_of(obj)
        lock = state.lock_in_force(form, getattr(obj, "id", None) if obj not in session.new else None, subject_id)
        if lock is not None:
            raise Locked(lock)


# --- queries ----------------------------------------------------------------------------------------


def _check_target(subject, form: str, form_id: int | None, field: str | None):
    ft = catalog.get(form)
    if ft is None:
        raise RecordError(f"form: unknown form type {form!r}.")
    record = None
    if form_id is not None:
        record = db.session.get(ft.model, form_id)
        if record is None or record.subject_id != subject.id:
            raise RecordError(f"form: no {ft.label.lower()} #{form_id} for this subject.")
    if field is not None and field not in ft.field_names:
        raise RecordError(f"field: the {ft.label.lower()} has no field {field!r}.")
    return record


@records.transaction()
def open_query(
    subject: Subject,
    *,
    user: User,
    form: str,
    form_id: int | None,
    field: str | None,
    text: str,
    assignee_role: str = "coordinator",
    assignee: User | None = None,
) -> Query:
    """A monitor's or data manager's query on a field, a whole form, an empty field or a
    form not yet saved ("missing data": form_id None). Never deleted; cancel instead."""
    text = _text(text, "Query text")
    field = field or None
    _check_target(subject, form, form_id, field)
    if assignee_role not in ("coordinator", "investigator"):
        raise RecordError("assignee: a query is answered by a coordinator or an investigator.")
    if assignee is not None and assignee.role not in ("coordinator", "investigator"):
        raise RecordError("assignee: choose a coordinator or an investigator of the site.")
    return queries_.new_query(
        site_id=subject.site_id,
        subject_id=subject.id,
        form=form,
        form_id=form_id,
        field=field,
        text=text,
        user=user,
        assignee_role=assignee.role if assignee else assignee_role,
        assignee_id=assignee.id if assignee else None,
    )


@records.transaction()
def act(query: Query, action: str, *, user: User, text: str | None) -> None:
    """answer (site staff), close, reopen, cancel (monitor / data manager) with a reply.
    A close may be silent; the others need a text."""
    if action not in rules.ACTIONS:
        raise RecordError(f"Unknown action {action!r}.")
    required = action != "close"
    text = _text(text, "Reply", required=required) or "Closed."
    try:
        queries_.transition(query, action, user=user, text=text)
    except ValueError as error:
        raise RecordError(str(error)) from None


def queries(
    *,
    sites: Sites,
    state_filter: str | None = "unresolved",
    assignee_role: str | None = None,
    assignee_id: int | None = None,
    subject_id: int | None = None,
    form: str | None = None,
    site_id: int | None = None,
    order: str = "age",
    limit: int | None = None,
    offset: int = 0,
) -> Select:
    stmt = scoped(select(Query), Query.site_id, sites)
    if site_id is not None:
        stmt = stmt.where(Query.site_id == site_id)
    if state_filter == "unresolved":
        stmt = stmt.where(Query.state.in_(rules.UNRESOLVED))
    elif state_filter in rules.QUERY_STATES:
        stmt = stmt.where(Query.state == state_filter)
    if assignee_role:
        stmt = stmt.where(Query.assignee_role == assignee_role)
    if assignee_id:
        stmt = stmt.where(Query.assignee_id == assignee_id)
    if subject_id:
        stmt = stmt.where(Query.subject_id == subject_id)
    if form:
        stmt = stmt.where(Query.form == form)
    stmt = stmt.order_by(Query.created_at.asc(), Query.id) if order == "age" else stmt.order_by(Query.id.desc())
    if limit:
        stmt = stmt.limit(limit).offset(offset)
    return stmt


def waiting_for(user: User, sites: Sites) -> Select:
    """Queries waiting for site staff: open (not yet answered, or re-opened) at the user's
    sites, assigned to the user or to the user's role."""
    stmt = scoped(select(Query).where(Query.state == "open"), Query.site_id, sites)
    stmt = stmt.where(
        (Query.assignee_id == user.id)
        | (Query.assignee_id.is_(None) & ((Query.assignee_role == user.role) | Query.assignee_role.is_(None)))
    )
    return stmt.order_by(Query.created_at, Query.id)


# --- SDV ---------------------------------------------------------------------------------------------


@records.transaction()
def verify(record: FormRecord, *, user: User, fields: list[str] | None = None) -> list[str]:
    """Mark fields of a completed form verified against source (all the plan's fields when
    `fields` is None); one audit record per field. Returns the fields newly verified."""
    form = form_of(record)
    if form is None:
        raise RecordError("This record has no source data verification.")
    ft = catalog.get(form)
    if record.status != "complete":
        raise RecordError(f"Only a completed form can be verified: this {ft.label.lower()} is {record.status}.")
    plan, required = state.sdv_plan(form)
    if fields is None:
        if plan == "none":
            raise RecordError(f"The SDV plan does not require verifying {ft.label.lower()} forms.")
        fields = list(required)
    unknown = [f for f in fields if f not in ft.field_names]
    if unknown or not fields:
        raise RecordError(f"field: choose fields of the form (unknown: {', '.join(unknown) or 'none chosen'}).")
    done = set(
        db.session.execute(
            select(SdvMark.field).where(
                SdvMark.form == form, SdvMark.form_id == record.id, SdvMark.cleared_at.is_(None)
            )
        ).scalars()
    )
    scope = _record_scope(record)
    new = [f for f in dict.fromkeys(fields) if f not in done]
    now = utcnow()
    for field in new:
        db.session.add(
            SdvMark(
                form=form,
                form_id=record.id,
                field=field,
                form_version=record.version,
                verified_at=now,
                verified_by_id=user.id,
                **scope,
            )
        )
        audit.append(
            "sdv",
            user=user,
            form=form,
            form_id=record.id,
            field=field,
            old="not verified",
            new=f"verified against source (version {record.version}): {audit.to_text(record.get_field(field)) or '—'}",
            **scope,
        )
    return new


def visit_forms(subject: Subject, visit: Visit) -> list[FormRecord]:
    """The completed forms of a subject's visit: the visit CRF and the forms dated on the
    visit's day (infusion, lymphodepletion day, CRS/ICANS assessments)."""
    out = [visit] if visit.status == "complete" else []
    day = (visit.data or {}).get("visit_date")
    if day:
        for infusion in subject.infusions:
            if (infusion.data or {}).get("administration_date") == day and infusion.status == "complete":
                out.append(infusion)
        for ld in subject.lymphodepletion_days:
            if (ld.data or {}).get("administration_date") == day and ld.status == "complete":
                out.append(ld)
        for model in (CrsAssessment, IcansAssessment):
            out.extend(
                db.session.execute(
                    select(model).where(
                        model.subject_id == subject.id,
                        model.status == "complete",
                        model.assessed_on == date.fromisoformat(day),
                    )
                )
                .scalars()
                .all()
            )
    return out


@records.transaction()
def verify_visit(subject: Subject, visit: Visit, *, user: User) -> int:
    """Bulk SDV of a subject's visit in one action (audited per field)."""
    forms = visit_forms(subject, visit)
    if not forms:
        raise RecordError(f"Visit {visit.label} has no completed form to verify.")
    count = 0
    for record in forms:
        if state.sdv_plan(record.FORM_NAME)[0] != "none":
            count += len(verify(record, user=user))
    return count


# --- signatures --------------------------------------------------------------------------------------


@records.transaction()
def sign_form(record: FormRecord, *, user: User, password: str) -> Signature:
    form = form_of(record)
    if form is None or record.id is None:
        raise RecordError("This record cannot be signed here.")
    if record.status != "complete":
        raise RecordError("Only a completed form can be signed.")
    signature = records.sign(record, user=user, password=password, meaning=FORM_SIGN_MEANING)
    return signature


class ConfirmationRequired(RecordError):
    """A casebook signed with work outstanding, without the confirmation naming it."""

    field = "confirm_outstanding"


def _has_answers(form: str, record) -> bool:
    """A draft somebody started: planned visits, scheduled infusions and lymphodepletion days
    are drafts nobody has filled in yet, not outstanding work."""
    return any(record.get_field(spec.name) is not None for spec in catalog.get(form).specs)


def casebook_outstanding(
    subject: Subject,
    forms: Sequence[tuple[str, FormRecord]] | None = None,
    states: dict[tuple[str, int], dict[str, Any]] | None = None,
    queries: Sequence[Query] | None = None,
) -> dict[str, Any]:
    """What is still open in a subject's casebook (issue 11): its unresolved queries, its
    started draft forms and the forms still needing a signature, each as (form, record),
    and the confirmation naming them that signing then requires (None: nothing open).
    A page that has read the subject's forms, their states or queries passes them in."""
    forms = state.subject_forms(subject) if forms is None else forms
    states = state.record_states((name, r.id) for name, r in forms) if states is None else states
    queries = state.subject_queries(subject.id) if queries is None else queries
    drafts = [(name, r) for name, r in forms if r.status == "draft" and _has_answers(name, r)]
    unsigned = [(name, r) for name, r in forms if states[(name, r.id)]["signature_needed"]]
    confirmation = rules.casebook_confirmation(
        [q.id for q in queries],
        [catalog.record_title(n, r) for n, r in drafts],
        [catalog.record_title(n, r) for n, r in unsigned],
    )
    return {"queries": queries, "drafts": drafts, "unsigned": unsigned, "confirmation": confirmation}


@records.transaction()
def sign_casebook(subject: Subject, *, user: User, password: str, confirmation: str | None = None) -> Signature:
    """The investigator approves the subject's casebook. With queries, drafts or unsigned
    forms outstanding, only with the confirmation naming them as they are now (the page's
    text, re-computed here), which the signature's audit record keeps; checked before the
    password, so a missing tick does not count as a failed signature."""
    needed = casebook_outstanding(subject)["confirmation"]
    given = " ".join((confirmation or "").split())
    if needed and not given:
        raise ConfirmationRequired(
            "Tick the confirmation naming what is still outstanding (or resolve it "
            "first) to sign this casebook. Nothing was signed."
        )
    if needed and given != " ".join(needed.split()):
        raise ConfirmationRequired(
            "What is outstanding changed since the page was opened: read the list "
            "again and tick the new confirmation. Nothing was signed."
        )
    signature = records.sign(
        subject, user=user, password=password, meaning=CASEBOOK_MEANING, form="casebook", reason=needed
    )
    return signature


def casebook_signature(subject_id: int) -> tuple[Signature | None, Signature | None]:
    """(the valid casebook signature, the last invalidated one)."""
    rows = (
        db.session.execute(
            select(Signature)
            .where(Signature.form == "casebook", Signature.form_id == subject_id)
            .order_by(Signature.id.desc())
        )
        .scalars()
        .all()
    )
    valid = next((s for s in rows if s.valid), None)
    invalid = next((s for s in rows if not s.valid), None)
    return valid, invalid


# --- locks -------------------------------------------------------------------------------------------


@records.transaction()
def lock(
    scope: str, *, user: User, reason: str | None, subject: Subject | None = None, record: FormRecord | None = None
) -> DataLock:
    reason = _text(reason, "Reason", required=False)
    if scope == "study":
        if state.study_lock() is not None:
            raise RecordError("The study is already locked.")
        row = DataLock(scope="study", reason=reason, locked_by_id=user.id, locked_at=utcnow())
        where = {"subject_id": None, "site_id": None}
        form, form_id = "study", None
    elif scope == "subject":
        if state.subject_lock(subject.id) is not None:
            raise RecordError("This subject is already locked.")
        row = DataLock(
            scope="subject",
            subject_id=subject.id,
            site_id=subject.site_id,
            reason=reason,
            locked_by_id=user.id,
            locked_at=utcnow(),
        )
        where = _scope(subject.id, subject.site_id)
        form, form_id = "subject", subject.id
    elif scope == "form":
        form = form_of(record)
        if form is None or record.id is None:
            raise RecordError("This record cannot be locked.")
        if state.form_lock(form, record.id) is not None:
            raise RecordError("This form is already locked.")
        where = _record_scope(record)
        row = DataLock(
            scope="form", form=form, form_id=record.id, reason=reason, locked_by_id=user.id, locked_at=utcnow(), **where
        )
        form_id = record.id
    else:
        raise RecordError(f"Unknown lock scope {scope!r}.")
    db.session.add(row)
    db.session.flush()
    audit.append(
        "lock",
        user=user,
        form=form,
        form_id=form_id,
        field="lock",
        old="unlocked",
        new=f"locked ({scope}, lock #{row.id})",
        reason=reason,
        **where,
    )
    return row


@records.transaction()
def unlock(row: DataLock, *, user: User, reason: str) -> None:
    reason = _text(reason, "Reason for unlocking")
    if row.unlocked_at is not None:
        raise RecordError("This lock was already lifted.")
    row.unlocked_at, row.unlocked_by_id, row.unlock_reason = utcnow(), user.id, reason
    form = {"study": "study", "subject": "subject"}.get(row.scope, row.form)
    form_id = row.subject_id if row.scope == "subject" else row.form_id
    audit.append(
        "unlock",
        user=user,
        form=form,
        form_id=form_id,
        field="lock",
        old=f"locked ({row.scope})",
        new="unlocked",
        reason=reason,
        **_scope(row.subject_id, row.site_id),
    )


def active_locks(sites: Sites) -> list[DataLock]:
    """Locks in force at the sites (a study lock is every site's)."""
    stmt = select(DataLock).where(DataLock.unlocked_at.is_(None))
    if sites is not ALL_SITES:
        stmt = stmt.where(within(DataLock.site_id, sites) | (DataLock.scope == "study"))
    return db.session.execute(stmt.order_by(DataLock.id.desc())).scalars().all()
