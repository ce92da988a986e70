"""The source rows of the CDISC SDTM domains (PROTOCOL 8; issue 15): the complete AEs of
the user's sites, as `exports.sdtm.ae_domain` takes them, and the subjects and their
administrations for DM, DS and EX (`exports.sdtm_dm`, `sdtm_ds`, `sdtm_ex`). The
mappings themselves are pure, in cellstudy/exports/sdtm*.py; every query here is scoped
to the sites by `within`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from importlib import metadata

from sqlalchemy import func, select

from ..auth.policy import Sites, within
from ..auth.models import Site
from ..enrollment.models import EligibilityDecision, Screening, Subject
from ..infusions.models import Infusion, LymphodepletionDay
from ..exports import sdtm, sdtm_dm, sdtm_ds, sdtm_ex
from ..exports.sdtm_files import StudyMeta
from ..exports.sdtm_model import Domain, as_date
from ..records.models import AuditRecord
from ..study import Study
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


# --- DM, DS and EX (issue 15) -----------------------------------------------------------------
# The source rows of `exports.sdtm_dm`, `exports.sdtm_ds` and `exports.sdtm_ex`: every
# subject of the user's sites, and every administration of their study treatment. A
# handful of queries per export, each scoped by `within` on the subject's site.


def iter_subject_facts(sites: Sites, *, studyid: str) -> list[dict]:
    """One dict per subject of the sites (sorted by subject), as `exports.sdtm_dm.dm_domain`
    and `exports.sdtm_ds.ds_domain` take it: the screening answers (latest attempt), the
    NK-cell infusions given (first, last, dose levels), the latest screen-failure
    decision, the date and reason of the change to the current status (the audit trail)
    and the date of a fatal AE."""
    scope = within(Subject.site_id, sites)
    subjects = db.session.execute(
        select(Subject.id, Subject.label.label("label"), Site.code, Subject.status, Subject.dose_level)
        .join(Site, Site.id == Subject.site_id)
        .where(scope)
        .order_by(Subject.label, Subject.id)
    ).all()
    screening: dict[int, dict] = {}
    for subject_id, data in db.session.execute(
        select(Screening.subject_id, Screening.data)
        .join(Subject, Subject.id == Screening.subject_id)
        .where(scope)
        .order_by(Screening.subject_id, Screening.attempt)
    ):
        screening[subject_id] = data or {}  # the latest attempt wins
    given: dict[int, list[tuple[date, str | None]]] = {}
    for subject_id, data, planned, level in db.session.execute(
        select(Infusion.subject_id, Infusion.data, Infusion.planned_date, Infusion.dose_level)
        .join(Subject, Subject.id == Infusion.subject_id)
        .where(scope, Infusion.state == "given")
    ):
        day = as_date((data or {}).get("administration_date")) or planned
        given.setdefault(subject_id, []).append((day, level))
    failed: dict[int, tuple[date, list]] = {}
    for subject_id, decided_at, criteria in db.session.execute(
        select(EligibilityDecision.subject_id, EligibilityDecision.decided_at, EligibilityDecision.failed_criteria)
        .join(Subject, Subject.id == EligibilityDecision.subject_id)
        .where(scope, EligibilityDecision.outcome == "screen_failed")
        .order_by(EligibilityDecision.id)
    ):
        failed[subject_id] = (as_date(decided_at), list(criteria or ()))
    changes: dict[tuple[int, str], tuple[date, str | None]] = {}
    for subject_id, new, at, reason in db.session.execute(
        select(AuditRecord.subject_id, AuditRecord.new_value, AuditRecord.at, AuditRecord.reason)
        .join(Subject, Subject.id == AuditRecord.subject_id)
        .where(scope, AuditRecord.action == "status", AuditRecord.form == "subject", AuditRecord.field == "status")
        .order_by(AuditRecord.id)
    ):
        changes[(subject_id, new)] = (as_date(at), reason)  # the latest change to that status
    deaths: dict[int, date] = {}
    for subject_id, onset, end in db.session.execute(
        select(AdverseEvent.subject_id, AdverseEvent.onset_date, AdverseEvent.end_date).where(
            within(AdverseEvent.site_id, sites), AdverseEvent.status == "complete", AdverseEvent.outcome == "fatal"
        )
    ):
        day = end or onset
        if day and (subject_id not in deaths or day > deaths[subject_id]):
            deaths[subject_id] = day

    out = []
    for subject_id, label, site, status, dose_level in subjects:
        data = screening.get(subject_id, {})
        infusions = sorted(given.get(subject_id, []), key=lambda x: x[0])
        status_date, status_reason = changes.get((subject_id, status), (None, None))
        fail_date, criteria = failed.get(subject_id, (None, []))
        death = deaths.get(subject_id)
        end = None
        if status == "screen_failed":
            end = fail_date or status_date
        elif status == "died":
            end = death or status_date
        elif status in ("completed", "withdrawn"):
            end = status_date
        out.append(
            {
                "usubjid": f"{studyid}-{label}",
                "subjid": label,
                "site": site,
                "status": status,
                "dose_level": dose_level,
                "given_levels": [level or dose_level for _, level in infusions],
                "rfstdtc": infusions[0][0] if infusions else None,
                "rfendtc": infusions[-1][0] if infusions else None,
                "icf_date": data.get("icf_signed_date"),
                "date_of_birth": data.get("date_of_birth"),
                "sex": data.get("sex"),
                "screening_date": data.get("screening_date"),
                "status_date": status_date,
                "status_reason": status_reason,
                "screen_fail_date": fail_date,
                "failed_criteria": criteria,
                "death_date": death,
                "end_date": end,
                "country": None,
            }
        )
    return out


def iter_ex_source(sites: Sites, *, studyid: str) -> list[dict]:
    """The input of `exports.sdtm_ex.ex_domain`: every NK-cell infusion given and every
    complete lymphodepletion day of the sites' subjects, sorted by subject."""
    scope = within(Subject.site_id, sites)
    first = first_infusion_dates(None, sites)
    rows = []
    for subject_id, label, number, planned, data in db.session.execute(
        select(Infusion.subject_id, Subject.label.label("label"), Infusion.number, Infusion.planned_date, Infusion.data)
        .join(Subject, Subject.id == Infusion.subject_id)
        .where(scope, Infusion.state == "given")
    ):
        data = data or {}
        rows.append(
            {
                "usubjid": f"{studyid}-{label}",
                "kind": "infusion",
                "number": number,
                "date": as_date(data.get("administration_date")) or planned,
                "start_time": data.get("start_time"),
                "stop_time": data.get("stop_time"),
                "actual_cells": data.get("actual_cells"),
                "product_lot": data.get("product_lot"),
                "rfstdtc": first.get(subject_id),
            }
        )
    for subject_id, label, day, planned, data in db.session.execute(
        select(
            LymphodepletionDay.subject_id,
            Subject.label.label("label"),
            LymphodepletionDay.day,
            LymphodepletionDay.planned_date,
            LymphodepletionDay.data,
        )
        .join(Subject, Subject.id == LymphodepletionDay.subject_id)
        .where(scope, LymphodepletionDay.status == "complete")
    ):
        data = data or {}
        rows.append(
            {
                "usubjid": f"{studyid}-{label}",
                "kind": "lymphodepletion",
                "day": day,
                "date": as_date(data.get("administration_date")) or planned,
                "start_time": data.get("start_time"),
                "stop_time": data.get("stop_time"),
                "doses": {k.removesuffix("_mg_m2"): v for k, v in data.items() if k.endswith("_mg_m2")},
                "rfstdtc": first.get(subject_id),
            }
        )
    rows.sort(key=lambda r: r["usubjid"])
    return rows


# --- the datasets, ready for a file (issue 15) ---------------------------------------------------

#: the SDTM domains the EDC exports, in the define.xml's order
DOMAINS = ("dm", "ae", "ex", "ds")


def last_modified(sites: Sites) -> datetime | None:
    """When the clinical data of the sites last changed: the newest audit record."""
    return db.session.execute(select(func.max(AuditRecord.at)).where(within(AuditRecord.site_id, sites))).scalar()


def domain_records(domain: str, sites: Sites, *, study: Study) -> tuple[Domain, list[dict]]:
    """(declaration, records) of one SDTM domain for the sites, every record in memory
    (the XPT, Dataset-JSON and define.xml files are written whole)."""
    studyid = study.protocol_id
    drugs = [d.name for d in study.regimen.lymphodepletion_drugs]
    if domain == "ae":
        return sdtm.AE, list(sdtm.ae_domain(iter_sdtm_source(sites, studyid=studyid), studyid=studyid))
    if domain == "ex":
        return sdtm_ex.EX, list(sdtm_ex.ex_domain(iter_ex_source(sites, studyid=studyid), studyid=studyid, drugs=drugs))
    facts = iter_subject_facts(sites, studyid=studyid)
    if domain == "ds":
        return sdtm_ds.DS, list(sdtm_ds.ds_domain(facts, studyid=studyid))
    if domain == "dm":
        ex = sdtm_ex.ex_domain(iter_ex_source(sites, studyid=studyid), studyid=studyid, drugs=drugs)
        by_subject: dict[str, list[dict]] = {}
        for record in ex:
            by_subject.setdefault(record["USUBJID"], []).append(record)
        levels = {level.name: level.label for level in study.regimen.dose_levels}
        return sdtm_dm.DM, list(sdtm_dm.dm_domain(facts, studyid=studyid, levels=levels, ex_by_subject=by_subject))
    raise ValueError(f"Unknown SDTM domain {domain!r}")


def iter_domain_records(domain: str, sites: Sites, *, study: Study) -> Iterator[dict]:
    """The records of one domain for a streamed CSV (the AE domain streams row by row)."""
    if domain == "ae":
        studyid = study.protocol_id
        return sdtm.ae_domain(iter_sdtm_source(sites, studyid=studyid), studyid=studyid)
    return iter(domain_records(domain, sites, study=study)[1])


def study_meta(study: Study, sites: Sites, *, now: datetime) -> StudyMeta:
    """The identifiers the Dataset-JSON files and the define.xml share."""
    oid = re.sub(r"[^A-Za-z0-9.-]+", "-", study.protocol_id).strip("-")
    version = re.sub(r"[^A-Za-z0-9.-]+", "-", study.version).strip("-")
    try:
        system_version = metadata.version("cellstudy")
    except metadata.PackageNotFoundError:
        system_version = "unknown"
    return StudyMeta(
        study_oid=f"STUDY.{oid}",
        study_name=study.protocol_id,
        metadata_version_oid=f"MDV.{oid}.SDTMIG-3.4.{version}",
        originator="CellStudy",
        system="CellStudy",
        system_version=system_version,
        db_modified=last_modified(sites) or now,
        created=now,
    )


def codelist_terms(study: Study) -> dict[str, tuple[str, ...]]:
    """The terms of the study's own codelists for the define.xml: the dose levels."""
    return {"ARMCD": tuple(level.name for level in study.regimen.dose_levels)}
