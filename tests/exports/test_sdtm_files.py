"""The SDTM files (issue 15): SAS transport v5 (read back with pyreadstat), Dataset-JSON
1.1 (validated against the standard's JSON schema, tests/data/sdtm/README.md) and
define.xml (our own structural checks: no Define-XML 2.1 schema is available offline),
first from the pure mappings on awkward data, then from the app's routes."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import date, datetime, timezone
from pathlib import Path

import jsonschema
import pyreadstat
import pytest
from lxml import etree

from cellstudy.exports import sdtm, sdtm_dm, sdtm_ds, sdtm_ex, sdtm_files
from cellstudy.exports.sdtm_model import MAX_BYTES
from tests.exports.test_sdtm import ae
from tests.exports.test_sdtm_domains import ALL, DRUGS, LEVELS, STUDYID, subject

SCHEMA = json.loads((Path(__file__).parent.parent / "data" / "sdtm" / "dataset.schema.json").read_text())
ODM = {"odm": sdtm_files.ODM_NS, "def": sdtm_files.DEF_NS, "xlink": sdtm_files.XLINK_NS}
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
META = sdtm_files.StudyMeta(
    study_oid="STUDY.CARNK",
    study_name=STUDYID,
    metadata_version_oid="MDV.CARNK.1",
    originator="CellStudy",
    system="CellStudy",
    system_version="test",
    db_modified=NOW,
    created=NOW,
)
AWKWARD = [
    "发热 (输注后)",
    "fever\nafter\r\ninfusion\twith\x07bell",
    "x" * 500,
    "é" * 150,
    "&<>\"'",
]


def awkward_datasets():
    aes = [ae(usubjid=f"{STUDYID}-HZ-00{n % 2}", ae_number=n, verbatim=text) for n, text in enumerate(AWKWARD)] + [
        ae(
            usubjid=f"{STUDYID}-HZ-002",
            ae_number=9,
            term="Nervous system disorders - Other, specify",
            verbatim="ICANS\nwith 中文 " + "y" * 300,
        )
    ]
    aes.sort(key=lambda a: a["usubjid"])
    ex = list(sdtm_ex.ex_domain(ALL, studyid=STUDYID, drugs=DRUGS))
    subjects = [
        subject(),
        subject(usubjid=f"{STUDYID}-HZ-002", subjid="HZ-002", status="withdrawn", status_reason=AWKWARD[1]),
        subject(usubjid=f"{STUDYID}-HZ-003", subjid="HZ-003", status="screen_failed", dose_level=None, rfstdtc=None),
    ]
    return [
        (
            sdtm_dm.DM,
            list(
                sdtm_dm.dm_domain(subjects, studyid=STUDYID, levels=LEVELS, ex_by_subject={subjects[0]["usubjid"]: ex})
            ),
        ),
        (sdtm.AE, list(sdtm.ae_domain(aes, studyid=STUDYID))),
        (sdtm_ex.EX, ex),
        (sdtm_ds.DS, list(sdtm_ds.ds_domain(subjects, studyid=STUDYID))),
    ]


def check_values(domain, records):
    """IG rules on every value: text without control characters, <= 200 bytes; --DTC in
    ISO 8601; --DY never 0; --SEQ unique per USUBJID."""
    for r in records:
        assert tuple(r) == domain.names
        for v in domain.variables:
            value = r[v.name]
            if v.numeric:
                assert value is None or isinstance(value, int | float)
            else:
                assert isinstance(value, str) and len(value.encode("utf-8")) <= MAX_BYTES
                assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in value), (v.name, value)
            if v.name.endswith("DTC") and value:
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2})?", value), (v.name, value)
            if v.name.endswith("DY"):
                assert value != 0
    seq = next((n for n in domain.names if n.endswith("SEQ")), None)
    if seq:
        keys = [(r["USUBJID"], r[seq]) for r in records]
        assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("index", range(4))
def test_awkward_data_follows_the_ig(index):
    domain, records = awkward_datasets()[index]
    assert records
    check_values(domain, records)


@pytest.mark.parametrize("index", range(4))
def test_xpt_reads_back_with_pyreadstat(tmp_path, index):
    domain, records = awkward_datasets()[index]
    path = tmp_path / f"{domain.name.lower()}.xpt"
    sdtm_files.write_xpt(domain, records, path)
    frame, meta = pyreadstat.read_xport(str(path), encoding="utf-8")
    assert meta.table_name == domain.name
    assert meta.column_names == list(domain.names) and all(len(n) <= 8 for n in meta.column_names)
    assert meta.column_labels == [v.label for v in domain.variables] and all(len(x) <= 40 for x in meta.column_labels)
    for v in domain.variables:
        assert meta.readstat_variable_types[v.name] == ("double" if v.numeric else "string"), v.name
        if not v.numeric:
            assert meta.variable_storage_width[v.name] <= MAX_BYTES
    assert len(frame) == len(records)
    for row, record in zip(frame.to_dict("records"), records, strict=True):
        for v in domain.variables:
            got, want = row[v.name], record[v.name]
            if v.numeric:
                assert (want is None and math.isnan(got)) or got == want, v.name
            else:
                assert got == want, v.name


def test_an_empty_dataset_is_a_valid_xpt(tmp_path):
    path = tmp_path / "ae.xpt"
    sdtm_files.write_xpt(sdtm.AE, [], path)
    frame, meta = pyreadstat.read_xport(str(path))
    assert len(frame) == 0 and meta.column_names == list(sdtm.AE.names)


@pytest.mark.parametrize("index", range(4))
def test_dataset_json_validates_against_the_standards_schema(index):
    domain, records = awkward_datasets()[index]
    document = json.loads(sdtm_files.dataset_json_bytes(domain, records, META))
    jsonschema.Draft201909Validator(SCHEMA).validate(document)
    assert document["datasetJSONVersion"] == "1.1.0" and document["records"] == len(records) == len(document["rows"])
    assert [c["name"] for c in document["columns"]] == list(domain.names)
    assert document["itemGroupOID"] == f"IG.{domain.name}"
    keys = sorted((c["keySequence"], c["name"]) for c in document["columns"] if "keySequence" in c)
    assert [name for _, name in keys] == list(domain.keys)
    types = {"string": str, "integer": int, "double": (int, float)}
    for row, record in zip(document["rows"], records, strict=True):
        assert row == [record[n] for n in domain.names]
        for column, value in zip(document["columns"], row, strict=True):
            assert value is None or isinstance(value, types[column["dataType"]]), column["name"]


def test_the_schema_refuses_a_broken_file():
    document = json.loads(sdtm_files.dataset_json_bytes(sdtm.AE, [], META))
    del document["itemGroupOID"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(SCHEMA).validate(document)


def check_define(xml: bytes, datasets) -> etree._Element:
    """Structural checks of a Define-XML 2.1 document (no schema offline)."""
    root = etree.fromstring(xml)
    assert root.tag == f"{{{sdtm_files.ODM_NS}}}ODM" and root.get("ODMVersion") == "1.3.2"
    assert root.get(f"{{{sdtm_files.DEF_NS}}}Context") == "Submission" and root.get("FileType") == "Snapshot"
    [mdv] = root.findall("odm:Study/odm:MetaDataVersion", ODM)
    assert mdv.get(f"{{{sdtm_files.DEF_NS}}}DefineVersion") == "2.1.0"
    assert mdv.find("def:Standards/def:Standard", ODM).get("Version") == "3.4"
    children = [etree.QName(c).localname for c in mdv]
    # the schema's order of MetaDataVersion's children
    order = ["Standards", "ItemGroupDef", "ItemDef", "CodeList"]
    assert [x for x in order if x in children] == order
    assert [children.index(x) for x in order] == sorted(children.index(x) for x in order)
    items = {i.get("OID"): i for i in mdv.findall("odm:ItemDef", ODM)}
    codelists = {c.get("OID"): c for c in mdv.findall("odm:CodeList", ODM)}
    groups = mdv.findall("odm:ItemGroupDef", ODM)
    assert [g.get("Name") for g in groups] == [d.name for d, _ in datasets]
    for group, (domain, records) in zip(groups, datasets, strict=True):
        refs = group.findall("odm:ItemRef", ODM)
        assert [items[r.get("ItemOID")].get("Name") for r in refs] == list(domain.names)
        assert [int(r.get("OrderNumber")) for r in refs] == list(range(1, len(refs) + 1))
        keyed = sorted(
            (int(r.get("KeySequence")), items[r.get("ItemOID")].get("Name")) for r in refs if r.get("KeySequence")
        )
        assert [n for _, n in keyed] == list(domain.keys)
        assert group.find("def:leaf", ODM).get(f"{{{sdtm_files.XLINK_NS}}}href") == f"{domain.name.lower()}.xpt"
        assert group.find("def:Class", ODM).get("Name") == domain.dataset_class
        for ref, v in zip(refs, domain.variables, strict=True):
            item = items[ref.get("ItemOID")]
            assert item.get("DataType") == v.dtype and len(item.get("SASFieldName")) <= 8
            assert ref.get("Mandatory") == ("Yes" if v.core == "Req" else "No")
            if v.dtype in ("text", "integer", "float"):
                longest = max((len(str(r[v.name]).encode()) for r in records if not v.numeric), default=1)
                assert int(item.get("Length")) == (8 if v.numeric else max(longest, 1))
            ref_cl = item.find("odm:CodeListRef", ODM)
            assert (ref_cl is not None) == (v.codelist is not None)
            if ref_cl is not None:
                # a codelist's data type is its variable's (Define-XML 2.1 rule)
                codelist = codelists[ref_cl.get("CodeListOID")]
                assert codelist.get("DataType") == ("integer" if v.dtype == "integer" else "text"), v.name
            origin = item.find("def:Origin", ODM)
            assert origin.get("Type") == v.origin
    for codelist in codelists.values():
        assert codelist.findall("odm:EnumeratedItem", ODM) or codelist.find("odm:ExternalCodeList", ODM) is not None
    return root


def test_define_xml_describes_every_dataset_and_variable():
    datasets = awkward_datasets()
    root = check_define(sdtm_files.define_xml(datasets, META, terms={"ARMCD": ("DL1", "DL2")}), datasets)
    # a collected variable names its CRF field by the form registry's labels
    origin = root.find(".//odm:ItemDef[@OID='IT.AE.AESTDTC']/def:Origin/odm:Description/odm:TranslatedText", ODM)
    assert origin is not None and origin.text.endswith("Onset date")
    terms = root.findall(".//odm:CodeList[@OID='CL.ARMCD']/odm:EnumeratedItem", ODM)
    assert [t.get("CodedValue") for t in terms] == ["DL1", "DL2"]


# --- the routes -------------------------------------------------------------------------------------

from tests.adverse_events.test_listings_app import safety_data  # noqa: E402, F401  (a fixture)


def exports(app):
    from sqlalchemy import select

    from cellstudy.extensions import db
    from cellstudy.records.models import AuditRecord

    with app.app_context():
        return db.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "export").order_by(AuditRecord.id)
        ).all()


def test_every_domain_in_every_format_and_the_define(app, login, safety_data, tmp_path):
    session = login("dm")
    datasets = []
    for name, domain in (("dm", sdtm_dm.DM), ("ae", sdtm.AE), ("ex", sdtm_ex.EX), ("ds", sdtm_ds.DS)):
        response = session.get(f"/safety/sdtm/{name}.csv")
        assert response.status_code == 200 and response.mimetype == "text/csv", name
        rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).removeprefix("\ufeff"), newline="")))
        assert rows[0] == list(domain.names)
        response = session.get(f"/safety/sdtm/{name}.json")
        assert response.status_code == 200 and response.mimetype == "application/json"
        document = response.get_json()
        jsonschema.Draft201909Validator(SCHEMA).validate(document)
        assert document["records"] == len(rows) - 1
        records = [dict(zip(domain.names, row, strict=True)) for row in document["rows"]]
        check_values(domain, records)
        datasets.append((domain, records))
        response = session.get(f"/safety/sdtm/{name}.xpt")
        assert response.status_code == 200
        assert re.search(
            rf'filename="CAR-NK-CLL1-CD33-AML_sdtm_{name}_\d{{8}}T\d{{4}}Z\.xpt"',
            response.headers["Content-Disposition"],
        )
        path = tmp_path / f"{name}.xpt"
        path.write_bytes(response.data)
        frame, meta = pyreadstat.read_xport(str(path), encoding="utf-8")
        assert meta.column_names == list(domain.names) and len(frame) == len(records)
    # every treated subject of the demo has EX records and a DM record; study days agree
    assert all(records for _, records in datasets)  # the demo has subjects, AEs, exposures, consent
    assert {r["EXCAT"] for r in datasets[2][1]} == {"NK CELL INFUSION", "LYMPHODEPLETION"}
    dm_by = {r["USUBJID"]: r for r in datasets[0][1]}
    assert dm_by and all(r["SITEID"] and r["USUBJID"].startswith("CAR-NK-CLL1-CD33-AML-") for r in dm_by.values())
    for r in datasets[2][1]:
        ref = date.fromisoformat(dm_by[r["USUBJID"]]["RFSTDTC"])
        start = date.fromisoformat(r["EXSTDTC"][:10])
        assert r["EXSTDY"] == ((start - ref).days + (1 if start >= ref else 0))
    for r in datasets[2][1]:
        assert dm_by[r["USUBJID"]]["RFXSTDTC"] <= r["EXSTDTC"][:10]
    response = session.get("/safety/sdtm/define.xml")
    assert response.status_code == 200 and response.mimetype == "application/xml"
    check_define(response.data, datasets)
    audited = [(r.form, r.field) for r in exports(app)]
    assert audited == [
        (f"safety_sdtm_{name}", fmt) for name in ("dm", "ae", "ex", "ds") for fmt in ("csv", "json", "xpt")
    ] + [("safety_sdtm_define", "xml")]
    assert json.loads(exports(app)[0].new_value)["sites"] == "all"


def test_an_investigator_gets_only_the_sites_subjects(app, login, safety_data):
    session = login("inv-nb")
    for name in ("dm", "ex", "ds", "ae"):
        document = session.get(f"/safety/sdtm/{name}.json").get_json()
        usubjid = [c["name"] for c in document["columns"]].index("USUBJID")
        assert all("-NB-" in row[usubjid] for row in document["rows"]), name
    xml = session.get("/safety/sdtm/define.xml").data
    assert b"-HZ-" not in xml


def test_coordinators_may_not_download(app, login, safety_data):
    for url in ("/safety/sdtm/dm.xpt", "/safety/sdtm/ex.json", "/safety/sdtm/ds.csv", "/safety/sdtm/define.xml"):
        assert login("coord-hz").get(url).status_code == 403, url
    assert exports(app) == []


def test_the_ae_page_links_the_sdtm_files(app, login, safety_data):
    page = login("dm").get("/safety/ae").get_data(as_text=True)
    for url in ("/safety/sdtm/dm.xpt", "/safety/sdtm/ae.json", "/safety/sdtm/ex.csv", "/safety/sdtm/define.xml"):
        assert f'href="{url}"' in page, url


def test_a_term_outside_ctcae_is_named_not_a_500(app, login, safety_data):
    """An AE whose term is not in CTCAE v5.0 (written past the form, straight into the table)
    stops the AE files with a message naming it, and nothing is exported or audited."""
    from sqlalchemy import select, update

    from cellstudy.adverse_events.models import AdverseEvent
    from cellstudy.extensions import db

    with app.app_context():
        ae_id = db.session.scalars(select(AdverseEvent.id).where(AdverseEvent.status == "complete")).first()
        db.session.execute(update(AdverseEvent).where(AdverseEvent.id == ae_id).values(term="Not a CTCAE term"))
        db.session.commit()
    session = login("dm")
    before = len(exports(app))
    for fmt in ("xpt", "json"):
        response = session.get(f"/safety/sdtm/ae.{fmt}")
        assert response.status_code == 302, fmt
        page = session.get(response.headers["Location"]).get_data(as_text=True)
        assert "Nothing was exported: the SDTM AE domain cannot be written" in page and "Not a CTCAE term" in page
    assert len(exports(app)) == before
    assert session.get("/safety/sdtm/dm.xpt").status_code == 200  # the other domains still go out
