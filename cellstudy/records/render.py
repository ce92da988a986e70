"""Fast HTML for CRF fields. A screening form has ~60 fields: rendering each through a
Jinja macro and WTForms widgets cost more than the rest of the page together, so the
markup of `_macros.html`'s `field` is produced here in plain Python, the same HTML."""

from __future__ import annotations

from flask import g
from markupsafe import Markup, escape

_TEXT_KW = {
    "DateField": ' type="text" placeholder="YYYY-MM-DD" inputmode="numeric" autocomplete="off" size="12"',
    "DecimalField": ' type="text" inputmode="decimal" autocomplete="off" size="12"',
    "IntegerField": ' type="text" inputmode="numeric" autocomplete="off" size="6"',
    "StringField": ' type="text"',
}


def _input(f, extra: str, described: str) -> str:
    value = f._value()
    required = " required" if f.flags.required else ""
    return f'<input id="{escape(f.id)}" name="{escape(f.name)}"{extra} value="{escape(value)}"{described}{required}>'


def read_only() -> bool:
    """The page shows a locked CRF (records/views.py sets g.crf_lock): its fields render
    disabled, whatever template draws them (issue 11)."""
    return bool(g and g.get("crf_lock") is not None)


def _select(f, described: str) -> str:
    options = []
    for choice in f.iter_choices():
        value, label, selected = choice[0], choice[1], choice[2]
        options.append(f'<option{" selected" if selected else ""} value="{escape(value)}">{escape(label)}</option>')
    multiple = " multiple" if f.type == "SelectMultipleField" else ""
    return f'<select id="{escape(f.id)}" name="{escape(f.name)}"{multiple}{described}>{"".join(options)}</select>'


def render_field(f, unit: str | None = None, extra_class: str = "") -> Markup:
    kind = f.type
    fid = escape(f.id)
    # the attributes every control of the field carries: its help, and "disabled" when locked
    described = f' aria-describedby="{fid}-help"' + (" disabled" if read_only() else "")
    errors = f.errors
    parts = [f'<div class="field {escape(extra_class)}{" has-error" if errors else ""}">']
    if kind == "BooleanField":
        checked = " checked" if f.data else ""
        parts.append(
            f'<label class="check"><input id="{fid}" name="{escape(f.name)}" type="checkbox" value="y"'
            f"{checked}{described}> {escape(f.label.text)}</label>"
        )
    else:
        # issue 6: the field's open queries and SDV mark, set by the page's field_badges(record)
        badge = g.get("monitoring_badges", {}).get(f.name, "") if g else ""
        parts.append(
            f'<label for="{fid}">{escape(f.label.text)}{" " + badge if badge else ""}</label><div class="control">'
        )
        if kind in ("SelectField", "YesNoField", "SelectMultipleField"):
            parts.append(_select(f, described))
        elif kind == "TextAreaField":
            parts.append(f'<textarea id="{fid}" name="{escape(f.name)}"{described}>{escape(f._value())}</textarea>')
        elif kind == "PasswordField":
            parts.append(f'<input id="{fid}" name="{escape(f.name)}" type="password" value=""{described}>')
        else:
            extra = _TEXT_KW.get(kind, ' type="text"')
            if kind == "IntegerField" and unit == "cells":
                extra = extra.replace('size="6"', 'size="14"')
            parts.append(_input(f, extra, described))
        if unit:
            parts.append(f'<span class="unit">{escape(unit)}</span>')
        parts.append("</div>")
    if f.description:
        parts.append(f'<small id="{fid}-help" class="help">{escape(f.description)}</small>')
    for error in errors:
        parts.append(f'<div class="error" role="alert">{escape(error)}</div>')
    parts.append("</div>")
    html = "".join(parts)
    return Markup(html)  # every value and label is escape()d above  # nosec B704
