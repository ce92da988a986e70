"""The SDTM datasets declared as data (PROTOCOL 8, issue 15): every variable of every
domain once, with its label, type, core, origin and codelist. The mappings
(`sdtm`, `sdtm_dm`, `sdtm_ex`, `sdtm_ds`), the CSV columns, the SAS transport and
Dataset-JSON files and the define.xml (`sdtm_files`) all read these declarations, so a
label or an order changes in one place (docs/sdtm_*.md describe them: change both).

Pure: no Flask, no database. The helpers here make every value fit the standard: text
without control characters or line breaks, at most 200 bytes (SAS V5 transport), dates
in ISO 8601, and study days with no day 0.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ..adverse_events.rules import study_day
from .tabular import Column

#: SAS V5 transport limits (SDTM-IG 3.4 section 4.5.3, FDA Study Data Technical
#: Conformance Guide): names of 8 characters, labels of 40, character values of 200 bytes
MAX_NAME = 8
MAX_LABEL = 40
MAX_BYTES = 200

#: Define-XML data types; "integer" and "float" are SAS numeric, the others character
DATA_TYPES = frozenset({"text", "integer", "float", "date", "partialDatetime"})
CORES = frozenset({"Req", "Exp", "Perm"})
ORIGINS = frozenset({"Collected", "Derived", "Assigned", "Protocol"})

_NAME = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")


@dataclass(frozen=True)
class Codelist:
    """A controlled terminology codelist: CDISC CT (with its NCI code) or sponsor-defined
    (``nci`` empty). ``terms`` empty: an external dictionary (MedDRA, CTCAE)."""

    name: str
    nci: str = ""
    terms: tuple[str, ...] = ()
    dictionary: str = ""
    version: str = ""
    dtype: str = "text"


@dataclass(frozen=True)
class Variable:
    """One SDTM variable. ``source`` names the CRF field it is collected from
    (registry form name, field name): the define.xml reads that field's label from the
    form registry."""

    name: str
    label: str
    dtype: str = "text"
    core: str = "Perm"
    origin: str = "Derived"
    codelist: str | None = None
    source: tuple[str, str] | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"SDTM variable name {self.name!r}: 1-{MAX_NAME} capital letters and digits")
        if not self.label or len(self.label) > MAX_LABEL:
            raise ValueError(f"{self.name}: a label of 1-{MAX_LABEL} characters, not {self.label!r}")
        if self.dtype not in DATA_TYPES or self.core not in CORES or self.origin not in ORIGINS:
            raise ValueError(f"{self.name}: bad data type, core or origin")
        if self.codelist is not None and self.codelist not in CODELISTS:
            raise ValueError(f"{self.name}: unknown codelist {self.codelist!r}")

    @property
    def numeric(self) -> bool:
        return self.dtype in ("integer", "float")


@dataclass(frozen=True)
class Domain:
    """One SDTM dataset: its variables in the standard's order and its keys."""

    name: str
    label: str
    dataset_class: str
    structure: str
    keys: tuple[str, ...]
    variables: tuple[Variable, ...]
    repeating: bool = True

    def __post_init__(self) -> None:
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a variable is declared twice")
        if not set(self.keys) <= set(names):
            raise ValueError(f"{self.name}: the keys must be variables of the domain")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def numeric(self) -> frozenset[str]:
        return frozenset(v.name for v in self.variables if v.numeric)

    @property
    def columns(self) -> tuple[Column, ...]:
        """The CSV columns: the header is the variable name."""
        return tuple(
            Column(
                v.name,
                v.name,
                width=max(len(v.name) + 2, 10),
                kind={"integer": "int", "float": "number"}.get(v.dtype, "text"),
            )
            for v in self.variables
        )

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(f"{self.name} has no variable {name!r}")


# CDISC Controlled Terminology (codelist short name -> codelist), and the sponsor's own.
CODELISTS: dict[str, Codelist] = {
    "DOMAIN": Codelist("SDTM Domain Abbreviation", "C66734", ("AE", "DM", "DS", "EX")),
    "NY": Codelist("No Yes Response", "C66742", ("N", "Y")),
    "ACN": Codelist(
        "Action Taken with Study Treatment",
        "C66767",
        ("DOSE NOT CHANGED", "DOSE REDUCED", "DRUG INTERRUPTED", "DRUG WITHDRAWN", "NOT APPLICABLE", "UNKNOWN"),
    ),
    "OUT": Codelist(
        "Outcome of Event",
        "C66768",
        (
            "FATAL",
            "NOT RECOVERED/NOT RESOLVED",
            "RECOVERED/RESOLVED",
            "RECOVERED/RESOLVED WITH SEQUELAE",
            "RECOVERING/RESOLVING",
            "UNKNOWN",
        ),
    ),
    "TOXGR": Codelist("Toxicity Grade", "C87163", ("1", "2", "3", "4", "5")),
    "AEREL": Codelist("Causality (sponsor-defined)", "", ("NOT RELATED", "RELATED")),
    "CTCAE": Codelist("CTCAE terms", dictionary="CTCAE", version="5.0"),
    "MEDDRA": Codelist("MedDRA (through CTCAE v5.0)", dictionary="MEDDRA"),
    "MEDDRA_CODE": Codelist("MedDRA codes (through CTCAE v5.0)", dictionary="MEDDRA", dtype="integer"),
    "SEX": Codelist("Sex", "C66731", ("F", "M", "U", "UNDIFFERENTIATED")),
    "AGEU": Codelist("Age Unit", "C66781", ("YEARS",)),
    "ARMNRS": Codelist(
        "Reason Arm and/or Actual Arm is Null",
        "C142179",
        ("ASSIGNED, NOT TREATED", "NOT ASSIGNED", "SCREEN FAILURE", "UNPLANNED TREATMENT"),
    ),
    "ARMCD": Codelist("Dose levels (sponsor-defined, the study definition)"),
    "COUNTRY": Codelist("Country (ISO 3166-1 alpha-3)", dictionary="ISO 3166"),
    "ROUTE": Codelist("Route of Administration Response", "C66729", ("INTRAVENOUS",)),
    "FRM": Codelist("Pharmaceutical Dosage Form", "C66726", ("SOLUTION", "SUSPENSION")),
    "UNIT": Codelist("Unit", "C71620", ("cells", "mg/m2")),
    "FREQ": Codelist("Frequency", "C71113", ("ONCE",)),
    "DSCAT": Codelist("Category for Disposition Event", "C74558", ("DISPOSITION EVENT", "PROTOCOL MILESTONE")),
    "DSDECOD": Codelist(
        "Completion/Reason for Non-Completion (NCOMPLT C66727) and Protocol Milestone (PROTMLST C114118)",
        "C66727",
        ("COMPLETED", "DEATH", "INFORMED CONSENT OBTAINED", "OTHER", "SCREEN FAILURE"),
    ),
}


def var(name: str, label: str, dtype: str = "text", core: str = "Perm", origin: str = "Derived", **kw: Any) -> Variable:
    """A `Variable` (shorter to read in the domain tables)."""
    return Variable(name, label, dtype, core, origin, **kw)


def identifiers(domain: str, seq: str | None) -> tuple[Variable, ...]:
    """STUDYID, DOMAIN, USUBJID (and --SEQ): the first variables of every domain."""
    first = (
        var("STUDYID", "Study Identifier", core="Req", origin="Assigned"),
        var("DOMAIN", "Domain Abbreviation", core="Req", origin="Assigned", codelist="DOMAIN"),
        var("USUBJID", "Unique Subject Identifier", core="Req"),
    )
    return first + ((var(seq, "Sequence Number", "integer", core="Req"),) if seq else ())


# --- values -----------------------------------------------------------------------------------

# SDTM-IG 3.4 section 4.5.3: no control characters in character values; a line break
# or tab becomes one space (the words stay apart), runs of spaces collapse.
_BREAKS = re.compile(r"[\r\n\t\v\f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"  +")


def clean(value: object) -> str:
    """A character value as the standard takes it: text ("" for None), line breaks and
    tabs as one space, other control characters removed, trimmed, at most 200 bytes of
    UTF-8 (cut at a character boundary)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():  # the common case (printable text) skips the per-character pass
        text = _BREAKS.sub(" ", text)
        text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cs"))
    text = _SPACES.sub(" ", text).strip()
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_BYTES:
        text = encoded[:MAX_BYTES].decode("utf-8", errors="ignore").rstrip()
    return text


def as_date(value: object) -> date | None:
    """A date from a date, a datetime or ISO text (a CRF stores ISO dates); None for empty."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise ValueError(f"Not an ISO 8601 date: {value!r}") from None
    raise ValueError(f"Expected a date, got {value!r}")


def iso(value: object, time: object = None) -> str:
    """ISO 8601: ``YYYY-MM-DD``, or ``YYYY-MM-DDThh:mm`` with a CRF time (site time:
    SDTM takes local times without an offset)."""
    day = as_date(value)
    if day is None:
        return ""
    if time:
        text = str(time).strip()
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", text):
            raise ValueError(f"Not a time HH:MM: {time!r}")
        return f"{day.isoformat()}T{text}"
    return day.isoformat()


def dy(value: object, reference: object) -> int | None:
    """The SDTM study day (--DY) of a date: RFSTDTC is day 1, the day before is -1."""
    return study_day(as_date(value), as_date(reference))


def finish(domain: Domain, values: Mapping[str, object]) -> dict:
    """A record in the domain's order with every character value `clean`ed; a variable
    the mapping forgot raises KeyError (it must fail loudly, not export a blank)."""
    out = {}
    for v in domain.variables:
        value = values[v.name]
        if v.numeric:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{domain.name}.{v.name}: a number or None, not {value!r}")
            out[v.name] = value
        else:
            out[v.name] = clean(value)
    return out


def sequence(records: Iterable[dict], seq: str) -> Iterator[dict]:
    """Number ``records`` (dicts sorted by subject) 1, 2, ... within each USUBJID in ``seq``."""
    seqs: dict[str, int] = {}
    for record in records:
        usubjid = record["USUBJID"]
        seqs[usubjid] = record[seq] = seqs.get(usubjid, 0) + 1
        yield record
