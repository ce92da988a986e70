"""Two coordinators scheduling the same infusion at once: one wins, the other is
refused (issue 3); no duplicate infusion is ever created."""

import threading
from datetime import timedelta

from sqlalchemy import select

from cellstudy.extensions import db
from cellstudy.infusions.lockouts import LOCKOUT_LABELS
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
        responses[index] = sessions[index].post(
            f"/subjects/{sid}/infusions", data={"proposed_date": proposed.isoformat()}
        )

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 302], codes  # one scheduled (redirect), one refused on the page
    refused = next(r for r in responses if r.status_code == 200).data.decode()
    assert "Nothing was saved" in refused and (
        LOCKOUT_LABELS["min_interval"] in refused or LOCKOUT_LABELS["max_infusions"] in refused
    )
    with app.app_context():
        infusions = (
            db.session.execute(select(Infusion).where(Infusion.subject_id == sid, Infusion.state != "cancelled"))
            .scalars()
            .all()
        )
        assert sorted(i.number for i in infusions) == [1, 2, 3]


def test_two_facts_saved_at_once_are_both_in_the_stored_judgement(app):
    """An adversarial interleaving (issue 11): two transactions each add a washout exposure to
    NB-001 (first infusion planned on T+14) and reach their commit together. Each judges the
    planned infusion inside its own transaction; without serialising the judges, each sees only
    its own exposure and the later commit overwrites the other's judgement. The stored
    judgement must hold both washouts."""
    from cellstudy.auth.models import User
    from cellstudy.enrollment import service as enrollment
    from cellstudy.enrollment.models import Subject
    from cellstudy.infusions.models import InfusionJudgement
    from cellstudy.records import hooks

    with app.app_context():
        subject = subject_by_number("NB-001")
        sid = subject.id
        (planned,) = [i for i in subject.infusions if i.state == "scheduled"]
        inf_id, first = planned.id, planned.planned_date
    arrived = {name: threading.Event() for name in ("steroid", "radiotherapy")}

    def meet_at_commit(session):
        # after this transaction's judgement, before its commit: wait (a little) for the other
        name = session.info.get("test_name")
        if name:
            arrived[name].set()
            other = next(n for n in arrived if n != name)
            arrived[other].wait(timeout=3)

    hooks.before_commit(meet_at_commit)
    errors = []

    def add(name, category, last):
        try:
            with app.app_context():
                db.session.info["test_name"] = name
                user = db.session.execute(select(User).where(User.username == "coord-nb")).scalar_one()
                enrollment.add_exposure(
                    db.session.get(Subject, sid),
                    {
                        "category": category,
                        "name": name,
                        "start_date": last,
                        "last_date": last,
                        "half_life_days": None,
                        "physiological_replacement": False,
                        "indication": None,
                    },
                    user=user,
                )
                db.session.remove()
        except Exception as error:  # reported below
            errors.append(error)

    try:
        threads = [
            threading.Thread(target=add, args=("steroid", "systemic_steroid", first - timedelta(days=1))),
            threading.Thread(target=add, args=("radiotherapy", "radiotherapy", first - timedelta(days=2))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        hooks._COMMIT_HOOKS.remove(meet_at_commit)
    assert not errors, errors
    with app.app_context():
        codes = [lo["code"] for lo in db.session.get(InfusionJudgement, inf_id).lockouts]
    assert codes == ["washout_steroid", "washout_radiotherapy"], codes
