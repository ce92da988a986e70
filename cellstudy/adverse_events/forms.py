"""Forms of the adverse-event screens, generated from the specs in fields.py."""

from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, IntegerField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange

from ..records.crf import form_class, not_in_future
from .fields import AE_FIELDS, CRS_FIELDS, GRADE_CHOICES, ICANS_FIELDS

AeForm = form_class("AeForm", AE_FIELDS)
CrsForm = form_class("CrsForm", CRS_FIELDS)
IcansForm = form_class("IcansForm", ICANS_FIELDS)


class ChangeGradeForm(FlaskForm):
    """A change in the patient (not a correction): the new grade and the day it began."""

    version = HiddenField()
    new_grade = SelectField(
        "New grade", choices=[("", "— choose —"), *GRADE_CHOICES], validators=[DataRequired("Choose the new grade.")]
    )
    change_date = DateField(
        "Since", validators=[DataRequired("Enter the date the grade changed (YYYY-MM-DD)."), not_in_future]
    )


class RemoveAeForm(FlaskForm):
    version = HiddenField()
    reason = TextAreaField(
        "Reason for removal",
        validators=[DataRequired("Give the reason for removing this AE."), Length(max=500)],
        description="e.g. entered for the wrong subject, or a duplicate of another AE.",
    )


class ReportForm(FlaskForm):
    """The investigator's signed SAE (or SUSAR) report."""

    password = PasswordField(
        "Investigator password (e-signature)", validators=[DataRequired("Re-enter your password to sign the report.")]
    )


class DismissForm(FlaskForm):
    visit_id = IntegerField(validators=[DataRequired()])
    lab = StringField(validators=[DataRequired(), Length(max=40)])
    grade = IntegerField(validators=[DataRequired(), NumberRange(min=1, max=5)])
    reason = StringField(
        "Reason", validators=[DataRequired("Give the reason for dismissing the suggestion."), Length(max=500)]
    )
