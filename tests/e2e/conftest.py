"""Browser-test fixtures: a live CellStudy server and Debian's Chromium via Playwright.

The server is the real app (`create_app("test")`, CSRF on) on a fresh copy of the demo
database (the `db_url` fixture of tests/conftest.py), served by werkzeug in a thread.
Chromium is the system one (/usr/bin/chromium, `make browser`); a browser is never
downloaded. Screenshots go to test-artifacts/e2e/ (git-ignored)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cellstudy import create_app
from cellstudy.extensions import db

CHROMIUM = os.environ.get("CELLSTUDY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


class LiveServer:
    def __init__(self, app):
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="cellstudy-live-server", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def live_server(db_url):
    """The app with CSRF enabled (the test config's default), on a free local port."""
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": db_url})
    assert app.config.get("WTF_CSRF_ENABLED", True), "the browser tests must run with CSRF protection on"
    server = LiveServer(app)
    server.start()
    yield server
    server.stop()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} not found: the browser tests use Debian's Chromium "
            "(`make browser` installs it; no browser is ever downloaded)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) pointed at the live server."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1400, "height": 900}, locale="en-GB", timezone_id="UTC"
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shot(page):
    """shot("name") saves a full-page screenshot to test-artifacts/e2e/name.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
