"""The demo study of PROTOCOL 2 ("Demo study"): loaded once by `make run`, through the
same services as the web forms, so its audit trail is real. Never in production."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import select

from .auth import service as auth
from .auth.models import Site, User
from .enrollment import service as enrollment
from .extensions import db

DEMO_PASSWORD = "cellstudy-demo"
DEMO_SITES = (("HZ", "Hangzhou — First Affiliated Hospital, Zhejiang University", "Asia/Shanghai"),
              ("NB", "Ningbo (fictional second site)", "Asia/Shanghai"))
DEMO_USERS = (
    ("coord-hz", "Lin Mei (coordinator)", "coordinator", ("HZ",)),
    ("coord-nb", "Chen Yu (coordinator)", "coordinator", ("NB",)),
    ("inv-hz", "Dr Wang Lei", "investigator", ("HZ",)),
    ("inv-nb", "Dr Zhao Qing", "investigator", ("NB",)),
    ("monitor-hz", "Sara Keller (monitor)", "monitor", ("HZ",)),
    ("dm", "Omar Haddad (data manager)", "data_manager", ()),
    ("admin", "System Administrator", "admin", ()),
)


def eligible_values(today: date | None = None) -> dict:
    """A complete screening form that passes every criterion (values as the form gives them)."""
    today = today or date.today()
    return {
        "screening_date": today - timedelta(days=3), "first_infusion_date": today + timedelta(days=14),
        "icf_signed_date": today - timedelta(days=5), "date_of_birth": date(1975, 4, 12), "sex": "F",
        "weight_kg": Decimal("62.5"), "childbearing_potential": True, "pregnancy_test": "negative",
        "pregnant_or_breastfeeding": False, "rr_aml_confirmed": True, "apl": False, "cll1_positive": True,
        "cd33_positive": True, "active_cns_leukemia": False, "ecog": 1, "life_expectancy_gt_12_weeks": True,
        "dsa_mfi": Decimal("450"), "max_unresolved_prior_toxicity_grade": 1, "creatinine_unit": "umol/L",
        "creatinine": Decimal("72"), "creatinine_uln": Decimal("97"), "total_bilirubin": Decimal("14"),
        "total_bilirubin_uln": Decimal("21"), "alt": Decimal("38"), "alt_uln": Decimal("40"),
        "ast": Decimal("31"), "ast_uln": Decimal("40"), "inr": Decimal("1.1"), "inr_uln": Decimal("1.2"),
        "aptt": Decimal("33"), "aptt_uln": Decimal("40"), "qtc_ms": Decimal("432"), "lvef_percent": Decimal("61"),
        "nyha_class": 1, "severe_arrhythmia": False, "cv_event_within_6_months": False,
        "uncontrolled_hypertension": False, "spo2_percent": Decimal("97"), "active_pulmonary_infection": False,
        "pulmonary_embolism": False, "copd": False, "interstitial_lung_disease": False,
        "allergy_to_study_drugs": False, "prior_allo_hsct": False, "other_malignancy_history": False,
        "cns_disease_history": False, "active_autoimmune_disease": False, "uncontrolled_infection": False,
        "hiv_positive": False, "active_hbv": False, "active_hcv": False, "substance_abuse_history": False,
        "vaccination_expected_during_study": False, "investigator_concern": False,
    }


def _prior_therapy(today: date) -> dict:
    return {"category": "systemic_antitumor", "name": "Venetoclax + azacitidine", "start_date": today - timedelta(days=90),
            "last_date": today - timedelta(days=40), "half_life_days": None, "physiological_replacement": False,
            "indication": "AML, second line"}


def make_subject(site: Site, user: User, stage: str, today: date | None = None, **overrides):
    """A subject at `stage`: draft, complete, enrolled or screen_failed, via the real services."""
    today = today or date.today()
    subject = enrollment.register_subject(site, user=user)
    screening = subject.current_screening
    values = {**eligible_values(today), **overrides}
    if stage == "draft":
        keep = ("screening_date", "icf_signed_date", "date_of_birth", "sex", "weight_kg", *overrides)
        values = {k: values[k] for k in keep}
    enrollment.add_exposure(subject, _prior_therapy(today), user=user)
    enrollment.save_screening(screening, values, user=user, expected_version=screening.version,
                              reason=None, complete=stage != "draft")
    return subject


def load_demo(today: date | None = None) -> bool:
    """Create the demo study; False when it is already there (it is loaded only once)."""
    if db.session.execute(select(Site.id).limit(1)).first():
        return False
    today = today or date.today()
    sites = {code: auth.create_site(code, name, tz) for code, name, tz in DEMO_SITES}
    users = {u[0]: auth.create_user(u[0], u[1], u[2], DEMO_PASSWORD, list(u[3])) for u in DEMO_USERS}
    for code in ("HZ", "NB"):
        coord, inv = users[f"coord-{code.lower()}"], users[f"inv-{code.lower()}"]
        site = sites[code]
        for _ in range(2 if code == "HZ" else 1):
            subject = make_subject(site, coord, "complete", today)
            enrollment.enrol(subject, user=inv, password=DEMO_PASSWORD,
                             screening_version=subject.current_screening.version)
        failed = make_subject(site, coord, "complete", today,
                              **({"alt": Decimal("130")} if code == "HZ" else {"dsa_mfi": Decimal("3500")}))
        enrollment.screen_fail(failed, user=coord, note="Demo: excluded at screening.")
        make_subject(site, coord, "complete", today)  # eligible, awaiting the investigator
        make_subject(site, coord, "draft", today)
        make_subject(site, coord, "draft", today, ecog=2)
    rescreened = make_subject(sites["HZ"], users["coord-hz"], "complete", today, ecog=2)
    enrollment.screen_fail(rescreened, user=users["coord-hz"])
    enrollment.rescreen(rescreened, user=users["coord-hz"], reason="Performance status improved after supportive care.")
    return True
