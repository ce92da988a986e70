"""Redirect targets are checked by one helper (cellstudy/urls.py; issue 13, failure 7).

The attack: a link or a forged form whose `next` a browser reads as another host. Browsers
drop tab, CR and LF inside a URL, strip edge spaces and read "\\" as "/", so the monitoring
forms' `next=/\\t/evil.example` answered `Location: //evil.example` (a protocol-relative URL:
the user lands on evil.example after a real action on the EDC).

Every Location here is resolved the way a browser resolves it (`browser_target`) and must
stay on this site. The readers of `next` (found with `grep -rn '"next"' cellstudy`): the
log-in (query string), the monitoring actions (their forms' hidden `next`); a refused write
and a locked form return to the Referer (records/views.py, monitoring's Locked handler). A
sweep of the whole URL map sends the same payloads to every other route as well.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from flask import url_for
from werkzeug.routing import IntegerConverter

from cellstudy.urls import local_path, safe_next
from tests.conftest import DEMO_PASSWORD

BYPASSES = [
    "//evil.example",
    "/\t/evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "\\\\evil.example",
    "https:evil.example",
    "https://evil.example/",
    "http:/\\evil.example",
    "javascript:alert(document.domain)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    " //evil.example",
    "\x00//evil.example",
    "///evil.example",
    "////evil.example",
    "/\r\n/evil.example",
    "/\n/evil.example",
    "\t//evil.example",
    "//evil.example\t",
    "/%09/evil.example",
    "%2F%2Fevil.example",
    "evil.example",
    "http://localhost@evil.example/",
    "//localhost@evil.example",
]
HOST = "localhost"


def browser_target(location: str, base: str = f"http://{HOST}/subjects/1/monitoring") -> tuple[str, str]:
    """(scheme, host) a browser goes to for this Location (the WHATWG URL parser's leniency:
    leading/trailing C0 controls and spaces stripped, tab/CR/LF removed, "\\" read as "/")."""
    cleaned = re.sub(r"^[\x00-\x20]+|[\x00-\x20]+$", "", location)
    cleaned = re.sub(r"[\t\n\r]", "", cleaned).replace("\\", "/")
    parts = urlsplit(urljoin(base, cleaned))
    return parts.scheme.lower(), parts.hostname or ""


def assert_on_site(response, what) -> None:
    location = response.headers.get("Location")
    if location is None:
        return
    assert browser_target(location) == ("http", HOST), (what, location)


# --- the helper itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", BYPASSES)
def test_the_helper_refuses_every_known_bypass(target):
    assert safe_next(target, "/fallback") == "/fallback"


@pytest.mark.parametrize(
    "target", ["/subjects/1/monitoring", "/subjects/?q=HZ&page=2", "/subjects/1/screening#weight_kg", "/a%2F%2Fb"]
)
def test_the_helper_keeps_a_path_on_this_site(target):
    assert safe_next(target, "/fallback") == target.split("#")[0]


def test_an_absolute_url_is_a_path_on_this_site_only_for_this_host():
    assert local_path("http://localhost/subjects/1?x=1", host="localhost") == "/subjects/1?x=1"
    assert local_path("http://localhost/subjects/1", host=None) is None  # a `next` is a path, never a URL
    assert local_path("http://evil.example/subjects/1", host="localhost") is None
    assert local_path("http://localhost//evil.example", host="localhost") is None
    assert local_path("http://localhost/\t/evil.example", host="localhost") is None


# --- the routes that read `next` ---------------------------------------------------------------------


@pytest.mark.parametrize("target", BYPASSES)
def test_log_in_never_sends_the_user_off_site(app, target):
    client = app.test_client()
    response = client.post(
        "/login", query_string={"next": target}, data={"username": "coord-hz", "password": DEMO_PASSWORD}
    )
    assert response.status_code == 302
    assert_on_site(response, target)
    assert response.headers["Location"] == "/", response.headers["Location"]


def test_log_in_keeps_a_next_on_this_site(app):
    response = app.test_client().post(
        "/login",
        query_string={"next": "/subjects/1/audit?page=2"},
        data={"username": "coord-hz", "password": DEMO_PASSWORD},
    )
    assert response.headers["Location"] == "/subjects/1/audit?page=2"


def _monitoring_posts(login):
    """(session, url, form data) of every monitoring action that returns to its `next`,
    each as it is refused or done (both answer with the redirect)."""
    monitor, dm, inv, coord = login("monitor-hz"), login("dm"), login("inv-hz"), login("coord-hz")
    return [
        (monitor, "/subjects/1/queries", {"target": "screening:1", "text": ""}),
        (monitor, "/subjects/1/queries/resolve", {"query_id": "1", "action": "reopen", "text": ""}),
        (coord, "/subjects/1/queries/answer", {"query_id": "1", "text": ""}),
        (monitor, "/subjects/1/verify", {"target": "", "visit_id": ""}),
        (inv, "/subjects/1/sign", {"target": "screening:1", "password": "wrong password"}),
        (dm, "/subjects/1/lock", {"target": "", "reason": ""}),
    ]


@pytest.mark.parametrize("target", BYPASSES)
def test_the_monitoring_actions_never_send_the_user_off_site(app, login, target):
    for session, url, data in _monitoring_posts(login):
        response = session.post(url, data={**data, "next": target})
        assert response.status_code == 302, (url, response.status_code)
        assert_on_site(response, (url, target))
        assert response.headers["Location"] == "/subjects/1/monitoring", (url, response.headers["Location"])


def test_the_monitoring_actions_keep_a_next_on_this_site(app, login):
    for session, url, data in _monitoring_posts(login):
        response = session.post(url, data={**data, "next": "/subjects/1/screening"})
        assert response.headers["Location"] == "/subjects/1/screening", url


@pytest.mark.parametrize("target", BYPASSES[:8])
def test_unlocking_returns_to_next_only_on_this_site(app, login, target):
    from cellstudy.extensions import db
    from cellstudy.monitoring.models import DataLock

    dm = login("dm")
    assert dm.post("/subjects/1/lock", data={"target": "screening:1", "reason": "Freeze"}).status_code == 302
    with app.app_context():
        lock_id = (
            db.session.query(DataLock.id).filter(DataLock.unlocked_at.is_(None)).order_by(DataLock.id.desc()).first()[0]
        )
    response = dm.post("/locks/unlock", data={"lock_id": str(lock_id), "reason": "Correction needed", "next": target})
    assert response.status_code == 302
    assert_on_site(response, target)
    assert response.headers["Location"] == "/locks"


@pytest.mark.parametrize(
    "referrer",
    [
        "http://evil.example/subjects/1",
        "http://localhost//evil.example",
        "http://localhost/\t/evil.example",
        "//evil.example",
    ],
)
def test_a_refused_write_returns_to_its_referrer_only_on_this_site(app, login, referrer):
    """records/views.py safe_back (a RecordError no view caught) reads the Referer header."""
    coord = login("coord-hz")
    # an exposure removal without the version it was opened at: refused by the write path
    response = coord.post(
        "/subjects/1/exposures/1/remove", data={"version": "-1", "reason": "duplicate"}, headers={"Referer": referrer}
    )
    assert response.status_code == 302
    assert_on_site(response, referrer)


# --- the whole URL map ---------------------------------------------------------------------------------


def _every_route(app):
    for rule in app.url_map.iter_rules():
        # log-out would end the session; files (PDFs, spreadsheets) are slow to build and answer
        # the file or a job's page, never a `next`
        if rule.endpoint in ("static", "auth.logout") or rule.rule.endswith((".pdf", "xlsx):fmt>")):
            continue
        values = {}
        for arg, conv in rule._converters.items():
            items = getattr(conv, "items", None)
            values[arg] = 1 if isinstance(conv, IntegerConverter) else (sorted(items)[0] if items else "screening")
        with app.test_request_context():
            url = url_for(rule.endpoint, **values)
        for method in sorted(rule.methods & {"GET", "POST"}):
            yield url, method


@pytest.mark.parametrize("user", ["monitor-hz", "coord-hz", "dm"])
def test_no_route_sends_the_user_off_site_with_a_next_or_a_referrer(app, login, user):
    session = login(user)
    for i, (url, method) in enumerate(_every_route(app)):
        target = BYPASSES[i % len(BYPASSES)]
        referrer = (
            ("http://localhost" + target if target.startswith("/") else target).replace("\r", "").replace("\n", "")
        )
        response = session.client.open(
            url,
            method=method,
            query_string={"next": target},
            data={"next": target} if method == "POST" else None,
            headers={"Referer": referrer},  # (a header cannot carry CR or LF)
        )
        response.close()  # a streamed export is not read to its end
        assert response.status_code < 500, (url, method, response.status_code)
        assert_on_site(response, (url, method, target))
