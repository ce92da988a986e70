"""Two sessions save the same verified, queried AE at once (issue 6): the later save is
refused with the "changed by" message, nothing of the winner is lost, and the monitoring
hooks (SDV clearing, the query link) run once, for the save that happened."""

import threading

from sqlalchemy import select

from cellstudy.adverse_events.models import AdverseEvent
from cellstudy.extensions import db
from cellstudy.records import audit
from cellstudy.records.models import AuditRecord, Query
from tests.helpers import subject_by_number
from tests.monitoring.test_monitoring_app import ae_form, text


def test_two_sessions_correct_the_same_form_the_later_is_refused(app, login):
    with app.app_context():
        subject = subject_by_number("HZ-001")
        sid = subject.id
        fn = next(ae.id for ae in subject.adverse_events if ae.term == "Febrile neutropenia")
    monitor = login("monitor-hz")
    assert (
        monitor.post(
            f"/subjects/{sid}/queries",
            data={"target": f"adverse_event:{fn}", "field": "grade", "text": "Please check the grade."},
        ).status_code
        == 302
    )
    url = f"/subjects/{sid}/adverse-events/{fn}"
    posts = {
        "coord-hz": ae_form(app, fn, grade="4", reason="Grade 4 in the ICU notes"),
        "inv-hz": ae_form(app, fn, comments="Reviewed on the ward round", reason="Investigator comment"),
    }
    sessions = {name: login(name) for name in posts}
    barrier = threading.Barrier(len(sessions))
    responses = {}

    def post(name):
        barrier.wait()
        responses[name] = sessions[name].post(url, data=posts[name])

    threads = [threading.Thread(target=post, args=(name,)) for name in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = {name: r.status_code for name, r in responses.items()}
    assert sorted(codes.values()) == [200, 302], codes
    winner = next(n for n, c in codes.items() if c == 302)
    loser = next(n for n, c in codes.items() if c == 200)
    page = text(responses[loser])
    assert "since you opened it" in page
    with app.app_context():
        ae = db.session.get(AdverseEvent, fn)
        if winner == "coord-hz":
            assert ae.grade == 4 and not (ae.data or {}).get("comments")
        else:
            assert ae.grade == 3 and ae.data["comments"] == "Reviewed on the ward round"
        rows = db.session.scalars(
            select(AuditRecord).where(
                AuditRecord.form == "adverse_event", AuditRecord.form_id == fn, AuditRecord.action == "update"
            )
        ).all()
        assert {r.username for r in rows} == {winner}
        clears = db.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "sdv_clear", AuditRecord.form_id == fn)
        ).all()
        query = db.session.scalars(select(Query).where(Query.form_id == fn, Query.field == "grade")).one()
        if winner == "coord-hz":  # the grade changed: its SDV is cleared and the query answered, once
            assert [c.field for c in clears] == ["grade"] and query.state == "answered"
        else:
            assert clears == [] and query.state == "open"
        assert audit.verify().ok
