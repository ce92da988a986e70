"""The eligibility checker of PROTOCOL 4 (contract 4.1, fields 4.2, criteria 4.3,
washouts 4.4).

A pure function over plain data: no Flask, no database. The web form, the API and
enrolment all call ``check``; the infusion lockout checker (PROTOCOL 5.2) reuses the
washout helpers (``parse_exposure``, ``washout_blocks``, ``first_permitted_day``) so
that both apply the one rule of 4.4.

Numbers are compared exactly as ``fractions.Fraction`` (a float by its shortest repr,
so 0.1 is exactly 0.1); nothing is rounded except the text of a reason, which marks an
inexact figure with "≈" and gives it enough digits to show on which side of its limit
it lies.
"""

from __future__ import annotations

import calendar
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

from cellstudy.enrollment.fields import (
    EXPOSURE_CATEGORY_LABELS,
    EXPOSURE_FIELDS_BY_NAME,
    FIELDS_BY_NAME,
    SCREENING_FIELDS,
    FieldSpec,
)
from cellstudy.study import STUDY, Study, Washout

PASS, FAIL, MISSING = "pass", "fail", "missing"


class Outcome(NamedTuple):
    status: str
    reason: str


# --------------------------------------------------------------------------------------
# Input parsing (PROTOCOL 4.1: bad input raises ValueError naming the field)
# --------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(value: Any, field: str) -> date:
    """A ``date`` or an ISO ``YYYY-MM-DD`` string; a ``datetime`` is bad input."""
    if isinstance(value, datetime):
        raise ValueError(f"{field}: expected a date, got a datetime {value!r}")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{field}: expected a date as YYYY-MM-DD, got {value!r}")


_MAX_EXPONENT = 400  # beyond any float (1e308) and any measured value


def parse_number(value: Any, field: str) -> Fraction:
    """An int, float or Decimal, exactly; a float is taken by its shortest repr."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{field}: expected a number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field}: expected a finite number, got {value!r}")
        # float.__repr__ is the shortest repr, also for subclasses (e.g. numpy.float64)
        return Fraction(Decimal(float.__repr__(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{field}: expected a finite number, got {value!r}")
        # 1e999999999 is finite, but as a Fraction it is a billion-digit integer (issue 13)
        if not -_MAX_EXPONENT <= value.adjusted() <= _MAX_EXPONENT:
            raise ValueError(f"{field}: expected a number of a measurable size, got {value!r}")
    return Fraction(value)


def _check_range(spec: FieldSpec, value: Fraction | int, field: str) -> None:
    if spec.min is not None and value < spec.min:
        raise ValueError(f"{field}: must be at least {spec.min}, got {_fmt(value)}")
    if spec.max is not None and value > spec.max:
        raise ValueError(f"{field}: must be at most {spec.max}, got {_fmt(value)}")
    if spec.positive and value == 0:
        raise ValueError(f"{field}: must not be zero")


def parse_field(spec: FieldSpec, value: Any, field: str | None = None) -> Any:
    """Validate one non-null value against its spec and return it normalised:
    dates as ``date``, numbers as ``Fraction``, ints as ``int``."""
    field = field or spec.name
    if spec.kind == "date":
        return parse_date(value, field)
    if spec.kind == "number":
        number = parse_number(value, field)
        _check_range(spec, number, field)
        return number
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{field}: expected an integer, got {value!r}")
        _check_range(spec, value, field)
        return int(value)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{field}: expected true or false, got {value!r}")
        return value
    if spec.kind == "choice":
        if not isinstance(value, str) or value not in spec.choice_values:
            allowed = ", ".join(repr(c) for c in spec.choice_values)
            raise ValueError(f"{field}: expected one of {allowed}, got {value!r}")
        return value
    if not isinstance(value, str):  # kind "text"
        raise ValueError(f"{field}: expected text, got {value!r}")
    return value


def _parse_case(case: Any, study: Study) -> dict[str, Any]:
    if not isinstance(case, Mapping):
        raise ValueError(f"case: expected a dict, got {type(case).__name__}")
    values: dict[str, Any] = {}
    for spec in SCREENING_FIELDS:
        raw = case.get(spec.name)
        # PROTOCOL 4.2: a key that is absent or null is missing.
        values[spec.name] = None if raw is None else parse_field(spec, raw)
    born, screened = values["date_of_birth"], values["screening_date"]
    if born is not None and screened is not None and born > screened:
        raise ValueError(f"date_of_birth: {born.isoformat()} is after screening_date {screened.isoformat()}")
    values["prior_therapies"] = _parse_prior_therapies(case.get("prior_therapies"), study)
    return values


def _parse_prior_therapies(raw: Any, study: Study) -> list[Exposure] | None:
    if raw is None:
        return None  # PROTOCOL 4.2: not yet recorded
    if not isinstance(raw, list):
        raise ValueError(f"prior_therapies: expected a list, got {type(raw).__name__}")
    return [parse_exposure(item, f"prior_therapies[{i}]", study=study) for i, item in enumerate(raw)]


# --------------------------------------------------------------------------------------
# Exposures and washouts (PROTOCOL 4.4), shared with the lockout checker (5.2)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    category: str
    last_date: date | None
    half_life_days: Fraction | None = None
    physiological_replacement: bool = False
    name: str | None = None
    where: str = dataclasses.field(default="exposure", compare=False)  # for errors

    @property
    def title(self) -> str:
        label = EXPOSURE_CATEGORY_LABELS.get(self.category, self.category)
        return f"{label} {self.name!r}" if self.name else label


def parse_exposure(raw: Any, where: str = "exposure", *, study: Study = STUDY) -> Exposure:
    """Validate one exposure dict; ``where`` prefixes the field in error messages.
    Unknown keys are ignored, as in ``check``."""
    if isinstance(raw, Exposure):
        return raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(raw).__name__}")
    category = raw.get("category")
    if category not in study.exposure_categories:
        allowed = ", ".join(study.exposure_categories)
        raise ValueError(f"{where}.category: expected one of {allowed}, got {category!r}")
    parsed = {}
    for name, spec in EXPOSURE_FIELDS_BY_NAME.items():
        if name != "category" and raw.get(name) is not None:
            parsed[name] = parse_field(spec, raw[name], f"{where}.{name}")
    return Exposure(
        category=category,
        last_date=parsed.get("last_date"),
        half_life_days=parsed.get("half_life_days"),
        # PROTOCOL 4.4: physiological_replacement absent means false.
        physiological_replacement=parsed.get("physiological_replacement", False),
        name=parsed.get("name"),
        where=where,
    )


def blocking_washout(exposure: Exposure, study: Study = STUDY) -> Washout | None:
    """The washout an exposure is subject to, or None when it never blocks
    (PROTOCOL 4.4: physiological steroid replacement, diagnostic biopsies)."""
    row = study.washout(exposure.category)
    if not row.blocks:
        return None
    if row.ignore_physiological_replacement and exposure.physiological_replacement:
        return None
    return row


def window_days(row: Washout, half_life_days: Fraction | None) -> Fraction:
    """A day-window, exactly: PROTOCOL 4.4 antitumor = min(14, 5 x half-life),
    14 days when the half-life is unknown."""
    days = Fraction(row.days)
    if row.half_lives is not None and half_life_days is not None:
        return min(days, row.half_lives * half_life_days)
    return days


def add_months(day: date, months: int) -> date:
    """Calendar months, clamped to the month's end (PROTOCOL 4.4: Aug 31 + 6 months =
    Feb 28/29; 4.3: Feb 29 + 5 years = Feb 28)."""
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        raise OverflowError(f"{day.isoformat()} + {months} months is beyond the calendar")
    return date(year, month0 + 1, min(day.day, calendar.monthrange(year, month0 + 1)[1]))


def first_permitted_day(exposure: Exposure, *, study: Study = STUDY) -> date | None:
    """The first day the exposure no longer blocks, or None if it never blocks.

    PROTOCOL 4.4: D blocks while (D - last_date) < window. D - last_date is a whole
    number of days, so for a fractional window the first permitted day is
    last_date + ceil(window); for months it is last_date + N calendar months.
    """
    row = blocking_washout(exposure, study)
    if row is None:
        return None
    if exposure.last_date is None:
        raise ValueError(f"{exposure.where}.last_date: required to compute a washout")
    try:
        if row.months is not None:
            return add_months(exposure.last_date, row.months)
        return exposure.last_date + timedelta(days=math.ceil(window_days(row, exposure.half_life_days)))
    except OverflowError:
        raise ValueError(
            f"{exposure.where}.last_date: {exposure.last_date.isoformat()} is too late for a washout to be computed"
        ) from None


def washout_blocks(exposure: Exposure | Mapping, day: date | str, *, study: Study = STUDY) -> tuple[bool, date | None]:
    """(blocked, first_permitted) for an exposure (a dict as in PROTOCOL 4.4, with its
    last_date) and an infusion day. An exposure dated after ``day`` blocks too.
    An exposure that never blocks gives (False, None)."""
    exposure = parse_exposure(exposure, study=study)
    day = parse_date(day, "day")
    first = first_permitted_day(exposure, study=study)
    return (first is not None and day < first), first


def _window_text(row: Washout, exposure: Exposure) -> str:
    if row.months is not None:
        return f"{row.months} calendar months"
    if row.half_lives is None:
        return f"{row.days} days"
    if exposure.half_life_days is None:
        return f"{row.days} days (half-life unknown)"
    window = window_days(row, exposure.half_life_days)
    return (
        f"min({row.days} days, {row.half_lives} x half-life {_fmt(exposure.half_life_days)} days) = {_fmt(window)} days"
    )


def _exposure_outcome(exposure: Exposure, row: Washout, infusion: date | None, study: Study) -> Outcome:
    if exposure.last_date is None:
        return Outcome(MISSING, f"{exposure.title}: last date missing")
    last = exposure.last_date.isoformat()
    if infusion is None:
        return Outcome(MISSING, f"{exposure.title} last on {last}: planned first infusion date missing")
    first = first_permitted_day(exposure, study=study)
    gap = (infusion - exposure.last_date).days
    when = f"{gap} days before" if gap >= 0 else f"{-gap} days after"
    text = (
        f"{exposure.title} last on {last}, {when} the first infusion "
        f"{infusion.isoformat()} (window {_window_text(row, exposure)}; "
        f"first permitted day {first.isoformat()})"
    )
    return Outcome(FAIL if infusion < first else PASS, text)


def _exposure_part(code: str, v: dict, study: Study) -> Outcome:
    """The exposure criterion ``code`` over prior_therapies (PROTOCOL 4.4)."""
    exposures = v["prior_therapies"]
    if exposures is None:
        return Outcome(MISSING, "prior therapies not yet recorded")
    relevant, ignored = [], 0
    for exposure in exposures:
        row = study.washout(exposure.category)
        if row.criterion != code:
            continue
        if blocking_washout(exposure, study) is None:
            ignored += 1
        else:
            relevant.append((exposure, row))
    note = f" ({ignored} physiological replacement ignored)" if ignored else ""
    if not relevant:
        labels = ", ".join(
            EXPOSURE_CATEGORY_LABELS.get(w.category, w.category) for w in study.washouts if w.criterion == code
        )
        return Outcome(PASS, f"none recorded: {labels}{note}")
    infusion = v["first_infusion_date"]
    outcome = _all_of([_exposure_outcome(e, row, infusion, study) for e, row in relevant])
    return Outcome(outcome.status, outcome.reason + note)


# --------------------------------------------------------------------------------------
# Reason text: exact where the decimal terminates, else "≈" with enough digits
# --------------------------------------------------------------------------------------


def _exact_decimal(x: Fraction) -> str | None:
    denominator, places = x.denominator, 0
    for prime in (2, 5):
        count = 0
        while denominator % prime == 0:
            denominator //= prime
            count += 1
        places = max(places, count)
    if denominator != 1:
        return None
    digits = str(abs(x.numerator * 10**places // x.denominator)).rjust(places + 1, "0")
    sign = "-" if x < 0 else ""
    if places == 0:
        return sign + digits
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _fmt(x: Fraction | int | Decimal, near: Fraction | Decimal | int | None = None) -> str:
    """A number for a reason. Inexact values get "≈" and at least two decimals, more
    if needed so that the shown figure is on the same side of ``near`` (a limit)."""
    x = Fraction(x)
    exact = _exact_decimal(x)
    if exact is not None:
        return exact
    side = None if near is None else (x > Fraction(near)) - (x < Fraction(near))
    for places in range(2, 30):
        shown = round(x, places)
        if side is None or (shown > Fraction(near)) - (shown < Fraction(near)) == side:
            break
    return "≈" + (_exact_decimal(shown) or str(shown))


def _label(name: str) -> str:
    return FIELDS_BY_NAME[name].label


def _missing(v: dict, *names: str) -> Outcome | None:
    absent = [_label(n) for n in names if v[n] is None]
    return Outcome(MISSING, "missing: " + ", ".join(absent)) if absent else None


def _with_unit(value: Fraction, unit: str | None) -> str:
    return f"{_fmt(value)} {unit}" if unit else _fmt(value)


# --------------------------------------------------------------------------------------
# Combining (PROTOCOL 4.3: composite and either-or criteria)
# --------------------------------------------------------------------------------------


def _all_of(parts: list[Outcome]) -> Outcome:
    """Composite: fail if any part fails; else missing if any is missing; else pass."""
    statuses = {p.status for p in parts}
    status = FAIL if FAIL in statuses else MISSING if MISSING in statuses else PASS
    return Outcome(status, "; ".join(p.reason for p in parts))


def _any_of(parts: list[Outcome]) -> Outcome:
    """Either-or: pass if one limb passes; else fail if every limb fails; else missing."""
    statuses = {p.status for p in parts}
    status = PASS if PASS in statuses else FAIL if statuses == {FAIL} else MISSING
    return Outcome(status, " / ".join(p.reason for p in parts))


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def _absent(v: dict, name: str) -> Outcome:
    """An exclusion flag: false passes, true fails."""
    if v[name] is None:
        return Outcome(MISSING, f"missing: {_label(name)}")
    return Outcome(FAIL if v[name] else PASS, f"{_label(name)}: {'yes' if v[name] else 'no'}")


def _present(v: dict, name: str) -> Outcome:
    """An inclusion flag: true passes, false fails."""
    if v[name] is None:
        return Outcome(MISSING, f"missing: {_label(name)}")
    return Outcome(PASS if v[name] else FAIL, f"{_label(name)}: {'yes' if v[name] else 'no'}")


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}


def _limit(v: dict, name: str, op: str, limit: Decimal | int) -> Outcome:
    """Passes when ``value op limit``, e.g. QTc 481 ms (limit <= 480)."""
    if v[name] is None:
        return _missing(v, name)
    spec = FIELDS_BY_NAME[name]
    ok = _OPERATORS[op](Fraction(v[name]), Fraction(limit))
    return Outcome(PASS if ok else FAIL, f"{spec.label} {_with_unit(v[name], spec.unit)} (limit {op} {limit})")


def _uln_ratio(v: dict, name: str, limit: Decimal, unit: str | None = None) -> Outcome:
    """Passes when value / ULN <= limit, e.g. ALT 130 U/L = 3.25 x ULN (limit 3.0)."""
    uln_name = f"{name}_uln"
    absent = _missing(v, name, uln_name)
    if absent:
        return absent
    unit = unit or FIELDS_BY_NAME[name].unit
    ratio = v[name] / v[uln_name]
    ok = ratio <= Fraction(limit)
    return Outcome(
        PASS if ok else FAIL,
        f"{_label(name)} {_with_unit(v[name], unit)} = {_fmt(ratio, limit)} x ULN "
        f"(ULN {_with_unit(v[uln_name], unit)}; limit {limit})",
    )


def age_on(date_of_birth: date, day: date) -> int:
    """Completed years on ``day`` (PROTOCOL 4.3 age): the difference of the years,
    minus one if day's (month, day) is before the birth (month, day). So a Feb 29
    birthday is reached on Mar 1 in a non-leap year."""
    if day < date_of_birth:
        raise ValueError(f"date_of_birth: {date_of_birth.isoformat()} is after {day.isoformat()}")
    years = day.year - date_of_birth.year
    if (day.month, day.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


# --------------------------------------------------------------------------------------
# The criteria of PROTOCOL 4.3
# --------------------------------------------------------------------------------------


def _age(v: dict, study: Study) -> Outcome:
    absent = _missing(v, "date_of_birth", "screening_date")
    if absent:
        return absent
    minimum = study.eligibility.min_age_years
    age = age_on(v["date_of_birth"], v["screening_date"])
    return Outcome(
        PASS if age >= minimum else FAIL,
        f"age {age} years on {v['screening_date'].isoformat()} (born "
        f"{v['date_of_birth'].isoformat()}; limit >= {minimum})",
    )


def _target_antigen(v: dict, study: Study) -> Outcome:
    # PROTOCOL 4.3: one positive antigen is enough even if the other is missing.
    return _any_of([_present(v, "cll1_positive"), _present(v, "cd33_positive")])


def _creatinine_clearance(v: dict, study: Study) -> Outcome:
    """The Cockcroft-Gault limb of renal, exactly (PROTOCOL 4.3: no rounding)."""
    absent = _missing(v, "date_of_birth", "screening_date", "sex", "weight_kg", "creatinine", "creatinine_unit")
    if absent:
        return Outcome(MISSING, f"Cockcroft-Gault CrCl {absent.reason}")
    lim = study.eligibility
    age = age_on(v["date_of_birth"], v["screening_date"])
    creatinine = v["creatinine"]
    if v["creatinine_unit"] == "umol/L":
        creatinine_mg_dl = creatinine / Fraction(lim.creatinine_umol_per_mg_dl)
        creatinine_text = f"{_fmt(creatinine)} umol/L = {_fmt(creatinine_mg_dl)} mg/dL"
    else:
        creatinine_mg_dl = creatinine
        creatinine_text = f"{_fmt(creatinine)} mg/dL"
    female = v["sex"] == "F"
    factor = Fraction(lim.cg_female_factor) if female else Fraction(1)
    crcl = (lim.cg_age_constant - age) * v["weight_kg"] * factor / (lim.cg_denominator * creatinine_mg_dl)
    sex_text = f" x {lim.cg_female_factor} (F)" if female else ""
    return Outcome(
        PASS if crcl >= Fraction(lim.crcl_min_ml_min) else FAIL,
        f"Cockcroft-Gault CrCl = ({lim.cg_age_constant} - age {age}) x "
        f"{_fmt(v['weight_kg'])} kg{sex_text} / ({lim.cg_denominator} x creatinine "
        f"{creatinine_text}) = {_fmt(crcl, lim.crcl_min_ml_min)} mL/min "
        f"(limit >= {lim.crcl_min_ml_min})",
    )


def _renal(v: dict, study: Study) -> Outcome:
    # PROTOCOL 4.3: either limb is enough; sex, weight and unit matter for CrCl only.
    ratio = _uln_ratio(v, "creatinine", study.eligibility.creatinine_uln_ratio, unit=v["creatinine_unit"])
    return _any_of([ratio, _creatinine_clearance(v, study)])


def _pregnancy_test(v: dict, study: Study) -> Outcome:
    test, sex, potential = v["pregnancy_test"], v["sex"], v["childbearing_potential"]
    # PROTOCOL 4.3: a negative test passes whatever else is missing.
    if test == "negative":
        return Outcome(PASS, "serum pregnancy test negative")
    if sex is None:
        return _missing(v, "sex")
    if sex == "M":
        return Outcome(PASS, "male")
    if potential is None:
        return _missing(v, "childbearing_potential")
    if not potential:
        return Outcome(PASS, "female, not of childbearing potential")
    if test is None:
        return Outcome(MISSING, "female of childbearing potential: missing: " + _label("pregnancy_test"))
    return Outcome(FAIL, f"female of childbearing potential: serum pregnancy test {test}")


def _consent(v: dict, study: Study) -> Outcome:
    absent = _missing(v, "icf_signed_date", "screening_date")
    if absent:
        return absent
    signed, screened = v["icf_signed_date"], v["screening_date"]
    # PROTOCOL 4.3: consent precedes the screening procedures.
    return Outcome(
        PASS if signed <= screened else FAIL,
        f"ICF signed {signed.isoformat()}, screening {screened.isoformat()} (must be on or before)",
    )


def _vaccine(v: dict, study: Study) -> Outcome:
    return _all_of([_exposure_part("vaccine", v, study), _absent(v, "vaccination_expected_during_study")])


def _other_malignancy(v: dict, study: Study) -> Outcome:
    if v["other_malignancy_history"] is None:
        return _missing(v, "other_malignancy_history")
    if not v["other_malignancy_history"]:
        return Outcome(PASS, "no other malignancy")
    absent = _missing(v, "other_malignancy_cr_date", "screening_date")
    if absent:
        return absent
    years = study.eligibility.other_malignancy_cr_years
    remission, screened = v["other_malignancy_cr_date"], v["screening_date"]
    try:
        threshold = add_months(remission, 12 * years)
    except OverflowError:
        raise ValueError(
            f"other_malignancy_cr_date: {remission.isoformat()} + {years} years is beyond the calendar"
        ) from None
    # PROTOCOL 4.3: CR + 5 years strictly before screening; exactly 5 years fails.
    return Outcome(
        PASS if threshold < screened else FAIL,
        f"complete remission {remission.isoformat()} + {years} years = "
        f"{threshold.isoformat()}, must be before screening "
        f"{screened.isoformat()}",
    )


def _cardiovascular(v: dict, study: Study) -> Outcome:
    lim = study.eligibility
    return _all_of(
        [
            _limit(v, "qtc_ms", "<=", lim.qtc_max_ms),
            _limit(v, "lvef_percent", ">=", lim.lvef_min_percent),
            _limit(v, "nyha_class", "<", lim.nyha_fail_at),
            _absent(v, "severe_arrhythmia"),
            _absent(v, "cv_event_within_6_months"),
            _absent(v, "uncontrolled_hypertension"),
        ]
    )


def _pulmonary(v: dict, study: Study) -> Outcome:
    return _all_of(
        [
            _limit(v, "spo2_percent", ">", study.eligibility.spo2_fail_at_or_below),
            *(
                _absent(v, name)
                for name in ("active_pulmonary_infection", "pulmonary_embolism", "copd", "interstitial_lung_disease")
            ),
        ]
    )


def _pregnancy_breastfeeding(v: dict, study: Study) -> Outcome:
    # PROTOCOL 4.3: a positive test fails this whatever the sex.
    if v["pregnancy_test"] == "positive":
        return Outcome(FAIL, "serum pregnancy test positive")
    return _absent(v, "pregnant_or_breastfeeding")


def _exposure_criterion(code: str) -> Callable[[dict, Study], Outcome]:
    return lambda v, study: _exposure_part(code, v, study)


def _flag(name: str) -> Callable[[dict, Study], Outcome]:
    return lambda v, study: _absent(v, name)


def _weeks(days: int) -> str:
    if days % 7:
        return f"{days} days"
    weeks = days // 7
    return f"{weeks} week" if weeks == 1 else f"{weeks} weeks"


def _window_phrase(study: Study, category: str) -> str:
    row = study.washout(category)
    return f"{row.months} months" if row.months is not None else _weeks(row.days)


def _plain(number: Decimal | int) -> str:
    return _fmt(Fraction(number))


# (code, protocol text, rule), in the order of the table of PROTOCOL 4.3.
def _criteria_table(study: Study) -> tuple[tuple[str, str, Callable], ...]:
    lim = study.eligibility
    antitumor = study.washout("systemic_antitumor")
    return (
        ("age", f">= {lim.min_age_years} years old", _age),
        ("rr_aml", "confirmed r/r AML", lambda v, s: _present(v, "rr_aml_confirmed")),
        ("target_antigen", "CLL1 or CD33 positive in AML blasts", _target_antigen),
        ("ecog", f"ECOG <= {lim.ecog_max}", lambda v, s: _limit(v, "ecog", "<=", s.eligibility.ecog_max)),
        ("life_expectancy", "life expectancy > 12 weeks", lambda v, s: _present(v, "life_expectancy_gt_12_weeks")),
        (
            "renal",
            f"Cr <= {_plain(lim.creatinine_uln_ratio)} x ULN or Cockcroft-Gault "
            f"CrCl >= {_plain(lim.crcl_min_ml_min)} mL/min",
            _renal,
        ),
        (
            "bilirubin",
            f"TBIL <= {_plain(lim.bilirubin_uln_ratio)} x ULN",
            lambda v, s: _uln_ratio(v, "total_bilirubin", s.eligibility.bilirubin_uln_ratio),
        ),
        (
            "transaminases",
            f"ALT and AST <= {_plain(lim.transaminase_uln_ratio)} x ULN",
            lambda v, s: _all_of(
                [
                    _uln_ratio(v, "alt", s.eligibility.transaminase_uln_ratio),
                    _uln_ratio(v, "ast", s.eligibility.transaminase_uln_ratio),
                ]
            ),
        ),
        (
            "coagulation",
            f"INR and aPTT <= {_plain(lim.coagulation_uln_ratio)} x ULN",
            lambda v, s: _all_of(
                [
                    _uln_ratio(v, "inr", s.eligibility.coagulation_uln_ratio),
                    _uln_ratio(v, "aptt", s.eligibility.coagulation_uln_ratio),
                ]
            ),
        ),
        ("pregnancy_test", "females of childbearing potential: negative serum test", _pregnancy_test),
        (
            "dsa",
            f"DSA negative: MFI <= {_plain(lim.dsa_mfi_max)}",
            lambda v, s: _limit(v, "dsa_mfi", "<=", s.eligibility.dsa_mfi_max),
        ),
        ("consent", "signed and dated ICF", _consent),
        ("allergy", "allergic to a study drug", _flag("allergy_to_study_drugs")),
        (
            "washout_steroid",
            f"systemic steroid within {_window_phrase(study, 'systemic_steroid')} (physiological replacement excepted)",
            _exposure_criterion("washout_steroid"),
        ),
        (
            "washout_antitumor",
            f"systemic antitumor therapy within {_weeks(antitumor.days)} "
            f"or {antitumor.half_lives} half-lives, whichever is less",
            _exposure_criterion("washout_antitumor"),
        ),
        (
            "washout_radiotherapy",
            f"radiotherapy within {_window_phrase(study, 'radiotherapy')}",
            _exposure_criterion("washout_radiotherapy"),
        ),
        (
            "washout_dli",
            f"donor lymphocyte infusion within {_window_phrase(study, 'donor_lymphocyte_infusion')}",
            _exposure_criterion("washout_dli"),
        ),
        (
            "washout_intrathecal",
            f"intrathecal treatment within {_window_phrase(study, 'intrathecal')}",
            _exposure_criterion("washout_intrathecal"),
        ),
        (
            "washout_cell_therapy",
            "CAR-T, CAR-NK or other genetically modified cell "
            f"therapy within {_window_phrase(study, 'gene_modified_cell_therapy')}",
            _exposure_criterion("washout_cell_therapy"),
        ),
        (
            "vaccine",
            f"vaccine within {_window_phrase(study, 'vaccine')} before first "
            "infusion, or vaccination expected before 12 weeks after last infusion",
            _vaccine,
        ),
        (
            "major_surgery",
            f"major surgery within {_window_phrase(study, 'major_surgery')} (diagnostic biopsy excepted)",
            _exposure_criterion("major_surgery"),
        ),
        ("prior_allo_hsct", "history of allogeneic SCT", _flag("prior_allo_hsct")),
        ("cns_leukemia", "active CNS leukemia", _flag("active_cns_leukemia")),
        ("apl", "APL", _flag("apl")),
        (
            "other_malignancy",
            "other malignancy, unless complete remission > "
            f"{lim.other_malignancy_cr_years} years after radical "
            "treatment",
            _other_malignancy,
        ),
        ("cns_disease", "history of CNS disease or meningeal involvement", _flag("cns_disease_history")),
        ("autoimmune", "active autoimmune disease", _flag("active_autoimmune_disease")),
        ("cardiovascular", "serious cardio/cerebrovascular disease", _cardiovascular),
        (
            "pulmonary",
            f"active pulmonary infection, SpO2 <= {_plain(lim.spo2_fail_at_or_below)}%, PE, COPD or ILD",
            _pulmonary,
        ),
        (
            "infection",
            "uncontrolled infection, HIV, active HBV or HCV",
            lambda v, s: _all_of(
                [_absent(v, n) for n in ("uncontrolled_infection", "hiv_positive", "active_hbv", "active_hcv")]
            ),
        ),
        ("substance_abuse", "history of substance abuse", _flag("substance_abuse_history")),
        (
            "prior_toxicity",
            f"prior-therapy toxicity not recovered to <= grade {lim.max_prior_toxicity_grade} (CTCAE 5.0)",
            lambda v, s: _limit(v, "max_unresolved_prior_toxicity_grade", "<=", s.eligibility.max_prior_toxicity_grade),
        ),
        ("pregnancy_breastfeeding", "pregnant or breastfeeding", _pregnancy_breastfeeding),
        ("investigator_concern", "investigator-assessed issue", _flag("investigator_concern")),
    )


EXPOSURE_CRITERIA = (
    "washout_steroid",
    "washout_antitumor",
    "washout_radiotherapy",
    "washout_dli",
    "washout_intrathecal",
    "washout_cell_therapy",
    "vaccine",
    "major_surgery",
)


def criteria(study: Study = STUDY) -> tuple[tuple[str, str], ...]:
    """(code, protocol text) of every criterion, in the order of PROTOCOL 4.3, with the
    numbers of ``study``."""
    return tuple((code, text) for code, text, _ in _criteria_table(study))


CRITERIA: tuple[tuple[str, str], ...] = criteria(STUDY)


def criterion_texts(codes: Iterable[str] | None, study: Study = STUDY) -> list[str]:
    """Criteria as the protocol words them ("ALT and AST <= 3 x ULN"), never their codes; an
    unknown code is kept as it is."""
    texts = dict(criteria(study))
    return [(t[:1].upper() + t[1:]) for t in (texts.get(code, code) for code in codes or ())]


# PROTOCOL 4.3: the listing's inclusion criteria; every other code is an exclusion
# (its "pass" means the excluding condition is absent).
INCLUSION_CODES = frozenset(
    {
        "age",
        "rr_aml",
        "target_antigen",
        "ecog",
        "life_expectancy",
        "renal",
        "bilirubin",
        "transaminases",
        "coagulation",
        "pregnancy_test",
        "dsa",
        "consent",
    }
)


def check(case: Mapping[str, Any], *, study: Study = STUDY) -> dict:
    """Decide eligibility (PROTOCOL 4.1-4.4).

    Returns ``{"eligible": True | False | None, "criteria": {code: {"status", "reason"}}}``
    with every code of 4.3, in the order of its table. ``eligible`` is False if any
    criterion fails, else None if any is missing, else True.

    Keys of ``case`` that are not screening fields (e.g. a form's ``notes``) are
    ignored, as are unknown keys inside an exposure: callers may pass a whole form.
    A key that is absent or None is missing data, never bad input. Bad input (wrong
    type, a bool or string where a number belongs, a datetime or unparseable date, a
    negative number, a zero ULN or creatinine, a percentage above 100, a date of birth
    after the screening date, an unknown enum or exposure category, an int field out
    of range, half_life_days <= 0) raises ``ValueError`` naming the field.
    """
    unknown = set(study.exposure_criteria) - set(EXPOSURE_CRITERIA)
    if unknown:
        raise ValueError(f"study: washouts feed unknown criteria {sorted(unknown)}")
    values = _parse_case(case, study)
    results = {}
    for code, _, rule in _criteria_table(study):
        outcome = rule(values, study)
        results[code] = {"status": outcome.status, "reason": outcome.reason}
    statuses = {r["status"] for r in results.values()}
    eligible = False if FAIL in statuses else None if MISSING in statuses else True
    return {"eligible": eligible, "criteria": results}
