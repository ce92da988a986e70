"""Database faults (issue 13, failure 8): a connection the server ended gives the app's 503
page (Retry-After), never a 500 nor the WSGI server's bare "Internal Server Error"; the
next request works again without a restart.

The faults are real: on PostgreSQL the app's backends are ended with pg_terminate_backend
from another connection, before a request (the pool's pre-ping replaces them), in the middle
of a view, between the statements of a real save, and after the view's last statement (the
teardown's rollback meets the dead connection). The Flask test client runs the app's WSGI
callable directly: no gunicorn is involved, so what it answers is the app's own answer."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy import event, select, text

from cellstudy.extensions import db
from cellstudy.records.transaction import transaction
from tests.conftest import PG_URL, Session
from tests.helpers import screening_post

postgres_only = pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TEST_DATABASE_URL)")

UNAVAILABLE = b"503 \xc2\xb7 Database unavailable"


def _admin_engine(app):
    """Another connection to the app's database, as a database administrator has."""
    return sa.create_engine(
        app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
    )  # autocommit: pg_stat_activity is read afresh by each statement, not once per transaction


def _wait_gone(conn, pids) -> None:
    for _ in range(200):
        left = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:p)"), {"p": list(pids)})
        if not left.scalar():
            return
        time.sleep(0.02)
    raise AssertionError(f"backends {pids} did not end")


def terminate_all(app) -> int:
    """End every backend of the app's database but our own (the issue's statement)."""
    engine = _admin_engine(app)
    with engine.connect() as conn:
        pids = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        ).scalars()
        pids = list(pids)
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        _wait_gone(conn, pids)
    engine.dispose()
    return len(pids)


def terminate(app, pid: int) -> None:
    engine = _admin_engine(app)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        _wait_gone(conn, [pid])
    engine.dispose()


def _unavailable(response) -> None:
    assert response.status_code == 503, response.data[:300]
    assert response.headers["Retry-After"] == "10"
    assert UNAVAILABLE in response.data
    assert b"Internal Server Error" not in response.data


def _dying_view(app):
    """A view of this test app only: it reads, has its own connection ended by another one,
    then reads again."""

    @app.route("/_test/dies-mid-request")
    def dies_mid_request():
        db.session.execute(text("SELECT 1"))
        terminate(app, db.session.execute(text("SELECT pg_backend_pid()")).scalar())
        db.session.execute(text("SELECT 1"))
        return "unreachable"

    @app.route("/_test/dies-in-a-transaction")
    def dies_in_a_transaction():
        with transaction():
            db.session.execute(text("SELECT 1"))
            terminate(app, db.session.execute(text("SELECT pg_backend_pid()")).scalar())
            db.session.execute(text("SELECT 1"))
        return "unreachable"

    @app.route("/_test/dies-after-the-view")
    def dies_after_the_view():
        # the session keeps its transaction open; the teardown's rollback meets a dead connection
        terminate(app, db.session.execute(text("SELECT pg_backend_pid()")).scalar())
        return "answered"


@postgres_only
def test_terminated_pooled_connections_are_replaced_before_use(app):
    s = Session(app, "coord-hz")
    assert s.get("/subjects/").status_code == 200
    assert terminate_all(app) >= 1  # the pooled connection of the request above
    response = s.get("/subjects/")
    assert response.status_code == 200, response.data[:300]  # pre-ping: a fresh connection, no error
    assert b"HZ-S001" in response.data


@postgres_only
def test_without_pre_ping_a_dead_pooled_connection_is_a_503_once_never_a_500(db_url):
    from tests.conftest import _make_app

    app = _make_app(db_url, SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": False})
    try:
        s = Session(app, "coord-hz")
        assert s.get("/subjects/").status_code == 200
        terminate_all(app)
        _unavailable(s.get("/subjects/"))
        assert s.get("/subjects/").status_code == 200  # the dead connection left the pool
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@postgres_only
@pytest.mark.parametrize("where", ["dies-mid-request", "dies-in-a-transaction"])
def test_a_connection_ended_mid_request_gives_the_503_page_and_the_next_request_works(app, where):
    _dying_view(app)
    s = Session(app, "coord-hz")
    _unavailable(s.get(f"/_test/{where}"))
    assert s.get("/subjects/").status_code == 200
    assert s.get(f"/_test/{where}").status_code == 503  # and again: the app does not wedge


@postgres_only
def test_a_dead_connection_at_teardown_never_raises(app):
    """Today's failure: the teardown's rollback raised, and the WSGI server answered its bare
    "Internal Server Error" after the view had answered."""
    _dying_view(app)
    s = Session(app, "coord-hz")
    response = s.get("/_test/dies-after-the-view")  # an exception out of the teardown would raise here
    assert response.status_code == 200 and response.data == b"answered"
    assert s.get("/subjects/").status_code == 200


@postgres_only
def test_a_save_whose_connection_dies_between_its_statements_saves_nothing_and_says_so(app):
    """A real screening save: the connection is ended just before its audit records are
    written (after the form's row was updated, inside the one transaction)."""
    from cellstudy.enrollment.models import Screening

    s = Session(app, "coord-hz")
    with app.app_context():
        before = db.session.execute(select(Screening).where(Screening.subject_id == 1)).scalars().first()
        screening_id, version, weight = before.id, before.version, (before.data or {}).get("weight_kg")
        engine = db.engine
    url = f"/subjects/1/screening/{screening_id}"
    armed = []

    def kill_before_audit(conn, cursor, statement, parameters, context, executemany):
        if armed and statement.lstrip().upper().startswith("INSERT INTO AUDIT_RECORD"):
            armed.clear()
            terminate(app, conn.connection.dbapi_connection.info.backend_pid)

    event.listen(engine, "before_cursor_execute", kill_before_audit)
    try:
        armed.append(True)
        data = screening_post(version, {"weight_kg": "71.3"}, reason="Weighed again")
        _unavailable(s.post(url, data=data))
        assert not armed, "the save never reached its audit records"
    finally:
        event.remove(engine, "before_cursor_execute", kill_before_audit)
    with app.app_context():
        after = db.session.get(Screening, screening_id)
        assert (after.version, (after.data or {}).get("weight_kg")) == (version, weight)  # nothing half-saved
    assert s.get(url).status_code == 200  # recovered by itself


@pytest.mark.skipif(bool(PG_URL), reason="SQLite's own fault")
def test_a_database_that_stays_locked_is_the_503_page_on_sqlite(app):
    """SQLite's fault of the kind: another process holds the write lock past the busy timeout
    ("database is locked", an OperationalError). The same clear page, and the next request
    works once the lock is gone."""
    import sqlite3

    @app.route("/_test/write")
    def write():
        db.session.execute(text("PRAGMA busy_timeout=100"))  # this connection only; set back below
        try:
            with transaction():
                db.session.execute(text("SELECT 1"))
        finally:
            db.session.execute(text("PRAGMA busy_timeout=10000"))
        return "written"

    s = Session(app, "coord-hz")
    holder = sqlite3.connect(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # an administrator's sqlite3 shell, say
    try:
        _unavailable(s.get("/_test/write"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert s.get("/_test/write").data == b"written"
    assert s.get("/subjects/").status_code == 200


def test_pool_pre_ping_is_on_in_every_configuration():
    from config import CONFIGS

    for name, config in CONFIGS.items():
        assert config.SQLALCHEMY_ENGINE_OPTIONS.get("pool_pre_ping") is True, name
