"""The ODM 1.3.2 study metadata, read off the form registry (issue 15): which study events,
forms, item groups and items a file declares, with their OIDs.

Pure: no Flask, no database (the CTCAE dictionary and the study definition are arguments).
The OIDs are derived from the registry's stored names only, so that they are the same in
every file and every instance, and an ODM import can map them back (docs/odm.md):

=================  =================================================  ==========================
what               OID                                                example
=================  =================================================  ==========================
study event        ``SE.<FORM>``; a follow-up visit ``SE.VISIT.<CODE>``  SE.SCREENING, SE.VISIT.D7
form               ``F.<FORM>``                                       F.SCREENING
item group         ``IG.<FORM>.<SECTION>``; a log ``IG.<FORM>``        IG.SCREENING.LABORATORY
item               ``I.<FORM>.<FIELD>``                               I.SCREENING.SEX
code list          ``CL.<FORM>.<FIELD>``; CTCAE ``CL.CTCAE_V5``        CL.SCREENING.SEX
measurement unit   ``MU.<unit as written>``                           MU.kg
=================  =================================================  ==========================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ... import registry
from ...adverse_events.crfs import ADVERSE_EVENT
from ...infusions.crfs import VISIT
from ...records.crf import MAX_INTEGER_DIGITS, MAX_PLACES, MAX_WHOLE_DIGITS
from ...registry.fields import FieldSpec, sections

#: FieldSpec kind -> ODM DataType
DATA_TYPES: Mapping[str, str] = {
    "text": "text",
    "choice": "text",
    "int": "integer",
    "number": "float",
    "date": "date",
    "bool": "boolean",
    "time": "partialTime",  # HH:MM, the site's time of day: no seconds, no zone
}

#: the AE form's repeating group of grade episodes (a change in the patient starts the next)
EPISODES = "ae_grade_episode"
EPISODE_GROUP = "GRADE_EPISODE"
#: the items whose values are terms of a dictionary: CTCAE v5.0 (MedDRA codes as Alias)
CTCAE_CODELIST = "CL.CTCAE_V5"
DICTIONARY_ITEMS: Mapping[tuple[str, str], str] = {(ADVERSE_EVENT.name, "term"): CTCAE_CODELIST}


def slug(text: str) -> str:
    """An OID part from a name: upper case, every run of other characters one "_"."""
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_") or "_"


def event_oid(form: str, visit_code: str | None = None) -> str:
    return f"SE.VISIT.{slug(visit_code)}" if visit_code else f"SE.{slug(form)}"


def form_oid(form: str) -> str:
    return f"F.{slug(form)}"


def item_oid(form: str, name: str) -> str:
    return f"I.{slug(form)}.{slug(name)}"


def codelist_oid(form: str, name: str) -> str:
    return DICTIONARY_ITEMS.get((form, name)) or f"CL.{slug(form)}.{slug(name)}"


def unit_oid(unit: str) -> str:
    return f"MU.{unit}"


@dataclass(frozen=True)
class Item:
    oid: str
    form: str
    name: str  # the stored field name
    label: str
    kind: str
    help: str | None = None
    unit: str | None = None
    choices: tuple[tuple[str, str], ...] | None = None
    min: int | None = None
    max: int | None = None
    positive: bool = False
    system: bool = False  # set by the system, no FieldSpec

    @property
    def data_type(self) -> str:
        return DATA_TYPES[self.kind]

    @property
    def length(self) -> int | None:
        if self.kind == "text":
            return self.max
        if self.kind == "int":
            return MAX_WHOLE_DIGITS
        if self.kind == "number":
            return MAX_INTEGER_DIGITS + MAX_PLACES  # the write path's limits (records/crf.py)
        return None

    @property
    def significant_digits(self) -> int | None:
        return MAX_PLACES if self.kind == "number" else None

    @property
    def codelist(self) -> str | None:
        if self.choices:
            return codelist_oid(self.form, self.name)
        return DICTIONARY_ITEMS.get((self.form, self.name))

    def range_checks(self) -> list[tuple[str, str]]:
        """(Comparator, value) of the limits the field declares (hard: the save refuses)."""
        if self.kind not in ("int", "number"):
            return []
        checks = []
        if self.positive:
            checks.append(("GT", "0"))
        elif self.min is not None:
            checks.append(("GE", str(self.min)))
        if self.max is not None:
            checks.append(("LE", str(self.max)))
        return checks


@dataclass(frozen=True)
class Group:
    oid: str
    name: str
    repeating: bool
    items: tuple[Item, ...]
    key: str = ""  # the section, "" for a log's single group, EPISODE_GROUP


@dataclass(frozen=True)
class Form:
    """A registry form type as ODM declares it."""

    type: registry.FormType
    oid: str
    repeating: bool  # several records per subject, each its own FormData
    log: bool  # one FormData per subject, a record per ItemGroupData
    groups: tuple[Group, ...]
    items: Mapping[str, Item] = field(default_factory=dict)  # stored field name -> item

    @property
    def name(self) -> str:
        return self.type.name


@dataclass(frozen=True)
class Event:
    oid: str
    name: str
    forms: tuple[str, ...]  # form OIDs
    type: str  # Scheduled | Unscheduled | Common
    visit_code: str | None = None


def _item(form: str, spec: FieldSpec) -> Item:
    return Item(
        item_oid(form, spec.name),
        form,
        spec.name,
        spec.label,
        spec.kind,
        spec.help,
        spec.unit,
        spec.choices,
        spec.min,
        spec.max,
        spec.positive,
    )


def _system_items(ft: registry.FormType) -> list[Item]:
    """The fields the system sets that the registry labels (e.g. an AE's category)."""
    out = []
    for name, (label, labels) in ft.fields.items():
        if ft.spec(name) is None:
            choices = tuple(labels.items()) if labels else None
            out.append(
                Item(
                    item_oid(ft.name, name),
                    ft.name,
                    name,
                    label,
                    "choice" if choices else "text",
                    choices=choices,
                    system=True,
                )
            )
    return out


def episode_items() -> tuple[Item, ...]:
    entry = registry.record_type(EPISODES)
    grade_label, grades = entry.fields["grade"] if entry else ("Grade", None)
    form = ADVERSE_EVENT.name
    return (
        Item(
            item_oid(form, "episode_grade"),
            form,
            "grade",
            grade_label,
            "choice",
            choices=tuple((grades or {}).items()) or None,
        ),
        Item(item_oid(form, "episode_start_date"), form, "start_date", "Episode start date", "date"),
        Item(item_oid(form, "episode_end_date"), form, "end_date", "Episode end date", "date"),
    )


def repeats(ft: registry.FormType) -> bool:
    """Whether a subject may have several records of the form: its rows are keyed by subject
    unless the model's subject column is unique (one DLT assessment per subject)."""
    column = getattr(getattr(ft.model, "__table__", None), "c", {}).get("subject_id")
    return not (column is not None and column.unique)


def forms() -> tuple[Form, ...]:
    """Every registry form type, in casebook order."""
    out = []
    for ft in registry.form_types().values():
        items = [_item(ft.name, spec) for spec in ft.specs] + _system_items(ft)
        if ft.is_log:
            groups = [Group(f"IG.{slug(ft.name)}", ft.label, True, tuple(items))]
        else:
            groups = [
                Group(
                    f"IG.{slug(ft.name)}.{slug(section)}",
                    section,
                    False,
                    tuple(i for i in items if not i.system and ft.spec(i.name).section == section),
                    section,
                )
                for section in sections(ft.specs)
            ]
            system = tuple(i for i in items if i.system)
            if system:
                groups.append(Group(f"IG.{slug(ft.name)}.SYSTEM", "Set by the system", False, system, "SYSTEM"))
            if ft.name == ADVERSE_EVENT.name:
                label = registry.label(EPISODES)
                groups.append(Group(f"IG.{slug(ft.name)}.{EPISODE_GROUP}", label, True, episode_items(), EPISODE_GROUP))
        all_items = {i.name: i for g in groups if g.key != EPISODE_GROUP for i in g.items}
        out.append(Form(ft, form_oid(ft.name), repeats(ft) and not ft.is_log, ft.is_log, tuple(groups), all_items))
    return tuple(out)


def events(visits: Iterable[tuple[str, str]]) -> tuple[Event, ...]:
    """The study events in casebook order: one per form type, the follow-up visit form one per
    visit of the schedule (`visits`: (code, label) of the study definition)."""
    out = []
    for form in forms():
        if form.name == VISIT.name:
            out += [Event(event_oid(form.name, code), label, (form.oid,), "Scheduled", code) for code, label in visits]
        else:
            kind = "Common" if (form.log or form.repeating) else "Scheduled"
            out.append(Event(event_oid(form.name), form.type.label, (form.oid,), kind))
    return tuple(out)


def units() -> tuple[str, ...]:
    """Every measurement unit a field declares, sorted."""
    return tuple(sorted({i.unit for f in forms() for g in f.groups for i in g.items if i.unit}))
