"""ASTCT 2019 consensus grading of CRS and ICANS (PROTOCOL 6; the clinical source is
``reference/astct_crs_icans_2019.md``).

Pure functions over plain dicts: no Flask, no database. The AE form, the API and
external tools all call the same functions, whose contract is fixed by PROTOCOL 6:

- ``crs_grade(d) -> int`` and ``icans_grade(d) -> int``: 0 means no CRS/ICANS,
  1..4 the ASTCT grade; bad input raises ``ValueError`` whose message starts with the
  name of the offending key.
- ``crs_components(d)`` and ``icans_components(d)``: the same grade with the grade of
  each component and the component(s) that drove it, so that the UI can show a grade
  "with the component that drove it".
- ``ice_score(items)``: the ICE score (0..10) summed from its ten items.

Input rules shared by all functions:

- Every key of the contract is required; a missing key raises ``ValueError`` naming
  it. Keys outside the contract are ignored (callers may pass a whole AE record).
  ``ice_score`` is the exception: its ten item keys are fixed by this module, so an
  unknown key there is a typo and is refused.
- Enumerated values are matched exactly (lower case, no trimming): the contract gives
  the spelling and external tools send it as given.
- Numbers are ``int``, ``float`` or ``Decimal``, compared exactly (a float by its
  shortest repr, so 37.9 is 37.9 and not 37.899999...). ``bool`` is never a number and
  a numeric string is not a number.

Grade 5 (death from CRS/ICANS) is not computed here: ASTCT records it as the AE
outcome, not from the components.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# --------------------------------------------------------------------------------------
# Vocabulary (PROTOCOL 6): the spelling of every key and value of the contract
# --------------------------------------------------------------------------------------

CRS_KEYS = ("max_temp_c", "fever_masked", "hypotension", "hypoxia")
ICANS_KEYS = ("ice_score", "consciousness", "seizure", "motor_weakness", "cerebral_edema")

# ASTCT 2019 CRS: hypotension "not requiring vasopressors" 2, "one vasopressor, with or
# without vasopressin" 3, "multiple vasopressors (vasopressin excluded)" 4.
HYPOTENSION_GRADES = {
    "none": 0,
    "no_vasopressor": 2,
    "one_vasopressor": 3,
    "multiple_vasopressors": 4,
}
# ASTCT 2019 CRS: low-flow cannula (<= 6 L/min) or blow-by 2; high-flow (> 6 L/min),
# facemask, non-rebreather or Venturi 3; positive pressure (CPAP, BiPAP, intubation) 4.
HYPOXIA_GRADES = {
    "none": 0,
    "low_flow": 2,
    "high_flow": 3,
    "positive_pressure": 4,
}
CONSCIOUSNESS_GRADES = {
    "normal": 0,
    "awakens_spontaneously": 1,
    "awakens_to_voice": 2,
    "awakens_to_tactile": 3,
    "unarousable": 4,
}
SEIZURE_GRADES = {
    "none": 0,
    "rapidly_resolving": 3,
    "prolonged_or_repetitive": 4,
}
MOTOR_WEAKNESS_GRADES = {
    "none": 0,
    "deep_focal": 4,
}
CEREBRAL_EDEMA_GRADES = {
    "none": 0,
    "focal": 3,
    "diffuse": 4,
}

# ASTCT 2019: fever is a temperature >= 38.0 C; 38.0 itself is fever.
FEVER_THRESHOLD_C = Decimal("38.0")
# Not from ASTCT: a plausibility check of data entry. A maximum temperature outside
# 25..45 C (inclusive) is a typo (e.g. Fahrenheit, or a missing decimal point), not a
# clinical value, so it is refused rather than graded.
MIN_PLAUSIBLE_TEMP_C = Decimal(25)
MAX_PLAUSIBLE_TEMP_C = Decimal(45)

ICE_MIN, ICE_MAX = 0, 10

# The ten items of the ICE score (ASTCT 2019), one point each.
ICE_ITEMS = (
    "orientation_year",
    "orientation_month",
    "orientation_city",
    "orientation_hospital",
    "naming_1",
    "naming_2",
    "naming_3",
    "follows_commands",
    "writes_sentence",
    "counts_backwards",
)

# Order of components in results and in the list of drivers (the order of the ASTCT
# tables).
CRS_COMPONENTS = ("fever", "hypotension", "hypoxia")
ICANS_COMPONENTS = ICANS_KEYS


# --------------------------------------------------------------------------------------
# Input parsing: bad input raises ValueError naming the key
# --------------------------------------------------------------------------------------


def _require_mapping(d: Any, what: str) -> Mapping:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what}: expected a dict, got {type(d).__name__}")
    return d


def _require_keys(d: Mapping, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in d:
            raise ValueError(f"{key}: required")


def _enum_grade(d: Mapping, key: str, grades: dict[str, int]) -> int:
    value = d[key]
    # isinstance first: an unhashable value (a list) must be a ValueError, not a
    # TypeError from the dict lookup.
    if not isinstance(value, str) or value not in grades:
        allowed = ", ".join(repr(v) for v in grades)
        raise ValueError(f"{key}: expected one of {allowed}, got {value!r}")
    return grades[value]


def _temperature(value: Any) -> Decimal | None:
    """``max_temp_c`` as an exact Decimal, or None; refuses non-numbers and
    implausible values."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"max_temp_c: expected a number in degrees Celsius, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"max_temp_c: expected a finite number, got {value!r}")
        # float.__repr__ is the shortest repr, also for subclasses (e.g. numpy.float64)
        temp = Decimal(float.__repr__(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"max_temp_c: expected a finite number, got {value!r}")
        temp = value
    else:
        temp = Decimal(value)
    if not MIN_PLAUSIBLE_TEMP_C <= temp <= MAX_PLAUSIBLE_TEMP_C:
        raise ValueError(
            f"max_temp_c: {value!r} C is not a plausible body temperature "
            f"(expected {MIN_PLAUSIBLE_TEMP_C}..{MAX_PLAUSIBLE_TEMP_C} C); "
            "check the unit (Celsius) and the decimal point"
        )
    return temp


def _ice_grade(value: Any) -> int:
    # PROTOCOL 6: ICE 7-9 gives 1, 3-6 gives 2, 0-2 gives 3, 10 gives 0; null (cannot
    # be assessed) gives 0 and the consciousness item decides.
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ice_score: expected an integer {ICE_MIN}..{ICE_MAX} or null, got {value!r}")
    if not ICE_MIN <= value <= ICE_MAX:
        raise ValueError(f"ice_score: must be {ICE_MIN}..{ICE_MAX}, got {value}")
    if value == 10:
        return 0
    if value >= 7:
        return 1
    if value >= 3:
        return 2
    return 3


def _result(grade: int, components: dict[str, int]) -> dict[str, Any]:
    drivers = [name for name, g in components.items() if grade > 0 and g == grade]
    return {
        "grade": grade,
        # a single name for display; on a tie, all of them in table order
        "driver": ", ".join(drivers) if drivers else None,
        "drivers": drivers,
        "components": components,
    }


# --------------------------------------------------------------------------------------
# CRS
# --------------------------------------------------------------------------------------


def crs_components(d: Mapping) -> dict[str, Any]:
    """The CRS grade with the grade of each component and what drove it.

    Returns ``{"grade": int, "driver": str | None, "drivers": [str, ...],
    "fever_basis": "temperature" | "masked" | None, "components": {"fever": 0 | 1,
    "hypotension": 0..4, "hypoxia": 0..4}}``. ``drivers`` lists every component whose
    grade equals the result, in table order (fever, hypotension, hypoxia), and is
    empty at grade 0; ``driver`` is the same names joined with ", " (None at grade 0).

    The components are graded as recorded. Fever is a gate, not only a component:
    without fever (>= 38.0 C) and without masking the grade is 0 even if hypotension
    or hypoxia is recorded (their component grades are still reported, so the UI can
    say why this is not CRS). Otherwise the grade is the highest component grade.
    """
    d = _require_mapping(d, "CRS components")
    _require_keys(d, CRS_KEYS)

    masked = d["fever_masked"]
    if not isinstance(masked, bool):
        raise ValueError(f"fever_masked: expected true or false, got {masked!r}")
    temp = _temperature(d["max_temp_c"])
    # PROTOCOL 6: "max_temp_c may be null only when masked".
    if temp is None and not masked:
        raise ValueError(
            "max_temp_c: required unless fever_masked is true (antipyretic or anti-cytokine therapy given)"
        )
    hypotension = _enum_grade(d, "hypotension", HYPOTENSION_GRADES)
    hypoxia = _enum_grade(d, "hypoxia", HYPOXIA_GRADES)

    # ASTCT 2019: fever >= 38.0 C; once antipyretics or anti-cytokine therapy have been
    # given, fever is no longer required (PROTOCOL 6: fever_masked).
    if temp is not None and temp >= FEVER_THRESHOLD_C:
        fever_basis = "temperature"
    elif masked:
        fever_basis = "masked"
    else:
        fever_basis = None
    fever = 1 if fever_basis else 0
    components = {"fever": fever, "hypotension": hypotension, "hypoxia": hypoxia}

    # PROTOCOL 6: "No CRS without fever (>= 38.0 C) unless masked; with it, the grade
    # is the worst of 1, hypotension (2/3/4) and hypoxia (2/3/4)". ASTCT attributes
    # hypotension and hypoxia to CRS only in a febrile (or masked) patient; without
    # fever they are graded as their own CTCAE terms.
    grade = max(components.values()) if fever else 0
    result = _result(grade, components)
    result["fever_basis"] = fever_basis
    return result


def crs_grade(d: Mapping) -> int:
    """ASTCT 2019 CRS grade, 0 (no CRS) to 4 (PROTOCOL 6).

    ``d`` holds ``max_temp_c`` (int, float or Decimal in C; null only when
    ``fever_masked``), ``fever_masked`` (bool), ``hypotension`` ("none",
    "no_vasopressor", "one_vasopressor", "multiple_vasopressors") and ``hypoxia``
    ("none", "low_flow", "high_flow", "positive_pressure"); every key is required.

    - Fever is a temperature >= 38.0 C (38.0 itself is fever).
    - Without fever and not masked the grade is 0, even when hypotension or hypoxia is
      recorded: ASTCT attributes hypotension and hypoxia to CRS only with fever, or
      when antipyretic/anti-cytokine therapy masks it (the contract: "No CRS without
      fever (>= 38.0 C) unless masked"). Such findings are graded as CTCAE terms.
    - With fever or masking the grade is the worst of 1, hypotension
      (no_vasopressor 2, one_vasopressor 3, multiple_vasopressors 4) and hypoxia
      (low_flow 2, high_flow 3, positive_pressure 4); a masked fever with neither is 1.
    - A recorded temperature is checked even when masked.

    Raises ``ValueError`` naming the key for a missing key, a non-number, bool or
    string temperature, a temperature outside 25..45 C, a null temperature without
    masking, a non-bool ``fever_masked`` or an unknown hypotension/hypoxia value.
    """
    return crs_components(d)["grade"]


# --------------------------------------------------------------------------------------
# ICANS
# --------------------------------------------------------------------------------------


def icans_components(d: Mapping) -> dict[str, Any]:
    """The ICANS grade with the grade of each domain and what drove it.

    Returns ``{"grade": int, "driver": str | None, "drivers": [str, ...],
    "components": {"ice_score": 0..3, "consciousness": 0..4, "seizure": 0|3|4,
    "motor_weakness": 0|4, "cerebral_edema": 0|3|4}}``; the grade is the highest
    component grade. ``drivers`` lists every component whose grade equals it, in table
    order, and is empty at grade 0; ``driver`` is the same names joined with ", ".
    """
    d = _require_mapping(d, "ICANS components")
    _require_keys(d, ICANS_KEYS)
    components = {
        "ice_score": _ice_grade(d["ice_score"]),
        "consciousness": _enum_grade(d, "consciousness", CONSCIOUSNESS_GRADES),
        "seizure": _enum_grade(d, "seizure", SEIZURE_GRADES),
        "motor_weakness": _enum_grade(d, "motor_weakness", MOTOR_WEAKNESS_GRADES),
        "cerebral_edema": _enum_grade(d, "cerebral_edema", CEREBRAL_EDEMA_GRADES),
    }
    # ASTCT 2019: "the grade is the most severe event in any domain".
    return _result(max(components.values()), components)


def icans_grade(d: Mapping) -> int:
    """ASTCT 2019 ICANS grade, 0 (no ICANS) to 4 (PROTOCOL 6).

    ``d`` holds ``ice_score`` (int 0..10, or null when the patient cannot be
    assessed), ``consciousness`` ("normal", "awakens_spontaneously",
    "awakens_to_voice", "awakens_to_tactile", "unarousable"), ``seizure`` ("none",
    "rapidly_resolving", "prolonged_or_repetitive"), ``motor_weakness`` ("none",
    "deep_focal") and ``cerebral_edema`` ("none", "focal", "diffuse"); every key is
    required.

    The grade is the worst of: ICE 10 -> 0, 7-9 -> 1, 3-6 -> 2, 0-2 -> 3, null -> 0;
    consciousness 0/1/2/3/4 in the order above; seizure rapidly_resolving 3,
    prolonged_or_repetitive 4; deep focal motor weakness 4; cerebral edema focal 3,
    diffuse 4.

    A null ICE score contributes nothing and the consciousness item decides (ASTCT: an
    awake patient with ICE 0 is grade 3, an unarousable one grade 4). A null score with
    a normal level of consciousness is not refused: the contract fixes the result
    (consciousness decides) and the combination is for a data query, not for the rule.

    Raises ``ValueError`` naming the key for a missing key, an ICE score that is not an
    int (bool, float, Decimal, str) or outside 0..10, or an unknown value.
    """
    return icans_components(d)["grade"]


# --------------------------------------------------------------------------------------
# ICE score
# --------------------------------------------------------------------------------------


def ice_score(items: Mapping) -> int:
    """The ICE score, 0..10, from its ten items (ASTCT 2019), one point each:

    orientation to year, month, city and hospital (``orientation_year``,
    ``orientation_month``, ``orientation_city``, ``orientation_hospital``); naming
    three objects (``naming_1``, ``naming_2``, ``naming_3``); following commands
    (``follows_commands``); writing a standard sentence (``writes_sentence``);
    counting backwards from 100 by ten (``counts_backwards``). See ``ICE_ITEMS``.

    Each value is ``True``/``False`` or the int 1/0 (1 = item done correctly). Every
    item is required; a missing or unknown key, or any other value, raises
    ``ValueError`` naming the key. A patient who cannot be assessed has no ICE score:
    pass ``ice_score=None`` to ``icans_grade`` instead of calling this.
    """
    items = _require_mapping(items, "ICE items")
    _require_keys(items, ICE_ITEMS)
    unknown = sorted(str(k) for k in items if k not in ICE_ITEMS)
    if unknown:
        raise ValueError(f"{unknown[0]}: not an ICE item (expected {', '.join(ICE_ITEMS)})")
    total = 0
    for key in ICE_ITEMS:
        value = items[key]
        # bool is an int subclass: True/False pass as 1/0; 2, 1.0 or "1" do not.
        if not isinstance(value, int) or value not in (0, 1):
            raise ValueError(f"{key}: expected true/false or 1/0, got {value!r}")
        total += int(value)
    return total
