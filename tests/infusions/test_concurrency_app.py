"""Two coordinators scheduling the same infusion at once: one wins, the other is
refused (issue 3); no duplicate infusion is ever created."""
import threading
from datetime import timedelta

from sqlalchemy import select

from cellstudy.extensions import db
from cellstudy.infusions.models import Infusion
from tests.helpers import subject_by_number


def test_simultaneous_scheduling_of_the_same_infusion_creates_it_once(app, login):
    with app.app_context():
        subject = subject_by_number("HZ-001")
        sid = subject.id
        second = next(i for i in subject.infusions if i.number == 2)
        proposed = second.planned_date + timedelta(days=7)  # infusion 3 on its target day
    sessions = [login("coord-hz"), login("inv-hz")]
    barrier = threading.Barrier(len(sessions))
    responses = [None] * len(sessions)

    def post(index):
        barrier.wait()
        responses[index] = sessions[index].post(f"/subjects/{sid}/infusions",
                                                data={"proposed_date": proposed.isoformat()})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 302], codes  # one scheduled (redirect), one refused on the page
    refused = next(r for r in responses if r.status_code == 200).data.decode()
    assert "Nothing was saved" in refused and ("min_interval" in refused or "max_infusions" in refused)
    with app.app_context():
        infusions = db.session.execute(select(Infusion).where(Infusion.subject_id == sid,
                                                              Infusion.state != "cancelled")).scalars().all()
        assert sorted(i.number for i in infusions) == [1, 2, 3]
