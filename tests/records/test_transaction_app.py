"""The one transaction owner (issue 12): records.transaction().

Attacked the ways it could break: a nested action that commits early, a refusal that
leaves part of an action behind, work after the commit that runs on a rollback, a write
that slips outside any transaction, and (SQLite) a read that holds or upgrades to the
write lock, which is how exports failed with "database is locked" while others saved."""

from __future__ import annotations

import ast
import pathlib
import threading

import pytest
from sqlalchemy import func, select, text

from cellstudy.auth.models import Site
from cellstudy.extensions import db
from cellstudy.records import audit
from cellstudy.records.models import AuditRecord
from cellstudy.records.service import RecordError, after_commit, after_rollback, transaction
from cellstudy.records.transaction import WriteOutsideTransaction

ROOT = pathlib.Path(__file__).resolve().parents[2] / "cellstudy"


def _audit_count() -> int:
    return db.session.scalar(select(func.count(AuditRecord.id)))


def _site_name(site_id: int) -> str:
    return db.session.scalar(select(Site.name).where(Site.id == site_id))


def test_an_inner_transaction_joins_the_outer_one_and_a_refusal_after_it_keeps_nothing(app, ctx):
    site_id = db.session.scalar(select(Site.id).order_by(Site.id))
    before_name, before_audit = _site_name(site_id), _audit_count()
    with pytest.raises(RecordError):
        with transaction():
            with transaction():  # a service called by another service
                db.session.get(Site, site_id).name = "changed by the inner action"
                audit.append("test", username="test", new="inner")
            db.session.flush()
            raise RecordError("refused after the inner part ran")
    db.session.rollback()
    assert _site_name(site_id) == before_name and _audit_count() == before_audit
    with transaction():
        with transaction():
            db.session.get(Site, site_id).name = "kept"
            audit.append("test", username="test", new="inner")
        # nothing is committed before the outermost block ends
        assert db.session.info["cellstudy_tx_depth"] == 1
    db.session.rollback()
    assert _site_name(site_id) == "kept" and _audit_count() == before_audit + 1


def test_after_commit_runs_after_the_commit_and_never_after_a_rollback(app, ctx):
    seen = []
    with transaction():
        audit.append("test", username="test", new="a")
        after_commit(lambda: seen.append(("committed", _audit_count())))
        assert seen == []
    assert seen and seen[0][0] == "committed"
    with pytest.raises(RecordError):
        with transaction():
            after_commit(lambda: seen.append("must not run"))
            raise RecordError("no")
    assert "must not run" not in seen


def test_after_rollback_writes_in_a_fresh_transaction_once_the_action_is_gone(app, ctx):
    before = _audit_count()
    with pytest.raises(RecordError):
        with transaction():
            audit.append("test", username="test", new="the refused action")
            after_rollback(lambda: audit.append("test", username="test", new="the refusal itself"))
            raise RecordError("refused")
    rows = db.session.execute(select(AuditRecord.new_value).where(AuditRecord.id > 0)).scalars().all()
    assert _audit_count() == before + 1
    assert rows[-1] == "the refusal itself" and "the refused action" not in rows


def test_the_parts_of_an_action_refuse_to_run_outside_one(app, ctx):
    from cellstudy.records import queries
    from cellstudy.records import service as records

    with pytest.raises(RuntimeError, match="inside records.transaction"):
        records.create(Site(code="ZZ", name="x", timezone="UTC"), user=None, fields={}, form="site")
    with pytest.raises(RuntimeError, match="inside records.transaction"):
        queries.new_query(site_id=1, subject_id=1, form="screening", form_id=None, field=None, text="x")
    with pytest.raises(RuntimeError, match="inside records.transaction"):
        after_commit(lambda: None)


def test_no_module_commits_or_passes_a_commit_flag_outside_the_owner():
    """One owner: nothing in cellstudy/ commits a session or takes a `commit` flag except
    records/transaction.py."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "transaction.py" and path.parent.name == "records":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .commit()")
            if isinstance(node, ast.keyword) and node.arg == "commit":
                offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno}: commit=")
            if isinstance(node, ast.arg) and node.arg == "commit":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: a commit parameter")
    assert offenders == []


# --- SQLite: reads take no write lock, writes take it up front -----------------------------------


def _sqlite_only(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the write lock is SQLite's")


def test_a_write_outside_a_transaction_in_a_request_is_refused_at_the_statement(app):
    with app.test_request_context("/"):
        _sqlite_only(app)
        site = db.session.scalars(select(Site).order_by(Site.id)).first()
        site.name = "written outside any transaction"
        with pytest.raises(WriteOutsideTransaction):
            db.session.flush()
        db.session.rollback()
        with transaction():
            db.session.get(Site, site.id).name = "written inside one"
        assert _site_name(site.id) == "written inside one"


def test_a_long_read_holds_no_write_lock_and_a_write_after_it_never_meets_a_stale_snapshot(app):
    """The export failure of issue 13: a request reads (its snapshot open), another writer
    commits meanwhile, then the request writes its audit record. Upgrading the read would
    fail at once with "database is locked" (a stale snapshot cannot take the write lock,
    whatever the busy timeout); the owner ends the read first."""
    with app.test_request_context("/safety/ae.csv"):
        _sqlite_only(app)
        site_id = db.session.scalar(select(Site.id).order_by(Site.id))  # the read transaction is open
        assert db.session().in_transaction()
        done = []

        def other_writer():
            with app.app_context():
                with transaction():
                    db.session.get(Site, site_id).name = "renamed meanwhile"
                done.append(True)
                db.session.remove()

        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join(timeout=20)
        assert done == [True], "the other writer waited for a lock that a read must not hold"
        before = _audit_count()  # still the old snapshot
        with transaction():
            audit.append("export", username="test", new="the export's audit record")
        assert _audit_count() == before + 1
        assert _site_name(site_id) == "renamed meanwhile"


def test_a_write_transaction_takes_the_write_lock_when_it_begins(app):
    with app.test_request_context("/"):
        _sqlite_only(app)
        with transaction():
            db.session.execute(select(Site.id)).all()  # a read first: the lock is taken already
            other = db.engine.raw_connection()
            try:
                other.execute("PRAGMA busy_timeout=0")
                with pytest.raises(Exception, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
        db.session.execute(text("SELECT 1"))


def _hold_the_write_lock(app, site_id: int, holding: threading.Event, release: threading.Event) -> None:
    with app.test_request_context("/"):
        with transaction():
            db.session.get(Site, site_id).name = "first writer"
            db.session.flush()  # BEGIN IMMEDIATE ran: this request holds SQLite's write lock
            holding.set()
            release.wait(10)
        db.session.remove()


def test_requests_queue_for_the_write_lock_and_are_served_past_sqlites_busy_timeout(app, monkeypatch):
    """Issue 14: SQLite's busy handler sleeps and retries and serves nobody in order, so a save
    under load could wait for seconds; requests queue on a flock beside the database instead.
    The attack: SQLite's wait is cut to 50 ms and a writer holds the lock for 400 ms. A
    command, which waits in SQLite's handler, is refused "database is locked" (the set-up is
    real); a request waits its turn in the queue and writes after the first one committed."""
    from cellstudy.records import transaction as tx

    with app.app_context():
        _sqlite_only(app)
        site_id = db.session.scalar(select(Site.id).order_by(Site.id))
        db.session.remove()
        db.engine.dispose()  # new connections take the shorter busy timeout
    monkeypatch.setattr(tx, "BUSY_TIMEOUT_MS", 50)

    def run_second(in_request: bool, outcome: list) -> None:
        with app.app_context():
            try:
                if in_request:
                    with app.test_request_context("/"):
                        with transaction():
                            db.session.get(Site, site_id).name = "second writer"
                        outcome.append(_site_name(site_id))
                else:
                    with transaction():
                        db.session.get(Site, site_id).name = "a command"
                    outcome.append("written")
            except Exception as error:  # the refusal is the outcome looked at
                outcome.append(str(error))
            finally:
                db.session.remove()

    for in_request in (False, True):
        holding, release, outcome = threading.Event(), threading.Event(), []
        first = threading.Thread(target=_hold_the_write_lock, args=(app, site_id, holding, release))
        first.start()
        assert holding.wait(10)
        second = threading.Thread(target=run_second, args=(in_request, outcome))
        second.start()
        second.join(timeout=0.4)  # the first writer keeps the lock for 400 ms, 8x SQLite's wait
        release.set()
        first.join(timeout=10)
        second.join(timeout=10)
        if in_request:
            assert outcome == ["second writer"], outcome
        else:
            assert len(outcome) == 1 and "locked" in outcome[0], outcome
