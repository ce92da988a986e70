"""Rate limits through Flask-Limiter (issue 13): log-in per address and per user name,
e-signatures per signer, exports per user; going over answers 429 with the app's page.

The suite's TestConfig raises the limits (it logs in and downloads far more than a person);
these tests build the app with small limits, and check that the real defaults are the
documented ones."""

from __future__ import annotations

import uuid

import pytest

from cellstudy.extensions import db
from config import Config
from tests.conftest import DEMO_PASSWORD, Session, _make_app
from tests.helpers import audit, sid_of, subject_by_number


@pytest.fixture
def limited(db_url):
    app = _make_app(db_url, RATELIMIT_LOGIN="3/minute", RATELIMIT_SIGNATURE="2/minute", RATELIMIT_EXPORT="2/minute")
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def post_login(client, username, password="wrong", address="127.0.0.1"):
    return client.post(
        "/login", data={"username": username, "password": password}, environ_base={"REMOTE_ADDR": address}
    )


def assert_429(response, what):
    assert response.status_code == 429
    page = response.data.decode()
    assert f"{what} is limited to" in page and "Wait a minute and try again" in page
    assert int(response.headers["Retry-After"]) > 0


def test_the_defaults_are_the_documented_ones():
    assert (Config.RATELIMIT_LOGIN, Config.RATELIMIT_SIGNATURE, Config.RATELIMIT_EXPORT) == (
        "10/minute",
        "20/minute",
        "30/minute",
    )
    assert Config.RATELIMIT_STORAGE_URI.startswith(("memory://", "redis://"))


def test_log_in_is_limited_per_address(limited):
    client = limited.test_client()
    for username in ("coord-hz", "coord-nb", "nobody"):
        assert post_login(client, username).status_code == 200
    assert_429(post_login(client, "inv-hz", DEMO_PASSWORD), "Logging in")  # even the right password
    assert post_login(client, "inv-hz", DEMO_PASSWORD, address="10.0.0.9").status_code == 302  # another address
    assert limited.test_client().get("/login").status_code == 200  # the page itself is not limited


def test_log_in_is_limited_per_user_name_across_addresses(limited):
    client = limited.test_client()
    for i in range(3):
        assert post_login(client, "coord-hz", address=f"10.0.1.{i}").status_code == 200
    assert_429(post_login(client, " Coord-HZ ", address="10.0.1.99"), "Logging in")
    assert post_login(client, "coord-nb", DEMO_PASSWORD, address="10.0.1.98").status_code == 302


def test_e_signatures_are_limited_per_signer_and_nothing_is_signed_past_the_limit(limited):
    with limited.app_context():
        subject = subject_by_number("HZ-S004")
        sid, version = subject.id, subject.current_screening.version
    inv = Session(limited, "inv-hz")
    form = {"password": "guess", "confirm": "y", "screening_version": str(version), "dose_level": "DL1"}
    for _ in range(2):
        response = inv.post(f"/subjects/{sid}/enrol", data=form)
        assert response.status_code == 200 and b"Password not accepted" in response.data
    response = inv.post(f"/subjects/{sid}/enrol", data={**form, "password": DEMO_PASSWORD})
    assert_429(response, "Signing")
    assert len(audit(limited, action="sign_refused", subject_id=sid)) == 2  # the third was never tried
    assert audit(limited, action="sign", subject_id=sid) == []
    assert inv.get(f"/subjects/{sid}").status_code == 200  # still signed in: a limit is not a lock
    other = Session(limited, "inv-nb")  # another signer has a count of their own
    nb = sid_of(limited, "NB-S003")
    assert other.post(f"/subjects/{nb}/enrol", data={**form, "screening_version": "0"}).status_code != 429


def test_exports_are_limited_per_user_across_every_export(limited):
    monitor = Session(limited, "monitor-hz")
    assert monitor.get("/safety/ae.csv").status_code == 200
    assert monitor.get("/safety/sdtm/ae.csv").status_code == 200
    assert_429(monitor.get("/audit/export.csv"), "Exporting")  # one count for every export
    assert monitor.get("/safety/ae").status_code == 200  # the listing page is not an export
    assert Session(limited, "dm").get("/safety/ae.xlsx").status_code == 200  # another user


def test_every_export_endpoint_is_limited(app):
    limited = app.extensions["cellstudy_rate_limited"]
    files = {r.endpoint for r in app.url_map.iter_rules() if r.rule.endswith((".csv", ".xlsx", ".pdf"))}
    expected = files | {"safety.export", "audit_viewer.study_export", "pdf.site_casebooks", "jobs.download"}
    assert expected <= set(limited) and "auth.login" in limited


def _redis(url):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis at {url}")
    return client


def test_with_redis_the_counts_live_in_redis(db_url):
    url = "redis://127.0.0.1:6379/15"
    redis = _redis(url)
    prefix = f"cellstudy-test-{uuid.uuid4().hex[:8]}"
    app = _make_app(db_url, RATELIMIT_STORAGE_URI=url, RATELIMIT_KEY_PREFIX=prefix, RATELIMIT_LOGIN="2/minute")
    try:
        client = app.test_client()
        assert post_login(client, "coord-hz").status_code == 200
        assert post_login(client, "coord-nb").status_code == 200
        assert post_login(client, "nobody").status_code == 429
        keys = redis.keys(f"*{prefix}*")
        assert keys, "no rate-limit count in Redis"
    finally:
        for key in redis.keys(f"*{prefix}*"):
            redis.delete(key)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
