"""WTForms for the screening CRF (generated from the field specs of PROTOCOL 4.2),
the exposure log, registration, enrolment and screen failure."""
from __future__ import annotations

from datetime import date

from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateField, DecimalField, HiddenField, IntegerField, SelectField, StringField,
                     TextAreaField)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from ..auth.forms import SignatureForm
from .fields import EXPOSURE_CATEGORIES, SCREENING_FIELDS

YES_NO = [("", "— not answered —"), ("yes", "Yes"), ("no", "No")]
# Dates that describe the past; the planned first infusion may lie ahead.
FUTURE_ALLOWED = {"first_infusion_date"}


def greater_than_zero(message="Must be greater than zero."):
    def check(form, field):
        if field.data is not None and field.data <= 0:
            raise ValidationError(message)
    return check


def not_in_future(form, field):
    """The site's today (set by the view as form.today), not the server's."""
    today = getattr(form, "today", None) or date.today()
    if field.data and field.data > today:
        raise ValidationError("This date cannot be in the future.")


class YesNoField(SelectField):
    """A tri-state answer: yes / no / not answered (missing)."""

    def __init__(self, label=None, validators=None, **kwargs):
        super().__init__(label, validators, choices=YES_NO, **kwargs)

    def process_data(self, value):
        self.data = {True: "yes", False: "no"}.get(value, "")

    @property
    def value(self):
        return {"yes": True, "no": False}.get(self.data)


def _field_for(spec):
    kwargs = {"description": spec.help or ""}
    validators = [Optional()]
    if spec.kind == "date":
        if spec.name not in FUTURE_ALLOWED:
            validators.append(not_in_future)
        return DateField(spec.label, validators=validators, format="%Y-%m-%d", **kwargs)
    if spec.kind in ("number", "int"):
        low = spec.min
        high = spec.max
        if low is not None or high is not None:
            bounds = f"between {low} and {high}" if (low is not None and high is not None) else (
                f"at least {low}" if low is not None else f"at most {high}")
            validators.append(NumberRange(min=low, max=high, message=f"Enter a value {bounds}."))
        if spec.positive:
            validators.append(greater_than_zero())
        if spec.kind == "int":
            return IntegerField(spec.label, validators=validators, **kwargs)
        return DecimalField(spec.label, validators=validators, places=None, **kwargs)
    if spec.kind == "bool":
        return YesNoField(spec.label, validators=[Optional()], **kwargs)
    if spec.kind == "choice":
        return SelectField(spec.label, choices=[("", "— not answered —"), *spec.choices],
                           validators=[Optional()], **kwargs)
    raise ValueError(f"no form field for kind {spec.kind}")


class _ScreeningBase(FlaskForm):
    version = HiddenField()
    prior_therapies_none = BooleanField("No prior therapies or procedures to record",
                                        description="Tick when the prior-therapy log is reviewed and empty.")
    reason = TextAreaField("Reason for change", validators=[Length(max=500)],
                           description="Required when changing a completed form.")

    def values(self) -> dict:
        """The submitted answers as Python values (None = not answered)."""
        out = {}
        for spec in SCREENING_FIELDS:
            field = self[spec.name]
            out[spec.name] = field.value if isinstance(field, YesNoField) else (field.data if field.data != "" else None)
        out["prior_therapies_none"] = True if self.prior_therapies_none.data else None
        return out


ScreeningForm = type("ScreeningForm", (_ScreeningBase,), {spec.name: _field_for(spec) for spec in SCREENING_FIELDS})


class ExposureForm(FlaskForm):
    version = HiddenField()
    category = SelectField("Category", choices=[("", "— choose —"), *EXPOSURE_CATEGORIES],
                           validators=[DataRequired("Choose a category.")])
    name = StringField("Name", validators=[DataRequired("Enter the drug, treatment or procedure."), Length(max=200)])
    start_date = DateField("First dose / start date", validators=[Optional(), not_in_future])
    last_date = DateField("Last dose / treatment date", validators=[Optional()],
                          description="The last dose or treatment day (for a vaccine, the day given). "
                                      "Washouts count from this date (PROTOCOL 4.4).")
    half_life_days = DecimalField("Half-life", places=None,
                                  validators=[Optional(), greater_than_zero("A half-life must be greater than zero.")],
                                  description="Days; systemic antitumor therapy only. Leave empty when unknown (14-day washout).")
    physiological_replacement = BooleanField("Physiological replacement dose (steroids)")
    indication = StringField("Indication", validators=[Optional(), Length(max=200)])
    reason = TextAreaField("Reason for change", validators=[Length(max=500)])

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
    reason = TextAreaField("Reason for removal", validators=[DataRequired("Give a reason for the removal."),
                                                             Length(max=500)])


class RegisterForm(FlaskForm):
    site = SelectField("Site", choices=[], validators=[DataRequired("Choose the site.")])


class EnrolForm(SignatureForm):
    screening_version = HiddenField()


class ScreenFailForm(FlaskForm):
    note = TextAreaField("Note (optional)", validators=[Length(max=500)])


class RescreenForm(FlaskForm):
    reason = TextAreaField("Reason for re-screening", validators=[DataRequired("Give the reason for re-screening."),
                                                                Length(max=500)])
