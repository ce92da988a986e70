"""The screening fields of PROTOCOL 4.2, specified once.

Pure data. The eligibility checker validates its input from these specs and the web
form is generated from them, so a label, range or choice list changes in one place.

``prior_therapies`` is a repeating log of exposures, not a ``FieldSpec``: its columns
are ``EXPOSURE_FIELDS`` and its categories ``EXPOSURE_CATEGORIES`` (PROTOCOL 4.4).
"""

from __future__ import annotations

from ..registry.fields import FieldSpec


DEMOGRAPHICS = "Demographics & consent"
DISEASE = "Disease"
LABORATORY = "Laboratory"
ORGAN_FUNCTION = "Organ function"
MEDICAL_HISTORY = "Medical history"
PRIOR_THERAPIES = "Prior therapies"

SECTIONS: tuple[str, ...] = (
    DEMOGRAPHICS,
    DISEASE,
    LABORATORY,
    ORGAN_FUNCTION,
    MEDICAL_HISTORY,
    PRIOR_THERAPIES,
)


def _date(name, label, section, help=None):
    return FieldSpec(name, label, "date", section, help=help)


def _yes_no(name, label, section, help=None, female_only=False):
    return FieldSpec(name, label, "bool", section, help=help, female_only=female_only)


def _number(name, label, section, unit=None, help=None, max=None, positive=False):
    return FieldSpec(name, label, "number", section, unit=unit, help=help, min=0, max=max, positive=positive)


def _lab(name, label, unit=None, help=None):
    """A lab value and its upper limit of normal (the ULN may not be zero)."""
    return (
        _number(name, label, LABORATORY, unit=unit, help=help),
        _number(
            f"{name}_uln",
            f"{label} upper limit of normal",
            LABORATORY,
            unit=unit,
            help="The reporting laboratory's ULN, in the same unit as the value.",
            positive=True,
        ),
    )


SAME_UNIT = "In the unit chosen above; the ULN must be in the same unit."

SCREENING_FIELDS: tuple[FieldSpec, ...] = (
    # --- Demographics & consent ---
    _date("screening_date", "Screening date", DEMOGRAPHICS, "Date the eligibility is assessed."),
    FieldSpec(
        "first_infusion_date",
        "Planned first NK infusion date",
        "date",
        DEMOGRAPHICS,
        help="Washouts count back from this date.",
        future=True,
    ),
    _date("icf_signed_date", "Date informed consent signed", DEMOGRAPHICS, "Must be on or before the screening date."),
    _date("date_of_birth", "Date of birth", DEMOGRAPHICS),
    FieldSpec("sex", "Sex", "choice", DEMOGRAPHICS, choices=(("F", "Female"), ("M", "Male"))),
    _number("weight_kg", "Weight", DEMOGRAPHICS, unit="kg", help="Actual body weight, used for Cockcroft-Gault."),
    _yes_no("childbearing_potential", "Of childbearing potential", DEMOGRAPHICS, female_only=True),
    FieldSpec(
        "pregnancy_test",
        "Serum pregnancy test",
        "choice",
        DEMOGRAPHICS,
        choices=(("negative", "Negative"), ("positive", "Positive"), ("not_done", "Not done")),
        help="Required for females of childbearing potential.",
        female_only=True,
    ),
    _yes_no("pregnant_or_breastfeeding", "Pregnant or breastfeeding", DEMOGRAPHICS, "Answer for every subject."),
    # --- Disease ---
    _yes_no("rr_aml_confirmed", "Relapsed/refractory AML confirmed", DISEASE),
    _yes_no("apl", "Acute promyelocytic leukemia (APL)", DISEASE),
    _yes_no("cll1_positive", "CLL1 positive on AML blasts", DISEASE),
    _yes_no("cd33_positive", "CD33 positive on AML blasts", DISEASE),
    _yes_no("active_cns_leukemia", "Active CNS leukemia", DISEASE),
    FieldSpec("ecog", "ECOG performance status", "int", DISEASE, min=0, max=5),
    _yes_no("life_expectancy_gt_12_weeks", "Life expectancy > 12 weeks", DISEASE, "Investigator's judgement."),
    _number(
        "dsa_mfi",
        "DSA highest MFI",
        DISEASE,
        help="Highest mean fluorescence intensity of any donor-specific antibody.",
    ),
    FieldSpec(
        "max_unresolved_prior_toxicity_grade",
        "Worst unresolved prior-therapy toxicity grade",
        "int",
        DISEASE,
        min=0,
        max=5,
        help="CTCAE 5.0 grade; 0 if all toxicities have resolved.",
    ),
    # --- Laboratory ---
    FieldSpec(
        "creatinine_unit",
        "Creatinine unit",
        "choice",
        LABORATORY,
        choices=(("umol/L", "µmol/L"), ("mg/dL", "mg/dL")),
        help="Unit of the creatinine value and its ULN.",
    ),
    _number("creatinine", "Serum creatinine", LABORATORY, help=SAME_UNIT, positive=True),
    _number("creatinine_uln", "Serum creatinine upper limit of normal", LABORATORY, help=SAME_UNIT, positive=True),
    *_lab("total_bilirubin", "Total bilirubin", help="Any unit, the same for the value and its ULN."),
    *_lab("alt", "ALT", unit="U/L"),
    *_lab("ast", "AST", unit="U/L"),
    *_lab("inr", "INR"),
    *_lab("aptt", "aPTT", unit="s"),
    # --- Organ function ---
    _number("qtc_ms", "QTc", ORGAN_FUNCTION, unit="ms"),
    _number("lvef_percent", "LVEF", ORGAN_FUNCTION, unit="%", max=100),
    FieldSpec("nyha_class", "NYHA class", "int", ORGAN_FUNCTION, min=1, max=4, help="1 = I ... 4 = IV."),
    _yes_no("severe_arrhythmia", "Severe arrhythmia or conduction abnormality", ORGAN_FUNCTION),
    _yes_no(
        "cv_event_within_6_months",
        "Cardio/cerebrovascular event within 6 months",
        ORGAN_FUNCTION,
        "ACS, CHF, aortic dissection, stroke or another grade >= 3 event.",
    ),
    _yes_no("uncontrolled_hypertension", "Uncontrolled hypertension", ORGAN_FUNCTION),
    _number("spo2_percent", "SpO2", ORGAN_FUNCTION, unit="%", max=100),
    _yes_no("active_pulmonary_infection", "Active pulmonary infection", ORGAN_FUNCTION),
    _yes_no("pulmonary_embolism", "Pulmonary embolism", ORGAN_FUNCTION),
    _yes_no("copd", "COPD", ORGAN_FUNCTION),
    _yes_no("interstitial_lung_disease", "Interstitial lung disease", ORGAN_FUNCTION),
    # --- Medical history ---
    _yes_no(
        "allergy_to_study_drugs",
        "Allergy to a study drug",
        MEDICAL_HISTORY,
        "NK cells, fludarabine, cyclophosphamide or their excipients.",
    ),
    _yes_no("prior_allo_hsct", "Prior allogeneic stem cell transplantation", MEDICAL_HISTORY),
    _yes_no("other_malignancy_history", "History of another malignancy", MEDICAL_HISTORY),
    _date(
        "other_malignancy_cr_date",
        "Other malignancy: complete remission date",
        MEDICAL_HISTORY,
        "Complete remission after radical treatment.",
    ),
    _yes_no(
        "cns_disease_history",
        "History of CNS disease or meningeal involvement",
        MEDICAL_HISTORY,
        "Epilepsy, paralysis, aphasia, stroke, meningeal involvement, ...",
    ),
    _yes_no("active_autoimmune_disease", "Active autoimmune disease", MEDICAL_HISTORY),
    _yes_no("uncontrolled_infection", "Uncontrolled infection", MEDICAL_HISTORY),
    _yes_no("hiv_positive", "HIV positive", MEDICAL_HISTORY),
    _yes_no("active_hbv", "Active hepatitis B", MEDICAL_HISTORY),
    _yes_no("active_hcv", "Active hepatitis C", MEDICAL_HISTORY),
    _yes_no("substance_abuse_history", "History of substance abuse", MEDICAL_HISTORY),
    _yes_no(
        "vaccination_expected_during_study",
        "Vaccination expected during the study",
        MEDICAL_HISTORY,
        "Expected to need a vaccine before 12 weeks after the last infusion.",
    ),
    _yes_no(
        "investigator_concern",
        "Investigator concern",
        MEDICAL_HISTORY,
        "A medical or social issue likely to interfere or add risk.",
    ),
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {spec.name: spec for spec in SCREENING_FIELDS}

# PROTOCOL 4.4, in the order of its table.
EXPOSURE_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("systemic_steroid", "Systemic steroid"),
    ("systemic_antitumor", "Systemic antitumor therapy"),
    ("radiotherapy", "Radiotherapy"),
    ("donor_lymphocyte_infusion", "Donor lymphocyte infusion (DLI)"),
    ("intrathecal", "Intrathecal treatment"),
    ("gene_modified_cell_therapy", "CAR-T, CAR-NK or other gene-modified cell therapy"),
    ("vaccine", "Vaccine"),
    ("major_surgery", "Major surgery"),
    ("diagnostic_biopsy", "Diagnostic biopsy"),
)

# The log also holds medications and procedures outside the washout table (e.g.
# tocilizumab during the study): they never block and are not checker input.
OTHER_CATEGORY = ("other", "Other medication or procedure (no washout)")

EXPOSURE_CATEGORY_LABELS: dict[str, str] = dict((*EXPOSURE_CATEGORIES, OTHER_CATEGORY))

# The columns of one prior_therapies entry (PROTOCOL 4.4).
EXPOSURE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("category", "Category", "choice", PRIOR_THERAPIES, choices=EXPOSURE_CATEGORIES),
    FieldSpec("name", "Name", "text", PRIOR_THERAPIES, help="Drug, regimen or procedure."),
    _date("last_date", "Last dose or treatment day", PRIOR_THERAPIES, "For a vaccine, the day it was given."),
    FieldSpec(
        "half_life_days",
        "Half-life",
        "number",
        PRIOR_THERAPIES,
        unit="days",
        help="Systemic antitumor therapy only; leave empty if unknown (the full washout then applies).",
        min=0,
        positive=True,
    ),
    _yes_no(
        "physiological_replacement",
        "Physiological replacement dose",
        PRIOR_THERAPIES,
        "Systemic steroids only: replacement doses never block.",
    ),
)

EXPOSURE_FIELDS_BY_NAME: dict[str, FieldSpec] = {s.name: s for s in EXPOSURE_FIELDS}
