"""What a PDF CRF shows, built from the same definitions as the screens.

Every printable CRF is a ``PdfForm`` built from the form registry (cellstudy.registry):
its field specs (the specs the WTForms classes are generated from) or, for the log views
of a repeating form, the columns read off the screen's WTForms class. Labels, units, help
texts, choices and notes are never copied here.

``blank(form_type)`` and ``filled(form_type, record, ...)`` give a ``FormDoc``: the
sections with one ``Answer`` per field (tick boxes, date parts, the value), plus for a
filled CRF the status, versions, SDV, open queries and signatures. The templates in
``templates/pdf/`` lay a FormDoc out the same way blank or filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Callable

from .. import registry
from ..records.crf import display
from ..registry.columns import Column
from ..registry.fields import FieldSpec, sections

TICKED, UNTICKED = "☒", "☐"


@dataclass
class Answer:
    spec: FieldSpec
    value: object = None
    text: str = ""
    choices: list[tuple[str, str, bool]] = field(default_factory=list)
    parts: tuple[str, ...] = ()
    verified: bool = False
    queried: bool = False
    vertical: bool = False

    @property
    def answered(self) -> bool:
        return self.value is not None and self.value != ""

    @property
    def display(self) -> str:
        """The answer as one line of text (the casebook's compact layout)."""
        if not self.answered:
            return "—"
        if self.choices:
            chosen = [label for _, label, ticked in self.choices if ticked]
            return chosen[0] if chosen else self.text
        if self.spec.kind in ("date", "time"):
            return str(self.value)
        return display(self.spec, self.value)


@dataclass
class FormDoc:
    key: str
    title: str
    type_title: str
    form_name: str
    filled: bool
    sections: list[tuple[str, list[Answer]]] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    record_id: int | None = None
    status: str | None = None
    version: int | None = None
    # the study-definition version in force at the record's last save (issue 11)
    study_version: str | None = None
    updated: datetime | None = None
    updated_by: str | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    sdv: str | None = None
    locked: bool | None = None
    queries: list = field(default_factory=list)
    signatures: list = field(default_factory=list)
    anchor: str = ""
    sort_date: date | None = None

    @property
    def is_log(self) -> bool:
        return bool(self.columns)


@dataclass(frozen=True)
class PdfForm:
    """A printable CRF: a form of the registry, or one log view of a repeating form."""

    key: str
    title: str
    form_name: str
    model: type | None = None
    specs: tuple[FieldSpec, ...] = ()
    columns_of: Callable[[], tuple[Column, ...]] | None = None
    note: str = ""

    @property
    def is_log(self) -> bool:
        return self.columns_of is not None

    def columns(self) -> tuple[Column, ...]:
        return self.columns_of() if self.columns_of else ()


_BUILT: dict = {}


def pdf_forms() -> dict[str, PdfForm]:
    """Every printable CRF by its key, in casebook order, from the form registry."""
    if _BUILT.get("generation") != registry.generation():
        out: dict[str, PdfForm] = {}
        for ft in registry.form_types().values():
            for log in ft.logs:
                out[log.key] = PdfForm(log.key, log.label, ft.name, ft.model, columns_of=log.columns_of, note=log.note)
            if not ft.logs:
                out[ft.pdf_key] = PdfForm(ft.pdf_key, ft.label, ft.name, ft.model, ft.specs, note=ft.note)
        _BUILT.update(generation=registry.generation(), forms=out)
    return _BUILT["forms"]


def _choice_list(spec: FieldSpec) -> list[tuple[str, str]]:
    if spec.kind == "bool":
        return [("yes", "Yes"), ("no", "No")]
    return list(spec.choices or ())


def _parts(spec: FieldSpec, value) -> tuple[str, ...]:
    if spec.kind == "date":
        if value is None:
            return ("", "", "")
        text = value.isoformat() if isinstance(value, (date, datetime)) else str(value)
        y, m, d = (text.split("-") + ["", "", ""])[:3]
        return (y, m, d)
    if spec.kind == "time":
        if value is None:
            return ("", "")
        h, _, m = str(value).partition(":")
        return (h, m)
    return ()


def answer(spec: FieldSpec, value=None, *, verified=False, queried=False) -> Answer:
    if isinstance(value, (date, datetime)) and spec.kind == "date":
        value = value.isoformat()[:10]
    a = Answer(spec=spec, value=value, verified=verified, queried=queried)
    if spec.kind in ("bool", "choice"):
        chosen = (
            None if value is None else ({True: "yes", False: "no"}.get(value) if spec.kind == "bool" else str(value))
        )
        a.choices = [(v, label, v == chosen) for v, label in _choice_list(spec)]
        a.vertical = len(a.choices) > 3 or sum(len(label) for _, label, _ in a.choices) > 50
        if spec.kind == "choice" and value is not None and not any(c[2] for c in a.choices):
            a.text = str(value)  # a stored value outside the list: shown, never hidden
    elif a.answered:
        a.text = display(spec, value) if spec.unit is None else str(value)
    a.parts = _parts(spec, value)
    return a


def _sections(specs, values: dict, verified=frozenset(), queried=frozenset()):
    out = []
    for section in sections(specs):
        out.append(
            (
                section,
                [
                    answer(s, values.get(s.name), verified=s.name in verified, queried=s.name in queried)
                    for s in specs
                    if s.section == section
                ],
            )
        )
    return out


def blank(form_type: PdfForm) -> FormDoc:
    doc = FormDoc(
        key=form_type.key,
        title=form_type.title,
        type_title=form_type.title,
        form_name=form_type.form_name,
        filled=False,
        anchor=f"form-{form_type.key}",
    )
    if form_type.is_log:
        doc.columns = list(form_type.columns())
        doc.rows = [{} for _ in range(12)]
    else:
        doc.sections = _sections(form_type.specs, {})
    return doc
