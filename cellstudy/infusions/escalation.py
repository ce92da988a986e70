"""Dose escalation of the phase I (PROTOCOL 5.3): the 3+3 decision and the sentinel
stagger.

Pure functions over plain data (ARCHITECTURE rule 1): no Flask, no database. The
enrolment form proposes a subject's dose level from ``decide``; an investigator who
assigns another level gives a reason (a deviation), and the dose-escalation review is
an investigator e-signature on the decision. Both happen outside this module.

``decide`` implements the two rules of PROTOCOL 5.3 literally, and only them. In
particular rule 2 looks at L, the highest level with subjects, alone: a lower level that
had 1 DLT in 3 and was never expanded to 6 is not revisited (the protocol's rule, kept
as written; a data manager sees it in the per-level counts of ``reason``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

ENROL, ESCALATE, WAIT, MTD, STOP = "enrol", "escalate", "wait", "mtd", "stop"
DECISIONS = (ENROL, ESCALATE, WAIT, MTD, STOP)

# PROTOCOL 5.3: 3+3, a cohort of 3 expanded to 6
_COHORT = 3
_EXPANDED = 6
_KEYS = ("level", "evaluable", "dlt", "pending")


@dataclass(frozen=True)
class _Level:
    name: str
    evaluable: int
    dlt: int
    pending: int

    @property
    def assigned(self) -> int:
        return self.evaluable + self.pending

    @property
    def counts(self) -> str:
        return f"{self.name}: {self.evaluable} evaluable, {self.dlt} DLT, {self.pending} pending"


def _parse_levels(levels: Any) -> list[_Level]:
    """PROTOCOL 5.3: bad input raises ValueError (empty list, a repeated level name,
    a negative or non-integer count, dlt > evaluable); missing keys and wrong types
    too. Keys other than the four are ignored."""
    if isinstance(levels, (str, bytes, Mapping)) or not isinstance(levels, Sequence):
        raise ValueError(f"levels: expected a list of dose levels, got {levels!r}")
    if not levels:
        raise ValueError("levels: at least one dose level is required")
    parsed: list[_Level] = []
    seen: set[str] = set()
    for i, raw in enumerate(levels):
        where = f"levels[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a dict, got {raw!r}")
        missing = [k for k in _KEYS if k not in raw]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        name = raw["level"]
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}.level: expected a level name, got {name!r}")
        if name in seen:
            raise ValueError(f"{where}.level: {name!r} is listed twice")
        seen.add(name)
        counts = {}
        for key in ("evaluable", "dlt", "pending"):
            value = raw[key]
            # a bool is an int to Python, not a count to a data manager
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}.{key}: expected an integer, got {value!r}")
            if value < 0:
                raise ValueError(f"{where}.{key}: must not be negative, got {value}")
            counts[key] = int(value)
        if counts["dlt"] > counts["evaluable"]:
            raise ValueError(f"{where}.dlt: {counts['dlt']} DLT but only {counts['evaluable']} evaluable ({name})")
        parsed.append(_Level(name, **counts))
    return parsed


def _result(decision: str, reason: str, level: _Level | None = None, mtd: _Level | None = None) -> dict:
    return {
        "decision": decision,
        "level": level.name if level else None,
        "mtd": mtd.name if mtd else None,
        "reason": reason,
    }


def decide(levels: list[dict]) -> dict:
    """The 3+3 decision of PROTOCOL 5.3 for the next subject.

    ``levels``: the dose levels from lowest to highest, each ``{"level": name,
    "evaluable": int, "dlt": int, "pending": int}``. Returns ``{"decision": "enrol" |
    "escalate" | "wait" | "mtd" | "stop", "level": name | None, "mtd": name | None,
    "reason": text naming the counts used}``; ``level`` is set only with enrol and
    escalate, ``mtd`` only with mtd.
    """
    parsed = _parse_levels(levels)
    lowest, highest = parsed[0], parsed[-1]

    # PROTOCOL 5.3 rule 1: T = the lowest level with 2 or more DLTs
    t_index = next((i for i, lv in enumerate(parsed) if lv.dlt >= 2), None)
    if t_index is not None:
        t = parsed[t_index]
        why = f"{t.counts} (2 or more DLT)"
        if t is lowest:
            return _result(STOP, f"{why} at the lowest level: no tolerated dose")
        m = parsed[t_index - 1]
        why = f"{why}; level below {m.counts}"
        if m.evaluable >= _EXPANDED and m.dlt <= 1 and m.pending == 0:
            return _result(
                MTD,
                f"{why}: {m.evaluable} >= {_EXPANDED} evaluable with at most 1 DLT and none pending: MTD is {m.name}",
                mtd=m,
            )
        if m.assigned < _EXPANDED:
            return _result(
                ENROL, f"{why}: {m.evaluable} + {m.pending} = {m.assigned} < {_EXPANDED}: enrol at {m.name}", level=m
            )
        return _result(
            WAIT,
            f"{why}: {m.evaluable} + {m.pending} = {m.assigned} "
            f">= {_EXPANDED}: wait for the {m.pending} pending at {m.name}",
        )

    # PROTOCOL 5.3 rule 2: L = the highest level with anyone evaluable or pending
    l_index = next((i for i in range(len(parsed) - 1, -1, -1) if parsed[i].assigned > 0), None)
    if l_index is None:
        return _result(
            ENROL,
            f"no subjects at any level (lowest {lowest.counts}): enrol at the lowest level {lowest.name}",
            level=lowest,
        )
    lv = parsed[l_index]
    is_highest = lv is highest
    why = f"{lv.counts}"
    if is_highest:
        why += " (highest level)"
    # the cohort size at L: 6 when any of the three conditions holds, else 3
    if lv.dlt == 1:
        cohort, because = _EXPANDED, "1 DLT"
    elif lv.assigned > _COHORT:
        cohort, because = _EXPANDED, f"{lv.assigned} > {_COHORT} assigned"
    elif is_highest and lv.evaluable >= _COHORT:
        cohort, because = _EXPANDED, f"highest level with {lv.evaluable} >= {_COHORT} evaluable"
    else:
        cohort, because = _COHORT, "no DLT"
    why += f"; cohort of {cohort} ({because})"
    if lv.assigned < cohort:
        return _result(
            ENROL, f"{why}: {lv.evaluable} + {lv.pending} = {lv.assigned} < {cohort}: enrol at {lv.name}", level=lv
        )
    if lv.pending > 0:
        return _result(
            WAIT, f"{why}: cohort full ({lv.assigned} assigned); wait for the {lv.pending} pending at {lv.name}"
        )
    if is_highest:
        return _result(
            MTD,
            f"{why}: cohort complete with {lv.dlt} DLT in {lv.evaluable} "
            f"evaluable at the highest level: MTD is {lv.name}",
            mtd=lv,
        )
    up = parsed[l_index + 1]
    return _result(
        ESCALATE,
        f"{why}: cohort complete with {lv.dlt} DLT in {lv.evaluable} evaluable: escalate to {up.name}",
        level=up,
    )


@dataclass(frozen=True)
class Stagger:
    """A first infusion held back by the sentinel stagger: ``until`` is the first day it
    may be given; the sentinel is ``sentinel_key``'s first infusion on ``sentinel_date``."""

    until: date
    sentinel_date: date
    sentinel_key: Any


def _stagger_date(value: Any, field: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValueError(f"{field}: expected a date, got {value!r}")
    return value


def sentinel_stagger(
    own_date: date, own_key: Any, level_firsts: list[tuple[date, Any]], stagger_days: int | None
) -> Stagger | None:
    """The sentinel stagger of PROTOCOL 5.3 (amended 2026-12-02) for one subject's first
    infusion on ``own_date``.

    ``level_firsts`` holds the first infusion (given, else planned) of every OTHER subject
    of the same dose level, as ``(date, key)``; ``key`` is any orderable identity of the
    subject (the subject id), which breaks ties between first infusions on the same day:
    the lower key is the sentinel. The sentinel is the level's subject with the earliest
    first infusion, this subject included; every other subject of the level may have the
    first infusion only from the sentinel's + ``stagger_days`` on. Returns None when this
    subject is the sentinel, when no stagger is set (None or 0), or when ``own_date`` is on
    or after that day; else the day it may have it and who the sentinel is.
    """
    if isinstance(stagger_days, bool) or not (stagger_days is None or isinstance(stagger_days, int)):
        raise ValueError(f"stagger_days: expected an integer or None, got {stagger_days!r}")
    if stagger_days is not None and stagger_days < 0:
        raise ValueError(f"stagger_days: must not be negative, got {stagger_days}")
    own_date = _stagger_date(own_date, "own_date")
    if not isinstance(level_firsts, (list, tuple)):
        raise ValueError(f"level_firsts: expected a list of (date, key), got {level_firsts!r}")
    others = []
    for i, item in enumerate(level_firsts):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"level_firsts[{i}]: expected a (date, key) pair, got {item!r}")
        if item[1] == own_key:
            raise ValueError(f"level_firsts[{i}]: this subject ({own_key!r}) is listed among the others")
        others.append((_stagger_date(item[0], f"level_firsts[{i}]"), item[1]))
    if not stagger_days or not others:
        return None
    sentinel_date, sentinel_key = min(others, key=lambda pair: (pair[0], pair[1]))
    if (own_date, own_key) < (sentinel_date, sentinel_key):
        return None  # this subject is the sentinel
    try:
        until = sentinel_date + timedelta(days=stagger_days)
    except OverflowError:
        raise ValueError("stagger_days: the stagger ends beyond the calendar") from None
    if own_date >= until:
        return None
    return Stagger(until=until, sentinel_date=sentinel_date, sentinel_key=sentinel_key)
