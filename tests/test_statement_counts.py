"""The guard of issue 14: a page's SQL statements do not grow with the study.

Every page is requested on the demo study and on a larger one built from it through the
real services, on the same site and dates: five more treated subjects at HZ (enrolled at
HZ-001's dose level, lymphodepletion, infusions, visits, AEs, CRS/ICANS assessments, SDV
and queries as the demo makes them) and ten more at screening, and four more rounds of
the demo's adverse events for HZ-001 itself (five times its AEs, assessments and audit
records). Each page must send the same number of statements on both: an N+1 (a query per
row, per form, per audit record) shows as a difference, deterministically, with no timing.

The count is the smaller of two requests after a warm-up: a log-in session's "last seen"
is written at most once a minute (auth/sessions.py), so at most one of two requests in a
row can carry that write."""

from __future__ import annotations

from datetime import datetime, timedelta, time as dtime, timezone

import pytest
from sqlalchemy import event, select

from cellstudy import demo
from cellstudy.adverse_events.models import CrsAssessment, IcansAssessment
from cellstudy.audit_viewer import service as audit_viewer
from cellstudy.auth.models import Site, User
from cellstudy.enrollment import service as enrollment
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.monitoring import catalog
from cellstudy.monitoring import service as monitoring
from cellstudy.records.transaction import transaction
from cellstudy.timeutil import utcnow
from tests.conftest import DEMO_PASSWORD, _make_app

pytestmark = pytest.mark.db

# (user, path): the pages of issues 2-6 and 11 where staff work, with their ids from HZ-001
PAGES = [
    ("coord-hz", "/"),
    ("inv-hz", "/"),
    ("coord-hz", "/subjects/"),
    ("coord-hz", "/subjects/{s}"),
    ("coord-hz", "/subjects/{s}/screening"),
    ("coord-hz", "/subjects/{s}/medications"),
    ("coord-hz", "/subjects/{s}/exposures/{exposure}"),
    ("coord-hz", "/subjects/{s}/vaccinations"),
    ("coord-hz", "/subjects/{s}/infusions"),
    ("coord-hz", "/subjects/{s}/infusions/{given}"),
    ("coord-hz", "/subjects/{s}/infusions/{planned}"),
    ("coord-hz", "/subjects/{s}/lymphodepletion/{ld}"),
    ("coord-hz", "/subjects/{s}/visits/{visit}"),
    ("coord-hz", "/subjects/{s}/dlt"),
    ("coord-hz", "/subjects/{s}/adverse-events"),
    ("coord-hz", "/subjects/{s}/adverse-events/{ae}"),
    ("coord-hz", "/subjects/{s}/adverse-events/new"),
    ("coord-hz", "/subjects/{s}/crs/{crs}"),
    ("coord-hz", "/subjects/{s}/icans/{icans}"),
    ("coord-hz", "/calendar"),
    ("coord-hz", "/overdue"),
    ("coord-hz", "/deviations"),
    ("coord-hz", "/escalation"),
    ("coord-hz", "/saes"),
    ("inv-hz", "/subjects/eligibility-reviews"),
    ("monitor-hz", "/queries"),
    ("monitor-hz", "/sdv"),
    ("monitor-hz", "/signatures"),
    ("monitor-hz", "/subjects/{s}/monitoring"),
    ("monitor-hz", "/dashboards/monitor"),
    ("dm", "/dashboards/data-manager"),
    ("dm", "/locks"),
    ("monitor-hz", "/audit"),
    ("monitor-hz", "/subjects/{s}/audit"),
    ("monitor-hz", "/safety/ae"),
    ("monitor-hz", "/safety/sae"),
    ("monitor-hz", "/safety/dlt"),
    ("monitor-hz", "/safety/summary"),
    ("monitor-hz", "/safety/crs-icans"),
]

# The SDV list loads the rows it lists with one statement per form type among them
# (monitoring.state.records_of): bounded by the study's form types, not by the rows.
PER_FORM_TYPE = {"/sdv"}


def _grow() -> None:
    """The larger study: see the module docstring."""
    today = utcnow().astimezone().date()  # the demo's own date (demo.load_demo)
    hz = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
    users = {u.username: u for u in db.session.execute(select(User)).scalars()}
    coord, inv, monitor = users["coord-hz"], users["inv-hz"], users["monitor-hz"]
    hz1 = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
    for _ in range(5):
        subject = demo.make_subject(hz, coord, "complete", today - timedelta(days=20))
        decision = enrollment.enrol(
            subject,
            user=inv,
            password=DEMO_PASSWORD,
            screening_version=subject.current_screening.version,
            dose_level=hz1.dose_level,
            dose_level_reason="Statement-count fixture: more subjects at the same level.",
        )
        stamp = datetime.combine(today - timedelta(days=22), dtime(2, 0), tzinfo=timezone.utc)
        with transaction():
            subject.enrolled_at = decision.decided_at = decision.signature.signed_at = stamp
        demo._treat(subject, coord, today)
        demo._adverse_events(subject, coord, today)
        monitoring.open_query(
            subject, user=monitor, form="adverse_event", form_id=subject.adverse_events[0].id, field="grade", text="?"
        )
        monitoring.verify(subject.infusions[0], user=monitor)
        demo.make_subject(hz, coord, "complete", today)
        demo.make_subject(hz, coord, "draft", today)
    for _ in range(4):
        demo._adverse_events(hz1, coord, today)


def _ids() -> dict:
    s = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()

    def first(model):
        return db.session.scalar(select(model.id).where(model.subject_id == s.id).order_by(model.id))

    planned = next(i for i in s.infusions if i.state == "scheduled")
    given = next(i for i in s.infusions if i.state != "scheduled")
    return {
        "s": s.id,
        "exposure": s.exposures[0].id,
        "given": given.id,
        "planned": planned.id,
        "ld": s.lymphodepletion_days[0].id,
        "visit": s.visits[0].id,
        "ae": s.adverse_events[0].id,
        "crs": first(CrsAssessment),
        "icans": first(IcansAssessment),
    }


def _listen(engine) -> list[int]:
    sent = [0]
    event.listen(engine, "before_cursor_execute", lambda *_a: sent.__setitem__(0, sent[0] + 1))
    return sent


@pytest.fixture(scope="module")
def studies(databases):
    """{"demo": counts, "larger": counts}: statements per page of each study."""
    out, urls = {}, []
    for name in ("demo", "larger"):
        url = databases.new()
        urls.append(url)
        app = _make_app(url)
        with app.app_context():
            if name == "larger":
                _grow()
            ids = _ids()
            db.session.remove()
            sent = _listen(db.engine)
        clients, counts = {}, {}
        for user, path in PAGES:
            if user not in clients:
                clients[user] = app.test_client()
                response = clients[user].post("/login", data={"username": user, "password": DEMO_PASSWORD})
                assert response.status_code == 302, f"log-in as {user}"
            page = path.format(**ids)
            response = clients[user].get(page)
            assert response.status_code == 200, f"{name}: {user} GET {page}: HTTP {response.status_code}"
            seen = []
            for _ in range(2):
                sent[0] = 0
                assert clients[user].get(page).status_code == 200
                seen.append(sent[0])
            counts[(user, path)] = min(seen)
        out[name] = counts
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    yield out
    for url in urls:
        databases.drop(url)


def test_the_larger_study_has_at_least_five_times_the_rows_the_pages_show(databases):
    url = databases.new()
    try:
        app = _make_app(url)
        with app.app_context():
            before = _counts()
            _grow()
            after = _counts()
            db.session.remove()
            db.engine.dispose()
    finally:
        databases.drop(url)
    assert after["hz_subjects"] >= 3 * before["hz_subjects"]
    assert after["treated"] >= 5 * before["treated"]
    assert after["hz001_aes"] >= 5 * before["hz001_aes"]
    # the audit viewer shows a page of PAGE_SIZE records: the subject's trail is many pages
    assert after["audit"] >= 5 * audit_viewer.PAGE_SIZE and after["audit"] > 2 * before["audit"]


def _counts() -> dict:
    from sqlalchemy import func

    from cellstudy.adverse_events.models import AdverseEvent
    from cellstudy.infusions.models import Infusion
    from cellstudy.records.models import AuditRecord

    hz = db.session.scalar(select(Site.id).where(Site.code == "HZ"))
    hz1 = db.session.scalar(select(Subject.id).where(Subject.subject_number == "HZ-001"))
    return {
        "hz_subjects": db.session.scalar(select(func.count(Subject.id)).where(Subject.site_id == hz)),
        "treated": db.session.scalar(
            select(func.count(func.distinct(Infusion.subject_id))).where(Infusion.state != "scheduled")
        ),
        "hz001_aes": db.session.scalar(select(func.count(AdverseEvent.id)).where(AdverseEvent.subject_id == hz1)),
        "audit": db.session.scalar(select(func.count(AuditRecord.id)).where(AuditRecord.subject_id == hz1)),
    }


@pytest.mark.parametrize("user,path", PAGES, ids=[f"{u} {p}" for u, p in PAGES])
def test_a_page_sends_as_many_statements_on_the_larger_study_as_on_the_demo(studies, user, path):
    small, large = studies["demo"][(user, path)], studies["larger"][(user, path)]
    slack = len(catalog.form_types()) if path in PER_FORM_TYPE else 0
    assert large <= small + slack, f"{path} as {user}: {small} statements on the demo, {large} on the larger study"
