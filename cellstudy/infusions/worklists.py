"""The lists across sites: the treatment calendar and what is overdue."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import case, literal, select, union_all
from sqlalchemy.orm import contains_eager, joinedload

from ..auth.policy import Sites, scoped
from ..enrollment.models import Subject
from ..extensions import db
from ..pagination import page_count, paged_with_total
from .models import Infusion, Visit

CALENDAR_PAGE = 50


def calendar(sites: Sites, start: date, days: int = 28, page: int = 1, per_page: int = CALENDAR_PAGE) -> dict:
    """Infusions and visits in [start, start + days) across the sites, a page at a time,
    ordered in the database; the infusions' lockouts are their stored judgements."""
    end = start + timedelta(days=days)
    visit_day = case((Visit.target_date < start, start), else_=Visit.target_date)
    infusions = (
        select(Infusion.id.label("id"), Infusion.planned_date.label("day"), literal(0).label("kind"))
        .join(Subject, Subject.id == Infusion.subject_id)
        .where(Infusion.state == "scheduled", Infusion.planned_date >= start, Infusion.planned_date < end)
    )
    visits = (
        select(Visit.id.label("id"), visit_day.label("day"), literal(1).label("kind"))
        .join(Subject, Subject.id == Visit.subject_id)
        .where(Visit.state == "planned", Visit.latest >= start, Visit.target_date < end)
    )
    infusions, visits = (scoped(s, Subject.site_id, sites) for s in (infusions, visits))
    both = union_all(infusions, visits).subquery()
    total, page, rows = paged_with_total(
        select(both.c.id, both.c.day, both.c.kind).order_by(both.c.day, both.c.kind, both.c.id), page, per_page
    )
    pages = page_count(total, per_page)
    inf_ids = [row_id for row_id, _day, kind in rows if kind == 0]
    visit_ids = [row_id for row_id, _day, kind in rows if kind == 1]
    # one query per kind, the subjects with what the lockouts need: no query per row
    loaded_infusions = (
        {
            i.id: i
            for i in db.session.execute(
                select(Infusion)
                .where(Infusion.id.in_(inf_ids))
                .options(joinedload(Infusion.subject).joinedload(Subject.site))
            ).scalars()
        }
        if inf_ids
        else {}
    )
    loaded_visits = (
        {
            v.id: v
            for v in db.session.execute(
                select(Visit).where(Visit.id.in_(visit_ids)).options(joinedload(Visit.subject).joinedload(Subject.site))
            ).scalars()
        }
        if visit_ids
        else {}
    )
    items = []
    for row_id, _day, kind in rows:
        if kind == 0:
            infusion = loaded_infusions[row_id]
            judgement = infusion.judgement  # stored, kept current (judgement.py): never recomputed per row
            items.append(
                {
                    "date": infusion.planned_date,
                    "kind": "infusion",
                    "subject": infusion.subject,
                    "label": f"Infusion {infusion.number}",
                    "record": infusion,
                    "judgement": judgement,
                    "warnings": judgement.lockouts if judgement else [],
                    "locked": bool(judgement and judgement.locked),
                    "overridden": bool(infusion.override_signature_id),
                }
            )
        else:
            visit = loaded_visits[row_id]
            items.append(
                {
                    "date": max(visit.target_date, start),
                    "kind": "visit",
                    "subject": visit.subject,
                    "label": f"Visit {visit.label}",
                    "record": visit,
                    "warnings": [],
                    "window": (visit.earliest, visit.latest),
                }
            )
    return {"items": items, "total": total, "page": page, "pages": pages}


def overdue(sites: Sites, today: date) -> dict:
    """Visits past their window with nothing recorded, and forms still missing."""
    with_subject = (contains_eager(Visit.subject).joinedload(Subject.site),)
    vstmt = select(Visit).join(Subject).options(*with_subject).where(Visit.state == "planned", Visit.latest < today)
    istmt = (
        select(Infusion)
        .join(Subject)
        .options(contains_eager(Infusion.subject).joinedload(Subject.site))
        .where(Infusion.state == "scheduled", Infusion.planned_date < today)
    )
    dstmt = select(Visit).join(Subject).options(*with_subject).where(Visit.state == "done", Visit.status != "complete")
    vstmt, istmt, dstmt = (scoped(s, Subject.site_id, sites) for s in (vstmt, istmt, dstmt))
    return {
        "visits": db.session.execute(vstmt.order_by(Visit.latest)).scalars().all(),
        "infusions": db.session.execute(istmt.order_by(Infusion.planned_date)).scalars().all(),
        "forms": db.session.execute(dstmt).scalars().all(),
    }
