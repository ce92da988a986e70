"""What a PDF CRF shows, built from the same definitions as the screens.

Every CRF type is a ``FormType``: its field specs (``*/fields.py``, the specs the WTForms
classes are generated from) or, for the two logs the screens build with hand-written
WTForms classes, the columns read off those classes. Labels, units, help texts and
choices are never copied here.

``blank(form_type)`` and ``filled(form_type, record, ...)`` give a ``FormDoc``: the
sections with one ``Answer`` per field (tick boxes, date parts, the value), plus for a
filled CRF the status, versions, SDV, open queries and signatures. The templates in
``templates/pdf/`` lay a FormDoc out the same way blank or filled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Callable

from ..adverse_events.fields import AE_FIELDS, CRS_FIELDS, ICANS_FIELDS
from ..enrollment.fields import SCREENING_FIELDS, FieldSpec
from ..infusions.fields import DLT_FIELDS, INFUSION_FIELDS, LYMPHODEPLETION_FIELDS, VISIT_FIELDS, sections
from ..records.crf import display

TICKED, UNTICKED = "☒", "☐"


@dataclass(frozen=True)
class Column:
    """A column of a log form: label and help from the screen's WTForms field."""

    name: str
    label: str
    kind: str = "text"
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    width: int = 3


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


def _wtf_columns(form_class, names, widths) -> tuple[Column, ...]:
    """Columns of a log read off the screen's WTForms class (its unbound fields)."""
    out = []
    for name, width in zip(names, widths):
        unbound = getattr(form_class, name)
        label = unbound.kwargs.get("label") or (unbound.args[0] if unbound.args else name)
        choices = tuple((v, l) for v, l in unbound.kwargs.get("choices", ()) if v)
        kind = {"DateField": "date", "BooleanField": "bool", "DecimalField": "number",
                "SelectField": "choice"}.get(unbound.field_class.__name__, "text")
        out.append(Column(name, str(label), kind, str(unbound.kwargs.get("description") or ""), choices, width))
    return tuple(out)


@dataclass(frozen=True)
class FormType:
    key: str
    title: str
    form_name: str
    specs: tuple[FieldSpec, ...] = ()
    columns_of: Callable[[], tuple[Column, ...]] | None = None
    note: str = ""

    @property
    def is_log(self) -> bool:
        return self.columns_of is not None

    def columns(self) -> tuple[Column, ...]:
        return self.columns_of() if self.columns_of else ()


def _exposure_columns():
    from ..enrollment.forms import ExposureForm

    return _wtf_columns(ExposureForm, ("category", "name", "start_date", "last_date", "half_life_days",
                                       "physiological_replacement", "indication"), (5, 5, 3, 3, 2, 2, 4))


def _vaccination_columns():
    from ..infusions.forms import VaccineForm

    return _wtf_columns(VaccineForm, ("name", "last_date", "indication"), (6, 3, 6))


FORM_TYPES: dict[str, FormType] = {ft.key: ft for ft in (
    FormType("screening", "Screening", "screening", SCREENING_FIELDS,
             note="Questions marked ♀ are asked for female subjects only."),
    FormType("exposure", "Prior and concomitant therapy log", "exposure", columns_of=_exposure_columns),
    FormType("vaccination", "Vaccination log", "exposure", columns_of=_vaccination_columns,
             note="A vaccine inside the no-vaccination window is a protocol deviation: record the reason; "
                  "the investigator signs it."),
    FormType("lymphodepletion", "Lymphodepletion", "lymphodepletion", LYMPHODEPLETION_FIELDS,
             note="One form per lymphodepletion day. BSA is computed by the system (Mosteller)."),
    FormType("infusion", "NK-cell infusion", "infusion", INFUSION_FIELDS),
    FormType("visit", "Follow-up visit", "visit", VISIT_FIELDS),
    FormType("dlt", "DLT assessment", "dlt_assessment", DLT_FIELDS,
             note="Signed by the investigator at the end of the DLT window."),
    FormType("ae", "Adverse event", "adverse_event", AE_FIELDS,
             note="SOC, MedDRA code, relatedness, treatment-emergent and the SAE clocks are computed "
                  "by the system."),
    FormType("crs", "CRS assessment", "crs_assessment", CRS_FIELDS,
             note="The grade is computed by the system (ASTCT 2019)."),
    FormType("icans", "ICANS assessment", "icans_assessment", ICANS_FIELDS,
             note="The ICE score and the grade are computed by the system (ASTCT 2019)."),
)}


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
        chosen = None if value is None else ({True: "yes", False: "no"}.get(value) if spec.kind == "bool"
                                             else str(value))
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
        out.append((section, [answer(s, values.get(s.name), verified=s.name in verified, queried=s.name in queried)
                              for s in specs if s.section == section]))
    return out


def blank(form_type: FormType) -> FormDoc:
    doc = FormDoc(key=form_type.key, title=form_type.title, type_title=form_type.title,
                  form_name=form_type.form_name, filled=False, anchor=f"form-{form_type.key}")
    if form_type.is_log:
        doc.columns = list(form_type.columns())
        doc.rows = [{} for _ in range(12)]
    else:
        doc.sections = _sections(form_type.specs, {})
    return doc
