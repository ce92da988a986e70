"""A refused write that escapes a view (issue 12): the app-wide RecordError handler rolls
back, flashes "Nothing was saved: ...", and redirects to a safe place, never a 500 and
never to another host."""

from __future__ import annotations

from sqlalchemy import func, select

from cellstudy.auth.models import Site
from cellstudy.extensions import db
from cellstudy.records.service import RecordError, transaction

RENAMED = "Renamed by a refused write"


def _add_refusing_route(app):
    """A test-only POST route whose action changes a row (flushed), then is refused uncaught."""

    def refuse():
        with transaction():
            site = db.session.scalars(select(Site).order_by(Site.id)).first()
            site.name = RENAMED
            db.session.flush()
            raise RecordError("the test refuses this write.")

    app.add_url_rule("/_test/refuse", "test_refuse", refuse, methods=["POST"])


def _renamed(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Site).where(Site.name == RENAMED))


def _flashes(session) -> list:
    with session.client.session_transaction() as s:
        return list(s.get("_flashes", []))


def test_an_uncaught_refusal_is_a_redirect_with_the_message_and_nothing_is_written(app, login):
    _add_refusing_route(app)
    user = login("coord-hz")
    response = user.post("/_test/refuse", headers={"Referer": "http://localhost/subjects/"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/subjects/"
    assert ("error", "Nothing was saved: the test refuses this write.") in _flashes(user)
    assert _renamed(app) == 0


def test_without_a_referrer_or_with_its_own_url_it_goes_to_the_start_page(app, login):
    _add_refusing_route(app)
    user = login("coord-hz")
    for headers in ({}, {"Referer": "http://localhost/_test/refuse"}, {"Referer": "/_test/refuse"}):
        response = user.post("/_test/refuse", headers=headers)
        assert response.status_code == 302, headers
        assert response.headers["Location"] == "/", headers


def test_an_open_redirect_through_the_referrer_is_not_followed(app, login):
    _add_refusing_route(app)
    user = login("coord-hz")
    for referrer in (
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/x",
        "http://evil.example/",
        "javascript:alert(1)",
        "//evil.example/subjects/",
    ):
        response = user.post("/_test/refuse", headers={"Referer": referrer})
        assert response.status_code == 302, referrer
        location = response.headers["Location"]
        assert location == "/", (referrer, location)
        assert "evil" not in location
