"""The treatment and visit schedule of PROTOCOL 5.1, its target windows (5.2), the body
surface area of the lymphodepletion doses and the dose deviation check.

Pure functions over plain data (ARCHITECTURE rule 1). The schedule itself is data in
``cellstudy.study`` (``Regimen`` and ``Visit``); the one small class ``Window`` computes
and judges every window. Every plan is anchored on the first infusion (day 0): it is
generated on enrolment from the planned date and generated again from the actual date
(PROTOCOL 5.1: "the schedule ... shifts with the actual first infusion date").

Target windows are targets, not lockouts (PROTOCOL 5.2): a date outside one needs a
deviation reason (``target_deviation``); what blocks an infusion is decided by
``cellstudy.infusions.lockouts``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from cellstudy.enrollment.eligibility import add_months, parse_date, parse_number
from cellstudy.study import STUDY, Study

UPCOMING, DUE, OVERDUE, DONE, MISSED = "upcoming", "due", "overdue", "done", "missed"
STATUSES = (UPCOMING, DUE, OVERDUE, DONE, MISSED)


def _is_date(value: Any) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


@dataclass(frozen=True)
class Window:
    """A target date and its window, both ends inclusive."""

    target: date
    earliest: date
    latest: date

    def __post_init__(self) -> None:
        for name in ("target", "earliest", "latest"):
            if not _is_date(getattr(self, name)):
                raise ValueError(f"window.{name}: expected a date, got {getattr(self, name)!r}")
        if not self.earliest <= self.target <= self.latest:
            raise ValueError(
                f"window: expected earliest <= target <= latest, got {self.earliest} / {self.target} / {self.latest}"
            )

    @classmethod
    def around(cls, target: date, before: int, after: int) -> Window:
        """The window from ``before`` days before ``target`` to ``after`` days after."""
        for name, days in (("before", before), ("after", after)):
            if isinstance(days, bool) or not isinstance(days, int) or days < 0:
                raise ValueError(f"window.{name}: expected a whole number of days >= 0, got {days!r}")
        try:
            return cls(target, target - timedelta(days=before), target + timedelta(days=after))
        except OverflowError:
            raise ValueError(f"window: {target} +/- its window is beyond the calendar") from None

    def contains(self, day: date) -> bool:
        if not _is_date(day):
            raise ValueError(f"day: expected a date, got {day!r}")
        return self.earliest <= day <= self.latest

    def status(self, today: date, done: bool, missed: bool = False) -> str:
        """What a schedule shows for this window on ``today``.

        - "done": the visit or infusion happened (whenever it did: an out-of-window date
          is a deviation, judged elsewhere, not a status);
        - "missed": explicitly marked missed by site staff (it never happens on its own:
          an open window past its end is "overdue" until someone records what happened);
        - otherwise by date: "upcoming" before ``earliest``, "due" from ``earliest`` to
          ``latest`` inclusive, "overdue" after ``latest``.

        A window cannot be both done and missed (ValueError).
        """
        if not _is_date(today):
            raise ValueError(f"today: expected a date, got {today!r}")
        if not isinstance(done, bool) or not isinstance(missed, bool):
            raise ValueError(f"done, missed: expected true or false, got {done!r}, {missed!r}")
        if done and missed:
            raise ValueError("done, missed: a window cannot be both done and missed")
        if done:
            return DONE
        if missed:
            return MISSED
        if today < self.earliest:
            return UPCOMING
        if today <= self.latest:
            return DUE
        return OVERDUE

    def as_dict(self) -> dict:
        """ISO dates, for JSON."""
        return {
            "target": self.target.isoformat(),
            "earliest": self.earliest.isoformat(),
            "latest": self.latest.isoformat(),
        }


def _shift(first: date, days: int) -> date:
    try:
        return first + timedelta(days=days)
    except OverflowError:
        raise ValueError(f"first_infusion: {first} + {days} days is beyond the calendar") from None


def _anchor(first_infusion: Any) -> date:
    # PROTOCOL 4.1 input style: a date or an ISO string, never a datetime
    return parse_date(first_infusion, "first_infusion")


def infusion_plan(first_infusion: date, study: Study = STUDY) -> list[dict]:
    """The NK cell infusions of PROTOCOL 5.1: ``{"number": 1.., "day": 0/7/14, "target":
    date, "window": Window}`` with a window of +/- ``infusion_window_days``. Day 0 is the
    first infusion itself; its target window (+/- 1 by default) applies to the first
    infusion against its planned date, like any other."""
    first = _anchor(first_infusion)
    regimen = study.regimen
    plan = []
    for number, day in enumerate(regimen.infusion_days, start=1):
        target = _shift(first, day)
        plan.append(
            {
                "number": number,
                "day": day,
                "target": target,
                "window": Window.around(target, regimen.infusion_window_days, regimen.infusion_window_days),
            }
        )
    return plan


def lymphodepletion_plan(first_infusion: date, study: Study = STUDY) -> list[dict]:
    """PROTOCOL 5.1: fludarabine and cyclophosphamide on days -5, -4, -3 before the
    first infusion (recorded, scheduled relative to day 0): ``{"day": -5, "date": date,
    "drugs": [{"name": str, "dose_mg_per_m2": Decimal}, ...]}`` per day. The protocol
    gives these days no window."""
    first = _anchor(first_infusion)
    regimen = study.regimen
    drugs = [{"name": d.name, "dose_mg_per_m2": d.dose_mg_per_m2} for d in regimen.lymphodepletion_drugs]
    return [
        {"day": day, "date": _shift(first, day), "drugs": [dict(d) for d in drugs]}
        for day in regimen.lymphodepletion_days
    ]


def visit_plan(first_infusion: date, study: Study = STUDY) -> list[dict]:
    """The follow-up visits of PROTOCOL 5.1 (``study.visits``): ``{"code", "label",
    "target", "window"}`` per visit, in the study's order. A day visit is day N after
    the first infusion; a month visit is N calendar months after it, clamped to the
    month's end (as in PROTOCOL 4.4: Aug 31 + 6 months = Feb 28/29)."""
    first = _anchor(first_infusion)
    plan = []
    for visit in study.visits:
        if visit.months is not None:
            try:
                target = add_months(first, visit.months)
            except OverflowError:
                raise ValueError(f"first_infusion: {first} + {visit.months} months is beyond the calendar") from None
        else:
            target = _shift(first, visit.day)
        plan.append(
            {
                "code": visit.code,
                "label": visit.label,
                "target": target,
                "window": Window.around(target, visit.before, visit.after),
            }
        )
    return plan


def target_deviation(number: int, first_infusion: date, proposed: date, study: Study = STUDY) -> str | None:
    """None when ``proposed`` is inside the target window of infusion ``number``
    (1-based), else the message asking for a deviation reason.

    PROTOCOL 5.2: "The target days of 5.1 (day 0, 7, 14 +/- 1) are targets, not
    lockouts: a date outside its window needs a deviation reason." The windows are
    anchored on ``first_infusion`` (the actual date once given; for infusion 1, its
    planned date)."""
    count = study.regimen.infusion_count
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= count:
        raise ValueError(f"number: expected an infusion number 1..{count}, got {number!r}")
    day = parse_date(proposed, "proposed")
    infusion = infusion_plan(first_infusion, study)[number - 1]
    window: Window = infusion["window"]
    if window.contains(day):
        return None
    off = (day - window.target).days
    side = (
        f"{off} day{'s' if abs(off) != 1 else ''} after"
        if off > 0
        else f"{-off} day{'s' if abs(off) != 1 else ''} before"
    )
    return (
        f"Infusion {number} on {day.isoformat()} is outside its target window "
        f"(day {infusion['day']}: {window.target.isoformat()}, "
        f"{window.earliest.isoformat()} to {window.latest.isoformat()}); it is {side} "
        f"the target: a deviation reason is needed (PROTOCOL 5.2)."
    )


# --------------------------------------------------------------------------------------
# Body surface area and dose deviation (ARCHITECTURE rule 5: Decimal at the limits)
# --------------------------------------------------------------------------------------

BSA_HEIGHT_CM = (50, 250)
BSA_WEIGHT_KG = (2, 400)


def bsa_mosteller(height_cm: int | float | Decimal, weight_kg: int | float | Decimal) -> Decimal:
    """Body surface area in m2 by Mosteller: sqrt(height_cm x weight_kg / 3600),
    rounded to 2 decimals half-up (e.g. 170 cm, 70 kg -> Decimal("1.82")).

    The lymphodepletion doses of PROTOCOL 5.1 are per m2; the BSA is shown and used to
    2 decimals, as on a prescription. The rounding is exact: the result is the square
    root of the exact product rounded half-up, computed with integers (no floating
    point, no intermediate rounding of the root), so a root that lies exactly on a
    half (e.g. 1.825) rounds up. Heights outside 50..250 cm and weights outside
    2..400 kg (both inclusive) are taken as entry errors (ValueError)."""
    height = parse_number(height_cm, "height_cm")
    weight = parse_number(weight_kg, "weight_kg")
    for field, value, (low, high), unit in (
        ("height_cm", height, BSA_HEIGHT_CM, "cm"),
        ("weight_kg", weight, BSA_WEIGHT_KG, "kg"),
    ):
        if not low <= value <= high:
            raise ValueError(f"{field}: expected {low}..{high} {unit}, got {float(value):g}")
    # BSA rounded half-up to n/100: the largest n with sqrt(x) >= (2n - 1)/200, i.e.
    # (2n - 1)^2 <= 40000 x = y, where x = h w / 3600. As 2n - 1 is an integer this is
    # 2n - 1 <= isqrt(floor(y)).
    y = 40000 * height * weight / 3600
    n = (math.isqrt(math.floor(y)) + 1) // 2
    return Decimal(n).scaleb(-2)


def dose_deviation(planned_cells: int, actual_cells: int, tolerance_percent: Decimal) -> bool:
    """True when the cells given differ from the dose level by more than the tolerance:
    |actual - planned| / planned > tolerance_percent / 100, exactly (so a dose exactly
    10 % off is not a deviation with the default tolerance of ``study.regimen``).

    Cell counts are whole numbers (``int``; a float such as 1e8 is refused so that no
    count is ever rounded); the tolerance is an ``int`` or ``Decimal``."""
    for field, value in (("planned_cells", planned_cells), ("actual_cells", actual_cells)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{field}: expected a whole number of cells, got {value!r}")
    if planned_cells <= 0:
        raise ValueError(f"planned_cells: must be positive, got {planned_cells}")
    if actual_cells < 0:
        raise ValueError(f"actual_cells: must not be negative, got {actual_cells}")
    if isinstance(tolerance_percent, (bool, float)) or not isinstance(tolerance_percent, (int, Decimal)):
        raise ValueError(f"tolerance_percent: expected an int or Decimal, got {tolerance_percent!r}")
    tolerance = parse_number(tolerance_percent, "tolerance_percent")
    if tolerance < 0:
        raise ValueError(f"tolerance_percent: must not be negative, got {tolerance_percent}")
    # cross-multiplied, so there is no division to round
    return abs(actual_cells - planned_cells) * 100 > tolerance * planned_cells
