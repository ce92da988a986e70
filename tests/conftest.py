"""Test fixtures: every app test runs the real app against a real database.

SQLite by default; PostgreSQL when TEST_DATABASE_URL is set (a server URL such as
postgresql+psycopg://postgres@127.0.0.1:5432/cellstudy_test: databases with that
name as prefix are created and dropped by the suite). The schema comes from the
Alembic migrations and the demo study is loaded once into a template database;
each test gets a fresh copy (a file copy on SQLite, CREATE DATABASE ... TEMPLATE on
PostgreSQL), so tests never see each other's writes and the append-only audit
trail never needs deleting."""

from __future__ import annotations

import itertools
import os
import shutil
import uuid

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from cellstudy import create_app
from cellstudy.extensions import db

PG_URL = os.environ.get("TEST_DATABASE_URL")
# Issue 13: production refuses to start without an audit trail key; the tests that build a
# production app get this one (TestConfig has its own, config.py). Never a real key.
os.environ.setdefault("CELLSTUDY_AUDIT_KEY", "7e57" * 16)
_counter = itertools.count()


def pytest_report_header(config):
    return f"cellstudy database: {'PostgreSQL ' + PG_URL if PG_URL else 'SQLite'}"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "app" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def _make_app(url: str, **overrides):
    config = {"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False, **overrides}
    return create_app("test", config)


def _build_template(url: str) -> None:
    from cellstudy.demo import load_demo

    app = _make_app(url)
    with app.app_context():
        upgrade(directory=os.path.join(os.path.dirname(__file__), "..", "migrations"))
        load_demo()
        db.session.remove()
        db.engine.dispose()


class SqliteDatabases:
    def __init__(self, tmp_dir):
        self.tmp_dir = tmp_dir
        self.template = os.path.join(tmp_dir, "template.db")
        _build_template("sqlite:///" + self.template)

    def new(self) -> str:
        path = os.path.join(self.tmp_dir, f"test-{next(_counter)}.db")
        shutil.copyfile(self.template, path)
        return "sqlite:///" + path

    def drop(self, url: str) -> None:
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)


class PostgresDatabases:
    def __init__(self, base_url: str):
        self.base = sa.engine.make_url(base_url)
        self.prefix = f"{self.base.database or 'cellstudy_test'}_{uuid.uuid4().hex[:6]}"
        self.admin = sa.create_engine(self.base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        self.template = f"{self.prefix}_tmpl"
        self._exec(f'CREATE DATABASE "{self.template}"')
        _build_template(self._url(self.template))

    def _url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def _exec(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(sql)

    def new(self) -> str:
        name = f"{self.prefix}_{next(_counter)}"
        self._exec(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return self._url(name)

    def drop(self, url: str) -> None:
        self._exec(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)')

    def close(self) -> None:
        self._exec(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    if PG_URL:
        dbs = PostgresDatabases(PG_URL)
        yield dbs
        dbs.close()
    else:
        yield SqliteDatabases(str(tmp_path_factory.mktemp("db")))


@pytest.fixture
def db_url(databases):
    url = databases.new()
    yield url
    databases.drop(url)


@pytest.fixture
def app(db_url):
    app = _make_app(db_url)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


DEMO_PASSWORD = "cellstudy-demo"


class Session:
    """A logged-in test client with small helpers."""

    def __init__(self, app, username):
        self.app = app
        self.username = username
        self.client = app.test_client()
        response = self.client.post("/login", data={"username": username, "password": DEMO_PASSWORD})
        assert response.status_code == 302, f"login of {username} failed"

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, data=None, **kw):
        return self.client.post(url, data=data or {}, **kw)


@pytest.fixture
def login(app):
    return lambda username: Session(app, username)


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


@pytest.fixture
def clock():
    """The one clock (cellstudy.timeutil), set by this test and reset after it:
    `clock.set(at)` freezes it at `at` (an aware datetime; naive = UTC; a date = its
    00:00 UTC) and it stands still, `clock.advance(timedelta)` moves it, `clock.now()`
    reads it. Every module, the amendments' scheduled run and the job workers read it."""
    from types import SimpleNamespace

    from cellstudy import timeutil

    timeutil.reset_clock()
    yield SimpleNamespace(set=timeutil.set_clock, advance=timeutil.advance, now=timeutil.utcnow)
    timeutil.reset_clock()
