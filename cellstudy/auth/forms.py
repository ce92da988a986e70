from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, InputRequired, Length

from .models import ROLES


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired("Enter your user name."), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired("Enter your password.")])


class SignatureForm(FlaskForm):
    """E-signature: the signer re-enters the password and accepts the meaning."""

    password = PasswordField("Your password", validators=[DataRequired("Re-enter your password to sign.")])
    confirm = BooleanField("I understand that this electronic signature is the legally binding equivalent "
                           "of my handwritten signature.",
                           validators=[InputRequired("Tick the box to confirm the meaning of your signature.")])


class UserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(min=2, max=64)])
    full_name = StringField("Printed name", validators=[DataRequired(), Length(max=120)])
    role = SelectField("Role", choices=[(r, r.replace("_", " ")) for r in ROLES])
    sites = SelectMultipleField("Sites", choices=[])
    password = PasswordField("Initial password", validators=[DataRequired(), Length(min=12, message="At least 12 characters.")])


class AmendmentForm(FlaskForm):
    """A proposed amendment of the study settings (the values come from settings.editable_settings)."""

    version = StringField("New version label", validators=[DataRequired("Name the amendment, e.g. '2.0 (amendment 1)'."),
                                                           Length(max=60)])
    reason = StringField("Reason", validators=[DataRequired("Give the reason for the change."), Length(max=500)])
    # issue 11: the amendment takes effect on this UTC date, once an investigator approved it
    effective_date = StringField("Effective date (UTC)", description="YYYY-MM-DD: in force from 00:00 UTC that day "
                                 "(08:00 in Hangzhou), once an investigator has approved it.",
                                 validators=[DataRequired("Give the effective date (YYYY-MM-DD, a UTC date)."),
                                             Length(max=10, message="Effective date: enter the date as YYYY-MM-DD.")])
