"""Case report forms declared as data: a tuple of FieldSpecs (enrollment/fields.py)
becomes a WTForms class, canonical stored values and readable display values. The
screening CRF and every later CRF (infusion, lymphodepletion, visit, DLT) are built
here, so validation, storage and display never drift between forms."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import wtforms
from flask_wtf import FlaskForm
from wtforms import DateField, Field, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, NumberRange, Optional, StopValidation, ValidationError

from ..registry.fields import FieldSpec
from ..timeutil import utcnow

YES_NO = [("", "— not answered —"), ("yes", "Yes"), ("no", "No")]
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def opened_version(raw: Any) -> int:
    """The form version the user opened (a hidden field); garbage counts as stale, so the
    save is refused as a conflict, never a 500."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return -1


# What a number field takes (issue 13): a number a person measured or counted, written with
# digits. NaN and infinity are not numbers (Decimal compares them by raising, and a stored
# "NaN" would reach every rule); 1e999999 would be stored as a million digits. A decimal has
# at most 12 digits before the point and 6 after: its exact text (sign and point included)
# then fits the 20 characters a decimal column keeps (exposure.half_life_days), far above any
# dose, volume or lab value of the protocol. A whole number (a cell count) has at most 15
# digits: exact in every JSON reader (2^53).
MAX_INTEGER_DIGITS = 12
MAX_PLACES = 6
MAX_WHOLE_DIGITS = 15


class _Number:
    """The checks shared by the number fields: a blank answer is "not answered" (Optional
    then ends validation); an unreadable one is refused at the field, naming it, and the
    range checks do not run on it (they would only repeat the refusal)."""

    def _refuse(self, what: str) -> ValueError:
        self.data = None
        return ValueError(f"{self.label.text}: {what}")

    def pre_validate(self, form):
        if self.process_errors:
            raise StopValidation()


class DecimalField(_Number, wtforms.DecimalField):
    """Every decimal field of every form (field_for, and the hand-written forms use it too):
    WTForms' own accepts "NaN", "Infinity" and "1e999999". The name stays DecimalField:
    registry.columns reads a log column's kind from it."""

    def __init__(self, label=None, validators=None, **kwargs):
        kwargs.setdefault("places", None)
        super().__init__(label, validators, **kwargs)

    def process_formdata(self, valuelist):
        if not valuelist:
            return
        raw = (valuelist[0] or "").strip()
        if not raw:
            self.data = None
            return
        try:
            value = Decimal(raw)
        except (InvalidOperation, ValueError):
            value = None
        if value is None:
            raise self._refuse("enter a number written with digits, such as 12.5.")
        if not value.is_finite():
            raise self._refuse("enter a number written with digits, such as 12.5 (NaN and infinity are not numbers).")
        if value.adjusted() >= MAX_INTEGER_DIGITS:
            raise self._refuse(f"enter a number of at most {MAX_INTEGER_DIGITS} digits before the decimal point.")
        if value.as_tuple().exponent < -MAX_PLACES:
            raise self._refuse(f"enter at most {MAX_PLACES} decimal places.")
        self.data = value


class IntegerField(_Number, wtforms.IntegerField):
    """Every whole-number field of the CRFs: at most MAX_WHOLE_DIGITS digits (a larger one
    would not stay exact in a JSON reader; 5,000 digits would not even parse)."""

    def process_formdata(self, valuelist):
        if not valuelist:
            return
        raw = (valuelist[0] or "").strip()
        if not raw:
            self.data = None
            return
        sign = raw[0] in "+-"
        digits = raw[1:] if sign else raw
        if not (digits.isascii() and digits.isdigit()):
            raise self._refuse("enter a whole number, such as 12.")
        if len(digits.lstrip("0")) > MAX_WHOLE_DIGITS:
            raise self._refuse(f"enter a whole number of at most {MAX_WHOLE_DIGITS} digits.")
        self.data = int(raw)


def greater_than_zero(message: str = "Must be greater than zero.") -> Callable[[FlaskForm, Field], None]:
    def check(form: FlaskForm, field: Field) -> None:
        if field.data is not None and field.data <= 0:
            raise ValidationError(message)

    return check


def not_in_future(form: FlaskForm, field: Field) -> None:
    """The site's today (set by the view as form.today), not the server's."""
    today = getattr(form, "today", None) or utcnow().astimezone().date()
    if field.data and field.data > today:
        raise ValidationError("This date cannot be in the future.")


def valid_time(form: FlaskForm, field: Field) -> None:
    if field.data and not TIME_RE.match(field.data.strip()):
        raise ValidationError("Enter a time as HH:MM (24-hour clock).")


class YesNoField(SelectField):
    """A tri-state answer: yes / no / not answered (missing)."""

    def __init__(self, label=None, validators=None, **kwargs):
        super().__init__(label, validators, choices=YES_NO, **kwargs)

    def process_data(self, value):
        self.data = {True: "yes", False: "no"}.get(value, "")

    @property
    def value(self):
        return {"yes": True, "no": False}.get(self.data)


def _bounds_message(low, high) -> str:
    if low is not None and high is not None:
        return f"Enter a value between {low} and {high}."
    return f"Enter a value of at least {low}." if low is not None else f"Enter a value of at most {high}."


def field_for(spec: FieldSpec) -> Any:
    """The WTForms field of one FieldSpec (every answer optional: drafts may be partial)."""
    kwargs = {"description": spec.help or ""}
    validators = [Optional()]
    if spec.kind == "date":
        if not spec.future:
            validators.append(not_in_future)
        return DateField(spec.label, validators=validators, format="%Y-%m-%d", **kwargs)
    if spec.kind in ("number", "int"):
        if spec.min is not None or spec.max is not None:
            validators.append(NumberRange(min=spec.min, max=spec.max, message=_bounds_message(spec.min, spec.max)))
        if spec.positive:
            validators.append(greater_than_zero())
        if spec.kind == "int":
            return IntegerField(spec.label, validators=validators, **kwargs)
        return DecimalField(spec.label, validators=validators, **kwargs)
    if spec.kind == "bool":
        return YesNoField(spec.label, validators=[Optional()], **kwargs)
    if spec.kind == "choice":
        return SelectField(
            spec.label, choices=[("", "— not answered —"), *spec.choices], validators=[Optional()], **kwargs
        )
    if spec.kind == "time":
        return StringField(spec.label, validators=[Optional(), valid_time], **kwargs)
    if spec.kind == "text":
        length = Length(max=spec.max or 2000)
        if spec.max and spec.max <= 100:  # a code or a short name: one line
            return StringField(spec.label, validators=[Optional(), length], **kwargs)
        return TextAreaField(spec.label, validators=[Optional(), length], **kwargs)
    raise ValueError(f"no form field for kind {spec.kind}")


class CrfForm(FlaskForm):
    """Base of every generated CRF form: the version opened and a reason for change."""

    SPECS: tuple = ()
    version = HiddenField()
    reason = TextAreaField(
        "Reason for change", validators=[Length(max=500)], description="Required when changing a completed form."
    )

    def values(self) -> dict:
        """The submitted answers as Python values (None = not answered)."""
        out = {}
        for spec in self.SPECS:
            field = self[spec.name]
            if isinstance(field, YesNoField):
                out[spec.name] = field.value
            elif isinstance(field.data, str):
                out[spec.name] = field.data.strip() or None
            else:
                out[spec.name] = field.data
        return out


def form_class(name: str, specs: Iterable[FieldSpec], base: type[CrfForm] = CrfForm, **extra: Any) -> type[CrfForm]:
    return type(name, (base,), {"SPECS": tuple(specs), **{s.name: field_for(s) for s in specs}, **extra})


def to_stored(spec: FieldSpec, value: Any) -> Any:
    """A form value -> the canonical JSON value kept on the record (exact decimals as text)."""
    if value is None or value == "":
        return None
    if spec.kind == "date":
        return value if isinstance(value, str) else value.isoformat()
    if spec.kind == "number":
        return format(Decimal(value), "f")
    return value  # int, bool, choice, text, time are JSON-native


def from_stored(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    if spec.kind == "date":
        return date.fromisoformat(value)
    if spec.kind == "number":
        return Decimal(value)
    return value


def stored_values(specs_by_name: Mapping[str, FieldSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in values.items():
        spec = specs_by_name.get(name)
        out[name] = to_stored(spec, value) if spec else (value if value not in ("", False) else None)
    return out


def form_data(record: Any, specs: Iterable[FieldSpec]) -> dict[str, Any]:
    """A saved record's values for a form's `data=` (plus the version it was opened at)."""
    data = {spec.name: from_stored(spec, (record.data or {}).get(spec.name)) for spec in specs}
    data["version"] = record.version
    return data


def display(spec: FieldSpec, value: Any) -> str:
    """A stored value as a person reads it: labels for coded values, units."""
    if value is None:
        return "—"
    if spec.kind == "bool":
        return "Yes" if value else "No"
    if spec.kind == "choice":
        return dict(spec.choices).get(value, str(value))
    return f"{value} {spec.unit}" if spec.unit else str(value)


def missing(specs: Iterable[FieldSpec], values: Mapping[str, Any], skip: Collection[str] = ()) -> list[str]:
    return [s.name for s in specs if s.name not in skip and values.get(s.name) is None]
