"""The SQL of the safety listings, summaries and SDTM source (issue 4; PROTOCOL 8).

No Flask request here: every function takes the user's sites (`sites`, a list of site ids
or ALL_SITES, as `auth.policy.user_sites()` gives them) and, for the listings, a `Filters` value.

- Sorting is done by the database on table columns (the study day is computed per row,
  so it is not a sort key); empty values sort last in both directions, the AE id breaks
  ties. Default: most recent onset first.
- SQLite plans without statistics: the listings tell it which index to read
  (`INDEXED BY`, rendered by `_sqlite_table_hint`; measured at 100,000 AEs,
  bench/RESULTS.md). PostgreSQL chooses these plans itself (migration 0006's indexes).
- The exports stream their rows (`stream`, `raw_rows`), YIELD_PER at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from typing import Any

from sqlalchemy import CursorResult, ScalarSelect, Select, Table, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join

from ..auth.models import Site
from ..auth.policy import ALL_SITES, Sites, within
from ..enrollment.models import Subject
from ..extensions import db
from ..infusions.models import Infusion
from ..adverse_events.fields import ATTRIBUTIONS, OUTCOMES
from .filters import Filters
from ..adverse_events.models import LISTING_COUNT_INDEX, AdverseEvent

#: rows fetched from the database at a time by the export iterators
YIELD_PER = 2000


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


def site_id_of(code: str) -> ScalarSelect[int]:
    return select(Site.id).where(Site.code == code).scalar_subquery()


def ae_conditions(filters: Filters, sites: Sites, *, grade: bool = True, joined: bool = False) -> list:
    """WHERE conditions over AdverseEvent. The dose level is the subject's: with the
    subject table `joined` a condition on it, else an IN over the subjects of that level
    (so a count needs no join)."""
    ae = AdverseEvent
    where = [ae.status != "deleted"]
    where.append(within(ae.site_id, sites))
    if filters.site:
        where.append(ae.site_id == site_id_of(filters.site))
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
        where.append(
            Subject.dose_level == filters.dose_level
            if joined
            else ae.subject_id.in_(select(Subject.id).where(Subject.dose_level == filters.dose_level))
        )
    return where


def _ordinal(column, choices) -> Any:
    """A choice column sorted in the order of its choices (unrelated < ... < definite)."""
    return case({code: i for i, (code, _) in enumerate(choices)}, value=column)


def _sort_columns(key: str) -> list:
    ae = AdverseEvent
    return {
        "subject": [Subject.label, ae.number],
        "site": [Site.code],
        "dose_level": [Subject.dose_level],
        "ae": [ae.number],
        "term": [ae.term],
        "soc": [ae.soc],
        "meddra_code": [ae.meddra_code],
        "verbatim": [ae.verbatim],
        "grade": [ae.grade],
        "serious": [ae.serious],
        "related_nk": [_ordinal(ae.related_nk, ATTRIBUTIONS)],
        "related_ld": [_ordinal(ae.related_ld, ATTRIBUTIONS)],
        "dlt": [ae.dlt],
        "onset": [ae.onset_date],
        "end": [ae.end_date],
        "outcome": [_ordinal(ae.outcome, OUTCOMES)],
        "status": [ae.status],
        "expectedness": [ae.expectedness],
        "awareness": [ae.awareness_at],
        "sae_due": [ae.sae_due_at],
        "sae_reported": [ae.sae_reported_at],
        "susar": [ae.susar],
        "susar_due": [ae.susar_due_at],
        "susar_reported": [ae.susar_reported_at],
    }[key]


#: sort keys whose columns are never empty: no NULLS LAST, which would keep SQLite (and
#: PostgreSQL, descending) from reading them in index order (ix_subject_label)
_NEVER_NULL_SORTS = frozenset({"subject"})


def listing_order(filters: Filters) -> list:
    descending = filters.dir == "desc"
    out = []
    for column in _sort_columns(filters.sort):
        column = column.desc() if descending else column.asc()
        out.append(column if filters.sort in _NEVER_NULL_SORTS else column.nulls_last())
    out.append(AdverseEvent.id.desc() if descending else AdverseEvent.id.asc())
    return out


LISTING_COLUMNS = (
    AdverseEvent.id.label("ae_id"),
    AdverseEvent.subject_id,
    AdverseEvent.number,
    Subject.label.label("subject"),
    Site.code.label("site"),
    Site.timezone.label("timezone"),
    Subject.dose_level,
    AdverseEvent.category,
    AdverseEvent.term,
    AdverseEvent.soc,
    AdverseEvent.meddra_code,
    AdverseEvent.verbatim,
    AdverseEvent.grade,
    AdverseEvent.serious,
    AdverseEvent.related_nk,
    AdverseEvent.related_ld,
    AdverseEvent.related,
    AdverseEvent.dlt,
    AdverseEvent.onset_date,
    AdverseEvent.end_date,
    AdverseEvent.ongoing,
    AdverseEvent.outcome,
    AdverseEvent.status,
    AdverseEvent.treatment_emergent,
)
_SAE_COLUMNS = (
    AdverseEvent.expectedness,
    AdverseEvent.action,
    AdverseEvent.data,
    AdverseEvent.awareness_at,
    AdverseEvent.sae_due_at,
    AdverseEvent.sae_reported_at,
    AdverseEvent.susar,
    AdverseEvent.susar_due_at,
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
    return left + " CROSS JOIN " + text[len(left) + len(" JOIN ") :]


#: SQLite plans without statistics: for these orders it is told which index of
#: adverse_event to read (the rows come out in the listing's order, or nearly: no sort
#: of every matching AE). Measured at 100,000 AEs (bench/RESULTS.md, issue 4).
#: - newest onset first: walk the onset index backwards, stop after a page;
#: - worst grade first: walk the (grade, id) index backwards;
#: - subject: read the subjects in label order (ix_subject_label) and each one's AEs
#:   through its subject index, instead of sorting every AE by subject.
#: PostgreSQL chooses these plans itself (migration 0006's indexes).
_SQLITE_SORT_INDEX = {
    ("onset", "desc"): "ix_adverse_event_onset",
    ("grade", "desc"): "ix_adverse_event_grade_id",
    ("subject", "asc"): "ix_adverse_event_subject_id",
    ("subject", "desc"): "ix_adverse_event_subject_id",
}


def listing_select(kind: str, filters: Filters, sites: Sites, *, columns: Sequence[Any] | None = None) -> Select:
    if kind not in LISTINGS:
        raise ValueError(f"unknown listing {kind!r}")
    where = listing_where(kind, filters, sites, joined=True)
    if columns is None:
        columns = LISTING_COLUMNS + (_SAE_COLUMNS if kind == "sae" else ())
    if filters.sort == "subject":
        base = _SubjectFirstJoin(Subject.__table__, AdverseEvent.__table__, Subject.id == AdverseEvent.subject_id)
        stmt = select(*columns).select_from(base)
    else:
        stmt = select(*columns).select_from(AdverseEvent).join(Subject, Subject.id == AdverseEvent.subject_id)
    stmt = stmt.join(Site, Site.id == AdverseEvent.site_id).where(*where)
    index = _SQLITE_SORT_INDEX.get((filters.sort, filters.dir))
    return stmt.with_hint(AdverseEvent, f"INDEXED BY {index}", "sqlite") if index else stmt


def listing_where(kind: str, filters: Filters, sites: Sites, *, joined: bool = False) -> list:
    where = ae_conditions(filters, sites, joined=joined)
    if kind == "sae":
        where.append(AdverseEvent.serious.is_(True))
    elif kind == "dlt":
        where.append(AdverseEvent.dlt.is_(True))
    return where


def count(kind: str, filters: Filters, sites: Sites) -> int:
    """The rows of a listing: a count with the same filters, over the AE table alone.

    Every column the filters use is in the index LISTING_COUNT_INDEX (migration 0006),
    so the count reads that index, never the table: PostgreSQL plans an index-only
    scan with its statistics; SQLite, which has none, is told to (INDEXED BY): left
    alone it would walk the site or grade index and look each row up in the table."""
    where = listing_where(kind, filters, sites)
    stmt = (
        select(func.count())
        .select_from(AdverseEvent)
        .where(*where)
        .with_hint(AdverseEvent, f"INDEXED BY {LISTING_COUNT_INDEX}", "sqlite")
    )
    return db.session.execute(stmt).scalar_one()


# --- first infusion ----------------------------------------------------------------------------


def first_infusion_dates(subject_ids: Iterable[int] | None, sites: Sites) -> dict[int, date]:
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
    if sites is not ALL_SITES:
        stmt = stmt.join(Subject, Subject.id == Infusion.subject_id).where(within(Subject.site_id, sites))
    out: dict[int, date] = {}
    for subject_id, administered, planned in db.session.execute(stmt):
        day = date.fromisoformat(administered) if administered else planned
        if subject_id not in out or day < out[subject_id]:
            out[subject_id] = day
    return out


# --- streaming ---------------------------------------------------------------------------------


def raw_rows(cursor: CursorResult) -> Iterator[tuple]:
    while True:
        batch = cursor.fetchmany(YIELD_PER)
        if not batch:
            return
        yield from batch


def stream(stmt: Select) -> CursorResult:
    """Rows of a Core select, YIELD_PER at a time (a server-side cursor on PostgreSQL),
    on the session's connection and transaction but past the ORM's result layer: the
    export needs tuples, and the ORM's per-row work would double its time."""
    return db.session.connection().execute(stmt.execution_options(yield_per=YIELD_PER))
