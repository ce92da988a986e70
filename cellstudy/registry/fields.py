"""A field of a case report form, specified once (issue 12: the bottom layer).

Pure data. The checkers validate their input from these specs, the web forms are
generated from them (records/crf.py), the PDFs, the audit labels and the monitoring
catalogue read them, so a label, range or choice list changes in one place.

``kind`` is one of ``date``, ``number`` (int, float or Decimal), ``int`` (an int only),
``bool`` and ``choice`` (one of ``choices``, given as ``(value, label)`` pairs);
``text`` (free text) and ``time`` (HH:MM) are for the CRFs of later forms. ``min``/``max`` are inclusive bounds;
``positive`` additionally excludes zero (a zero ULN or zero creatinine is bad input,
PROTOCOL 4.1). ``female_only`` fields are asked only when sex is F.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

KINDS = frozenset({"date", "number", "int", "bool", "choice", "text", "time"})


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    kind: str
    section: str
    unit: str | None = None
    help: str | None = None
    choices: tuple[tuple[str, str], ...] | None = None
    min: int | None = None
    max: int | None = None
    female_only: bool = False
    positive: bool = False
    future: bool = False  # a date that may lie ahead (a planned date); others may not

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if (self.kind == "choice") != (self.choices is not None):
            raise ValueError(f"{self.name}: choices go with kind 'choice' only")

    @property
    def choice_values(self) -> tuple[str, ...]:
        return tuple(value for value, _ in self.choices or ())


def sections(specs: Iterable[FieldSpec]) -> list[str]:
    """The sections of a form, in the order its fields first name them."""
    out: list[str] = []
    for spec in specs:
        if spec.section not in out:
            out.append(spec.section)
    return out
