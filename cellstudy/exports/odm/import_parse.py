"""Reading an ODM 1.3.2 file for the import (issue 15): the file's header, its AdminData and
its ClinicalData as plain data, one ``SubjectData`` at a time (lxml ``iterparse``: each
subject is cleared once read, so memory stays flat whatever the file size).

Pure: lxml only, no Flask, no database. What the values mean is the importer's business
(importer.py); this module only says where each one stands in the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from lxml import etree

from .writer import CS_NS, ODM_NS


def _o(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _c(tag: str) -> str:
    return f"{{{CS_NS}}}{tag}"


class OdmFileError(ValueError):
    """The file is not an ODM 1.3.2 document we can read."""


@dataclass(frozen=True)
class FileInfo:
    file_oid: str
    file_type: str  # Snapshot | Transactional
    granularity: str | None
    study_oid: str | None
    metadata_version: str | None


@dataclass(frozen=True)
class UserIn:
    oid: str
    login: str
    full_name: str
    role: str | None
    locations: tuple[str, ...]


@dataclass(frozen=True)
class LocationIn:
    oid: str
    name: str
    kind: str | None
    timezone: str | None  # our extension's cs:TimeZone, where the file has it


@dataclass
class Admin:
    users: dict[str, UserIn] = field(default_factory=dict)  # by OID
    locations: dict[str, LocationIn] = field(default_factory=dict)
    meanings: dict[str, str] = field(default_factory=dict)  # SignatureDef OID -> Meaning


@dataclass(frozen=True)
class SignatureIn:
    """An e-signature of the file: ours (cs:Signature, every one, valid or not), or ODM's
    Signature where the file has no extension."""

    user_oid: str
    signature_oid: str | None
    at: str | None
    printed_name: str | None = None
    valid: bool = True
    invalidated_at: str | None = None
    invalidated_reason: str | None = None


@dataclass(frozen=True)
class QueryIn:
    item_oid: str | None
    state: str
    origin: str
    user_oid: str | None
    at: str | None
    closed_at: str | None
    text: str


@dataclass
class Record:
    """One record of a form: a FormData (a log: one ItemGroupData row)."""

    form_oid: str
    event_oid: str
    repeat_key: str | None
    #: item OID -> value text (None: IsNull), in file order; a Transactional file's last value
    values: dict[str, str | None] = field(default_factory=dict)
    #: the grade episodes of an AE (a repeating group): one {item OID: value} per repeat
    episodes: list[dict[str, str | None]] = field(default_factory=list)
    status: str | None = None
    state: str | None = None
    reason: str | None = None
    #: an infusion's plan (cs:Status Number, PlannedDate, DeviationReason), where the file has it
    planned: str | None = None
    number: str | None = None
    deviation_reason: str | None = None
    removed: bool = False
    signatures: list[SignatureIn] = field(default_factory=list)
    #: our extension: the item OIDs verified against source, the queries, a lock
    verified: list[str] = field(default_factory=list)
    queries: list[QueryIn] = field(default_factory=list)
    locked: bool = False


@dataclass
class SubjectIn:
    key: str
    site_oid: str | None
    records: list[Record] = field(default_factory=list)
    screening_number: str | None = None
    subject_number: str | None = None
    status: str | None = None
    dose_level: str | None = None
    enrolled_at: str | None = None
    signatures: list[SignatureIn] = field(default_factory=list)  # the casebook's
    locked: bool = False


def _text(el: etree._Element | None) -> str | None:
    return el.text if el is not None else None


def _odm_signature(el: etree._Element | None) -> SignatureIn | None:
    if el is None:
        return None
    user = el.find(_o("UserRef"))
    ref = el.find(_o("SignatureRef"))
    return SignatureIn(
        user.get("UserOID") if user is not None else "",
        ref.get("SignatureOID") if ref is not None else None,
        _text(el.find(_o("DateTimeStamp"))),
    )


def _signatures(container: etree._Element) -> list[SignatureIn]:
    ours = [
        SignatureIn(
            s.get("UserOID", ""),
            s.get("SignatureOID"),
            s.get("DateTimeStamp"),
            s.get("PrintedName"),
            s.get("Valid", "true") == "true",
            s.get("InvalidatedDateTime"),
            s.get("InvalidatedReason"),
        )
        for s in container.findall(_c("Signature"))
    ]
    if ours:
        return ours
    odm = _odm_signature(container.find(_o("Signature")))
    return [odm] if odm else []


def _annotate(record: Record, container: etree._Element) -> None:
    status = container.find(_c("Status"))
    if status is not None:
        record.status = status.get("Value")
        record.state = status.get("State")
        record.reason = status.get("Reason")
        record.planned = status.get("PlannedDate")
        record.number = status.get("Number")
        record.deviation_reason = status.get("DeviationReason")
    record.signatures = _signatures(container)
    sdv = container.find(_c("SDV"))
    if sdv is not None:
        record.verified = [v.get("ItemOID", "") for v in sdv.findall(_c("VerifiedItem"))]
    record.queries = [
        QueryIn(
            q.get("ItemOID"),
            q.get("State", "open"),
            q.get("Origin", "manual"),
            q.get("UserOID"),
            q.get("DateTimeStamp"),
            q.get("ClosedDateTime"),
            _text(q.find(_c("Text"))) or "",
        )
        for q in container.findall(_c("Query"))
    ]
    lock = container.find(_c("Lock"))
    record.locked = lock is not None and lock.get("Locked") == "true"
    if container.get("TransactionType") == "Remove":
        record.removed = True


def _items(group: etree._Element, into: dict[str, str | None]) -> None:
    for item in group.findall(_o("ItemData")):
        oid = item.get("ItemOID", "")
        if item.get("TransactionType") == "Remove" or item.get("IsNull") == "Yes":
            into[oid] = None
        else:
            into[oid] = item.get("Value")


def subject_of(el: etree._Element, episode_groups: frozenset[str], log_forms: frozenset[str]) -> SubjectIn:
    """A SubjectData element as plain data. `episode_groups`: the OIDs of repeating groups
    inside a form (an AE's grade episodes); `log_forms`: the forms whose rows are
    ItemGroupData (a log)."""
    site = el.find(_o("SiteRef"))
    subject = SubjectIn(el.get("SubjectKey", ""), site.get("LocationOID") if site is not None else None)
    for event in el.findall(_o("StudyEventData")):
        for form in event.findall(_o("FormData")):
            form_oid = form.get("FormOID", "")
            if form_oid in log_forms:
                rows: dict[str, Record] = {}
                for group in form.findall(_o("ItemGroupData")):
                    key = group.get("ItemGroupRepeatKey") or "1"
                    row = rows.get(key)
                    if row is None:
                        row = rows[key] = Record(form_oid, event.get("StudyEventOID", ""), key)
                        subject.records.append(row)
                    if group.get("TransactionType") == "Remove":
                        row.removed = True
                        continue
                    _items(group, row.values)
                    _annotate(row, group)
                continue
            if form.get("TransactionType") == "Remove":
                gone = [
                    r
                    for r in subject.records
                    if r.form_oid == form_oid and r.repeat_key == form.get("FormRepeatKey") and not r.removed
                ]
                if gone:
                    gone[-1].removed = True
                continue
            record = Record(form_oid, event.get("StudyEventOID", ""), form.get("FormRepeatKey"))
            for group in form.findall(_o("ItemGroupData")):
                if group.get("ItemGroupOID") in episode_groups:
                    n = int(group.get("ItemGroupRepeatKey") or len(record.episodes) + 1)
                    while len(record.episodes) < n:
                        record.episodes.append({})
                    _items(group, record.episodes[n - 1])
                else:
                    _items(group, record.values)
            _annotate(record, form)
            subject.records.append(record)
    ours = el.find(_c("Subject"))
    if ours is not None:
        subject.screening_number = ours.get("ScreeningNumber")
        subject.subject_number = ours.get("SubjectNumber")
        subject.status = ours.get("Status")
        subject.dose_level = ours.get("DoseLevel")
        subject.enrolled_at = ours.get("EnrolledDateTime")
    subject.signatures = _signatures(el)
    lock = el.find(_c("Lock"))
    subject.locked = lock is not None and lock.get("Locked") == "true"
    return subject


def admin_of(el: etree._Element) -> Admin:
    admin = Admin()
    for user in el.findall(_o("User")):
        role = user.find(_c("Role"))
        admin.users[user.get("OID", "")] = UserIn(
            user.get("OID", ""),
            (_text(user.find(_o("LoginName"))) or "").strip(),
            _text(user.find(_o("FullName"))) or _text(user.find(_o("DisplayName"))) or "",
            role.get("Name") if role is not None else None,
            tuple(ref.get("LocationOID", "") for ref in user.findall(_o("LocationRef"))),
        )
    for loc in el.findall(_o("Location")):
        zone = loc.find(_c("TimeZone"))
        admin.locations[loc.get("OID", "")] = LocationIn(
            loc.get("OID", ""),
            loc.get("Name", ""),
            loc.get("LocationType"),
            zone.get("Name") if zone is not None else None,
        )
    for sd in el.findall(_o("SignatureDef")):
        admin.meanings[sd.get("OID", "")] = _text(sd.find(_o("Meaning"))) or ""
    return admin


def read(
    source: str | IO[bytes], episode_groups: frozenset[str], log_forms: frozenset[str]
) -> Iterator[FileInfo | Admin | SubjectIn]:
    """The file's header (FileInfo), then its AdminData (Admin, if any), then each subject
    (SubjectInfo), in file order. Raises OdmFileError on a file that is not ODM."""
    events = etree.iterparse(source, events=("start", "end"), remove_blank_text=True, huge_tree=True)
    depth = 0
    try:
        for event, el in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    if el.tag != _o("ODM"):
                        raise OdmFileError(f"not an ODM 1.3 document: the root element is {el.tag!r}")
                    if not el.get("FileOID"):
                        raise OdmFileError("the ODM element has no FileOID")
                    yield FileInfo(el.get("FileOID"), el.get("FileType", ""), el.get("Granularity"), None, None)
                elif el.tag == _o("ClinicalData"):
                    yield FileInfo(
                        "", "", None, el.get("StudyOID"), el.get("MetaDataVersionOID")
                    )  # the study it belongs to
                continue
            depth -= 1
            if el.tag == _o("AdminData"):
                yield admin_of(el)
                el.clear()
            elif el.tag == _o("SubjectData"):
                yield subject_of(el, episode_groups, log_forms)
                el.clear()
                while el.getprevious() is not None:
                    del el.getparent()[0]
            elif el.tag == _o("Study"):
                el.clear()
    except etree.XMLSyntaxError as error:
        raise OdmFileError(f"not a well-formed XML file: {error}") from None
