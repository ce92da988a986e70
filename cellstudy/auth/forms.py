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
    confirm = BooleanField(
        "I understand that this electronic signature is the legally binding equivalent of my handwritten signature.",
        validators=[InputRequired("Tick the box to confirm the meaning of your signature.")],
    )


class UserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(min=2, max=64)])
    full_name = StringField("Printed name", validators=[DataRequired(), Length(max=120)])
    role = SelectField("Role", choices=[(r, r.replace("_", " ")) for r in ROLES])
    sites = SelectMultipleField("Sites", choices=[])
    password = PasswordField(
        "Initial password", validators=[DataRequired(), Length(min=12, message="At least 12 characters.")]
    )
