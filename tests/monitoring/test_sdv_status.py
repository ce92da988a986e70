"""The stored SDV status (issue 14) is the judgement, always: after every write, through the
services or past them, the rows of `sdv_status` equal what the rule (`_sdv_computed`, the
UNION over the form types) computes from the facts, and the SDV page and the monitor
dashboard show those numbers.

Demo (cellstudy/demo.py): HZ-001 is on treatment with three AEs; infusion 1 and visits D1/D3
are verified by monitor-hz."""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import delete, insert, select

from cellstudy import demo
from cellstudy.adverse_events import service as aes
from cellstudy.auth.models import Site, User
from cellstudy.enrollment import service as enrollment
from cellstudy.enrollment.models import Screening, Subject
from cellstudy.extensions import db
from cellstudy.monitoring import catalog, sdv_status
from cellstudy.monitoring import service as monitoring
from cellstudy.monitoring.models import SdvMark, SdvStatus
from cellstudy.monitoring.state import sdv_plan
from cellstudy.records.transaction import transaction
from cellstudy.settings import study_in_force
from cellstudy.study import STUDY, Study
from cellstudy.timeutil import utcnow
from tests.helpers import amend_study, subject_by_number

PW = "cellstudy-demo"


def _users() -> dict[str, User]:
    return {u.username: u for u in db.session.execute(select(User)).scalars()}


def _site(code: str) -> Site:
    return db.session.execute(select(Site).where(Site.code == code)).scalar_one()


def agreed(app) -> set[tuple]:
    """The stored rows, asserted equal to the rule's judgement of the facts now, and judged
    under the definition in force."""
    with app.app_context():
        stored = sdv_status.stored_rows(db.session)
        assert stored == sdv_status.computed_rows(db.session)
        versions = set(db.session.execute(select(SdvStatus.study_version)).scalars())
        assert versions <= {study_in_force(db.session).version}
        db.session.remove()
    return stored


def _shown_progress(page: str) -> dict[str, tuple[int, int] | None]:
    """form label -> (verified, completed) of the SDV page's progress table (one site)."""
    table = page.split('class="grid sdv-progress"')[1].split("</table>")[0]
    out = {}
    for label, _plan, figure in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>\s*<td class=\"num\">(.*?)</td>", table):
        m = re.search(r"\((\d+)/(\d+)\)", figure)
        out[label] = (int(m.group(1)), int(m.group(2))) if m else None
    return out


def pages_agree(app, login, stored: set[tuple]) -> None:
    """The SDV page and the monitor dashboard of monitor-hz show the stored judgement."""
    with app.app_context():
        hz = _site("HZ").id
        labels = {name: ft.label for name, ft in catalog.form_types().items()}
        db.session.remove()
    per_form: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for form, _fid, _subject, site, _done, _required, verified in stored:
        if site == hz:
            per_form[form][0] += verified
            per_form[form][1] += 1
    monitor = login("monitor-hz")
    page = monitor.get("/sdv").get_data(as_text=True)
    shown = _shown_progress(page)
    assert shown == {labels[f]: (tuple(per_form[f]) if per_form[f][1] else None) for f in labels}
    left = int(re.search(r"Left to verify <small>(\d+) form", page).group(1))
    assert left == sum(n - v for v, n in per_form.values())
    board = monitor.get("/dashboards/monitor").get_data(as_text=True)
    for form in labels:
        row = re.search(rf'<tr data-form="{form}">(.*?)</tr>', board, re.S).group(1)
        verified = re.sub(r"<[^>]+>", " ", re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[5]).split()[0]
        assert verified == ("n/a" if per_form[form][1] == 0 and not _planned(app, form) else str(per_form[form][0]))


def _planned(app, form: str) -> bool:
    with app.app_context():
        return bool(sdv_plan(form, study_in_force(db.session))[1])


def _row(stored: set[tuple], form: str, form_id: int) -> tuple | None:
    return next((r for r in stored if r[:2] == (form, form_id)), None)


def test_the_demo_is_judged_and_the_pages_show_it(app, login):
    stored = agreed(app)
    assert stored and {r[0] for r in stored} >= {"screening", "infusion", "visit", "adverse_event"}
    assert any(r[6] for r in stored) and any(not r[6] for r in stored)  # verified and not
    pages_agree(app, login, stored)


def test_every_write_through_the_services_keeps_the_stored_status_the_judgement(app, login, monkeypatch):
    today = utcnow().astimezone().date()
    with app.app_context():
        users, hz = _users(), _site("HZ")
        subject = demo.make_subject(hz, users["coord-hz"], "draft", today)
        sid, screening_id = subject.id, subject.current_screening.id
        required = sdv_plan("screening")[1]
        db.session.remove()
    stored = agreed(app)
    assert _row(stored, "screening", screening_id) is None  # a draft has no SDV status
    pages_agree(app, login, stored)

    def step(fn):
        with app.app_context():
            fn(_users(), db.session.get(Screening, screening_id))
            db.session.remove()
        out = agreed(app)
        pages_agree(app, login, out)
        return out

    # completed: judged, nothing verified
    stored = step(
        lambda u, s: enrollment.save_screening(
            s, demo.eligible_values(today), user=u["coord-hz"], expected_version=s.version, reason=None, complete=True
        )
    )
    assert _row(stored, "screening", screening_id)[4:] == (0, len(required), False)
    # two fields verified, then all of them
    stored = step(lambda u, s: monitoring.verify(s, user=u["monitor-hz"], fields=["weight_kg", "sex"]))
    assert _row(stored, "screening", screening_id)[4:] == (2, len(required), False)
    stored = step(lambda u, s: monitoring.verify(s, user=u["monitor-hz"]))
    assert _row(stored, "screening", screening_id)[4:] == (len(required), len(required), True)
    # a correction of a verified field clears its mark: no longer verified
    stored = step(
        lambda u, s: enrollment.save_screening(
            s,
            {"weight_kg": Decimal(s.data["weight_kg"]) + 1},
            user=u["coord-hz"],
            expected_version=s.version,
            reason="transcription error",
            complete=True,
        )
    )
    assert _row(stored, "screening", screening_id)[4:] == (len(required) - 1, len(required), False)
    # a mark on a field the plan does not require changes nothing
    with app.app_context():
        hz1 = subject_by_number("HZ-001")
        nausea = next(ae for ae in hz1.adverse_events if ae.term == "Nausea")
        nausea_id, key = nausea.id, set(sdv_plan("adverse_event")[1])
        other = next(f for f in catalog.get("adverse_event").field_names if f not in key and nausea.get_field(f))
        before = _row(sdv_status.stored_rows(db.session), "adverse_event", nausea_id)
        monitoring.verify(nausea, user=_users()["monitor-hz"], fields=[other])
        db.session.remove()
    stored = agreed(app)
    assert before is not None and _row(stored, "adverse_event", nausea_id) == before
    pages_agree(app, login, stored)
    # an AE removed (status deleted): no longer a completed form
    with app.app_context():
        ae = db.session.get(aes.AdverseEvent, nausea_id)
        aes.remove_ae(ae, user=_users()["coord-hz"], expected_version=ae.version, reason="entered in error")
        db.session.remove()
    stored = agreed(app)
    assert _row(stored, "adverse_event", nausea_id) is None
    pages_agree(app, login, stored)
    # a subject lock writes, and changes no SDV status
    with app.app_context():
        monitoring.lock("subject", user=_users()["dm"], reason="frozen", subject=db.session.get(Subject, sid))
        db.session.remove()
    assert agreed(app) == stored

    # an amendment coming into force under which the SDV plan changes: every form re-judged
    # (today a plan changes with the code: the property stands in for an amendable one)
    default = Study.sdv_plan.fget

    def amended_plan(study):
        plans = default(study)
        if study.version == STUDY.version:
            return plans
        return tuple(
            (name, "none", keys) if name == "adverse_event" else (name, "all", keys) if name == "exposure" else p
            for p in plans
            for name, _plan, keys in [p]
        )

    monkeypatch.setattr(Study, "sdv_plan", property(amended_plan))
    amend_study(app, {"regimen.sentinel_stagger_days": "21"}, "1.1 (SDV plan)", password=PW)
    stored = agreed(app)
    with app.app_context():
        assert study_in_force(db.session).version == "1.1 (SDV plan)"
        assert set(db.session.execute(select(SdvStatus.study_version)).scalars()) == {"1.1 (SDV plan)"}
        n_exposure_fields = len(catalog.get("exposure").field_names)
        db.session.remove()
    assert not any(r[0] == "adverse_event" for r in stored)
    assert {r[5] for r in stored if r[0] == "exposure"} == {n_exposure_fields}
    pages_agree(app, login, stored)


def test_a_write_past_the_services_is_judged_too(app, login):
    """Direct ORM changes (no records service, no audit): the write hook still sees them."""
    with app.app_context():
        hz1 = subject_by_number("HZ-001")
        infusion = next(i for i in hz1.infusions if i.status == "complete")
        infusion_id, sid = infusion.id, hz1.id
        db.session.remove()
    before = _row(agreed(app), "infusion", infusion_id)
    assert before is not None and before[6]  # verified by the demo

    def write(fn):
        with app.app_context():
            with transaction():
                fn()
            db.session.remove()
        return agreed(app)

    from cellstudy.infusions.models import Infusion

    stored = write(lambda: setattr(db.session.get(Infusion, infusion_id), "status", "draft"))
    assert _row(stored, "infusion", infusion_id) is None
    stored = write(lambda: setattr(db.session.get(Infusion, infusion_id), "status", "complete"))
    assert _row(stored, "infusion", infusion_id) == before

    def clear_one():
        mark = db.session.execute(
            select(SdvMark).where(SdvMark.form == "infusion", SdvMark.form_id == infusion_id).limit(1)
        ).scalar_one()
        mark.cleared_at = utcnow()

    stored = write(clear_one)
    assert _row(stored, "infusion", infusion_id)[4:7] == (before[4] - 1, before[5], False)

    def delete_cleared():
        for mark in db.session.execute(select(SdvMark).where(SdvMark.cleared_at.is_not(None))).scalars():
            db.session.delete(mark)

    write(delete_cleared)
    # the subject moves to another site: every one of its forms follows
    with app.app_context():
        nb = _site("NB").id
    stored = write(lambda: setattr(db.session.get(Subject, sid), "site_id", nb))
    assert {r[3] for r in stored if r[2] == sid} == {nb}
    pages_agree(app, login, stored)


def test_rejudge_sdv_rebuilds_what_a_bulk_load_bypassed(app):
    """Rows written past the ORM (a bulk load) are not seen by the hooks: `flask rejudge-sdv`
    judges every form again."""
    stored = agreed(app)
    with app.app_context():
        with transaction():
            db.session.execute(delete(SdvStatus.__table__))
            db.session.execute(
                insert(SdvStatus.__table__).values(
                    form="screening",
                    form_id=10**6,
                    subject_id=1,
                    site_id=1,
                    done=0,
                    required=1,
                    verified=False,
                    study_version="stale",
                )
            )
        db.session.remove()
    result = app.test_cli_runner().invoke(args=["rejudge-sdv"])
    assert result.exit_code == 0, result.output
    assert f"{len(stored)} completed forms" in result.output
    assert agreed(app) == stored


def test_a_judge_waits_for_the_other_judge_of_the_same_form(app):
    """Two monitors verify different fields of one form at once (no common row written): the
    second judge waits for the first to commit and reads its mark, so neither mark is lost
    from the stored count (PostgreSQL: the judge's advisory locks; SQLite: the write lock)."""
    with app.app_context():
        screening = subject_by_number("HZ-001").current_screening
        screening_id = screening.id
        before = _row(sdv_status.stored_rows(db.session), "screening", screening_id)
        undone = sorted(
            set(sdv_plan("screening")[1])
            - set(
                db.session.execute(
                    select(SdvMark.field).where(
                        SdvMark.form == "screening", SdvMark.form_id == screening_id, SdvMark.cleared_at.is_(None)
                    )
                ).scalars()
            )
        )
        db.session.remove()
    assert before is not None and len(undone) >= 2
    judged, release, finished, errors = threading.Event(), threading.Event(), threading.Event(), []

    def first():
        try:
            with app.app_context():
                with transaction():
                    monitoring.verify(
                        db.session.get(Screening, screening_id), user=_users()["monitor-hz"], fields=[undone[0]]
                    )
                    db.session.flush()
                    sdv_status._rejudge(db.session)  # judged now, its locks held until the commit
                    judged.set()
                    release.wait(30)
                db.session.remove()
        except Exception as error:  # noqa: BLE001  (reported by the test)
            errors.append(error)
            judged.set()

    def second():
        try:
            with app.app_context():
                with transaction():
                    monitoring.verify(
                        db.session.get(Screening, screening_id), user=_users()["monitor-hz"], fields=[undone[1]]
                    )
                db.session.remove()
        except Exception as error:  # noqa: BLE001
            errors.append(error)
        finished.set()

    a = threading.Thread(target=first)
    a.start()
    assert judged.wait(30)
    b = threading.Thread(target=second)
    b.start()
    assert not finished.wait(1.0), "the second judge did not wait for the first"
    release.set()
    a.join(30)
    b.join(30)
    assert not errors, errors
    after = _row(agreed(app), "screening", screening_id)
    assert after[4] == before[4] + 2


def test_the_judge_of_everything_stores_the_same_rows(app):
    stored = agreed(app)
    with app.app_context():
        with transaction():
            judged = sdv_status.judge_all(db.session)
        db.session.remove()
    assert judged == len(stored) and agreed(app) == stored
