"""Property tests of the eligibility checker (Hypothesis): the algebra of PROTOCOL 4.1-4.4
that must hold for any screening case, not just the boundary table."""

import copy
import re
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellstudy.enrollment.eligibility import age_on, check, washout_blocks
from cellstudy.enrollment.fields import FIELDS_BY_NAME, SCREENING_FIELDS

from .eligibility_cases import CATEGORY_CODE, CODES, EXPOSURE_CODES, eligible_case, statuses

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CATEGORIES = [*CATEGORY_CODE, "diagnostic_biopsy"]
REFERENCE = date(2024, 5, 20)


# --- strategies -----------------------------------------------------------------------


def dates_as_entered(min_value=date(1920, 1, 1), max_value=date(2100, 12, 31)):
    """A date as a date object or an ISO string (PROTOCOL 4.1 takes both)."""
    return st.dates(min_value, max_value).flatmap(lambda d: st.sampled_from([d, d.isoformat()]))


def numbers_as_entered(decimal_value):
    """The same value as int (if whole), float (by its shortest repr) or Decimal."""
    options = [decimal_value, float(str(decimal_value))]
    if decimal_value == decimal_value.to_integral_value():
        options.append(int(decimal_value))
    return st.sampled_from(options)


def valid_value(spec):
    if spec.kind == "date":
        if spec.name == "date_of_birth":
            return dates_as_entered(date(1920, 1, 1), date(2010, 12, 31))
        return dates_as_entered(date(2015, 1, 1), date(2030, 12, 31))
    if spec.kind == "number":
        top = spec.max if spec.max is not None else 5000
        low = Decimal("0.01") if spec.positive else Decimal(spec.min or 0)
        return st.decimals(low, Decimal(top), places=2).flatmap(numbers_as_entered)
    if spec.kind == "int":
        return st.integers(spec.min, spec.max)
    if spec.kind == "bool":
        return st.booleans()
    return st.sampled_from(spec.choice_values)


@st.composite
def exposures(draw, dated=None):
    category = draw(st.sampled_from(CATEGORIES))
    item = {"category": category}
    # dated: True always, False never, None mostly (an undated one is missing data)
    if dated or (dated is None and draw(st.integers(0, 9)) < 8):
        offset = draw(st.integers(-10, 200))
        item["last_date"] = (REFERENCE - timedelta(days=offset)).isoformat()
    if draw(st.booleans()):
        item["half_life_days"] = draw(st.decimals(Decimal("0.01"), Decimal("10"), places=2).flatmap(numbers_as_entered))
    if draw(st.booleans()):
        item["physiological_replacement"] = draw(st.booleans())
    if draw(st.booleans()):
        item["name"] = draw(st.text(max_size=10))
    return item


@st.composite
def cases(draw, complete=False):
    """A valid case. Each field is present, null or absent (unless ``complete``)."""
    case = {}
    for spec in SCREENING_FIELDS:
        presence = "present" if complete else draw(st.sampled_from(["present", "present", "present", "null", "absent"]))
        if presence == "present":
            case[spec.name] = draw(valid_value(spec))
        elif presence == "null":
            case[spec.name] = None
    born, screened = case.get("date_of_birth"), case.get("screening_date")
    if born is not None and screened is not None:
        if date.fromisoformat(str(born)) > date.fromisoformat(str(screened)):
            case["date_of_birth"], case["screening_date"] = screened, born
    if complete or draw(st.integers(0, 4)):
        case["first_infusion_date"] = draw(st.sampled_from([REFERENCE, REFERENCE.isoformat()]))
        case["prior_therapies"] = draw(st.lists(exposures(True if complete else None), max_size=4))
    else:
        case["prior_therapies"] = draw(st.sampled_from([None, []]))
    return case


# --- (a) no criterion passes without the data it needs --------------------------------

# code -> alternative sets of fields; a pass needs every field of at least one set.
REQUIRES = {
    "age": [{"date_of_birth", "screening_date"}],
    "rr_aml": [{"rr_aml_confirmed"}],
    "target_antigen": [{"cll1_positive"}, {"cd33_positive"}],
    "ecog": [{"ecog"}],
    "life_expectancy": [{"life_expectancy_gt_12_weeks"}],
    "renal": [
        {"creatinine", "creatinine_uln"},
        {"creatinine", "date_of_birth", "screening_date", "sex", "weight_kg", "creatinine_unit"},
    ],
    "bilirubin": [{"total_bilirubin", "total_bilirubin_uln"}],
    "transaminases": [{"alt", "alt_uln", "ast", "ast_uln"}],
    "coagulation": [{"inr", "inr_uln", "aptt", "aptt_uln"}],
    "pregnancy_test": [{"pregnancy_test"}, {"sex"}],
    "dsa": [{"dsa_mfi"}],
    "consent": [{"icf_signed_date", "screening_date"}],
    "allergy": [{"allergy_to_study_drugs"}],
    **{code: [{"prior_therapies"}] for code in EXPOSURE_CODES if code != "vaccine"},
    "vaccine": [{"prior_therapies", "vaccination_expected_during_study"}],
    "prior_allo_hsct": [{"prior_allo_hsct"}],
    "cns_leukemia": [{"active_cns_leukemia"}],
    "apl": [{"apl"}],
    "other_malignancy": [{"other_malignancy_history"}],
    "cns_disease": [{"cns_disease_history"}],
    "autoimmune": [{"active_autoimmune_disease"}],
    "cardiovascular": [
        {
            "qtc_ms",
            "lvef_percent",
            "nyha_class",
            "severe_arrhythmia",
            "cv_event_within_6_months",
            "uncontrolled_hypertension",
        }
    ],
    "pulmonary": [
        {"spo2_percent", "active_pulmonary_infection", "pulmonary_embolism", "copd", "interstitial_lung_disease"}
    ],
    "infection": [{"uncontrolled_infection", "hiv_positive", "active_hbv", "active_hcv"}],
    "substance_abuse": [{"substance_abuse_history"}],
    "prior_toxicity": [{"max_unresolved_prior_toxicity_grade"}],
    "pregnancy_breastfeeding": [{"pregnant_or_breastfeeding"}],
    "investigator_concern": [{"investigator_concern"}],
}


def test_requires_names_every_code_and_only_real_fields():
    assert set(REQUIRES) == set(CODES)
    for alternatives in REQUIRES.values():
        for fields in alternatives:
            assert fields <= set(FIELDS_BY_NAME) | {"prior_therapies"}


def present(case, name):
    return case.get(name) is not None


@SETTINGS
@given(cases())
def test_no_criterion_passes_when_a_field_it_requires_is_absent(case):
    result = statuses(check(case))
    for code, alternatives in REQUIRES.items():
        if result[code] == "pass":
            assert any(all(present(case, f) for f in fields) for fields in alternatives), code


@SETTINGS
@given(cases(complete=True), st.data())
def test_dropping_one_required_field_stops_a_pass(case, data):
    single = [code for code, alternatives in REQUIRES.items() if len(alternatives) == 1]
    code = data.draw(st.sampled_from(single))
    field = data.draw(st.sampled_from(sorted(REQUIRES[code][0])))
    case[field] = None
    assert statuses(check(case))[code] != "pass"


@SETTINGS
@given(cases(), st.sampled_from(EXPOSURE_CODES), st.data())
def test_an_exposure_without_last_date_or_infusion_date_never_passes(case, code, data):
    category = data.draw(st.sampled_from([c for c, criterion in CATEGORY_CODE.items() if criterion == code]))
    undated = data.draw(st.booleans())
    item = {"category": category}
    if not undated:
        item["last_date"] = "2024-01-01"
        case["first_infusion_date"] = None
    case["prior_therapies"] = [*(case.get("prior_therapies") or []), item]
    assert statuses(check(case))[code] != "pass"


# --- (b) bad input raises ValueError naming the field ---------------------------------


def bad_value(spec):
    not_text = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2))
    if spec.kind == "number":
        return st.one_of(
            st.text(),
            st.booleans(),
            st.datetimes(),
            st.lists(st.integers(), max_size=2),
            st.decimals(max_value=Decimal("-0.001"), allow_nan=False, allow_infinity=False),
            st.floats(max_value=-1e-9),
            st.sampled_from([float("nan"), float("inf"), Decimal("NaN"), Decimal("Inf")]),
            *(
                [st.decimals(Decimal(spec.max) + Decimal("0.001"), Decimal(1000), allow_nan=False)]
                if spec.max is not None
                else []
            ),
            *([st.just(0), st.just(0.0)] if spec.positive else []),
        )
    if spec.kind == "date":
        return st.one_of(
            st.datetimes(),
            st.integers(),
            st.booleans(),
            st.floats(),
            st.text().filter(lambda s: not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", s)),
            st.dates().map(lambda d: d.strftime("%d/%m/%Y")),
        )
    if spec.kind == "int":
        return st.one_of(
            st.floats(),
            st.booleans(),
            st.text(),
            st.decimals(allow_nan=False),
            st.integers(max_value=spec.min - 1),
            st.integers(min_value=spec.max + 1),
        )
    if spec.kind == "bool":
        return st.one_of(st.integers(), st.text(), st.floats(), st.just([]))
    return st.one_of(not_text, st.text().filter(lambda s: s not in spec.choice_values))


@SETTINGS
@given(st.sampled_from(SCREENING_FIELDS).flatmap(lambda spec: st.tuples(st.just(spec.name), bad_value(spec))))
def test_bad_input_raises_value_error_naming_the_field(field_and_value):
    field, value = field_and_value
    try:
        check(eligible_case(**{field: value}))
    except ValueError as error:
        assert field in str(error)
    else:
        raise AssertionError(f"{field}={value!r} was accepted")


EXPOSURE_BAD = {
    "category": st.one_of(st.text().filter(lambda s: s not in CATEGORIES), st.integers(), st.none()),
    "last_date": st.one_of(st.datetimes(), st.integers(), st.text(max_size=8)),
    "half_life_days": st.one_of(
        st.decimals(max_value=0, allow_nan=False), st.text(min_size=1), st.booleans(), st.floats(max_value=0)
    ),
    "physiological_replacement": st.one_of(st.integers(), st.text(min_size=1)),
    "name": st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=1)),
}


@SETTINGS
@given(st.sampled_from(sorted(EXPOSURE_BAD)).flatmap(lambda key: st.tuples(st.just(key), EXPOSURE_BAD[key])))
def test_bad_exposure_raises_value_error_naming_the_field(key_and_value):
    key, value = key_and_value
    item = {"category": "systemic_antitumor", "last_date": "2024-01-01", key: value}
    try:
        check(eligible_case(prior_therapies=[item]))
    except ValueError as error:
        assert f"prior_therapies[0].{key}" in str(error)
    else:
        raise AssertionError(f"{key}={value!r} was accepted")


# --- (c) determinism and the tri-state rule -------------------------------------------


@SETTINGS
@given(cases())
def test_deterministic_complete_and_tri_state(case):
    snapshot = copy.deepcopy(case)
    result = check(case)
    assert case == snapshot, "check() must not modify its input"
    assert check(copy.deepcopy(case)) == result
    assert tuple(result["criteria"]) == CODES
    found = set(statuses(result).values())
    assert found <= {"pass", "fail", "missing"}
    expected = False if "fail" in found else None if "missing" in found else True
    assert result["eligible"] is expected


@SETTINGS
@given(cases(), st.data())
def test_unknown_keys_change_nothing(case, data):
    extra = data.draw(
        st.dictionaries(
            st.text(min_size=1).filter(lambda k: k not in FIELDS_BY_NAME and k != "prior_therapies"),
            st.one_of(st.text(), st.integers(), st.none(), st.datetimes()),
            max_size=3,
        )
    )
    assert check({**case, **extra}) == check(case)


@SETTINGS
@given(
    st.lists(st.sampled_from([s for s in SCREENING_FIELDS if s.kind == "number"]), min_size=1, unique=True), st.data()
)
def test_int_float_and_decimal_of_the_same_value_decide_alike(specs, data):
    as_decimal, as_float = {}, {}
    for spec in specs:
        top = spec.max if spec.max is not None else 5000
        low = Decimal("0.01") if spec.positive else Decimal(0)
        value = data.draw(st.decimals(low, Decimal(top), places=3))
        as_decimal[spec.name], as_float[spec.name] = value, float(str(value))
    assert check(eligible_case(**as_decimal)) == check(eligible_case(**as_float))


# --- (d) moving the infusion later never adds a washout --------------------------------


@SETTINGS
@given(st.lists(exposures(dated=True), min_size=1, max_size=5), st.integers(0, 400))
def test_a_later_first_infusion_never_turns_a_washout_pass_into_a_fail(items, later):
    early = check(eligible_case(first_infusion_date=REFERENCE, prior_therapies=items))
    late = check(eligible_case(first_infusion_date=REFERENCE + timedelta(days=later), prior_therapies=items))
    for code in EXPOSURE_CODES:
        if early["criteria"][code]["status"] == "pass":
            assert late["criteria"][code]["status"] == "pass", code


@SETTINGS
@given(exposures(dated=True), st.integers(-30, 250), st.integers(0, 250))
def test_washout_blocks_is_monotone_and_ends_at_the_first_permitted_day(item, offset, later):
    day = REFERENCE + timedelta(days=offset)
    blocked, first = washout_blocks(item, day)
    if first is None:
        assert not blocked
        return
    assert blocked is (day < first)
    if not blocked:
        assert washout_blocks(item, day + timedelta(days=later))[0] is False
    last = date.fromisoformat(item["last_date"])
    assert first > last  # every window is positive
    assert washout_blocks(item, last)[0] is True


# --- exact limits against an independent cross-multiplication oracle ------------------

positive_decimals = st.decimals(Decimal("0.001"), Decimal("1000"), places=3)


@SETTINGS
@given(positive_decimals, positive_decimals, st.booleans())
def test_uln_ratios_are_exact(value, uln, as_float):
    entered = (float(str(value)), float(str(uln))) if as_float else (value, uln)
    result = statuses(
        check(
            eligible_case(
                total_bilirubin=entered[0],
                total_bilirubin_uln=entered[1],
                alt=entered[0],
                alt_uln=entered[1],
                inr=entered[0],
                inr_uln=entered[1],
            )
        )
    )
    assert (result["bilirubin"] == "pass") is (value <= 2 * uln)
    assert (result["transaminases"] == "pass") is (value <= 3 * uln)
    assert (result["coagulation"] == "pass") is (2 * value <= 3 * uln)


@SETTINGS
@given(
    st.integers(18, 100),
    st.decimals(Decimal("30"), Decimal("150"), places=1),
    st.decimals(Decimal("0.3"), Decimal("400"), places=2),
    st.sampled_from(["F", "M"]),
    st.sampled_from(["umol/L", "mg/dL"]),
    st.booleans(),
)
def test_cockcroft_gault_is_exact(age, weight, creatinine, sex, unit, as_float):
    screened = date(2024, 5, 1)
    born = date(screened.year - age, 1, 1)
    entered = (float(str(weight)), float(str(creatinine))) if as_float else (weight, creatinine)
    result = check(
        eligible_case(
            date_of_birth=born,
            screening_date=screened,
            sex=sex,
            weight_kg=entered[0],
            creatinine=entered[1],
            creatinine_unit=unit,
            creatinine_uln=None,
        )
    )
    with localcontext() as ctx:
        ctx.prec = 100  # products of a few short decimals: exact
        factor = Decimal("0.85") if sex == "F" else 1
        to_mg = Decimal("88.4") if unit == "umol/L" else 1
        # CrCl = (140 - age) x w x f / (72 x Cr / to_mg) >= 50, cross-multiplied
        passes = (140 - age) * weight * factor * to_mg >= 50 * 72 * creatinine
    assert result["criteria"]["renal"]["status"] == ("pass" if passes else "missing")


@SETTINGS
@given(st.dates(date(1900, 1, 1), date(2090, 12, 31)), st.integers(0, 40000))
def test_age_grows_by_one_on_each_birthday_only(born, days):
    day = born + timedelta(days=days)
    step = age_on(born, day + timedelta(days=1)) - age_on(born, day)
    tomorrow = day + timedelta(days=1)
    is_birthday = (tomorrow.month, tomorrow.day) == (born.month, born.day) or (
        (born.month, born.day) == (2, 29)
        and (tomorrow.month, tomorrow.day) == (3, 1)
        and not (tomorrow.year % 4 == 0 and (tomorrow.year % 100 or tomorrow.year % 400 == 0))
    )
    assert step == (1 if is_birthday else 0)


@SETTINGS
@given(st.dates(date(1920, 1, 1), date(2010, 12, 31)))
def test_datetimes_are_never_taken_for_dates(day):
    moment = datetime(day.year, day.month, day.day)
    for field in ("date_of_birth", "screening_date", "icf_signed_date"):
        try:
            check(eligible_case(**{field: moment}))
        except ValueError as error:
            assert field in str(error)
        else:
            raise AssertionError(f"{field} accepted a datetime")
