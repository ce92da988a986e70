"""The study definition (PROTOCOL 1: numbers live in one place an amendment can change)."""

from dataclasses import FrozenInstanceError, replace
from decimal import Decimal

import pytest

from cellstudy.enrollment.eligibility import check, criteria
from cellstudy.study import STUDY, EligibilityLimits, Study, Washout

from .eligibility_cases import eligible_case, exposure, statuses


def test_identity():
    assert STUDY.protocol_id == "CAR-NK-CLL1-CD33-AML"
    assert STUDY.version == "1.0 (original protocol)"


@pytest.mark.parametrize(
    "name, value",
    [
        ("min_age_years", 18),
        ("ecog_max", 1),
        ("creatinine_uln_ratio", Decimal("2")),
        ("crcl_min_ml_min", Decimal("50")),
        ("cg_age_constant", 140),
        ("cg_denominator", 72),
        ("cg_female_factor", Decimal("0.85")),
        ("creatinine_umol_per_mg_dl", Decimal("88.4")),
        ("bilirubin_uln_ratio", Decimal("2")),
        ("transaminase_uln_ratio", Decimal("3")),
        ("coagulation_uln_ratio", Decimal("1.5")),
        ("dsa_mfi_max", Decimal("2000")),
        ("qtc_max_ms", Decimal("480")),
        ("lvef_min_percent", Decimal("50")),
        ("nyha_fail_at", 3),
        ("spo2_fail_at_or_below", Decimal("90")),
        ("max_prior_toxicity_grade", 2),
        ("other_malignancy_cr_years", 5),
    ],
)
def test_eligibility_limits_of_4_3(name, value):
    limit = getattr(STUDY.eligibility, name)
    assert limit == value
    assert isinstance(limit, (int, Decimal)) and not isinstance(limit, bool)


@pytest.mark.parametrize(
    "category, criterion, days, months, half_lives, ignore",
    [
        ("systemic_steroid", "washout_steroid", 3, None, None, True),
        ("systemic_antitumor", "washout_antitumor", 14, None, 5, False),
        ("radiotherapy", "washout_radiotherapy", 28, None, None, False),
        ("donor_lymphocyte_infusion", "washout_dli", 42, None, None, False),
        ("intrathecal", "washout_intrathecal", 7, None, None, False),
        ("gene_modified_cell_therapy", "washout_cell_therapy", None, 6, None, False),
        ("vaccine", "vaccine", 28, None, None, False),
        ("major_surgery", "major_surgery", 28, None, None, False),
        ("diagnostic_biopsy", None, None, None, None, False),
    ],
)
def test_washout_table_of_4_4(category, criterion, days, months, half_lives, ignore):
    row = STUDY.washout(category)
    assert (row.criterion, row.days, row.months, row.half_lives, row.ignore_physiological_replacement) == (
        criterion,
        days,
        months,
        half_lives,
        ignore,
    )
    assert row.blocks is (criterion is not None)


def test_washouts_in_table_order():
    assert STUDY.exposure_categories == (
        "systemic_steroid",
        "systemic_antitumor",
        "radiotherapy",
        "donor_lymphocyte_infusion",
        "intrathecal",
        "gene_modified_cell_therapy",
        "vaccine",
        "major_surgery",
        "diagnostic_biopsy",
    )
    assert STUDY.exposure_criteria == (
        "washout_steroid",
        "washout_antitumor",
        "washout_radiotherapy",
        "washout_dli",
        "washout_intrathecal",
        "washout_cell_therapy",
        "vaccine",
        "major_surgery",
    )


def test_unknown_category_is_a_key_error():
    with pytest.raises(KeyError):
        STUDY.washout("chemotherapy")


def test_the_study_is_frozen():
    with pytest.raises(FrozenInstanceError):
        STUDY.eligibility.qtc_max_ms = 500
    with pytest.raises(FrozenInstanceError):
        STUDY.version = "2"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(criterion="x", days=3, months=6),
        dict(criterion="x"),
        dict(criterion="x", months=6, half_lives=5),
        dict(criterion="x", days=0),
        dict(criterion="x", days=-3),
        dict(criterion="x", days=Decimal("3")),
        dict(criterion=None, days=3),
    ],
)
def test_washout_refuses_inconsistent_rows(kwargs):
    with pytest.raises(ValueError):
        Washout("c", **kwargs)


def test_a_category_listed_twice_is_refused():
    with pytest.raises(ValueError):
        Study("P", "v", washouts=(Washout("a", "washout_dli", days=1), Washout("a", "washout_dli", days=2)))


# --- an amendment is data: check(study=...) follows it --------------------------------

AMENDMENT = replace(
    STUDY,
    version="2.0 (amendment 1)",
    eligibility=replace(STUDY.eligibility, qtc_max_ms=Decimal("470"), ecog_max=2, coagulation_uln_ratio=Decimal("2.0")),
    washouts=tuple(replace(w, days=21) if w.category == "radiotherapy" else w for w in STUDY.washouts),
)


def test_an_amendment_changes_the_limits_used():
    case = eligible_case(qtc_ms=475, ecog=2, inr=2.4, inr_uln=1.2)
    original, amended = statuses(check(case)), statuses(check(case, study=AMENDMENT))
    assert (original["cardiovascular"], amended["cardiovascular"]) == ("pass", "fail")
    assert (original["ecog"], amended["ecog"]) == ("fail", "pass")
    assert (original["coagulation"], amended["coagulation"]) == ("fail", "pass")


def test_an_amendment_changes_a_washout():
    case = eligible_case(first_infusion_date="2024-05-20", prior_therapies=[exposure("radiotherapy", "2024-04-29")])
    assert statuses(check(case))["washout_radiotherapy"] == "fail"
    assert statuses(check(case, study=AMENDMENT))["washout_radiotherapy"] == "pass"


def test_criteria_texts_follow_the_study():
    texts = dict(criteria(AMENDMENT))
    assert texts["ecog"] == "ECOG <= 2"
    assert texts["washout_radiotherapy"] == "radiotherapy within 3 weeks"
    assert texts["coagulation"] == "INR and aPTT <= 2 x ULN"
    assert dict(criteria())["washout_radiotherapy"] == "radiotherapy within 4 weeks"


def test_a_study_whose_washouts_feed_an_unknown_criterion_is_refused():
    odd = replace(STUDY, washouts=(*STUDY.washouts, Washout("hyperthermia", "washout_heat", days=7)))
    with pytest.raises(ValueError, match="study"):
        check(eligible_case(), study=odd)


def test_an_added_category_feeding_a_known_criterion_is_checked():
    added = replace(STUDY, washouts=(*STUDY.washouts, Washout("hypomethylating_agent", "washout_antitumor", days=10)))
    case = eligible_case(
        first_infusion_date="2024-05-20", prior_therapies=[exposure("hypomethylating_agent", "2024-05-12")]
    )
    assert statuses(check(case, study=added))["washout_antitumor"] == "fail"
    with pytest.raises(ValueError, match="category"):
        check(case)  # unknown to the original protocol


def test_default_limits_are_the_dataclass_defaults():
    assert EligibilityLimits() == STUDY.eligibility
