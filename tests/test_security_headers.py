"""Security headers (issue 13): HSTS in production only; the strict CSP unchanged everywhere.

Strict-Transport-Security tells a browser to use https for the site for a year: right behind
the production TLS proxy, wrong for `make run` on http://127.0.0.1 (the browser would then
refuse the plain-http development server)."""

from __future__ import annotations

import pytest

from cellstudy import create_app
from cellstudy.extensions import db
from tests.conftest import DEMO_PASSWORD

HSTS = "max-age=31536000; includeSubDomains"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)
PAGES = ["/login", "/static/cellstudy.css", "/no-such-page", "/subjects/"]


@pytest.fixture
def production(monkeypatch, db_url):
    """The production configuration as it is started (ProductionConfig.validate reads both
    from the environment), on a copy of the test database."""
    monkeypatch.setenv("SECRET_KEY", "p" * 64)
    monkeypatch.setenv("DATABASE_URL", db_url)
    app = create_app("production", {"WTF_CSRF_ENABLED": False})
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def development(monkeypatch, db_url):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setattr("config.Config.SQLALCHEMY_DATABASE_URI", db_url)
    app = create_app("development", {"WTF_CSRF_ENABLED": False})
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _responses(app):
    client, https = app.test_client(), "https://localhost"  # production cookies are Secure
    out = [client.get(url, base_url=https) for url in PAGES]
    login = client.post("/login", data={"username": "coord-hz", "password": DEMO_PASSWORD}, base_url=https)
    assert login.status_code == 302, login.data[:300]
    out += [login, client.get("/subjects/", base_url=https), client.get("/subjects/1", base_url=https)]
    assert out[-1].status_code == 200  # a logged-in page, not the log-in redirect
    return out


@pytest.mark.db
def test_production_sends_hsts_on_every_response(production):
    for response in _responses(production):
        assert response.headers.get("Strict-Transport-Security") == HSTS, response.request.path
        assert response.headers["Content-Security-Policy"] == CSP


@pytest.mark.db
def test_development_sends_no_hsts(development):
    for response in _responses(development):
        assert "Strict-Transport-Security" not in response.headers, response.request.path
        assert response.headers["Content-Security-Policy"] == CSP


@pytest.mark.db
def test_the_test_configuration_sends_no_hsts_and_the_same_csp(client):
    response = client.get("/login")
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
