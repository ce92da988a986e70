"""Table-driven tests of the eligibility checker, one case per protocol boundary
(PROTOCOL 4.1-4.4). Case ids quote the protocol text they check."""

import ast
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cellstudy.enrollment import eligibility
from cellstudy.enrollment.eligibility import (
    CRITERIA,
    age_on,
    add_months,
    check,
    first_permitted_day,
    parse_exposure,
    washout_blocks,
)
from cellstudy.enrollment.fields import SCREENING_FIELDS

from .eligibility_cases import (
    CATEGORY_CODE,
    CODES,
    EXPOSURE_CODES,
    eligible_case,
    exposure,
    statuses,
)


def status_of(code, **changes):
    return check(eligible_case(**changes))["criteria"][code]["status"]


def reason_of(code, **changes):
    return check(eligible_case(**changes))["criteria"][code]["reason"]


def without(*names, **changes):
    case = eligible_case(**changes)
    for name in names:
        case.pop(name, None)
    return case


# --- 4.1 contract ---------------------------------------------------------------------


def test_every_code_of_4_3_is_present_in_table_order():
    result = check(eligible_case())
    assert tuple(result["criteria"]) == CODES
    assert len(CODES) == 34
    assert tuple(code for code, _ in CRITERIA) == CODES


def test_every_code_is_present_even_for_an_empty_case():
    result = check({})
    assert tuple(result["criteria"]) == CODES
    assert result["eligible"] is None


def test_result_shape():
    result = check(eligible_case())
    assert set(result) == {"eligible", "criteria"}
    for entry in result["criteria"].values():
        assert set(entry) == {"status", "reason"}
        assert entry["status"] in {"pass", "fail", "missing"}
        assert isinstance(entry["reason"], str) and entry["reason"]


def test_the_eligible_case_passes_every_criterion():
    result = check(eligible_case())
    assert statuses(result) == {code: "pass" for code in CODES}
    assert result["eligible"] is True


@pytest.mark.parametrize(
    "changes, expected",
    [
        pytest.param({}, True, id="all pass: eligible true"),
        pytest.param({"ecog": None}, None, id="one missing, none failing: eligible null"),
        pytest.param({"ecog": 2}, False, id="one failing: eligible false"),
        pytest.param({"ecog": None, "apl": True}, False, id="a fail is reported even when other data is missing"),
    ],
)
def test_eligible_is_false_if_any_fails_else_null_if_any_missing_else_true(changes, expected):
    assert check(eligible_case(**changes))["eligible"] is expected


def test_an_empty_case_with_one_failing_flag_is_not_eligible():
    result = check({"apl": True})
    assert result["criteria"]["apl"]["status"] == "fail"
    assert result["eligible"] is False


def test_unknown_keys_are_ignored():
    case = eligible_case(notes="seen by Dr X", csrf_token="abc", submit="Check")
    case["prior_therapies"] = [exposure("radiotherapy", "2024-01-01", route="external")]
    assert check(case)["eligible"] is True


def test_the_case_is_not_modified():
    case = eligible_case(prior_therapies=[exposure("radiotherapy", "2024-01-01")])
    snapshot = repr(case)
    check(case)
    assert repr(case) == snapshot


def test_dates_may_be_date_objects():
    case = eligible_case(
        screening_date=date(2024, 5, 1),
        date_of_birth=date(1979, 1, 15),
        icf_signed_date=date(2024, 4, 28),
        first_infusion_date=date(2024, 5, 20),
    )
    assert check(case) == check(eligible_case())


def test_the_module_is_pure():
    """ARCHITECTURE: pure rules import neither Flask nor the database."""
    root = Path(eligibility.__file__).parent.parent
    for path in (root / "enrollment" / "eligibility.py", root / "enrollment" / "fields.py", root / "study.py"):
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
        for name in imported:
            assert not name.startswith(("flask", "sqlalchemy", "cellstudy.extensions", "wtforms")), (path, name)


# --- age ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "born, screened, expected",
    [
        pytest.param("2006-05-01", "2024-05-01", "pass", id=">= 18 years old: on the 18th birthday"),
        pytest.param("2006-05-01", "2024-04-30", "fail", id=">= 18 years old: the day before"),
        pytest.param("2006-05-02", "2024-05-01", "fail", id=">= 18 years old: one day short"),
        pytest.param("1930-01-01", "2024-05-01", "pass", id=">= 18 years old: elderly"),
        pytest.param("2024-05-01", "2024-05-01", "fail", id="born on the screening date"),
        pytest.param("2004-02-29", "2022-02-28", "fail", id="born Feb 29: not 18 on Feb 28 of a non-leap year"),
        pytest.param("2004-02-29", "2022-03-01", "pass", id="born Feb 29: 18 on Mar 1 of a non-leap year"),
        pytest.param("2006-02-28", "2024-02-28", "pass", id="born Feb 28: 18 on Feb 28"),
        pytest.param("2006-03-01", "2024-02-29", "fail", id="born Mar 1: not 18 on Feb 29"),
    ],
)
def test_age(born, screened, expected):
    assert status_of("age", date_of_birth=born, screening_date=screened, icf_signed_date=screened) == expected


@pytest.mark.parametrize(
    "born, day, years",
    [
        (date(2006, 5, 1), date(2024, 5, 1), 18),
        (date(2006, 5, 1), date(2024, 4, 30), 17),
        (date(2004, 2, 29), date(2022, 2, 28), 17),
        (date(2004, 2, 29), date(2022, 3, 1), 18),
        (date(2004, 2, 29), date(2024, 2, 29), 20),
        (date(2004, 2, 29), date(2024, 2, 28), 19),
        (date(2000, 12, 31), date(2001, 12, 30), 0),
        (date(2000, 12, 31), date(2000, 12, 31), 0),
    ],
)
def test_age_on_counts_completed_years(born, day, years):
    assert age_on(born, day) == years


def test_age_on_refuses_a_birth_after_the_day():
    with pytest.raises(ValueError, match="date_of_birth"):
        age_on(date(2000, 1, 2), date(2000, 1, 1))


def test_age_reason_names_the_values():
    reason = reason_of("age", date_of_birth="2006-05-02")
    assert "17" in reason and "2006-05-02" in reason and "2024-05-01" in reason


@pytest.mark.parametrize("field", ["date_of_birth", "screening_date"])
def test_age_is_missing_without_either_date(field):
    assert status_of("age", **{field: None}) == "missing"


def test_screening_date_absent_makes_age_consent_and_other_malignancy_missing():
    case = eligible_case(screening_date=None, other_malignancy_history=True, other_malignancy_cr_date="2000-01-01")
    result = statuses(check(case))
    assert result["age"] == result["consent"] == result["other_malignancy"] == "missing"


# --- simple inclusion and exclusion flags ---------------------------------------------

INCLUSION_FLAGS = [
    ("rr_aml", "rr_aml_confirmed"),
    ("life_expectancy", "life_expectancy_gt_12_weeks"),
]

EXCLUSION_FLAGS = [
    ("allergy", "allergy_to_study_drugs"),
    ("prior_allo_hsct", "prior_allo_hsct"),
    ("cns_leukemia", "active_cns_leukemia"),
    ("apl", "apl"),
    ("cns_disease", "cns_disease_history"),
    ("autoimmune", "active_autoimmune_disease"),
    ("substance_abuse", "substance_abuse_history"),
    ("investigator_concern", "investigator_concern"),
    ("pregnancy_breastfeeding", "pregnant_or_breastfeeding"),
    ("vaccine", "vaccination_expected_during_study"),
    ("cardiovascular", "severe_arrhythmia"),
    ("cardiovascular", "cv_event_within_6_months"),
    ("cardiovascular", "uncontrolled_hypertension"),
    ("pulmonary", "active_pulmonary_infection"),
    ("pulmonary", "pulmonary_embolism"),
    ("pulmonary", "copd"),
    ("pulmonary", "interstitial_lung_disease"),
    ("infection", "uncontrolled_infection"),
    ("infection", "hiv_positive"),
    ("infection", "active_hbv"),
    ("infection", "active_hcv"),
]


@pytest.mark.parametrize("code, field", INCLUSION_FLAGS)
@pytest.mark.parametrize("value, expected", [(True, "pass"), (False, "fail"), (None, "missing")])
def test_inclusion_flag(code, field, value, expected):
    assert status_of(code, **{field: value}) == expected


@pytest.mark.parametrize("code, field", EXCLUSION_FLAGS)
@pytest.mark.parametrize("value, expected", [(False, "pass"), (True, "fail"), (None, "missing")])
def test_exclusion_flag(code, field, value, expected):
    assert status_of(code, **{field: value}) == expected


@pytest.mark.parametrize(
    "cll1, cd33, expected",
    [
        pytest.param(True, True, "pass", id="both positive"),
        pytest.param(True, False, "pass", id="CLL1 or CD33: CLL1 only"),
        pytest.param(False, True, "pass", id="CLL1 or CD33: CD33 only"),
        pytest.param(True, None, "pass", id="one true is enough even if the other is missing"),
        pytest.param(None, True, "pass", id="one true is enough (CD33) with CLL1 missing"),
        pytest.param(False, False, "fail", id="both negative"),
        pytest.param(False, None, "missing", id="one negative, other missing"),
        pytest.param(None, None, "missing", id="both missing"),
    ],
)
def test_target_antigen_either_or(cll1, cd33, expected):
    assert status_of("target_antigen", cll1_positive=cll1, cd33_positive=cd33) == expected


# --- numeric limits -------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, field, value, expected",
    [
        pytest.param("ecog", "ecog", 0, "pass", id="ECOG <= 1: 0"),
        pytest.param("ecog", "ecog", 1, "pass", id="ECOG <= 1: 1"),
        pytest.param("ecog", "ecog", 2, "fail", id="ECOG <= 1: 2"),
        pytest.param("ecog", "ecog", 5, "fail", id="ECOG <= 1: 5"),
        pytest.param("dsa", "dsa_mfi", 2000, "pass", id="DSA MFI <= 2000: exactly 2000"),
        pytest.param("dsa", "dsa_mfi", 2000.0, "pass", id="DSA MFI <= 2000: 2000.0"),
        pytest.param("dsa", "dsa_mfi", Decimal("2000.00"), "pass", id="DSA MFI <= 2000: Decimal"),
        pytest.param("dsa", "dsa_mfi", 2000.1, "fail", id="DSA MFI <= 2000: 2000.1"),
        pytest.param("dsa", "dsa_mfi", Decimal("2000.0001"), "fail", id="DSA MFI <= 2000: just over"),
        pytest.param("dsa", "dsa_mfi", 0, "pass", id="DSA MFI 0"),
        pytest.param("cardiovascular", "qtc_ms", 480, "pass", id="QTc > 480 fails: 480 passes"),
        pytest.param("cardiovascular", "qtc_ms", 480.5, "fail", id="QTc > 480 fails: 480.5"),
        pytest.param("cardiovascular", "qtc_ms", 481, "fail", id="QTc > 480 fails: 481"),
        pytest.param("cardiovascular", "lvef_percent", 50, "pass", id="LVEF < 50 fails: 50 passes"),
        pytest.param("cardiovascular", "lvef_percent", 49.9, "fail", id="LVEF < 50 fails: 49.9"),
        pytest.param("cardiovascular", "lvef_percent", 100, "pass", id="LVEF 100 %"),
        pytest.param("cardiovascular", "nyha_class", 1, "pass", id="NYHA >= III fails: I"),
        pytest.param("cardiovascular", "nyha_class", 2, "pass", id="NYHA >= III fails: II"),
        pytest.param("cardiovascular", "nyha_class", 3, "fail", id="NYHA >= III fails: III"),
        pytest.param("cardiovascular", "nyha_class", 4, "fail", id="NYHA >= III fails: IV"),
        pytest.param("pulmonary", "spo2_percent", 90, "fail", id="SpO2 <= 90% fails: 90"),
        pytest.param("pulmonary", "spo2_percent", 90.0, "fail", id="SpO2 <= 90% fails: 90.0"),
        pytest.param("pulmonary", "spo2_percent", 90.5, "pass", id="SpO2 <= 90% fails: 90.5"),
        pytest.param("pulmonary", "spo2_percent", 91, "pass", id="SpO2 <= 90% fails: 91"),
        pytest.param("pulmonary", "spo2_percent", 100, "pass", id="SpO2 100 %"),
        pytest.param(
            "prior_toxicity", "max_unresolved_prior_toxicity_grade", 0, "pass", id="toxicity recovered to <= grade 2: 0"
        ),
        pytest.param(
            "prior_toxicity", "max_unresolved_prior_toxicity_grade", 2, "pass", id="toxicity recovered to <= grade 2: 2"
        ),
        pytest.param(
            "prior_toxicity", "max_unresolved_prior_toxicity_grade", 3, "fail", id="toxicity recovered to <= grade 2: 3"
        ),
    ],
)
def test_numeric_limit(code, field, value, expected):
    assert status_of(code, **{field: value}) == expected


@pytest.mark.parametrize(
    "code, field",
    [
        ("ecog", "ecog"),
        ("dsa", "dsa_mfi"),
        ("cardiovascular", "qtc_ms"),
        ("cardiovascular", "lvef_percent"),
        ("cardiovascular", "nyha_class"),
        ("pulmonary", "spo2_percent"),
        ("prior_toxicity", "max_unresolved_prior_toxicity_grade"),
    ],
)
def test_numeric_field_absent_is_missing(code, field):
    assert status_of(code, **{field: None}) == "missing"


def test_limit_reason_names_value_and_limit():
    reason = reason_of("cardiovascular", qtc_ms=481)
    assert "QTc 481 ms" in reason and "480" in reason


# --- ratios to the upper limit of normal ----------------------------------------------


@pytest.mark.parametrize(
    "code, field, value, uln, expected",
    [
        pytest.param("bilirubin", "total_bilirubin", 42, 21, "pass", id="TBIL <= 2 x ULN: exactly 2x"),
        pytest.param("bilirubin", "total_bilirubin", Decimal("42.01"), 21, "fail", id="TBIL <= 2 x ULN: just over"),
        pytest.param("bilirubin", "total_bilirubin", 0.6, 0.3, "pass", id="TBIL 0.6 / 0.3 float"),
        pytest.param("bilirubin", "total_bilirubin", 0, 21, "pass", id="TBIL 0"),
        pytest.param("transaminases", "alt", 120, 40, "pass", id="ALT <= 3 x ULN: exactly 3x"),
        pytest.param("transaminases", "alt", 120.01, 40, "fail", id="ALT <= 3 x ULN: just over"),
        pytest.param(
            "transaminases", "alt", 2.1, 0.7, "pass", id="ALT 2.1 / 0.7 is exactly 3 (float division says more)"
        ),
        pytest.param("transaminases", "ast", 120, 40, "pass", id="AST <= 3 x ULN: exactly 3x"),
        pytest.param("transaminases", "ast", 121, 40, "fail", id="AST <= 3 x ULN: over"),
        pytest.param("transaminases", "ast", 6.9, 2.3, "pass", id="AST 6.9 / 2.3 exactly 3"),
        pytest.param(
            "coagulation", "inr", 1.8, 1.2, "pass", id="INR <= 1.5 x ULN: INR 1.8 with ULN 1.2 is exactly 1.5"
        ),
        pytest.param("coagulation", "inr", Decimal("1.8"), Decimal("1.2"), "pass", id="INR 1.8 / 1.2 as Decimal"),
        pytest.param("coagulation", "inr", 1.81, 1.2, "fail", id="INR <= 1.5 x ULN: 1.81"),
        pytest.param("coagulation", "aptt", 60, 40, "pass", id="aPTT <= 1.5 x ULN: exactly"),
        pytest.param("coagulation", "aptt", 1.05, 0.7, "pass", id="aPTT 1.05 / 0.7 exactly 1.5"),
        pytest.param("coagulation", "aptt", 60.1, 40, "fail", id="aPTT <= 1.5 x ULN: just over"),
        pytest.param("renal", "creatinine", 180, 90, "pass", id="Cr <= 2 x ULN: exactly 2x"),
    ],
)
def test_uln_ratio(code, field, value, uln, expected):
    changes = {field: value, f"{field}_uln": uln}
    if code == "renal":  # make the Cockcroft-Gault limb fail so the ratio decides
        changes["weight_kg"] = 20
    assert status_of(code, **changes) == expected


@pytest.mark.parametrize(
    "code, field",
    [
        ("bilirubin", "total_bilirubin"),
        ("bilirubin", "total_bilirubin_uln"),
        ("transaminases", "alt"),
        ("transaminases", "alt_uln"),
        ("transaminases", "ast"),
        ("transaminases", "ast_uln"),
        ("coagulation", "inr"),
        ("coagulation", "inr_uln"),
        ("coagulation", "aptt"),
        ("coagulation", "aptt_uln"),
    ],
)
def test_ratio_is_missing_without_value_or_uln(code, field):
    assert status_of(code, **{field: None}) == "missing"


def test_alt_reason_as_in_the_protocol():
    reason = reason_of("transaminases", alt=130, alt_uln=40)
    assert "ALT 130 U/L = 3.25 x ULN" in reason
    assert "limit 3.0" in reason


def test_inexact_ratio_is_marked_approximate():
    reason = reason_of("bilirubin", total_bilirubin=10, total_bilirubin_uln=3)
    assert "≈3.33 x ULN" in reason


@pytest.mark.parametrize(
    "code, changes, expected",
    [
        pytest.param(
            "transaminases",
            {"alt": 200, "ast": None},
            "fail",
            id="composite: ALT fails, AST missing -> fail beats missing",
        ),
        pytest.param(
            "transaminases", {"alt": 20, "ast": None}, "missing", id="composite: ALT passes, AST missing -> missing"
        ),
        pytest.param(
            "transaminases", {"alt_uln": None, "ast": 200}, "fail", id="composite: AST fails, ALT ULN missing"
        ),
        pytest.param("coagulation", {"inr": 3, "aptt_uln": None}, "fail", id="composite: INR fails, aPTT missing"),
        pytest.param("coagulation", {"inr": None}, "missing", id="composite: INR missing"),
        pytest.param(
            "cardiovascular",
            {"qtc_ms": None, "severe_arrhythmia": True},
            "fail",
            id="composite: arrhythmia fails with QTc missing",
        ),
        pytest.param(
            "cardiovascular", {"qtc_ms": None, "lvef_percent": None}, "missing", id="composite: QTc and LVEF missing"
        ),
        pytest.param(
            "cardiovascular",
            {"nyha_class": 3, "uncontrolled_hypertension": None},
            "fail",
            id="composite: NYHA III fails with hypertension missing",
        ),
        pytest.param(
            "pulmonary", {"spo2_percent": 85, "copd": None}, "fail", id="composite: SpO2 85 fails with COPD missing"
        ),
        pytest.param("pulmonary", {"spo2_percent": None, "copd": False}, "missing", id="composite: SpO2 missing"),
        pytest.param(
            "infection", {"hiv_positive": True, "active_hbv": None}, "fail", id="composite: HIV with HBV missing"
        ),
        pytest.param("infection", {"active_hcv": None}, "missing", id="composite: HCV missing"),
        pytest.param(
            "vaccine",
            {"vaccination_expected_during_study": True, "prior_therapies": None},
            "fail",
            id="composite: vaccination expected, prior therapies not recorded",
        ),
    ],
)
def test_composite_fail_beats_missing(code, changes, expected):
    assert status_of(code, **changes) == expected


# --- renal: Cr <= 2 x ULN or Cockcroft-Gault CrCl >= 50 mL/min --------------------------

# Exact CrCl = 50 cases, 40 years old at screening (born 1984-05-01); the ratio limb
# fails (creatinine far above 2 x ULN) so that Cockcroft-Gault decides.
# M: 100 x 72 / (72 x 2.0) = 50; F: 100 x 36 x 0.85 / (72 x 0.85) = 50;
# in umol/L: 2.0 mg/dL = 176.8 umol/L and 0.85 mg/dL = 75.14 umol/L.
CRCL_50 = [
    pytest.param("M", 72, 2.0, "mg/dL", id="M, mg/dL"),
    pytest.param("F", 36, 0.85, "mg/dL", id="F, mg/dL"),
    pytest.param("M", 72, 176.8, "umol/L", id="M, umol/L"),
    pytest.param("F", 36, 75.14, "umol/L", id="F, umol/L"),
    pytest.param("M", 72, Decimal("176.8"), "umol/L", id="M, umol/L, Decimal"),
    pytest.param("F", Decimal("36.0"), Decimal("75.14"), "umol/L", id="F, umol/L, Decimal"),
]


def renal_case(sex, weight, creatinine, unit, born="1984-05-01", **changes):
    return eligible_case(
        sex=sex,
        weight_kg=weight,
        creatinine=creatinine,
        creatinine_uln=creatinine / 4,
        creatinine_unit=unit,
        date_of_birth=born,
        **changes,
    )


@pytest.mark.parametrize("sex, weight, creatinine, unit", CRCL_50)
def test_cockcroft_gault_exactly_50_passes(sex, weight, creatinine, unit):
    result = check(renal_case(sex, weight, creatinine, unit))["criteria"]["renal"]
    assert result["status"] == "pass"
    assert "= 50 mL/min" in result["reason"]
    assert "= 4 x ULN" in result["reason"]


@pytest.mark.parametrize("sex, weight, creatinine, unit", CRCL_50)
def test_cockcroft_gault_just_under_50_fails(sex, weight, creatinine, unit):
    lighter = weight - Decimal("0.01") if isinstance(weight, Decimal) else weight - 0.01
    assert check(renal_case(sex, lighter, creatinine, unit))["criteria"]["renal"]["status"] == "fail"


@pytest.mark.parametrize("sex, weight, creatinine, unit", CRCL_50)
def test_cockcroft_gault_one_year_older_fails(sex, weight, creatinine, unit):
    older = renal_case(sex, weight, creatinine, unit, born="1983-05-01")
    assert check(older)["criteria"]["renal"]["status"] == "fail"


@pytest.mark.parametrize("creatinine", [215.42638, Decimal("215.42638")])
def test_cockcroft_gault_exactly_50_where_floats_give_49_99(creatinine):
    # (140 - 18) x 84.6 x 0.85 / (72 x 215.42638 / 88.4) = 50 exactly;
    # the same in binary floating point is 49.99999999999999.
    case = renal_case("F", 84.6, creatinine, "umol/L", born="2006-05-01")
    assert check(case)["criteria"]["renal"]["status"] == "pass"


def test_cockcroft_gault_age_is_the_age_at_screening():
    # The day before the 41st birthday the subject is 40: exactly 50 mL/min.
    case = renal_case("M", 72, 2.0, "mg/dL", born="1983-05-02")
    assert check(case)["criteria"]["renal"]["status"] == "pass"


def test_cockcroft_gault_reason_names_values():
    reason = check(renal_case("F", 36, 75.14, "umol/L"))["criteria"]["renal"]["reason"]
    for text in ("age 40", "36 kg", "0.85", "75.14 umol/L", "0.85 mg/dL", "limit >= 50"):
        assert text in reason


def test_inexact_crcl_keeps_its_side_of_the_limit_in_the_reason():
    # CrCl = 100 x 72 x 88.4 / (72 x 176.80001) is a hair under 50: shown as ≈49.99...
    reason = check(renal_case("M", 72, 176.80001, "umol/L"))["criteria"]["renal"]
    assert reason["status"] == "fail"
    shown = re.search(r"≈([0-9.]+) mL/min", reason["reason"]).group(1)
    assert Decimal(shown) < 50


@pytest.mark.parametrize(
    "changes, expected",
    [
        pytest.param(
            {"creatinine": 70, "creatinine_uln": 90, "weight_kg": 20},
            "pass",
            id="ratio passes, CrCl fails: one satisfied limb is enough",
        ),
        pytest.param({"creatinine_uln": 30}, "pass", id="ratio fails, CrCl passes"),
        pytest.param({"creatinine_uln": 30, "weight_kg": 20}, "fail", id="both limbs fail"),
        pytest.param({"sex": None}, "pass", id="ratio passes, sex missing"),
        pytest.param({"weight_kg": None, "creatinine_unit": None}, "pass", id="ratio passes, weight and unit missing"),
        pytest.param({"creatinine_uln": None}, "pass", id="ULN missing, CrCl passes"),
        pytest.param({"creatinine_uln": None, "weight_kg": 20}, "missing", id="ULN missing, CrCl fails"),
        pytest.param({"creatinine": None}, "missing", id="creatinine missing: both limbs missing"),
        pytest.param({"creatinine_uln": 30, "sex": None}, "missing", id="ratio fails, CrCl needs sex"),
        pytest.param({"creatinine_uln": 30, "weight_kg": None}, "missing", id="ratio fails, CrCl needs weight"),
        pytest.param(
            {"creatinine_uln": 30, "creatinine_unit": None}, "missing", id="ratio fails, CrCl needs the creatinine unit"
        ),
        pytest.param(
            {"creatinine_uln": 30, "date_of_birth": None},
            "missing",
            id="ratio fails, CrCl needs the age (date of birth)",
        ),
        pytest.param(
            {"creatinine_uln": 30, "screening_date": None},
            "missing",
            id="ratio fails, CrCl needs the age (screening date)",
        ),
    ],
)
def test_renal_either_or(changes, expected):
    assert status_of("renal", **changes) == expected


def test_creatinine_unit_changes_the_clearance():
    # 1.2 read as mg/dL gives a low clearance; read as umol/L it is enormous.
    changes = dict(creatinine=1.2, creatinine_uln=0.5, weight_kg=30, sex="M")
    assert status_of("renal", creatinine_unit="mg/dL", **changes) == "fail"
    assert status_of("renal", creatinine_unit="umol/L", **changes) == "pass"


# --- pregnancy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sex, potential, test, expected",
    [
        pytest.param("F", True, "negative", "pass", id="F of childbearing potential, negative"),
        pytest.param("F", True, "positive", "fail", id="F of childbearing potential, positive"),
        pytest.param("F", True, "not_done", "fail", id="F of childbearing potential, not done"),
        pytest.param("F", True, None, "missing", id="F of childbearing potential, test absent"),
        pytest.param("F", False, None, "pass", id="F not of childbearing potential"),
        pytest.param("F", False, "not_done", "pass", id="F not of childbearing potential, not done"),
        pytest.param("F", None, None, "missing", id="F, childbearing potential absent"),
        pytest.param("F", None, "not_done", "missing", id="F, potential absent, not done"),
        pytest.param("F", None, "negative", "pass", id="negative passes whatever is missing (F)"),
        pytest.param(None, None, "negative", "pass", id="negative passes whatever is missing"),
        pytest.param(None, None, None, "missing", id="sex absent"),
        pytest.param(None, True, "positive", "missing", id="sex absent, positive"),
        pytest.param("M", None, None, "pass", id="pass for M"),
        pytest.param("M", True, "not_done", "pass", id="pass for M whatever else"),
    ],
)
def test_pregnancy_test(sex, potential, test, expected):
    assert status_of("pregnancy_test", sex=sex, childbearing_potential=potential, pregnancy_test=test) == expected


@pytest.mark.parametrize(
    "sex, pregnant, test, expected",
    [
        pytest.param("F", False, "negative", "pass", id="not pregnant, negative test"),
        pytest.param("F", True, "negative", "fail", id="pregnant or breastfeeding"),
        pytest.param("F", False, "positive", "fail", id="a positive test also fails (F)"),
        pytest.param("M", False, "positive", "fail", id="a positive test fails for any sex (M)"),
        pytest.param(None, None, "positive", "fail", id="positive test, answer missing"),
        pytest.param("F", None, "negative", "missing", id="answer missing"),
        pytest.param("M", None, None, "missing", id="answer missing for M too"),
        pytest.param("M", False, None, "pass", id="M not breastfeeding"),
        pytest.param("F", False, "not_done", "pass", id="not done is not positive"),
    ],
)
def test_pregnancy_breastfeeding(sex, pregnant, test, expected):
    assert (
        status_of("pregnancy_breastfeeding", sex=sex, pregnant_or_breastfeeding=pregnant, pregnancy_test=test)
        == expected
    )


# --- consent --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signed, screened, expected",
    [
        pytest.param("2024-05-01", "2024-05-01", "pass", id="ICF signed the same day passes"),
        pytest.param("2024-04-30", "2024-05-01", "pass", id="ICF signed the day before"),
        pytest.param("2024-05-02", "2024-05-01", "fail", id="ICF signed the day after fails"),
        pytest.param(None, "2024-05-01", "missing", id="ICF date absent"),
        pytest.param("2024-05-01", None, "missing", id="screening date absent"),
    ],
)
def test_consent(signed, screened, expected):
    assert status_of("consent", icf_signed_date=signed, screening_date=screened) == expected


# --- other malignancy -----------------------------------------------------------------


@pytest.mark.parametrize(
    "history, remission, screened, expected",
    [
        pytest.param(False, None, "2024-05-01", "pass", id="no other malignancy"),
        pytest.param(False, None, None, "pass", id="no other malignancy needs no screening date"),
        pytest.param(None, "2000-01-01", "2024-05-01", "missing", id="history absent"),
        pytest.param(True, None, "2024-05-01", "missing", id="CR date absent"),
        pytest.param(True, "2019-05-01", None, "missing", id="screening date absent"),
        pytest.param(True, "2019-05-01", "2024-05-01", "fail", id="CR exactly 5 years fails"),
        pytest.param(True, "2019-04-30", "2024-05-01", "pass", id="CR 5 years + 1 day passes"),
        pytest.param(True, "2019-05-02", "2024-05-01", "fail", id="CR 5 years - 1 day fails"),
        pytest.param(True, "2016-02-29", "2021-02-28", "fail", id="CR Feb 29 + 5 years = Feb 28: on Feb 28 fails"),
        pytest.param(True, "2016-02-29", "2021-03-01", "pass", id="CR Feb 29 + 5 years = Feb 28: on Mar 1 passes"),
        pytest.param(True, "2023-01-01", "2024-05-01", "fail", id="recent CR"),
        pytest.param(True, "2030-01-01", "2024-05-01", "fail", id="CR after screening"),
    ],
)
def test_other_malignancy(history, remission, screened, expected):
    assert (
        status_of(
            "other_malignancy",
            other_malignancy_history=history,
            other_malignancy_cr_date=remission,
            screening_date=screened,
            icf_signed_date="2000-01-01",
        )
        == expected
    )


# --- 4.4 washouts -----------------------------------------------------------------------

D = date(2024, 5, 20)


def days_before(n):
    return (D - timedelta(days=n)).isoformat()


WASHOUT_BOUNDARIES = [
    # (category, extra, last_date, expected status of its criterion)
    pytest.param("systemic_steroid", {}, days_before(2), "fail", id="steroid within 3 days: last blocked day (2 days)"),
    pytest.param(
        "systemic_steroid", {}, days_before(3), "pass", id="steroid within 3 days: first permitted day (3 days)"
    ),
    pytest.param(
        "systemic_steroid",
        {"physiological_replacement": True},
        days_before(0),
        "pass",
        id="physiological steroid replacement is ignored",
    ),
    pytest.param(
        "systemic_steroid",
        {"physiological_replacement": False},
        days_before(0),
        "fail",
        id="physiological_replacement false blocks",
    ),
    pytest.param(
        "systemic_steroid",
        {"physiological_replacement": None},
        days_before(0),
        "fail",
        id="physiological_replacement null means false",
    ),
    pytest.param(
        "systemic_antitumor", {}, days_before(13), "fail", id="antitumor, half-life unknown = 14 days: 13 days blocks"
    ),
    pytest.param(
        "systemic_antitumor", {}, days_before(14), "pass", id="antitumor, half-life unknown = 14 days: 14 days passes"
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 2.5},
        days_before(12),
        "fail",
        id="antitumor 5 x 2.5 = 12.5 days: 12 days blocks",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 2.5},
        days_before(13),
        "pass",
        id="antitumor 5 x 2.5 = 12.5 days: first permitted day 13",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": Decimal("2.6")},
        days_before(12),
        "fail",
        id="antitumor 5 x 2.6 = 13 days: 12 days blocks",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": Decimal("2.6")},
        days_before(13),
        "pass",
        id="antitumor 5 x 2.6 = 13 days: 13 days passes",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 2.8},
        days_before(13),
        "fail",
        id="antitumor 5 x 2.8 = 14 days: 13 blocks",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 2.8},
        days_before(14),
        "pass",
        id="antitumor 5 x 2.8 = 14 days: 14 passes",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 30},
        days_before(13),
        "fail",
        id="antitumor, whichever is less: 14 days, not 150",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 30},
        days_before(14),
        "pass",
        id="antitumor, whichever is less: 14 days passes",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 0.1},
        days_before(0),
        "fail",
        id="antitumor 0.5 days: the same day blocks",
    ),
    pytest.param(
        "systemic_antitumor",
        {"half_life_days": 0.1},
        days_before(1),
        "pass",
        id="antitumor 0.5 days: the next day passes",
    ),
    pytest.param("radiotherapy", {}, days_before(27), "fail", id="radiotherapy within 4 weeks: 27 days"),
    pytest.param("radiotherapy", {}, days_before(28), "pass", id="radiotherapy within 4 weeks: 28 days"),
    pytest.param("donor_lymphocyte_infusion", {}, days_before(41), "fail", id="DLI within 6 weeks: 41 days"),
    pytest.param("donor_lymphocyte_infusion", {}, days_before(42), "pass", id="DLI within 6 weeks: 42 days"),
    pytest.param("intrathecal", {}, days_before(6), "fail", id="intrathecal within 1 week: 6 days"),
    pytest.param("intrathecal", {}, days_before(7), "pass", id="intrathecal within 1 week: 7 days"),
    pytest.param("vaccine", {}, days_before(27), "fail", id="vaccine within 4 weeks: 27 days"),
    pytest.param("vaccine", {}, days_before(28), "pass", id="vaccine exactly 28 days before does not block"),
    pytest.param("major_surgery", {}, days_before(27), "fail", id="major surgery within 4 weeks: 27 days"),
    pytest.param("major_surgery", {}, days_before(28), "pass", id="major surgery within 4 weeks: 28 days"),
    pytest.param(
        "gene_modified_cell_therapy", {}, "2023-11-21", "fail", id="cell therapy within 6 months: 6 months - 1 day"
    ),
    pytest.param(
        "gene_modified_cell_therapy", {}, "2023-11-20", "pass", id="cell therapy within 6 months: exactly 6 months"
    ),
    pytest.param("radiotherapy", {}, days_before(-1), "fail", id="an exposure dated after the infusion blocks"),
    pytest.param("radiotherapy", {}, days_before(0), "fail", id="an exposure on the infusion day blocks"),
]


@pytest.mark.parametrize("category, extra, last_date, expected", WASHOUT_BOUNDARIES)
def test_washout_boundaries(category, extra, last_date, expected):
    case = eligible_case(first_infusion_date=D.isoformat(), prior_therapies=[exposure(category, last_date, **extra)])
    result = statuses(check(case))
    assert result[CATEGORY_CODE[category]] == expected
    # an exposure touches its own criterion only
    others = {code for code in EXPOSURE_CODES if code != CATEGORY_CODE[category]}
    assert {result[code] for code in others} == {"pass"}


@pytest.mark.parametrize("category, extra, last_date, expected", WASHOUT_BOUNDARIES)
def test_washout_blocks_helper_agrees(category, extra, last_date, expected):
    blocked, first = washout_blocks(exposure(category, last_date, **extra), D)
    assert blocked is (expected == "fail")
    if first is not None:
        assert (D < first) is blocked
        # the day before the first permitted day is blocked, the first one is not
        assert washout_blocks(exposure(category, last_date, **extra), first - timedelta(days=1))[0] is True
        assert washout_blocks(exposure(category, last_date, **extra), first)[0] is False


@pytest.mark.parametrize(
    "category, extra, last_date, first",
    [
        pytest.param(
            "systemic_antitumor",
            {"half_life_days": 2.5},
            "2024-05-01",
            "2024-05-14",
            id="12.5 days: first permitted day is day 13",
        ),
        pytest.param("systemic_antitumor", {}, "2024-05-01", "2024-05-15", id="unknown = 14"),
        pytest.param(
            "gene_modified_cell_therapy", {}, "2023-08-31", "2024-02-29", id="Aug 31 + 6 months = Feb 29 in a leap year"
        ),
        pytest.param("gene_modified_cell_therapy", {}, "2022-08-31", "2023-02-28", id="Aug 31 + 6 months = Feb 28"),
        pytest.param("gene_modified_cell_therapy", {}, "2024-03-31", "2024-09-30", id="Mar 31 + 6 months = Sep 30"),
        pytest.param("gene_modified_cell_therapy", {}, "2024-01-15", "2024-07-15", id="Jan 15 + 6 months = Jul 15"),
        pytest.param(
            "gene_modified_cell_therapy", {}, "2023-12-31", "2024-06-30", id="Dec 31 + 6 months = Jun 30 (year change)"
        ),
        pytest.param(
            "gene_modified_cell_therapy",
            {},
            "2024-07-31",
            "2025-01-31",
            id="Jul 31 + 6 months = Jan 31 of the next year",
        ),
        pytest.param("vaccine", {}, "2024-05-01", "2024-05-29", id="vaccine 28 days"),
    ],
)
def test_first_permitted_day(category, extra, last_date, first):
    item = parse_exposure(exposure(category, last_date, **extra))
    assert first_permitted_day(item) == date.fromisoformat(first)


@pytest.mark.parametrize(
    "infusion, expected",
    [
        pytest.param("2024-02-28", "fail", id="Aug 31 + 6 months: Feb 28 2024 still blocked"),
        pytest.param("2024-02-29", "pass", id="Aug 31 + 6 months: Feb 29 2024 permitted"),
    ],
)
def test_cell_therapy_calendar_months_at_month_end(infusion, expected):
    case = eligible_case(
        first_infusion_date=infusion, prior_therapies=[exposure("gene_modified_cell_therapy", "2023-08-31")]
    )
    assert statuses(check(case))["washout_cell_therapy"] == expected


@pytest.mark.parametrize(
    "infusion, expected",
    [
        pytest.param("2023-02-27", "fail", id="Aug 31 2022 + 6 months: Feb 27 2023 blocked"),
        pytest.param("2023-02-28", "pass", id="Aug 31 2022 + 6 months = Feb 28 2023"),
    ],
)
def test_cell_therapy_calendar_months_in_a_non_leap_year(infusion, expected):
    case = eligible_case(
        first_infusion_date=infusion, prior_therapies=[exposure("gene_modified_cell_therapy", "2022-08-31")]
    )
    assert statuses(check(case))["washout_cell_therapy"] == expected


@pytest.mark.parametrize(
    "day, months, result",
    [
        (date(2023, 8, 31), 6, date(2024, 2, 29)),
        (date(2022, 8, 31), 6, date(2023, 2, 28)),
        (date(2016, 2, 29), 60, date(2021, 2, 28)),
        (date(2016, 2, 29), 48, date(2020, 2, 29)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2024, 12, 15), 1, date(2025, 1, 15)),
        (date(2024, 5, 20), 0, date(2024, 5, 20)),
    ],
)
def test_add_months_clamps_to_the_month_end(day, months, result):
    assert add_months(day, months) == result


def test_diagnostic_biopsy_never_blocks():
    case = eligible_case(prior_therapies=[exposure("diagnostic_biopsy", D.isoformat())])
    assert {statuses(check(case))[code] for code in EXPOSURE_CODES} == {"pass"}
    assert washout_blocks(exposure("diagnostic_biopsy", D.isoformat()), D) == (False, None)


def test_ignored_exposures_without_a_date_do_not_make_anything_missing():
    case = eligible_case(
        first_infusion_date=None,
        prior_therapies=[
            {"category": "diagnostic_biopsy"},
            {"category": "systemic_steroid", "physiological_replacement": True},
        ],
    )
    assert check(case)["eligible"] is True


def test_prior_therapies_absent_makes_every_exposure_criterion_missing():
    for case in (eligible_case(prior_therapies=None), without("prior_therapies")):
        result = statuses(check(case))
        assert {code: result[code] for code in EXPOSURE_CODES} == {code: "missing" for code in EXPOSURE_CODES}
        assert {result[code] for code in CODES if code not in EXPOSURE_CODES} == {"pass"}


def test_prior_therapies_empty_makes_every_exposure_criterion_pass():
    result = statuses(check(eligible_case(prior_therapies=[], first_infusion_date=None)))
    assert {result[code] for code in EXPOSURE_CODES} == {"pass"}


def test_first_infusion_date_absent_makes_criteria_with_exposures_missing():
    case = eligible_case(
        first_infusion_date=None,
        prior_therapies=[exposure("radiotherapy", "2020-01-01"), exposure("vaccine", "2020-01-01")],
    )
    result = statuses(check(case))
    assert result["washout_radiotherapy"] == "missing"
    assert result["vaccine"] == "missing"
    for code in set(EXPOSURE_CODES) - {"washout_radiotherapy", "vaccine"}:
        assert result[code] == "pass", code


@pytest.mark.parametrize(
    "exposures, expected",
    [
        pytest.param([exposure("radiotherapy", None)], "missing", id="last_date absent makes its criterion missing"),
        pytest.param([{"category": "radiotherapy"}], "missing", id="last_date key absent"),
        pytest.param(
            [exposure("radiotherapy", None), exposure("radiotherapy", days_before(1))],
            "fail",
            id="another exposure of the same criterion fails it: fail wins",
        ),
        pytest.param(
            [exposure("radiotherapy", days_before(1)), exposure("radiotherapy", None)],
            "fail",
            id="fail wins whatever the order",
        ),
        pytest.param(
            [exposure("radiotherapy", None), exposure("radiotherapy", days_before(90))],
            "missing",
            id="another exposure passing does not fill the gap",
        ),
        pytest.param(
            [exposure("radiotherapy", days_before(90)), exposure("radiotherapy", days_before(40))],
            "pass",
            id="all exposures pass",
        ),
        pytest.param(
            [exposure("radiotherapy", days_before(90)), exposure("radiotherapy", days_before(3))],
            "fail",
            id="one exposure blocks",
        ),
    ],
)
def test_exposure_last_date(exposures, expected):
    case = eligible_case(first_infusion_date=D.isoformat(), prior_therapies=exposures)
    assert statuses(check(case))["washout_radiotherapy"] == expected


def test_a_fail_of_another_criterion_does_not_fill_a_missing_last_date():
    case = eligible_case(
        first_infusion_date=D.isoformat(),
        prior_therapies=[exposure("radiotherapy", None), exposure("intrathecal", days_before(1))],
    )
    result = statuses(check(case))
    assert result["washout_radiotherapy"] == "missing"
    assert result["washout_intrathecal"] == "fail"


@pytest.mark.parametrize(
    "exposures, expected_code, expected",
    [
        pytest.param(
            [exposure("systemic_steroid", None, physiological_replacement=True)],
            "washout_steroid",
            "pass",
            id="physiological steroid without date: ignored",
        ),
        pytest.param([exposure("systemic_steroid", None)], "washout_steroid", "missing", id="steroid without date"),
        pytest.param(
            [exposure("diagnostic_biopsy", None)], "major_surgery", "pass", id="diagnostic biopsy without date: ignored"
        ),
    ],
)
def test_ignored_exposures_everywhere(exposures, expected_code, expected):
    case = eligible_case(prior_therapies=exposures)
    assert statuses(check(case))[expected_code] == expected


@pytest.mark.parametrize(
    "changes, expected",
    [
        pytest.param(
            {"prior_therapies": [], "vaccination_expected_during_study": False}, "pass", id="no vaccine, none expected"
        ),
        pytest.param(
            {"prior_therapies": [], "vaccination_expected_during_study": True},
            "fail",
            id="vaccination expected during the study fails",
        ),
        pytest.param(
            {"prior_therapies": [], "vaccination_expected_during_study": None},
            "missing",
            id="vaccination expected absent is missing",
        ),
        pytest.param(
            {"prior_therapies": [exposure("vaccine", days_before(10))], "vaccination_expected_during_study": None},
            "fail",
            id="vaccine 10 days before fails with expectation missing",
        ),
        pytest.param(
            {"prior_therapies": [exposure("vaccine", days_before(28))], "vaccination_expected_during_study": True},
            "fail",
            id="old vaccine, vaccination expected",
        ),
        pytest.param(
            {"prior_therapies": None, "vaccination_expected_during_study": False},
            "missing",
            id="exposures not recorded",
        ),
    ],
)
def test_vaccine_composite(changes, expected):
    assert status_of("vaccine", first_infusion_date=D.isoformat(), **changes) == expected


def test_washout_reason_names_dates_and_window():
    case = eligible_case(
        first_infusion_date=D.isoformat(),
        prior_therapies=[exposure("systemic_antitumor", days_before(12), half_life_days=2.5, name="azacitidine")],
    )
    entry = check(case)["criteria"]["washout_antitumor"]
    assert entry["status"] == "fail"
    for text in (
        "azacitidine",
        days_before(12),
        "12 days before",
        "12.5 days",
        D.isoformat(),
        (D + timedelta(days=1)).isoformat(),
    ):
        assert text in entry["reason"], text


def test_washout_blocks_accepts_iso_strings_and_refuses_datetimes():
    assert washout_blocks(exposure("vaccine", "2024-05-01"), "2024-05-28") == (True, date(2024, 5, 29))
    with pytest.raises(ValueError, match="day"):
        washout_blocks(exposure("vaccine", "2024-05-01"), datetime(2024, 5, 28))


def test_washout_blocks_needs_the_last_date():
    with pytest.raises(ValueError, match="last_date"):
        washout_blocks({"category": "vaccine"}, D)


# --- 4.1 bad input --------------------------------------------------------------------

BAD_INPUT = [
    # (field, value)
    ("screening_date", "2024-13-01"),
    ("screening_date", "2023-02-29"),
    ("screening_date", "01/05/2024"),
    ("screening_date", "2024-5-1"),
    ("screening_date", "20240501"),
    ("screening_date", "2024-W18-3"),
    ("screening_date", " 2024-05-01"),
    ("screening_date", 20240501),
    ("screening_date", datetime(2024, 5, 1)),
    ("screening_date", datetime(2024, 5, 1, 12, 30)),
    ("first_infusion_date", datetime(2024, 5, 20)),
    ("first_infusion_date", "tomorrow"),
    ("date_of_birth", ""),
    ("icf_signed_date", True),
    ("other_malignancy_cr_date", 2019),
    ("weight_kg", "70"),
    ("weight_kg", True),
    ("weight_kg", False),
    ("weight_kg", -1),
    ("weight_kg", -0.5),
    ("weight_kg", float("nan")),
    ("weight_kg", float("inf")),
    ("weight_kg", Decimal("NaN")),
    ("weight_kg", Decimal("-Infinity")),
    ("weight_kg", [70]),
    ("weight_kg", 1 + 0j),
    ("creatinine", 0),
    ("creatinine", 0.0),
    ("creatinine", Decimal("0.00")),
    ("creatinine", -70),
    ("creatinine_uln", 0),
    ("total_bilirubin_uln", 0),
    ("alt_uln", 0.0),
    ("ast_uln", Decimal("0")),
    ("inr_uln", 0),
    ("aptt_uln", 0),
    ("alt", -1),
    ("ast", "25"),
    ("inr", True),
    ("aptt", object()),
    ("dsa_mfi", -0.1),
    ("dsa_mfi", "negative"),
    ("qtc_ms", -430),
    ("lvef_percent", 100.1),
    ("lvef_percent", 101),
    ("lvef_percent", Decimal("100.0001")),
    ("spo2_percent", 101),
    ("spo2_percent", -1),
    ("ecog", 6),
    ("ecog", -1),
    ("ecog", 1.0),
    ("ecog", Decimal(1)),
    ("ecog", True),
    ("ecog", "1"),
    ("nyha_class", 0),
    ("nyha_class", 5),
    ("nyha_class", 2.0),
    ("max_unresolved_prior_toxicity_grade", 6),
    ("max_unresolved_prior_toxicity_grade", -1),
    ("max_unresolved_prior_toxicity_grade", 2.5),
    ("sex", "f"),
    ("sex", "Female"),
    ("sex", "X"),
    ("sex", 1),
    ("creatinine_unit", "mmol/L"),
    ("creatinine_unit", "umol/l"),
    ("pregnancy_test", "pending"),
    ("pregnancy_test", True),
    ("rr_aml_confirmed", "yes"),
    ("rr_aml_confirmed", 1),
    ("apl", 0),
    ("cll1_positive", "false"),
    ("childbearing_potential", "N"),
    ("investigator_concern", []),
    ("prior_therapies", "none"),
    ("prior_therapies", {}),
    ("prior_therapies", ({"category": "vaccine", "last_date": "2024-01-01"},)),
    ("prior_therapies", 0),
]


@pytest.mark.parametrize("field, value", BAD_INPUT)
def test_bad_input_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=re.escape(field)):
        check(eligible_case(**{field: value}))


BAD_EXPOSURES = [
    # (exposure, field named in the message)
    ("radiotherapy", "prior_therapies[0]"),
    (None, "prior_therapies[0]"),
    ([], "prior_therapies[0]"),
    ({"category": "chemotherapy", "last_date": "2024-01-01"}, "prior_therapies[0].category"),
    ({"category": "Vaccine", "last_date": "2024-01-01"}, "prior_therapies[0].category"),
    ({"last_date": "2024-01-01"}, "prior_therapies[0].category"),
    ({"category": None, "last_date": "2024-01-01"}, "prior_therapies[0].category"),
    ({"category": "vaccine", "last_date": "2024-02-30"}, "prior_therapies[0].last_date"),
    ({"category": "vaccine", "last_date": datetime(2024, 1, 1)}, "prior_therapies[0].last_date"),
    ({"category": "vaccine", "last_date": 20240101}, "prior_therapies[0].last_date"),
    (
        {"category": "systemic_antitumor", "last_date": "2024-01-01", "half_life_days": 0},
        "prior_therapies[0].half_life_days",
    ),
    (
        {"category": "systemic_antitumor", "last_date": "2024-01-01", "half_life_days": -2},
        "prior_therapies[0].half_life_days",
    ),
    (
        {"category": "systemic_antitumor", "last_date": "2024-01-01", "half_life_days": "2"},
        "prior_therapies[0].half_life_days",
    ),
    (
        {"category": "systemic_antitumor", "last_date": "2024-01-01", "half_life_days": True},
        "prior_therapies[0].half_life_days",
    ),
    ({"category": "radiotherapy", "last_date": "2024-01-01", "half_life_days": 0}, "prior_therapies[0].half_life_days"),
    (
        {"category": "systemic_steroid", "last_date": "2024-01-01", "physiological_replacement": "yes"},
        "prior_therapies[0].physiological_replacement",
    ),
    (
        {"category": "systemic_steroid", "last_date": "2024-01-01", "physiological_replacement": 1},
        "prior_therapies[0].physiological_replacement",
    ),
    ({"category": "vaccine", "last_date": "2024-01-01", "name": 42}, "prior_therapies[0].name"),
]


@pytest.mark.parametrize("item, field", BAD_EXPOSURES)
def test_bad_exposure_raises_value_error_naming_the_field(item, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        check(eligible_case(prior_therapies=[item]))


def test_bad_exposure_is_named_by_its_position():
    items = [
        exposure("vaccine", "2024-01-01"),
        exposure("vaccine", "2024-01-01"),
        {"category": "vaccine", "last_date": "yesterday"},
    ]
    with pytest.raises(ValueError, match=re.escape("prior_therapies[2].last_date")):
        check(eligible_case(prior_therapies=items))


def test_a_date_of_birth_after_the_screening_date_is_bad_input():
    with pytest.raises(ValueError, match="date_of_birth"):
        check(eligible_case(date_of_birth="2024-05-02"))


@pytest.mark.parametrize("case", [None, [], "case", 42])
def test_a_case_that_is_not_a_dict_is_bad_input(case):
    with pytest.raises(ValueError, match="case"):
        check(case)


def test_bad_input_is_refused_even_when_the_case_would_fail_anyway():
    with pytest.raises(ValueError, match="alt_uln"):
        check(eligible_case(apl=True, alt_uln=0))


def test_a_far_future_date_is_refused_not_crashed():
    case = eligible_case(other_malignancy_history=True, other_malignancy_cr_date="9998-01-01")
    with pytest.raises(ValueError, match="other_malignancy_cr_date"):
        check(case)
    case = eligible_case(prior_therapies=[exposure("vaccine", "9999-12-31")])
    with pytest.raises(ValueError, match=re.escape("prior_therapies[0].last_date")):
        check(case)


@pytest.mark.parametrize(
    "field",
    [
        "weight_kg",
        "lvef_percent",
        "spo2_percent",
        "qtc_ms",
        "dsa_mfi",
        "alt",
    ],
)
@pytest.mark.parametrize("value", [0, 100, Decimal("100"), 100.0])
def test_zero_and_one_hundred_are_valid_where_allowed(field, value):
    check(eligible_case(**{field: value}))  # must not raise
    assert check(eligible_case(**{field: value}))["criteria"]


# --- None is missing, never bad input; which criteria each field feeds ----------------

# Removing one field from the eligible case makes exactly these criteria missing (the
# others still pass). Empty sets are the protocol's either-or and "whatever else is
# missing" rules at work.
MISSING_WHEN_ABSENT = {
    "screening_date": {"age", "consent"},
    "first_infusion_date": set(),
    "date_of_birth": {"age"},
    "sex": set(),
    "weight_kg": set(),
    "rr_aml_confirmed": {"rr_aml"},
    "apl": {"apl"},
    "cll1_positive": set(),
    "cd33_positive": set(),
    "ecog": {"ecog"},
    "life_expectancy_gt_12_weeks": {"life_expectancy"},
    "creatinine": {"renal"},
    "creatinine_uln": set(),
    "creatinine_unit": set(),
    "total_bilirubin": {"bilirubin"},
    "total_bilirubin_uln": {"bilirubin"},
    "alt": {"transaminases"},
    "alt_uln": {"transaminases"},
    "ast": {"transaminases"},
    "ast_uln": {"transaminases"},
    "inr": {"coagulation"},
    "inr_uln": {"coagulation"},
    "aptt": {"coagulation"},
    "aptt_uln": {"coagulation"},
    "childbearing_potential": set(),
    "pregnancy_test": {"pregnancy_test"},
    "dsa_mfi": {"dsa"},
    "icf_signed_date": {"consent"},
    "allergy_to_study_drugs": {"allergy"},
    "prior_allo_hsct": {"prior_allo_hsct"},
    "vaccination_expected_during_study": {"vaccine"},
    "active_cns_leukemia": {"cns_leukemia"},
    "other_malignancy_history": {"other_malignancy"},
    "other_malignancy_cr_date": set(),
    "cns_disease_history": {"cns_disease"},
    "active_autoimmune_disease": {"autoimmune"},
    "qtc_ms": {"cardiovascular"},
    "lvef_percent": {"cardiovascular"},
    "nyha_class": {"cardiovascular"},
    "severe_arrhythmia": {"cardiovascular"},
    "cv_event_within_6_months": {"cardiovascular"},
    "uncontrolled_hypertension": {"cardiovascular"},
    "spo2_percent": {"pulmonary"},
    "active_pulmonary_infection": {"pulmonary"},
    "pulmonary_embolism": {"pulmonary"},
    "copd": {"pulmonary"},
    "interstitial_lung_disease": {"pulmonary"},
    "uncontrolled_infection": {"infection"},
    "hiv_positive": {"infection"},
    "active_hbv": {"infection"},
    "active_hcv": {"infection"},
    "substance_abuse_history": {"substance_abuse"},
    "max_unresolved_prior_toxicity_grade": {"prior_toxicity"},
    "pregnant_or_breastfeeding": {"pregnancy_breastfeeding"},
    "investigator_concern": {"investigator_concern"},
}


def test_the_table_covers_every_screening_field():
    assert set(MISSING_WHEN_ABSENT) == {spec.name for spec in SCREENING_FIELDS}


@pytest.mark.parametrize("field", sorted(MISSING_WHEN_ABSENT))
@pytest.mark.parametrize("how", ["absent", "null"])
def test_an_absent_or_null_field_is_missing(field, how):
    case = without(field) if how == "absent" else eligible_case(**{field: None})
    result = check(case)
    missing = {code for code, status in statuses(result).items() if status == "missing"}
    assert missing == MISSING_WHEN_ABSENT[field]
    assert {s for c, s in statuses(result).items() if c not in missing} == {"pass"}
    assert result["eligible"] is (None if missing else True)


class Float(float):
    """A float subclass with its own repr, as numpy.float64 has."""

    def __repr__(self):
        return f"Float({float(self)!r})"


def test_a_float_subclass_is_taken_by_its_shortest_repr():
    assert status_of("coagulation", inr=Float(1.8), inr_uln=Float(1.2)) == "pass"
