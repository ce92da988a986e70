"""Eligibility after enrolment (issue 11, item 5), on the real app and database.

The demo's HZ-001 is on treatment (enrolled 22 days ago, infusion 1 given), NB-001 enrolled
with infusion 1 scheduled; both signed eligible at enrolment."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from cellstudy import create_app
from cellstudy.enrollment import reconfirm, service
from cellstudy.enrollment.fields import SCREENING_FIELDS
from cellstudy.enrollment.models import EligibilityDecision, EligibilityReview, Subject
from cellstudy.extensions import db
from cellstudy.infusions.models import Deviation
from cellstudy.records.crf import from_stored
from cellstudy.records.models import AuditRecord
from cellstudy.records.transaction import transaction
from cellstudy.settings import apply
from cellstudy.timeutil import site_date
from tests.helpers import screening_post, subject_by_number
from cellstudy.auth.policy import ALL_SITES

PASSWORD = "cellstudy-demo"


def _subject(app, number="HZ-001"):
    with app.app_context():
        subject = subject_by_number(number)
        return subject.id, subject.current_screening.version


def _correct(coord, sid, version, overrides, reason="corrected from source"):
    """The coordinator corrects the complete screening form (a reason is required): the
    saved answers posted back with `overrides` changed, as the browser does."""
    with coord.app.app_context():
        screening = db.session.get(Subject, sid).current_screening
        saved = {spec.name: from_stored(spec, (screening.data or {}).get(spec.name)) for spec in SCREENING_FIELDS}
        no_prior = bool((screening.data or {}).get(service.NO_PRIOR_THERAPIES))
    response = coord.post(
        f"/subjects/{sid}/screening",
        data=screening_post(version, {**saved, **overrides}, complete=True, reason=reason, no_prior=no_prior),
    )
    assert response.status_code == 302, response.data.decode()[:3000]


def _reviews(app, sid) -> list[EligibilityReview]:
    with app.app_context():
        rows = (
            db.session.execute(
                select(EligibilityReview).where(EligibilityReview.subject_id == sid).order_by(EligibilityReview.id)
            )
            .scalars()
            .all()
        )
        for r in rows:
            db.session.expunge(r)
        return rows


def _decisions(app, sid) -> list[tuple]:
    with app.app_context():
        return [
            (d.id, d.outcome, d.criteria, d.signature.valid if d.signature else None, d.screening_version)
            for d in db.session.execute(
                select(EligibilityDecision)
                .where(EligibilityDecision.subject_id == sid)
                .order_by(EligibilityDecision.id)
            ).scalars()
        ]


def _banner(page: str) -> str:
    start = page.index('id="eligibility-warning"')
    return page[start : page.index("</div>\n", page.index("</p>", page.index("The checker now says", start)))]


def _reconfirm_post(version, password=PASSWORD, confirm=True):
    data = {"reconfirm-password": password, "reconfirm-screening_version": str(version)}
    if confirm:
        data["reconfirm-confirm"] = "y"
    return data


def _deviation_post(reason, password=PASSWORD):
    return {"deviation-reason": reason, "deviation-password": password, "deviation-confirm": "y"}


# --- the decision of record; on-study exposures are not eligibility inputs ---------------------------


def test_an_enrolled_subject_shows_the_signed_decision_not_a_recheck(app, login):
    sid, _ = _subject(app)
    page = login("coord-hz").get(f"/subjects/{sid}").data.decode()
    assert 'id="decision-of-record"' in page
    record = page[page.index('id="decision-of-record"') :]
    assert "Eligibility: decision of record" in record and "Dr Wang Lei" in record
    assert "study definition" in record.lower() and "v1." in record
    with app.app_context():
        decision = db.session.get(Subject, sid).enrolment_decision
        assert set(decision.criteria) <= set(
            record.split('data-code="')[i].split('"')[0] for i in range(1, record.count('data-code="') + 1)
        )
    assert 'id="eligibility-warning"' not in page and "No actions for this status" not in page
    assert "not eligible" not in page


def test_on_study_medications_and_vaccines_are_lockout_inputs_not_eligibility_inputs(app, login):
    """A steroid and a vaccine dated after enrolment but before the screening form's planned
    first infusion (the case that made an enrolled subject "not eligible")."""
    with app.app_context():
        subject = subject_by_number("NB-001")
        sid = subject.id
        enrolled_on = site_date(subject.enrolled_at, subject.site)
        planned = service.build_case(subject.current_screening)["first_infusion_date"]
        assert planned > enrolled_on + timedelta(days=3)
    inv = login("inv-nb")
    steroid = inv.post(
        f"/subjects/{sid}/exposures/new",
        data={
            "category": "systemic_steroid",
            "name": "Prednisone 20 mg",
            "start_date": enrolled_on.isoformat(),
            "last_date": enrolled_on.isoformat(),
            "indication": "rash",
        },
    )
    assert steroid.status_code == 302
    vaccine = inv.post(
        f"/subjects/{sid}/exposures/new",
        data={
            "category": "vaccine",
            "name": "Influenza (inactivated)",
            "start_date": enrolled_on.isoformat(),
            "last_date": enrolled_on.isoformat(),
            "deviation_reason": "Given at the GP before the visit",
            "password": PASSWORD,
        },
    )
    assert vaccine.status_code == 302, vaccine.data.decode()[:2000]
    with app.app_context():
        subject = db.session.get(Subject, sid)
        result = service.evaluate(subject.current_screening)
        assert result["eligible"] is True
        assert result["criteria"]["vaccine"]["status"] == "pass"
        assert result["criteria"]["washout_steroid"]["status"] == "pass"
        case = service.build_case(subject.current_screening)
        assert [e["name"] for e in case["prior_therapies"]] == ["Venetoclax + azacitidine"]
    assert _reviews(app, sid) == []
    page = inv.get(f"/subjects/{sid}").data.decode()
    assert 'id="eligibility-warning"' not in page and "not eligible" not in page


# --- a change of screening data after enrolment: banner and worklist --------------------------------


def test_a_screening_correction_opens_one_review_and_a_banner(app, login):
    sid, version = _subject(app)
    coord = login("coord-hz")
    _correct(coord, sid, version, {"alt": Decimal("50")})
    reviews = _reviews(app, sid)
    assert len(reviews) == 1 and reviews[0].cause == "screening_changed" and reviews[0].is_open
    assert "ALT" in reviews[0].detail
    page = coord.get(f"/subjects/{sid}").data.decode()
    banner = _banner(page)
    assert "Eligibility to re-confirm" in banner and "ALT" in banner and "Lin Mei" in banner
    assert "<strong>eligible</strong>" in banner
    assert "eligibility_review" not in banner and "Review eligibility" not in banner  # no action for coordinators
    assert page.index('id="eligibility-warning"') < page.index("<h2>Forms</h2>")  # above the fold
    # a second correction adds to the same review (one open review per subject and cause)
    _correct(coord, sid, version + 1, {"alt": Decimal("50"), "ast": Decimal("45")})
    reviews = _reviews(app, sid)
    assert len(reviews) == 1
    lines = reviews[0].detail.split("\n")
    assert lines == ["Screening form changed: ALT", "Screening form changed: AST"], lines
    with app.app_context():
        audit = db.session.execute(
            select(AuditRecord.action, AuditRecord.field).where(AuditRecord.form == "eligibility_review")
        ).all()
    assert ("create", None) in audit and ("assign", "detail") in audit


def test_prior_therapies_count_but_on_study_exposures_do_not(app, login):
    sid, _ = _subject(app)
    coord = login("coord-hz")
    with app.app_context():
        subject = db.session.get(Subject, sid)
        enrolled_on = site_date(subject.enrolled_at, subject.site)
    on_study = coord.post(
        f"/subjects/{sid}/exposures/new",
        data={
            "category": "systemic_steroid",
            "name": "Dexamethasone 10 mg",
            "start_date": (enrolled_on + timedelta(days=5)).isoformat(),
            "last_date": (enrolled_on + timedelta(days=6)).isoformat(),
            "indication": "CRS",
        },
    )
    assert on_study.status_code == 302
    assert _reviews(app, sid) == []
    prior = coord.post(
        f"/subjects/{sid}/exposures/new",
        data={
            "category": "radiotherapy",
            "name": "Palliative RT, left femur",
            "start_date": (enrolled_on - timedelta(days=70)).isoformat(),
            "last_date": (enrolled_on - timedelta(days=60)).isoformat(),
        },
    )
    assert prior.status_code == 302
    reviews = _reviews(app, sid)
    assert len(reviews) == 1 and "Prior therapy added: Palliative RT, left femur" in reviews[0].detail
    # removing the prior therapy is a change too (same review); removing an on-study one is not
    with app.app_context():
        rows = {e.name: (e.id, e.version) for e in db.session.get(Subject, sid).active_exposures}
    rid, rversion = rows["Palliative RT, left femur"]
    response = coord.post(
        f"/subjects/{sid}/exposures/{rid}/remove", data={"version": rversion, "reason": "wrong patient"}
    )
    assert response.status_code == 302
    did, dversion = rows["Dexamethasone 10 mg"]
    response = coord.post(f"/subjects/{sid}/exposures/{did}/remove", data={"version": dversion, "reason": "duplicate"})
    assert response.status_code == 302
    reviews = _reviews(app, sid)
    assert len(reviews) == 1
    assert reviews[0].detail.split("\n") == [
        "Prior therapy added: Palliative RT, left femur (Radiotherapy)",
        "Prior therapy removed: Palliative RT, left femur (Radiotherapy)",
    ]


def test_changes_before_enrolment_and_refused_changes_open_no_review(app, login):
    coord = login("coord-hz")
    with app.app_context():
        screening_subject = (
            db.session.execute(select(Subject).where(Subject.status == "screening").order_by(Subject.id))
            .scalars()
            .first()
        )
        ssid, sversion = screening_subject.id, screening_subject.current_screening.version
    _correct(coord, ssid, sversion, {"alt": Decimal("50")})
    assert _reviews(app, ssid) == []
    sid, version = _subject(app)
    stale = coord.post(
        f"/subjects/{sid}/screening", data=screening_post(version - 1, {"alt": "50"}, complete=True, reason="x")
    )
    assert stale.status_code == 200 and b"since you opened it" in stale.data
    no_reason = coord.post(f"/subjects/{sid}/screening", data=screening_post(version, {"alt": "50"}, complete=True))
    assert no_reason.status_code == 200
    assert _reviews(app, sid) == []


def test_the_worklist_and_the_start_page_list_the_site_reviews_only(app, login):
    hz, hz_version = _subject(app, "HZ-001")
    nb, nb_version = _subject(app, "NB-001")
    _correct(login("coord-hz"), hz, hz_version, {"alt": Decimal("50")})
    _correct(login("coord-nb"), nb, nb_version, {"ecog": 0})
    inv_hz, inv_nb = login("inv-hz"), login("inv-nb")
    start = inv_hz.get("/").data.decode()
    section = start[start.index('id="eligibility-to-reconfirm"') :]
    section = section[: section.index("</section>")]
    assert "HZ-001" in section and "NB-001" not in section and f"/subjects/{hz}/eligibility-review" in section
    listing = inv_nb.get("/subjects/eligibility-reviews").data.decode()
    assert "NB-001" in listing and "HZ-001" not in listing
    assert 'id="eligibility-to-reconfirm"' not in login("coord-hz").get("/").data.decode()  # investigators' section
    coord_list = login("coord-hz").get("/subjects/eligibility-reviews").data.decode()
    assert "HZ-001" in coord_list and '/eligibility-review"' not in coord_list  # read-only for coordinators
    dm_list = login("dm").get("/subjects/eligibility-reviews").data.decode()
    assert "HZ-001" in dm_list and "NB-001" in dm_list


# --- re-confirming ------------------------------------------------------------------------------


def test_reconfirm_is_refused_when_the_checker_does_not_say_eligible(app, login):
    sid, version = _subject(app)
    _correct(login("coord-hz"), sid, version, {"ecog": 2})
    inv = login("inv-hz")
    page = inv.get(f"/subjects/{sid}/eligibility-review").data.decode()
    assert "Eligibility cannot be re-confirmed" in page and "ECOG" in page
    assert "reconfirm-password" not in page and "deviation-password" in page
    before = _decisions(app, sid)
    response = inv.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1))
    assert response.status_code == 200
    assert "not eligible for the current screening data" in response.data.decode()
    assert _decisions(app, sid) == before
    assert _reviews(app, sid)[0].is_open
    with app.app_context():
        assert db.session.get(Subject, sid).status == "on_treatment"  # never un-enrolled


def test_reconfirm_signs_a_new_decision_and_keeps_the_old_one(app, login):
    sid, version = _subject(app)
    _correct(login("coord-hz"), sid, version, {"alt": Decimal("50")})
    [(enrol_id, outcome, signed_criteria, valid, _v)] = _decisions(app, sid)
    assert outcome == "enrolled" and valid is False  # the change invalidated the enrolment signature
    inv = login("inv-hz")
    page = inv.get(f"/subjects/{sid}/eligibility-review").data.decode()
    assert "Sign and re-confirm eligibility" in page and reconfirm.RECONFIRM_MEANING in page
    # a wrong password: refused at the password field, nothing kept but the failed attempt
    wrong = inv.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1, "nope-nope"))
    assert wrong.status_code == 200 and "password" in wrong.data.decode().lower()
    assert len(_decisions(app, sid)) == 1 and _reviews(app, sid)[0].is_open
    # an unticked meaning box: refused, message at the box
    unticked = inv.post(
        f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1, confirm=False)
    )
    assert unticked.status_code == 200 and "Tick the box" in unticked.data.decode()
    # a version that is not the current one (the data changed since the page was opened)
    stale = inv.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version))
    assert stale.status_code == 200 and "changed since you opened this page" in stale.data.decode()
    garbage = inv.post(
        f"/subjects/{sid}/eligibility-review/reconfirm",
        data={**_reconfirm_post(version), "reconfirm-screening_version": "abc"},
    )
    assert garbage.status_code == 200
    assert len(_decisions(app, sid)) == 1
    ok = inv.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1))
    assert ok.status_code == 302 and ok.location.endswith(f"/subjects/{sid}")
    decisions = _decisions(app, sid)
    assert [d[1] for d in decisions] == ["enrolled", "reconfirmed"]
    assert decisions[0] == (enrol_id, "enrolled", signed_criteria, False, version)  # kept as signed
    assert decisions[1][3] is True and decisions[1][4] == version + 1
    assert "ALT 50 U/L" in decisions[1][2]["transaminases"]["reason"]
    [review] = _reviews(app, sid)
    assert review.resolution == "reconfirmed" and review.decision_id == decisions[1][0] and review.resolved_by_id
    with app.app_context():
        signature = db.session.get(EligibilityDecision, decisions[1][0]).signature
        assert signature.meaning == reconfirm.RECONFIRM_MEANING and signature.form == "screening"
        assert reconfirm.decision_of_record(db.session.get(Subject, sid)).id == decisions[1][0]
    page = inv.get(f"/subjects/{sid}").data.decode()
    assert 'id="eligibility-warning"' not in page
    assert "eligibility re-confirmed" in page and 'data-resolution="reconfirmed"' in page  # a history line
    record = page[page.index('id="decision-of-record"') :]
    assert "re-confirmed" in record and "ALT 50 U/L" in record
    assert "HZ-001" not in inv.get("/subjects/eligibility-reviews").data.decode()
    # resolved: a second POST is refused with a message, no new decision
    again = inv.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1))
    assert again.status_code == 200 and "No eligibility review is open" in again.data.decode()
    assert len(_decisions(app, sid)) == 2


def test_a_deviation_resolves_the_review_with_a_reason_and_a_signature(app, login):
    sid, version = _subject(app)
    _correct(login("coord-hz"), sid, version, {"ecog": 2})
    inv = login("inv-hz")
    empty = inv.post(f"/subjects/{sid}/eligibility-review/deviation", data=_deviation_post("  "))
    assert empty.status_code == 200 and "Give the reason for the deviation." in empty.data.decode()
    wrong = inv.post(
        f"/subjects/{sid}/eligibility-review/deviation",
        data=_deviation_post("ECOG 2 at day 7, PI decided to continue", "nope-nope"),
    )
    assert wrong.status_code == 200
    assert "ECOG 2 at day 7, PI decided to continue" in wrong.data.decode()  # the typed reason is kept
    assert _reviews(app, sid)[0].is_open
    with app.app_context():
        assert (
            db.session.scalar(
                select(func.count(Deviation.id)).where(
                    Deviation.subject_id == sid, Deviation.kind == reconfirm.DEVIATION_KIND
                )
            )
            == 0
        )
    ok = inv.post(
        f"/subjects/{sid}/eligibility-review/deviation", data=_deviation_post("ECOG 2 at day 7, PI decided to continue")
    )
    assert ok.status_code == 302
    [review] = _reviews(app, sid)
    assert review.resolution == "deviation" and review.deviation_id
    with app.app_context():
        deviation = db.session.get(Deviation, review.deviation_id)
        assert deviation.kind == reconfirm.DEVIATION_KIND and deviation.reason.startswith("ECOG 2")
        assert "ECOG" in deviation.description
        assert deviation.signature.meaning == reconfirm.DEVIATION_MEANING and deviation.signature.valid
        assert db.session.get(Subject, sid).status == "on_treatment"
    assert [d[1] for d in _decisions(app, sid)] == ["enrolled"]
    page = inv.get(f"/subjects/{sid}").data.decode()
    assert 'id="eligibility-warning"' not in page and 'data-resolution="deviation"' in page
    assert "eligibility not reconfirmed" in page  # listed with the subject's deviations


# --- authorisation ------------------------------------------------------------------------------


def test_roles_and_sites(app, login):
    sid, version = _subject(app)
    _correct(login("coord-hz"), sid, version, {"alt": Decimal("50")})
    for username in ("coord-hz", "monitor-hz", "dm"):
        user = login(username)
        assert user.get(f"/subjects/{sid}/eligibility-review").status_code == 403
        assert (
            user.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1)).status_code
            == 403
        )
        assert user.post(f"/subjects/{sid}/eligibility-review/deviation", data=_deviation_post("no")).status_code == 403
    inv_nb = login("inv-nb")
    assert inv_nb.get(f"/subjects/{sid}/eligibility-review").status_code == 404
    assert (
        inv_nb.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1)).status_code
        == 404
    )
    assert inv_nb.post(f"/subjects/{sid}/eligibility-review/deviation", data=_deviation_post("no")).status_code == 404
    assert inv_nb.get("/subjects/999999/eligibility-review").status_code == 404
    # a subject with nothing to review (in screening): a page that says so, and refusals with a message
    inv = login("inv-hz")
    with app.app_context():
        screening_id = db.session.execute(select(Subject.id).where(Subject.status == "screening")).scalars().first()
    page = inv.get(f"/subjects/{screening_id}/eligibility-review")
    assert page.status_code == 200 and b"No eligibility review is open" in page.data
    refused = inv.post(f"/subjects/{screening_id}/eligibility-review/deviation", data=_deviation_post("x"))
    assert refused.status_code == 200 and b"No eligibility review is open" in refused.data
    assert _reviews(app, sid)[0].is_open and len(_decisions(app, sid)) == 1


@pytest.fixture
def csrf_app(db_url):
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": db_url, "WTF_CSRF_ENABLED": True})
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_the_actions_need_the_csrf_token(csrf_app):
    import re

    sid, version = _subject(csrf_app)
    with csrf_app.app_context():  # the change itself through the service (the page test covers the form)
        subject = db.session.get(Subject, sid)
        screening = subject.current_screening
        from cellstudy.auth.models import User

        coord = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        service.save_screening(
            screening, {"alt": Decimal("50")}, user=coord, expected_version=version, reason="corrected", complete=True
        )
    client = csrf_app.test_client()
    login_page = client.get("/login").data.decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"', login_page)
    token = next(g for g in token.groups() if g)
    assert (
        client.post("/login", data={"username": "inv-hz", "password": PASSWORD, "csrf_token": token}).status_code == 302
    )
    assert (
        client.post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version + 1)).status_code
        == 400
    )
    assert client.post(f"/subjects/{sid}/eligibility-review/deviation", data=_deviation_post("x")).status_code == 400
    page = client.get(f"/subjects/{sid}/eligibility-review").data.decode()
    form_token = re.search(r'name="reconfirm-csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    ok = client.post(
        f"/subjects/{sid}/eligibility-review/reconfirm",
        data={**_reconfirm_post(version + 1), "reconfirm-csrf_token": form_token},
    )
    assert ok.status_code == 302
    assert [d[1] for d in _decisions(csrf_app, sid)] == ["enrolled", "reconfirmed"]


# --- amendments: the public API of item 6 -------------------------------------------------------------


def test_amendment_impact_lists_the_subjects_whose_signed_decision_changes(app, ctx):
    # HZ-001 and NB-001 signed with ALT 38 / ULN 40 = 0.95 x ULN
    tighter = apply({"eligibility.transaminase_uln_ratio": "0.9"}, version="1.1-test")
    rows = reconfirm.amendment_impact(tighter)
    assert sorted(r["subject"].label for r in rows) == ["HZ-001", "NB-001"]
    for row in rows:
        assert row["changed_criteria"] == ["transaminases"]
        assert row["before"]["eligible"] is True and row["after"]["eligible"] is False
        assert row["decision"].outcome == "enrolled"
        assert "limit 0.9" in row["after"]["criteria"]["transaminases"]["reason"]
    assert reconfirm.amendment_impact(apply({"eligibility.transaminase_uln_ratio": "0.95"}, version="x")) == []
    assert reconfirm.amendment_impact(apply({"eligibility.qtc_max_ms": "470"}, version="x")) == []
    assert db.session.scalar(select(func.count(EligibilityReview.id))) == 0  # no writes


def test_flag_amendment_impact_opens_one_review_each_and_is_idempotent(app, login):
    with app.app_context():
        from cellstudy.auth.models import User

        inv = db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one()
        tighter = apply({"eligibility.transaminase_uln_ratio": "0.9"}, version="1.1-test")
        with transaction():
            flagged = reconfirm.flag_amendment_impact(tighter, amendment_label="A1", user=inv)
        assert sorted(s.label for s in flagged) == ["HZ-001", "NB-001"]
        with transaction():
            again = reconfirm.flag_amendment_impact(tighter, amendment_label="A1", user=inv)
        assert len(again) == 2
        reviews = db.session.execute(select(EligibilityReview)).scalars().all()
        assert len(reviews) == 2 and {r.cause for r in reviews} == {"amendment"}
        assert all(
            r.detail.count("\n") == 0 and "Amendment A1" in r.detail and "ALT and AST" in r.detail for r in reviews
        ), [r.detail for r in reviews]
        hz = subject_by_number("HZ-001")
        assert hz.status == "on_treatment"
        # a screening review opens beside it (another cause); one re-confirmation resolves both
        coord = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        service.save_screening(
            hz.current_screening,
            {"weight_kg": Decimal("61")},
            user=coord,
            expected_version=hz.current_screening.version,
            reason="re-weighed",
            complete=True,
        )
        hz = subject_by_number("HZ-001")
        assert sorted(r.cause for r in reconfirm.reviews_of(hz) if r.is_open) == ["amendment", "screening_changed"]
        sid, version = hz.id, hz.current_screening.version
    page = login("coord-hz").get(f"/subjects/{sid}").data.decode()
    banner = _banner(page)
    assert "A study amendment changes an eligibility rule" in banner and "Amendment A1" in banner
    response = login("inv-hz").post(f"/subjects/{sid}/eligibility-review/reconfirm", data=_reconfirm_post(version))
    assert response.status_code == 302
    assert all(not r.is_open for r in _reviews(app, sid))


def test_a_locked_subject_is_left_out_of_flagging_without_failing_the_others(app, ctx):
    from cellstudy.auth.models import User
    from cellstudy.monitoring import service as monitoring

    dm = db.session.execute(select(User).where(User.username == "dm")).scalar_one()
    inv = db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one()
    monitoring.lock(
        "subject", user=dm, reason="database lock for the interim analysis", subject=subject_by_number("HZ-001")
    )
    tighter = apply({"eligibility.transaminase_uln_ratio": "0.9"}, version="1.1-test")
    assert len(reconfirm.amendment_impact(tighter)) == 2  # still listed for the amendment page
    with transaction():
        flagged = reconfirm.flag_amendment_impact(tighter, amendment_label="A1", user=inv)
    assert [s.label for s in flagged] == ["NB-001"]
    assert [r.subject.label for r in reconfirm.open_reviews(ALL_SITES)] == ["NB-001"]


def test_open_review_is_idempotent_per_subject_and_cause(app, ctx):
    from cellstudy.auth.models import User

    inv = db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one()
    subject = subject_by_number("HZ-001")
    with transaction():
        first = reconfirm.open_review(subject, "amendment", "Amendment A2: renal limit", user=inv)
        again = reconfirm.open_review(subject, "amendment", "  Amendment A2:   renal limit ", user=inv)
        other = reconfirm.open_review(subject, "amendment", "Amendment A3: QTc", user=inv)
    assert first is again is other and first.detail == "Amendment A2: renal limit\nAmendment A3: QTc"
    with transaction():
        screening = reconfirm.open_review(subject, "screening_changed", "Screening form changed: ALT", user=inv)
    assert screening.id != first.id
    with transaction():  # a scheduled run (an amendment's effective date arriving) has no user
        system = reconfirm.open_review(subject_by_number("NB-001"), "amendment", "Amendment A2", user=None)
    assert system.opened_by_id is None
    assert (
        db.session.execute(
            select(AuditRecord.username).where(
                AuditRecord.form == "eligibility_review", AuditRecord.form_id == system.id
            )
        )
        .scalars()
        .all()
        == ["system"] * 3
    )
    with pytest.raises(ValueError, match="cause"):
        reconfirm.open_review(subject, "typo", "x", user=inv)
