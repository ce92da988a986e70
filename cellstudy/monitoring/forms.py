"""Monitoring forms (issue 6). Every POST carries the CSRF token (FlaskForm)."""

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional

ASSIGNEES = (("coordinator", "Site coordinator"), ("investigator", "Investigator"))


class RaiseQueryForm(FlaskForm):
    target = SelectField(
        "Form",
        choices=[],
        validate_choice=False,
        description="A saved form, or a form not yet recorded (a missing-data query).",
    )
    field = StringField(
        "Field", validators=[Optional(), Length(max=64)], description="Leave empty for a query on the whole form."
    )
    text = TextAreaField("Query", validators=[DataRequired(message="Query: write the question."), Length(max=2000)])
    assignee_role = SelectField("To be answered by", choices=ASSIGNEES, default="coordinator")


class AnswerForm(FlaskForm):
    query_id = HiddenField()
    text = TextAreaField(
        "Answer",
        validators=[DataRequired(message="Answer: write a reply."), Length(max=2000)],
        description="To correct the value, change it on the form with a reason: the "
        "correction is linked to this query and answers it.",
    )


class ResolveForm(FlaskForm):
    query_id = HiddenField()
    action = SelectField("Action", choices=(("close", "Close"), ("reopen", "Re-open"), ("cancel", "Cancel")))
    text = TextAreaField(
        "Reply", validators=[Length(max=2000)], description="Required to re-open or cancel; optional to close."
    )


class VerifyForm(FlaskForm):
    target = HiddenField()  # "form:id"
    visit_id = HiddenField()
    fields = SelectMultipleField("Fields", choices=[], validate_choice=False)


class SignForm(FlaskForm):
    target = HiddenField()  # "form:id" or "casebook"
    password = PasswordField("Password", description="Re-enter your password to sign.")
    # a casebook with work outstanding: the ticked confirmation's text (issue 11)
    confirm_outstanding = StringField("Confirmation", validators=[Optional(), Length(max=20000)])


class LockForm(FlaskForm):
    target = HiddenField()  # "form:id" or "subject"
    reason = TextAreaField("Reason", validators=[Optional(), Length(max=500)])


class StudyLockForm(FlaskForm):
    reason = TextAreaField(
        "Reason", validators=[Optional(), Length(max=500)], description="E.g. database freeze before the analysis."
    )
    confirm = BooleanField(
        "I understand that no clinical data of any subject can change until the study is unlocked",
        validators=[DataRequired(message="Tick the confirmation to lock the whole study.")],
    )


class UnlockForm(FlaskForm):
    lock_id = HiddenField()
    reason = TextAreaField("Reason for unlocking", validators=[Length(max=500)])
