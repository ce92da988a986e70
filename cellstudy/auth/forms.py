from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, EqualTo, InputRequired, Length

from .models import ROLES
from .passwords import MAX_LENGTH


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired("Enter your user name."), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired("Enter your password.")])


class SignatureForm(FlaskForm):
    """E-signature: the signer re-enters the password and accepts the meaning."""

    password = PasswordField("Your password", validators=[DataRequired("Re-enter your password to sign.")])
    confirm = BooleanField(
        "I understand that this electronic signature is the legally binding equivalent of my handwritten signature.",
        validators=[InputRequired("Tick the box to confirm the meaning of your signature.")],
    )


class UserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(min=2, max=64)])
    full_name = StringField("Printed name", validators=[DataRequired(), Length(max=120)])
    role = SelectField("Role", choices=[(r, r.replace("_", " ")) for r in ROLES])
    sites = SelectMultipleField("Sites", choices=[])
    # the policy (length, guessability) is the service's: auth.service.check_new_password
    password = PasswordField("Initial password", validators=[DataRequired("Enter an initial password.")])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired("Enter your current password.")])
    new_password = PasswordField(
        "New password", validators=[DataRequired("Enter a new password."), Length(max=MAX_LENGTH)]
    )
    confirm_password = PasswordField(
        "New password again",
        validators=[DataRequired("Repeat the new password."), EqualTo("new_password", "The two new passwords differ.")],
    )


class ResetPasswordForm(FlaskForm):
    """An administrator's reset: a temporary password the user must change at the next log-in."""

    username = SelectField("User", choices=[], validate_choice=True)
    password = PasswordField(
        "Temporary password", validators=[DataRequired("Enter a temporary password."), Length(max=MAX_LENGTH)]
    )
