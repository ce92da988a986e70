"""The audit trail's labels come from the form specs (pure; no app, no database)."""

from __future__ import annotations

import pytest

from cellstudy.adverse_events.fields import AE_FIELDS, CRS_FIELDS, ICANS_FIELDS
from cellstudy.audit_viewer import labels
from cellstudy.enrollment.fields import EXPOSURE_FIELDS, SCREENING_FIELDS
from cellstudy.infusions.fields import DLT_FIELDS, INFUSION_FIELDS, LYMPHODEPLETION_FIELDS, VISIT_FIELDS

SPECS = {
    "screening": SCREENING_FIELDS,
    "exposure": EXPOSURE_FIELDS,
    "lymphodepletion": LYMPHODEPLETION_FIELDS,
    "infusion": INFUSION_FIELDS,
    "visit": VISIT_FIELDS,
    "dlt_assessment": DLT_FIELDS,
    "adverse_event": AE_FIELDS,
    "crs_assessment": CRS_FIELDS,
    "icans_assessment": ICANS_FIELDS,
}


@pytest.mark.parametrize("form", sorted(SPECS))
def test_every_spec_field_has_its_label_and_every_code_its_label(form):
    for spec in SPECS[form]:
        label = labels.field_label(form, spec.name)
        assert label == (f"{spec.label} ({spec.unit})" if spec.unit else spec.label)
        for code, text in spec.choices or ():
            assert labels.value_label(form, spec.name, code) == text
        if spec.kind == "bool":
            assert labels.value_label(form, spec.name, "yes") == "Yes"
            assert labels.value_label(form, spec.name, "no") == "No"


def test_the_same_field_name_is_labelled_per_form():
    # "grade" on the AE is the CTCAE grade choice; "weight_kg" differs between forms
    assert labels.value_label("adverse_event", "grade", "3") == "Grade 3 — severe"
    assert labels.value_label("ae_grade_episode", "grade", "4") == "Grade 4 — life-threatening"
    assert labels.field_label("infusion", "weight_kg") == "Weight on the day (kg)"
    assert labels.field_label("screening", "weight_kg") == "Weight (kg)"
    assert labels.value_label("visit", "response", "CRi").startswith("CRi — CR with incomplete")
    assert labels.value_label("exposure", "category", "vaccine") == "Vaccine"


def test_values_that_are_not_codes_are_shown_as_stored():
    assert labels.value_label("screening", "weight_kg", "62.5") == "62.5"
    assert labels.value_label("screening", "sex", "X") == "X"  # not a code: shown, never hidden
    assert labels.value_label("screening", "sex", None) == ""
    assert labels.value_label(None, None, "text") == "text"
    assert labels.field_label("screening", "no_such_field") == "no_such_field"
    assert labels.field_label("screening", None) == ""


def test_system_values_statuses_and_actions():
    assert labels.value_label("screening", "status", "complete") == "Complete"
    assert labels.value_label("subject", "status", "screen_failed") == "Screen failed"
    assert labels.field_label("subject", "subject_number") == "Subject number"
    assert labels.action_label("unsign") == "Signature invalidated"
    assert labels.action_label("sign") == "Signed"
    assert labels.action_label("something_new") == "Something new"
    assert labels.form_label("adverse_event") == "Adverse event"
    assert labels.form_label("safety_sae") == "Safety listing: SAE"
    assert labels.form_label("unknown_form") == "Unknown form"
    assert labels.form_label(None) == ""
    codes = [c for c, _ in labels.form_choices()]
    assert set(SPECS) <= set(codes) and len(codes) == len(set(codes))


def test_failed_criteria_and_eligibility_reviews_read_as_words_not_codes():
    """Issue 11: screen-failure codes and the eligibility review's fields are labelled."""
    from cellstudy.enrollment.eligibility import CRITERIA

    texts = dict(CRITERIA)
    shown = labels.value_label("eligibility_decision", "failed_criteria", '["transaminases", "washout_radiotherapy"]')
    assert (
        shown == f"{texts['transaminases']}; {texts['washout_radiotherapy'][:1].upper()}"
        f"{texts['washout_radiotherapy'][1:]}"
    )
    assert "transaminases" not in shown and "washout_" not in shown
    assert labels.value_label("eligibility_decision", "failed_criteria", "not json") == "not json"
    assert labels.form_label("eligibility_review") == "Eligibility review (after enrolment)"
    assert (
        labels.value_label("eligibility_review", "cause", "screening_changed")
        == "Screening data changed after enrolment"
    )
    assert labels.value_label("eligibility_review", "resolution", "deviation") == "Protocol deviation recorded"
    assert labels.field_label("eligibility_review", "detail") == "Detail"
