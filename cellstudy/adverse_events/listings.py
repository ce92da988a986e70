"""Safety listings and summaries for investigators (issue 4; PROTOCOL 8): the queries.

No Flask request here: every function takes the user's sites (`site_ids`, None = every
site, as `auth.policy.site_ids()` gives them) and a `Filters` value, and returns plain
dicts, the same dicts the page shows and the exports write (cellstudy.exports.tabular).

What the listings hold (decisions, docs/decisions.md):
- Every AE that is not removed (status 'deleted'), complete **and draft**: a draft is
  a safety signal already (an entered grade 3 holds the next infusion, PROTOCOL 5.2);
  its "Form status" column says "draft" so nobody reads it as final. The SDTM AE domain
  is the exception: complete AEs only (a draft is not data yet).
- "Study day" of an AE = onset - first NK-cell infusion given + 1 when the onset is on or
  after it, else onset - first infusion (there is no day 0): the SDTM --DY convention,
  with the first infusion as the reference start (RFSTDTC). Empty while no infusion has
  been given.
- Sorting is done by the database on table columns (the study day is computed per row,
  so it is not a sort key); empty values sort last in both directions, the AE id breaks
  ties. Default: most recent onset first.
- Summaries count subjects of the **safety population**: subjects with at least one
  NK-cell infusion given (N per dose level, in the column header). AEs of subjects who
  never received an infusion are in the listings but not in the summaries.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import String, Table, and_, case, cast, false, func, literal, null, or_, select, union_all
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join

from ..auth.models import Site
from ..enrollment.models import Subject
from ..extensions import db
from ..infusions.models import Infusion
from ..timeutil import as_utc, fmt_utc, utcnow
from .fields import ACTIONS, ATTRIBUTIONS, CRITERIA_CODES, CRS_TERM, ICANS_TERM, ICANS_VERBATIM, OUTCOMES
from .models import LISTING_COUNT_INDEX, AdverseEvent

PAGE_SIZE = 50
#: rows fetched from the database at a time by the export iterators
YIELD_PER = 2000
GRADES = (1, 2, 3, 4, 5)

ATTRIBUTION_LABELS = dict(ATTRIBUTIONS)
OUTCOME_LABELS = dict(OUTCOMES)
ACTION_LABELS = dict(ACTIONS)
CRITERIA_SHORT = {
    "sae_death": "Death", "sae_life_threatening": "Life-threatening",
    "sae_hospitalisation": "Hospitalisation", "sae_disability": "Disability",
    "sae_congenital_anomaly": "Congenital anomaly", "sae_important_medical_event": "Important medical event",
}


# --- filters -------------------------------------------------------------------------------

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
        """"Site HZ; Grade >= 3; Serious only" or "None"."""
        parts = [f"{FILTER_LABELS[k]} {v}" if not isinstance(v, bool) else FILTER_LABELS[k]
                 for k, v in self.active().items() if k not in ignored]
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
    "site": "Site", "dose_level": "Dose level", "grade_min": "Grade ≥", "serious_only": "Serious only",
    "related_only": "Related only", "te_only": "Treatment-emergent only", "date_from": "Onset from",
    "date_to": "Onset to", "sort": "Sort", "dir": "Sort direction", "page": "Page",
}
_TRUE = {"1", "y", "yes", "on", "true"}
_FALSE = {"", "0", "n", "no", "off", "false"}

#: sort key -> label: the AE listing (and the DLT listing); the SAE listing adds its clocks
AE_SORTS: dict[str, str] = {
    "subject": "Subject", "site": "Site", "dose_level": "Dose level", "ae": "AE", "term": "CTCAE term",
    "soc": "System organ class", "meddra_code": "MedDRA code", "verbatim": "Verbatim term",
    "grade": "Worst grade", "serious": "Serious", "related_nk": "Attribution NK cells",
    "related_ld": "Attribution lymphodepletion", "dlt": "DLT", "onset": "Onset", "end": "End",
    "outcome": "Outcome", "status": "Form status",
}
SAE_SORTS: dict[str, str] = {
    **{k: v for k, v in AE_SORTS.items() if k not in ("soc", "meddra_code", "serious", "dlt")},
    "expectedness": "Expectedness", "awareness": "Site aware", "sae_due": "SAE report due",
    "sae_reported": "SAE report submitted", "susar": "SUSAR", "susar_due": "SUSAR report due",
    "susar_reported": "SUSAR report submitted",
}


def parse_filters(args: Mapping[str, str], *, sites: Iterable[str] | None = None,
                  dose_levels: Iterable[str] | None = None,
                  sorts: Mapping[str, str] = AE_SORTS) -> tuple[Filters, dict[str, str]]:
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
            errors["site"] = (f"Site: “{site}” is not one of your sites"
                              f"{' (' + ', '.join(sorted(allowed.values())) + ')' if allowed else ''}: "
                              "the site filter was not applied.")
        else:
            values["site"] = allowed[site.upper()] if allowed is not None else site
    level = text("dose_level")
    if level:
        allowed = None if dose_levels is None else list(dose_levels)
        if allowed is not None and level not in allowed:
            errors["dose_level"] = (f"Dose level: “{level}” is not a dose level of the study "
                                    f"({', '.join(allowed)}): the dose-level filter was not applied.")
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
                errors[name] = (f"{FILTER_LABELS[name]}: “{raw}” is not a date; enter it as YYYY-MM-DD "
                                "(this end of the range was not applied).")
    if values.get("date_from") and values.get("date_to") and values["date_to"] < values["date_from"]:
        errors["date_to"] = (f"Onset to ({values['date_to']}) is before Onset from ({values['date_from']}): "
                             "the end of the range was not applied.")
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


# --- shared pieces of the queries ----------------------------------------------------------------

@compiles(Table, "sqlite")
def _sqlite_table_hint(table, compiler, **kw):
    """SQLAlchemy's SQLite compiler drops `Select.with_hint()` text; SQLite has one such
    hint, `INDEXED BY <index>` after the table name, which the listings need (SQLite
    plans without statistics). Rendered only for a table in a FROM clause that carries
    a hint for "sqlite"; every other table compiles as before."""
    text = compiler.visit_table(table, **kw)
    hints = kw.get("fromhints")
    if kw.get("asfrom") and hints and table in hints:
        text += " " + hints[table]
    return text


def _scope(conditions: list, site_ids: list[int] | None, site_column) -> None:
    if site_ids is not None:
        conditions.append(site_column.in_(site_ids) if site_ids else false())


def _site_id_of(code: str):
    return select(Site.id).where(Site.code == code).scalar_subquery()


def _conditions(filters: Filters, site_ids: list[int] | None, *, grade: bool = True,
                joined: bool = False) -> list:
    """WHERE conditions over AdverseEvent. The dose level is the subject's: with the
    subject table `joined` a condition on it, else an IN over the subjects of that level
    (so a count needs no join)."""
    ae = AdverseEvent
    where = [ae.status != "deleted"]
    _scope(where, site_ids, ae.site_id)
    if filters.site:
        where.append(ae.site_id == _site_id_of(filters.site))
    if grade and filters.grade_min is not None:
        where.append(ae.grade >= filters.grade_min)
    if filters.serious_only:
        where.append(ae.serious.is_(True))
    if filters.related_only:
        where.append(ae.related.is_(True))
    if filters.te_only:
        where.append(ae.treatment_emergent.is_(True))
    if filters.date_from:
        where.append(ae.onset_date >= filters.date_from)
    if filters.date_to:
        where.append(ae.onset_date <= filters.date_to)
    if filters.dose_level is not None:
        where.append(Subject.dose_level == filters.dose_level if joined else
                     ae.subject_id.in_(select(Subject.id).where(Subject.dose_level == filters.dose_level)))
    return where


def _ordinal(column, choices) -> Any:
    """A choice column sorted in the order of its choices (unrelated < ... < definite)."""
    return case({code: i for i, (code, _) in enumerate(choices)}, value=column)


def _sort_columns(key: str) -> list:
    ae = AdverseEvent
    return {
        "subject": [func.coalesce(Subject.subject_number, Subject.screening_number), ae.number],
        "site": [Site.code], "dose_level": [Subject.dose_level], "ae": [ae.number],
        "term": [ae.term], "soc": [ae.soc], "meddra_code": [ae.meddra_code], "verbatim": [ae.verbatim],
        "grade": [ae.grade], "serious": [ae.serious], "related_nk": [_ordinal(ae.related_nk, ATTRIBUTIONS)],
        "related_ld": [_ordinal(ae.related_ld, ATTRIBUTIONS)], "dlt": [ae.dlt], "onset": [ae.onset_date],
        "end": [ae.end_date], "outcome": [_ordinal(ae.outcome, OUTCOMES)], "status": [ae.status],
        "expectedness": [ae.expectedness], "awareness": [ae.awareness_at], "sae_due": [ae.sae_due_at],
        "sae_reported": [ae.sae_reported_at], "susar": [ae.susar], "susar_due": [ae.susar_due_at],
        "susar_reported": [ae.susar_reported_at],
    }[key]


#: sort keys whose columns are never empty: no NULLS LAST, which would keep SQLite (and
#: PostgreSQL, descending) from reading them in index order (ix_subject_label)
_NEVER_NULL_SORTS = frozenset({"subject"})


def _order_by(filters: Filters) -> list:
    descending = filters.dir == "desc"
    out = []
    for column in _sort_columns(filters.sort):
        column = column.desc() if descending else column.asc()
        out.append(column if filters.sort in _NEVER_NULL_SORTS else column.nulls_last())
    out.append(AdverseEvent.id.desc() if descending else AdverseEvent.id.asc())
    return out


_LISTING_COLUMNS = (
    AdverseEvent.id.label("ae_id"), AdverseEvent.subject_id, AdverseEvent.number,
    func.coalesce(Subject.subject_number, Subject.screening_number).label("subject"),
    Site.code.label("site"), Site.timezone.label("timezone"), Subject.dose_level,
    AdverseEvent.category, AdverseEvent.term, AdverseEvent.soc, AdverseEvent.meddra_code,
    AdverseEvent.verbatim, AdverseEvent.grade, AdverseEvent.serious, AdverseEvent.related_nk,
    AdverseEvent.related_ld, AdverseEvent.related, AdverseEvent.dlt, AdverseEvent.onset_date,
    AdverseEvent.end_date, AdverseEvent.ongoing, AdverseEvent.outcome, AdverseEvent.status,
    AdverseEvent.treatment_emergent,
)
_SAE_COLUMNS = (
    AdverseEvent.expectedness, AdverseEvent.action, AdverseEvent.data, AdverseEvent.awareness_at,
    AdverseEvent.sae_due_at, AdverseEvent.sae_reported_at, AdverseEvent.susar, AdverseEvent.susar_due_at,
    AdverseEvent.susar_reported_at,
)

LISTINGS = ("ae", "sae", "dlt")


class _SubjectFirstJoin(Join):
    """subject JOIN adverse_event that SQLite must run with subject as the outer loop
    (its CROSS JOIN: an inner join whose order the planner keeps); other databases get
    the plain JOIN. For `sort=subject`: the subjects in label order, then their AEs."""

    inherit_cache = True


@compiles(_SubjectFirstJoin, "sqlite")
def _sqlite_subject_first(join, compiler, **kw):
    text = compiler.visit_join(join, **kw)
    left = join.left._compiler_dispatch(compiler, asfrom=True)  # "subject": a plain table, no join inside
    assert text.startswith(left + " JOIN "), text
    return left + " CROSS JOIN " + text[len(left) + len(" JOIN "):]


#: SQLite plans without statistics: for these orders it is told which index of
#: adverse_event to read (the rows come out in the listing's order, or nearly: no sort
#: of every matching AE). Measured at 100,000 AEs (bench/RESULTS.md, issue 4).
#: - newest onset first: walk the onset index backwards, stop after a page;
#: - worst grade first: walk the (grade, id) index backwards;
#: - subject: read the subjects in label order (ix_subject_label) and each one's AEs
#:   through its subject index, instead of sorting every AE by subject.
#: PostgreSQL chooses these plans itself (migration 0006's indexes).
_SQLITE_SORT_INDEX = {("onset", "desc"): "ix_adverse_event_onset", ("grade", "desc"): "ix_adverse_event_grade_id",
                      ("subject", "asc"): "ix_adverse_event_subject_id",
                      ("subject", "desc"): "ix_adverse_event_subject_id"}


def _listing_select(kind: str, filters: Filters, site_ids: list[int] | None, *, columns=None):
    if kind not in LISTINGS:
        raise ValueError(f"unknown listing {kind!r}")
    where = _listing_where(kind, filters, site_ids, joined=True)
    if columns is None:
        columns = _LISTING_COLUMNS + (_SAE_COLUMNS if kind == "sae" else ())
    if filters.sort == "subject":
        base = _SubjectFirstJoin(Subject.__table__, AdverseEvent.__table__, Subject.id == AdverseEvent.subject_id)
        stmt = select(*columns).select_from(base)
    else:
        stmt = select(*columns).select_from(AdverseEvent).join(Subject, Subject.id == AdverseEvent.subject_id)
    stmt = stmt.join(Site, Site.id == AdverseEvent.site_id).where(*where)
    index = _SQLITE_SORT_INDEX.get((filters.sort, filters.dir))
    return stmt.with_hint(AdverseEvent, f"INDEXED BY {index}", "sqlite") if index else stmt


def _listing_where(kind: str, filters: Filters, site_ids: list[int] | None, *, joined: bool = False) -> list:
    where = _conditions(filters, site_ids, joined=joined)
    if kind == "sae":
        where.append(AdverseEvent.serious.is_(True))
    elif kind == "dlt":
        where.append(AdverseEvent.dlt.is_(True))
    return where


def count(kind: str, filters: Filters, site_ids: list[int] | None) -> int:
    """The rows of a listing: a count with the same filters, over the AE table alone.

    Every column the filters use is in the index LISTING_COUNT_INDEX (migration 0006),
    so the count reads that index, never the table: PostgreSQL plans an index-only
    scan with its statistics; SQLite, which has none, is told to (INDEXED BY): left
    alone it would walk the site or grade index and look each row up in the table."""
    where = _listing_where(kind, filters, site_ids)
    stmt = (select(func.count()).select_from(AdverseEvent).where(*where)
            .with_hint(AdverseEvent, f"INDEXED BY {LISTING_COUNT_INDEX}", "sqlite"))
    return db.session.execute(stmt).scalar_one()


# --- first infusion and study day -------------------------------------------------------------

def first_infusion_dates(subject_ids: Iterable[int] | None = None,
                         site_ids: list[int] | None = None) -> dict[int, date]:
    """subject id -> date of the first NK-cell infusion given (Infusion.date: the
    administration date, else the planned date). One query: for the subjects given, or
    for every subject of the sites (an export builds this once)."""
    given = Infusion.data["administration_date"].as_string()
    stmt = select(Infusion.subject_id, given, Infusion.planned_date).where(Infusion.state == "given")
    if subject_ids is not None:
        ids = sorted(set(subject_ids))
        if not ids:
            return {}
        stmt = stmt.where(Infusion.subject_id.in_(ids))
    if site_ids is not None:
        stmt = stmt.join(Subject, Subject.id == Infusion.subject_id).where(
            Subject.site_id.in_(site_ids) if site_ids else false())
    out: dict[int, date] = {}
    for subject_id, administered, planned in db.session.execute(stmt):
        day = date.fromisoformat(administered) if administered else planned
        if subject_id not in out or day < out[subject_id]:
            out[subject_id] = day
    return out


def study_day(day: date | None, reference: date | None) -> int | None:
    """SDTM study day: day 1 is the reference day, the day before is -1 (no day 0)."""
    if day is None or reference is None:
        return None
    delta = (day - reference).days
    return delta + 1 if delta >= 0 else delta


# --- rows ------------------------------------------------------------------------------------

def report_state(due: datetime | None, reported: datetime | None, now: datetime) -> str | None:
    """The state of a reporting clock: on time / late / due / overdue (None: not started)."""
    due, reported = as_utc(due), as_utc(reported)
    if due is None:
        return None
    if reported is not None:
        return "on time" if reported <= due else "late"
    return "due" if now <= due else "overdue"


_N_LISTING = len(_LISTING_COLUMNS)


def _row(r, kind: str, first: Mapping[int, date], now: datetime) -> dict:
    """One listing row as the page and the exports use it. Positional unpacking: this
    runs 100,000 times in an export."""
    (ae_id, subject_id, number, subject, site, timezone, dose_level, category, term, soc, meddra_code, verbatim,
     grade, serious, related_nk, related_ld, related, dlt, onset, end, ongoing, outcome, status,
     treatment_emergent) = r[:_N_LISTING] if kind == "sae" else r
    reference = first.get(subject_id)
    if onset is None or reference is None:
        day = None
    else:
        day = (onset - reference).days
        if day >= 0:
            day += 1  # SDTM study day: no day 0
    row = {
        "ae_id": ae_id, "subject_id": subject_id, "subject": subject, "site": site, "timezone": timezone,
        "dose_level": dose_level, "day": day, "ae": number, "category": category, "term": term, "soc": soc,
        "meddra_code": meddra_code, "verbatim": verbatim, "grade": grade, "serious": serious,
        "related_nk": ATTRIBUTION_LABELS.get(related_nk, related_nk),
        "related_ld": ATTRIBUTION_LABELS.get(related_ld, related_ld), "related": related, "dlt": dlt,
        "onset": onset, "end": end if end is not None else ("Ongoing" if ongoing else None),
        "outcome": OUTCOME_LABELS.get(outcome, outcome), "status": status,
        "treatment_emergent": treatment_emergent,
    }
    if kind == "sae":
        (expectedness, action, data, awareness_at, sae_due_at, sae_reported_at, susar, susar_due_at,
         susar_reported_at) = r[_N_LISTING:]
        data = data or {}
        row.update({
            "expectedness": (expectedness or "").capitalize() or None,
            "action": ACTION_LABELS.get(action, action),
            "criteria": "; ".join(CRITERIA_SHORT[c] for c in CRITERIA_CODES if data.get(c)) or None,
            "awareness_at": as_utc(awareness_at), "sae_due_at": as_utc(sae_due_at),
            "sae_reported_at": as_utc(sae_reported_at), "susar": susar,
            "susar_due_at": as_utc(susar_due_at), "susar_reported_at": as_utc(susar_reported_at),
            "awareness": fmt_utc(awareness_at) or None, "sae_due": fmt_utc(sae_due_at) or None,
            "sae_reported": fmt_utc(sae_reported_at) or None,
            "sae_state": report_state(sae_due_at, sae_reported_at, now),
            "susar_due": fmt_utc(susar_due_at) or None, "susar_reported": fmt_utc(susar_reported_at) or None,
            "susar_state": report_state(susar_due_at, susar_reported_at, now) if susar else None,
        })
    return row


@dataclass
class Page:
    rows: list[dict]
    total: int
    page: int
    pages: int
    per_page: int = PAGE_SIZE
    filters: Filters = field(default_factory=Filters)


def listing_page(kind: str, filters: Filters, site_ids: list[int] | None, *, per_page: int = PAGE_SIZE,
                 now: datetime | None = None) -> Page:
    """One page of a listing ("ae", "sae" or "dlt"), ordered and limited by the database;
    the study day is computed for the page's rows only (one query for their subjects'
    first infusions). A page past the end shows the last page."""
    total = count(kind, filters, site_ids)
    pages = max(1, -(-total // per_page))
    page = min(max(filters.page, 1), pages)
    stmt = (_listing_select(kind, filters, site_ids).order_by(*_order_by(filters))
            .limit(per_page).offset((page - 1) * per_page))
    result = db.session.execute(stmt).all()
    first = first_infusion_dates({r.subject_id for r in result})
    now = now or utcnow()
    rows = [_row(r, kind, first, now) for r in result]
    return Page(rows, total, page, pages, per_page, replace(filters, page=page))


def iter_listing(kind: str, filters: Filters, site_ids: list[int] | None, *,
                 now: datetime | None = None) -> Iterator[dict]:
    """Every row of a listing in the listing's order, streamed from the database
    (YIELD_PER rows at a time, plain columns, never ORM objects): for the exports.
    The first-infusion dates of the sites' subjects are read once, before the rows."""
    first = first_infusion_dates(None, site_ids)
    now = now or utcnow()
    stmt = _listing_select(kind, filters, site_ids).order_by(*_order_by(filters))
    result = _stream(stmt)
    try:
        for r in result:
            yield _row(r, kind, first, now)
    finally:
        result.close()


#: what `iter_listing_values` reads for the AE and DLT listings: their export columns
#: (ae_columns) and what the study day needs, nothing else
_EXPORT_COLUMNS = (
    AdverseEvent.subject_id, func.coalesce(Subject.subject_number, Subject.screening_number).label("subject"),
    Site.code.label("site"), Subject.dose_level, AdverseEvent.number, AdverseEvent.term, AdverseEvent.soc,
    AdverseEvent.meddra_code, AdverseEvent.verbatim, AdverseEvent.grade, AdverseEvent.serious,
    AdverseEvent.related_nk, AdverseEvent.related_ld, AdverseEvent.dlt, AdverseEvent.onset_date,
    AdverseEvent.end_date, AdverseEvent.ongoing, AdverseEvent.outcome, AdverseEvent.status,
)


def listing_columns(kind: str) -> list:
    """The export columns of a listing ("ae", "sae" or "dlt")."""
    return sae_columns() if kind == "sae" else ae_columns()


def iter_listing_values(kind: str, filters: Filters, site_ids: list[int] | None, *,
                        now: datetime | None = None, for_csv: bool = False) -> Iterator[tuple]:
    """The rows of `iter_listing` as tuples in the order of `listing_columns(kind)`,
    with the same values (the CSV and XLSX exports read these): streamed the same way.

    For the AE and DLT listings (100,000 rows and more) the select holds only the
    export's columns and each row becomes its tuple in one step, without the row dict
    (`_row`) the page uses: the per-row work of an export is most of its time. The SAE
    listing (its clocks and criteria need `_row`) goes through the dicts.

    `for_csv`: values that only need to read the same in a CSV (`tabular.csv_stream`
    writes a date and its ISO text alike, and a 1/0 like True/False in a bool column):
    on SQLite the rows then come straight from the driver, dates as their stored ISO
    text and booleans as 1/0, past SQLAlchemy's row processing (the CSV's largest cost
    after the query itself)."""
    if kind == "sae":
        get = itemgetter(*[c.key for c in listing_columns(kind)])
        yield from map(get, iter_listing(kind, filters, site_ids, now=now))
        return
    first = {sid: day.toordinal() for sid, day in first_infusion_dates(None, site_ids).items()}
    attribution, outcomes = ATTRIBUTION_LABELS.get, OUTCOME_LABELS.get
    reference = first.get
    stmt = _listing_select(kind, filters, site_ids, columns=_EXPORT_COLUMNS).order_by(*_order_by(filters))
    raw = for_csv and db.session.get_bind().dialect.name == "sqlite"
    ordinals: dict = {}  # onset (ISO text on SQLite's raw rows) -> day number: a few hundred distinct dates
    if raw:
        result = db.session.connection().execute(stmt)  # no yield_per: SQLite's cursor steps as it is read
        rows = _raw_rows(result.cursor)
    else:
        result = _stream(stmt)
        rows = result
    try:
        for (subject_id, subject, site, dose_level, number, term, soc, meddra_code, verbatim, grade, serious,
             related_nk, related_ld, dlt, onset, end, ongoing, outcome, status) in rows:
            day = reference(subject_id)
            if day is not None and onset is not None:
                ordinal = ordinals.get(onset)
                if ordinal is None:
                    ordinal = ordinals[onset] = (date.fromisoformat(onset) if onset.__class__ is str
                                                 else onset).toordinal()
                day = ordinal - day
                if day >= 0:
                    day += 1  # SDTM study day: no day 0
            else:
                day = None
            yield (subject, site, dose_level, day, number, term, soc, meddra_code, verbatim, grade, serious,
                   attribution(related_nk, related_nk), attribution(related_ld, related_ld), dlt, onset,
                   end if end is not None else ("Ongoing" if ongoing else None), outcomes(outcome, outcome),
                   status)
    finally:
        result.close()


def _raw_rows(cursor) -> Iterator[tuple]:
    while True:
        batch = cursor.fetchmany(YIELD_PER)
        if not batch:
            return
        yield from batch


def _stream(stmt):
    """Rows of a Core select, YIELD_PER at a time (a server-side cursor on PostgreSQL),
    on the session's connection and transaction but past the ORM's result layer: the
    export needs tuples, and the ORM's per-row work would double its time."""
    return db.session.connection().execute(stmt.execution_options(yield_per=YIELD_PER))


# --- SDTM AE source rows -----------------------------------------------------------------------

def _sdtm_where(site_ids: list[int] | None) -> list:
    where = [AdverseEvent.status == "complete"]
    _scope(where, site_ids, AdverseEvent.site_id)
    return where


def count_sdtm(site_ids: list[int] | None) -> int:
    return db.session.execute(select(func.count()).select_from(AdverseEvent)
                              .where(*_sdtm_where(site_ids))).scalar_one()


def iter_sdtm_source(site_ids: list[int] | None, *, studyid: str) -> Iterator[dict]:
    """The input of `exports.sdtm.ae_domain`: every complete AE of the sites (drafts and
    removed AEs are not data), in the order it asks for (subject, onset date, AE id),
    streamed. USUBJID is "<study id>-<subject number>"; RFSTDTC the first NK-cell
    infusion given."""
    first = first_infusion_dates(None, site_ids)
    ae = AdverseEvent
    where = _sdtm_where(site_ids)
    subject = func.coalesce(Subject.subject_number, Subject.screening_number)
    stmt = (select(ae.subject_id, subject.label("subject"), ae.number, ae.term, ae.verbatim, ae.soc,
                   ae.meddra_code, ae.grade, ae.serious, ae.related, ae.related_nk, ae.related_ld, ae.action,
                   ae.outcome, ae.onset_date, ae.end_date, ae.ongoing, ae.data)
            .join(Subject, Subject.id == ae.subject_id).where(*where)
            .order_by(subject, ae.onset_date.asc().nulls_last(), ae.id))
    result = _stream(stmt)
    try:
        for r in result:
            data = r.data or {}
            yield {
                "usubjid": f"{studyid}-{r.subject}", "ae_number": r.number, "term": r.term,
                "verbatim": r.verbatim, "soc": r.soc, "meddra_code": r.meddra_code, "grade": r.grade,
                "serious": r.serious, "related": r.related, "related_nk": r.related_nk,
                "related_ld": r.related_ld, "action": r.action, "outcome": r.outcome,
                "onset_date": r.onset_date, "end_date": r.end_date, "ongoing": r.ongoing,
                "rfstdtc": first.get(r.subject_id),
                **{code: bool(data.get(code)) for code in CRITERIA_CODES},
            }
    finally:
        result.close()


# --- summaries -------------------------------------------------------------------------------------

OVERALL = "Overall"


def _infused(subject_column):
    """The subject received at least one NK-cell infusion (the safety population)."""
    return subject_column.in_(select(Infusion.subject_id).where(Infusion.state == "given"))


def safety_population(filters: Filters, site_ids: list[int] | None,
                      dose_levels: Iterable[str] = ()) -> dict[str, int]:
    """N per dose level (and OVERALL): subjects with at least one NK-cell infusion given,
    of the user's sites, narrowed by the site and dose-level filters. Every dose level of
    `dose_levels` is a key (N may be 0); subjects without a dose level count in OVERALL."""
    where = [_infused(Subject.id)]
    _scope(where, site_ids, Subject.site_id)
    if filters.site:
        where.append(Subject.site_id == _site_id_of(filters.site))
    if filters.dose_level:
        where.append(Subject.dose_level == filters.dose_level)
    levels = [filters.dose_level] if filters.dose_level else list(dose_levels)
    out = {level: 0 for level in levels}
    total = 0
    for level, n in db.session.execute(select(Subject.dose_level, func.count()).where(*where)
                                       .group_by(Subject.dose_level)):
        total += n
        if level is not None:
            out[level] = out.get(level, 0) + n
    out[OVERALL] = total
    return out


#: the filters a summary honours; grade_min makes no sense across grade columns
SUMMARY_IGNORES = ("grade_min",)


def _summary_ae_where(filters: Filters, site_ids: list[int] | None) -> list:
    where = _conditions(filters, site_ids, grade=False, joined=True)
    where += [AdverseEvent.term.is_not(None), _infused(AdverseEvent.subject_id)]
    return where


def _worst_counts(filters: Filters, site_ids: list[int] | None) -> list:
    """(level, soc, term, dose level, worst grade, subjects) for the three levels of the
    summary: 0 = any AE, 1 = per SOC, 2 = per SOC and term. One statement, one pass over
    the AEs: the worst grade per subject and term (a CTE, materialised because it is
    used three times on SQLite >= 3.35 and PostgreSQL >= 12), from which the SOC and
    any-AE worst grades per subject follow (the worst of the worsts); each level is then
    counted by dose level and worst grade. Every GROUP BY runs in the database."""
    ae = AdverseEvent
    per_term = (select(ae.subject_id.label("sid"), Subject.dose_level.label("dl"), ae.soc.label("soc"),
                       ae.term.label("term"), func.max(ae.grade).label("worst"))
                .select_from(ae).join(Subject, Subject.id == ae.subject_id)
                .where(*_summary_ae_where(filters, site_ids))
                .group_by(ae.subject_id, Subject.dose_level, ae.soc, ae.term)).cte("per_term")
    text_null = cast(null(), String)
    terms = (select(literal(2).label("level"), per_term.c.soc, per_term.c.term, per_term.c.dl,
                    per_term.c.worst, func.count().label("n"))
             .group_by(per_term.c.soc, per_term.c.term, per_term.c.dl, per_term.c.worst))
    per_soc = (select(per_term.c.sid, per_term.c.dl, per_term.c.soc, func.max(per_term.c.worst).label("worst"))
               .group_by(per_term.c.sid, per_term.c.dl, per_term.c.soc).subquery())
    socs = (select(literal(1), per_soc.c.soc, text_null, per_soc.c.dl, per_soc.c.worst, func.count())
            .group_by(per_soc.c.soc, per_soc.c.dl, per_soc.c.worst))
    per_subject = (select(per_term.c.sid, per_term.c.dl, func.max(per_term.c.worst).label("worst"))
                   .group_by(per_term.c.sid, per_term.c.dl).subquery())
    anys = (select(literal(0), text_null, text_null, per_subject.c.dl, per_subject.c.worst, func.count())
            .group_by(per_subject.c.dl, per_subject.c.worst))
    return db.session.execute(union_all(terms, socs, anys)).all()


def _empty_cells() -> dict:
    return {**{g: 0 for g in GRADES}, "any": 0, "ge3": 0}


def _add(cells: dict, worst: int | None, n: int) -> None:
    cells["any"] += n
    if worst is not None:
        cells[worst] = cells.get(worst, 0) + n
        if worst >= 3:
            cells["ge3"] += n


def summary_table(filters: Filters, site_ids: list[int] | None, dose_levels: Iterable[str]) -> dict:
    """Subjects with at least one AE, by SOC and term x worst grade (1-5, any, >= 3), per
    dose level and overall (PROTOCOL 8). A subject counts once per row, at its worst
    grade for that row; an AE without a grade yet (a draft) counts in "Any" only.

    {"groups": [dose levels..., OVERALL], "N": {group: n}, "rows": [{"level": "all"|"soc"|
    "term", "soc", "term", "cells": {group: {1..5, "any", "ge3": n}}}]}: the "Any adverse
    event" row first, then each SOC (alphabetical) followed by its terms (alphabetical)."""
    population = safety_population(filters, site_ids, dose_levels)
    groups = [g for g in population if g != OVERALL] + [OVERALL]

    def cells_of(counts: Iterable) -> dict:
        cells = {g: _empty_cells() for g in groups}
        for level, worst, n in counts:
            if level in cells:
                _add(cells[level], worst, n)
            _add(cells[OVERALL], worst, n)
        return cells

    counts: tuple[list, dict, dict] = ([], {}, {})  # any AE; by SOC; by (SOC, term)
    for level, soc, term, dose_level, worst, n in _worst_counts(filters, site_ids):
        bucket = counts[level] if level == 0 else counts[level].setdefault(soc if level == 1 else (soc, term), [])
        bucket.append((dose_level, worst, n))
    rows = [{"level": "all", "soc": "Any adverse event", "term": None, "cells": cells_of(counts[0])}]
    by_soc, by_term = counts[1], counts[2]
    terms_of: dict[str, list[str]] = {}
    for soc, term in by_term:
        terms_of.setdefault(soc, []).append(term)
    for soc in sorted(by_soc, key=lambda s: (s is None, (s or "").lower())):
        rows.append({"level": "soc", "soc": soc or "(no system organ class)", "term": None,
                     "cells": cells_of(by_soc[soc])})
        for term in sorted(terms_of.get(soc, ()), key=str.lower):
            rows.append({"level": "term", "soc": soc, "term": term, "cells": cells_of(by_term[soc, term])})
    keys = [key for key, _ in SUMMARY_CELLS]
    for row in rows:  # the counts in column order, for the page and the exports
        row["values"] = [row["cells"][group][key] for group in groups for key in keys]
    return {"groups": groups, "N": population, "rows": rows, "ignored": SUMMARY_IGNORES}


SUMMARY_CELLS = (*((g, f"Grade {g}") for g in GRADES), ("any", "Any grade"), ("ge3", "Grade ≥ 3"))


def summary_export_rows(table: dict) -> list[dict]:
    """The summary as flat rows for the exports: soc, term, then <group>_<cell> counts."""
    out = []
    names = [f"{group}_{key}" for group in table["groups"] for key, _ in SUMMARY_CELLS]
    for row in table["rows"]:
        flat = {"soc": row["soc"], "term": row["term"] or ("All terms" if row["level"] == "soc" else None)}
        flat.update(zip(names, row["values"]))
        out.append(flat)
    return out


def _crs_condition(kind: str):
    ae = AdverseEvent
    if kind == "crs":
        return or_(ae.category == "crs", ae.term == CRS_TERM)
    return or_(ae.category == "icans", and_(ae.term == ICANS_TERM, ae.verbatim == ICANS_VERBATIM))


def _median_range(values: list[int]) -> dict | None:
    if not values:
        return None
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def crs_icans_summary(filters: Filters, site_ids: list[int] | None, dose_levels: Iterable[str]) -> dict:
    """CRS and ICANS per dose level and overall (issue 4): subjects with the event n/N,
    subjects by worst grade, time to onset and duration.

    - An event is an AE of category crs/icans (opened from the assessments), or recorded
      under the CTCAE term "Cytokine release syndrome" / the ICANS verbatim term.
    - Time to onset: days from the first NK-cell infusion to the onset of the subject's
      first event (the day of the infusion is day 0, as CAR-NK/CAR-T reports count it;
      the listings' study day counts it as day 1). One value per subject.
    - Duration: end - onset + 1 days, per event; ongoing events (no end date) are left
      out of the median and counted.

    {"groups", "N", "kinds": {"crs"|"icans": {group: {"n", "pct", "grades": {1..5: n},
    "onset": median_range|None, "duration": median_range|None, "ongoing": n, "events": n}}}}
    """
    population = safety_population(filters, site_ids, dose_levels)
    groups = [g for g in population if g != OVERALL] + [OVERALL]
    first = first_infusion_dates(None, site_ids)
    out = {"groups": groups, "N": population, "kinds": {}, "ignored": SUMMARY_IGNORES}
    kind_of = case((_crs_condition("crs"), "crs"), (_crs_condition("icans"), "icans"))
    stmt = (select(kind_of.label("kind"), AdverseEvent.subject_id, Subject.dose_level, AdverseEvent.grade,
                   AdverseEvent.onset_date, AdverseEvent.end_date)
            .join(Subject, Subject.id == AdverseEvent.subject_id)
            .where(*_summary_ae_where(filters, site_ids), or_(_crs_condition("crs"), _crs_condition("icans")))
            .order_by(AdverseEvent.subject_id, AdverseEvent.onset_date, AdverseEvent.id))
    # one pass: per (kind, subject) the dose level, worst grade and first onset; per
    # (kind, dose level) the durations of ended events and the ongoing ones
    subjects: dict[tuple[str, int], list] = {}
    durations: dict[tuple[str, str | None], list[int]] = {}
    ongoing: dict[tuple[str, str | None], int] = {}
    events: dict[tuple[str, str | None], int] = {}
    for kind, sid, level, grade, onset, end in db.session.execute(stmt).tuples():
        entry = subjects.setdefault((kind, sid), [level, grade, onset])
        if grade is not None and (entry[1] is None or grade > entry[1]):
            entry[1] = grade
        if onset is not None and (entry[2] is None or onset < entry[2]):
            entry[2] = onset
        events[kind, level] = events.get((kind, level), 0) + 1
        if end is None:
            ongoing[kind, level] = ongoing.get((kind, level), 0) + 1
        elif onset is not None:
            durations.setdefault((kind, level), []).append((end - onset).days + 1)
    for kind in ("crs", "icans"):
        per_group: dict[str, dict] = {}
        for group in groups:
            def mine(key, group=group, kind=kind):
                return key[0] == kind and (group == OVERALL or key[1] == group)

            chosen = [(sid, v) for (k, sid), v in subjects.items() if k == kind and (group == OVERALL or v[0] == group)]
            n, total = len(chosen), population.get(group, 0)
            to_onset = [(v[2] - first[sid]).days for sid, v in chosen if v[2] is not None and sid in first]
            per_group[group] = {
                "n": n, "N": total, "pct": (100 * n / total) if total else None,
                "grades": {g: sum(1 for _, v in chosen if v[1] == g) for g in GRADES},
                "onset": _median_range(to_onset),
                "duration": _median_range([d for key, ds in durations.items() if mine(key) for d in ds]),
                "ongoing": sum(v for key, v in ongoing.items() if mine(key)),
                "events": sum(v for key, v in events.items() if mine(key)),
            }
        out["kinds"][kind] = per_group
    return out


def _fmt_number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def fmt_median_range(stats: dict | None) -> str:
    if not stats:
        return "—"
    return f"{_fmt_number(stats['median'])} ({stats['min']}–{stats['max']}), n={stats['n']}"


def fmt_n_pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.1f}%)" if total else f"{n}/0"


def crs_icans_rows(summary: dict) -> list[dict]:
    """The CRS/ICANS summary as text rows (measure x group), for the page and the exports."""
    label = {"crs": "CRS", "icans": "ICANS"}
    rows = []
    for kind, per_group in summary["kinds"].items():
        def line(measure, fn):
            rows.append({"event": label[kind], "measure": measure,
                         **{group: fn(per_group[group]) for group in summary["groups"]}})
        line(f"Subjects with {label[kind]}, n/N (%)", lambda s: fmt_n_pct(s["n"], s["N"]))
        for g in GRADES:
            line(f"Worst grade {g}, n", lambda s, g=g: str(s["grades"][g]))
        line("Time to onset, days from first infusion: median (range)", lambda s: fmt_median_range(s["onset"]))
        line("Duration, days: median (range) of ended events", lambda s: fmt_median_range(s["duration"]))
        line("Events ongoing (not in the duration), n", lambda s: str(s["ongoing"]))
    return rows


# --- export columns (cellstudy.exports.tabular) -----------------------------------------------------

def _columns():
    from ..exports.tabular import Column

    return Column


def ae_columns() -> list:
    """The AE listing's columns (the DLT listing has the same): keys of the row dicts."""
    Column = _columns()
    return [
        Column("subject", "Subject", 11), Column("site", "Site", 6), Column("dose_level", "Dose level", 9),
        Column("day", "Study day", 8, "int"), Column("ae", "AE", 5, "int"), Column("term", "CTCAE term", 30),
        Column("soc", "System organ class", 30), Column("meddra_code", "MedDRA code", 11),
        Column("verbatim", "Verbatim term", 26), Column("grade", "Worst grade", 7, "int"),
        Column("serious", "Serious", 7, "bool"), Column("related_nk", "Attribution NK cells", 12),
        Column("related_ld", "Attribution lymphodepletion", 14), Column("dlt", "DLT", 5, "bool"),
        Column("onset", "Onset", 11, "date"), Column("end", "End", 11, "date"),
        Column("outcome", "Outcome", 20), Column("status", "Form status", 9),
    ]


def sae_columns() -> list:
    """The SAE listing's columns; times are UTC ("2026-01-05 10:00 UTC")."""
    Column = _columns()
    return [
        Column("subject", "Subject", 11), Column("site", "Site", 6), Column("dose_level", "Dose level", 9),
        Column("ae", "AE", 5, "int"), Column("term", "CTCAE term", 28), Column("verbatim", "Verbatim term", 24),
        Column("grade", "Worst grade", 7, "int"), Column("onset", "Onset", 11, "date"),
        Column("criteria", "Seriousness criteria", 22), Column("related_nk", "Attribution NK cells", 12),
        Column("related_ld", "Attribution lymphodepletion", 14), Column("expectedness", "Expectedness", 11),
        Column("outcome", "Outcome", 18), Column("awareness", "Site aware (UTC)", 18),
        Column("sae_due", "SAE report due (UTC)", 18), Column("sae_reported", "SAE report submitted (UTC)", 18),
        Column("sae_state", "SAE report", 9), Column("susar", "SUSAR", 6, "bool"),
        Column("susar_due", "SUSAR report due (UTC)", 18),
        Column("susar_reported", "SUSAR report submitted (UTC)", 18), Column("susar_state", "SUSAR report", 9),
        Column("status", "Form status", 9),
    ]


def group_label(group: str, population: Mapping[str, int]) -> str:
    return f"{group} (N={population.get(group, 0)})"


def summary_columns(table: dict) -> list:
    Column = _columns()
    out = [Column("soc", "System organ class", 34), Column("term", "CTCAE term", 34)]
    for group in table["groups"]:
        for key, label in SUMMARY_CELLS:
            out.append(Column(f"{group}_{key}", f"{group_label(group, table['N'])} {label}", 8, "int"))
    return out


def crs_icans_columns(summary: dict) -> list:
    Column = _columns()
    return [Column("event", "Event", 8), Column("measure", "Measure", 40),
            *(Column(group, group_label(group, summary["N"]), 18) for group in summary["groups"])]
