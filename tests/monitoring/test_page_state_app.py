"""The state a CRF page reads for its record (issue 14: state.page_state, from the record and
the lock the page found) is record_state's, plus every query of the record: the page saves
three statements and must not show anything else. Checked on the demo's records in every
monitoring situation they are in (open, answered and closed queries, SDV marks, signatures,
a form lock, a subject lock, a study lock)."""

from __future__ import annotations

from sqlalchemy import select

from cellstudy.auth.models import User
from cellstudy.extensions import db
from cellstudy.monitoring import state
from cellstudy.monitoring.models import DataLock
from cellstudy.records.models import Query
from cellstudy.registry import subject_forms
from tests.helpers import subject_by_number


def _comparable(st: dict) -> dict:
    out = dict(st)
    out["open_queries"] = [q.id for q in st["open_queries"]]
    out["signatures"] = [s.id for s in st["signatures"]]
    out.pop("queries", None)
    return out


def _check_every_record(subject) -> int:
    checked = 0
    for name, record in subject_forms(subject):
        lock = state.lock_in_force(name, record.id, subject.id)
        page = state.page_state(record, lock)
        alone = state.record_state(name, record.id)
        assert _comparable(page) == _comparable(alone), (name, record.id)
        every = (
            db.session.execute(
                select(Query).where(Query.form == name, Query.form_id == record.id).order_by(Query.created_at, Query.id)
            )
            .scalars()
            .all()
        )
        assert [q.id for q in page["queries"]] == [q.id for q in every]
        assert page["locked"] == (lock is not None)
        checked += 1
    return checked


def test_a_pages_state_is_record_states_with_every_query(app):
    with app.app_context():
        subject = subject_by_number("HZ-001")
        assert _check_every_record(subject) >= 5
        assert db.session.execute(select(Query).where(Query.subject_id == subject.id)).scalars().first() is not None
        # under each kind of lock
        user_id = db.session.execute(select(User.id).where(User.username == "dm")).scalar_one()  # locks are the DM's
        name, record = next(iter(subject_forms(subject)))
        for lock in (
            DataLock(scope="form", form=name, form_id=record.id, subject_id=subject.id, locked_by_id=user_id),
            DataLock(scope="subject", subject_id=subject.id, site_id=subject.site_id, locked_by_id=user_id),
            DataLock(scope="study", locked_by_id=user_id),
        ):
            db.session.add(lock)
            db.session.flush()
            assert _check_every_record(subject) >= 5
            assert state.page_state(record, state.lock_in_force(name, record.id, subject.id))["locked"]
            db.session.delete(lock)
            db.session.flush()
        db.session.rollback()
