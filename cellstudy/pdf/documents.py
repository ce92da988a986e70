"""Filled CRFs and casebooks: the records of a subject turned into FormDocs (issue 5).

A subject's data is read in a fixed, small number of queries (its forms through the
relationships, then its queries, signatures and monitoring states in one batch each), so
a casebook of 40 forms costs the same few round trips as one CRF."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from .. import registry
from ..adverse_events.fields import component_label
from ..enrollment.models import Subject
from ..extensions import db
from ..records.models import Query, Signature
from ..timeutil import as_utc, fmt_utc, site_zone
from .forms import FormDoc, PdfForm, _sections, pdf_forms
from ..timeutil import _offset
from ..records.models import AuditRecord
from ..monitoring import state as monitoring
from ..audit_viewer import labels as audit_labels

if TYPE_CHECKING:
    from datetime import datetime

    from ..auth.models import Site
    from ..records.formrecord import FormRecord

UNRESOLVED = ("open", "answered")
#: a record written outside the write path (bulk loads) has no study version of its own
NOT_RECORDED = "not recorded"


def site_time(value: datetime | None, site: Site | None) -> str:
    """A UTC time as "2026-11-26 09:30 UTC+8" at the site (plain text for a PDF)."""
    value = as_utc(value)
    if value is None:
        return ""
    local = value.astimezone(site_zone(site))
    return local.strftime("%Y-%m-%d %H:%M ") + _offset(local)


def both_times(value: datetime | None, site: Site | None) -> str:
    value = as_utc(value)
    if value is None:
        return ""
    return f"{fmt_utc(value)} ({site_time(value, site)} site time)"


# --- per form type: the record's title and what the system knows about it ------------------------


def record_title(key: str, record: FormRecord) -> str:
    """The registry's title of a record of the printable CRF `key`."""
    return registry.record_title(pdf_forms()[key].form_name, record)


def _facts(key: str, record, site) -> list[tuple[str, str]]:
    data = record.data or {}
    if key == "screening":
        out = [("Attempt", str(record.attempt))]
        if record.previous_id:
            out.append(("Re-screening of", f"attempt {record.previous.attempt}"))
        if record.completed_at:
            out.append(("Completed", both_times(record.completed_at, site)))
        return out
    if key == "lymphodepletion":
        return [
            ("Day", str(record.day)),
            ("Planned date", str(record.planned_date)),
            ("BSA (computed, Mosteller)", f"{data['bsa_m2']} m²" if data.get("bsa_m2") else "—"),
        ]
    if key == "infusion":
        return [
            ("Infusion", str(record.number)),
            ("Planned date", str(record.planned_date)),
            ("State", record.state),
            ("Dose level", record.dose_level or "—"),
        ] + ([("Target-window deviation", record.target_deviation_reason)] if record.target_deviation_reason else [])
    if key == "visit":
        out = [
            ("Visit", f"{record.label} ({record.code})"),
            ("Target date", str(record.target_date)),
            ("Window", f"{record.earliest} – {record.latest}"),
            ("Visit state", record.state),
        ]
        return out + ([("Reason missed", record.missed_reason)] if record.missed_reason else [])
    if key == "ae":
        out = [
            ("AE number", str(record.number)),
            ("System organ class", record.soc or "—"),
            ("MedDRA code", record.meddra_code or "—"),
            ("Related (computed)", {True: "Yes", False: "No"}.get(record.related, "—")),
            ("Treatment-emergent (computed)", "Yes" if record.treatment_emergent else "No"),
        ]
        if record.grade is not None:
            out.append(("Worst grade", str(record.grade)))
        if record.serious:
            out.append(("SAE report due", both_times(record.sae_due_at, site) or "—"))
            out.append(("SAE reported", both_times(record.sae_reported_at, site) or "not yet"))
        if record.deleted_reason:
            out.append(("Removed", record.deleted_reason))
        return out
    if key in ("crs", "icans"):
        out = [
            ("Computed grade (ASTCT 2019)", str(record.grade) if record.grade is not None else "—"),
            ("Driven by", component_label(record.driver) or "—"),
        ]
        if key == "icans":
            out.append(("ICE score (computed)", str(record.ice_score) if record.ice_score is not None else "—"))
        if record.adverse_event is not None:
            out.append(("Adverse event", record.adverse_event.label))
        return out
    return []


def _values(ft: PdfForm, record) -> dict:
    return {spec.name: record.get_field(spec.name) for spec in ft.specs}


class SubjectContext:
    """The queries, signatures and monitoring states of a subject's forms, read in one
    go; ``doc()`` builds the filled FormDoc of a record from them."""

    def __init__(self, subject: Subject, records: list[tuple[str, object]]):
        self.subject = subject
        self.site = subject.site
        self.queries: dict[tuple[str, int], list] = defaultdict(list)
        self.signatures: dict[tuple[str, int], list] = defaultdict(list)
        for query in db.session.execute(
            select(Query)
            .where(Query.subject_id == subject.id, Query.state.in_(UNRESOLVED))
            .order_by(Query.created_at, Query.id)
        ).scalars():
            self.queries[(query.form, query.form_id)].append(query)
        for signature in db.session.execute(
            select(Signature)
            .where(Signature.subject_id == subject.id)
            .options(selectinload(Signature.user))
            .order_by(Signature.signed_at, Signature.id)
        ).scalars():
            self.signatures[(signature.form, signature.form_id)].append(signature)
        keys = [(pdf_forms()[key].form_name, rec.id) for key, rec in records if not pdf_forms()[key].is_log]
        self.states = monitoring.record_states([k for k in keys if k[1] is not None])  # SDV and locks

    def state(self, form_name: str, form_id: int) -> dict:
        return self.states.get((form_name, form_id)) or {"sdv": "not required", "verified_fields": [], "locked": False}

    def doc(self, key: str, record) -> FormDoc:
        ft = pdf_forms()[key]
        k = (ft.form_name, record.id)
        state = self.state(*k)
        queries = self.queries.get(k, [])
        doc = FormDoc(
            key=key,
            title=record_title(key, record),
            type_title=ft.title,
            form_name=ft.form_name,
            filled=True,
            record_id=record.id,
            status=record.status,
            version=record.version,
            study_version=record.study_version or NOT_RECORDED,
            updated=record.updated_at,
            updated_by=record.updated_by.full_name if record.updated_by else None,
            facts=_facts(key, record, self.site),
            sdv=state["sdv"],
            locked=state.get("locked"),
            queries=queries,
            signatures=self.signatures.get(k, []),
            anchor=f"{key}-{record.id}",
        )
        doc.sections = _sections(
            ft.specs,
            _values(ft, record),
            verified=set(state.get("verified_fields") or ()),
            queried={q.field for q in queries if q.field},
        )
        return doc

    def log_doc(self, key: str, rows: list) -> FormDoc:
        ft = pdf_forms()[key]
        columns = list(ft.columns())
        doc = FormDoc(
            key=key,
            title=ft.title,
            type_title=ft.title,
            form_name=ft.form_name,
            filled=True,
            columns=columns,
            anchor=f"{key}-log",
            sdv=None,
        )
        # a log's version: the one its most recently saved entry was saved under (issue 11)
        latest = max(rows, key=lambda r: (as_utc(r.updated_at) or as_utc(r.created_at), r.id), default=None)
        doc.study_version = (latest.study_version or NOT_RECORDED) if latest is not None else None
        deviations = {d.form_id: d for d in self.subject.deviations if d.form == "exposure"}
        for row in rows:
            values = {}
            for column in columns:
                value = getattr(row, column.name)
                if value is None or value == "":
                    values[column.name] = ""
                elif column.choices:
                    values[column.name] = dict(column.choices).get(value, value)
                elif column.kind == "bool":
                    values[column.name] = "Yes" if value else "No"
                elif isinstance(value, date):
                    values[column.name] = value.isoformat()
                else:
                    values[column.name] = str(value)
            deviation = deviations.get(row.id)
            if deviation is not None:
                signed = f"; signed by {deviation.signature.printed_name}" if deviation.signature else ""
                values["_deviation"] = f"Protocol deviation: {deviation.reason}{signed}"
            doc.rows.append(values)
            doc.queries.extend(self.queries.get((ft.form_name, row.id), []))
            doc.signatures.extend(self.signatures.get((ft.form_name, row.id), []))
        return doc


# --- loading a subject's forms ------------------------------------------------------------------------


def load_subject(subject_id: int) -> Subject:
    """The subject with every form a casebook shows, eagerly (a few SELECT ... IN)."""
    return db.session.execute(
        select(Subject)
        .where(Subject.id == subject_id)
        .options(
            selectinload(Subject.site),
            selectinload(Subject.screenings),
            selectinload(Subject.exposures),
            selectinload(Subject.lymphodepletion_days),
            selectinload(Subject.infusions),
            selectinload(Subject.visits),
            selectinload(Subject.dlt_assessment),
            selectinload(Subject.deviations),
            selectinload(Subject.adverse_events),
        )
    ).scalar_one()


def _pdf_key(ft: registry.FormType, log: registry.Log | None) -> str:
    return log.key if log is not None else ft.pdf_key


def casebook_records(subject: Subject) -> list[tuple[str, object]]:
    """(PDF key, record) of every form of the subject in the registry's casebook order
    (docs/decisions.md); each log view appears once with the record None."""
    return [(_pdf_key(ft, log), record) for ft, log, record in registry.casebook(subject)]


def log_rows(subject: Subject, key: str) -> list:
    ft, log = registry.logs()[key]
    return [r for r in ft.records_of(subject) if log.select(r)]


def subject_docs(subject: Subject) -> tuple[list[FormDoc], SubjectContext]:
    records = casebook_records(subject)
    context = SubjectContext(subject, [(k, r) for k, r in records if r is not None])
    docs = [
        context.log_doc(key, log_rows(subject, key)) if record is None else context.doc(key, record)
        for key, record in records
    ]
    return docs, context


def single_doc(subject: Subject, key: str, record: FormRecord | None) -> FormDoc:
    context = SubjectContext(subject, [] if record is None else [(key, record)])
    return context.log_doc(key, log_rows(subject, key)) if record is None else context.doc(key, record)


# --- the audit appendix ---------------------------------------------------------------------------------


def field_labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for ft in pdf_forms().values():
        for spec in ft.specs:
            labels.setdefault(spec.name, spec.label)
        for column in ft.columns():
            labels.setdefault(column.name, column.label)
    return labels


def audit_rows(subject: Subject) -> list[dict]:
    """The subject's audit trail, oldest first, as text (the appendix of the casebook)."""
    labels = field_labels()
    site = subject.site
    rows = []
    for r in db.session.execute(
        select(AuditRecord).where(AuditRecord.subject_id == subject.id).order_by(AuditRecord.id)
    ).scalars():
        # coded values as their labels ("Systemic antitumor therapy", "Female"), as the audit
        # trail viewer shows them (issue 11): one declaration per label, in the field specs
        coded = r.action in audit_labels.VALUE_ACTIONS
        old, new = (
            (audit_labels.value_label(r.form, r.field, v) if coded else v) or "" for v in (r.old_value, r.new_value)
        )
        rows.append(
            {
                "id": r.id,
                "at": fmt_utc(r.at).removesuffix(" UTC"),
                "site_at": site_time(r.at, site),
                "user": r.username,
                "action": audit_labels.action_label(r.action),
                "form": f"{audit_labels.form_label(r.form)}{f' #{r.form_id}' if r.form_id else ''}",
                "field": labels.get(r.field) or audit_labels.field_label(r.form, r.field),
                "old": old,
                "new": new,
                "reason": r.reason or "",
            }
        )
    return rows


__all__ = ["subject_docs", "single_doc", "audit_rows", "load_subject", "casebook_records"]
