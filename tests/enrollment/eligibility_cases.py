"""Shared test data for the eligibility checker: a fully eligible screening case and
the protocol's list of criterion codes (PROTOCOL 4.3, in table order)."""

from datetime import date

CODES = (
    "age",
    "rr_aml",
    "target_antigen",
    "ecog",
    "life_expectancy",
    "renal",
    "bilirubin",
    "transaminases",
    "coagulation",
    "pregnancy_test",
    "dsa",
    "consent",
    "allergy",
    "washout_steroid",
    "washout_antitumor",
    "washout_radiotherapy",
    "washout_dli",
    "washout_intrathecal",
    "washout_cell_therapy",
    "vaccine",
    "major_surgery",
    "prior_allo_hsct",
    "cns_leukemia",
    "apl",
    "other_malignancy",
    "cns_disease",
    "autoimmune",
    "cardiovascular",
    "pulmonary",
    "infection",
    "substance_abuse",
    "prior_toxicity",
    "pregnancy_breastfeeding",
    "investigator_concern",
)

EXPOSURE_CODES = (
    "washout_steroid",
    "washout_antitumor",
    "washout_radiotherapy",
    "washout_dli",
    "washout_intrathecal",
    "washout_cell_therapy",
    "vaccine",
    "major_surgery",
)

# category -> criterion code (PROTOCOL 4.4); diagnostic_biopsy never blocks.
CATEGORY_CODE = {
    "systemic_steroid": "washout_steroid",
    "systemic_antitumor": "washout_antitumor",
    "radiotherapy": "washout_radiotherapy",
    "donor_lymphocyte_infusion": "washout_dli",
    "intrathecal": "washout_intrathecal",
    "gene_modified_cell_therapy": "washout_cell_therapy",
    "vaccine": "vaccine",
    "major_surgery": "major_surgery",
}

SCREENING = date(2024, 5, 1)
FIRST_INFUSION = date(2024, 5, 20)


def eligible_case(**changes):
    """A woman of childbearing potential, 45 years old, who meets every criterion:
    both renal limbs pass, both antigens are positive, the test is negative."""
    case = {
        "screening_date": "2024-05-01",
        "first_infusion_date": "2024-05-20",
        "date_of_birth": "1979-01-15",
        "sex": "F",
        "weight_kg": 60,
        "rr_aml_confirmed": True,
        "apl": False,
        "cll1_positive": True,
        "cd33_positive": True,
        "ecog": 1,
        "life_expectancy_gt_12_weeks": True,
        "creatinine": 70,
        "creatinine_uln": 90,
        "creatinine_unit": "umol/L",
        "total_bilirubin": 10,
        "total_bilirubin_uln": 21,
        "alt": 20,
        "alt_uln": 40,
        "ast": 25,
        "ast_uln": 40,
        "inr": 1.0,
        "inr_uln": 1.2,
        "aptt": 30,
        "aptt_uln": 40,
        "childbearing_potential": True,
        "pregnancy_test": "negative",
        "dsa_mfi": 500,
        "icf_signed_date": "2024-04-28",
        "allergy_to_study_drugs": False,
        "prior_therapies": [],
        "prior_allo_hsct": False,
        "vaccination_expected_during_study": False,
        "active_cns_leukemia": False,
        "other_malignancy_history": False,
        "cns_disease_history": False,
        "active_autoimmune_disease": False,
        "qtc_ms": 430,
        "lvef_percent": 60,
        "nyha_class": 1,
        "severe_arrhythmia": False,
        "cv_event_within_6_months": False,
        "uncontrolled_hypertension": False,
        "spo2_percent": 97,
        "active_pulmonary_infection": False,
        "pulmonary_embolism": False,
        "copd": False,
        "interstitial_lung_disease": False,
        "uncontrolled_infection": False,
        "hiv_positive": False,
        "active_hbv": False,
        "active_hcv": False,
        "substance_abuse_history": False,
        "max_unresolved_prior_toxicity_grade": 1,
        "pregnant_or_breastfeeding": False,
        "investigator_concern": False,
    }
    case.update(changes)
    return case


def exposure(category, last_date, **extra):
    item = {"category": category, "last_date": last_date, "name": f"test {category}"}
    item.update(extra)
    return item


def statuses(result):
    return {code: entry["status"] for code, entry in result["criteria"].items()}
