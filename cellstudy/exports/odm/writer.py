"""The CDISC ODM 1.3.2 export, streamed (issue 15; PROTOCOL 8): `write_odm` writes one
document with lxml's incremental writer (``etree.xmlfile``). The metadata, the admin data
and each subject are built as small element trees and written one after the other, the
subjects in keyset chunks of CHUNK with one statement per table and chunk, so memory stays
flat whatever the study size. Mapping, extension and modes: docs/odm.md.

Characters XML 1.0 forbids (C0 controls other than tab, line feed and carriage return,
U+FFFE, U+FFFF and lone surrogates) cannot be written in an XML 1.0 file at all, not even as
character references: they are removed from every text and attribute value (``clean``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime
from typing import IO, Any

from lxml import etree
from sqlalchemy import func, select

from ...adverse_events import ctcae
from ...adverse_events.models import GradeEpisode
from ...auth.models import Site, User
from ...auth.policy import ALL_SITES, Sites, scoped, sites_of, within
from ...enrollment.models import Subject
from ...extensions import db
from ...monitoring.models import DataLock
from ...monitoring.state import record_states, study_lock
from ...records.audit import to_text
from ...records.models import AuditRecord, Query, Signature
from ...settings import current_study
from ...settings.models import StudyAmendment
from ...study import Study
from ...timeutil import as_utc, utcnow
from . import metadata as md

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
CS_NS = "https://cellstudy.org/ns/odm-extension/1.0"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
NSMAP = {None: ODM_NS, "cs": CS_NS}
MODES = ("snapshot", "transactional")
GRANULARITIES = ("Metadata", "AllClinicalData", "SingleSite", "SingleSubject")
FILE_TYPES = {"snapshot": "Snapshot", "transactional": "Transactional"}
#: subjects per chunk: one statement per table for each
CHUNK = 10
SYSTEM_USER = "U.SYSTEM"
STUDY_LOCATION = "L.STUDY"
LEGAL_REASON = "Electronic signature under 21 CFR Part 11: the signer re-entered their password (PROTOCOL 7)"
#: audit actions that set a field's value (records.audit: "field old -> new")
VALUE_ACTIONS = frozenset({"set", "update", "assign"})

_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: what an xs:ID (an NCName) may not hold: a Signature ID's parts are cleaned of it
_NOT_NCNAME = re.compile(r"[^A-Za-z0-9._-]")


class OdmError(ValueError):
    """A refused export request (unknown mode, granularity, site or subject)."""


def clean(text: Any) -> str:
    """A value as XML 1.0 text: the characters XML 1.0 forbids removed."""
    return _FORBIDDEN.sub("", str(text))


def _o(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _c(tag: str) -> str:
    return f"{{{CS_NS}}}{tag}"


def _el(parent: etree._Element | None, tag: str, attrs: dict | None = None, text: Any = None) -> etree._Element:
    """An element (under `parent` when given) with its non-empty attributes, cleaned."""
    values = {k: clean(v) for k, v in (attrs or {}).items() if v is not None and v != ""}
    el = etree.Element(tag, values, nsmap=NSMAP) if parent is None else etree.SubElement(parent, tag, values)
    if text is not None:
        el.text = clean(text)
    return el


def _translated(parent: etree._Element, tag: str, text: str) -> etree._Element:
    el = _el(parent, _o(tag))
    _el(el, _o("TranslatedText"), {XML_LANG: "en"}, text)
    return el


def stamp(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def odm_value(kind: str, text: str | None) -> str | None:
    """An audit-trail text (records.audit.to_text) as the ODM value of an item of `kind`."""
    if text is None:
        return None
    if kind == "bool":
        return {"yes": "true", "no": "false"}.get(text, text)
    return text


def user_oid(username: str | None) -> str:
    return f"U.{username}" if username and username != "system" else SYSTEM_USER


def location_oid(code: str | None) -> str:
    return f"L.{code}" if code else STUDY_LOCATION


def signature_id(*parts: str | int | None) -> str:
    """A Snapshot file's ``Signature/@ID`` (an xs:ID, unique in the file): from what the
    signature signs (subject key, study event, form, repeat key), so the same study gives the
    same IDs whichever instance exports it (docs/odm.md)."""
    return "SIG." + ".".join(_NOT_NCNAME.sub("_", str(p)) for p in parts if p is not None and p != "")


def signature_def_oid(meaning: str) -> str:
    """Stable across files and instances: from the meaning's text."""
    return "SD." + hashlib.sha256(meaning.encode()).hexdigest()[:12]


# --- the request ------------------------------------------------------------------------------


def _scope(sites: Sites, granularity: str, site: str | None, subject: str | None) -> tuple[Sites, Subject | None]:
    if granularity not in GRANULARITIES:
        raise OdmError(f"unknown granularity {granularity!r}: one of {', '.join(GRANULARITIES)}")
    if granularity == "SingleSite":
        row = next((s for s in sites_of(sites) if s.code == (site or "").upper()), None)
        if row is None:
            raise OdmError(f"no site {site!r} among the sites you may export")
        return [row.id], None
    if granularity == "SingleSubject":
        label = (subject or "").strip().upper()
        found = db.session.execute(
            scoped(select(Subject).where(Subject.label == label), Subject.site_id, sites)
        ).scalar_one_or_none()
        if found is None:
            raise OdmError(f"no subject {subject!r} at the sites you may export")
        return sites, found
    return sites, None


def versions(study_version: str) -> list[tuple[str, date]]:
    """(MetaDataVersion OID, effective date) of every study-definition version that records were
    saved under, and the version in force: oldest first."""
    seen = {study_version}
    for form in md.forms():
        model = form.type.model
        if model is not None and hasattr(model, "study_version"):
            seen.update(v for v in db.session.execute(select(model.study_version).distinct()).scalars() if v)
    effective = {
        row.label: row.effective_date
        for row in db.session.execute(select(StudyAmendment).where(StudyAmendment.status.in_(("approved", "in_force"))))
        .scalars()
        .all()
    }
    first = db.session.execute(select(func.min(AuditRecord.at))).scalar()
    start = as_utc(first).date() if first else utcnow().date()
    return sorted(((v, effective.get(v, start)) for v in seen), key=lambda item: (item[1], item[0]))


# --- metadata ---------------------------------------------------------------------------------


def _ctcae_terms() -> list[tuple[str, str]]:
    """(term, MedDRA code) of the shipped CTCAE v5.0 dictionary (cellstudy/data), by term."""
    return sorted((t.term, t.meddra_code) for t in ctcae.terms())


def study_element(study: Study, mdvs: list[tuple[str, date]]) -> etree._Element:
    """Study: GlobalVariables, the measurement units and one MetaDataVersion per version."""
    root = _el(None, _o("Study"), {"OID": study.protocol_id})
    gv = _el(root, _o("GlobalVariables"))
    _el(gv, _o("StudyName"), text=study.protocol_id)
    _el(gv, _o("StudyDescription"), text=f"{study.protocol_id}: phase I NK-cell therapy study (CellStudy EDC)")
    _el(gv, _o("ProtocolName"), text=study.protocol_id)
    units = md.units()
    if units:
        basic = _el(root, _o("BasicDefinitions"))
        for unit in units:
            mu = _el(basic, _o("MeasurementUnit"), {"OID": md.unit_oid(unit), "Name": unit})
            _translated(mu, "Symbol", unit)
    terms = _ctcae_terms()
    visits = [(v.code, v.label) for v in study.visits]
    for oid, _effective in mdvs:
        _metadata_version(root, oid, visits, terms)
    return root


def _metadata_version(root, oid: str, visits, terms) -> None:
    forms = md.forms()
    events = md.events(visits)
    mdv = _el(root, _o("MetaDataVersion"), {"OID": oid, "Name": f"Study definition {oid}"})
    protocol = _el(mdv, _o("Protocol"))
    for n, event in enumerate(events, 1):
        _el(protocol, _o("StudyEventRef"), {"StudyEventOID": event.oid, "OrderNumber": n, "Mandatory": "No"})
    for event in events:
        sed = _el(
            mdv, _o("StudyEventDef"), {"OID": event.oid, "Name": event.name, "Repeating": "No", "Type": event.type}
        )
        for n, form_oid in enumerate(event.forms, 1):
            _el(sed, _o("FormRef"), {"FormOID": form_oid, "OrderNumber": n, "Mandatory": "No"})
    for form in forms:
        fd = _el(mdv, _o("FormDef"), {"OID": form.oid, "Name": form.type.label, "Repeating": _yn(form.repeating)})
        if form.type.note:
            _translated(fd, "Description", form.type.note)
        for n, group in enumerate(form.groups, 1):
            _el(fd, _o("ItemGroupRef"), {"ItemGroupOID": group.oid, "OrderNumber": n, "Mandatory": "No"})
    for form in forms:
        for group in form.groups:
            ig = _el(mdv, _o("ItemGroupDef"), {"OID": group.oid, "Name": group.name, "Repeating": _yn(group.repeating)})
            for n, item in enumerate(group.items, 1):
                _el(ig, _o("ItemRef"), {"ItemOID": item.oid, "OrderNumber": n, "Mandatory": "No"})
    codelists: dict[str, md.Item] = {}
    for form in forms:
        for group in form.groups:
            for item in group.items:
                _item_def(mdv, item, bool(terms))
                if item.choices:
                    codelists.setdefault(item.codelist, item)
    for oid_, item in codelists.items():
        cl = _el(mdv, _o("CodeList"), {"OID": oid_, "Name": item.label, "DataType": "text"})
        for value, label in item.choices:
            cli = _el(cl, _o("CodeListItem"), {"CodedValue": value})
            _translated(cli, "Decode", label)
    if terms:
        cl = _el(mdv, _o("CodeList"), {"OID": md.CTCAE_CODELIST, "Name": "CTCAE v5.0 terms", "DataType": "text"})
        for term, code in terms:
            cli = _el(cl, _o("CodeListItem"), {"CodedValue": term})
            _translated(cli, "Decode", term)
            if code:
                _el(cli, _o("Alias"), {"Context": "MedDRA", "Name": code})


def _yn(flag: bool) -> str:
    return "Yes" if flag else "No"


def _item_def(mdv, item: md.Item, dictionary: bool) -> None:
    attrs = {
        "OID": item.oid,
        "Name": item.name,
        "DataType": item.data_type,
        "Length": item.length,
        "SignificantDigits": item.significant_digits,
        "Origin": "Derived" if item.system else "CRF",
    }
    el = _el(mdv, _o("ItemDef"), attrs)
    if item.help:
        _translated(el, "Description", item.help)
    _translated(el, "Question", item.label)
    if item.unit:
        _el(el, _o("MeasurementUnitRef"), {"MeasurementUnitOID": md.unit_oid(item.unit)})
    for comparator, value in item.range_checks():
        rc = _el(el, _o("RangeCheck"), {"Comparator": comparator, "SoftHard": "Hard"})
        _el(rc, _o("CheckValue"), text=value)
    codelist = item.codelist
    if codelist and (item.choices or dictionary):
        _el(el, _o("CodeListRef"), {"CodeListOID": codelist})


# --- admin data -------------------------------------------------------------------------------


def admin_element(study: Study, sites: Sites, mdvs: list[tuple[str, date]]) -> etree._Element:
    """Users (of the sites in scope, those of no site, and anyone the scoped trail names), the
    sites in scope as Locations, and a SignatureDef per e-signature meaning."""
    in_scope = list(sites_of(sites))
    site_ids = {s.id for s in in_scope}
    named: set[int] = set()
    if sites is not ALL_SITES:
        for stmt in (
            scoped(select(AuditRecord.user_id).distinct(), AuditRecord.site_id, sites),
            select(Signature.user_id)
            .distinct()
            .join(Subject, Subject.id == Signature.subject_id)
            .where(within(Subject.site_id, sorted(site_ids))),
        ):
            named.update(uid for uid in db.session.execute(stmt).scalars() if uid is not None)
    root = _el(None, _o("AdminData"), {"StudyOID": study.protocol_id})
    system = _el(root, _o("User"), {"OID": SYSTEM_USER, "UserType": "Other"})
    _el(system, _o("LoginName"), text="system")
    _el(system, _o("FullName"), text="CellStudy (system)")
    _el(system, _c("Role"), {"Name": "system"})
    for user in db.session.execute(select(User).order_by(User.username)).scalars():
        mine = [s for s in user.sites if s.id in site_ids]
        if sites is not ALL_SITES and not (mine or not user.sites or user.id in named):
            continue
        el = _el(root, _o("User"), {"OID": user_oid(user.username), "UserType": _user_type(user.role)})
        _el(el, _o("LoginName"), text=user.username)
        _el(el, _o("DisplayName"), text=user.full_name)
        _el(el, _o("FullName"), text=user.full_name)
        for site in mine:
            _el(el, _o("LocationRef"), {"LocationOID": location_oid(site.code)})
        _el(el, _c("Role"), {"Name": user.role, "Active": "true" if user.active else "false"})
    locations = [(STUDY_LOCATION, study.protocol_id, "Sponsor", None)] + [
        (location_oid(s.code), s.name, "Site", s.timezone) for s in in_scope
    ]
    for oid, name, kind, timezone in locations:
        loc = _el(root, _o("Location"), {"OID": oid, "Name": name, "LocationType": kind})
        for mdv_oid, effective in mdvs:
            _el(
                loc,
                _o("MetaDataVersionRef"),
                {"StudyOID": study.protocol_id, "MetaDataVersionOID": mdv_oid, "EffectiveDate": effective.isoformat()},
            )
        if timezone:
            _el(loc, _c("TimeZone"), {"Name": timezone})
    for meaning in db.session.execute(select(Signature.meaning).distinct().order_by(Signature.meaning)).scalars():
        sd = _el(root, _o("SignatureDef"), {"OID": signature_def_oid(meaning), "Methodology": "Electronic"})
        _el(sd, _o("Meaning"), text=meaning)
        _el(sd, _o("LegalReason"), text=LEGAL_REASON)
    return root


def _user_type(role: str) -> str:
    return {
        "investigator": "Investigator",
        "coordinator": "Investigator",
        "data_manager": "Sponsor",
        "monitor": "Sponsor",
    }.get(role, "Other")


# --- clinical data ----------------------------------------------------------------------------


class _Chunk:
    """What a chunk of subjects needs, read in one statement per table."""

    def __init__(self, subjects: list[Subject], forms: tuple[md.Form, ...], transactional: bool):
        ids = [s.id for s in subjects]
        self.records: dict[str, dict[int, list]] = {}
        keys = []
        for form in forms:
            model = form.type.model
            by_subject: dict[int, list] = defaultdict(list)
            for row in db.session.execute(select(model).where(model.subject_id.in_(ids)).order_by(model.id)).scalars():
                by_subject[row.subject_id].append(row)
                keys.append((form.name, row.id))
            self.records[form.name] = by_subject
        ae_ids = [r.id for rows in self.records.get(md.ADVERSE_EVENT.name, {}).values() for r in rows]
        self.episodes: dict[int, list[GradeEpisode]] = defaultdict(list)
        self.episode_of: dict[int, tuple[int, int]] = {}  # episode id -> (AE id, repeat key)
        for ep in db.session.execute(
            select(GradeEpisode).where(GradeEpisode.adverse_event_id.in_(ae_ids or [-1])).order_by(GradeEpisode.id)
        ).scalars():
            self.episodes[ep.adverse_event_id].append(ep)
            self.episode_of[ep.id] = (ep.adverse_event_id, len(self.episodes[ep.adverse_event_id]))
        self.states = record_states(keys)
        self.queries: dict[tuple[str, int | None], list[Query]] = defaultdict(list)
        for q in db.session.execute(select(Query).where(Query.subject_id.in_(ids)).order_by(Query.id)).scalars():
            self.queries[(q.form, q.form_id)].append(q)
        self.signatures: dict[tuple[str, int], list[Signature]] = defaultdict(list)
        self.subject_signatures: dict[int, list[Signature]] = defaultdict(list)
        form_names = {f.name for f in forms}
        for s in db.session.execute(
            select(Signature).where(Signature.subject_id.in_(ids)).order_by(Signature.id)
        ).scalars():
            if s.form in form_names:
                self.signatures[(s.form, s.form_id)].append(s)
            else:
                self.subject_signatures[s.subject_id].append(s)
        self.locked_subjects = set(
            db.session.execute(
                select(DataLock.subject_id).where(
                    DataLock.scope == "subject", DataLock.subject_id.in_(ids), DataLock.unlocked_at.is_(None)
                )
            ).scalars()
        )
        self.audit: dict[tuple[str | None, int | None], list] = defaultdict(list)
        self.subject_audit: dict[int, list] = defaultdict(list)
        if transactional:
            known = {(name, r.id) for name, by in self.records.items() for rows in by.values() for r in rows}
            cols = (
                AuditRecord.id,
                AuditRecord.at,
                AuditRecord.username,
                AuditRecord.user_id,
                AuditRecord.action,
                AuditRecord.site_id,
                AuditRecord.subject_id,
                AuditRecord.form,
                AuditRecord.form_id,
                AuditRecord.field,
                AuditRecord.old_value,
                AuditRecord.new_value,
                AuditRecord.reason,
            )
            for row in db.session.execute(
                select(*cols).where(AuditRecord.subject_id.in_(ids)).order_by(AuditRecord.subject_id, AuditRecord.id)
            ):
                key = (row.form, row.form_id)
                if row.form == md.EPISODES and row.form_id in self.episode_of:
                    key = (md.EPISODES, row.form_id)
                    self.audit[key].append(row)
                elif key in known:
                    self.audit[key].append(row)
                else:
                    self.subject_audit[row.subject_id].append(row)


class _Writer:
    def __init__(self, mode: str, study_version: str, sites_by_id: dict[int, str], usernames: dict[int, str]):
        self.mode = mode
        self.transactional = mode == "transactional"
        self.version = study_version
        self.sites = sites_by_id
        self.usernames = usernames
        self.forms = md.forms()
        self.counts = {"subjects": 0, "forms": 0, "item_data": 0, "audit_records": 0, "signatures": 0, "queries": 0}
        self.study_locked = study_lock() is not None
        #: where the writer is (subject key, study event OID): a Snapshot Signature ID's path
        self._where: tuple[str, str | None] = ("", None)
        self._ids: set[str] = set()  # the Signature IDs of the subject being written

    def _uoid(self, user_id: int | None) -> str:
        return user_oid(self.usernames.get(user_id)) if user_id else SYSTEM_USER

    # ODM's one Signature per element: the latest valid one
    def _odm_signature(self, parent, signatures: list[Signature], site_code: str, *path: str | int | None) -> None:
        """`path`: the signed record's place under its study event (form OID, repeat key)."""
        valid = [s for s in signatures if s.valid]
        if not valid:
            return
        s = valid[-1]
        sig = _el(parent, _o("Signature"), {"ID": self._signature_id(s, path)})  # odmlib requires an ID
        _el(sig, _o("UserRef"), {"UserOID": self._uoid(s.user_id)})
        _el(sig, _o("LocationRef"), {"LocationOID": location_oid(site_code)})
        _el(sig, _o("SignatureRef"), {"SignatureOID": signature_def_oid(s.meaning)})
        _el(sig, _o("DateTimeStamp"), text=stamp(s.signed_at))
        self.counts["signatures"] += 1

    def _signature_id(self, s: Signature, path: tuple) -> str:
        """Transactional: ``SIG.<row id>``, the source's row like every ID and SourceID of an
        audit extract. Snapshot: from what it signs (``signature_id``), stable across a round
        trip; a repeat of the same path (none today) gets ``.2``, ``.3``."""
        if self.transactional:
            return f"SIG.{s.id}"
        key, event = self._where
        base = signature_id(key, event, *path)
        found, n = base, 1
        while found in self._ids:
            n += 1
            found = f"{base}.{n}"
        self._ids.add(found)
        return found

    def _cs_signatures(self, parent, signatures: list[Signature]) -> None:
        for s in signatures:
            _el(
                parent,
                _c("Signature"),
                {
                    "ID": s.id if self.transactional else None,
                    "UserOID": self._uoid(s.user_id),
                    "SignatureOID": signature_def_oid(s.meaning),
                    "PrintedName": s.printed_name,
                    "DateTimeStamp": stamp(s.signed_at),
                    "Form": s.form,
                    "Valid": "true" if s.valid else "false",
                    "InvalidatedDateTime": stamp(s.invalidated_at),
                    "InvalidatedReason": s.invalidated_reason,
                },
            )

    def _audit_event(self, parent, row, site_code: str) -> None:
        _el(
            parent,
            _c("AuditEvent"),
            {
                "SourceID": row.id,
                "Action": row.action,
                "Field": row.field,
                "OldValue": row.old_value,
                "NewValue": row.new_value,
                "UserOID": user_oid(row.username),
                "LocationOID": location_oid(self.sites.get(row.site_id) or site_code),
                "DateTimeStamp": stamp(row.at),
                "ReasonForChange": row.reason,
            },
        )

    def _audit_record(self, parent, row, site_code: str) -> None:
        ar = _el(parent, _o("AuditRecord"))
        _el(ar, _o("UserRef"), {"UserOID": user_oid(row.username)})
        _el(ar, _o("LocationRef"), {"LocationOID": location_oid(self.sites.get(row.site_id) or site_code)})
        _el(ar, _o("DateTimeStamp"), text=stamp(row.at))
        if row.reason:
            _el(ar, _o("ReasonForChange"), text=row.reason)
        _el(ar, _o("SourceID"), text=str(row.id))

    def _annotate(self, container, form: md.Form, record, chunk: _Chunk, site_code: str) -> None:
        """Our extension in a record's container (FormData, or ItemGroupData of a log row)."""
        key = (form.name, record.id)
        state = chunk.states.get(key, {})
        reason = getattr(record, "deleted_reason", None) or getattr(record, "cancel_reason", None)
        _el(
            container,
            _c("Status"),
            {
                "Value": record.status,
                "State": getattr(record, "state", None),
                "Reason": reason,
                **(self._plan(record) if form.name == "infusion" else {}),
                "MetaDataVersionOID": getattr(record, "study_version", None) or self.version,
            },
        )
        sdv = _el(container, _c("SDV"), {"Status": state.get("sdv", "not required")})
        for name in state.get("verified_fields", ()):
            item = form.items.get(name)
            if item is not None:
                _el(sdv, _c("VerifiedItem"), {"ItemOID": item.oid})
        if state.get("locked"):
            _el(container, _c("Lock"), {"Locked": "true"})
        for q in chunk.queries.get(key, ()):
            item = form.items.get(q.field or "")
            el = _el(
                container,
                _c("Query"),
                {
                    "ID": q.id if self.transactional else None,
                    "ItemOID": item.oid if item else None,
                    "State": q.state,
                    "Origin": q.origin,
                    "UserOID": self._uoid(q.created_by_id),
                    "DateTimeStamp": stamp(q.created_at),
                    "ClosedDateTime": stamp(q.closed_at),
                },
            )
            _el(el, _c("Text"), text=q.text)
            self.counts["queries"] += 1
        self._cs_signatures(container, chunk.signatures.get(key, ()))
        if self.transactional:
            for row in chunk.audit.get(key, ()):
                if not self._is_value_change(form, row):
                    self._audit_event(container, row, site_code)

    @staticmethod
    def _plan(infusion) -> dict[str, Any]:
        """An infusion's plan, which the import needs to schedule it again: its number, planned
        date and the reason for a date outside the target window."""
        return {
            "Number": infusion.number,
            "PlannedDate": infusion.planned_date.isoformat() if infusion.planned_date else None,
            "DeviationReason": infusion.target_deviation_reason,
        }

    @staticmethod
    def _is_value_change(form: md.Form, row) -> bool:
        return row.action in VALUE_ACTIONS and row.field in form.items

    def _removal(self, form: md.Form, record, chunk: _Chunk):
        """The audit record that removed a record (its last status change to "deleted")."""
        rows = [
            r for r in chunk.audit.get((form.name, record.id), ()) if r.field == "status" and r.new_value == "deleted"
        ]
        return rows[-1] if rows else None

    def _groups_snapshot(self, parent, form: md.Form, record, groups, chunk: _Chunk, repeat_key: int | None) -> None:
        for group in groups:
            if group.key == md.EPISODE_GROUP:
                for n, ep in enumerate(chunk.episodes.get(record.id, ()), 1):
                    values = [(i, to_text(getattr(ep, i.name))) for i in group.items]
                    self._group_data(parent, group, n, values)
                continue
            values = [(i, to_text(record.get_field(i.name))) for i in group.items]
            if any(v is not None for _, v in values) or form.log:
                ig = self._group_data(parent, group, repeat_key if group.repeating else None, values)
                if form.log:
                    return ig
        return None

    def _group_data(self, parent, group: md.Group, repeat_key: int | None, values) -> etree._Element:
        attrs = {"ItemGroupOID": group.oid, "ItemGroupRepeatKey": repeat_key}
        if self.transactional:
            attrs["TransactionType"] = "Context"
        ig = _el(parent, _o("ItemGroupData"), attrs)
        for item, text in values:
            value = odm_value(item.kind, text)
            if value is not None:
                _el(ig, _o("ItemData"), {"ItemOID": item.oid, "Value": value})
                self.counts["item_data"] += 1
        return ig

    def _groups_transactional(self, parent, form: md.Form, record, chunk: _Chunk, site_code: str, repeat_key) -> None:
        rows = [r for r in chunk.audit.get((form.name, record.id), ()) if self._is_value_change(form, r)]
        for group in form.groups:
            if group.key == md.EPISODE_GROUP:
                by_name = {i.name: i for i in group.items}
                for n, ep in enumerate(chunk.episodes.get(record.id, ()), 1):
                    changes = [
                        (by_name[r.field], r)
                        for r in chunk.audit.get((md.EPISODES, ep.id), ())
                        if r.action in VALUE_ACTIONS and r.field in by_name
                    ]
                    if changes:
                        self._changes(parent, group, n, changes, site_code)
                continue
            names = {i.name: i for i in group.items}
            changes = [(names[r.field], r) for r in rows if r.field in names]
            if changes or form.log:
                ig = self._changes(parent, group, repeat_key if group.repeating else None, changes, site_code)
                if form.log:
                    return ig

    def _changes(self, parent, group: md.Group, repeat_key, changes, site_code: str) -> etree._Element:
        ig = _el(
            parent,
            _o("ItemGroupData"),
            {"ItemGroupOID": group.oid, "ItemGroupRepeatKey": repeat_key, "TransactionType": "Context"},
        )
        seen: set[str] = set()
        for item, row in changes:
            value = odm_value(item.kind, row.new_value)
            attrs = {"ItemOID": item.oid, "TransactionType": "Update" if item.oid in seen else "Insert"}
            seen.add(item.oid)
            if value is None:
                attrs["IsNull"] = "Yes"
            else:
                attrs["Value"] = value
            el = _el(ig, _o("ItemData"), attrs)
            self._audit_record(el, row, site_code)
            self.counts["item_data"] += 1
            self.counts["audit_records"] += 1
        return ig

    def subject(self, subject: Subject, chunk: _Chunk) -> etree._Element:
        site_code = self.sites.get(subject.site_id)
        attrs = {"SubjectKey": subject.label}
        if self.transactional:
            attrs["TransactionType"] = "Context"
        sd = _el(None, _o("SubjectData"), attrs)
        self._where, self._ids = (subject.label, None), set()
        subject_signatures = chunk.subject_signatures.get(subject.id, [])
        self._odm_signature(sd, [s for s in subject_signatures if s.form == "casebook"], site_code)
        _el(sd, _o("SiteRef"), {"LocationOID": location_oid(site_code)})
        for form in self.forms:
            records = chunk.records[form.name].get(subject.id, [])
            if not records:
                continue
            if form.name == md.VISIT.name:
                for record in records:
                    se = self._event(sd, md.event_oid(form.name, record.code))
                    self._form(se, form, [record], chunk, site_code)
            else:
                se = self._event(sd, md.event_oid(form.name))
                self._form(se, form, records, chunk, site_code)
        _el(
            sd,
            _c("Subject"),
            {
                "ScreeningNumber": subject.screening_number,
                "SubjectNumber": subject.subject_number,
                "Status": subject.status,
                "DoseLevel": subject.dose_level,
                "EnrolledDateTime": stamp(subject.enrolled_at),
            },
        )
        if self.study_locked or subject.id in chunk.locked_subjects:
            _el(sd, _c("Lock"), {"Locked": "true"})
        self._cs_signatures(sd, subject_signatures)
        if self.transactional:
            for row in chunk.subject_audit.get(subject.id, ()):
                self._audit_event(sd, row, site_code)
        self.counts["subjects"] += 1
        return sd

    def _event(self, parent, oid: str) -> etree._Element:
        attrs = {"StudyEventOID": oid}
        if self.transactional:
            attrs["TransactionType"] = "Context"
        self._where = (self._where[0], oid)
        return _el(parent, _o("StudyEventData"), attrs)

    def _form(self, parent, form: md.Form, records: list, chunk: _Chunk, site_code: str) -> None:
        if form.log:  # one form, a row (ItemGroupData) per record
            fd = self._form_data(parent, form, None)
            for n, record in enumerate(records, 1):
                if self.transactional:
                    ig = self._groups_transactional(fd, form, record, chunk, site_code, n)
                else:
                    ig = self._groups_snapshot(fd, form, record, form.groups, chunk, n)
                self._odm_signature(ig, chunk.signatures.get((form.name, record.id), []), site_code, form.oid, n)
                self._annotate(ig, form, record, chunk, site_code)
                self._fix_signature_position(ig)
                removal = self._removal(form, record, chunk) if self.transactional else None
                if removal is not None:
                    gone = _el(
                        fd,
                        _o("ItemGroupData"),
                        {"ItemGroupOID": form.groups[0].oid, "ItemGroupRepeatKey": n, "TransactionType": "Remove"},
                    )
                    self._audit_record(gone, removal, site_code)
            return
        for n, record in enumerate(records, 1):
            key = n if form.repeating else None
            fd = self._form_data(parent, form, key)
            self._odm_signature(fd, chunk.signatures.get((form.name, record.id), []), site_code, form.oid, key)
            if self.transactional:
                self._groups_transactional(fd, form, record, chunk, site_code, None)
            else:
                self._groups_snapshot(fd, form, record, form.groups, chunk, None)
            self._annotate(fd, form, record, chunk, site_code)
            removal = self._removal(form, record, chunk) if self.transactional else None
            if removal is not None:
                gone = self._form_data(parent, form, key, "Remove")
                self._audit_record(gone, removal, site_code)

    @staticmethod
    def _fix_signature_position(ig) -> None:
        """ItemGroupData: AuditRecord?, Signature?, ..., ItemData*, extensions: move the ODM
        Signature (appended after the ItemData) to the front."""
        for child in ig:
            if child.tag == _o("Signature"):
                ig.remove(child)
                ig.insert(0, child)
                return

    def _form_data(self, parent, form: md.Form, repeat_key, transaction: str | None = None) -> etree._Element:
        attrs = {"FormOID": form.oid, "FormRepeatKey": repeat_key}
        if self.transactional:
            attrs["TransactionType"] = transaction or "Context"
        self.counts["forms"] += 1
        return _el(parent, _o("FormData"), attrs)


def _subject_chunks(sites: Sites, only: Subject | None) -> Iterator[list[Subject]]:
    if only is not None:
        yield [only]
        return
    last = 0
    while True:
        stmt = (
            scoped(select(Subject).where(Subject.id > last), Subject.site_id, sites).order_by(Subject.id).limit(CHUNK)
        )
        subjects = list(db.session.execute(stmt).scalars())
        if not subjects:
            return
        yield subjects
        last = subjects[-1].id


def count_subjects(sites: Sites) -> int:
    return db.session.execute(scoped(select(func.count(Subject.id)), Subject.site_id, sites)).scalar_one()


def write_odm(
    out: IO[bytes],
    *,
    sites: Sites,
    mode: str = "snapshot",
    granularity: str = "AllClinicalData",
    site: str | None = None,
    subject: str | None = None,
    user: User | None = None,
    progress: Any = None,
    short_transactions: bool = False,
) -> dict[str, int]:
    """Write one ODM 1.3.2 document to `out` (binary); returns the counts written.

    `sites`: the requester's scope (``policy.user_sites(user)``; ALL_SITES for the system).
    `granularity` SingleSite needs `site` (a site code in scope), SingleSubject `subject` (a
    subject label in scope): OdmError otherwise. `progress(done, total)` is called after each
    chunk of subjects; `short_transactions` ends the read transaction after each chunk (a job).
    """
    if mode not in MODES:
        raise OdmError(f"unknown mode {mode!r}: snapshot or transactional")
    scope, only = _scope(sites, granularity, site, subject)
    study = current_study()
    mdvs = versions(study.version)
    attrs = {
        "FileType": FILE_TYPES[mode],
        "Granularity": granularity,
        "FileOID": f"CELLSTUDY.{study.protocol_id}.{uuid.uuid4()}",
        "CreationDateTime": stamp(utcnow()),
        "ODMVersion": "1.3.2",
        "Originator": user.username if user is not None else "system",
        "SourceSystem": "CellStudy",
        "SourceSystemVersion": "0.1.0",
    }
    counts = {"subjects": 0, "forms": 0, "item_data": 0, "audit_records": 0, "signatures": 0, "queries": 0}
    with etree.xmlfile(out, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(_o("ODM"), {k: clean(v) for k, v in attrs.items()}, nsmap=NSMAP):
            xf.write(study_element(study, mdvs))
            if granularity == "Metadata":
                return counts
            xf.write(admin_element(study, scope, mdvs))
            xf.flush()
            writer = _Writer(
                mode,
                study.version,
                {s.id: s.code for s in db.session.execute(select(Site)).scalars()},
                dict(db.session.execute(select(User.id, User.username)).tuples().all()),
            )
            total = 1 if only is not None else count_subjects(scope)
            if short_transactions:
                db.session.rollback()
            with xf.element(_o("ClinicalData"), {"StudyOID": study.protocol_id, "MetaDataVersionOID": study.version}):
                done = 0
                for subjects in _subject_chunks(scope, only):
                    chunk = _Chunk(subjects, writer.forms, writer.transactional)
                    for s in subjects:
                        xf.write(writer.subject(s, chunk))
                    xf.flush()
                    done += len(subjects)
                    del chunk
                    if short_transactions:
                        db.session.rollback()
                    if progress is not None:
                        progress(done, total)
            counts = writer.counts
    return counts
