"""The study's forms as data: every form type declared once (issue 12).

The bottom layer. A feature package declares its case report forms here at import time
(``<feature>/crfs.py`` calls ``register``); everything that names, lists, orders, prints,
verifies or signs a form reads the declaration: the monitoring catalogue, the audit
labels, the dashboards, the PDFs and the casebook, the SDV plan and the signature rule of
the study definition. A new CRF is one feature package (model, fields, ``crfs.py``) plus
a migration: nothing else names it.

Two kinds of entry:

- ``RecordType``: anything the audit trail names (a subject, a query, a grade episode...):
  its stored name and label, and the labels of its fields that have no ``FieldSpec``.
- ``FormType``: a case report form (a ``RecordType`` with a model, field specs, a place in
  the casebook, an SDV plan, whether the investigator signs it, and how a record of it is
  titled and opened). A repeating log (the therapy log) declares the ``Log`` views it is
  printed as.

Pure: no Flask, no database. URLs are endpoint names; the pages resolve them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from . import columns  # noqa: F401  (registry.columns: the log columns)
from .fields import FieldSpec

#: SDV plans (issue 6): every field, the key fields listed, or none
SDV_PLANS = ("all", "key", "none")

#: (label, {code: label} or None): how the audit trail shows a field without a FieldSpec
FieldLabel = tuple[str, Mapping[str, str] | None]


@dataclass(frozen=True)
class RecordType:
    """A kind of record the audit trail names (``AuditRecord.form``)."""

    name: str
    label: str
    #: labels of the fields the system sets (no FieldSpec), for the audit trail
    fields: Mapping[str, FieldLabel] = field(default_factory=dict)
    #: the mapped class of its rows, where one class holds them
    model: type | None = None


@dataclass(frozen=True)
class Log:
    """A repeating form printed as one table: the casebook and the PDFs show the rows
    that ``select`` keeps of the subject's active records, in a place of their own."""

    key: str  # the PDF key (/subjects/<id>/crf/<key>.pdf)
    label: str
    position: int  # its place in the casebook (see FormType.position)
    columns_of: Callable[[], tuple]  # () -> columns (name, label, kind, help, choices, width)
    select: Callable[[object], bool] = lambda record: True
    note: str = ""


@dataclass(frozen=True)
class FormType(RecordType):
    """A case report form type, declared once."""

    specs: tuple[FieldSpec, ...] = ()
    #: casebook order: forms by position; records of forms that share a position are
    #: merged by ``sort_key`` (infusions and visits on one timeline)
    position: int = 1000
    #: the subject's records of this form, in casebook order (a removed AE too: the casebook prints it)
    records_of: Callable[[object], Iterable] = lambda subject: ()
    sort_key: Callable[[object], tuple] = lambda record: (getattr(record, "id", 0),)
    #: "AE 2: Nausea", "Visit Day 7": how a record is named in lists, PDFs and messages
    #: (called with the form type, so a title that names the form reads its label)
    title_of: Callable[["FormType", object], str] | None = None
    #: the page of a record: (endpoint, the record-id argument); None: a per-subject page
    endpoint: tuple[str, str | None] | None = None
    #: a longer title where a form stands on its own (its PDF, its page heading)
    title: str = ""
    pdf_key: str = ""
    #: what the paper form tells the person filling it in
    note: str = ""
    #: source data verification (issue 6): "all", "key" (the fields below) or "none"
    sdv: str = "none"
    sdv_fields: tuple[str, ...] = ()
    #: the investigator signs every complete record of this form (issue 6)
    signature: bool = False
    #: a log: printed as these tables, not one page per record
    logs: tuple[Log, ...] = ()

    def __post_init__(self) -> None:
        if self.sdv not in SDV_PLANS:
            raise ValueError(f"{self.name}: unknown SDV plan {self.sdv!r}")
        unknown = set(self.sdv_fields) - set(self.field_names) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.name}: SDV key fields {sorted(unknown)} are not fields of the form")
        if not self.title:
            object.__setattr__(self, "title", self.label)
        if not self.pdf_key:
            object.__setattr__(self, "pdf_key", self.name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def is_log(self) -> bool:
        return bool(self.logs)

    def spec(self, name: str) -> FieldSpec | None:
        for spec in self.specs:
            if spec.name == name:
                return spec
        return None

    def label_of(self, name: str | None) -> str:
        """A field's label; the whole form when no field is named."""
        if not name:
            return "whole form"
        spec = self.spec(name)
        if spec is not None:
            return spec.label
        if name in self.fields:
            return self.fields[name][0]
        return name.replace("_", " ")

    def record_title(self, record) -> str:
        if record is None or self.title_of is None:
            return self.label
        return self.title_of(self, record)


_TYPES: dict[str, RecordType] = {}
_GENERATION = [0]  # bumped by every change, so readers may cache what they derive


def generation() -> int:
    """A number that changes whenever a declaration is added or removed."""
    return _GENERATION[0]


def register(entry: RecordType) -> RecordType:
    """Declare a form or record type (at import time of its feature; a test may add one)."""
    existing = _TYPES.get(entry.name)
    if existing is not None and existing != entry:
        raise ValueError(f"form type {entry.name!r} is declared twice")
    _TYPES[entry.name] = entry
    _GENERATION[0] += 1
    return entry


def unregister(name: str) -> None:
    """Remove a declaration (tests that register a form type of their own)."""
    _TYPES.pop(name, None)
    _GENERATION[0] += 1


def get(name: str | None) -> FormType | None:
    """The case report form of that stored name, or None (also for non-CRF records)."""
    entry = _TYPES.get(name or "")
    return entry if isinstance(entry, FormType) else None


def record_type(name: str | None) -> RecordType | None:
    return _TYPES.get(name or "")


def model_of(name: str) -> type:
    """The mapped class of a declared record type (KeyError when none is declared)."""
    entry = _TYPES.get(name)
    if entry is None or entry.model is None:
        raise KeyError(f"no model is declared for {name!r}")
    return entry.model


def form_types() -> dict[str, FormType]:
    """Every case report form, in casebook order."""
    crfs = [t for t in _TYPES.values() if isinstance(t, FormType)]
    return {t.name: t for t in sorted(crfs, key=lambda t: t.position)}


def record_types() -> dict[str, RecordType]:
    """Every declared type: the forms in casebook order, then the other records by name."""
    others = sorted((t for t in _TYPES.values() if not isinstance(t, FormType)), key=lambda t: t.name)
    return {**form_types(), **{t.name: t for t in others}}


def label(name: str | None) -> str:
    """The label of a stored form name; an undeclared name as readable text."""
    if not name:
        return ""
    entry = _TYPES.get(name)
    return entry.label if entry else name.replace("_", " ").capitalize()


def record_title(name: str, record: Any) -> str:
    ft = get(name)
    return ft.record_title(record) if ft else label(name)


def logs() -> dict[str, tuple[FormType, Log]]:
    """Every log view by its key, with the form it shows."""
    return {log.key: (ft, log) for ft in form_types().values() for log in ft.logs}


def log_label(key: str) -> str:
    """The label of a log view ("Vaccination log")."""
    return logs()[key][1].label


def _in_order(slotted) -> list:
    """Items (position, sort key, item) by position; within a position by sort key."""
    return [item for _position, _key, item in sorted(slotted, key=lambda x: (x[0], x[1]))]


def casebook(subject: Any) -> list[tuple[FormType, Log | None, object]]:
    """The subject's casebook in its one order: (form, None, record) for every record of
    a form, (form, log, None) for each log view, by position; records of forms that share
    a position are merged by their sort key."""
    slotted = []
    for ft in form_types().values():
        slotted += [(log.position, (0,), (ft, log, None)) for log in ft.logs]
        if not ft.logs:
            slotted += [(ft.position, ft.sort_key(r), (ft, None, r)) for r in ft.records_of(subject)]
    return _in_order(slotted)


def subject_forms(subject: Any) -> list[tuple[str, object]]:
    """Every saved form record of a subject, in casebook order: (form name, record); a
    log's entries one by one at the form's own position (where its first log prints)."""
    return _in_order(
        [(ft.position, ft.sort_key(r), (ft.name, r)) for ft in form_types().values() for r in ft.records_of(subject)]
    )


def sdv_plans() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(form, plan, key fields) of every form: the study definition's default SDV plan."""
    return tuple((ft.name, ft.sdv, ft.sdv_fields) for ft in form_types().values())


def signature_forms() -> tuple[str, ...]:
    """Forms the investigator signs once complete: the study definition's default."""
    return tuple(ft.name for ft in form_types().values() if ft.signature)


__all__ = [
    "generation",
    "FieldSpec",
    "FormType",
    "Log",
    "RecordType",
    "register",
    "unregister",
    "get",
    "record_type",
    "model_of",
    "form_types",
    "record_types",
    "label",
    "record_title",
    "logs",
    "log_label",
    "casebook",
    "subject_forms",
    "sdv_plans",
    "signature_forms",
    "SDV_PLANS",
]
