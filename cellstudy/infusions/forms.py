"""Forms of the treatment and follow-up screens (issue 3)."""

from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from ..auth.forms import SignatureForm
from ..records.crf import CrfForm, form_class, not_in_future
from .fields import DLT_FIELDS, INFUSION_FIELDS, LYMPHODEPLETION_FIELDS, VISIT_FIELDS


class _Override:
    deviation_reason = TextAreaField(
        "Deviation reason (date outside the target window)", validators=[Optional(), Length(max=500)]
    )
    override_reason = TextAreaField(
        "Override reason (investigator)",
        validators=[Optional(), Length(max=500)],
        description="Only where the protocol allows an override; signed below.",
    )
    password = PasswordField("Investigator password (e-signature of the override)", validators=[Optional()])


class ScheduleForm(_Override, FlaskForm):
    proposed_date = DateField("Proposed date", validators=[DataRequired("Enter the proposed date as YYYY-MM-DD.")])


class RescheduleForm(_Override, FlaskForm):
    version = HiddenField()
    proposed_date = DateField("New date", validators=[DataRequired("Enter the new date as YYYY-MM-DD.")])
    reason = TextAreaField(
        "Reason for rescheduling", validators=[DataRequired("Give the reason for rescheduling."), Length(max=500)]
    )


class CancelForm(FlaskForm):
    version = HiddenField()
    reason = TextAreaField(
        "Reason for cancelling", validators=[DataRequired("Give the reason for cancelling."), Length(max=500)]
    )


InfusionForm = form_class(
    "InfusionForm",
    INFUSION_FIELDS,
    override_reason=TextAreaField(
        "Override reason (investigator)",
        validators=[Optional(), Length(max=500)],
        description="Only when the infusion is locked and the protocol allows an override.",
    ),
    override_password=PasswordField("Investigator password (e-signature of the override)", validators=[Optional()]),
)
LymphodepletionForm = form_class("LymphodepletionForm", LYMPHODEPLETION_FIELDS)
VisitForm = form_class("VisitForm", VISIT_FIELDS)
DltForm = form_class(
    "DltForm",
    DLT_FIELDS,
    password=PasswordField(
        "Investigator password", description="Completing the assessment is your e-signature.", validators=[Optional()]
    ),
)


class MissedForm(FlaskForm):
    version = HiddenField()
    reason = TextAreaField("Why was the visit missed?", validators=[DataRequired("Give the reason."), Length(max=500)])


class VaccineForm(FlaskForm):
    name = StringField("Vaccine", validators=[DataRequired("Name the vaccine."), Length(max=200)])
    last_date = DateField("Date given", validators=[DataRequired("Enter the date given as YYYY-MM-DD."), not_in_future])
    indication = StringField("Reason for vaccination", validators=[Optional(), Length(max=200)])
    deviation_reason = TextAreaField(
        "Protocol-deviation reason",
        validators=[Optional(), Length(max=500)],
        description="Required when the date is inside the no-vaccination window.",
    )
    password = PasswordField(
        "Investigator password",
        validators=[Optional()],
        description="A vaccine inside the window is signed by the investigator.",
    )


class ReviewForm(SignatureForm):
    comment = TextAreaField("Comment (optional)", validators=[Optional(), Length(max=1000)])


class DoseLevelMixin:
    dose_level = SelectField("Dose level", choices=[])
    dose_level_reason = TextAreaField(
        "Reason for a dose level other than proposed", validators=[Optional(), Length(max=500)]
    )


__all__ = [
    "CancelForm",
    "CrfForm",
    "DltForm",
    "DoseLevelMixin",
    "InfusionForm",
    "LymphodepletionForm",
    "MissedForm",
    "RescheduleForm",
    "ReviewForm",
    "ScheduleForm",
    "VaccineForm",
    "VisitForm",
]
