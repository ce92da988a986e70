"""The source rows of the CDISC SDTM AE domain (PROTOCOL 8): the complete AEs of the
user's sites, as `exports.sdtm.ae_domain` takes them (the mapping itself is pure, in
cellstudy/exports/sdtm.py)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select

from ..auth.policy import Sites, within
from ..enrollment.models import Subject
from ..extensions import db
from ..adverse_events.fields import CRITERIA_CODES
from .queries import first_infusion_dates, stream
from ..adverse_events.models import AdverseEvent


def _sdtm_where(sites: Sites) -> list:
    where = [AdverseEvent.status == "complete"]
    where.append(within(AdverseEvent.site_id, sites))
    return where


def count_sdtm(sites: Sites) -> int:
    return db.session.execute(select(func.count()).select_from(AdverseEvent).where(*_sdtm_where(sites))).scalar_one()


def iter_sdtm_source(sites: Sites, *, studyid: str) -> Iterator[dict]:
    """The input of `exports.sdtm.ae_domain`: every complete AE of the sites (drafts and
    removed AEs are not data), in the order it asks for (subject, onset date, AE id),
    streamed. USUBJID is "<study id>-<subject number>"; RFSTDTC the first NK-cell
    infusion given."""
    first = first_infusion_dates(None, sites)
    ae = AdverseEvent
    where = _sdtm_where(sites)
    subject = Subject.label
    stmt = (
        select(
            ae.subject_id,
            subject.label("subject"),
            ae.number,
            ae.term,
            ae.verbatim,
            ae.soc,
            ae.meddra_code,
            ae.grade,
            ae.serious,
            ae.related,
            ae.related_nk,
            ae.related_ld,
            ae.action,
            ae.outcome,
            ae.onset_date,
            ae.end_date,
            ae.ongoing,
            ae.data,
        )
        .join(Subject, Subject.id == ae.subject_id)
        .where(*where)
        .order_by(subject, ae.onset_date.asc().nulls_last(), ae.id)
    )
    result = stream(stmt)
    try:
        for r in result:
            data = r.data or {}
            yield {
                "usubjid": f"{studyid}-{r.subject}",
                "ae_number": r.number,
                "term": r.term,
                "verbatim": r.verbatim,
                "soc": r.soc,
                "meddra_code": r.meddra_code,
                "grade": r.grade,
                "serious": r.serious,
                "related": r.related,
                "related_nk": r.related_nk,
                "related_ld": r.related_ld,
                "action": r.action,
                "outcome": r.outcome,
                "onset_date": r.onset_date,
                "end_date": r.end_date,
                "ongoing": r.ongoing,
                "rfstdtc": first.get(r.subject_id),
                **{code: bool(data.get(code)) for code in CRITERIA_CODES},
            }
    finally:
        result.close()
