"""The audit trail viewer's queries (issue 6): filters, keyset pagination, site scoping.

One filtered select over audit_record, newest first. Pages are cut by id (keyset: `id <
before` or `id > after`), never by OFFSET, so page 1 and page 1,000 of a million-record
trail cost the same; every filter has an index that ends in id (see AuditRecord's
__table_args__), so the database reads only the rows it shows.

Site scoping (PROTOCOL 2): a user who is not a data manager sees only records of their
sites (records without a site -- user administration, reference loads -- are study-level
and shown to data managers only).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Iterator

from sqlalchemy import func, select

from ..auth.policy import ALL_SITES, Sites, covers, scoped
from ..extensions import db
from ..records.models import AuditRecord, Query
from ..timeutil import as_utc, site_zone
from . import labels
from ..auth.models import Site
from ..enrollment.models import Subject
from ..auth.models import User
from ..exports.tabular import Column

if TYPE_CHECKING:
    from sqlalchemy import Select

PAGE_SIZE = 50
EXPORT_BATCH = 2000
MAX_RANGE_DAYS = 3660


@dataclass(frozen=True)
class Filters:
    site: str | None = None  # site code
    subject_id: int | None = None
    form: str | None = None
    form_id: int | None = None
    field: str | None = None
    user: str | None = None  # username
    action: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def args(self) -> dict:
        """The query-string arguments that reproduce these filters."""
        out = {}
        for name in ("site", "form", "form_id", "field", "user", "action", "date_from", "date_to"):
            value = getattr(self, name)
            if value not in (None, ""):
                out[name] = value.isoformat() if isinstance(value, date) else value
        return out

    def active(self) -> dict:
        out = self.args()
        if self.subject_id is not None:
            out["subject_id"] = self.subject_id
        return out

    @classmethod
    def from_params(cls, params: dict) -> "Filters":
        """Back from `active()` (a background job's parameters)."""
        values = dict(params or {})
        for name in ("date_from", "date_to"):
            if values.get(name):
                values[name] = date.fromisoformat(values[name])
        for name in ("form_id", "subject_id"):
            if values.get(name) is not None:
                values[name] = int(values[name])
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        parts = []
        if self.site:
            parts.append(f"site {self.site}")
        if self.form:
            parts.append(f"form {labels.form_label(self.form)}" + (f" #{self.form_id}" if self.form_id else ""))
        if self.field:
            parts.append(f"field {labels.field_label(self.form, self.field)}")
        if self.user:
            parts.append(f"user {self.user}")
        if self.action:
            parts.append(f"action {labels.action_label(self.action)}")
        if self.date_from or self.date_to:
            parts.append(f"from {self.date_from or '…'} to {self.date_to or '…'}")
        return ", ".join(parts) or "none"


def _int(value: str, name: str, errors: dict) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors[name] = f"{name.replace('_', ' ').capitalize()}: a whole number, not {value!r}."
        return None
    if number < 1 or number > 2**62:
        errors[name] = f"{name.replace('_', ' ').capitalize()}: a positive number, not {value!r}."
        return None
    return number


def _date(value: str, name: str, label: str, errors: dict) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(value.strip())
    except (TypeError, ValueError):
        errors[name] = f"{label}: a date as YYYY-MM-DD, not {value!r}."
        return None


def parse_filters(
    args: Mapping[str, str], *, sites: list[str], subject_id: int | None = None
) -> tuple[Filters, dict[str, str]]:
    """Filters from the query string; a value that does not parse is left out and
    reported ({name: message}); it is never silently widened to "all"."""
    errors: dict[str, str] = {}
    site = (args.get("site") or "").strip().upper() or None
    if site and site not in sites:
        errors["site"] = f"Site: {site!r} is not one of your sites ({', '.join(sites) or 'none'})."
        site = None
    form = (args.get("form") or "").strip() or None
    if form and len(form) > 40:
        errors["form"] = "Form: at most 40 characters."
        form = None
    field_ = (args.get("field") or "").strip() or None
    if field_ and len(field_) > 64:
        errors["field"] = "Field: at most 64 characters."
        field_ = None
    user = (args.get("user") or "").strip() or None
    if user and len(user) > 64:
        errors["user"] = "User: at most 64 characters."
        user = None
    action = (args.get("action") or "").strip() or None
    if action and len(action) > 32:
        errors["action"] = "Action: at most 32 characters."
        action = None
    form_id = _int(args.get("form_id"), "form_id", errors)
    if form_id is not None and not form:
        errors["form_id"] = "Form id: choose the form type too."
        form_id = None
    date_from = _date(args.get("date_from"), "date_from", "From", errors)
    date_to = _date(args.get("date_to"), "date_to", "To", errors)
    if date_from and date_to and date_to < date_from:
        errors["date_to"] = f"To: {date_to} is before From ({date_from})."
        date_to = None
    for name, value in (("date_from", date_from), ("date_to", date_to)):
        if value and not (date(1990, 1, 1) <= value <= date(2200, 1, 1)):
            errors[name] = f"{'From' if name == 'date_from' else 'To'}: {value} is out of range."
    if "date_from" in errors:
        date_from = None
    if "date_to" in errors:
        date_to = None
    return Filters(site, subject_id, form, form_id, field_, user, action, date_from, date_to), errors


def _site_map() -> dict:
    return {s.id: s for s in db.session.execute(select(Site)).scalars()}


def statement(filters: Filters, scope: Sites, sites: dict | None = None) -> Select:
    """The filtered select (no order, no limit). `scope`: the user's sites."""
    a = AuditRecord
    stmt = select(*a.__table__.c)  # rows, not entities: nothing piles up in the session
    sites = sites if sites is not None else _site_map()
    by_code = {s.code: s for s in sites.values()}
    zone_site = None
    stmt = scoped(stmt, a.site_id, scope)
    if scope is not ALL_SITES and len(scope) == 1:
        zone_site = sites.get(scope[0])
    if filters.site:
        site = by_code.get(filters.site)
        stmt = stmt.where(a.site_id == (site.id if site else -1))
        zone_site = site
    if filters.subject_id is not None:
        stmt = stmt.where(a.subject_id == filters.subject_id)
    if filters.form:
        stmt = stmt.where(a.form == filters.form)
    if filters.form_id is not None:
        stmt = stmt.where(a.form_id == filters.form_id)
    if filters.field:
        stmt = stmt.where(a.field == filters.field)
    if filters.user:
        stmt = stmt.where(a.username == filters.user)
    if filters.action:
        stmt = stmt.where(a.action == filters.action)
    # A date range is in the site's calendar when one site is in view, else in UTC.
    zone = site_zone(zone_site)
    start = _utc_start(filters.date_from, zone) if filters.date_from else None
    end = _utc_start(filters.date_to + timedelta(days=1), zone) if filters.date_to else None
    if start or end:
        stmt = _date_range(stmt, start, end)
    return stmt


#: how much later than its time (`at`, taken when the change was made) a record may be
#: committed, and so numbered: a transaction never stays open this long
CLOCK_SKEW = timedelta(hours=1)


def _date_range(stmt, start: datetime | None, end: datetime | None):
    """The records with start <= at < end, as an id range the keyset pages can walk.

    Ids follow time (a record is numbered when its transaction commits, moments after its
    time was taken), so every record older than start - CLOCK_SKEW has a smaller id than
    any record of the range, and every record newer than end + CLOCK_SKEW a larger one:
    two lookups on the `at` index bound the range by id, and the exact test on `at` is
    made on the rows of that range (written so that the database does not read the `at`
    index for it and then sort every match by id)."""
    a = AuditRecord
    at = func.coalesce(a.at, a.at)  # the exact test, not an index lookup
    if start is not None:
        below = db.session.execute(
            select(a.id).where(a.at < start - CLOCK_SKEW).order_by(a.at.desc()).limit(1)
        ).scalar()
        if below is not None:
            stmt = stmt.where(a.id > below)
        stmt = stmt.where(at >= start)
    if end is not None:
        above = db.session.execute(select(a.id).where(a.at >= end + CLOCK_SKEW).order_by(a.at.asc()).limit(1)).scalar()
        if above is not None:
            stmt = stmt.where(a.id < above)
        stmt = stmt.where(at < end)
    return stmt


def range_zone(filters: Filters, scope: Sites, sites: dict) -> str:
    if filters.site:
        site = next((s for s in sites.values() if s.code == filters.site), None)
        return str(site_zone(site))
    if scope is not ALL_SITES and len(scope) == 1:
        return str(site_zone(sites.get(scope[0])))
    return "UTC"


def _utc_start(day: date, zone) -> datetime:
    return as_utc(datetime.combine(day, time(0), tzinfo=zone))


@dataclass
class Page:
    rows: list[dict]
    filters: Filters
    newer: int | None = None  # cursor (`after`) of the newer page, None on the first
    older: int | None = None  # cursor (`before`) of the older page, None on the last
    zone: str = "UTC"
    extra: dict = field(default_factory=dict)


def page(
    filters: Filters,
    scope: Sites,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    sites = _site_map()
    a = AuditRecord
    stmt = statement(filters, scope, sites)
    if after is not None:
        found = db.session.execute(stmt.where(a.id > after).order_by(a.id.asc()).limit(size + 1)).all()
        more_newer = len(found) > size
        records = list(reversed(found[:size]))
        newer = records[0].id if more_newer and records else None
        older = records[-1].id if records else None
        if records and not _exists(stmt.where(a.id < records[-1].id)):
            older = None
    else:
        if before is not None:
            stmt_page = stmt.where(a.id < before)
        else:
            stmt_page = stmt
        found = db.session.execute(stmt_page.order_by(a.id.desc()).limit(size + 1)).all()
        records = found[:size]
        older = records[-1].id if len(found) > size else None
        newer = records[0].id if before is not None and records else None
    rows = describe(records, sites)
    return Page(rows, filters, newer, older, range_zone(filters, scope, sites))


def _exists(stmt) -> bool:
    return db.session.execute(stmt.with_only_columns(AuditRecord.id).limit(1)).first() is not None


def count(filters: Filters, scope: Sites) -> int:
    stmt = statement(filters, scope).with_only_columns(func.count(AuditRecord.id))
    return db.session.execute(stmt).scalar_one()


def _subject_labels(ids) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = db.session.execute(
        select(Subject.id, Subject.subject_number, Subject.screening_number).where(Subject.id.in_(ids))
    )
    return {sid: number or screening for sid, number, screening in rows}


def _queries(records) -> dict[tuple, list]:
    """Queries on the forms of these records: (form, form_id) -> [query, ...]."""
    keys = {(r.form, r.form_id) for r in records if r.form and r.form_id is not None}
    if not keys:
        return {}
    form_ids = {fid for _, fid in keys}
    found = db.session.execute(
        select(Query).where(Query.form_id.in_(form_ids), Query.form.in_({f for f, _ in keys}))
    ).scalars()
    out: dict[tuple, list] = {}
    for q in found:
        out.setdefault((q.form, q.form_id), []).append(q)
    return out


def describe(records: Iterable[Any], sites: dict | None = None) -> list[dict]:
    """The records as a reader sees them: labels, coded values as labels, the site (for its
    time zone), the subject's number and the queries on the same field."""
    sites = sites if sites is not None else _site_map()
    subjects = _subject_labels(r.subject_id for r in records)
    queries = _queries(records)
    out = []
    for r in records:
        qs = [q for q in queries.get((r.form, r.form_id), ()) if q.field == r.field]
        coded = r.action in labels.VALUE_ACTIONS
        out.append(
            {
                "id": r.id,
                "at": r.at,
                "site": sites.get(r.site_id),
                "username": r.username,
                "user_id": r.user_id,
                "action": r.action,
                "action_label": labels.action_label(r.action),
                "subject_id": r.subject_id,
                "subject": subjects.get(r.subject_id),
                "form": r.form,
                "form_label": labels.form_label(r.form),
                "form_id": r.form_id,
                "field": r.field,
                "field_label": labels.field_label(r.form, r.field),
                "old": labels.value_label(r.form, r.field, r.old_value) if coded else (r.old_value or ""),
                "new": labels.value_label(r.form, r.field, r.new_value) if coded else (r.new_value or ""),
                "old_raw": r.old_value,
                "new_raw": r.new_value,
                "reason": r.reason,
                "queries": qs,
                "hash": r.hash,
            }
        )
    return out


def iter_rows(
    filters: Filters, scope: Sites, batch: int = EXPORT_BATCH, short_transactions: bool = False
) -> Iterator[dict]:
    """Every matching record, newest first, as export rows; read in keyset batches (a
    bounded amount in memory, whatever the trail's length). With short_transactions (a
    background job) each batch is its own transaction: a job never holds the database for
    longer than one batch (on SQLite a transaction outside a web request takes the write
    lock), so the pages others use are not kept waiting."""
    sites = _site_map()
    a = AuditRecord
    stmt = statement(filters, scope, sites)
    before = None
    while True:
        part = stmt if before is None else stmt.where(a.id < before)
        records = db.session.execute(part.order_by(a.id.desc()).limit(batch)).all()
        if not records:
            return
        rows = [export_row(row) for row in describe(records, sites)]
        if short_transactions:
            db.session.rollback()  # read only: ends the transaction (and its lock) before the rows are written
        yield from rows
        before = records[-1].id
        if len(records) < batch:
            return


def export_row(row: dict) -> dict:
    site = row["site"]
    at = as_utc(row["at"])
    local = at.astimezone(site_zone(site)) if site else at
    return {
        "id": row["id"],
        "at_utc": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "at_site": local.strftime("%Y-%m-%d %H:%M:%S %z") if site else "",
        "site": site.code if site else "",
        "subject": row["subject"] or "",
        "user": row["username"],
        "action": row["action_label"],
        "action_code": row["action"],
        "form": row["form_label"],
        "form_code": row["form"] or "",
        "form_id": row["form_id"],
        "field": row["field_label"],
        "field_code": row["field"] or "",
        "old": row["old"],
        "new": row["new"],
        "reason": row["reason"] or "",
        "queries": " ".join(f"Q{q.id} ({q.state})" for q in row["queries"]),
        "hash": row["hash"],
    }


def export_columns() -> list[Column]:
    return [
        Column("id", "Record"),
        Column("at_utc", "Time (UTC)"),
        Column("at_site", "Time (site)"),
        Column("site", "Site"),
        Column("subject", "Subject"),
        Column("user", "User"),
        Column("action", "Action"),
        Column("action_code", "Action code"),
        Column("form", "Form"),
        Column("form_code", "Form code"),
        Column("form_id", "Form id"),
        Column("field", "Field"),
        Column("field_code", "Field code"),
        Column("old", "Old value"),
        Column("new", "New value"),
        Column("reason", "Reason"),
        Column("queries", "Queries"),
        Column("hash", "Record hash"),
    ]


def users_in_scope(scope: Sites) -> list[str]:
    """Usernames for the user filter: the accounts of the user's sites (data managers: all)."""
    from sqlalchemy.orm import selectinload

    users = db.session.execute(select(User).options(selectinload(User.sites)).order_by(User.username)).scalars().all()
    if scope is ALL_SITES:
        return [u.username for u in users] + ["system"]
    return [u.username for u in users if u.role == "data_manager" or any(covers(scope, s.id) for s in u.sites)] + [
        "system"
    ]


def with_filters(filters: Filters, **changes: Any) -> Filters:
    return replace(filters, **changes)
