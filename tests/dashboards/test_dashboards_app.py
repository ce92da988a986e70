"""The monitor's and the data manager's dashboards (issue 6) against the real app and the
demo study. Expected figures are counted here independently (plain queries over the
tables), then read off the rendered page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from cellstudy.auth.models import Site, User
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.infusions.models import Deviation, Visit
from cellstudy.records.models import Query
from cellstudy.timeutil import site_today, utcnow


def run(app, fn):
    """Database work in its own app context (pages are requested outside it)."""
    with app.app_context():
        try:
            return fn()
        finally:
            db.session.remove()


def cell(page: str, row_attr: str, index: int) -> str:
    """The text of column `index` (0 = the label) of the row <tr data-...="...">."""
    row = re.search(rf"<tr {row_attr}>(.*?)</tr>", page, re.S)
    assert row, f"no row {row_attr}"
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(1), re.S)
    return re.sub(r"<[^>]+>", "", cells[index]).strip()


def _site(code):
    return db.session.execute(select(Site).where(Site.code == code)).scalar_one()


def _user(name):
    return db.session.execute(select(User).where(User.username == name)).scalar_one()


def test_monitor_sees_subjects_by_status_of_their_site(app, login):
    def expected():
        hz = _site("HZ")
        return dict(
            db.session.execute(
                select(Subject.status, func.count()).where(Subject.site_id == hz.id).group_by(Subject.status)
            ).all()
        )

    counts = run(app, expected)
    page = login("monitor-hz").get("/dashboards/monitor").get_data(as_text=True)
    assert "site HZ" in page
    for status, n in counts.items():
        assert cell(page, f'data-status="{status}"', 1) == str(n)
    assert f'<th class="num">{sum(counts.values())}</th>' in page


def test_sites_are_scoped(app, login):
    assert login("monitor-hz").get("/dashboards/monitor?site=NB").status_code == 404
    assert login("monitor-hz").get("/dashboards/monitor?site=XX").status_code == 404
    assert login("dm").get("/dashboards/monitor?site=NB").status_code == 200
    assert login("monitor-hz").get("/dashboards/data-manager").status_code == 403
    assert login("coord-hz").get("/dashboards/monitor").status_code == 403
    assert login("inv-hz").get("/dashboards/monitor").status_code == 403
    page = login("dm").get("/dashboards/data-manager").get_data(as_text=True)
    assert 'data-site="HZ"' in page and 'data-site="NB"' in page


def test_forms_complete_incomplete_and_missing(app, login):
    def expected():
        hz = _site("HZ")
        today = site_today(hz)
        visits = dict(
            db.session.execute(
                select(Visit.status, func.count()).join(Subject).where(Subject.site_id == hz.id).group_by(Visit.status)
            ).all()
        )
        # make one planned visit overdue: its window ended yesterday
        visit = (
            db.session.execute(select(Visit).join(Subject).where(Subject.site_id == hz.id, Visit.state == "planned"))
            .scalars()
            .first()
        )
        visit.earliest = visit.target_date = visit.latest = today - timedelta(days=1)
        db.session.commit()
        missing = db.session.execute(
            select(func.count())
            .select_from(Visit)
            .join(Subject)
            .where(Subject.site_id == hz.id, Visit.state == "planned", Visit.latest < today)
        ).scalar()
        return visits, missing

    visits, missing = run(app, expected)
    assert missing >= 1
    page = login("monitor-hz").get("/dashboards/monitor?site=HZ").get_data(as_text=True)
    assert cell(page, 'data-form="visit"', 1) == str(sum(n for s, n in visits.items() if s != "deleted"))
    assert cell(page, 'data-form="visit"', 2) == str(visits.get("complete", 0))
    assert cell(page, 'data-form="visit"', 3) == str(visits.get("draft", 0))
    assert cell(page, 'data-form="visit"', 4) == str(missing)


def test_queries_by_age_buckets(app, login):
    def row(page, state):
        return [int(cell(page, f'data-state="{state}"', i)) for i in range(1, 6)]

    page = login("monitor-hz").get("/dashboards/monitor").get_data(as_text=True)
    open_before, answered_before = row(page, "open"), row(page, "answered")

    def add():
        hz = _site("HZ")
        subject = db.session.execute(select(Subject).where(Subject.site_id == hz.id)).scalars().first()
        now = utcnow()
        for days, state in ((0, "open"), (7, "open"), (8, "open"), (20, "answered"), (31, "open"), (45, "closed")):
            db.session.add(
                Query(
                    site_id=hz.id,
                    subject_id=subject.id,
                    form="screening",
                    form_id=1,
                    field="weight_kg",
                    text=f"{days} days",
                    origin="manual",
                    state=state,
                    created_at=now - timedelta(days=days, minutes=1),
                )
            )
        db.session.commit()

    run(app, add)
    page = login("monitor-hz").get("/dashboards/monitor").get_data(as_text=True)
    # open: 0 and 7 days -> "0-7", 8 days -> "8-14", 31 days -> "> 30"; answered 20 days -> "15-30";
    # the closed one is not counted
    assert [a - b for a, b in zip(row(page, "open"), open_before, strict=False)] == [2, 1, 0, 1, 4]
    assert [a - b for a, b in zip(row(page, "answered"), answered_before, strict=False)] == [0, 0, 1, 0, 1]


def test_sae_reports_due_and_overdue(app, login):
    from cellstudy.adverse_events.models import AdverseEvent as AE

    def expected():
        hz = _site("HZ")
        now = utcnow()
        q = (
            select(func.count())
            .select_from(AE)
            .where(
                AE.site_id == hz.id,
                AE.serious.is_(True),
                AE.status != "deleted",
                AE.awareness_at.is_not(None),
                AE.sae_reported_at.is_(None),
            )
        )
        return (
            db.session.execute(q.where(AE.sae_due_at >= now)).scalar(),
            db.session.execute(q.where(AE.sae_due_at < now)).scalar(),
        )

    due, overdue = run(app, expected)
    assert overdue >= 1  # the demo's febrile neutropenia SAE
    page = login("monitor-hz").get("/dashboards/monitor").get_data(as_text=True)
    row = re.search(r"SAE report \(24 h\)</td><td class=\"num\">(\d+)</td><td class=\"num[^\"]*\">(\d+)</td>", page)
    assert row and (int(row.group(1)), int(row.group(2))) == (due, overdue)
    assert 'id="sae-list"' in page and "overdue" in page


def test_deviations_counted_by_kind(app, login):
    def add():
        hz = _site("HZ")
        subject = db.session.execute(select(Subject).where(Subject.site_id == hz.id)).scalars().first()
        coord = _user("coord-hz")
        before = db.session.execute(
            select(func.count())
            .select_from(Deviation)
            .join(Subject)
            .where(Subject.site_id == hz.id, Deviation.kind == "visit_window")
        ).scalar()
        for _ in range(2):
            db.session.add(
                Deviation(
                    subject_id=subject.id,
                    kind="visit_window",
                    description="Day 7 visit on day 10",
                    reason="patient travelled",
                    created_by_id=coord.id,
                )
            )
        db.session.commit()
        return before + 2

    n = run(app, add)
    page = login("monitor-hz").get("/dashboards/monitor").get_data(as_text=True)
    assert re.search(rf"<td>Visit window</td><td class=\"num\">{n}</td>", page)
    assert "Day 7 visit on day 10" in page
    # NB's monitor-free data manager view counts them once, under HZ
    page = login("dm").get("/dashboards/data-manager").get_data(as_text=True)
    assert int(cell(page, 'data-site-figures="HZ"', 8)) >= n


def test_verified_signed_and_locked_come_from_monitoring(app, login):
    from cellstudy.monitoring import service as monitoring
    from cellstudy.monitoring.state import sdv_plan

    def act():
        hz = _site("HZ")
        monitor, dm = _user("monitor-hz"), _user("dm")
        subject = db.session.execute(
            select(Subject).where(Subject.site_id == hz.id, Subject.subject_number == "HZ-001")
        ).scalar_one()
        screening = subject.current_screening
        plan, required = sdv_plan("screening")
        if plan != "none" and screening.status == "complete":
            monitoring.verify(screening, user=monitor, fields=list(required))
        other = (
            db.session.execute(select(Subject).where(Subject.site_id == hz.id, Subject.id != subject.id))
            .scalars()
            .first()
        )
        monitoring.lock("subject", user=dm, reason="dashboard test", subject=other)
        return plan

    plan = run(app, act)
    page = login("monitor-hz").get("/dashboards/monitor").get_data(as_text=True)
    if plan != "none":
        assert int(cell(page, 'data-form="screening"', 5).split()[0]) >= 1
    assert int(cell(page, 'data-form="screening"', 6)) >= 1  # the enrolment signature of HZ-001
    page = login("dm").get("/dashboards/data-manager").get_data(as_text=True)
    assert cell(page, 'data-site="HZ"', 2) == "1"  # subjects locked
    assert "The study is not locked." in page

    def lock_study():
        monitoring.lock("study", user=_user("dm"), reason="database freeze")

    run(app, lock_study)
    page = login("dm").get("/dashboards/data-manager").get_data(as_text=True)
    assert "The study is locked" in page and "database freeze" in page
    page = login("monitor-hz").get("/dashboards/monitor").get_data(as_text=True)
    assert 'id="study-lock"' in page
    assert cell(page, 'data-form="visit"', 8) == cell(page, 'data-form="visit"', 1)  # every form locked


def test_query_count_does_not_grow_with_the_data(app):
    """Batched aggregates: the same number of statements at 12 subjects and with more forms."""
    from cellstudy.auth.policy import ALL_SITES
    from cellstudy.dashboards import service

    def statements():
        count = [0]

        def before(_conn, _cursor, statement, *_a):
            count[0] += statement.lstrip().upper().startswith("SELECT")

        event.listen(db.engine, "before_cursor_execute", before)
        try:
            service.build(ALL_SITES)
        finally:
            event.remove(db.engine, "before_cursor_execute", before)
        return count[0]

    with app.app_context():
        statements()  # warm: the study definition is read once and cached
        first = statements()
        hz = _site("HZ")
        subject = db.session.execute(select(Subject).where(Subject.site_id == hz.id)).scalars().first()
        for i in range(30):
            db.session.add(
                Query(
                    site_id=hz.id,
                    subject_id=subject.id,
                    form="screening",
                    form_id=i,
                    field="sex",
                    text="x",
                    origin="manual",
                    state="open",
                )
            )
        db.session.commit()
        assert statements() == first
        assert first < 40
        db.session.remove()


@pytest.mark.parametrize("path", ["/dashboards/monitor", "/dashboards/data-manager"])
def test_nav_links_the_dashboard(app, login, path):
    page = login("dm").get("/").get_data(as_text=True)
    assert 'href="/dashboards/data-manager">Dashboard</a>' in page
    page = login("monitor-hz").get("/").get_data(as_text=True)
    assert 'href="/dashboards/monitor">Dashboard</a>' in page
    assert "Dashboard</a>" not in login("coord-hz").get("/").get_data(as_text=True)
