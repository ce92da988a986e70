"""Safety listings for investigators (issue 4; PROTOCOL 8): the AE, SAE and DLT listings'
rows, a page of them for the screen, every one of them for the exports, and their columns.

No Flask request here: every function takes the user's sites (`sites`, a list of site ids
or ALL_SITES, as `auth.policy.user_sites()` gives them) and a `Filters` value (filters.py),
and returns plain dicts, the same dicts the page shows and the exports write
(cellstudy.exports.tabular); the SQL is in queries.py, the summaries in
summaries.py, the SDTM AE source rows in sdtm_source.py.

What the listings hold (decisions, docs/decisions.md):
- Every AE that is not removed (status 'deleted'), complete **and draft**: a draft is
  a safety signal already (an entered grade 3 holds the next infusion, PROTOCOL 5.2);
  its "Form status" column says "draft" so nobody reads it as final. The SDTM AE domain
  is the exception: complete AEs only (a draft is not data yet).
- "Study day" of an AE = onset - first NK-cell infusion given + 1 when the onset is on or
  after it, else onset - first infusion (there is no day 0): the SDTM --DY convention,
  with the first infusion as the reference start (RFSTDTC); `rules.study_day` is the
  rule. Empty while no infusion has been given.
- The SAE and SUSAR report states are `rules.clock_state`'s (the AE pages' clocks),
  written "on time" / "late" / "due" / "overdue".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from operator import itemgetter

from ..auth.models import Site
from ..auth.policy import ALL_SITES, Sites
from ..enrollment.models import Subject
from ..extensions import db
from ..pagination import page_count, page_in
from ..timeutil import as_utc, fmt_utc, utcnow
from ..adverse_events.fields import ACTIONS, ATTRIBUTIONS, CRITERIA_CODES, OUTCOMES
from ..exports.tabular import Column
from .filters import Filters
from .queries import LISTING_COLUMNS, count, first_infusion_dates, listing_order, listing_select, raw_rows, stream
from ..adverse_events.models import AdverseEvent
from ..adverse_events.rules import DUE, OVERDUE, REPORTED, REPORTED_LATE, clock_state, study_day

PAGE_SIZE = 50

ATTRIBUTION_LABELS = dict(ATTRIBUTIONS)
OUTCOME_LABELS = dict(OUTCOMES)
ACTION_LABELS = dict(ACTIONS)
CRITERIA_SHORT = {
    "sae_death": "Death",
    "sae_life_threatening": "Life-threatening",
    "sae_hospitalisation": "Hospitalisation",
    "sae_disability": "Disability",
    "sae_congenital_anomaly": "Congenital anomaly",
    "sae_important_medical_event": "Important medical event",
}

#: how the listings and their exports write a clock state (rules.CLOCK_STATES)
REPORT_STATE_LABELS = {REPORTED: "on time", REPORTED_LATE: "late", DUE: "due", OVERDUE: "overdue"}


# --- rows ------------------------------------------------------------------------------------


def report_state(due: datetime | None, reported: datetime | None, now: datetime) -> str | None:
    """The state of a reporting clock as the listings write it: on time / late / due /
    overdue (rules.clock_state); None: not started."""
    due, reported = as_utc(due), as_utc(reported)
    if due is None:
        return None
    return REPORT_STATE_LABELS[clock_state(due, reported, as_utc(now))]


_N_LISTING = len(LISTING_COLUMNS)


def _row(r, kind: str, first: Mapping[int, date], now: datetime) -> dict:
    """One listing row as the page and the exports use it. Positional unpacking: this
    runs 100,000 times in an export."""
    (
        ae_id,
        subject_id,
        number,
        subject,
        site,
        timezone,
        dose_level,
        category,
        term,
        soc,
        meddra_code,
        verbatim,
        grade,
        serious,
        related_nk,
        related_ld,
        related,
        dlt,
        onset,
        end,
        ongoing,
        outcome,
        status,
        treatment_emergent,
    ) = r[:_N_LISTING] if kind == "sae" else r
    day = study_day(onset, first.get(subject_id))
    row = {
        "ae_id": ae_id,
        "subject_id": subject_id,
        "subject": subject,
        "site": site,
        "timezone": timezone,
        "dose_level": dose_level,
        "day": day,
        "ae": number,
        "category": category,
        "term": term,
        "soc": soc,
        "meddra_code": meddra_code,
        "verbatim": verbatim,
        "grade": grade,
        "serious": serious,
        "related_nk": ATTRIBUTION_LABELS.get(related_nk, related_nk),
        "related_ld": ATTRIBUTION_LABELS.get(related_ld, related_ld),
        "related": related,
        "dlt": dlt,
        "onset": onset,
        "end": end if end is not None else ("Ongoing" if ongoing else None),
        "outcome": OUTCOME_LABELS.get(outcome, outcome),
        "status": status,
        "treatment_emergent": treatment_emergent,
    }
    if kind == "sae":
        (
            expectedness,
            action,
            data,
            awareness_at,
            sae_due_at,
            sae_reported_at,
            susar,
            susar_due_at,
            susar_reported_at,
        ) = r[_N_LISTING:]
        data = data or {}
        row.update(
            {
                "expectedness": (expectedness or "").capitalize() or None,
                "action": ACTION_LABELS.get(action, action),
                "criteria": "; ".join(CRITERIA_SHORT[c] for c in CRITERIA_CODES if data.get(c)) or None,
                "awareness_at": as_utc(awareness_at),
                "sae_due_at": as_utc(sae_due_at),
                "sae_reported_at": as_utc(sae_reported_at),
                "susar": susar,
                "susar_due_at": as_utc(susar_due_at),
                "susar_reported_at": as_utc(susar_reported_at),
                "awareness": fmt_utc(awareness_at) or None,
                "sae_due": fmt_utc(sae_due_at) or None,
                "sae_reported": fmt_utc(sae_reported_at) or None,
                "sae_state": report_state(sae_due_at, sae_reported_at, now),
                "susar_due": fmt_utc(susar_due_at) or None,
                "susar_reported": fmt_utc(susar_reported_at) or None,
                "susar_state": report_state(susar_due_at, susar_reported_at, now) if susar else None,
            }
        )
    return row


@dataclass
class Page:
    rows: list[dict]
    total: int
    page: int
    pages: int
    per_page: int = PAGE_SIZE
    filters: Filters = field(default_factory=Filters)


def listing_page(
    kind: str, filters: Filters, sites: Sites, *, per_page: int = PAGE_SIZE, now: datetime | None = None
) -> Page:
    """One page of a listing ("ae", "sae" or "dlt"), ordered and limited by the database;
    the study day is computed for the page's rows only (one query for their subjects'
    first infusions). A page past the end shows the last page."""
    total = count(kind, filters, sites)
    pages = page_count(total, per_page)
    page = page_in(total, filters.page, per_page)
    stmt = (
        listing_select(kind, filters, sites)
        .order_by(*listing_order(filters))
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    result = db.session.execute(stmt).all()
    # the page's own subjects, already scoped by the listing's query: no second site filter (a join)
    first = first_infusion_dates({r.subject_id for r in result}, ALL_SITES)
    now = now or utcnow()
    rows = [_row(r, kind, first, now) for r in result]
    return Page(rows, total, page, pages, per_page, replace(filters, page=page))


def iter_listing(kind: str, filters: Filters, sites: Sites, *, now: datetime | None = None) -> Iterator[dict]:
    """Every row of a listing in the listing's order, streamed from the database
    (YIELD_PER rows at a time, plain columns, never ORM objects): for the exports.
    The first-infusion dates of the sites' subjects are read once, before the rows."""
    first = first_infusion_dates(None, sites)
    now = now or utcnow()
    stmt = listing_select(kind, filters, sites).order_by(*listing_order(filters))
    result = stream(stmt)
    try:
        for r in result:
            yield _row(r, kind, first, now)
    finally:
        result.close()


#: what `iter_listing_values` reads for the AE and DLT listings: their export columns
#: (ae_columns) and what the study day needs, nothing else
_EXPORT_COLUMNS = (
    AdverseEvent.subject_id,
    Subject.label.label("subject"),
    Site.code.label("site"),
    Subject.dose_level,
    AdverseEvent.number,
    AdverseEvent.term,
    AdverseEvent.soc,
    AdverseEvent.meddra_code,
    AdverseEvent.verbatim,
    AdverseEvent.grade,
    AdverseEvent.serious,
    AdverseEvent.related_nk,
    AdverseEvent.related_ld,
    AdverseEvent.dlt,
    AdverseEvent.onset_date,
    AdverseEvent.end_date,
    AdverseEvent.ongoing,
    AdverseEvent.outcome,
    AdverseEvent.status,
)


def listing_columns(kind: str) -> list:
    """The export columns of a listing ("ae", "sae" or "dlt")."""
    return sae_columns() if kind == "sae" else ae_columns()


def iter_listing_values(
    kind: str, filters: Filters, sites: Sites, *, now: datetime | None = None, for_csv: bool = False
) -> Iterator[tuple]:
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
        yield from map(get, iter_listing(kind, filters, sites, now=now))
        return
    attribution, outcomes = ATTRIBUTION_LABELS.get, OUTCOME_LABELS.get
    reference = first_infusion_dates(None, sites).get
    stmt = listing_select(kind, filters, sites, columns=_EXPORT_COLUMNS).order_by(*listing_order(filters))
    raw = for_csv and db.session.get_bind().dialect.name == "sqlite"
    dates: dict = {}  # onset as ISO text (SQLite's raw rows) -> date: a few hundred distinct dates
    if raw:
        result = db.session.connection().execute(stmt)  # no yield_per: SQLite's cursor steps as it is read
        rows = raw_rows(result.cursor)
    else:
        result = stream(stmt)
        rows = result
    try:
        for (
            subject_id,
            subject,
            site,
            dose_level,
            number,
            term,
            soc,
            meddra_code,
            verbatim,
            grade,
            serious,
            related_nk,
            related_ld,
            dlt,
            onset,
            end,
            ongoing,
            outcome,
            status,
        ) in rows:
            first = reference(subject_id)
            if first is None or onset is None:
                day = None
            elif onset.__class__ is str:
                day = dates.get(onset)
                if day is None:
                    day = dates[onset] = date.fromisoformat(onset)
                day = study_day(day, first)
            else:
                day = study_day(onset, first)
            yield (
                subject,
                site,
                dose_level,
                day,
                number,
                term,
                soc,
                meddra_code,
                verbatim,
                grade,
                serious,
                attribution(related_nk, related_nk),
                attribution(related_ld, related_ld),
                dlt,
                onset,
                end if end is not None else ("Ongoing" if ongoing else None),
                outcomes(outcome, outcome),
                status,
            )
    finally:
        result.close()


# --- export columns (cellstudy.exports.tabular) -----------------------------------------------------


# Every listing column once: key -> (label, kind); a listing picks its columns and widths.
_COLUMNS: dict[str, tuple[str, str]] = {
    "subject": ("Subject", "text"),
    "site": ("Site", "text"),
    "dose_level": ("Dose level", "text"),
    "day": ("Study day", "int"),
    "ae": ("AE", "int"),
    "term": ("CTCAE term", "text"),
    "soc": ("System organ class", "text"),
    "meddra_code": ("MedDRA code", "text"),
    "verbatim": ("Verbatim term", "text"),
    "grade": ("Worst grade", "int"),
    "serious": ("Serious", "bool"),
    "related_nk": ("Attribution NK cells", "text"),
    "related_ld": ("Attribution lymphodepletion", "text"),
    "dlt": ("DLT", "bool"),
    "onset": ("Onset", "date"),
    "end": ("End", "date"),
    "outcome": ("Outcome", "text"),
    "status": ("Form status", "text"),
    "criteria": ("Seriousness criteria", "text"),
    "expectedness": ("Expectedness", "text"),
    "awareness": ("Site aware (UTC)", "text"),
    "sae_due": ("SAE report due (UTC)", "text"),
    "sae_reported": ("SAE report submitted (UTC)", "text"),
    "sae_state": ("SAE report", "text"),
    "susar": ("SUSAR", "bool"),
    "susar_due": ("SUSAR report due (UTC)", "text"),
    "susar_reported": ("SUSAR report submitted (UTC)", "text"),
    "susar_state": ("SUSAR report", "text"),
}


def _columns(*picked: tuple[str, int]) -> list[Column]:
    return [Column(key, _COLUMNS[key][0], width, _COLUMNS[key][1]) for key, width in picked]


def ae_columns() -> list[Column]:
    """The AE listing's columns (the DLT listing has the same): keys of the row dicts."""
    return _columns(
        ("subject", 11),
        ("site", 6),
        ("dose_level", 9),
        ("day", 8),
        ("ae", 5),
        ("term", 30),
        ("soc", 30),
        ("meddra_code", 11),
        ("verbatim", 26),
        ("grade", 7),
        ("serious", 7),
        ("related_nk", 12),
        ("related_ld", 14),
        ("dlt", 5),
        ("onset", 11),
        ("end", 11),
        ("outcome", 20),
        ("status", 9),
    )


def sae_columns() -> list[Column]:
    """The SAE listing's columns; times are UTC ("2026-01-05 10:00 UTC")."""
    return _columns(
        ("subject", 11),
        ("site", 6),
        ("dose_level", 9),
        ("ae", 5),
        ("term", 28),
        ("verbatim", 24),
        ("grade", 7),
        ("onset", 11),
        ("criteria", 22),
        ("related_nk", 12),
        ("related_ld", 14),
        ("expectedness", 11),
        ("outcome", 18),
        ("awareness", 18),
        ("sae_due", 18),
        ("sae_reported", 18),
        ("sae_state", 9),
        ("susar", 6),
        ("susar_due", 18),
        ("susar_reported", 18),
        ("susar_state", 9),
        ("status", 9),
    )
