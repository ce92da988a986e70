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
