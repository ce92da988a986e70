"""The monitoring state of a form instance, for pages, dashboards and PDFs (issue 6).

Contract (other packages rely on it; keep it)::

    record_state(form_name: str, form_id: int) -> dict
        sdv:               "verified" | "partly verified" | "not verified" | "not required"
        verified_fields:   list[str]   field names with a current SDV mark, sorted
        locked:            bool        the form, its subject or the whole study is locked
        open_queries:      list[Query] unresolved queries (state open or answered) on the
                                       form or its fields, oldest first
        signatures:        list[Signature] valid signatures of the form, oldest first
        signature_needed:  bool        a change invalidated its signature (not signed
                                       again), or its type must be signed once complete

    record_states(keys: Iterable[tuple[str, int]]) -> dict[(form_name, form_id), dict]
        the same for many records in a fixed number of queries (dashboards, lists)

    page_state(record, lock) -> dict
        the same for the one record a CRF page shows, from the record and its lock in
        force, plus ``queries`` (all of the record's, resolved too)

    records_of(keys: Iterable[tuple[str, int]]) -> dict[(form_name, form_id), record]
        the records themselves, one query per form type (not one per record)

An unknown form name or id gives the state of "nothing recorded": sdv "not required"
for an unknown type, no queries, no signatures, locked only under a study lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import Subquery, and_, case, exists, func, literal, or_, select, union_all

from ..auth.policy import Sites, scoped
from ..extensions import db
from ..pagination import page_in, paged_with_total
from ..records.models import Query, Signature
from .. import registry
from . import catalog, rules
from .models import DataLock, SdvMark, SdvStatus
from ..settings import current_study
from ..enrollment.models import Subject

if TYPE_CHECKING:
    from ..study import Study

STATE_KEYS = ("sdv", "verified_fields", "locked", "open_queries", "signatures", "signature_needed")


def sdv_plan(form_name: str, study: Study | None = None) -> tuple[str, tuple[str, ...]]:
    """(plan, required fields) of a form type under the study definition in force."""
    study = study or current_study()
    ft = catalog.get(form_name)
    if ft is None:
        return "none", ()
    for name, plan, key_fields in study.sdv_plan:
        if name == form_name:
            return plan, rules.required_fields(plan, key_fields, ft.field_names)
    return "none", ()


def record_state(form_name: str, form_id: int) -> dict:
    return record_states([(form_name, form_id)])[(form_name, form_id)]


def records_of(keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], object]:
    """The rows of many (form, id) keys in one query per form type and chunk (issue 14: a
    list page must not read its rows one by one); a key whose row is gone is left out."""
    wanted: dict[str, list[int]] = defaultdict(list)
    for form, form_id in dict.fromkeys(keys):
        wanted[form].append(int(form_id))
    out: dict[tuple[str, int], object] = {}
    for form, ids in wanted.items():
        model = catalog.get(form).model
        for chunk in _chunks(ids):
            for row in db.session.execute(select(model).where(model.id.in_(chunk))).scalars():
                out[(form, row.id)] = row
    return out


def _key_chunks(by_form: dict[str, list[int]], size: int = 400):
    """(form, ids) groups of at most `size` ids in all: one statement's worth of keys."""
    part, n = [], 0
    for form, ids in by_form.items():
        for chunk in _chunks(ids, size):
            if n + len(chunk) > size and part:
                yield part
                part, n = [], 0
            part.append((form, chunk))
            n += len(chunk)
    if part:
        yield part


def _keyed(form_col, id_col, part):
    """(form, id) IN the keys of `part`, as one condition."""
    return or_(*(and_(form_col == form, id_col.in_(ids)) for form, ids in part))


def _chunks(items: list, size: int = 400):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def page_state(record: object, lock: DataLock | None) -> dict:
    """The state of the one record a CRF page shows, from what the page holds already: the
    record itself (its status and subject) and the lock in force on it (records/views.py
    found it); plus ``queries``: every query of the record, resolved ones too, oldest first
    (the page's monitoring panel lists them). Three statements fewer than record_state and
    the panel's own read of the queries (issue 14)."""
    key = (record.FORM_NAME, int(record.id))
    return record_states([key], known={key: record}, locks={key: lock}, all_queries=True)[key]


def record_states(
    keys: Iterable[tuple[str, int]],
    *,
    known: dict[tuple[str, int], object] | None = None,
    locks: dict[tuple[str, int], DataLock | None] | None = None,
    all_queries: bool = False,
) -> dict[tuple[str, int], dict]:
    """See the module's contract. `known`: rows the caller holds (their status and subject
    are not read again); `locks`: the lock in force on a key, when the caller found it (the
    locks are then not read); `all_queries`: also ``queries``, every query of each record
    (resolved ones too), oldest first."""
    keys = list(dict.fromkeys((f, int(i)) for f, i in keys if i is not None))
    out: dict[tuple[str, int], dict] = {}
    if not keys:
        return out
    known = known or {}
    locks = locks if locks is not None and all(k in locks for k in keys) else None
    study = current_study()
    by_form: dict[str, list[int]] = defaultdict(list)
    for form, fid in keys:
        by_form[form].append(fid)

    # records: status (complete?) and subject (for subject locks): one UNION ALL over the
    # form types, then one statement per monitoring table for all the keys (issue 14: the
    # statement count must not grow with the records, nor with the form types they are of)
    info: dict[tuple[str, int], tuple[str | None, int | None]] = {}
    verified: dict[tuple[str, int], set] = defaultdict(set)
    queries: dict[tuple[str, int], list] = defaultdict(list)
    every_query: dict[tuple[str, int], list] = defaultdict(list)
    valid: dict[tuple[str, int], list] = defaultdict(list)
    invalidated: dict[tuple[str, int], int] = defaultdict(int)
    form_locks: set[tuple[str, int]] = set()
    locked_subjects: set[int] = set()
    study_locked = False
    for part in _key_chunks(by_form):
        for form, ids in part:
            for i in ids:
                if (form, i) in known:
                    info[(form, i)] = (known[(form, i)].status, known[(form, i)].subject_id)
        selects = [
            select(literal(form).label("form"), model.id, model.status, model.subject_id).where(model.id.in_(unknown))
            for form, ids in part
            for model in [getattr(catalog.get(form), "model", None)]
            for unknown in [[i for i in ids if (form, i) not in known]]
            if model is not None and unknown
        ]
        if selects:
            for form, rid, status, subject_id in db.session.execute(union_all(*selects)):
                info[(form, rid)] = (status, subject_id)
        for form, fid, field in db.session.execute(
            select(SdvMark.form, SdvMark.form_id, SdvMark.field).where(
                _keyed(SdvMark.form, SdvMark.form_id, part), SdvMark.cleared_at.is_(None)
            )
        ):
            verified[(form, fid)].add(field)
        of_part = select(Query).where(_keyed(Query.form, Query.form_id, part))
        if not all_queries:
            of_part = of_part.where(Query.state.in_(rules.UNRESOLVED))
        for query in db.session.execute(of_part.order_by(Query.created_at, Query.id)).scalars():
            every_query[(query.form, query.form_id)].append(query)
            if query.state in rules.UNRESOLVED:
                queries[(query.form, query.form_id)].append(query)
        for signature in db.session.execute(
            select(Signature).where(_keyed(Signature.form, Signature.form_id, part)).order_by(Signature.id)
        ).scalars():
            if signature.valid:
                valid[(signature.form, signature.form_id)].append(signature)
            else:
                invalidated[(signature.form, signature.form_id)] += 1
        if locks is not None:
            continue  # the caller found the locks in force
        # the locks in force on these records: the study's, their subjects', their own (one statement)
        part_subjects = sorted({info[(form, i)][1] for form, ids in part for i in ids if (form, i) in info} - {None})
        scopes = [
            DataLock.scope == "study",
            and_(DataLock.scope == "form", _keyed(DataLock.form, DataLock.form_id, part)),
        ]
        if part_subjects:
            scopes.append(and_(DataLock.scope == "subject", DataLock.subject_id.in_(part_subjects)))
        for scope, subject_id, form, fid in db.session.execute(
            select(DataLock.scope, DataLock.subject_id, DataLock.form, DataLock.form_id).where(
                DataLock.unlocked_at.is_(None), or_(*scopes)
            )
        ):
            if scope == "study":
                study_locked = True
            elif scope == "subject":
                locked_subjects.add(subject_id)
            else:
                form_locks.add((form, fid))

    for key in keys:
        form, _fid = key
        status, subject_id = info.get(key, (None, None))
        plan, required = sdv_plan(form, study)
        done = verified.get(key, set())
        if locks is not None:
            locked = locks[key] is not None
        else:
            locked = bool(study_locked or key in form_locks or (subject_id in locked_subjects))
        out[key] = {
            "sdv": rules.sdv_status(plan, required, done),
            "verified_fields": sorted(done),
            "locked": locked,
            "open_queries": queries.get(key, []),
            "signatures": valid.get(key, []),
            "signature_needed": rules.signature_needed(
                form,
                complete=status == "complete",
                valid=len(valid.get(key, ())),
                invalidated=invalidated.get(key, 0),
                signature_forms=study.signature_forms,
            ),
        }
        if all_queries:
            out[key]["queries"] = every_query.get(key, [])
    return out


# --- SDV progress in SQL (lists and dashboards over many records) ---------------------------------


def sdv_forms(sites: Sites, forms: Iterable[str] | None = None) -> Subquery | None:
    """The completed forms under an SDV plan as one SQL subquery over their stored status
    (issue 14: `SdvStatus`, kept judged by the writing transaction, monitoring/sdv_status.py;
    no marks counted per request): columns form, form_id, subject_id, site_id, done (required
    fields with a current mark), required (the plan's count) and verified (true when done =
    required). Lists and dashboards count, group and page it in the database; None when no
    form type has a plan."""
    study = current_study()
    if not any(sdv_plan(name, study)[1] for name in catalog.form_types()):
        return None
    stmt = select(
        SdvStatus.form,
        SdvStatus.form_id,
        SdvStatus.subject_id,
        SdvStatus.site_id,
        SdvStatus.done,
        SdvStatus.required,
        SdvStatus.verified,
    )
    if forms is not None:
        stmt = stmt.where(SdvStatus.form.in_(list(forms)))
    return scoped(stmt, SdvStatus.site_id, sites).subquery("sdv_forms")


def _verified_count(u: Subquery):
    """How many of the subquery's forms are verified (a sum of 0/1: a boolean column)."""
    return func.sum(case((u.c.verified.is_(True), 1), else_=0))


def sdv_rows(sites: Sites, forms: Iterable[str] | None = None) -> list[tuple]:
    """One row per completed form under an SDV plan, computed in SQL (no per-record state):
    (form, form_id, subject_id, site_id, verified_required_fields, required_count). The form
    is verified when the two counts are equal."""
    u = sdv_forms(sites, forms)
    if u is None:
        return []
    return [
        tuple(row)
        for row in db.session.execute(
            select(u.c.form, u.c.form_id, u.c.subject_id, u.c.site_id, u.c.done, u.c.required)
        )
    ]


def sdv_progress(sites: Sites, u: Subquery | None = None) -> dict[tuple[int, str], tuple[int, int]]:
    """(site_id, form) -> (completed forms verified, completed forms under the plan), counted
    in the database (`u`: the `sdv_forms` subquery when the caller built it already)."""
    from sqlalchemy import func

    u = sdv_forms(sites) if u is None else u
    if u is None:
        return {}
    rows = db.session.execute(
        select(u.c.site_id, u.c.form, _verified_count(u), func.count()).group_by(u.c.site_id, u.c.form)
    )
    return {(site_id, form): (int(verified or 0), int(total)) for site_id, form, verified, total in rows}


def sdv_by_subject(sites: Sites, page: int, per_page: int, u: Subquery | None = None) -> tuple[int, int, list[tuple]]:
    """Verified and completed forms per subject, a page at a time in subject-label order:
    (subjects in all, the page shown, [(subject, verified, total)]) with each subject's site
    loaded."""
    from sqlalchemy import func
    from sqlalchemy.orm import joinedload

    u = sdv_forms(sites) if u is None else u
    if u is None:
        return 0, 1, []
    counts = (
        select(u.c.subject_id, _verified_count(u).label("verified"), func.count().label("total"))
        .group_by(u.c.subject_id)
        .subquery()
    )
    total, page, rows = paged_with_total(
        select(Subject, counts.c.verified, counts.c.total)
        .join(counts, counts.c.subject_id == Subject.id)
        .options(joinedload(Subject.site))
        .order_by(Subject.label, Subject.id),
        page,
        per_page,
    )
    return total, page, [(subj, int(v or 0), int(t)) for subj, v, t in rows]


def sdv_left(
    sites: Sites,
    forms: Iterable[str] | None,
    page: int,
    per_page: int,
    u: Subquery | None = None,
    progress: dict[tuple[int, str], tuple[int, int]] | None = None,
) -> tuple[int, int, list[tuple]]:
    """The completed forms not yet verified (of the given types), a page at a time in subject
    label, form and id order: (forms in all, the page shown, [((form, form_id), subject)]).
    `progress`: the same sites' `sdv_progress`, when the caller has it (the count of what is
    left is then its completed minus verified forms, not one more pass over the forms)."""
    from sqlalchemy import func, true
    from sqlalchemy.orm import joinedload

    u = sdv_forms(sites) if u is None else u
    if u is None:
        return 0, 1, []
    forms = list(forms) if forms is not None else None
    of_types = u.c.form.in_(forms) if forms is not None else true()
    if progress is not None:
        total = sum(n - done for (_site, form), (done, n) in progress.items() if forms is None or form in forms)
    else:
        total = (
            db.session.execute(select(func.count()).select_from(u).where(u.c.verified.is_(False), of_types)).scalar()
            or 0
        )
    page = page_in(total, page, per_page)
    rows = db.session.execute(
        select(u.c.form, u.c.form_id, Subject)
        .join(Subject, Subject.id == u.c.subject_id)
        .options(joinedload(Subject.site))
        .where(u.c.verified.is_(False), of_types)
        .order_by(Subject.label, Subject.id, u.c.form, u.c.form_id)
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return total, page, [((form, form_id), subj) for form, form_id, subj in rows]


# --- signatures needed, in SQL (the signatures list) --------------------------------------------


def signatures_needed(sites: Sites, page: int, per_page: int) -> tuple[int, int, list[tuple]]:
    """The forms that need the investigator's signature (rules.signature_needed, decided in the
    database: no valid signature, and an invalidated one or a completed form of a type that is
    signed), a page at a time in subject label, form and id order: (forms in all, the page
    shown, [((form, form_id), subject, invalidated)])."""
    from sqlalchemy.orm import joinedload

    u = _signatures_needed_sql(sites, tuple(current_study().signature_forms))
    total, page, rows = paged_with_total(
        select(u.c.form, u.c.form_id, u.c.invalidated, Subject)
        .join(Subject, Subject.id == u.c.subject_id)
        .options(joinedload(Subject.site))
        .order_by(Subject.label, Subject.id, u.c.form, u.c.form_id),
        page,
        per_page,
    )
    return total, page, [((form, fid), subj, bool(inv)) for form, fid, inv, subj in rows]


# The signatures list's UNION ALL over every form type is the same SQL for the same sites,
# signed types and form types: built once per process (issue 14: building it was a third of the
# page's time). The SQL's structure only, never a row: each page runs it on the data as it is.
_NEEDED_SQL: dict[tuple, Subquery] = {}


def _signatures_needed_sql(sites: Sites, signed_types: tuple[str, ...]) -> Subquery:
    key = (tuple(sites) if isinstance(sites, list) else "all", signed_types, registry.generation())
    cached = _NEEDED_SQL.get(key)
    if cached is not None:
        return cached
    parts = []
    for name, ft in catalog.form_types().items():
        model = ft.model
        of_it = and_(Signature.form == name, Signature.form_id == model.id)
        valid = exists().where(of_it, Signature.valid.is_(True))
        invalid = exists().where(of_it, Signature.valid.is_(False))
        if name in signed_types:
            needs = or_(invalid, model.status == "complete")
        else:
            # only an invalidated signature can make it needed: start from those few rows, not
            # from every form of the type (18,000 visits at 2,000 subjects; issue 14)
            needs = model.id.in_(select(Signature.form_id).where(Signature.form == name, Signature.valid.is_(False)))
        stmt = (
            select(
                literal(name).label("form"),
                model.id.label("form_id"),
                model.subject_id.label("subject_id"),
                case((invalid, 1), else_=0).label("invalidated"),
            )
            .join(Subject, Subject.id == model.subject_id)
            .where(~valid, needs)
        )
        parts.append(scoped(stmt, Subject.site_id, sites))
    u = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery("needed")
    if len(_NEEDED_SQL) > 256:  # one entry per sites combination in use: bounded all the same
        _NEEDED_SQL.clear()
    _NEEDED_SQL[key] = u
    return u


def invalidated_casebooks(sites: Sites) -> list[tuple]:
    """Subjects whose latest casebook signature was invalidated: [(signature, subject)]."""
    from sqlalchemy.orm import aliased, joinedload

    later = aliased(Signature)
    stmt = (
        select(Signature, Subject)
        .join(Subject, Subject.id == Signature.form_id)
        .options(joinedload(Subject.site))
        .where(
            Signature.form == "casebook",
            Signature.valid.is_(False),
            ~exists().where(later.form == "casebook", later.form_id == Signature.form_id, later.id > Signature.id),
        )
        .order_by(Signature.id.desc())
    )
    return [tuple(row) for row in db.session.execute(scoped(stmt, Subject.site_id, sites))]


# --- locks --------------------------------------------------------------------------------------------


def study_lock() -> DataLock | None:
    return db.session.execute(
        select(DataLock).where(DataLock.scope == "study", DataLock.unlocked_at.is_(None)).order_by(DataLock.id).limit(1)
    ).scalar()


def subject_lock(subject_id: int | None) -> DataLock | None:
    if subject_id is None:
        return None
    return db.session.execute(
        select(DataLock)
        .where(DataLock.scope == "subject", DataLock.subject_id == subject_id, DataLock.unlocked_at.is_(None))
        .order_by(DataLock.id)
        .limit(1)
    ).scalar()


def form_lock(form: str, form_id: int | None) -> DataLock | None:
    if form_id is None:
        return None
    return db.session.execute(
        select(DataLock)
        .where(
            DataLock.scope == "form", DataLock.form == form, DataLock.form_id == form_id, DataLock.unlocked_at.is_(None)
        )
        .order_by(DataLock.id)
        .limit(1)
    ).scalar()


def lock_in_force(form: str | None, form_id: int | None, subject_id: int | None) -> DataLock | None:
    """The lock that forbids changing this record (the study's, the subject's or the
    form's), or None."""
    from sqlalchemy import and_, or_

    scopes = [DataLock.scope == "study"]
    if subject_id is not None:
        scopes.append(and_(DataLock.scope == "subject", DataLock.subject_id == subject_id))
    if form and form_id is not None:
        scopes.append(and_(DataLock.scope == "form", DataLock.form == form, DataLock.form_id == form_id))
    rows = (
        db.session.execute(select(DataLock).where(DataLock.unlocked_at.is_(None), or_(*scopes)).order_by(DataLock.id))
        .scalars()
        .all()
    )
    order = {"study": 0, "subject": 1, "form": 2}
    return min(rows, key=lambda r: (order[r.scope], r.id)) if rows else None


def subject_forms(subject: Subject) -> list[tuple[str, object]]:
    """Every saved form of a subject, in casebook order (removed records left out)."""
    return [
        (name, record)
        for name, record in registry.subject_forms(subject)
        if getattr(record, "status", None) != "deleted"
    ]


def subject_queries(subject_id: int, unresolved_only: bool = True) -> list[Query]:
    stmt = select(Query).where(Query.subject_id == subject_id)
    if unresolved_only:
        stmt = stmt.where(Query.state.in_(rules.UNRESOLVED))
    return db.session.execute(stmt.order_by(Query.created_at, Query.id)).scalars().all()


__all__ = [
    "record_state",
    "record_states",
    "page_state",
    "sdv_plan",
    "sdv_rows",
    "sdv_progress",
    "lock_in_force",
    "study_lock",
    "subject_lock",
    "form_lock",
    "subject_forms",
    "subject_queries",
    "STATE_KEYS",
]
