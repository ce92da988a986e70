"""The SDTM datasets as files (PROTOCOL 8, issue 15): SAS transport (XPT v5, through
pyreadstat), CDISC Dataset-JSON 1.1 and a Define-XML 2.1 document describing them, all
from the one declaration of each domain (`sdtm_model.Domain`). The CSV is
`tabular.csv_stream` over ``Domain.columns``.

Pure: no Flask, no database; the caller passes the records (dicts in the domain's
order, as the mappings return them). XPT and Dataset-JSON hold every record in memory
(pyreadstat writes from a data frame; Dataset-JSON states the record count first).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lxml import etree

from ..registry import get as registry_form
from .sdtm_model import CODELISTS, Domain, Variable

DATASET_JSON_VERSION = "1.1.0"
DEFINE_VERSION = "2.1.0"
IG_VERSION = "3.4"
ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_NS = "http://www.w3.org/XML/1998/namespace"
#: the Dataset-JSON data type of each Define-XML data type (character dates are strings)
JSON_TYPES = {"text": "string", "date": "string", "partialDatetime": "string", "integer": "integer", "float": "double"}
#: SAS numeric variables are 8-byte floating point
NUM_LENGTH = 8


@dataclass(frozen=True)
class StudyMeta:
    """Who and what the files describe: study OID and name, metadata version OID, the
    originator and source system, and the time the data were last changed."""

    study_oid: str
    study_name: str
    metadata_version_oid: str
    originator: str
    system: str
    system_version: str
    db_modified: datetime
    created: datetime


def item_oid(domain: Domain, v: Variable) -> str:
    """The OID of a variable: IT.<domain>.<name> (shared by Dataset-JSON and define.xml)."""
    return f"IT.{domain.name}.{v.name}"


def item_group_oid(domain: Domain) -> str:
    return f"IG.{domain.name}"


def lengths(domain: Domain, records: Sequence[Mapping]) -> dict[str, int]:
    """The length of each variable: 8 for numbers, the longest value's UTF-8 bytes (at
    least 1) for text: what the XPT stores and the define.xml declares."""
    out = {}
    for v in domain.variables:
        if v.numeric:
            out[v.name] = NUM_LENGTH
        else:
            out[v.name] = max((len(r[v.name].encode("utf-8")) for r in records), default=0) or 1
    return out


# --- SAS transport ---------------------------------------------------------------------------


def write_xpt(domain: Domain, records: Sequence[Mapping], path: str | Path) -> int:
    """Write the records as a SAS V5 transport file (dataset name = the domain, the
    variables' labels, numeric variables as numbers, missing numbers as "."): the rows
    written."""
    import pandas as pd  # only the file downloads need pandas and pyreadstat
    import pyreadstat

    data = {}
    for v in domain.variables:
        values = [r[v.name] for r in records]
        if v.numeric:
            data[v.name] = pd.Series([math.nan if x is None else float(x) for x in values], dtype="float64")
        else:
            data[v.name] = pd.Series(values, dtype="object")
    frame = pd.DataFrame(data, columns=list(domain.names))
    pyreadstat.write_xport(
        frame,
        str(path),
        file_label=domain.label,
        column_labels=[v.label for v in domain.variables],
        table_name=domain.name,
        file_format_version=5,
    )
    return len(records)


# --- Dataset-JSON ----------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def dataset_json(domain: Domain, records: Sequence[Mapping], meta: StudyMeta) -> dict:
    """The dataset as a CDISC Dataset-JSON 1.1 object (rows as arrays in column order,
    null for a missing number; the item OIDs are the define.xml's)."""
    size = lengths(domain, records)
    columns = []
    for v in domain.variables:
        column = {
            "itemOID": item_oid(domain, v),
            "name": v.name,
            "label": v.label,
            "dataType": JSON_TYPES[v.dtype],
            "length": size[v.name],
        }
        if v.name in domain.keys:
            column["keySequence"] = domain.keys.index(v.name) + 1
        columns.append(column)
    return {
        "datasetJSONCreationDateTime": _stamp(meta.created),
        "datasetJSONVersion": DATASET_JSON_VERSION,
        "fileOID": f"{meta.study_oid}.{domain.name}.{meta.created.strftime('%Y%m%dT%H%M%S')}",
        "dbLastModifiedDateTime": _stamp(meta.db_modified),
        "originator": meta.originator,
        "sourceSystem": {"name": meta.system, "version": meta.system_version},
        "studyOID": meta.study_oid,
        "metaDataVersionOID": meta.metadata_version_oid,
        "metaDataRef": "define.xml",
        "itemGroupOID": item_group_oid(domain),
        "records": len(records),
        "name": domain.name,
        "label": domain.label,
        "columns": columns,
        "rows": [[r[name] for name in domain.names] for r in records],
    }


def dataset_json_bytes(domain: Domain, records: Sequence[Mapping], meta: StudyMeta) -> bytes:
    """`dataset_json` as UTF-8 JSON (non-ASCII text kept as is)."""
    return json.dumps(dataset_json(domain, records, meta), ensure_ascii=False).encode("utf-8")


# --- Define-XML 2.1 --------------------------------------------------------------------------


def _odm(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _def(tag: str) -> str:
    return f"{{{DEF_NS}}}{tag}"


def _text(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, _odm(tag))
    translated = etree.SubElement(element, _odm("TranslatedText"))
    translated.set(f"{{{XML_NS}}}lang", "en")
    translated.text = text
    return element


def _codelist_oid(key: str) -> str:
    return f"CL.{key}"


def _origin(v: Variable) -> tuple[str, str, str]:
    """(Origin Type, Source, description): a collected variable names its CRF field by
    the form registry's labels."""
    if v.origin == "Collected":
        described = ""
        if v.source:
            form = registry_form(v.source[0])
            if form is not None:
                described = f"{form.label}: {form.label_of(v.source[1])}"
        return "Collected", "Investigator", described
    if v.origin == "Protocol":
        return "Protocol", "Sponsor", ""
    if v.origin == "Assigned":
        return "Assigned", "Sponsor", ""
    return "Derived", "Sponsor", ""


def define_xml(
    datasets: Iterable[tuple[Domain, Sequence[Mapping]]],
    meta: StudyMeta,
    *,
    terms: Mapping[str, Sequence[str]] | None = None,
) -> bytes:
    """A Define-XML 2.1 document (ODM 1.3.2 with the def: extensions) describing the
    datasets: one ItemGroupDef per domain, one ItemDef per variable (length from the
    data, as the XPT stores it), a CodeList per codelist used, the files as def:leaf.
    ``terms``: the terms of the study's own codelists (the dose levels: ARMCD)."""
    nsmap = {None: ODM_NS, "def": DEF_NS, "xlink": XLINK_NS}
    root = etree.Element(_odm("ODM"), nsmap=nsmap)
    for name, value in (
        ("FileType", "Snapshot"),
        ("FileOID", f"{meta.study_oid}.DEFINE.{meta.created.strftime('%Y%m%dT%H%M%S')}"),
        ("ODMVersion", "1.3.2"),
        ("CreationDateTime", meta.created.replace(tzinfo=None).isoformat(timespec="seconds")),
        ("Originator", meta.originator),
        ("SourceSystem", meta.system),
        ("SourceSystemVersion", meta.system_version),
    ):
        root.set(name, value)
    root.set(_def("Context"), "Submission")
    study = etree.SubElement(root, _odm("Study"), OID=meta.study_oid)
    globals_ = etree.SubElement(study, _odm("GlobalVariables"))
    for tag, text in (
        ("StudyName", meta.study_name),
        ("StudyDescription", meta.study_name),
        ("ProtocolName", meta.study_name),
    ):
        etree.SubElement(globals_, _odm(tag)).text = text
    mdv = etree.SubElement(
        study, _odm("MetaDataVersion"), OID=meta.metadata_version_oid, Name=f"{meta.study_name} SDTM"
    )
    mdv.set(_def("DefineVersion"), DEFINE_VERSION)
    standards = etree.SubElement(mdv, _def("Standards"))
    standard = etree.SubElement(standards, _def("Standard"), OID="STD.SDTMIG")
    for name, value in (("Name", "SDTMIG"), ("Type", "IG"), ("Version", IG_VERSION), ("Status", "Final")):
        standard.set(name, value)

    datasets = list(datasets)
    items: list[tuple[Domain, Variable, int]] = []
    used: list[str] = []
    for domain, records in datasets:
        size = lengths(domain, records)
        group = etree.SubElement(mdv, _odm("ItemGroupDef"), OID=item_group_oid(domain))
        for name, value in (
            ("Domain", domain.name),
            ("Name", domain.name),
            ("Repeating", "Yes" if domain.repeating else "No"),
            ("IsReferenceData", "No"),
            ("SASDatasetName", domain.name),
            ("Purpose", "Tabulation"),
        ):
            group.set(name, value)
        group.set(_def("Structure"), domain.structure)
        group.set(_def("StandardOID"), "STD.SDTMIG")
        group.set(_def("ArchiveLocationID"), f"LF.{domain.name}")
        _text(group, "Description", domain.label)
        for order, v in enumerate(domain.variables, start=1):
            ref = etree.SubElement(group, _odm("ItemRef"), ItemOID=item_oid(domain, v))
            ref.set("OrderNumber", str(order))
            ref.set("Mandatory", "Yes" if v.core == "Req" else "No")
            if v.name in domain.keys:
                ref.set("KeySequence", str(domain.keys.index(v.name) + 1))
            items.append((domain, v, size[v.name]))
            if v.codelist and v.codelist not in used:
                used.append(v.codelist)
        etree.SubElement(group, _def("Class"), Name=domain.dataset_class)
        leaf = etree.SubElement(group, _def("leaf"), ID=f"LF.{domain.name}")
        leaf.set(f"{{{XLINK_NS}}}href", f"{domain.name.lower()}.xpt")
        etree.SubElement(leaf, _def("title")).text = f"{domain.name.lower()}.xpt"

    for domain, v, length in items:
        item = etree.SubElement(mdv, _odm("ItemDef"), OID=item_oid(domain, v), Name=v.name)
        item.set("DataType", v.dtype)
        if v.dtype in ("text", "integer", "float"):
            item.set("Length", str(length))
        item.set("SASFieldName", v.name)
        _text(item, "Description", v.label)
        if v.codelist:
            etree.SubElement(item, _odm("CodeListRef"), CodeListOID=_codelist_oid(v.codelist))
        kind, source, described = _origin(v)
        origin = etree.SubElement(item, _def("Origin"), Type=kind, Source=source)
        if described or v.comment:
            _text(origin, "Description", " ".join(x for x in (described, v.comment) if x))

    for key in used:
        codelist = CODELISTS[key]
        element = etree.SubElement(mdv, _odm("CodeList"), OID=_codelist_oid(key), Name=codelist.name)
        element.set("DataType", codelist.dtype)
        for term in (terms or {}).get(key, codelist.terms):
            etree.SubElement(element, _odm("EnumeratedItem"), CodedValue=term)
        if codelist.dictionary:
            external = etree.SubElement(element, _odm("ExternalCodeList"), Dictionary=codelist.dictionary)
            if codelist.version:
                external.set("Version", codelist.version)
        if codelist.nci:
            etree.SubElement(element, _odm("Alias"), Context="nci:ExtCodeID", Name=codelist.nci)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
