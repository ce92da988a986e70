"""CSRF protection with the real setting on (the shared `app` fixture turns it off).

Every POST route of `app.url_map` answers 400 without a token -- sent by a user who is
allowed to post there, so the 400 cannot come from a missing permission -- and accepts
the same request with a valid token. State-changing routes refuse GET (405); logout is
POST-only."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from flask import url_for
from sqlalchemy import func, select

from cellstudy import create_app
from cellstudy.auth.models import Site
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db

from .test_authorization import (
    ENDPOINTS,
    FIXED_ARGS,
    IGNORED_METHODS,
    LOGGED_IN,
    PUBLIC,
    ROLE_CAPS,
    USERS,
    demo_records,
)

#: Actions that change state and must never answer a GET.
ACTIONS = {
    "auth.logout",
    "enrollment.register",
    "enrollment.exposure_remove",
    "enrollment.screen_fail",
    "enrollment.rescreen",
    "infusions.reschedule",
    "infusions.cancel",
    "infusions.visit_missed",
    "audit_viewer.study_export",
}
# Queries, SDV, signatures and locks (issue 6): POST only
ACTIONS |= {
    "monitoring.raise_query",
    "monitoring.answer_query",
    "monitoring.resolve_query",
    "monitoring.verify_forms",
    "monitoring.sign_forms",
    "monitoring.lock_data",
    "monitoring.lock_study",
    "monitoring.unlock_data",
}
# Study amendments (issue 11): POST only
ACTIONS |= {"amendments.approve", "amendments.reject", "amendments.withdraw"}

PASSWORD = "cellstudy-demo"


@pytest.fixture
def csrf_app(db_url):
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": db_url, "WTF_CSRF_ENABLED": True})
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


class _Tokens(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tokens = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name") == "csrf_token":
            self.tokens.append(attrs.get("value"))


def token_of(response) -> str:
    parser = _Tokens()
    parser.feed(response.get_data(as_text=True))
    assert parser.tokens and all(parser.tokens), "no csrf_token hidden input on the page"
    return parser.tokens[0]


def page_token(client, url="/") -> str:
    response = client.get(url, follow_redirects=True)
    assert response.status_code == 200, url
    return token_of(response)


def logged_in(client) -> bool:
    response = client.get("/")
    return not (response.status_code == 302 and urlsplit(response.location).path == "/login")


def log_in(app, username):
    client = app.test_client()
    token = page_token(client, "/login")
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302 and urlsplit(response.location).path == "/", f"login of {username} failed"
    assert logged_in(client)
    return client


def poster_for(requirement) -> str | None:
    """A demo user allowed to post where `requirement` applies (HZ among their sites, if any)."""
    if requirement == PUBLIC:
        return None
    for username, (role, sites) in USERS.items():
        if (requirement == LOGGED_IN or requirement in ROLE_CAPS[role]) and (not sites or "HZ" in sites):
            return username
    raise AssertionError(f"no demo user may do {requirement}")


def post_rules(app):
    rules = [r for r in app.url_map.iter_rules() if "POST" in r.methods]
    assert rules
    return sorted(rules, key=lambda r: (r.endpoint == "auth.logout", r.rule))


def url_of(app, rule, site_recs) -> str:
    """The URL of `rule` for the site's demo subject of the route (a subject in screening
    for the enrolment routes, the treated subject with its own infusion, lymphodepletion
    day or visit for the treatment routes): a valid target, so an allowed POST with a
    token reaches the form or the action."""
    route = ENDPOINTS.get(rule.endpoint)
    rec = site_recs.subjects_for(route)[0] if route is not None and route.site_scoped else None
    values = (
        {
            k: rec.id if k == "subject_id" else FIXED_ARGS[k] if k in FIXED_ARGS else getattr(rec, k)
            for k in rule.arguments
        }
        if rec
        else {}
    )
    with app.test_request_context():
        return url_for(rule.endpoint, **values)


def test_login_needs_a_valid_token(csrf_app):
    client = csrf_app.test_client()
    form = {"username": "coord-hz", "password": PASSWORD}
    assert client.post("/login", data=form).status_code == 400
    assert not logged_in(client)
    assert client.post("/login", data={**form, "csrf_token": "not-a-token"}).status_code == 400
    assert not logged_in(client)
    token = page_token(client, "/login")
    response = client.post("/login", data={**form, "csrf_token": token})
    assert response.status_code == 302 and urlsplit(response.location).path == "/"
    assert client.get("/").status_code == 200


def test_every_post_route_refuses_a_missing_token(csrf_app):
    own = demo_records(csrf_app)["HZ"]
    clients = {}
    checked = []
    for rule in post_rules(csrf_app):
        route = ENDPOINTS.get(rule.endpoint)
        assert route is not None and "POST" in route.methods, f"{rule.rule}: no expectation in ENDPOINTS"
        username = poster_for(route.methods["POST"])
        if rule.endpoint == "auth.logout":
            username = "coord-hz"  # logging out only means something when logged in
        if username is None:
            client = csrf_app.test_client()
        else:
            client = clients.get(username) or clients.setdefault(username, log_in(csrf_app, username))
        url = url_of(csrf_app, rule, own)

        response = client.post(url, data={})
        assert response.status_code == 400, f"{username} POST {url} without a token: {response.status_code}"
        assert b"Form expired" in response.data
        if username:
            assert logged_in(client), f"{username} was logged out by a refused POST to {url}"

        # The same request with the session's token gets past CSRF (to validation or the action).
        response = client.post(url, data={"csrf_token": page_token(client)})
        assert response.status_code in (200, 302), f"{username} POST {url} with a token: {response.status_code}"
        assert b"Form expired" not in response.data, f"{username} POST {url} with a token: refused as expired"
        if response.status_code == 302 and rule.endpoint != "auth.logout":
            assert urlsplit(response.location).path != "/login", f"{username} POST {url} with a token: logged out"
        checked.append(rule.endpoint)
    assert {"auth.login", "auth.logout", "auth.users", "enrollment.screening", "enrollment.enrol"} <= set(checked)
    assert {e for e, r in ENDPOINTS.items() if "POST" in r.methods} == set(checked)


def test_state_changing_routes_refuse_get(csrf_app):
    """Action routes are POST-only: a GET (a link, an <img>, a prefetch) answers 405."""
    client = log_in(csrf_app, "inv-hz")
    own = demo_records(csrf_app)["HZ"]
    seen = set()
    for rule in csrf_app.url_map.iter_rules():
        if rule.endpoint not in ACTIONS:
            continue
        seen.add(rule.endpoint)
        assert set(rule.methods) - IGNORED_METHODS == {"POST"}, f"{rule.rule} accepts {sorted(rule.methods)}"
        url = url_of(csrf_app, rule, own)
        assert client.get(url).status_code == 405, url
    assert seen == ACTIONS
    assert logged_in(client)  # GET /logout did not log out


def test_logout_is_post_only_and_needs_the_token(csrf_app):
    client = log_in(csrf_app, "monitor-hz")
    assert client.get("/logout").status_code == 405
    assert logged_in(client)
    assert client.post("/logout").status_code == 400
    assert logged_in(client)
    response = client.post("/logout", data={"csrf_token": page_token(client)})
    assert response.status_code == 302 and urlsplit(response.location).path == "/login"
    assert not logged_in(client)


def test_a_token_from_another_session_is_refused(csrf_app):
    alice, bob = log_in(csrf_app, "coord-hz"), log_in(csrf_app, "inv-hz")
    foreign = page_token(alice)
    assert bob.post("/logout", data={"csrf_token": foreign}).status_code == 400
    assert logged_in(bob)
    assert bob.post("/logout", data={"csrf_token": page_token(bob)}).status_code == 302
    assert not logged_in(bob)


def test_a_refused_post_changes_nothing(csrf_app):
    """A complete, valid registration without the token registers no subject."""
    client = log_in(csrf_app, "coord-hz")

    def subjects():
        with csrf_app.app_context():
            n = db.session.scalar(select(func.count(Subject.id)))
            site_id = db.session.scalar(select(Site.id).where(Site.code == "HZ"))
            db.session.remove()
            return n, site_id

    before, hz = subjects()
    assert client.post("/subjects/new", data={"site": str(hz)}).status_code == 400
    assert subjects()[0] == before
    response = client.post("/subjects/new", data={"site": str(hz), "csrf_token": page_token(client, "/subjects/")})
    assert response.status_code == 302 and "/screening" in response.location
    assert subjects()[0] == before + 1


def test_a_refused_treatment_action_changes_nothing(csrf_app):
    """Cancelling HZ-001's scheduled infusion: refused without the token (the infusion
    stays scheduled), done with the token from the scheduling page."""
    from cellstudy.infusions.models import Infusion

    treated = demo_records(csrf_app)["HZ"].treated
    client = log_in(csrf_app, "coord-hz")

    def infusion():
        with csrf_app.app_context():
            record = db.session.get(Infusion, treated.infusion_id)
            state, version = record.state, record.version
            db.session.remove()
            return state, version

    state, version = infusion()
    assert state == "scheduled"
    url = f"/subjects/{treated.id}/infusions/{treated.infusion_id}/cancel"
    form = {"version": str(version), "reason": "Subject withdrew consent for this infusion."}
    assert client.post(url, data=form).status_code == 400
    assert infusion() == (state, version)
    response = client.post(url, data={**form, "csrf_token": page_token(client, f"/subjects/{treated.id}/infusions")})
    assert response.status_code == 302 and urlsplit(response.location).path == f"/subjects/{treated.id}/infusions"
    state, _ = infusion()
    assert state == "cancelled", f"the cancel was accepted (302) but infusion {treated.infusion_id} is {state}"
