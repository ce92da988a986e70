"""Every completed form's SDV status judged, and kept judged (issue 14).

A completed form of a type whose SDV plan requires fields carries a stored status
(`SdvStatus`): the required fields with a current mark, the plan's count, and whether
that is all of them. The SDV page and the monitor dashboard read it (`state.sdv_forms`);
they never count marks per request.

One declaration of the rule: `_sdv_computed` (the UNION ALL over the form types that the
pages used to run per request) is the judge. The stored rows are its rows, written by it:
`judge` deletes the noted forms' rows and inserts what it computes for them; `judge_all`
deletes every row and inserts it all (INSERT ... SELECT).

It is kept current by the write path's hooks (records/hooks.py), as the infusion
judgements are (infusions/judgement.py): the write hook notes, for every row a transaction
writes, which forms' status the change can affect; just before the transaction commits,
those forms are judged again under the study definition in force read in that same
transaction, and the result is stored in it. What a change can affect:

- a form record of a registered form type (its status, its subject; created, changed or
  deleted): that form;
- an SDV mark (added, cleared, deleted): the form it marks;
- a subject whose site changes (or that is deleted): every form of that subject;
- a study amendment coming into force (its `in_force_at` written) or deleted: every form
  (the plan, and the study version the rows were judged under, may change).

Serialisation (PostgreSQL; SQLite's write transactions are exclusive already). Two
transactions that judge the same form must not let the one that judged without the
other's facts commit last. The row locks of the writes do not order them: two monitors
verifying different fields of one form insert two marks and write no common row. So the
judge takes its own locks before it reads any fact, and holds them to the commit:

- a transaction-scoped advisory lock per subject of the noted forms (in id order: two
  judges never wait on each other in a cycle). A judge that waits reads the facts after
  the other committed (READ COMMITTED: each statement sees what committed before it), so
  its rows include the other's facts, and it writes last. The forms of a subject whose
  site changed are looked up after that subject's lock, so a form committed meanwhile is
  either seen or judged after this transaction by its own, which then sees the new site;
- one advisory lock shared by every judge and taken exclusively by `judge_all` (an
  amendment coming into force, `flask rejudge-sdv`): the whole re-judging waits for the
  judges in flight to commit and every judge after it reads the new definition.

Advisory locks of their own, not the subject rows: the infusion judgements lock subject
rows in their hook before this one runs, and a second, separately ordered round of row
locks could close a cycle with them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import click
from sqlalchemy import Select, case, delete, event, func, insert, literal, select, text, union_all
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from .. import registry
from ..enrollment.models import Subject
from ..extensions import db
from ..records import hooks
from ..records.transaction import transaction
from ..settings import study_in_force
from ..settings.models import StudyAmendment
from . import catalog, state
from .models import SdvMark, SdvStatus

if TYPE_CHECKING:
    from flask import Flask

    from ..study import Study

_PENDING = "cellstudy_sdv_rejudge"
# pg_advisory_xact_lock(namespace, key): the whole table (key 0), and one per subject (its id);
# infusions/judgement.py uses 7_220_118
_ALL_NAMESPACE = 7_220_119
_SUBJECT_NAMESPACE = 7_220_120
_COLUMNS = ("form", "form_id", "subject_id", "site_id", "done", "required", "verified", "study_version")
_models: dict = {"generation": None, "names": {}}


def _pending(session: Session) -> dict:
    return session.info.setdefault(_PENDING, {"keys": set(), "new": [], "subjects": set(), "all": False})


def request_rejudge_all(session: Session) -> None:
    """Judge every completed form again at this transaction's commit."""
    _pending(session)["all"] = True


def request_rejudge(
    session: Session, keys: Iterable[tuple[str, int]] = (), subject_ids: Iterable[int | None] = ()
) -> None:
    """Judge these forms, and every form of these subjects, again at this transaction's commit."""
    pending = _pending(session)
    pending["keys"].update((form, int(i)) for form, i in keys if i is not None)
    pending["subjects"].update(i for i in subject_ids if i is not None)


def _form_name(obj: object) -> str | None:
    """The registered form type whose rows `obj` is one of (None: not a form record)."""
    if _models["generation"] != registry.generation():
        _models["names"] = {ft.model: name for name, ft in catalog.form_types().items() if ft.model is not None}
        _models["generation"] = registry.generation()
    return _models["names"].get(type(obj))


def _history_values(obj: object, name: str) -> set:
    history = sa_inspect(obj).attrs[name].history
    return {v for v in (*history.added, *history.deleted, *history.unchanged) if v is not None}


def _noted(session: Session, obj: object, created: bool, deleted: bool) -> None:
    """The write hook: note what the written row can affect (no reads, no writes)."""
    if isinstance(obj, SdvMark):
        forms, ids = _history_values(obj, "form"), _history_values(obj, "form_id")
        request_rejudge(session, [(f, i) for f in forms for i in ids])
    elif isinstance(obj, Subject):
        if deleted or (not created and sa_inspect(obj).attrs.site_id.history.has_changes()):
            request_rejudge(session, subject_ids=[obj.id])
    elif isinstance(obj, StudyAmendment):
        # as for the infusion judgements: an amendment changes the definition when it comes
        # into force (or stops being in force), not while it is proposed or approved for later
        if deleted or sa_inspect(obj).attrs.in_force_at.history.has_changes():
            request_rejudge_all(session)
    else:
        form = _form_name(obj)
        if form is None:
            return
        if obj.id is None:  # inserted by this flush: its id is known at the commit
            _pending(session)["new"].append((form, obj))
        else:
            request_rejudge(session, [(form, obj.id)])


def _rejudge(session: Session) -> None:
    """The commit hook: judge the noted forms again, in this transaction."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    if pending["all"]:
        judge_all(session)
        return
    keys = set(pending["keys"]) | {(form, obj.id) for form, obj in pending["new"] if obj.id is not None}
    if keys or pending["subjects"]:
        judge(session, keys, pending["subjects"])


def _forget(session: Session, previous_transaction) -> None:
    """A rolled-back write did not happen: nothing to judge for it."""
    if not getattr(previous_transaction, "nested", False):
        session.info.pop(_PENDING, None)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _by_form(keys: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    by_form: dict[str, list[int]] = defaultdict(list)
    for form, form_id in sorted(set(keys)):
        if catalog.get(form) is not None:
            by_form[form].append(form_id)
    return by_form


def _form_rows(session: Session, by_form: Mapping[str, list[int]], subjects: list[int]) -> set[tuple[str, int, int]]:
    """(form, id, subject) of these forms and of every form of these subjects, one UNION ALL
    per chunk of keys (a form gone is left out)."""
    out: set[tuple[str, int, int]] = set()
    for part in state._key_chunks(dict(by_form)):
        selects = [
            select(literal(form).label("form"), model.id, model.subject_id).where(model.id.in_(ids))
            for form, ids in part
            for model in [catalog.get(form).model]
        ]
        out.update(tuple(row) for row in session.execute(union_all(*selects)))
    for chunk in state._chunks(subjects):
        selects = [
            select(literal(name).label("form"), ft.model.id, ft.model.subject_id).where(ft.model.subject_id.in_(chunk))
            for name, ft in catalog.form_types().items()
        ]
        if selects:
            out.update(tuple(row) for row in session.execute(union_all(*selects)))
        # a stored row of such a subject whose form is no longer of it (or no longer there)
        out.update(
            tuple(row)
            for row in session.execute(
                select(SdvStatus.form, SdvStatus.form_id, SdvStatus.subject_id).where(SdvStatus.subject_id.in_(chunk))
            )
        )
    return out


def _lock_subjects(session: Session, subject_ids: Iterable[int]) -> None:
    """Serialise with any other judge of these subjects' forms (PostgreSQL; see the module
    docstring): the shared lock of the whole table, then each subject's, in id order."""
    session.execute(text("SELECT pg_advisory_xact_lock_shared(:ns, 0)"), {"ns": _ALL_NAMESPACE})
    ids = sorted(set(subject_ids))
    if ids:
        # unnest yields the (sorted) array in order: the locks are taken in id order
        session.execute(
            text("SELECT count(pg_advisory_xact_lock(:ns, s)) FROM unnest(CAST(:ids AS integer[])) AS s"),
            {"ns": _SUBJECT_NAMESPACE, "ids": ids},
        )


def judge(session: Session, keys: Iterable[tuple[str, int]], subject_ids: Iterable[int] = ()) -> None:
    """Judge (and store) the SDV status of these forms and of every form of these subjects:
    their stored rows are replaced by the rows `_sdv_computed` gives for them now."""
    by_form = _by_form(keys)
    subjects = sorted({i for i in subject_ids if i is not None})
    if _postgres(session):
        # the subjects of the noted forms as the forms say (a mark does not always name one)
        of_keys = {subject for _f, _i, subject in _form_rows(session, by_form, [])}
        _lock_subjects(session, of_keys | set(subjects))
    if subjects:  # after the lock: a form of the subject committed meanwhile is seen
        for form, form_id, _subject in _form_rows(session, {}, subjects):
            if catalog.get(form) is not None and form_id not in by_form[form]:
                by_form[form].append(form_id)
    study = study_in_force(session)  # after the locks: an amendment that came into force is seen
    table = SdvStatus.__table__
    for part in state._key_chunks(dict(by_form)):
        session.execute(delete(table).where(state._keyed(table.c.form, table.c.form_id, part)))
        _store(session, _sdv_computed(study, dict(part)), study)


def judge_all(session: Session) -> int:
    """Judge (and store) the SDV status of every completed form: every stored row replaced by
    `_sdv_computed`'s. Returns how many rows are stored."""
    if _postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": _ALL_NAMESPACE})
    study = study_in_force(session)
    session.execute(delete(SdvStatus.__table__))
    _store(session, _sdv_computed(study), study)
    return session.execute(select(func.count()).select_from(SdvStatus)).scalar() or 0


def _store(session: Session, computed: Select | None, study: Study) -> None:
    """INSERT ... SELECT the computed rows, with the version of the definition they were judged under."""
    if computed is None:
        return
    u = computed.subquery("computed")
    rows = select(*(u.c[name] for name in _COLUMNS[:-1]), literal(study.version, type_=SdvStatus.study_version.type))
    session.execute(insert(SdvStatus.__table__).from_select(list(_COLUMNS), rows))


def _sdv_computed(study: Study, forms: Mapping[str, Iterable[int]] | None = None) -> Select | None:
    """THE RULE (issue 6), as SQL: the completed forms under an SDV plan that requires fields,
    with their subject's site, the required fields with a current mark (done), the plan's
    count (required) and verified (done >= required); a UNION ALL over the form types. `forms`:
    only these {form: ids}, else all. None when no form type is asked for or has a plan."""
    parts = []
    for name, ft in catalog.form_types().items():
        if forms is not None and name not in forms:
            continue
        plan, required = state.sdv_plan(name, study)
        required = sorted(set(required))
        if plan == "none" or not required:
            continue
        model = ft.model
        ids = sorted(set(forms[name])) if forms is not None else None
        marks = select(SdvMark.form_id, func.count(func.distinct(SdvMark.field)).label("n")).where(
            SdvMark.form == name, SdvMark.cleared_at.is_(None), SdvMark.field.in_(required)
        )
        if ids is not None:
            marks = marks.where(SdvMark.form_id.in_(ids))
        marks = marks.group_by(SdvMark.form_id).subquery()
        done = func.coalesce(marks.c.n, 0)
        stmt = (
            select(
                literal(name).label("form"),
                model.id.label("form_id"),
                model.subject_id.label("subject_id"),
                Subject.site_id.label("site_id"),
                done.label("done"),
                literal(len(required)).label("required"),
                case((done >= len(required), True), else_=False).label("verified"),
            )
            .join(Subject, Subject.id == model.subject_id)
            .outerjoin(marks, marks.c.form_id == model.id)
            .where(model.status == "complete")
        )
        if ids is not None:
            stmt = stmt.where(model.id.in_(ids))
        parts.append(stmt)
    if not parts:
        return None
    return union_all(*parts) if len(parts) > 1 else parts[0]


def computed_rows(session: Session, study: Study | None = None) -> set[tuple]:
    """The judgement of every completed form computed now, as (form, form_id, subject_id,
    site_id, done, required, verified) (for checks: it must equal the stored rows)."""
    computed = _sdv_computed(study or study_in_force(session))
    if computed is None:
        return set()
    return {(f, i, s, site, int(d), int(r), bool(v)) for f, i, s, site, d, r, v in session.execute(computed)}


def stored_rows(session: Session) -> set[tuple]:
    """The stored rows, in the shape of `computed_rows`."""
    t = SdvStatus
    rows = session.execute(select(t.form, t.form_id, t.subject_id, t.site_id, t.done, t.required, t.verified))
    return {(f, i, s, site, int(d), int(r), bool(v)) for f, i, s, site, d, r, v in rows}


def rejudge_everything(session: Session) -> int:
    """Judge every completed form now (after a bulk import that bypassed the ORM, or on an
    installation upgraded to issue 14), in a transaction of its own. Returns the rows stored."""
    with transaction():
        return judge_all(session)


def init_app(app: Flask) -> None:
    """Register the re-judging with the write path (called by the application factory)."""
    hooks.on_write(_noted)
    hooks.before_commit(_rejudge)
    if not event.contains(Session, "after_soft_rollback", _forget):
        event.listen(Session, "after_soft_rollback", _forget)

    @app.cli.command("rejudge-sdv")
    def rejudge_sdv_command():
        """Judge the SDV status of every completed form again and store it (issue 14)."""
        click.echo(f"{rejudge_everything(db.session)} completed forms under an SDV plan judged.")


__all__ = ["SdvStatus", "judge", "judge_all", "rejudge_everything", "request_rejudge"]
