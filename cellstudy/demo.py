"""The demo study of PROTOCOL 2 ("Demo study"): loaded once by `make run`, through the
same services as the web forms, so its audit trail is real. Never in production."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from .auth import service as auth
from .auth.models import Site, User
from .enrollment import service as enrollment
from .extensions import db
from .records.transaction import transaction
from .timeutil import utcnow
from .infusions.proposal import first_infusion_date
from .infusions.scheduling import schedule_infusion
from .enrollment.models import Subject
from .monitoring import service as monitoring
from .adverse_events import service as aes
from .adverse_events.fields import CRS_FIELDS
from .adverse_events.fields import ICANS_FIELDS, ICE_ITEMS
from .infusions.dose_levels import proposed_dose_level
from .infusions.administration import save_infusion
from .infusions.lymphodepletion import save_lymphodepletion
from .infusions.visits import save_visit

DEMO_PASSWORD = "cellstudy-demo"
DEMO_SITES = (
    ("HZ", "Hangzhou — First Affiliated Hospital, Zhejiang University", "Asia/Shanghai"),
    ("NB", "Ningbo (fictional second site)", "Asia/Shanghai"),
)
DEMO_USERS = (
    ("coord-hz", "Lin Mei", "coordinator", ("HZ",)),
    ("coord-nb", "Chen Yu", "coordinator", ("NB",)),
    ("inv-hz", "Dr Wang Lei", "investigator", ("HZ",)),
    ("inv-nb", "Dr Zhao Qing", "investigator", ("NB",)),
    ("monitor-hz", "Sara Keller", "monitor", ("HZ",)),
    ("dm", "Omar Haddad", "data_manager", ()),
    ("admin", "System Administrator", "admin", ()),
)


def eligible_values(today: date | None = None) -> dict:
    """A complete screening form that passes every criterion (values as the form gives them)."""
    today = today or utcnow().astimezone().date()  # the server's date, by the one clock
    return {
        "screening_date": today - timedelta(days=3),
        "first_infusion_date": today + timedelta(days=14),
        "icf_signed_date": today - timedelta(days=5),
        "date_of_birth": date(1975, 4, 12),
        "sex": "F",
        "weight_kg": Decimal("62.5"),
        "childbearing_potential": True,
        "pregnancy_test": "negative",
        "pregnant_or_breastfeeding": False,
        "rr_aml_confirmed": True,
        "apl": False,
        "cll1_positive": True,
        "cd33_positive": True,
        "active_cns_leukemia": False,
        "ecog": 1,
        "life_expectancy_gt_12_weeks": True,
        "dsa_mfi": Decimal("450"),
        "max_unresolved_prior_toxicity_grade": 1,
        "creatinine_unit": "umol/L",
        "creatinine": Decimal("72"),
        "creatinine_uln": Decimal("97"),
        "total_bilirubin": Decimal("14"),
        "total_bilirubin_uln": Decimal("21"),
        "alt": Decimal("38"),
        "alt_uln": Decimal("40"),
        "ast": Decimal("31"),
        "ast_uln": Decimal("40"),
        "inr": Decimal("1.1"),
        "inr_uln": Decimal("1.2"),
        "aptt": Decimal("33"),
        "aptt_uln": Decimal("40"),
        "qtc_ms": Decimal("432"),
        "lvef_percent": Decimal("61"),
        "nyha_class": 1,
        "severe_arrhythmia": False,
        "cv_event_within_6_months": False,
        "uncontrolled_hypertension": False,
        "spo2_percent": Decimal("97"),
        "active_pulmonary_infection": False,
        "pulmonary_embolism": False,
        "copd": False,
        "interstitial_lung_disease": False,
        "allergy_to_study_drugs": False,
        "prior_allo_hsct": False,
        "other_malignancy_history": False,
        "cns_disease_history": False,
        "active_autoimmune_disease": False,
        "uncontrolled_infection": False,
        "hiv_positive": False,
        "active_hbv": False,
        "active_hcv": False,
        "substance_abuse_history": False,
        "vaccination_expected_during_study": False,
        "investigator_concern": False,
    }


def _prior_therapy(today: date) -> dict:
    return {
        "category": "systemic_antitumor",
        "name": "Venetoclax + azacitidine",
        "start_date": today - timedelta(days=90),
        "last_date": today - timedelta(days=40),
        "half_life_days": None,
        "physiological_replacement": False,
        "indication": "AML, second line",
    }


def make_subject(site: Site, user: User, stage: str, today: date | None = None, **overrides: Any) -> Subject:
    """A subject at `stage`: draft, complete, enrolled or screen_failed, via the real services."""
    today = today or utcnow().astimezone().date()  # the server's date, by the one clock
    subject = enrollment.register_subject(site, user=user)
    screening = subject.current_screening
    values = {**eligible_values(today), **overrides}
    if stage == "draft":
        keep = ("screening_date", "icf_signed_date", "date_of_birth", "sex", "weight_kg", *overrides)
        values = {k: values[k] for k in keep}
    enrollment.add_exposure(subject, _prior_therapy(today), user=user)
    enrollment.save_screening(
        screening, values, user=user, expected_version=screening.version, reason=None, complete=stage != "draft"
    )
    return subject


def load_demo(today: date | None = None) -> bool:
    """Create the demo study; False when it is already there (it is loaded only once)."""
    if db.session.execute(select(Site.id).limit(1)).first():
        return False
    today = today or utcnow().astimezone().date()  # the server's date, by the one clock
    sites = {code: auth.create_site(code, name, tz) for code, name, tz in DEMO_SITES}
    users = {u[0]: auth.create_user(u[0], u[1], u[2], DEMO_PASSWORD, list(u[3])) for u in DEMO_USERS}
    for code in ("HZ", "NB"):
        coord, inv = users[f"coord-{code.lower()}"], users[f"inv-{code.lower()}"]
        site = sites[code]
        if code == "HZ":  # on treatment: first infusion 6 days ago, the second scheduled
            subject = make_subject(site, coord, "complete", today - timedelta(days=20))
            _enrol(subject, inv, on=today - timedelta(days=22))
            _treat(subject, coord, today)
            make_subject(site, coord, "complete", today)  # eligible, awaiting the investigator
        else:  # enrolled, first infusion scheduled on the planned date
            subject = make_subject(site, coord, "complete", today)
            _enrol(subject, inv)

            schedule_infusion(subject, first_infusion_date(subject), user=coord)
        _adverse_events(subject, coord, today)
        failed = make_subject(
            site,
            coord,
            "complete",
            today,
            **({"alt": Decimal("130")} if code == "HZ" else {"dsa_mfi": Decimal("3500")}),
        )
        enrollment.screen_fail(failed, user=coord, note="Demo: excluded at screening.")
        make_subject(site, coord, "complete", today)  # eligible, awaiting the investigator
        make_subject(site, coord, "draft", today)
        make_subject(site, coord, "draft", today, ecog=2)
    rescreened = make_subject(sites["HZ"], users["coord-hz"], "complete", today, ecog=2)
    enrollment.screen_fail(rescreened, user=users["coord-hz"])
    enrollment.rescreen(rescreened, user=users["coord-hz"], reason="Performance status improved after supportive care.")
    _monitoring(users)
    return True


def _monitoring(users) -> None:
    """Issue 6: a few queries (open, answered, a missing-data one) and verified forms, so the
    monitoring pages have something to show."""
    hz = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
    nb = db.session.execute(select(Subject).where(Subject.subject_number == "NB-001")).scalar_one()
    monitor, dm = users["monitor-hz"], users["dm"]
    fn = next(ae for ae in hz.adverse_events if ae.term == "Febrile neutropenia")
    nausea = next(ae for ae in hz.adverse_events if ae.term == "Nausea")
    monitoring.open_query(
        hz,
        user=monitor,
        form="adverse_event",
        form_id=fn.id,
        field="awareness_time",
        text="The hospital admission note says 08:45: please check the awareness time.",
    )
    answered = monitoring.open_query(
        hz,
        user=monitor,
        form="adverse_event",
        form_id=nausea.id,
        field="related_ld",
        text="Attribution to lymphodepletion is not recorded: please assess it.",
    )
    monitoring.act(
        answered,
        "answer",
        user=users["inv-hz"],
        text="Assessed with the investigator: unlikely; the form will be updated at the next visit.",
    )
    monitoring.open_query(
        hz,
        user=monitor,
        form="dlt_assessment",
        form_id=None,
        field=None,
        text="Missing data: the DLT assessment is due at the end of the DLT window.",
    )
    monitoring.open_query(
        nb,
        user=dm,
        form="adverse_event",
        form_id=nb.adverse_events[0].id,
        field="grade",
        text="Headache grade 1 with paracetamol taken: please confirm the grade.",
    )
    monitoring.verify(hz.infusions[0], user=monitor)
    for visit in hz.visits:
        if visit.status == "complete":
            monitoring.verify(visit, user=monitor)
    monitoring.verify(fn, user=monitor, fields=["term", "onset_date", "grade"])


def _adverse_events(subject, user, today: date) -> None:
    """HZ-001: a grade 1 CRS after infusion 1 (two assessments, resolved), a febrile
    neutropenia SAE (resolved, its report still due: the SAE list has something to show)
    and ongoing nausea; its D1/D3 labs leave lab-based suggestions. NB-001: a headache
    before treatment. Nothing open holds HZ-001's next infusion (PROTOCOL 5.2)."""

    def ae(values, complete=True):
        base = {
            "ongoing": None,
            "serious": False,
            "related_nk": "unlikely",
            "related_ld": "unlikely",
            "expectedness": "expected",
            "action": "none",
            "outcome": "recovered",
        }
        aes.save_ae(
            subject,
            aes.new_ae(subject),
            {**base, **values},
            user=user,
            expected_version=0,
            reason=None,
            complete=complete,
            today=today,
        )

    def baseline(when):  # the pre-infusion CRS and ICANS (ICE) baseline: grade 0

        for kind, specs, values in (
            (
                "crs",
                CRS_FIELDS,
                {"max_temp_c": Decimal("36.7"), "fever_masked": False, "hypotension": "none", "hypoxia": "none"},
            ),
            (
                "icans",
                ICANS_FIELDS,
                {
                    **{name: True for name, _ in ICE_ITEMS},
                    "consciousness": "normal",
                    "seizure": "none",
                    "motor_weakness": "none",
                    "cerebral_edema": "none",
                },
            ),
        ):
            aes.save_assessment(
                subject,
                aes.new_assessment(subject, kind),
                kind,
                {"assessment_date": when, "assessment_time": "09:00", **values},
                user=user,
                expected_version=0,
                reason=None,
                complete=True,
                today=today,
                specs=specs,
            )

    if subject.site.code != "HZ":
        baseline(today)
        ae(
            {
                "term": "Headache",
                "onset_date": today,
                "ongoing": True,
                "grade": "1",
                "outcome": "not_recovered",
                "related_nk": None,
                "related_ld": None,
                "action": None,
                "expectedness": None,
            },
            complete=False,
        )
        return
    first = today - timedelta(days=6)
    baseline(first - timedelta(days=1))
    for when, temp in ((first + timedelta(days=1), "38.6"), (first + timedelta(days=2), "37.4")):
        record = aes.new_assessment(subject, "crs")
        aes.save_assessment(
            subject,
            record,
            "crs",
            {
                "assessment_date": when,
                "assessment_time": "14:00",
                "max_temp_c": Decimal(temp),
                "fever_masked": False,
                "hypotension": "none",
                "hypoxia": "none",
            },
            user=user,
            expected_version=0,
            reason=None,
            complete=True,
            today=today,
            specs=CRS_FIELDS,
        )
    crs = subject.adverse_events[-1]
    aes.save_ae(
        subject,
        crs,
        {
            **aes.values_of(crs),
            "ongoing": False,
            "end_date": first + timedelta(days=2),
            "serious": False,
            "related_nk": "probable",
            "related_ld": "unlikely",
            "expectedness": "expected",
            "action": "none",
            "outcome": "recovered",
        },
        user=user,
        expected_version=crs.version,
        reason=None,
        complete=True,
        today=today,
    )
    ae(
        {
            "term": "Febrile neutropenia",
            "onset_date": first + timedelta(days=2),
            "end_date": first + timedelta(days=4),
            "ongoing": False,
            "grade": "3",
            "serious": True,
            "sae_hospitalisation": True,
            "awareness_date": first + timedelta(days=2),
            "awareness_time": "09:30",
            "related_nk": "possible",
            "related_ld": "probable",
            "expectedness": "expected",
            "action": "delayed",
            "outcome": "recovered",
        }
    )
    ae(
        {
            "term": "Nausea",
            "onset_date": first,
            "ongoing": True,
            "grade": "1",
            "related_nk": "possible",
            "outcome": "recovering",
        }
    )


def _enrol(subject, investigator, on: date | None = None) -> None:
    """Enrol at the proposed dose level. `on` back-dates the enrolment of a subject whose
    treatment the demo places in the past (demo data only: real enrolments are dated
    by the signature)."""
    from datetime import datetime, time, timezone

    level, _why = proposed_dose_level()
    decision = enrollment.enrol(
        subject,
        user=investigator,
        password=DEMO_PASSWORD,
        screening_version=subject.current_screening.version,
        dose_level=level,
    )
    if on is not None:
        stamp = datetime.combine(on, time(2, 0), tzinfo=timezone.utc)
        with transaction():
            subject.enrolled_at = decision.decided_at = decision.signature.signed_at = stamp


def _treat(subject, user, today: date) -> None:
    """Lymphodepletion done, infusion 1 given, D1/D3 visits done, infusion 2 scheduled."""
    first = first_infusion_date(subject)
    infusion = schedule_infusion(subject, first, user=user)
    for day in subject.lymphodepletion_days:
        save_lymphodepletion(
            day,
            {
                "administration_date": day.planned_date,
                "height_cm": Decimal("165"),
                "weight_kg": Decimal("62.5"),
                "fludarabine_mg_m2": Decimal("30"),
                "fludarabine_mg": Decimal("51"),
                "cyclophosphamide_mg_m2": Decimal("300"),
                "cyclophosphamide_mg": Decimal("510"),
                "start_time": "09:00",
                "stop_time": "11:30",
            },
            user=user,
            expected_version=day.version,
            reason=None,
            complete=True,
            today=today,
        )
    vitals = {
        f"{p}_{k}": v
        for p in ("pre", "during", "post")
        for k, v in (("temp_c", Decimal("36.8")), ("hr", 78), ("sbp", 122), ("dbp", 76), ("spo2", Decimal("98")))
    }
    save_infusion(
        infusion,
        {
            "administration_date": first,
            "start_time": "10:05",
            "stop_time": "10:35",
            "product_lot": "NK-CLL1-24-017",
            "viability_percent": Decimal("93.5"),
            "weight_kg": Decimal("62.5"),
            "planned_cells": 100_000_000,
            "actual_cells": 98_000_000,
            "premedication": "Paracetamol 500 mg PO, chlorphenamine 4 mg IV",
            "infusion_reaction": False,
            **vitals,
        },
        user=user,
        expected_version=infusion.version,
        reason=None,
        complete=True,
        today=today,
    )
    for visit in subject.visits:
        if visit.code in ("D1", "D3"):
            save_visit(
                visit,
                {
                    "visit_date": visit.target_date,
                    "temp_c": Decimal("37.1"),
                    "hr": 80,
                    "sbp": 118,
                    "dbp": 72,
                    "spo2": Decimal("97"),
                    "ecog": 1,
                    "anc": Decimal("0.4"),
                    "platelets": Decimal("38"),
                    "response": "not_assessed",
                },
                user=user,
                expected_version=visit.version,
                reason=None,
                complete=True,
                consent=None,
            )
    schedule_infusion(subject, first + timedelta(days=7), user=user)
