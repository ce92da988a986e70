"""ASTCT 2019 CRS and ICANS grading (PROTOCOL 6), table-driven at every threshold,
plus Hypothesis properties of the algebra (grade range, worst-of, monotonicity).

Case ids quote the protocol text they check."""

import ast
import itertools
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellstudy.adverse_events import grading
from cellstudy.adverse_events.grading import (
    CEREBRAL_EDEMA_GRADES,
    CONSCIOUSNESS_GRADES,
    HYPOTENSION_GRADES,
    HYPOXIA_GRADES,
    ICE_ITEMS,
    MOTOR_WEAKNESS_GRADES,
    SEIZURE_GRADES,
    crs_components,
    crs_grade,
    ice_score,
    icans_components,
    icans_grade,
)


def crs(**changes):
    """A febrile patient with neither hypotension nor hypoxia (grade 1), changed."""
    return {"max_temp_c": 38.5, "fever_masked": False, "hypotension": "none", "hypoxia": "none", **changes}


def icans(**changes):
    """No ICANS (ICE 10, every domain normal), changed."""
    return {
        "ice_score": 10,
        "consciousness": "normal",
        "seizure": "none",
        "motor_weakness": "none",
        "cerebral_edema": "none",
        **changes,
    }


def without(d, key):
    return {k: v for k, v in d.items() if k != key}


# ======================================================================================
# CRS
# ======================================================================================

# --- fever (>= 38.0 C) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "temp, expected",
    [
        pytest.param(37.9, 0, id="No CRS without fever (>= 38.0 C): 37.9 (float)"),
        pytest.param(38.0, 1, id="fever (>= 38.0 C): 38.0 (float) is fever"),
        pytest.param(38.1, 1, id="fever (>= 38.0 C): 38.1 (float)"),
        pytest.param(Decimal("37.9"), 0, id="No CRS without fever (>= 38.0 C): Decimal 37.9"),
        pytest.param(Decimal("38.0"), 1, id="fever (>= 38.0 C): Decimal 38.0 is fever"),
        pytest.param(Decimal("38.00"), 1, id="fever (>= 38.0 C): Decimal 38.00 is fever"),
        pytest.param(Decimal("38.1"), 1, id="fever (>= 38.0 C): Decimal 38.1"),
        pytest.param(
            Decimal("37.99999999999999999999"), 0, id="No CRS without fever (>= 38.0 C): Decimal just below 38 is exact"
        ),
        pytest.param(37.99999, 0, id="No CRS without fever (>= 38.0 C): 37.99999 (float)"),
        pytest.param(38, 1, id="fever (>= 38.0 C): int 38 is fever"),
        pytest.param(37, 0, id="No CRS without fever (>= 38.0 C): int 37"),
        pytest.param(36.5, 0, id="No CRS without fever (>= 38.0 C): afebrile 36.5"),
        pytest.param(41.2, 1, id="fever (>= 38.0 C): high fever alone is grade 1"),
        pytest.param(25, 0, id="plausible temperature: 25 C is accepted"),
        pytest.param(45, 1, id="plausible temperature: 45 C is accepted"),
    ],
)
def test_fever_threshold(temp, expected):
    assert crs_grade(crs(max_temp_c=temp)) == expected


# --- fever_masked ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "temp, hypotension, hypoxia, expected",
    [
        pytest.param(None, "none", "none", 1, id="a masked fever with neither is grade 1 (no temperature)"),
        pytest.param(36.8, "none", "none", 1, id="a masked fever with neither is grade 1 (afebrile temperature)"),
        pytest.param(37.9, "none", "none", 1, id="fever is no longer required when masked: 37.9"),
        pytest.param(39.2, "none", "none", 1, id="masked with a fever anyway: grade 1"),
        pytest.param(None, "one_vasopressor", "none", 3, id="masked, no temperature: one vasopressor is grade 3"),
        pytest.param(36.8, "none", "high_flow", 3, id="masked, afebrile: high-flow oxygen is grade 3"),
        pytest.param(
            None,
            "multiple_vasopressors",
            "positive_pressure",
            4,
            id="masked, no temperature: multiple vasopressors and positive pressure",
        ),
        pytest.param(
            None,
            "no_vasopressor",
            "low_flow",
            2,
            id="masked, no temperature: hypotension without vasopressor and low flow",
        ),
    ],
)
def test_fever_masked(temp, hypotension, hypoxia, expected):
    d = crs(max_temp_c=temp, fever_masked=True, hypotension=hypotension, hypoxia=hypoxia)
    assert crs_grade(d) == expected


# --- hypotension and hypoxia with fever ------------------------------------------------


@pytest.mark.parametrize(
    "hypotension, expected",
    [
        pytest.param("none", 1, id="hypotension none with fever: grade 1"),
        pytest.param("no_vasopressor", 2, id="hypotension not requiring vasopressors: 2"),
        pytest.param("one_vasopressor", 3, id="hypotension requiring one vasopressor, with or without vasopressin: 3"),
        pytest.param("multiple_vasopressors", 4, id="hypotension requiring multiple vasopressors: 4"),
    ],
)
def test_hypotension_with_fever(hypotension, expected):
    assert crs_grade(crs(hypotension=hypotension)) == expected


@pytest.mark.parametrize(
    "hypoxia, expected",
    [
        pytest.param("none", 1, id="hypoxia none with fever: grade 1"),
        pytest.param("low_flow", 2, id="hypoxia low-flow (<= 6 L/min or blow-by): 2"),
        pytest.param("high_flow", 3, id="hypoxia high-flow (> 6 L/min, facemask, non-rebreather, Venturi): 3"),
        pytest.param("positive_pressure", 4, id="hypoxia positive pressure (CPAP, BiPAP, intubation): 4"),
    ],
)
def test_hypoxia_with_fever(hypoxia, expected):
    assert crs_grade(crs(hypoxia=hypoxia)) == expected


@pytest.mark.parametrize(
    "hypotension, hypoxia",
    [
        pytest.param(ht, hx, id=f"the grade is the worst of 1, hypotension and hypoxia: {ht}+{hx}")
        for ht, hx in itertools.product(HYPOTENSION_GRADES, HYPOXIA_GRADES)
    ],
)
def test_worst_of_hypotension_and_hypoxia(hypotension, hypoxia):
    expected = max(1, HYPOTENSION_GRADES[hypotension], HYPOXIA_GRADES[hypoxia])
    assert crs_grade(crs(hypotension=hypotension, hypoxia=hypoxia)) == expected
    assert crs_grade(crs(max_temp_c=None, fever_masked=True, hypotension=hypotension, hypoxia=hypoxia)) == expected


@pytest.mark.parametrize(
    "hypotension, hypoxia",
    [
        pytest.param(ht, hx, id=f"No CRS without fever (>= 38.0 C) unless masked: {ht}+{hx}")
        for ht, hx in itertools.product(HYPOTENSION_GRADES, HYPOXIA_GRADES)
    ],
)
def test_no_fever_not_masked_is_no_crs(hypotension, hypoxia):
    # ASTCT attributes hypotension/hypoxia to CRS only with fever or masking.
    assert crs_grade(crs(max_temp_c=37.9, hypotension=hypotension, hypoxia=hypoxia)) == 0


def test_keys_outside_the_contract_are_ignored():
    assert crs_grade(crs(hypoxia="low_flow", ae_id=17, note="x")) == 2


# --- CRS bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("key", grading.CRS_KEYS)
def test_crs_every_key_is_required(key):
    with pytest.raises(ValueError, match=f"^{key}: required"):
        crs_grade(without(crs(), key))


@pytest.mark.parametrize(
    "key, value",
    [
        pytest.param("max_temp_c", None, id="max_temp_c may be null only when masked"),
        pytest.param("max_temp_c", "38.5", id="max_temp_c: a string is not a number"),
        pytest.param("max_temp_c", "", id="max_temp_c: empty string"),
        pytest.param("max_temp_c", True, id="max_temp_c: bool where a number belongs (True)"),
        pytest.param("max_temp_c", False, id="max_temp_c: bool where a number belongs (False)"),
        pytest.param("max_temp_c", [38.5], id="max_temp_c: a list"),
        pytest.param("max_temp_c", float("nan"), id="max_temp_c: NaN"),
        pytest.param("max_temp_c", float("inf"), id="max_temp_c: infinity"),
        pytest.param("max_temp_c", Decimal("NaN"), id="max_temp_c: Decimal NaN"),
        pytest.param("max_temp_c", Decimal("sNaN"), id="max_temp_c: Decimal sNaN"),
        pytest.param("max_temp_c", Decimal("-Infinity"), id="max_temp_c: Decimal -Infinity"),
        pytest.param("max_temp_c", 24.9, id="max_temp_c: implausible below 25 C"),
        pytest.param("max_temp_c", 45.1, id="max_temp_c: implausible above 45 C"),
        pytest.param("max_temp_c", 101.3, id="max_temp_c: Fahrenheit is implausible"),
        pytest.param("max_temp_c", 385, id="max_temp_c: a missing decimal point"),
        pytest.param("max_temp_c", 0, id="max_temp_c: zero"),
        pytest.param("max_temp_c", -38.5, id="max_temp_c: negative"),
        pytest.param("fever_masked", None, id="fever_masked: null is not a bool"),
        pytest.param("fever_masked", 0, id="fever_masked: 0 is not a bool"),
        pytest.param("fever_masked", 1, id="fever_masked: 1 is not a bool"),
        pytest.param("fever_masked", "true", id="fever_masked: a string is not a bool"),
        pytest.param("hypotension", "None", id="hypotension: unknown value (case)"),
        pytest.param("hypotension", " none", id="hypotension: unknown value (space)"),
        pytest.param("hypotension", "no_vaccopressor", id="hypotension: misspelt value"),
        pytest.param("hypotension", "vasopressin", id="hypotension: unknown value"),
        pytest.param("hypotension", None, id="hypotension: null"),
        pytest.param("hypotension", 3, id="hypotension: a grade is not a value"),
        pytest.param("hypotension", ["none"], id="hypotension: a list"),
        pytest.param("hypoxia", "blow_by", id="hypoxia: unknown value"),
        pytest.param("hypoxia", "", id="hypoxia: empty"),
        pytest.param("hypoxia", None, id="hypoxia: null"),
        pytest.param("hypoxia", 2, id="hypoxia: a grade is not a value"),
        pytest.param("hypoxia", {"low_flow"}, id="hypoxia: a set"),
    ],
)
def test_crs_bad_input(key, value):
    with pytest.raises(ValueError, match=f"^{key}: "):
        crs_grade(crs(**{key: value}))


@pytest.mark.parametrize("value", [24.9, 45.1, "38.5", True, float("nan")])
def test_crs_temperature_is_checked_even_when_masked(value):
    with pytest.raises(ValueError, match="^max_temp_c: "):
        crs_grade(crs(max_temp_c=value, fever_masked=True))


@pytest.mark.parametrize("d", [None, [], "max_temp_c", 38.5])
def test_crs_input_must_be_a_dict(d):
    with pytest.raises(ValueError):
        crs_grade(d)


# --- CRS components and driver ---------------------------------------------------------


@pytest.mark.parametrize(
    "d, grade, drivers, components, basis",
    [
        pytest.param(
            crs(max_temp_c=37.2), 0, [], {"fever": 0, "hypotension": 0, "hypoxia": 0}, None, id="no CRS: no driver"
        ),
        pytest.param(
            crs(max_temp_c=37.2, hypotension="one_vasopressor"),
            0,
            [],
            {"fever": 0, "hypotension": 3, "hypoxia": 0},
            None,
            id="No CRS without fever: hypotension is reported but drives nothing",
        ),
        pytest.param(
            crs(),
            1,
            ["fever"],
            {"fever": 1, "hypotension": 0, "hypoxia": 0},
            "temperature",
            id="fever alone = 1, driven by fever",
        ),
        pytest.param(
            crs(max_temp_c=None, fever_masked=True),
            1,
            ["fever"],
            {"fever": 1, "hypotension": 0, "hypoxia": 0},
            "masked",
            id="masked fever alone = 1, driven by fever (masked)",
        ),
        pytest.param(
            crs(max_temp_c=39.0, fever_masked=True),
            1,
            ["fever"],
            {"fever": 1, "hypotension": 0, "hypoxia": 0},
            "temperature",
            id="recorded fever is the basis even when masked",
        ),
        pytest.param(
            crs(hypotension="one_vasopressor", hypoxia="low_flow"),
            3,
            ["hypotension"],
            {"fever": 1, "hypotension": 3, "hypoxia": 2},
            "temperature",
            id="hypotension drives grade 3",
        ),
        pytest.param(
            crs(hypotension="no_vasopressor", hypoxia="positive_pressure"),
            4,
            ["hypoxia"],
            {"fever": 1, "hypotension": 2, "hypoxia": 4},
            "temperature",
            id="hypoxia drives grade 4",
        ),
        pytest.param(
            crs(hypotension="one_vasopressor", hypoxia="high_flow"),
            3,
            ["hypotension", "hypoxia"],
            {"fever": 1, "hypotension": 3, "hypoxia": 3},
            "temperature",
            id="tie: both drivers listed",
        ),
    ],
)
def test_crs_components(d, grade, drivers, components, basis):
    result = crs_components(d)
    assert result["grade"] == grade == crs_grade(d)
    assert result["drivers"] == drivers
    assert result["driver"] == (", ".join(drivers) if drivers else None)
    assert result["components"] == components
    assert result["fever_basis"] == basis


def test_crs_components_single_driver_is_a_name():
    result = crs_components(crs(hypotension="one_vasopressor", hypoxia="low_flow"))
    assert result["driver"] == "hypotension"


# ======================================================================================
# ICANS
# ======================================================================================


@pytest.mark.parametrize(
    "score, expected",
    [
        pytest.param(10, 0, id="ICE 10 gives 0"),
        pytest.param(9, 1, id="ICE 7-9 gives 1: 9"),
        pytest.param(8, 1, id="ICE 7-9 gives 1: 8"),
        pytest.param(7, 1, id="ICE 7-9 gives 1: 7"),
        pytest.param(6, 2, id="ICE 3-6 gives 2: 6"),
        pytest.param(5, 2, id="ICE 3-6 gives 2: 5"),
        pytest.param(4, 2, id="ICE 3-6 gives 2: 4"),
        pytest.param(3, 2, id="ICE 3-6 gives 2: 3"),
        pytest.param(2, 3, id="ICE 0-2 gives 3: 2"),
        pytest.param(1, 3, id="ICE 0-2 gives 3: 1"),
        pytest.param(0, 3, id="ICE 0-2 gives 3: 0"),
        pytest.param(None, 0, id="ICE null gives 0 (consciousness decides)"),
    ],
)
def test_ice_score_thresholds(score, expected):
    assert icans_grade(icans(ice_score=score)) == expected


@pytest.mark.parametrize(
    "key, value, expected",
    [
        pytest.param("consciousness", "normal", 0, id="consciousness normal 0"),
        pytest.param("consciousness", "awakens_spontaneously", 1, id="consciousness awakens_spontaneously 1"),
        pytest.param("consciousness", "awakens_to_voice", 2, id="consciousness awakens_to_voice 2"),
        pytest.param("consciousness", "awakens_to_tactile", 3, id="consciousness awakens_to_tactile 3"),
        pytest.param("consciousness", "unarousable", 4, id="consciousness unarousable 4"),
        pytest.param("seizure", "none", 0, id="seizure none 0"),
        pytest.param("seizure", "rapidly_resolving", 3, id="seizure rapidly resolving 3"),
        pytest.param("seizure", "prolonged_or_repetitive", 4, id="seizure prolonged (> 5 min) or repetitive 4"),
        pytest.param("motor_weakness", "none", 0, id="motor weakness none 0"),
        pytest.param("motor_weakness", "deep_focal", 4, id="deep focal motor weakness 4"),
        pytest.param("cerebral_edema", "none", 0, id="cerebral edema none 0"),
        pytest.param("cerebral_edema", "focal", 3, id="cerebral edema focal 3"),
        pytest.param("cerebral_edema", "diffuse", 4, id="cerebral edema diffuse 4"),
    ],
)
def test_icans_domains(key, value, expected):
    assert icans_grade(icans(**{key: value})) == expected


@pytest.mark.parametrize(
    "changes, expected",
    [
        pytest.param(
            {"ice_score": None, "consciousness": "unarousable"}, 4, id="ICE null, unarousable: consciousness decides, 4"
        ),
        pytest.param(
            {"ice_score": None, "consciousness": "awakens_to_tactile"},
            3,
            id="ICE null, awakens to tactile: consciousness decides, 3",
        ),
        pytest.param({"ice_score": None}, 0, id="ICE null, consciousness normal: consciousness decides, 0"),
        pytest.param(
            {"ice_score": 0, "consciousness": "awakens_spontaneously"},
            3,
            id="ICE 0 awake with global aphasia is grade 3",
        ),
        pytest.param({"ice_score": 0, "consciousness": "unarousable"}, 4, id="ICE 0 unarousable is grade 4"),
        pytest.param(
            {"ice_score": 8, "consciousness": "awakens_to_voice"}, 2, id="worst component: consciousness 2 over ICE 1"
        ),
        pytest.param({"ice_score": 5, "seizure": "rapidly_resolving"}, 3, id="worst component: seizure 3 over ICE 2"),
        pytest.param(
            {"ice_score": 9, "motor_weakness": "deep_focal"},
            4,
            id="worst component: deep focal motor weakness 4 over ICE 1",
        ),
        pytest.param({"ice_score": 2, "cerebral_edema": "focal"}, 3, id="worst component: ICE 3 and focal edema 3"),
        pytest.param(
            {"ice_score": 6, "cerebral_edema": "diffuse", "seizure": "rapidly_resolving"},
            4,
            id="worst component: diffuse edema 4 over seizure 3 and ICE 2",
        ),
    ],
)
def test_icans_worst_component(changes, expected):
    assert icans_grade(icans(**changes)) == expected


def test_icans_worst_component_exhaustive():
    """The grade is the worst component, over every combination of inputs."""

    def ice(score):
        return 0 if score is None or score == 10 else 1 if score >= 7 else 2 if score >= 3 else 3

    for score, c, s, m, e in itertools.product(
        [None, *range(11)], CONSCIOUSNESS_GRADES, SEIZURE_GRADES, MOTOR_WEAKNESS_GRADES, CEREBRAL_EDEMA_GRADES
    ):
        d = icans(ice_score=score, consciousness=c, seizure=s, motor_weakness=m, cerebral_edema=e)
        expected = max(
            ice(score), CONSCIOUSNESS_GRADES[c], SEIZURE_GRADES[s], MOTOR_WEAKNESS_GRADES[m], CEREBRAL_EDEMA_GRADES[e]
        )
        assert icans_grade(d) == expected, d


# --- ICANS bad input -------------------------------------------------------------------


@pytest.mark.parametrize("key", grading.ICANS_KEYS)
def test_icans_every_key_is_required(key):
    with pytest.raises(ValueError, match=f"^{key}: required"):
        icans_grade(without(icans(), key))


@pytest.mark.parametrize(
    "key, value",
    [
        pytest.param("ice_score", 11, id="ice_score out of range: 11"),
        pytest.param("ice_score", -1, id="ice_score out of range: -1"),
        pytest.param("ice_score", 100, id="ice_score out of range: 100"),
        pytest.param("ice_score", True, id="ice_score: bool where a number belongs (True)"),
        pytest.param("ice_score", False, id="ice_score: bool where a number belongs (False)"),
        pytest.param("ice_score", 7.0, id="ice_score: float"),
        pytest.param("ice_score", 7.5, id="ice_score: fractional float"),
        pytest.param("ice_score", Decimal(7), id="ice_score: Decimal"),
        pytest.param("ice_score", "7", id="ice_score: string"),
        pytest.param("ice_score", "", id="ice_score: empty string"),
        pytest.param("ice_score", [7], id="ice_score: list"),
        pytest.param("consciousness", "awake", id="consciousness: unknown value"),
        pytest.param("consciousness", "Normal", id="consciousness: unknown value (case)"),
        pytest.param("consciousness", None, id="consciousness: null"),
        pytest.param("consciousness", 0, id="consciousness: a grade is not a value"),
        pytest.param("seizure", "focal", id="seizure: unknown value"),
        pytest.param("seizure", None, id="seizure: null"),
        pytest.param("seizure", True, id="seizure: bool"),
        pytest.param("motor_weakness", "hemiparesis", id="motor_weakness: unknown value"),
        pytest.param("motor_weakness", None, id="motor_weakness: null"),
        pytest.param("motor_weakness", False, id="motor_weakness: bool"),
        pytest.param("cerebral_edema", "papilledema", id="cerebral_edema: unknown value"),
        pytest.param("cerebral_edema", None, id="cerebral_edema: null"),
        pytest.param("cerebral_edema", ["focal"], id="cerebral_edema: list"),
    ],
)
def test_icans_bad_input(key, value):
    with pytest.raises(ValueError, match=f"^{key}: "):
        icans_grade(icans(**{key: value}))


@pytest.mark.parametrize("d", [None, [], "ice_score", 10])
def test_icans_input_must_be_a_dict(d):
    with pytest.raises(ValueError):
        icans_grade(d)


# --- ICANS components and driver -------------------------------------------------------


@pytest.mark.parametrize(
    "changes, grade, drivers",
    [
        pytest.param({}, 0, [], id="no ICANS: no driver"),
        pytest.param({"ice_score": 8}, 1, ["ice_score"], id="ICE drives grade 1"),
        pytest.param(
            {"ice_score": 8, "consciousness": "awakens_to_voice"},
            2,
            ["consciousness"],
            id="consciousness drives grade 2",
        ),
        pytest.param(
            {"ice_score": None, "consciousness": "unarousable"},
            4,
            ["consciousness"],
            id="ICE null: consciousness decides and drives",
        ),
        pytest.param(
            {"ice_score": 2, "seizure": "rapidly_resolving", "cerebral_edema": "focal"},
            3,
            ["ice_score", "seizure", "cerebral_edema"],
            id="tie: all drivers listed in table order",
        ),
        pytest.param(
            {"motor_weakness": "deep_focal", "cerebral_edema": "diffuse", "seizure": "rapidly_resolving"},
            4,
            ["motor_weakness", "cerebral_edema"],
            id="tie at grade 4",
        ),
    ],
)
def test_icans_components(changes, grade, drivers):
    d = icans(**changes)
    result = icans_components(d)
    assert result["grade"] == grade == icans_grade(d)
    assert result["drivers"] == drivers
    assert result["driver"] == (", ".join(drivers) if drivers else None)
    assert list(result["components"]) == list(grading.ICANS_KEYS)
    assert max(result["components"].values()) == grade


# ======================================================================================
# ICE score
# ======================================================================================


def items(**changes):
    return {key: True for key in ICE_ITEMS} | changes


def test_ice_has_ten_items():
    assert len(ICE_ITEMS) == len(set(ICE_ITEMS)) == 10


@pytest.mark.parametrize(
    "values, expected",
    [
        pytest.param(items(), 10, id="all ten items correct: 10"),
        pytest.param({k: False for k in ICE_ITEMS}, 0, id="no item correct: 0"),
        pytest.param({k: 1 for k in ICE_ITEMS}, 10, id="items as int 1: 10"),
        pytest.param({k: 0 for k in ICE_ITEMS}, 0, id="items as int 0: 0"),
        pytest.param(
            items(orientation_year=False, orientation_month=0, orientation_city=False, orientation_hospital=False),
            6,
            id="orientation year, month, city, hospital: 4 points",
        ),
        pytest.param(items(naming_1=False, naming_2=False, naming_3=0), 7, id="naming three objects: 3 points"),
        pytest.param(
            items(follows_commands=False, writes_sentence=False, counts_backwards=False),
            7,
            id="commands, sentence, counting backwards: 1 point each",
        ),
    ],
)
def test_ice_score(values, expected):
    assert ice_score(values) == expected


@pytest.mark.parametrize("key", ICE_ITEMS)
def test_ice_score_each_item_is_one_point(key):
    assert ice_score(items(**{key: False})) == 9


@pytest.mark.parametrize("key", ICE_ITEMS)
def test_ice_score_every_item_is_required(key):
    with pytest.raises(ValueError, match=f"^{key}: required"):
        ice_score(without(items(), key))


@pytest.mark.parametrize("value", [2, -1, 1.0, 0.0, "1", "yes", None, Decimal(1), [1]])
def test_ice_score_bad_item_value(value):
    with pytest.raises(ValueError, match="^writes_sentence: "):
        ice_score(items(writes_sentence=value))


def test_ice_score_unknown_item():
    with pytest.raises(ValueError, match="^naming_4: "):
        ice_score(items(naming_4=True))


@pytest.mark.parametrize("value", [None, [], 10])
def test_ice_score_input_must_be_a_dict(value):
    with pytest.raises(ValueError):
        ice_score(value)


def test_ice_score_feeds_icans_grade():
    d = icans(ice_score=ice_score(items(naming_1=False, naming_2=False, naming_3=False, writes_sentence=False)))
    assert icans_grade(d) == 2


# ======================================================================================
# Purity (ARCHITECTURE: pure rules import neither Flask nor the database)
# ======================================================================================


def test_grading_is_pure():
    tree = ast.parse(Path(grading.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "math", "collections", "decimal", "typing"}


# ======================================================================================
# Properties
# ======================================================================================

temperatures = st.one_of(
    st.integers(25, 45),
    st.floats(25, 45, allow_nan=False),
    st.decimals(25, 45, places=2),
)


@st.composite
def crs_inputs(draw):
    masked = draw(st.booleans())
    temp = draw(st.one_of(st.none(), temperatures) if masked else temperatures)
    return {
        "max_temp_c": temp,
        "fever_masked": masked,
        "hypotension": draw(st.sampled_from(list(HYPOTENSION_GRADES))),
        "hypoxia": draw(st.sampled_from(list(HYPOXIA_GRADES))),
    }


@st.composite
def icans_inputs(draw):
    return {
        "ice_score": draw(st.one_of(st.none(), st.integers(0, 10))),
        "consciousness": draw(st.sampled_from(list(CONSCIOUSNESS_GRADES))),
        "seizure": draw(st.sampled_from(list(SEIZURE_GRADES))),
        "motor_weakness": draw(st.sampled_from(list(MOTOR_WEAKNESS_GRADES))),
        "cerebral_edema": draw(st.sampled_from(list(CEREBRAL_EDEMA_GRADES))),
    }


def _febrile(d):
    return (
        d["fever_masked"]
        or Decimal(repr(d["max_temp_c"]) if isinstance(d["max_temp_c"], float) else d["max_temp_c"]) >= 38
    )


@given(crs_inputs())
def test_property_crs_grade_is_0_to_4(d):
    assert crs_grade(d) in range(5)


@given(crs_inputs())
def test_property_crs_grade_is_the_max_of_components_when_febrile(d):
    result = crs_components(d)
    expected = max(result["components"].values()) if _febrile(d) else 0
    assert result["grade"] == expected == crs_grade(d)
    assert result["components"]["fever"] == (1 if _febrile(d) else 0)
    assert all(result["components"][k] == result["grade"] for k in result["drivers"])


def _worsen(grades):
    """Two values of one enum, the second at least as severe as the first."""
    return st.tuples(st.sampled_from(list(grades)), st.sampled_from(list(grades))).map(
        lambda pair: tuple(sorted(pair, key=grades.__getitem__))
    )


@given(crs_inputs(), _worsen(HYPOTENSION_GRADES), _worsen(HYPOXIA_GRADES))
def test_property_crs_worse_component_never_lowers_the_grade(d, hypotension, hypoxia):
    milder = crs_grade({**d, "hypotension": hypotension[0], "hypoxia": hypoxia[0]})
    worse = crs_grade({**d, "hypotension": hypotension[1], "hypoxia": hypoxia[1]})
    assert milder <= worse


@given(crs_inputs(), temperatures)
def test_property_crs_higher_temperature_or_masking_never_lowers_the_grade(d, other):
    grade = crs_grade(d)
    assert crs_grade({**d, "fever_masked": True}) >= grade
    if d["max_temp_c"] is not None:
        low, high = sorted(
            [d["max_temp_c"], other], key=lambda t: Decimal(repr(t)) if isinstance(t, float) else Decimal(t)
        )
        assert crs_grade({**d, "max_temp_c": low}) <= crs_grade({**d, "max_temp_c": high})


@given(icans_inputs())
def test_property_icans_grade_is_0_to_4(d):
    assert icans_grade(d) in range(5)


@given(icans_inputs())
def test_property_icans_grade_is_the_max_of_components(d):
    result = icans_components(d)
    assert result["grade"] == max(result["components"].values()) == icans_grade(d)
    assert result["drivers"] == (
        [k for k, g in result["components"].items() if g == result["grade"]] if result["grade"] else []
    )


@given(
    icans_inputs(),
    _worsen(CONSCIOUSNESS_GRADES),
    _worsen(SEIZURE_GRADES),
    _worsen(MOTOR_WEAKNESS_GRADES),
    _worsen(CEREBRAL_EDEMA_GRADES),
)
def test_property_icans_worse_component_never_lowers_the_grade(d, c, s, m, e):
    milder = icans_grade({**d, "consciousness": c[0], "seizure": s[0], "motor_weakness": m[0], "cerebral_edema": e[0]})
    worse = icans_grade({**d, "consciousness": c[1], "seizure": s[1], "motor_weakness": m[1], "cerebral_edema": e[1]})
    assert milder <= worse


@given(icans_inputs(), st.integers(0, 10), st.integers(0, 10))
def test_property_lower_ice_score_never_lowers_the_grade(d, a, b):
    # A null score is not on this scale: it contributes nothing, consciousness decides.
    low, high = sorted([a, b])
    assert icans_grade({**d, "ice_score": low}) >= icans_grade({**d, "ice_score": high})


@given(st.fixed_dictionaries({k: st.one_of(st.booleans(), st.integers(0, 1)) for k in ICE_ITEMS}))
def test_property_ice_score_is_the_sum_of_its_items(values):
    score = ice_score(values)
    assert score == sum(int(v) for v in values.values())
    assert 0 <= score <= 10
