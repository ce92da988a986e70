from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from ..auth.forms import SignatureForm


class ApproveForm(SignatureForm):
    """The investigator's approval: an e-signature (password re-entered, meaning accepted)."""

    amendment_id = HiddenField(validators=[DataRequired("Choose the amendment to approve.")])


class DecisionForm(FlaskForm):
    """Reject (investigator) or withdraw (admin) a proposal: a reason, audited."""

    amendment_id = HiddenField(validators=[DataRequired("Choose the amendment.")])
    reason = StringField("Reason", validators=[DataRequired("Give the reason."), Length(max=500)])


class AmendmentForm(FlaskForm):
    """A proposed amendment of the study settings (the values come from settings.editable_settings)."""

    version = StringField(
        "New version label", validators=[DataRequired("Name the amendment, e.g. '2.0 (amendment 1)'."), Length(max=60)]
    )
    reason = StringField("Reason", validators=[DataRequired("Give the reason for the change."), Length(max=500)])
    # issue 11: the amendment takes effect on this UTC date, once an investigator approved it
    effective_date = StringField(
        "Effective date (UTC)",
        description="YYYY-MM-DD: in force from 00:00 UTC that day "
        "(08:00 in Hangzhou), once an investigator has approved it.",
        validators=[
            DataRequired("Give the effective date (YYYY-MM-DD, a UTC date)."),
            Length(max=10, message="Effective date: enter the date as YYYY-MM-DD."),
        ],
    )
