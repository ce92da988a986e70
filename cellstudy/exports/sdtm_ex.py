"""The CDISC SDTM EX (Exposure) domain (PROTOCOL 5.1, 8; issue 15): the NK-cell
infusions given and the lymphodepletion doses, one record per drug per administration.

Pure: no Flask, no database. The caller passes one dict per administration (an NK-cell
infusion given, a complete lymphodepletion day) sorted by subject
(`safety.sdtm_source.iter_ex_source`); ``ex_domain`` sorts each subject's records by
start date and numbers them. Mapping rules: docs/sdtm_ex.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from itertools import groupby

from .sdtm_model import Domain, dy, finish, identifiers, iso, sequence, var

_V = var
EX = Domain(
    name="EX",
    label="Exposure",
    dataset_class="INTERVENTIONS",
    structure="One record per constant-dosing interval per treatment per subject",
    keys=("STUDYID", "USUBJID", "EXTRT", "EXSTDTC"),
    variables=(
        *identifiers("EX", "EXSEQ"),
        _V("EXSPID", "Sponsor-Defined Identifier"),
        _V("EXTRT", "Name of Treatment", core="Req", origin="Protocol"),
        _V("EXCAT", "Category of Treatment", origin="Assigned"),
        _V("EXDOSE", "Dose", "float", core="Exp", origin="Collected"),
        _V("EXDOSU", "Dose Units", core="Exp", origin="Protocol", codelist="UNIT"),
        _V("EXDOSFRM", "Dose Form", core="Exp", origin="Protocol", codelist="FRM"),
        _V("EXDOSFRQ", "Dosing Frequency per Interval", origin="Protocol", codelist="FREQ"),
        _V("EXROUTE", "Route of Administration", origin="Protocol", codelist="ROUTE"),
        _V("EXLOT", "Lot Number", origin="Collected", source=("infusion", "product_lot")),
        _V("EXSTDTC", "Start Date/Time of Treatment", "partialDatetime", core="Exp", origin="Collected",
           source=("infusion", "administration_date")),
        _V("EXENDTC", "End Date/Time of Treatment", "partialDatetime", core="Exp", origin="Collected",
           source=("infusion", "stop_time")),
        _V("EXSTDY", "Study Day of Start of Treatment", "integer"),
        _V("EXENDY", "Study Day of End of Treatment", "integer"),
    ),
)  # fmt: skip

#: the sponsor's name of the investigational product (PROTOCOL 5.1)
NK_TREATMENT = "CAR-NK CELLS"
NK_CATEGORY = "NK CELL INFUSION"
LD_CATEGORY = "LYMPHODEPLETION"


def _number(value: object, what: str) -> int | float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what}: not a number: {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what}: not a number: {value!r}") from None
    return int(number) if number == number.to_integral_value() else float(number)


def _base(row: Mapping, *, studyid: str) -> dict:
    day, ref = row["date"], row.get("rfstdtc")
    stop = row.get("stop_time")
    return {
        "STUDYID": studyid,
        "DOMAIN": "EX",
        "USUBJID": row["usubjid"],
        "EXSEQ": 0,
        "EXROUTE": "INTRAVENOUS",
        "EXDOSFRQ": "ONCE",
        "EXSTDTC": iso(day, row.get("start_time")),
        # one administration on one day: it ends on its day (at the stop time if recorded)
        "EXENDTC": iso(day, stop) if stop else iso(day),
        "EXSTDY": dy(day, ref),
        "EXENDY": dy(day, ref),
    }


def ex_records(row: Mapping, *, studyid: str, drugs: Sequence[str]) -> list[dict]:
    """The EX records of one administration: an NK-cell infusion (``kind`` "infusion")
    gives one, a lymphodepletion day (``kind`` "lymphodepletion") one per drug of the
    regimen (``drugs``, e.g. fludarabine and cyclophosphamide) with a dose recorded."""
    base = _base(row, studyid=studyid)
    if row["kind"] == "infusion":
        record = {
            **base,
            "EXSPID": f"INFUSION {row['number']}",
            "EXTRT": NK_TREATMENT,
            "EXCAT": NK_CATEGORY,
            "EXDOSE": _number(row.get("actual_cells"), "cells given"),
            "EXDOSU": "cells",
            "EXDOSFRM": "SUSPENSION",
            "EXLOT": row.get("product_lot") or "",
        }
        return [finish(EX, record)]
    if row["kind"] != "lymphodepletion":
        raise ValueError(f"Unknown administration kind {row['kind']!r}")
    out = []
    for drug in drugs:
        dose = _number((row.get("doses") or {}).get(drug), f"{drug} dose")
        if dose is None:
            continue
        record = {
            **base,
            "EXSPID": f"LYMPHODEPLETION DAY {row['day']}",
            "EXTRT": drug.upper(),
            "EXCAT": LD_CATEGORY,
            "EXDOSE": dose,
            "EXDOSU": "mg/m2",
            "EXDOSFRM": "SOLUTION",
            "EXLOT": "",
        }
        out.append(finish(EX, record))
    return out


def ex_domain(rows: Iterable[Mapping], *, studyid: str, drugs: Sequence[str]) -> Iterator[dict]:
    """EX records of ``rows`` (sorted by subject): each subject's by start date/time and
    treatment, EXSEQ 1, 2, ... within each USUBJID."""

    def ordered() -> Iterator[dict]:
        for _usubjid, group in groupby(rows, key=lambda r: r["usubjid"]):
            records = [rec for row in group for rec in ex_records(row, studyid=studyid, drugs=drugs)]
            yield from sorted(records, key=lambda r: (r["EXSTDTC"], r["EXCAT"] != LD_CATEGORY, r["EXTRT"]))

    return sequence(ordered(), "EXSEQ")
