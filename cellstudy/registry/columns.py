"""The columns of a repeating log, read off the WTForms class its screen uses, so the
log's labels, help texts and choices are declared once, in that class (issue 12)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """A column of a log form: label and help from the screen's WTForms field."""

    name: str
    label: str
    kind: str = "text"
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    width: int = 3


_KINDS = {"DateField": "date", "BooleanField": "bool", "DecimalField": "number", "SelectField": "choice"}


def columns_of_form(form_class: type[Any], names: Iterable[str], widths: Iterable[int]) -> tuple[Column, ...]:
    """Columns of a log read off a WTForms class (its unbound fields)."""
    out = []
    for name, width in zip(names, widths, strict=True):
        unbound = getattr(form_class, name)
        label = unbound.kwargs.get("label") or (unbound.args[0] if unbound.args else name)
        choices = tuple((value, text) for value, text in unbound.kwargs.get("choices", ()) if value)
        kind = _KINDS.get(unbound.field_class.__name__, "text")
        out.append(Column(name, str(label), kind, str(unbound.kwargs.get("description") or ""), choices, width))
    return tuple(out)
