"""The authorisation matrix (PROTOCOL 2): every route x every demo user (and anonymous)
x own-site / other-site record.

The expectations are written here by hand from PROTOCOL 2 -- they are NOT read from
cellstudy.auth.policy, so the test can disagree with the app. The matrix is generated
from `app.url_map`: a rule whose endpoint (or method) has no entry in ENDPOINTS fails,
so a new route cannot ship without a written expectation.

Order of the checks, as documented in cellstudy/auth/policy.py:
  anonymous                          -> 302 to the login page (public endpoints excepted)
  role lacks the capability          -> 403
  record of a site not assigned      -> 404 (not 403, not the record)
  nested record of another subject   -> 404
  otherwise                          -> 200 (GET), 200 or 302 (POST, an empty form)
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from cellstudy.auth.models import Site
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db

# --- the expectations, by hand from PROTOCOL 2 ------------------------------------------

PUBLIC = "public"  # no log-in needed
LOGGED_IN = "logged_in"  # any authenticated user, no capability

VIEW, AUDIT, ENTER, SIGN, USERS_ADMIN = "view_clinical", "view_audit", "enter_data", "sign_eligibility", "manage_users"

ROLE_CAPS: dict[str, frozenset[str]] = {
    "coordinator": frozenset({VIEW, AUDIT, ENTER}),
    "investigator": frozenset({VIEW, AUDIT, ENTER, SIGN}),
    "monitor": frozenset({VIEW, AUDIT}),
    "data_manager": frozenset({VIEW, AUDIT}),
    "admin": frozenset({USERS_ADMIN}),
}

ALL_SITES = frozenset({"HZ", "NB"})

#: demo user -> (role, sites whose clinical data the user may see)
USERS: dict[str, tuple[str, frozenset[str]]] = {
    "coord-hz": ("coordinator", frozenset({"HZ"})),
    "coord-nb": ("coordinator", frozenset({"NB"})),
    "inv-hz": ("investigator", frozenset({"HZ"})),
    "inv-nb": ("investigator", frozenset({"NB"})),
    "monitor-hz": ("monitor", frozenset({"HZ"})),
    "dm": ("data_manager", ALL_SITES),  # all sites: both demo sites are "own"
    "admin": ("admin", frozenset()),  # no clinical data at all
}


@dataclass(frozen=True)
class Route:
    methods: dict[str, str]  # method -> PUBLIC | LOGGED_IN | capability
    site_scoped: bool = False  # the URL names a subject-owned record


ENDPOINTS: dict[str, Route] = {
    "static": Route({"GET": PUBLIC}),
    "auth.login": Route({"GET": PUBLIC, "POST": PUBLIC}),
    # Anyone may post to logout; it always ends on the login page.
    "auth.logout": Route({"POST": PUBLIC}),
    "auth.users": Route({"GET": USERS_ADMIN, "POST": USERS_ADMIN}),
    "auth.study_settings": Route({"GET": USERS_ADMIN, "POST": USERS_ADMIN}),
    "main.index": Route({"GET": LOGGED_IN}),
    "enrollment.subject_list": Route({"GET": VIEW}),
    "enrollment.register": Route({"POST": ENTER}),
    "enrollment.subject": Route({"GET": VIEW}, site_scoped=True),
    "enrollment.screening": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True),
    "enrollment.exposure_new": Route({"GET": ENTER, "POST": ENTER}, site_scoped=True),
    "enrollment.exposure_edit": Route({"GET": ENTER, "POST": ENTER}, site_scoped=True),
    "enrollment.exposure_remove": Route({"POST": ENTER}, site_scoped=True),
    "enrollment.enrol": Route({"GET": SIGN, "POST": SIGN}, site_scoped=True),
    "enrollment.screen_fail": Route({"POST": ENTER}, site_scoped=True),
    "enrollment.rescreen": Route({"POST": ENTER}, site_scoped=True),
    "records.subject_audit": Route({"GET": AUDIT}, site_scoped=True),
}

#: Allowed requests that answer with a redirect rather than a page:
#: (endpoint, method, who) -> path of the Location; who is a username, "*" (anyone)
#: or "user" (any logged-in user).
REDIRECTS: dict[tuple[str, str, str], str] = {
    ("auth.logout", "POST", "*"): "/login",
    ("auth.login", "GET", "user"): "/",
    ("auth.login", "POST", "user"): "/",
    ("main.index", "GET", "admin"): "/admin/users",  # the admin's start page: no clinical data
}

IGNORED_METHODS = {"HEAD", "OPTIONS"}
NESTED_ARGS = {"screening_id", "exposure_id"}
MISSING_ID = 10**7


# --- demo data ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Rec:
    """A demo subject and one record of each nested kind belonging to it."""
    id: int
    number: str
    site: str
    screening_id: int
    exposure_id: int


def demo_records(app) -> dict[str, tuple[Rec, Rec]]:
    """site code -> (primary subject, a second subject of the same site).

    The primary subject is in screening with a complete screening form (so the
    enrolment page has something to show); both have an active exposure."""
    with app.app_context():
        codes = {site.code: site.id for site in db.session.scalars(select(Site))}
        assert set(codes) == set(ALL_SITES), f"demo sites changed: {sorted(codes)}"
        out = {}
        for code, site_id in codes.items():
            subjects = db.session.scalars(select(Subject).where(Subject.site_id == site_id)
                                          .order_by(Subject.id)).all()
            usable = [s for s in subjects if s.current_screening is not None and s.active_exposures]
            primary = next(s for s in usable
                           if s.status == "screening" and s.current_screening.status == "complete")
            second = next(s for s in usable if s.id != primary.id)
            out[code] = tuple(Rec(s.id, s.screening_number, code, s.current_screening.id,
                                  s.active_exposures[0].id) for s in (primary, second))
        db.session.remove()
        return out


# --- generating the cases ------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    endpoint: str
    method: str
    url: str
    variant: str  # "-" | own | other_site | missing | nested_same_site | nested_other_site
    expected: object  # "login" | 403 | 404 | "allowed" | ("redirect", path)
    subject: Rec | None = None  # the subject named in the URL (its number shows on an allowed page)
    hidden: Rec | None = None  # a record that must not be shown


def user_sites(username):
    return USERS[username][1] if username else frozenset()


def home_and_away(username) -> tuple[str, str]:
    sites = sorted(user_sites(username))
    home = sites[0] if sites else "HZ"
    return home, ("NB" if home == "HZ" else "HZ")


def expectation(username, endpoint, method, variant, site):
    required = ENDPOINTS[endpoint].methods[method]
    if required != PUBLIC:
        if username is None:
            return "login"
        if required != LOGGED_IN and required not in ROLE_CAPS[USERS[username][0]]:
            return 403
        if ENDPOINTS[endpoint].site_scoped:
            if variant in ("missing", "nested_same_site", "nested_other_site"):
                return 404
            if site not in user_sites(username):
                return 404
    for who in (username, "user" if username else None, "*"):
        if (endpoint, method, who) in REDIRECTS:
            return ("redirect", REDIRECTS[endpoint, method, who])
    return "allowed"


def _build(app, rule, values) -> str:
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def cases_for(app, username, recs) -> list[Case]:
    """Every rule x method (HEAD/OPTIONS aside) x record variant for one user."""
    home, away = home_and_away(username)
    own, own_second = recs[home]
    other, _ = recs[away]
    unknown, cases = [], []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        route = ENDPOINTS.get(rule.endpoint)
        methods = sorted(set(rule.methods) - IGNORED_METHODS)
        if route is None:
            unknown.append(f"{rule.rule} ({rule.endpoint}): no entry in ENDPOINTS")
            continue
        missing_methods = [m for m in methods if m not in route.methods]
        if missing_methods:
            unknown.append(f"{rule.rule} ({rule.endpoint}): no expectation for {missing_methods}")
            continue
        args = set(rule.arguments)
        if args - {"subject_id", "filename"} - NESTED_ARGS:
            unknown.append(f"{rule.rule}: no test value for {sorted(args - {'subject_id', 'filename'} - NESTED_ARGS)}")
            continue

        def nested(rec):
            return {k: getattr(rec, k) for k in args & NESTED_ARGS}

        variants = []
        if "filename" in args:
            variants.append(("-", {"filename": "cellstudy.css"}, None, None, None))
        elif "subject_id" in args:
            variants += [("own", {"subject_id": own.id, **nested(own)}, home, own, other),
                         ("other_site", {"subject_id": other.id, **nested(other)}, away, other, other),
                         ("missing", {"subject_id": MISSING_ID, **nested(own)}, None, None, own)]
            if args & NESTED_ARGS:
                variants += [("nested_same_site", {"subject_id": own.id, **nested(own_second)}, home, None, own_second),
                             ("nested_other_site", {"subject_id": own.id, **nested(other)}, home, None, other)]
        else:
            variants.append(("-", {}, None, None, None))
        for method in methods:
            for variant, values, site, subject, hidden in variants:
                cases.append(Case(rule.endpoint, method, _build(app, rule, values), variant,
                                  expectation(username, rule.endpoint, method, variant, site), subject, hidden))
    assert not unknown, "routes without a written authorisation expectation:\n" + "\n".join(unknown)
    return cases


def _order(case: Case):
    # Reads first, then writes; logging out last (it ends the session).
    return (case.endpoint == "auth.logout", case.method != "GET", case.url, case.method)


def _problem(case: Case, response) -> str | None:
    status, location = response.status_code, response.headers.get("Location", "")
    path = urlsplit(location).path
    body = response.get_data(as_text=True)
    exp = case.expected
    if exp == "login":
        if status != 302 or path != "/login":
            return f"expected 302 to /login, got {status} {location}"
    elif exp in (403, 404):
        if status != exp:
            return f"expected {exp}, got {status} {location}"
    elif isinstance(exp, tuple):
        if status != 302 or path != exp[1]:
            return f"expected 302 to {exp[1]}, got {status} {location}"
    elif case.method == "GET":
        if status != 200:
            return f"expected 200, got {status} {location}"
        if case.subject and case.subject.number not in body:
            return f"200, but the page does not show subject {case.subject.number}"
    else:
        if status not in (200, 302):
            return f"expected 200 or 302 (allowed POST), got {status} {location}"
        if status == 302 and path == "/login":
            return "allowed POST redirected to the login page (session lost?)"
    if exp != "allowed" and case.hidden and case.hidden.number in body:
        return f"status {status} but the body shows {case.hidden.number}"
    return None


# --- the tests -----------------------------------------------------------------------------

def test_every_route_has_an_expectation(app):
    """url_map and ENDPOINTS agree exactly: rules, methods and site scoping."""
    problems = []
    seen = {}
    for rule in app.url_map.iter_rules():
        methods = set(rule.methods) - IGNORED_METHODS
        seen.setdefault(rule.endpoint, set()).update(methods)
        route = ENDPOINTS.get(rule.endpoint)
        if route is None:
            problems.append(f"{rule.rule}: endpoint {rule.endpoint} has no expectation")
            continue
        if ("subject_id" in rule.arguments) != route.site_scoped:
            problems.append(f"{rule.rule}: site_scoped={route.site_scoped} but arguments are {sorted(rule.arguments)}")
    for endpoint, route in ENDPOINTS.items():
        if endpoint not in seen:
            problems.append(f"{endpoint}: in ENDPOINTS but no such route (stale expectation)")
        elif seen[endpoint] != set(route.methods):
            problems.append(f"{endpoint}: methods {sorted(seen[endpoint])} but expectation for {sorted(route.methods)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("username", [None, *USERS], ids=lambda u: u or "anonymous")
def test_authorisation_matrix(app, login, username):
    recs = demo_records(app)
    client = login(username).client if username else app.test_client()
    cases = sorted(cases_for(app, username, recs), key=_order)
    failures = []
    for case in cases:
        response = client.open(case.url, method=case.method, data={} if case.method == "POST" else None)
        problem = _problem(case, response)
        if problem:
            failures.append(f"{username or 'anonymous'} {case.method} {case.url} [{case.endpoint}, {case.variant}]: "
                            f"{problem}")
    assert not failures, f"{len(failures)} of {len(cases)} requests:\n" + "\n".join(failures)
    # The last request was the logout: the session is over.
    assert cases[-1].endpoint == "auth.logout"
    after = client.get("/")
    assert after.status_code == 302 and urlsplit(after.location).path == "/login"


def test_expectations_cover_every_outcome(app):
    """The matrix is not vacuous: each outcome occurs, and for each capability-guarded
    site-scoped route some user is allowed at the own site and refused (404) at the other."""
    recs = demo_records(app)
    outcomes = {}
    for username in [None, *USERS]:
        for case in cases_for(app, username, recs):
            outcomes.setdefault(case.expected if not isinstance(case.expected, tuple) else "redirect",
                                set()).add(case.endpoint)
    assert set(outcomes) == {"login", 403, 404, "allowed", "redirect"}
    scoped = {e for e, r in ENDPOINTS.items() if r.site_scoped}
    assert outcomes["allowed"] >= scoped and outcomes[404] >= scoped


def test_endpoint_permissions_agree_with_the_table(app):
    """Cross-check cellstudy.auth.policy.ENDPOINT_PERMISSIONS (filled by @require) with
    ENDPOINTS: the decorator admits exactly the roles that may use some method of the
    endpoint, and every endpoint that needs a log-in goes through @require."""
    from cellstudy.auth.policy import ENDPOINT_PERMISSIONS

    def roles_with(requirement):
        if requirement in (None, LOGGED_IN):
            return set(ROLE_CAPS)
        return {role for role, caps in ROLE_CAPS.items() if requirement in caps}

    by_name: dict[str, list[str]] = {}
    for endpoint, view in app.view_functions.items():
        by_name.setdefault(view.__name__, []).append(endpoint)
    problems = []
    for name, permission in ENDPOINT_PERMISSIONS.items():
        endpoints = by_name.get(name, [])
        if len(endpoints) != 1:
            problems.append(f"ENDPOINT_PERMISSIONS[{name!r}] (keyed by function name) matches endpoints {endpoints}")
            continue
        endpoint = endpoints[0]
        route = ENDPOINTS.get(endpoint)
        if route is None:
            problems.append(f"{endpoint}: uses @require({permission!r}) but has no expectation")
            continue
        if PUBLIC in route.methods.values():
            problems.append(f"{endpoint}: public in the table but @require({permission!r}) in the app")
            continue
        admitted = set().union(*(roles_with(r) for r in route.methods.values()))
        if roles_with(permission) != admitted:
            problems.append(f"{endpoint}: @require({permission!r}) admits {sorted(roles_with(permission))}, "
                            f"the table expects {sorted(admitted)}")
    decorated = {e for name, es in by_name.items() if name in ENDPOINT_PERMISSIONS for e in es}
    for endpoint, route in ENDPOINTS.items():
        if PUBLIC not in route.methods.values() and endpoint not in decorated:
            problems.append(f"{endpoint}: needs a log-in but does not use @require")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("username", [u for u, (role, _) in USERS.items() if VIEW in ROLE_CAPS[role]])
def test_subject_list_shows_only_assigned_sites(app, login, username):
    with app.app_context():
        numbers = {code: [s.screening_number for s in db.session.scalars(
            select(Subject).join(Site).where(Site.code == code))] for code in ALL_SITES}
        db.session.remove()
    body = login(username).get("/subjects/").get_data(as_text=True)
    for code in ALL_SITES:
        for number in numbers[code]:
            assert (number in body) == (code in user_sites(username)), (username, number)


@pytest.mark.parametrize("username", ["coord-hz", "inv-nb"])
def test_cannot_register_a_subject_at_another_site(app, login, username):
    home, away = home_and_away(username)
    with app.app_context():
        site_ids = {s.code: s.id for s in db.session.scalars(select(Site))}
        db.session.remove()

    def count(code):
        with app.app_context():
            n = len(db.session.scalars(select(Subject).where(Subject.site_id == site_ids[code])).all())
            db.session.remove()
            return n

    before = count(away)
    session = login(username)
    response = session.post("/subjects/new", data={"site": str(site_ids[away])})
    assert response.status_code in (302, 400, 403, 404)
    assert count(away) == before
    # ... while the same request for the own site does register one.
    before_home = count(home)
    assert session.post("/subjects/new", data={"site": str(site_ids[home])}).status_code == 302
    assert count(home) == before_home + 1
