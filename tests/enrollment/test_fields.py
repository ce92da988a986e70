"""The screening field specification (PROTOCOL 4.2) shared by the checker and the form."""

from dataclasses import FrozenInstanceError

import pytest

from cellstudy.enrollment.fields import (
    EXPOSURE_CATEGORIES,
    EXPOSURE_CATEGORY_LABELS,
    EXPOSURE_FIELDS,
    FIELDS_BY_NAME,
    SCREENING_FIELDS,
    SECTIONS,
    FieldSpec,
)
from cellstudy.study import STUDY

# Every field of the table of PROTOCOL 4.2 except the prior_therapies log.
PROTOCOL_4_2_FIELDS = {
    "screening_date",
    "first_infusion_date",
    "date_of_birth",
    "sex",
    "weight_kg",
    "rr_aml_confirmed",
    "apl",
    "cll1_positive",
    "cd33_positive",
    "ecog",
    "life_expectancy_gt_12_weeks",
    "creatinine",
    "creatinine_uln",
    "creatinine_unit",
    "total_bilirubin",
    "total_bilirubin_uln",
    "alt",
    "alt_uln",
    "ast",
    "ast_uln",
    "inr",
    "inr_uln",
    "aptt",
    "aptt_uln",
    "childbearing_potential",
    "pregnancy_test",
    "dsa_mfi",
    "icf_signed_date",
    "allergy_to_study_drugs",
    "prior_allo_hsct",
    "vaccination_expected_during_study",
    "active_cns_leukemia",
    "other_malignancy_history",
    "other_malignancy_cr_date",
    "cns_disease_history",
    "active_autoimmune_disease",
    "qtc_ms",
    "lvef_percent",
    "nyha_class",
    "severe_arrhythmia",
    "cv_event_within_6_months",
    "uncontrolled_hypertension",
    "spo2_percent",
    "active_pulmonary_infection",
    "pulmonary_embolism",
    "copd",
    "interstitial_lung_disease",
    "uncontrolled_infection",
    "hiv_positive",
    "active_hbv",
    "active_hcv",
    "substance_abuse_history",
    "max_unresolved_prior_toxicity_grade",
    "pregnant_or_breastfeeding",
    "investigator_concern",
}


def test_every_field_of_4_2_is_specified_once():
    names = [spec.name for spec in SCREENING_FIELDS]
    assert len(names) == len(set(names))
    assert set(names) == PROTOCOL_4_2_FIELDS
    assert "prior_therapies" not in FIELDS_BY_NAME


def test_fields_by_name_indexes_the_list():
    assert list(FIELDS_BY_NAME) == [spec.name for spec in SCREENING_FIELDS]
    assert all(FIELDS_BY_NAME[spec.name] is spec for spec in SCREENING_FIELDS)


def test_sections_in_order():
    assert SECTIONS == (
        "Demographics & consent",
        "Disease",
        "Laboratory",
        "Organ function",
        "Medical history",
        "Prior therapies",
    )


def test_fields_are_grouped_by_section_in_section_order():
    order = [SECTIONS.index(spec.section) for spec in SCREENING_FIELDS]
    assert order == sorted(order)
    used = {spec.section for spec in SCREENING_FIELDS}
    assert used == set(SECTIONS) - {"Prior therapies"}  # the log has its own table


@pytest.mark.parametrize(
    "name, section",
    [
        ("screening_date", "Demographics & consent"),
        ("icf_signed_date", "Demographics & consent"),
        ("pregnancy_test", "Demographics & consent"),
        ("ecog", "Disease"),
        ("dsa_mfi", "Disease"),
        ("alt_uln", "Laboratory"),
        ("creatinine_unit", "Laboratory"),
        ("qtc_ms", "Organ function"),
        ("copd", "Organ function"),
        ("hiv_positive", "Medical history"),
        ("investigator_concern", "Medical history"),
    ],
)
def test_field_section(name, section):
    assert FIELDS_BY_NAME[name].section == section


@pytest.mark.parametrize(
    "name, kind",
    [
        ("screening_date", "date"),
        ("date_of_birth", "date"),
        ("other_malignancy_cr_date", "date"),
        ("sex", "choice"),
        ("creatinine_unit", "choice"),
        ("pregnancy_test", "choice"),
        ("weight_kg", "number"),
        ("creatinine", "number"),
        ("dsa_mfi", "number"),
        ("qtc_ms", "number"),
        ("lvef_percent", "number"),
        ("spo2_percent", "number"),
        ("ecog", "int"),
        ("nyha_class", "int"),
        ("max_unresolved_prior_toxicity_grade", "int"),
        ("apl", "bool"),
        ("pregnant_or_breastfeeding", "bool"),
    ],
)
def test_field_kind(name, kind):
    assert FIELDS_BY_NAME[name].kind == kind


def test_kinds_are_the_form_kinds():
    assert {spec.kind for spec in SCREENING_FIELDS} == {"date", "number", "int", "bool", "choice"}


@pytest.mark.parametrize(
    "name, values",
    [
        ("sex", ("F", "M")),
        ("creatinine_unit", ("umol/L", "mg/dL")),
        ("pregnancy_test", ("negative", "positive", "not_done")),
    ],
)
def test_choices_are_the_protocol_values(name, values):
    assert FIELDS_BY_NAME[name].choice_values == values
    assert all(label for _, label in FIELDS_BY_NAME[name].choices)


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("ecog", 0, 5),
        ("nyha_class", 1, 4),
        ("max_unresolved_prior_toxicity_grade", 0, 5),
        ("lvef_percent", 0, 100),
        ("spo2_percent", 0, 100),
    ],
)
def test_ranges(name, low, high):
    spec = FIELDS_BY_NAME[name]
    assert (spec.min, spec.max) == (low, high)


def test_every_number_refuses_negatives():
    for spec in SCREENING_FIELDS:
        if spec.kind == "number":
            assert spec.min == 0, spec.name


def test_ulns_and_creatinine_may_not_be_zero():
    positive = {spec.name for spec in SCREENING_FIELDS if spec.positive}
    assert positive == {
        "creatinine",
        "creatinine_uln",
        "total_bilirubin_uln",
        "alt_uln",
        "ast_uln",
        "inr_uln",
        "aptt_uln",
    }


@pytest.mark.parametrize(
    "name, label, unit",
    [
        ("alt", "ALT", "U/L"),
        ("alt_uln", "ALT upper limit of normal", "U/L"),
        ("ast", "AST", "U/L"),
        ("weight_kg", "Weight", "kg"),
        ("qtc_ms", "QTc", "ms"),
        ("lvef_percent", "LVEF", "%"),
        ("spo2_percent", "SpO2", "%"),
    ],
)
def test_labels_and_units_read_as_a_coordinator_expects(name, label, unit):
    assert (FIELDS_BY_NAME[name].label, FIELDS_BY_NAME[name].unit) == (label, unit)


def test_every_field_has_a_distinct_label():
    labels = [spec.label for spec in SCREENING_FIELDS]
    assert all(labels) and len(labels) == len(set(labels))


def test_only_the_childbearing_questions_are_female_only():
    # pregnant_or_breastfeeding is asked of everyone: PROTOCOL 4.3 makes it missing
    # whenever it is absent, whatever the sex.
    assert {s.name for s in SCREENING_FIELDS if s.female_only} == {"childbearing_potential", "pregnancy_test"}


def test_field_specs_are_frozen():
    with pytest.raises(FrozenInstanceError):
        FIELDS_BY_NAME["ecog"].max = 9


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="string"),
        dict(kind="choice"),
        dict(kind="bool", choices=(("a", "A"),)),
    ],
)
def test_field_spec_refuses_inconsistent_definitions(kwargs):
    with pytest.raises(ValueError):
        FieldSpec(**{"name": "x", "label": "X", "section": "Disease", **kwargs})


def test_exposure_categories_are_the_nine_of_4_4_in_study_order():
    assert len(EXPOSURE_CATEGORIES) == 9
    assert tuple(c for c, _ in EXPOSURE_CATEGORIES) == STUDY.exposure_categories
    assert all(label for _, label in EXPOSURE_CATEGORIES)
    assert EXPOSURE_CATEGORY_LABELS["donor_lymphocyte_infusion"].startswith("Donor")


def test_exposure_fields_are_the_columns_of_4_4():
    assert [s.name for s in EXPOSURE_FIELDS] == [
        "category",
        "name",
        "last_date",
        "half_life_days",
        "physiological_replacement",
    ]
    half_life = EXPOSURE_FIELDS[3]
    assert half_life.kind == "number" and half_life.positive and half_life.unit == "days"
