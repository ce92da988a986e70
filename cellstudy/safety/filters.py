"""What the user asks of a safety listing or summary (issue 4; PROTOCOL 8): the filters,
the sort keys of each listing, and their parsing from the query string.

Pure: no Flask, no database. The queries (queries.py) read a `Filters` value;
the pages and exports describe it (`describe`, `active`) and link back to it (`args`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date
from typing import Any


@dataclass(frozen=True)
class Filters:
    """What the user asked for. Defaults mean "no filter"."""

    site: str | None = None  # site code
    dose_level: str | None = None
    grade_min: int | None = None  # worst grade >= this (1..5)
    serious_only: bool = False
    related_only: bool = False  # related to NK cells or lymphodepletion (possible or more)
    te_only: bool = False  # treatment-emergent (onset on or after the first lymphodepletion day)
    date_from: date | None = None  # onset range, both ends included
    date_to: date | None = None
    sort: str = "onset"
    dir: str = "desc"
    page: int = 1

    def active(self) -> dict[str, Any]:
        """The filters that narrow the rows (not sort or page), JSON-ready: for the audit
        trail and the exports' About sheet / PDF header."""
        out = {}
        for f in fields(self):
            if f.name in ("sort", "dir", "page"):
                continue
            value = getattr(self, f.name)
            if value not in (None, False):
                out[f.name] = value.isoformat() if isinstance(value, date) else value
        return out

    def describe(self, ignored: Iterable[str] = ()) -> str:
        """ "Site HZ; Grade >= 3; Serious only" or "None"."""
        parts = [
            f"{FILTER_LABELS[k]} {v}" if not isinstance(v, bool) else FILTER_LABELS[k]
            for k, v in self.active().items()
            if k not in ignored
        ]
        return "; ".join(parts) or "None"

    def args(self, **overrides) -> dict[str, Any]:
        """Query-string arguments that give these filters back (for links): defaults are
        left out so URLs stay short."""
        values = {**{f.name: getattr(self, f.name) for f in fields(self)}, **overrides}
        out = {}
        for f in fields(self):
            value = values[f.name]
            if value == f.default or value is None:
                continue
            if isinstance(value, bool):
                value = "1"
            elif isinstance(value, date):
                value = value.isoformat()
            out[f.name] = value
        if "sort" in out:  # a column named without a direction starts ascending (parse_filters)
            out["dir"] = values["dir"]
        return out


FILTER_LABELS = {
    "site": "Site",
    "dose_level": "Dose level",
    "grade_min": "Grade ≥",
    "serious_only": "Serious only",
    "related_only": "Related only",
    "te_only": "Treatment-emergent only",
    "date_from": "Onset from",
    "date_to": "Onset to",
    "sort": "Sort",
    "dir": "Sort direction",
    "page": "Page",
}
_TRUE = {"1", "y", "yes", "on", "true"}
_FALSE = {"", "0", "n", "no", "off", "false"}

#: sort key -> label: the AE listing (and the DLT listing); the SAE listing adds its clocks
AE_SORTS: dict[str, str] = {
    "subject": "Subject",
    "site": "Site",
    "dose_level": "Dose level",
    "ae": "AE",
    "term": "CTCAE term",
    "soc": "System organ class",
    "meddra_code": "MedDRA code",
    "verbatim": "Verbatim term",
    "grade": "Worst grade",
    "serious": "Serious",
    "related_nk": "Attribution NK cells",
    "related_ld": "Attribution lymphodepletion",
    "dlt": "DLT",
    "onset": "Onset",
    "end": "End",
    "outcome": "Outcome",
    "status": "Form status",
}
SAE_SORTS: dict[str, str] = {
    **{k: v for k, v in AE_SORTS.items() if k not in ("soc", "meddra_code", "serious", "dlt")},
    "expectedness": "Expectedness",
    "awareness": "Site aware",
    "sae_due": "SAE report due",
    "sae_reported": "SAE report submitted",
    "susar": "SUSAR",
    "susar_due": "SUSAR report due",
    "susar_reported": "SUSAR report submitted",
}


def parse_filters(
    args: Mapping[str, str],
    *,
    sites: Iterable[str] | None = None,
    dose_levels: Iterable[str] | None = None,
    sorts: Mapping[str, str] = AE_SORTS,
) -> tuple[Filters, dict[str, str]]:
    """Filters from query-string arguments, and {argument: message} for the bad ones.

    A bad value never fails the page: its filter is left out (the message says so) and
    the others apply. `sites` (codes the user may see) and `dose_levels` (the study's)
    are the allowed values, when given."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    def text(name):
        return (args.get(name) or "").strip()

    site = text("site")
    if site:
        allowed = None if sites is None else {s.upper(): s for s in sites}
        if allowed is not None and site.upper() not in allowed:
            errors["site"] = (
                f"Site: “{site}” is not one of your sites"
                f"{' (' + ', '.join(sorted(allowed.values())) + ')' if allowed else ''}: "
                "the site filter was not applied."
            )
        else:
            values["site"] = allowed[site.upper()] if allowed is not None else site
    level = text("dose_level")
    if level:
        allowed = None if dose_levels is None else list(dose_levels)
        if allowed is not None and level not in allowed:
            errors["dose_level"] = (
                f"Dose level: “{level}” is not a dose level of the study "
                f"({', '.join(allowed)}): the dose-level filter was not applied."
            )
        else:
            values["dose_level"] = level
    grade = text("grade_min")
    if grade:
        if grade.isdigit() and 1 <= int(grade) <= 5:
            values["grade_min"] = int(grade)
        else:
            errors["grade_min"] = f"Grade ≥: “{grade}” is not a grade from 1 to 5: the grade filter was not applied."
    for name in ("serious_only", "related_only", "te_only"):
        raw = text(name).lower()
        if raw in _TRUE:
            values[name] = True
        elif raw not in _FALSE:
            errors[name] = f"{FILTER_LABELS[name]}: “{text(name)}” is not yes or no: this filter was not applied."
    for name in ("date_from", "date_to"):
        raw = text(name)
        if raw:
            try:
                values[name] = date.fromisoformat(raw)
            except ValueError:
                errors[name] = (
                    f"{FILTER_LABELS[name]}: “{raw}” is not a date; enter it as YYYY-MM-DD "
                    "(this end of the range was not applied)."
                )
    if values.get("date_from") and values.get("date_to") and values["date_to"] < values["date_from"]:
        errors["date_to"] = (
            f"Onset to ({values['date_to']}) is before Onset from ({values['date_from']}): "
            "the end of the range was not applied."
        )
        del values["date_to"]
    sort = text("sort")
    if sort:
        if sort in sorts:
            values["sort"] = sort
        else:
            errors["sort"] = f"Sort: “{sort}” is not a column of this listing: the default order is used."
    direction = text("dir").lower()
    if direction:
        if direction in ("asc", "desc"):
            values["dir"] = direction
        else:
            errors["dir"] = f"Sort direction: “{text('dir')}” is not asc or desc: the default direction is used."
    page = text("page")
    if page:
        if page.isdigit() and int(page) >= 1:
            values["page"] = int(page)
        else:
            errors["page"] = f"Page: “{page}” is not a page number: the first page is shown."
    if values.get("sort") and "dir" not in values and "dir" not in errors:
        values["dir"] = "asc"  # a newly picked column starts ascending
    return Filters(**values), errors
