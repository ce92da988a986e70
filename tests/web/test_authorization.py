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
  nested record of another subject   -> 404 (and a nested id that does not exist)
  otherwise                          -> 200 (GET), 200 or 302 (POST, an empty form)

Site-scoped routes name a subject; the enrolment routes are tried on a subject in
screening, the treatment routes (infusions blueprint) on the treated demo subject of the
site (HZ-001 on treatment, NB-001 enrolled with infusion 1 scheduled). The lists across
subjects (/subjects/, /calendar, /overdue, /deviations, /escalation) have no subject in
the URL: their content is checked for site isolation separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from cellstudy.adverse_events.models import CrsAssessment, IcansAssessment
from cellstudy.auth.models import Site, User
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db

# --- the expectations, by hand from PROTOCOL 2 ------------------------------------------

PUBLIC = "public"  # no log-in needed
LOGGED_IN = "logged_in"  # any authenticated user, no capability

VIEW, AUDIT, ENTER, SIGN, USERS_ADMIN = "view_clinical", "view_audit", "enter_data", "sign_eligibility", "manage_users"
EXPORT = "export_safety"  # safety listings as files: investigators, monitors, data managers (issue 4)
AUDIT_EXPORT = "export_audit"  # the audit trail as CSV (issue 6): investigators, monitors, data managers
DASHBOARDS = "view_dashboards"  # the monitor dashboard (issue 6): monitors and data managers
EVERY_SITE = "all_sites"  # the data-manager dashboard across every site (issue 6): data managers only
CASEBOOKS = "export_casebooks"  # a whole site's PDF casebooks as a background job (issue 5): inv., monitors, DMs
NOT_FOUND = "not_found"  # any logged-in user gets 404 (a background job: only its submitter sees it)

ROLE_CAPS: dict[str, frozenset[str]] = {
    "coordinator": frozenset({VIEW, AUDIT, ENTER}),
    "investigator": frozenset({VIEW, AUDIT, ENTER, SIGN, EXPORT, AUDIT_EXPORT, CASEBOOKS}),
    "monitor": frozenset({VIEW, AUDIT, EXPORT, AUDIT_EXPORT, DASHBOARDS, CASEBOOKS}),
    "data_manager": frozenset({VIEW, AUDIT, EXPORT, AUDIT_EXPORT, DASHBOARDS, EVERY_SITE, CASEBOOKS}),
    "admin": frozenset({USERS_ADMIN}),
}

# Queries, SDV, signatures and locks (issue 6), by hand from PROTOCOL 2: monitors and data
# managers raise/close queries, site staff answer them, only monitors verify (SDV), only
# investigators sign forms and casebooks, only data managers lock and unlock.
RAISE_QUERY, ANSWER_QUERY, VERIFY, SIGN_FORMS, LOCK = "raise_query", "answer_query", "verify", "sign_forms", "lock"
_MONITORING_CAPS = {
    "coordinator": {ANSWER_QUERY},
    "investigator": {ANSWER_QUERY, SIGN_FORMS},
    "monitor": {RAISE_QUERY, VERIFY},
    "data_manager": {RAISE_QUERY, LOCK},
}
ROLE_CAPS = {role: caps | _MONITORING_CAPS.get(role, frozenset()) for role, caps in ROLE_CAPS.items()}

# Study amendments (issue 11), by hand from PROTOCOL 2 ("admin: study definition") and the issue:
# the admin proposes and withdraws, an investigator approves (e-signature) or rejects, every
# role reads the amendments (the definition every page works under).
PROPOSE, APPROVE, READ_AMENDMENTS = "propose_amendment", "approve_amendment", "view_amendments"
ROLE_CAPS = {
    role: caps
    | {READ_AMENDMENTS}
    | ({PROPOSE} if role == "admin" else set())
    | ({APPROVE} if role == "investigator" else set())
    for role, caps in ROLE_CAPS.items()
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


SCREENING, TREATED = "screening", "treated"


@dataclass(frozen=True)
class Route:
    methods: dict[str, str]  # method -> PUBLIC | LOGGED_IN | capability
    site_scoped: bool = False  # the URL names a subject-owned record
    subject: str = SCREENING  # which demo subject the URL names: SCREENING | TREATED


ENDPOINTS: dict[str, Route] = {
    "static": Route({"GET": PUBLIC}),
    "auth.login": Route({"GET": PUBLIC, "POST": PUBLIC}),
    # Anyone may post to logout; it always ends on the login page.
    "auth.logout": Route({"POST": PUBLIC}),
    "auth.users": Route({"GET": USERS_ADMIN, "POST": USERS_ADMIN}),
    "auth.change_password": Route({"GET": LOGGED_IN, "POST": LOGGED_IN}),
    "auth.reset_password": Route({"GET": USERS_ADMIN, "POST": USERS_ADMIN}),
    "amendments.study_settings": Route({"GET": PROPOSE, "POST": PROPOSE}),
    # the amendments and their before/after; the actions name the amendment in the POSTed form
    "amendments.index": Route({"GET": READ_AMENDMENTS}),
    "amendments.approve": Route({"POST": APPROVE}),
    "amendments.reject": Route({"POST": APPROVE}),
    "amendments.withdraw": Route({"POST": PROPOSE}),
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
    "audit_viewer.subject_audit": Route({"GET": AUDIT}, site_scoped=True),
    "enrollment.medications": Route({"GET": VIEW}, site_scoped=True),
    # Eligibility after enrolment (issue 11): the worklist is read by every clinical role (its
    # content filtered by site); re-confirming or recording the deviation is the investigator's.
    "enrollment.eligibility_reviews": Route({"GET": VIEW}),
    "enrollment.eligibility_review": Route({"GET": SIGN}, site_scoped=True, subject=TREATED),
    "enrollment.eligibility_reconfirm": Route({"POST": SIGN}, site_scoped=True, subject=TREATED),
    "enrollment.eligibility_deviation": Route({"POST": SIGN}, site_scoped=True, subject=TREATED),
    # Treatment and follow-up (PROTOCOL 5): viewing needs view_clinical, writing enter_data.
    "infusions.infusions": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "infusions.infusion": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "infusions.reschedule": Route({"POST": ENTER}, site_scoped=True, subject=TREATED),
    "infusions.cancel": Route({"POST": ENTER}, site_scoped=True, subject=TREATED),
    "infusions.lymphodepletion": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "infusions.visit": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "infusions.visit_missed": Route({"POST": ENTER}, site_scoped=True, subject=TREATED),
    # Completing (signing) the DLT assessment additionally needs the investigator: checked
    # inside the form, not by the route (an empty POST does not complete it).
    "infusions.dlt": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "infusions.vaccinations": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    # Lists across subjects: not site-scoped URLs, the content is filtered by the user's sites
    # (test_lists_show_only_assigned_sites).
    "infusions.calendar": Route({"GET": VIEW}),
    "infusions.overdue": Route({"GET": VIEW}),
    "infusions.deviations": Route({"GET": VIEW}),
    # The dose-escalation review is an investigator's e-signature.
    "infusions.escalation": Route({"GET": VIEW, "POST": SIGN}),
    # Adverse events (issue 4): site staff record; the SAE/SUSAR report is the investigator's
    # e-signature; monitors and data managers read.
    "adverse_events.subject_aes": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "adverse_events.ae_new": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.ae": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.change_grade": Route({"POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.remove": Route({"POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.report": Route({"POST": SIGN}, site_scoped=True, subject=TREATED),
    "adverse_events.dismiss": Route({"POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.crs_new": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.crs": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.icans_new": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    "adverse_events.icans": Route({"GET": VIEW, "POST": ENTER}, site_scoped=True, subject=TREATED),
    # The CTCAE term picker's JSON and the SAE worklist (content filtered by site).
    "adverse_events.ctcae_search": Route({"GET": VIEW}),
    "adverse_events.ctcae_term": Route({"GET": VIEW}),
    "adverse_events.saes": Route({"GET": VIEW}),
    # Safety listings and summaries: on screen for every clinical role (rows of the user's
    # sites); as files (CSV, XLSX, PDF, SDTM) for investigators, monitors and data managers.
    "safety.ae": Route({"GET": VIEW}),
    "safety.sae": Route({"GET": VIEW}),
    "safety.dlt": Route({"GET": VIEW}),
    "safety.summary": Route({"GET": VIEW}),
    "safety.crs_icans": Route({"GET": VIEW}),
    "safety.export": Route({"GET": EXPORT}),
    "safety.sdtm_ae": Route({"GET": EXPORT}),
    "safety.sdtm": Route({"GET": EXPORT}),
    "safety.sdtm_define": Route({"GET": EXPORT}),
    # The audit trail viewer (issue 6): every clinical role reads the trail of its sites (the
    # content is site-filtered; /subjects/<id>/audit is audit_viewer.subject_audit above); files and
    # the study-wide background export for investigators, monitors and data managers.
    "audit_viewer.trail": Route({"GET": AUDIT}),
    "audit_viewer.export_csv": Route({"GET": AUDIT_EXPORT}),
    "audit_viewer.study_export": Route({"POST": AUDIT_EXPORT}),
    # CDISC ODM 1.3.2 (issue 15): the audit export's roles (the file carries the audit trail)
    "odm.study_export": Route({"POST": AUDIT_EXPORT}),
    "odm.subject_export": Route({"GET": AUDIT_EXPORT}, site_scoped=True),
    # Dashboards (issue 6): the monitor's (own sites) and the data manager's (every site).
    "dashboards.monitor": Route({"GET": DASHBOARDS}),
    "dashboards.data_manager": Route({"GET": EVERY_SITE}),
    # Queries, SDV, signatures and locks (issue 6). The actions name their target in the
    # POSTed form, checked against the subject of the URL (an empty POST is refused with a
    # message); the lists are filtered by the user's sites.
    "monitoring.subject": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "monitoring.raise_query": Route({"POST": RAISE_QUERY}, site_scoped=True, subject=TREATED),
    "monitoring.answer_query": Route({"POST": ANSWER_QUERY}, site_scoped=True, subject=TREATED),
    "monitoring.resolve_query": Route({"POST": RAISE_QUERY}, site_scoped=True, subject=TREATED),
    "monitoring.verify_forms": Route({"POST": VERIFY}, site_scoped=True, subject=TREATED),
    "monitoring.sign_forms": Route({"POST": SIGN_FORMS}, site_scoped=True, subject=TREATED),
    "monitoring.lock_data": Route({"POST": LOCK}, site_scoped=True, subject=TREATED),
    "monitoring.query_list": Route({"GET": VIEW}),
    "monitoring.sdv_progress": Route({"GET": VIEW}),
    "monitoring.signature_list": Route({"GET": VIEW}),
    "monitoring.lock_list": Route({"GET": LOCK}),
    "monitoring.lock_study": Route({"POST": LOCK}),
    "monitoring.unlock_data": Route({"POST": LOCK}),
    # PDFs (issue 5): blank CRFs for every clinical role; a filled CRF is read like its form
    # (view_clinical, the subject's site, a record of another subject is a 404); the casebook
    # carries the audit trail (view_audit); a site's casebooks are a background job.
    "pdf.blank_crfs": Route({"GET": VIEW}),
    "pdf.blank_crf": Route({"GET": VIEW}),
    "pdf.screening": Route({"GET": VIEW}, site_scoped=True),
    "pdf.lymphodepletion": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "pdf.infusion": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "pdf.visit": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "pdf.ae": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "pdf.crs": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "pdf.icans": Route({"GET": VIEW}, site_scoped=True, subject=TREATED),
    "pdf.filled_log": Route({"GET": VIEW}, site_scoped=True),
    "pdf.casebook": Route({"GET": AUDIT}, site_scoped=True),
    "pdf.site_casebooks": Route({"GET": CASEBOOKS, "POST": CASEBOOKS}),
    # Background jobs (issue 5): the list is the user's own; a job's pages are its submitter's
    # only, and no demo user submitted job FIXED_ARGS["job_id"] (tests/jobs checks the owner).
    "jobs.index": Route({"GET": LOGGED_IN}),
    "jobs.show": Route({"GET": NOT_FOUND}),
    "jobs.status": Route({"GET": NOT_FOUND}),
    "jobs.download": Route({"GET": NOT_FOUND}),
}

#: URL arguments that are neither a subject nor a nested record: a fixed test value
FIXED_ARGS = {
    "domain": "dm",
    "kind": "sae",
    "listing": "sae",
    "fmt": "csv",
    "form": "infusion",
    "log": "vaccination",
    "job_id": 10**7,
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

#: Allowed requests whose answer depends on the subject's state:
#: endpoint -> (Rec attribute, Location when the attribute is false; {id} is the subject id).
#: The DLT assessment opens once the first infusion is given (NB-001 has none given yet).
STATE_REDIRECTS: dict[str, tuple[str, str]] = {
    "infusions.dlt": ("dlt_open", "/subjects/{id}"),
}

IGNORED_METHODS = {"HEAD", "OPTIONS"}
NESTED_ARGS = {"screening_id", "exposure_id", "infusion_id", "day_id", "visit_id", "ae_id", "crs_id", "icans_id"}
NESTED_VARIANTS = ("missing", "nested_missing", "nested_same_site", "nested_other_site")
MISSING_ID = 10**7


# --- demo data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """A demo subject and one record of each nested kind belonging to it (None: it has none)."""

    id: int
    number: str  # the label the pages show (the subject number once enrolled)
    names: tuple[str, ...]  # every number of the subject: none may show where it is hidden
    site: str
    screening_id: int
    exposure_id: int
    infusion_id: int | None = None
    day_id: int | None = None
    visit_id: int | None = None
    ae_id: int | None = None
    crs_id: int | None = None
    icans_id: int | None = None
    dlt_open: bool = False  # an infusion is given: the DLT assessment is open


@dataclass(frozen=True)
class SiteRecs:
    screening: Rec  # in screening, screening form complete (the enrolment page has something to show)
    second: Rec  # another subject of the site with a screening form and an exposure
    treated: Rec  # enrolled, with infusions, lymphodepletion days and visits

    def subjects_for(self, route: Route) -> tuple[Rec, Rec, Rec]:
        """(own, host, donor) for a route: `own` is the subject the URL names; for the
        nested_same_site variant the URL names `host` with a record of `donor`, another
        subject of the same site. Only the treated subject of a site has treatment
        records, so for those routes the URL names the site's screening subject with a
        record of the treated one."""
        if route.subject == TREATED:
            return self.treated, self.screening, self.treated
        return self.screening, self.screening, self.second


def _rec(subject, code) -> Rec:
    infusions = [i for i in subject.infusions if i.state != "cancelled"]
    scheduled = [i for i in infusions if i.state == "scheduled"]
    planned = [v for v in subject.visits if v.state == "planned"]
    return Rec(
        subject.id,
        subject.label,
        tuple(n for n in (subject.screening_number, subject.subject_number) if n),
        code,
        subject.current_screening.id,
        subject.active_exposures[0].id,
        # a scheduled infusion and a planned visit: rescheduling, cancelling and
        # "missed" are possible for them (valid-ish targets for the POSTs)
        (scheduled or infusions)[0].id if infusions else None,
        subject.lymphodepletion_days[0].id if subject.lymphodepletion_days else None,
        (planned or subject.visits)[0].id if subject.visits else None,
        subject.adverse_events[0].id if subject.adverse_events else None,
        _first_id(CrsAssessment, subject),
        _first_id(IcansAssessment, subject),
        any(i.state == "given" for i in infusions),
    )


def _first_id(model, subject) -> int | None:
    return db.session.scalar(select(model.id).where(model.subject_id == subject.id).order_by(model.id).limit(1))


def demo_records(app) -> dict[str, SiteRecs]:
    """site code -> the site's demo subjects used by the matrix."""
    with app.app_context():
        codes = {site.code: site.id for site in db.session.scalars(select(Site))}
        assert set(codes) == set(ALL_SITES), f"demo sites changed: {sorted(codes)}"
        out = {}
        for code, site_id in codes.items():
            subjects = db.session.scalars(select(Subject).where(Subject.site_id == site_id).order_by(Subject.id)).all()
            usable = [s for s in subjects if s.current_screening is not None and s.active_exposures]
            primary = next(s for s in usable if s.status == "screening" and s.current_screening.status == "complete")
            second = next(s for s in usable if s.id != primary.id)
            treated = next(s for s in usable if s.infusions and s.lymphodepletion_days and s.visits)
            out[code] = SiteRecs(_rec(primary, code), _rec(second, code), _rec(treated, code))
        # What the demo promises (cellstudy/demo.py): HZ-001 on treatment with infusion 1
        # given, NB-001 enrolled with infusion 1 scheduled.
        assert out["HZ"].treated.number == "HZ-001" and out["HZ"].treated.dlt_open
        assert out["NB"].treated.number == "NB-001" and not out["NB"].treated.dlt_open
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


def expectation(username, endpoint, method, variant, site, subject: Rec | None = None):
    required = ENDPOINTS[endpoint].methods[method]
    if required == NOT_FOUND:
        return "login" if username is None else 404
    if required != PUBLIC:
        if username is None:
            return "login"
        if required != LOGGED_IN and required not in ROLE_CAPS[USERS[username][0]]:
            return 403
        if ENDPOINTS[endpoint].site_scoped:
            if variant in NESTED_VARIANTS:
                return 404
            if site not in user_sites(username):
                return 404
    for who in (username, "user" if username else None, "*"):
        if (endpoint, method, who) in REDIRECTS:
            return ("redirect", REDIRECTS[endpoint, method, who])
    if endpoint in STATE_REDIRECTS and subject is not None:
        attribute, location = STATE_REDIRECTS[endpoint]
        if not getattr(subject, attribute):
            return ("redirect", location.format(id=subject.id))
    return "allowed"


def _build(app, rule, values) -> str:
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def cases_for(app, username, recs) -> list[Case]:
    """Every rule x method (HEAD/OPTIONS aside) x record variant for one user."""
    home, away = home_and_away(username)
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
        fixed = {k: FIXED_ARGS[k] for k in args & set(FIXED_ARGS)}
        if args - {"subject_id", "filename"} - NESTED_ARGS - set(FIXED_ARGS):
            unknown.append(f"{rule.rule}: no test value for {sorted(args - {'subject_id', 'filename'} - NESTED_ARGS)}")
            continue

        own, host, donor = recs[home].subjects_for(route)
        other = recs[away].subjects_for(route)[0]

        def nested(rec, missing=False, args=args, fixed=fixed, rule=rule):
            values = {k: MISSING_ID if missing else getattr(rec, k) for k in args & NESTED_ARGS}
            values.update(fixed)
            assert None not in values.values(), f"{rule.rule}: demo subject {rec.number} has no {sorted(values)}"
            return values

        variants = []
        if "filename" in args:
            variants.append(("-", {"filename": "cellstudy.css"}, None, None, None))
        elif "subject_id" in args:
            variants += [
                ("own", {"subject_id": own.id, **nested(own)}, home, own, other),
                ("other_site", {"subject_id": other.id, **nested(other)}, away, other, other),
                ("missing", {"subject_id": MISSING_ID, **nested(own)}, None, None, own),
            ]
            if args & NESTED_ARGS:
                assert host.id != donor.id and host.site == donor.site == home
                variants += [
                    ("nested_missing", {"subject_id": own.id, **nested(own, missing=True)}, home, None, other),
                    ("nested_same_site", {"subject_id": host.id, **nested(donor)}, home, None, donor),
                    ("nested_other_site", {"subject_id": own.id, **nested(other)}, home, None, other),
                ]
        else:
            variants.append(("-", dict(fixed), None, None, None))
        for method in methods:
            for variant, values, site, subject, hidden in variants:
                cases.append(
                    Case(
                        rule.endpoint,
                        method,
                        _build(app, rule, values),
                        variant,
                        expectation(username, rule.endpoint, method, variant, site, subject),
                        subject,
                        hidden,
                    )
                )
    assert not unknown, "routes without a written authorisation expectation:\n" + "\n".join(unknown)
    return cases


def _order(case: Case):
    # Reads first, then writes; logging out last (it ends the session).
    return (case.endpoint == "auth.logout", case.method != "GET", case.url, case.method)


def _problem(case: Case, response) -> str | None:
    status, location = response.status_code, response.headers.get("Location", "")
    path = urlsplit(location).path
    body = _pdf_text(response.get_data()) if response.mimetype == "application/pdf" else response.get_data(as_text=True)
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
    if exp != "allowed" and case.hidden:
        shown = [n for n in case.hidden.names if n in body]
        if shown:
            return f"status {status} but the body shows {', '.join(shown)}"
    return None


def _pdf_text(data: bytes) -> str:
    """A PDF's first page and metadata as text (issue 5: the subject number is in them)."""
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return (reader.pages[0].extract_text() or "") + " " + " ".join(str(v) for v in (reader.metadata or {}).values())


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
            failures.append(
                f"{username or 'anonymous'} {case.method} {case.url} [{case.endpoint}, {case.variant}]: {problem}"
            )
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
            outcomes.setdefault(case.expected if not isinstance(case.expected, tuple) else "redirect", set()).add(
                case.endpoint
            )
    assert set(outcomes) == {"login", 403, 404, "allowed", "redirect"}
    scoped = {e for e, r in ENDPOINTS.items() if r.site_scoped}
    assert outcomes["allowed"] >= scoped and outcomes[404] >= scoped
    # Every nested record kind is tried in every variant.
    variants = {}
    for rule in app.url_map.iter_rules():
        for arg in set(rule.arguments) & NESTED_ARGS:
            variants.setdefault(arg, set()).update(
                c.variant for c in cases_for(app, "coord-hz", recs) if c.endpoint == rule.endpoint
            )
    expected = {"own", "other_site", "missing", "nested_missing", "nested_same_site", "nested_other_site"}
    assert variants == {arg: expected for arg in NESTED_ARGS}


def test_endpoint_permissions_agree_with_the_table(app):
    """Cross-check cellstudy.auth.policy.ENDPOINT_PERMISSIONS (filled by @require) with
    ENDPOINTS: the decorator admits exactly the roles that may use some method of the
    endpoint, and every endpoint that needs a log-in goes through @require."""
    from cellstudy.auth.policy import ENDPOINT_PERMISSIONS

    def roles_with(requirement):
        if requirement in (None, LOGGED_IN, NOT_FOUND):  # NOT_FOUND: @require(None), then 404 inside
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
            problems.append(
                f"{endpoint}: @require({permission!r}) admits {sorted(roles_with(permission))}, "
                f"the table expects {sorted(admitted)}"
            )
    decorated = {e for name, es in by_name.items() if name in ENDPOINT_PERMISSIONS for e in es}
    for endpoint, route in ENDPOINTS.items():
        if PUBLIC not in route.methods.values() and endpoint not in decorated:
            problems.append(f"{endpoint}: needs a log-in but does not use @require")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("username", [u for u, (role, _) in USERS.items() if VIEW in ROLE_CAPS[role]])
def test_subject_list_shows_only_assigned_sites(app, login, username):
    with app.app_context():
        numbers = {
            code: [s.screening_number for s in db.session.scalars(select(Subject).join(Site).where(Site.code == code))]
            for code in ALL_SITES
        }
        db.session.remove()
    body = login(username).get("/subjects/").get_data(as_text=True)
    for code in ALL_SITES:
        for number in numbers[code]:
            assert (number in body) == (code in user_sites(username)), (username, number)


def _site_subject_names(app) -> dict[str, set[str]]:
    """site code -> every screening and subject number of the site's subjects."""
    with app.app_context():
        names = {code: set() for code in ALL_SITES}
        for subject, code in db.session.execute(select(Subject, Site.code).join(Site)):
            names[code].update(n for n in (subject.screening_number, subject.subject_number) if n)
        db.session.remove()
    return names


def _record_deviations(app, recs) -> None:
    """A protocol deviation at each site, through the service (a vaccine given inside the
    no-vaccination window, signed by the site's investigator), so /deviations has content
    of both sites."""
    from datetime import timedelta

    from cellstudy.demo import DEMO_PASSWORD
    from cellstudy.enrollment import service as enrollment_service
    from cellstudy.infusions import vaccination
    from cellstudy.timeutil import site_today

    with app.app_context():
        for code in sorted(ALL_SITES):
            subject = db.session.get(Subject, recs[code].treated.id)
            investigator = db.session.scalar(select(User).where(User.username == f"inv-{code.lower()}"))
            given = site_today(subject.site) - timedelta(days=1)
            window = vaccination.vaccination_window(subject)
            assert window and window[0] <= given <= window[1], (code, window)
            enrollment_service.record_vaccine(
                subject,
                {"name": "Influenza vaccine", "last_date": given, "start_date": given, "indication": "seasonal"},
                user=investigator,
                deviation_reason="Given by the family doctor",
                password=DEMO_PASSWORD,
            )
            assert subject.deviations, code
        db.session.remove()


#: Lists across subjects -> the demo subjects that must be listed for their own sites
#: ("treated": the site's treated subject); the overdue list is empty in the demo.
LISTS = {"/calendar": {"treated"}, "/overdue": set(), "/deviations": {"treated"}, "/escalation": {"treated"}}


@pytest.mark.parametrize("username", [u for u, (role, _) in USERS.items() if VIEW in ROLE_CAPS[role]])
def test_lists_show_only_assigned_sites(app, login, username):
    """PROTOCOL 2: the calendar, overdue, deviation and dose-escalation lists name only
    subjects of the user's sites (the escalation counts are study-wide, the names are not)."""
    recs = demo_records(app)
    _record_deviations(app, recs)
    names = _site_subject_names(app)
    session = login(username)
    problems = []
    for url, listed in LISTS.items():
        response = session.get(url)
        if response.status_code != 200:
            problems.append(f"{url}: {response.status_code}")
            continue
        body = response.get_data(as_text=True)
        for code in sorted(ALL_SITES):
            if code in user_sites(username):
                for kind in sorted(listed):
                    rec = getattr(recs[code], kind)
                    if rec.number not in body:
                        problems.append(f"{url}: own-site subject {rec.number} is not listed")
            else:
                leaked = sorted(n for n in names[code] if n in body)
                if leaked:
                    problems.append(f"{url}: shows subjects of site {code}: {', '.join(leaked)}")
    assert not problems, f"{username}:\n" + "\n".join(problems)


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
