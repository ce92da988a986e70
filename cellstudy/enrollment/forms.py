"""WTForms for the screening CRF (generated from the field specs of PROTOCOL 4.2),
the exposure log, registration, enrolment and screen failure."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ..auth.forms import SignatureForm
from ..records.crf import CrfForm, DecimalField, field_for, greater_than_zero, not_in_future
from .fields import EXPOSURE_CATEGORIES, OTHER_CATEGORY, SCREENING_FIELDS


class _ScreeningBase(CrfForm):
    SPECS = SCREENING_FIELDS
    prior_therapies_none = BooleanField(
        "No prior therapies or procedures to record",
        description="Tick when the prior-therapy log is reviewed and empty.",
    )

    def values(self) -> dict:
        out = super().values()
        out["prior_therapies_none"] = True if self.prior_therapies_none.data else None
        return out


ScreeningForm = type("ScreeningForm", (_ScreeningBase,), {spec.name: field_for(spec) for spec in SCREENING_FIELDS})


class ExposureForm(FlaskForm):
    version = HiddenField()
    category = SelectField(
        "Category",
        choices=[("", "— choose —"), *EXPOSURE_CATEGORIES, OTHER_CATEGORY],
        validators=[DataRequired("Choose a category.")],
    )
    name = StringField("Name", validators=[DataRequired("Enter the drug, treatment or procedure."), Length(max=200)])
    start_date = DateField("First dose / start date", validators=[Optional(), not_in_future])
    last_date = DateField(
        "Last dose / treatment date",
        validators=[Optional()],
        description="The last dose or treatment day (for a vaccine, the day given). "
        "Washouts count from this date (PROTOCOL 4.4).",
    )
    half_life_days = DecimalField(
        "Half-life",
        places=None,
        validators=[Optional(), greater_than_zero("A half-life must be greater than zero.")],
        description="Days; systemic antitumor therapy only. Leave empty when unknown (14-day washout).",
    )
    physiological_replacement = BooleanField("Physiological replacement dose (steroids)")
    indication = StringField("Indication", validators=[Optional(), Length(max=200)])
    reason = TextAreaField("Reason for change", validators=[Length(max=500)])
    deviation_reason = TextAreaField(
        "Protocol-deviation reason (vaccine inside the no-vaccination window)", validators=[Optional(), Length(max=500)]
    )
    password = PasswordField("Investigator password (signs the deviation)", validators=[Optional()])

    def validate_last_date(self, field):
        if field.data and self.start_date.data and field.data < self.start_date.data:
            raise ValidationError("The last date cannot be before the start date.")

    def validate_physiological_replacement(self, field):
        if field.data and self.category.data != "systemic_steroid":
            raise ValidationError("Only a systemic steroid can be a physiological replacement.")

    def validate_half_life_days(self, field):
        if field.data is not None and self.category.data != "systemic_antitumor":
            raise ValidationError("A half-life is recorded for systemic antitumor therapy only.")

    def values(self) -> dict:
        return {
            "category": self.category.data,
            "name": self.name.data.strip(),
            "start_date": self.start_date.data,
            "last_date": self.last_date.data,
            "half_life_days": format(self.half_life_days.data, "f") if self.half_life_days.data is not None else None,
            "physiological_replacement": bool(self.physiological_replacement.data),
            "indication": (self.indication.data or "").strip() or None,
        }


class RemoveForm(FlaskForm):
    version = HiddenField()
    reason = TextAreaField(
        "Reason for removal", validators=[DataRequired("Give a reason for the removal."), Length(max=500)]
    )


class RegisterForm(FlaskForm):
    site = SelectField("Site", choices=[], validators=[DataRequired("Choose the site.")])


class EnrolForm(SignatureForm):
    screening_version = HiddenField()
    dose_level = SelectField("Dose level", choices=[])
    dose_level_reason = TextAreaField(
        "Reason for a dose level other than the proposed one", validators=[Optional(), Length(max=500)]
    )


class ScreenFailForm(FlaskForm):
    note = TextAreaField("Note (optional)", validators=[Length(max=500)])


class RescreenForm(FlaskForm):
    reason = TextAreaField(
        "Reason for re-screening", validators=[DataRequired("Give the reason for re-screening."), Length(max=500)]
    )


class ReconfirmForm(SignatureForm):
    """Re-confirm eligibility after a change (issue 11): the screening version it was judged on."""

    screening_version = HiddenField()


class EligibilityDeviationForm(SignatureForm):
    reason = TextAreaField(
        "Reason for the protocol deviation",
        validators=[
            DataRequired("Give the reason for the deviation."),
            Length(max=2000, message="The reason is too long (2000 characters at most)."),
        ],
        description="Why the subject stays on study although eligibility is not re-confirmed, and what was done.",
    )
