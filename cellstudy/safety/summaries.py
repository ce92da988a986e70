"""Safety summaries for investigators (issue 4; PROTOCOL 8): subjects with an AE by SOC
and term x worst grade, and CRS / ICANS, per dose level and overall; their export rows
and columns.

Summaries count subjects of the **safety population**: subjects with at least one
NK-cell infusion given (N per dose level, in the column header). AEs of subjects who
never received an infusion are in the listings but not in the summaries.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

from sqlalchemy import String, and_, case, cast, func, literal, null, or_, select, union_all

from ..auth.policy import Sites, within
from ..enrollment.models import Subject
from ..extensions import db
from ..infusions.models import Infusion
from ..adverse_events.fields import CRS_TERM, ICANS_TERM, ICANS_VERBATIM
from .filters import Filters
from .queries import ae_conditions, first_infusion_dates, site_id_of
from ..exports.tabular import Column
from ..adverse_events.models import AdverseEvent

GRADES = (1, 2, 3, 4, 5)
OVERALL = "Overall"


def _infused(subject_column):
    """The subject received at least one NK-cell infusion (the safety population)."""
    return subject_column.in_(select(Infusion.subject_id).where(Infusion.state == "given"))


def safety_population(filters: Filters, sites: Sites, dose_levels: Iterable[str] = ()) -> dict[str, int]:
    """N per dose level (and OVERALL): subjects with at least one NK-cell infusion given,
    of the user's sites, narrowed by the site and dose-level filters. Every dose level of
    `dose_levels` is a key (N may be 0); subjects without a dose level count in OVERALL."""
    where = [_infused(Subject.id)]
    where.append(within(Subject.site_id, sites))
    if filters.site:
        where.append(Subject.site_id == site_id_of(filters.site))
    if filters.dose_level:
        where.append(Subject.dose_level == filters.dose_level)
    levels = [filters.dose_level] if filters.dose_level else list(dose_levels)
    out = {level: 0 for level in levels}
    total = 0
    for level, n in db.session.execute(
        select(Subject.dose_level, func.count()).where(*where).group_by(Subject.dose_level)
    ):
        total += n
        if level is not None:
            out[level] = out.get(level, 0) + n
    out[OVERALL] = total
    return out


#: the filters a summary honours; grade_min makes no sense across grade columns
SUMMARY_IGNORES = ("grade_min",)


def _summary_ae_where(filters: Filters, sites: Sites) -> list:
    where = ae_conditions(filters, sites, grade=False, joined=True)
    where += [AdverseEvent.term.is_not(None), _infused(AdverseEvent.subject_id)]
    return where


def _worst_counts(filters: Filters, sites: Sites) -> list:
    """(level, soc, term, dose level, worst grade, subjects) for the three levels of the
    summary: 0 = any AE, 1 = per SOC, 2 = per SOC and term. One statement, one pass over
    the AEs: the worst grade per subject and term (a CTE, materialised because it is
    used three times on SQLite >= 3.35 and PostgreSQL >= 12), from which the SOC and
    any-AE worst grades per subject follow (the worst of the worsts); each level is then
    counted by dose level and worst grade. Every GROUP BY runs in the database."""
    ae = AdverseEvent
    per_term = (
        select(
            ae.subject_id.label("sid"),
            Subject.dose_level.label("dl"),
            ae.soc.label("soc"),
            ae.term.label("term"),
            func.max(ae.grade).label("worst"),
        )
        .select_from(ae)
        .join(Subject, Subject.id == ae.subject_id)
        .where(*_summary_ae_where(filters, sites))
        .group_by(ae.subject_id, Subject.dose_level, ae.soc, ae.term)
    ).cte("per_term")
    text_null = cast(null(), String)
    terms = select(
        literal(2).label("level"),
        per_term.c.soc,
        per_term.c.term,
        per_term.c.dl,
        per_term.c.worst,
        func.count().label("n"),
    ).group_by(per_term.c.soc, per_term.c.term, per_term.c.dl, per_term.c.worst)
    per_soc = (
        select(per_term.c.sid, per_term.c.dl, per_term.c.soc, func.max(per_term.c.worst).label("worst"))
        .group_by(per_term.c.sid, per_term.c.dl, per_term.c.soc)
        .subquery()
    )
    socs = select(literal(1), per_soc.c.soc, text_null, per_soc.c.dl, per_soc.c.worst, func.count()).group_by(
        per_soc.c.soc, per_soc.c.dl, per_soc.c.worst
    )
    per_subject = (
        select(per_term.c.sid, per_term.c.dl, func.max(per_term.c.worst).label("worst"))
        .group_by(per_term.c.sid, per_term.c.dl)
        .subquery()
    )
    anys = select(literal(0), text_null, text_null, per_subject.c.dl, per_subject.c.worst, func.count()).group_by(
        per_subject.c.dl, per_subject.c.worst
    )
    return db.session.execute(union_all(terms, socs, anys)).all()


def _empty_cells() -> dict:
    return {**{g: 0 for g in GRADES}, "any": 0, "ge3": 0}


def _add(cells: dict, worst: int | None, n: int) -> None:
    cells["any"] += n
    if worst is not None:
        cells[worst] = cells.get(worst, 0) + n
        if worst >= 3:
            cells["ge3"] += n


def summary_table(filters: Filters, sites: Sites, dose_levels: Iterable[str]) -> dict:
    """Subjects with at least one AE, by SOC and term x worst grade (1-5, any, >= 3), per
    dose level and overall (PROTOCOL 8). A subject counts once per row, at its worst
    grade for that row; an AE without a grade yet (a draft) counts in "Any" only.

    {"groups": [dose levels..., OVERALL], "N": {group: n}, "rows": [{"level": "all"|"soc"|
    "term", "soc", "term", "cells": {group: {1..5, "any", "ge3": n}}}]}: the "Any adverse
    event" row first, then each SOC (alphabetical) followed by its terms (alphabetical)."""
    population = safety_population(filters, sites, dose_levels)
    groups = [g for g in population if g != OVERALL] + [OVERALL]

    def cells_of(counts: Iterable) -> dict:
        cells = {g: _empty_cells() for g in groups}
        for level, worst, n in counts:
            if level in cells:
                _add(cells[level], worst, n)
            _add(cells[OVERALL], worst, n)
        return cells

    counts: tuple[list, dict, dict] = ([], {}, {})  # any AE; by SOC; by (SOC, term)
    for level, soc, term, dose_level, worst, n in _worst_counts(filters, sites):
        bucket = counts[level] if level == 0 else counts[level].setdefault(soc if level == 1 else (soc, term), [])
        bucket.append((dose_level, worst, n))
    rows = [{"level": "all", "soc": "Any adverse event", "term": None, "cells": cells_of(counts[0])}]
    by_soc, by_term = counts[1], counts[2]
    terms_of: dict[str, list[str]] = {}
    for soc, term in by_term:
        terms_of.setdefault(soc, []).append(term)
    for soc in sorted(by_soc, key=lambda s: (s is None, (s or "").lower())):
        rows.append(
            {"level": "soc", "soc": soc or "(no system organ class)", "term": None, "cells": cells_of(by_soc[soc])}
        )
        for term in sorted(terms_of.get(soc, ()), key=str.lower):
            rows.append({"level": "term", "soc": soc, "term": term, "cells": cells_of(by_term[soc, term])})
    keys = [key for key, _ in SUMMARY_CELLS]
    for row in rows:  # the counts in column order, for the page and the exports
        row["values"] = [row["cells"][group][key] for group in groups for key in keys]
    return {"groups": groups, "N": population, "rows": rows, "ignored": SUMMARY_IGNORES}


SUMMARY_CELLS = (*((g, f"Grade {g}") for g in GRADES), ("any", "Any grade"), ("ge3", "Grade ≥ 3"))


def summary_export_rows(table: dict) -> list[dict]:
    """The summary as flat rows for the exports: soc, term, then <group>_<cell> counts."""
    out = []
    names = [f"{group}_{key}" for group in table["groups"] for key, _ in SUMMARY_CELLS]
    for row in table["rows"]:
        flat = {"soc": row["soc"], "term": row["term"] or ("All terms" if row["level"] == "soc" else None)}
        flat.update(zip(names, row["values"], strict=False))
        out.append(flat)
    return out


def _crs_condition(kind: str):
    ae = AdverseEvent
    if kind == "crs":
        return or_(ae.category == "crs", ae.term == CRS_TERM)
    return or_(ae.category == "icans", and_(ae.term == ICANS_TERM, ae.verbatim == ICANS_VERBATIM))


def _median_range(values: list[int]) -> dict | None:
    if not values:
        return None
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def crs_icans_summary(filters: Filters, sites: Sites, dose_levels: Iterable[str]) -> dict:
    """CRS and ICANS per dose level and overall (issue 4): subjects with the event n/N,
    subjects by worst grade, time to onset and duration.

    - An event is an AE of category crs/icans (opened from the assessments), or recorded
      under the CTCAE term "Cytokine release syndrome" / the ICANS verbatim term.
    - Time to onset: days from the first NK-cell infusion to the onset of the subject's
      first event (the day of the infusion is day 0, as CAR-NK/CAR-T reports count it;
      the listings' study day counts it as day 1). One value per subject.
    - Duration: end - onset + 1 days, per event; ongoing events (no end date) are left
      out of the median and counted.

    {"groups", "N", "kinds": {"crs"|"icans": {group: {"n", "pct", "grades": {1..5: n},
    "onset": median_range|None, "duration": median_range|None, "ongoing": n, "events": n}}}}
    """
    population = safety_population(filters, sites, dose_levels)
    groups = [g for g in population if g != OVERALL] + [OVERALL]
    first = first_infusion_dates(None, sites)
    out = {"groups": groups, "N": population, "kinds": {}, "ignored": SUMMARY_IGNORES}
    kind_of = case((_crs_condition("crs"), "crs"), (_crs_condition("icans"), "icans"))
    stmt = (
        select(
            kind_of.label("kind"),
            AdverseEvent.subject_id,
            Subject.dose_level,
            AdverseEvent.grade,
            AdverseEvent.onset_date,
            AdverseEvent.end_date,
        )
        .join(Subject, Subject.id == AdverseEvent.subject_id)
        .where(*_summary_ae_where(filters, sites), or_(_crs_condition("crs"), _crs_condition("icans")))
        .order_by(AdverseEvent.subject_id, AdverseEvent.onset_date, AdverseEvent.id)
    )
    # one pass: per (kind, subject) the dose level, worst grade and first onset; per
    # (kind, dose level) the durations of ended events and the ongoing ones
    subjects: dict[tuple[str, int], list] = {}
    durations: dict[tuple[str, str | None], list[int]] = {}
    ongoing: dict[tuple[str, str | None], int] = {}
    events: dict[tuple[str, str | None], int] = {}
    for kind, sid, level, grade, onset, end in db.session.execute(stmt).tuples():
        entry = subjects.setdefault((kind, sid), [level, grade, onset])
        if grade is not None and (entry[1] is None or grade > entry[1]):
            entry[1] = grade
        if onset is not None and (entry[2] is None or onset < entry[2]):
            entry[2] = onset
        events[kind, level] = events.get((kind, level), 0) + 1
        if end is None:
            ongoing[kind, level] = ongoing.get((kind, level), 0) + 1
        elif onset is not None:
            durations.setdefault((kind, level), []).append((end - onset).days + 1)
    for kind in ("crs", "icans"):
        per_group: dict[str, dict] = {}
        for group in groups:

            def mine(key, group=group, kind=kind):
                return key[0] == kind and (group == OVERALL or key[1] == group)

            chosen = [(sid, v) for (k, sid), v in subjects.items() if k == kind and (group == OVERALL or v[0] == group)]
            n, total = len(chosen), population.get(group, 0)
            to_onset = [(v[2] - first[sid]).days for sid, v in chosen if v[2] is not None and sid in first]
            per_group[group] = {
                "n": n,
                "N": total,
                "pct": (100 * n / total) if total else None,
                "grades": {g: sum(1 for _, v in chosen if v[1] == g) for g in GRADES},
                "onset": _median_range(to_onset),
                "duration": _median_range([d for key, ds in durations.items() if mine(key) for d in ds]),
                "ongoing": sum(v for key, v in ongoing.items() if mine(key)),
                "events": sum(v for key, v in events.items() if mine(key)),
            }
        out["kinds"][kind] = per_group
    return out


def _fmt_number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def fmt_median_range(stats: dict | None) -> str:
    if not stats:
        return "—"
    return f"{_fmt_number(stats['median'])} ({stats['min']}–{stats['max']}), n={stats['n']}"


def fmt_n_pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.1f}%)" if total else f"{n}/0"


def crs_icans_rows(summary: dict) -> list[dict]:
    """The CRS/ICANS summary as text rows (measure x group), for the page and the exports."""
    label = {"crs": "CRS", "icans": "ICANS"}
    rows = []
    for kind, per_group in summary["kinds"].items():

        def line(measure, fn, kind=kind, per_group=per_group):
            rows.append(
                {
                    "event": label[kind],
                    "measure": measure,
                    **{group: fn(per_group[group]) for group in summary["groups"]},
                }
            )

        line(f"Subjects with {label[kind]}, n/N (%)", lambda s: fmt_n_pct(s["n"], s["N"]))
        for g in GRADES:
            line(f"Worst grade {g}, n", lambda s, g=g: str(s["grades"][g]))
        line("Time to onset, days from first infusion: median (range)", lambda s: fmt_median_range(s["onset"]))
        line("Duration, days: median (range) of ended events", lambda s: fmt_median_range(s["duration"]))
        line("Events ongoing (not in the duration), n", lambda s: str(s["ongoing"]))
    return rows


# --- export columns (cellstudy.exports.tabular) -----------------------------------------------------


def group_label(group: str, population: Mapping[str, int]) -> str:
    return f"{group} (N={population.get(group, 0)})"


def summary_columns(table: dict) -> list:
    out = [Column("soc", "System organ class", 34), Column("term", "CTCAE term", 34)]
    for group in table["groups"]:
        for key, label in SUMMARY_CELLS:
            out.append(Column(f"{group}_{key}", f"{group_label(group, table['N'])} {label}", 8, "int"))
    return out


def crs_icans_columns(summary: dict) -> list:
    return [
        Column("event", "Event", 8),
        Column("measure", "Measure", 40),
        *(Column(group, group_label(group, summary["N"]), 18) for group in summary["groups"]),
    ]
