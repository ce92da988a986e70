"""Adverse events through the web app (PROTOCOL 6, issue 4): the AE form and its
validations at the field, grade episodes and corrections, the SAE and SUSAR clocks with
the investigator's signed report, CRS/ICANS assessments feeding one event, the
discrepancy query, the toxicity hold, lab-based suggestions and removal.

Dates are relative to the server's date (T), like the demo: HZ-001 consented on T-25,
had lymphodepletion on T-11..T-9 and infusion 1 on T-6; NB-001 consented on T-5 and has
no infusion given."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from cellstudy.adverse_events import service
from cellstudy.adverse_events.models import AdverseEvent, CrsAssessment, LabSuggestionDismissal
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord, Query, Signature
from tests.helpers import subject_by_number
from tests.helpers import field_errors, flashes

PW = "cellstudy-demo"
T = date.today()
SITE_TODAY = datetime.now(ZoneInfo("Asia/Shanghai")).date()  # both demo sites: "the future" is theirs


def day(n: int) -> str:
    return (T + timedelta(days=n)).isoformat()


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def plain(page: str) -> str:
    """The page's text as a reader sees it: no tags, single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def sid(app, number: str) -> int:
    with app.app_context():
        return subject_by_number(number).id


def ae_post(**overrides) -> dict:
    data = {
        "version": "0",
        "term": "Nausea",
        "onset_date": day(-2),
        "ongoing": "yes",
        "grade": "2",
        "serious": "no",
        "related_nk": "possible",
        "related_ld": "unlikely",
        "expectedness": "expected",
        "action": "none",
        "outcome": "recovering",
        "complete": "1",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def create(session, subject_id, **overrides) -> int:
    response = session.post(f"/subjects/{subject_id}/adverse-events/new", data=ae_post(**overrides))
    assert response.status_code == 302, flashes(text(response)) + re.findall(r'role="alert">(.*?)<', text(response))
    return int(response.headers["Location"].rsplit("/", 1)[1])


def get_ae(app, ae_id) -> AdverseEvent:
    with app.app_context():
        ae = db.session.get(AdverseEvent, ae_id)
        _ = ae.episodes, ae.subject  # load before the session closes
        db.session.expunge_all()
        return ae


@pytest.fixture
def hz(app):
    return sid(app, "HZ-001")


@pytest.fixture
def nb(app):
    return sid(app, "NB-001")


# --- the form -------------------------------------------------------------------------------


def test_a_complete_ae_is_saved_with_its_dictionary_entry_episode_and_audit(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(coord, hz, term="  febrile NEUTROPENIA ", grade="3", related_ld="probable")
    with app.app_context():
        ae = db.session.get(AdverseEvent, ae_id)
        assert (ae.term, ae.soc, ae.meddra_code) == (
            "Febrile neutropenia",
            "Blood and lymphatic system disorders",
            "10016288",
        )
        assert ae.status == "complete" and ae.grade == 3 and ae.related is True and ae.treatment_emergent
        assert [(e.grade, e.start_date.isoformat(), e.end_date) for e in ae.episodes] == [(3, day(-2), None)]
        fields = {
            r.field
            for r in db.session.scalars(
                select(AuditRecord).where(AuditRecord.form == "adverse_event", AuditRecord.form_id == ae_id)
            )
        }
        assert {"term", "onset_date", "grade", "related_nk", "related_ld", "soc", "status"} <= fields
    page = text(coord.get(f"/subjects/{hz}/adverse-events"))
    assert "Febrile neutropenia" in page and f"/adverse-events/{ae_id}" in page


def test_only_the_terms_grades_are_offered_with_their_definitions(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(coord, hz, term="Alopecia", grade="1")
    page = text(coord.get(f"/subjects/{hz}/adverse-events/{ae_id}"))
    grade_select = re.search(r'<select id="grade".*?</select>', page, re.S).group(0)
    assert re.findall(r'value="(\d)"', grade_select) == ["1", "2"]
    assert "Hair loss of <50% of normal" in page
    info = coord.get("/ctcae/term?term=alopecia").get_json()
    assert info["found"] and [g["grade"] for g in info["grades"]] == [1, 2]
    assert coord.get("/ctcae/term?term=nonsense").get_json()["found"] is False


@pytest.mark.parametrize(
    "query, expected",
    [
        ("crs", "Cytokine release syndrome"),
        ("10052015", "Cytokine release syndrome"),
        ("febrile neu", "Febrile neutropenia"),
        ("AST", "Aspartate aminotransferase increased"),
    ],
)
def test_the_term_picker_searches_term_soc_code_and_synonyms(app, login, query, expected):
    hits = login("coord-hz").get(f"/ctcae/search?q={query}").get_json()
    assert hits and hits[0]["term"] == expected


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"term": "Alopecia", "grade": "3"}, "grade", "1, 2"),
        ({"term": "Not a term"}, "term", "CTCAE"),
        ({"term": "Nervous system disorders - Other, specify"}, "verbatim", ""),
        ({"grade": "5", "term": "Sepsis"}, "outcome", ""),
        ({"grade": "5", "term": "Sepsis", "outcome": "fatal", "ongoing": "no"}, "death_date", ""),
        ({"onset_date": (SITE_TODAY + timedelta(days=1)).isoformat()}, "onset_date", "future"),
        ({"onset_date": day(-26)}, "onset_date", "consent"),
        ({"ongoing": "no", "end_date": day(-3)}, "end_date", ""),
        ({"ongoing": "yes", "end_date": day(-1)}, "end_date", ""),
        ({"serious": "yes"}, "serious", ""),
        ({"serious": "yes", "sae_hospitalisation": "yes"}, "awareness_date", ""),
        ({"related_nk": None}, "related_nk", "Required"),
    ],
)
def test_bad_answers_are_refused_at_the_field_and_nothing_is_saved(app, login, hz, overrides, field, message):
    coord = login("coord-hz")
    with app.app_context():
        before = db.session.scalar(select(db.func.count(AdverseEvent.id)))
    response = coord.post(f"/subjects/{hz}/adverse-events/new", data=ae_post(**overrides))
    page = text(response)
    assert response.status_code == 200
    errors = field_errors(page, field)
    assert errors and message in " ".join(errors), (field, errors, flashes(page))
    assert "Nothing was saved" in page
    with app.app_context():
        assert db.session.scalar(select(db.func.count(AdverseEvent.id))) == before


def test_onset_on_the_day_of_consent_is_accepted_and_the_day_before_refused(app, login, hz):
    coord = login("coord-hz")
    create(coord, hz, onset_date=day(-25))
    page = text(coord.post(f"/subjects/{hz}/adverse-events/new", data=ae_post(onset_date=day(-26))))
    assert field_errors(page, "onset_date")


def test_a_grade_5_ae_needs_fatal_outcome_and_death_date(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(
        coord,
        hz,
        term="Sepsis",
        grade="5",
        outcome="fatal",
        ongoing="no",
        end_date=day(-1),
        death_date=day(-1),
        serious="yes",
        sae_death="yes",
        awareness_date=day(-1),
        awareness_time="10:00",
    )
    assert get_ae(app, ae_id).grade == 5


def test_the_dlt_flag_is_offered_only_inside_the_dlt_window(app, login, hz, nb):
    coord = login("coord-nb")
    page = text(coord.get(f"/subjects/{nb}/adverse-events/new"))
    assert "Not offered: no NK-cell infusion given yet" in page
    refused = text(coord.post(f"/subjects/{nb}/adverse-events/new", data=ae_post(onset_date=day(0), dlt="yes")))
    assert field_errors(refused, "dlt")
    coord = login("coord-hz")
    ae_id = create(coord, hz, dlt="yes", grade="3", term="Febrile neutropenia")  # onset T-2, window from T-6
    assert get_ae(app, ae_id).dlt is True
    before = text(coord.post(f"/subjects/{hz}/adverse-events/new", data=ae_post(onset_date=day(-7), dlt="yes")))
    assert "DLT window" in " ".join(field_errors(before, "dlt"))


def test_treatment_emergent_is_computed_from_the_first_lymphodepletion_day(app, login, hz):
    coord = login("coord-hz")
    with app.app_context():
        first_ld = service.first_lymphodepletion_date(subject_by_number("HZ-001"))
    on = create(coord, hz, onset_date=first_ld.isoformat())
    before = create(coord, hz, onset_date=(first_ld - timedelta(days=1)).isoformat())
    assert get_ae(app, on).treatment_emergent is True
    assert get_ae(app, before).treatment_emergent is False


# --- corrections and grade changes ------------------------------------------------------------


def test_a_correction_of_a_complete_ae_needs_a_reason_and_is_audited(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(coord, hz, grade="2")
    url = f"/subjects/{hz}/adverse-events/{ae_id}"
    page = text(coord.post(url, data=ae_post(version="2", grade="1")))
    assert "reason" in " ".join(field_errors(page, "reason")).lower()
    response = coord.post(url, data=ae_post(version="2", grade="1", reason="Transcription error: grade 1 in source"))
    assert response.status_code == 302
    ae = get_ae(app, ae_id)
    assert ae.grade == 1 and [e.grade for e in ae.episodes] == [1]
    with app.app_context():
        episode_id = db.session.get(AdverseEvent, ae_id).episodes[0].id
        rows = db.session.scalars(
            select(AuditRecord).where(
                AuditRecord.form == "ae_grade_episode",
                AuditRecord.form_id == episode_id,
                AuditRecord.action == "update",
            )
        ).all()
        assert [(r.old_value, r.new_value, r.reason) for r in rows] == [
            ("2", "1", "Transcription error: grade 1 in source")
        ]


def test_a_change_of_grade_is_a_new_episode_and_the_worst_grade_is_kept(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(coord, hz, grade="1", term="Diarrhea", onset_date=day(-4))
    url = f"/subjects/{hz}/adverse-events/{ae_id}/grade"
    version = get_ae(app, ae_id).version
    assert coord.post(url, data={"version": version, "new_grade": "3", "change_date": day(-2)}).status_code == 302
    version = get_ae(app, ae_id).version
    coord.post(url, data={"version": version, "new_grade": "2", "change_date": day(-1)})
    ae = get_ae(app, ae_id)
    assert [(e.grade, e.start_date.isoformat(), e.end_date and e.end_date.isoformat()) for e in ae.episodes] == [
        (1, day(-4), day(-2)),
        (3, day(-2), day(-1)),
        (2, day(-1), None),
    ]
    assert ae.grade == 3 and ae.current_grade == 2
    # a change dated before the current grade began is refused
    response = coord.post(
        url, data={"version": ae.version, "new_grade": "1", "change_date": day(-3)}, follow_redirects=True
    )
    assert "was not changed" in text(response) and len(get_ae(app, ae_id).episodes) == 3


def test_a_stale_save_is_refused_and_nothing_is_lost(app, login, hz):
    coord, inv = login("coord-hz"), login("inv-hz")
    ae_id = create(coord, hz, grade="2")
    url = f"/subjects/{hz}/adverse-events/{ae_id}"
    assert (
        inv.post(url, data=ae_post(version="2", comments="Seen on ward round", reason="added comment")).status_code
        == 302
    )
    page = text(coord.post(url, data=ae_post(version="2", grade="1", reason="correction")))
    assert "changed by" in page and "since you opened it" in page
    ae = get_ae(app, ae_id)
    assert ae.grade == 2 and ae.data["comments"] == "Seen on ward round"


def test_removal_is_a_status_with_a_reason_and_lifts_the_hold(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(coord, hz, grade="3", term="Febrile neutropenia", related_nk="probable")
    with app.app_context():
        assert any(e["grade"] == 3 for e in service.open_for_lockouts(subject_by_number("HZ-001")))
    url = f"/subjects/{hz}/adverse-events/{ae_id}/remove"
    assert "Not removed" in text(coord.post(url, data={"version": "2", "reason": ""}, follow_redirects=True))
    coord.post(url, data={"version": "2", "reason": "Entered for the wrong subject"})
    ae = get_ae(app, ae_id)
    assert ae.status == "deleted" and ae.deleted_reason == "Entered for the wrong subject"
    with app.app_context():
        assert not any(e["grade"] == 3 for e in service.open_for_lockouts(subject_by_number("HZ-001")))


# --- the toxicity hold (PROTOCOL 5.2) ------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, held",
    [
        ({"term": "Febrile neutropenia", "grade": "3", "related_nk": "possible"}, True),
        ({"term": "Febrile neutropenia", "grade": "3", "related_nk": "unrelated", "related_ld": "unlikely"}, False),
        (
            {
                "term": "Febrile neutropenia",
                "grade": "3",
                "related_nk": "unrelated",
                "related_ld": None,
                "complete": None,
            },
            True,
        ),
        ({"term": "Pneumonitis", "grade": "2", "related_nk": "definite"}, False),
        (
            {
                "term": "Febrile neutropenia",
                "grade": "3",
                "related_nk": "possible",
                "ongoing": "no",
                "end_date": day(-1),
            },
            False,
        ),
    ],
)
def test_open_aes_feed_the_toxicity_hold(app, login, hz, overrides, held):
    coord = login("coord-hz")
    create(coord, hz, **overrides)
    page = text(coord.get(f"/subjects/{hz}/infusions?proposed={day(1)}"))
    assert ("Toxicity hold" in page.split("Earliest")[0]) == held or ("toxicity_hold" in page) == held


def test_a_crs_of_grade_2_holds_the_next_infusion(app, login, hz):
    coord = login("coord-hz")
    coord.post(
        f"/subjects/{hz}/crs/new",
        data={
            "version": "0",
            "assessment_date": day(0),
            "max_temp_c": "38.9",
            "fever_masked": "no",
            "hypotension": "no_vasopressor",
            "hypoxia": "none",
            "complete": "1",
        },
    )
    with app.app_context():
        from cellstudy.infusions import proposal

        result = proposal.evaluate_proposal(subject_by_number("HZ-001"), T + timedelta(days=1))
        assert "toxicity_hold" in [lockout["code"] for lockout in result["lockouts"]]


# --- SAE and SUSAR ---------------------------------------------------------------------------------


def test_a_serious_ae_starts_the_24_hour_clock_and_the_investigator_reports_it(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(
        coord,
        hz,
        term="Febrile neutropenia",
        grade="3",
        serious="yes",
        sae_hospitalisation="yes",
        awareness_date=day(0),
        awareness_time="00:00",
        related_nk="unlikely",
    )
    ae = get_ae(app, ae_id)
    assert ae.awareness_at is not None
    assert (ae.sae_due_at - ae.awareness_at) == timedelta(hours=24) and not ae.susar
    page = text(coord.get(f"/subjects/{hz}/adverse-events/{ae_id}"))
    assert 'id="sae-clock"' in page and "The investigator submits the SAE report" in page
    assert coord.post(f"/subjects/{hz}/adverse-events/{ae_id}/report/sae", data={"password": PW}).status_code == 403
    inv = login("inv-hz")
    refused = text(
        inv.post(f"/subjects/{hz}/adverse-events/{ae_id}/report/sae", data={"password": "wrong"}, follow_redirects=True)
    )
    assert "Not submitted" in refused and get_ae(app, ae_id).sae_reported_at is None
    inv.post(f"/subjects/{hz}/adverse-events/{ae_id}/report/sae", data={"password": PW})
    ae = get_ae(app, ae_id)
    assert ae.sae_reported_at is not None
    with app.app_context():
        signature = db.session.get(Signature, ae.sae_signature_id)
        assert signature.printed_name == "Dr Wang Lei" and "serious adverse event report" in signature.meaning
        clock = service.clocks(db.session.get(AdverseEvent, ae_id))["sae"]
        assert clock["state"] in ("reported", "reported_late")
    listed = text(inv.get("/saes"))
    assert "Febrile neutropenia" in listed


def test_an_unreported_sae_past_24_hours_is_overdue_on_the_lists(app, login, hz):
    coord = login("coord-hz")
    ae_id = create(
        coord,
        hz,
        term="Pneumonitis",
        grade="3",
        serious="yes",
        sae_hospitalisation="yes",
        awareness_date=day(-2),
        awareness_time="09:00",
    )
    assert "OVERDUE" in text(coord.get(f"/subjects/{hz}/adverse-events/{ae_id}"))
    assert "OVERDUE" in text(coord.get("/saes"))
    assert "Pneumonitis" not in text(login("coord-nb").get("/saes"))  # another site's SAE is not listed


@pytest.mark.parametrize("criteria, days", [({"sae_life_threatening": "yes"}, 7), ({"sae_hospitalisation": "yes"}, 15)])
def test_a_susar_starts_the_expedited_clock(app, login, hz, criteria, days):
    coord = login("coord-hz")
    ae_id = create(
        coord,
        hz,
        term="Pneumonitis",
        grade="4",
        serious="yes",
        awareness_date=day(-1),
        awareness_time="09:00",
        related_nk="probable",
        expectedness="unexpected",
        **criteria,
    )
    ae = get_ae(app, ae_id)
    assert ae.susar and ae.susar_due_at - ae.awareness_at == timedelta(days=days)
    page = text(coord.get(f"/subjects/{hz}/adverse-events/{ae_id}"))
    assert f"expedited report in {days} days" in page


# --- CRS and ICANS ---------------------------------------------------------------------------------


def crs_post(**overrides):
    data = {
        "version": "0",
        "assessment_date": day(0),
        "assessment_time": "10:00",
        "max_temp_c": "39.4",
        "fever_masked": "no",
        "hypotension": "one_vasopressor",
        "hypoxia": "low_flow",
        "complete": "1",
    }
    data.update(overrides)
    return data


def test_a_crs_assessment_is_graded_shows_its_driver_and_opens_the_crs_event(app, login, hz):
    coord = login("coord-hz")
    response = coord.post(f"/subjects/{hz}/crs/new", data=crs_post(assessment_date=day(-1)))
    assert response.status_code == 302
    page = plain(text(coord.get(response.headers["Location"])))
    assert "CRS grade 3" in page and "driven by Hypotension" in page
    with app.app_context():
        record = db.session.scalars(select(CrsAssessment).where(CrsAssessment.grade == 3)).one()
        ae = record.adverse_event
        assert (ae.category, ae.term, ae.grade, ae.computed_grade, ae.onset_date.isoformat()) == (
            "crs",
            "Cytokine release syndrome",
            3,
            3,
            day(-1),
        )
        ae_id = ae.id
    # a later, worse assessment joins the same event and moves its grade course
    coord.post(f"/subjects/{hz}/crs/new", data=crs_post(hypotension="multiple_vasopressors"))
    ae = get_ae(app, ae_id)
    assert ae.grade == 4 and [(e.grade, e.start_date.isoformat()) for e in ae.episodes] == [(3, day(-1)), (4, day(0))]


def test_a_masked_fever_without_temperature_is_grade_1_and_a_missing_temperature_otherwise_is_refused(app, login, hz):
    coord = login("coord-hz")
    ok = coord.post(
        f"/subjects/{hz}/crs/new", data=crs_post(max_temp_c="", fever_masked="yes", hypotension="none", hypoxia="none")
    )
    assert "CRS grade 1" in plain(text(coord.get(ok.headers["Location"])))
    refused = text(coord.post(f"/subjects/{hz}/crs/new", data=crs_post(max_temp_c="")))
    assert "Nothing was saved" in refused


def test_an_entered_grade_that_differs_from_the_computed_one_needs_a_reason_and_raises_a_query(app, login, hz):
    coord = login("coord-hz")
    coord.post(f"/subjects/{hz}/crs/new", data=crs_post(hypotension="no_vasopressor", hypoxia="none"))  # grade 2
    with app.app_context():
        ae = db.session.scalars(
            select(AdverseEvent).where(AdverseEvent.category == "crs", AdverseEvent.end_date.is_(None))
        ).one()
        ae_id, values, version = ae.id, service.values_of(ae), ae.version
    url = f"/subjects/{hz}/adverse-events/{ae_id}"
    post = ae_post(
        version=str(version),
        term="Cytokine release syndrome",
        onset_date=values["onset_date"].isoformat(),
        grade="3",
        complete=None,
        save="1",
    )
    page = text(coord.post(url, data=post))
    assert field_errors(page, "grade_reason")
    assert (
        coord.post(
            url, data={**post, "grade_reason": "Hypotension needed a vasopressor overnight, not charted"}
        ).status_code
        == 302
    )
    with app.app_context():
        query = db.session.scalars(select(Query).where(Query.form_id == ae_id, Query.form == "adverse_event")).one()
        assert query.state == "open" and "differs from grade 2" in query.text and query.origin == "system"
        version = db.session.get(AdverseEvent, ae_id).version
    assert "Open query" in text(coord.get(url))
    coord.post(url, data={**post, "version": str(version), "grade": "2", "grade_reason": ""})
    with app.app_context():
        query = db.session.scalars(select(Query).where(Query.form_id == ae_id, Query.form == "adverse_event")).one()
        assert query.state == "closed" and "now equals" in query.close_note
        # written the one way queries are (records.queries): the thread and the trail have
        # both steps, by the system, not only the query row's fields
        assert [(m.kind, m.user_id) for m in query.messages] == [("open", None), ("close", None)]
        trail = db.session.execute(
            select(AuditRecord.action, AuditRecord.username)
            .where(AuditRecord.form == "adverse_event", AuditRecord.form_id == ae_id)
            .where(AuditRecord.action.like("query_%"))
            .order_by(AuditRecord.id)
        ).all()
        assert trail == [("query_open", "system"), ("query_close", "system")]


def test_the_ice_score_is_summed_by_the_app_and_drives_the_icans_grade(app, login, hz):
    from cellstudy.adverse_events.fields import ICE_ITEMS

    coord = login("coord-hz")
    items = {name: "yes" for name, _ in ICE_ITEMS}
    for name, _ in ICE_ITEMS[:5]:  # 5 of 10 wrong: ICE 5 -> grade 2
        items[name] = "no"
    response = coord.post(
        f"/subjects/{hz}/icans/new",
        data={
            "version": "0",
            "assessment_date": day(0),
            **items,
            "consciousness": "awakens_spontaneously",
            "seizure": "none",
            "motor_weakness": "none",
            "cerebral_edema": "none",
            "complete": "1",
        },
    )
    page = plain(text(coord.get(response.headers["Location"])))
    assert "ICANS grade 2" in page and "ICE score 5/10" in page and "driven by ICE score" in page
    with app.app_context():
        ae = db.session.scalars(select(AdverseEvent).where(AdverseEvent.category == "icans")).one()
        assert ae.grade == 2 and ae.verbatim.startswith("Immune effector cell-associated neurotoxicity")


# --- lab-based suggestions ---------------------------------------------------------------------------------


def test_lab_values_suggest_aes_that_can_be_confirmed_or_dismissed(app, login, hz):
    coord = login("coord-hz")
    page = text(coord.get(f"/subjects/{hz}/adverse-events"))
    section = page.split('id="lab-suggestions"')[1].split("</section>")[0]
    assert "Neutrophil count decreased, grade 4" in section and "Platelet count decreased, grade 3" in section
    confirm = re.search(r'href="([^"]*adverse-events/new\?[^"]*Neutrophil[^"]*)"', section).group(1)
    form = text(coord.get(html.unescape(confirm)))
    assert 'value="Neutrophil count decreased"' in form and re.search(r'<option selected value="4">', form)
    with app.app_context():
        visit_id = next(
            s for s in service.lab_suggestions(subject_by_number("HZ-001")) if s["term"] == "Platelet count decreased"
        )["visit_id"]
    refused = text(
        coord.post(
            f"/subjects/{hz}/lab-suggestions/dismiss",
            data={"visit_id": visit_id, "lab": "platelets", "grade": 3, "reason": ""},
            follow_redirects=True,
        )
    )
    assert "Not dismissed" in refused
    coord.post(
        f"/subjects/{hz}/lab-suggestions/dismiss",
        data={"visit_id": visit_id, "lab": "platelets", "grade": 3, "reason": "Known, transfusion-dependent"},
    )
    page = text(coord.get(f"/subjects/{hz}/adverse-events"))
    assert "Platelet count decreased, grade 3" not in page
    with app.app_context():
        assert db.session.scalars(select(LabSuggestionDismissal)).one().reason == "Known, transfusion-dependent"
        assert db.session.scalars(select(AuditRecord).where(AuditRecord.action == "dismiss")).one().reason
    # an open AE of the term covers the suggestion
    create(coord, hz, term="Neutrophil count decreased", grade="4")
    assert (
        "Neutrophil count decreased, grade 4"
        not in text(coord.get(f"/subjects/{hz}/adverse-events")).split("ae-table")[0]
    )


def test_monitors_read_but_cannot_record(app, login, hz):
    monitor = login("monitor-hz")
    assert monitor.get(f"/subjects/{hz}/adverse-events").status_code == 200
    assert monitor.post(f"/subjects/{hz}/adverse-events/new", data=ae_post()).status_code == 403
    assert monitor.post(f"/subjects/{hz}/crs/new", data=crs_post()).status_code == 403


def test_the_site_dashboard_and_subject_page_show_saes_due(app, login, hz):
    """The demo's febrile neutropenia SAE of HZ-001 has no report yet: overdue on the
    HZ dashboard and the subject page, absent from NB's dashboard."""
    home = text(login("coord-hz").get("/"))
    panel = home.split('id="sae-dashboard"')[1].split("</section>")[0]
    assert "Febrile neutropenia" in panel and "OVERDUE" in panel
    assert "Febrile neutropenia" not in text(login("coord-nb").get("/"))
    overview = text(login("monitor-hz").get(f"/subjects/{hz}"))
    assert 'id="adverse-events"' in overview and "OVERDUE" in overview and "lab-based AE suggestion" in overview
