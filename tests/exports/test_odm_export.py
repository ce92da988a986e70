"""The CDISC ODM 1.3.2 export (issue 15): every mode and granularity valid against our extension
schema and, with our namespace stripped, against the unmodified ODM1-3-2.xsd; read back by
CDISC's odmlib; awkward data; the audit trail in Transactional files; site scoping,
permissions, the job, the download and the command. The real app on the real test database."""

from __future__ import annotations

import glob
import io
import os
import shutil

import odmlib.loader as odm_loader_facade
import odmlib.odm_loader as odm_loaders
import pytest
from lxml import etree
from sqlalchemy import select

from cellstudy import jobs
from cellstudy.adverse_events.models import AdverseEvent
from cellstudy.auth.models import User
from cellstudy.auth.policy import ALL_SITES, user_sites
from cellstudy.enrollment import service as enrollment
from cellstudy.enrollment.models import Subject
from cellstudy.exports.odm import metadata as md
from cellstudy.exports.odm.writer import CS_NS, ODM_NS, VALUE_ACTIONS, OdmError, clean, write_odm
from cellstudy.extensions import db
from cellstudy.jobs.models import Job
from cellstudy.records import service as records
from cellstudy.records.models import AuditRecord, Signature
from tests.helpers import sid_of

HERE = os.path.dirname(__file__)
OFFICIAL = os.path.join(HERE, "..", "data", "odm")
OURS = os.path.join(HERE, "..", "..", "cellstudy", "data", "odm")
NS = {"odm": ODM_NS, "cs": CS_NS}
MODES = ("snapshot", "transactional")
GRANULARITIES = (
    ("Metadata", {}),
    ("AllClinicalData", {}),
    ("SingleSite", {"site": "HZ"}),
    ("SingleSubject", {"subject": "HZ-001"}),
)
# CJK, the XML specials, C0 controls XML 1.0 forbids, and a line break and tab it keeps (no NUL:
# PostgreSQL text cannot hold one, so no clinical value can carry it)
AWKWARD = '发热 中性粒细胞减少 & <b>"quoted"</b> \x01\x07\x0b\x0c\x1f\ufffe tab\there\nline'


def _o(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    """(our extension schema, the official ODM 1.3.2 schema), compiled offline from copies."""
    folder = tmp_path_factory.mktemp("odm-schemas")
    for path in glob.glob(os.path.join(OFFICIAL, "*.xsd")) + glob.glob(os.path.join(OURS, "*.xsd")):
        shutil.copy(path, folder)
    return (
        etree.XMLSchema(etree.parse(str(folder / "cellstudy-ODM1-3-2.xsd"))),
        etree.XMLSchema(etree.parse(str(folder / "ODM1-3-2.xsd"))),
    )


def export(app, sites=ALL_SITES, **kwargs) -> tuple[bytes, dict]:
    with app.app_context():
        out = io.BytesIO()
        counts = write_odm(out, sites=sites, **kwargs)
        return out.getvalue(), counts


def stripped(document: bytes) -> etree._Element:
    """The document without our namespace: its elements and attributes removed."""
    root = etree.fromstring(document)
    for el in root.xpath("//cs:*", namespaces=NS):
        el.getparent().remove(el)
    for el in root.iter():
        for name in [n for n in el.attrib if n.startswith(f"{{{CS_NS}}}")]:
            del el.attrib[name]
    etree.cleanup_namespaces(root)
    return root


def check(document: bytes, schemas, tmp_path) -> etree._Element:
    """Valid against both schemas and read by odmlib; returns the parsed document."""
    ours, official = schemas
    root = etree.fromstring(document)
    assert ours.validate(root), ours.error_log
    bare = stripped(document)
    assert not bare.xpath("//cs:*", namespaces=NS)
    assert official.validate(bare), official.error_log
    path = tmp_path / "export.xml"
    path.write_bytes(document)
    loader = odm_loader_facade.ODMLoader(odm_loaders.XMLODMLoader(model_package="odm_1_3_2"))
    loader.open_odm_document(str(path))
    odm = loader.root()
    assert odm.FileType == root.get("FileType")
    assert loader.MetaDataVersion().OID == root.find("odm:Study/odm:MetaDataVersion", NS).get("OID")
    return root


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("granularity, where", GRANULARITIES, ids=[g for g, _ in GRANULARITIES])
def test_every_mode_and_granularity_is_valid_and_loads_in_odmlib(app, schemas, tmp_path, mode, granularity, where):
    document, counts = export(app, mode=mode, granularity=granularity, **where)
    root = check(document, schemas, tmp_path)
    assert root.get("Granularity") == granularity
    assert root.get("FileType") == mode.capitalize()
    keys = root.xpath("//odm:SubjectData/@SubjectKey", namespaces=NS)
    if granularity == "Metadata":
        assert not root.xpath("//odm:ClinicalData | //odm:AdminData", namespaces=NS)
    elif granularity == "SingleSubject":
        assert keys == ["HZ-001"]
    elif granularity == "SingleSite":
        assert keys and set(root.xpath("//odm:SiteRef/@LocationOID", namespaces=NS)) == {"L.HZ"}
    else:
        with app.app_context():
            assert len(keys) == db.session.query(Subject).count() == counts["subjects"]


def test_metadata_from_the_registry_with_stable_oids(app, schemas, tmp_path):
    root = check(export(app, granularity="Metadata")[0], schemas, tmp_path)
    mdv = root.find("odm:Study/odm:MetaDataVersion", NS)
    with app.app_context():
        from cellstudy.settings import current_study

        assert mdv.get("OID") == current_study().version
    oids = set(mdv.xpath(".//@OID"))
    assert {"SE.SCREENING", "SE.VISIT.D7", "F.SCREENING", "IG.SCREENING.LABORATORY", "I.SCREENING.SEX"} <= oids
    for form in md.forms():
        assert form.oid in oids
    sex = mdv.find("odm:ItemDef[@OID='I.SCREENING.SEX']", NS)
    assert sex.get("DataType") == "text"
    assert sex.find("odm:CodeListRef", NS).get("CodeListOID") == "CL.SCREENING.SEX"
    weight = mdv.find("odm:ItemDef[@OID='I.LYMPHODEPLETION.WEIGHT_KG']", NS)
    assert (weight.get("DataType"), weight.get("SignificantDigits")) == ("float", "6")
    assert weight.find("odm:MeasurementUnitRef", NS).get("MeasurementUnitOID") == "MU.kg"
    checks = {
        (r.get("Comparator"), r.findtext("odm:CheckValue", namespaces=NS)) for r in weight.findall("odm:RangeCheck", NS)
    }
    assert checks == {("GT", "0"), ("LE", "400")}
    assert mdv.find("odm:ItemDef[@OID='I.ADVERSE_EVENT.ONSET_DATE']", NS).get("DataType") == "date"
    assert mdv.find("odm:ItemDef[@OID='I.SCREENING.ECOG']", NS).get("DataType") == "integer"
    assert mdv.find("odm:ItemDef[@OID='I.SCREENING.APL']", NS).get("DataType") == "boolean"
    assert mdv.find("odm:ItemGroupDef[@OID='IG.EXPOSURE']", NS).get("Repeating") == "Yes"
    assert mdv.find("odm:ItemGroupDef[@OID='IG.ADVERSE_EVENT.GRADE_EPISODE']", NS).get("Repeating") == "Yes"
    nausea = mdv.find("odm:CodeList[@OID='CL.CTCAE_V5']/odm:CodeListItem[@CodedValue='Nausea']", NS)
    assert nausea.find("odm:Alias", NS).get("Context") == "MedDRA"
    assert nausea.find("odm:Alias", NS).get("Name").isdigit()
    assert mdv.find("odm:ItemDef[@OID='I.ADVERSE_EVENT.TERM']/odm:CodeListRef", NS).get("CodeListOID") == "CL.CTCAE_V5"


def test_admin_data_and_signatures(app, schemas, tmp_path):
    root = check(export(app)[0], schemas, tmp_path)
    admin = root.find("odm:AdminData", NS)
    dm = admin.find("odm:User[@OID='U.dm']", NS)
    assert dm.findtext("odm:LoginName", namespaces=NS) == "dm"
    assert dm.find("cs:Role", NS).get("Name") == "data_manager"
    assert {loc.get("OID") for loc in admin.findall("odm:Location", NS)} == {"L.STUDY", "L.HZ", "L.NB"}
    defs = {d.get("OID"): d.findtext("odm:Meaning", namespaces=NS) for d in admin.findall("odm:SignatureDef", NS)}
    assert "I confirm this subject meets all eligibility criteria" in defs.values()
    users = {u.get("OID") for u in admin.findall("odm:User", NS)}
    signatures = root.xpath("//odm:ClinicalData//odm:Signature", namespaces=NS)
    assert signatures
    for sig in signatures:
        assert sig.find("odm:UserRef", NS).get("UserOID") in users
        assert sig.find("odm:SignatureRef", NS).get("SignatureOID") in defs
        assert sig.findtext("odm:DateTimeStamp", namespaces=NS)


def test_signature_ids_snapshot_from_what_is_signed_transactional_row_ids(app, schemas, tmp_path):
    """Snapshot: ``SIG.<SubjectKey>.<StudyEventOID>.<FormOID>[.<repeat key>]``, the same in any
    instance that holds the same study (a round trip keeps them); unique in the file (xs:ID).
    Transactional: ``SIG.<row id>``, like the IDs and SourceIDs of the rest of an audit extract."""
    snapshot = check(export(app)[0], schemas, tmp_path)
    ids = snapshot.xpath("//odm:Signature/@ID", namespaces=NS)
    assert ids and len(ids) == len(set(ids))
    hz = snapshot.find(".//odm:SubjectData[@SubjectKey='HZ-001']", NS)
    assert hz.find(".//odm:FormData[@FormOID='F.SCREENING']/odm:Signature", NS).get("ID") == (
        "SIG.HZ-001.SE.SCREENING.F.SCREENING.1"
    )
    for sig in snapshot.iterfind(".//odm:Signature", NS):
        subject = next(a for a in sig.iterancestors(_o("SubjectData")))
        assert sig.get("ID").startswith(f"SIG.{subject.get('SubjectKey')}.")
    transactional = check(export(app, mode="transactional")[0], schemas, tmp_path)
    with app.app_context():
        rows = {f"SIG.{i}" for i in db.session.execute(select(Signature.id)).scalars()}
    found = transactional.xpath("//odm:Signature/@ID", namespaces=NS)
    assert found and set(found) <= rows


def test_locations_carry_their_time_zone_and_infusions_their_plan(app, schemas, tmp_path):
    root = check(export(app)[0], schemas, tmp_path)
    zones = {
        loc.get("OID"): [z.get("Name") for z in loc.findall("cs:TimeZone", NS)]
        for loc in root.findall("odm:AdminData/odm:Location", NS)
    }
    assert zones == {"L.STUDY": [], "L.HZ": ["Asia/Shanghai"], "L.NB": ["Asia/Shanghai"]}
    with app.app_context():
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
        plans = [(str(i.number), i.planned_date.isoformat(), i.state) for i in subject.infusions]
    hz = root.find(".//odm:SubjectData[@SubjectKey='HZ-001']", NS)
    statuses = hz.findall(".//odm:FormData[@FormOID='F.INFUSION']/cs:Status", NS)
    assert [(s.get("Number"), s.get("PlannedDate"), s.get("State")) for s in statuses] == plans
    assert [p[2] for p in plans] == ["given", "scheduled"]
    # only infusions carry a plan
    assert not root.xpath("//odm:FormData[@FormOID!='F.INFUSION']/cs:Status[@PlannedDate]", namespaces=NS)


def _awkward_data(app) -> tuple[str, str]:
    """An AE and an exposure with awkward text, saved and removed through the real services."""
    long_text = ("Très long — 很长的文本 " * 120)[:2000]
    with app.app_context():
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
        user = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        ae = db.session.execute(select(AdverseEvent).where(AdverseEvent.subject_id == subject.id)).scalars().first()
        records.save(
            ae,
            user=user,
            changes={"verbatim": AWKWARD, "comments": long_text, "grade_reason": None},
            expected_version=ae.version,
            reason=f"correction {AWKWARD}",
        )
        exposure = subject.active_exposures[0]
        enrollment.remove_exposure(
            exposure, user=user, expected_version=exposure.version, reason="entered twice & <wrong>"
        )
    return long_text, f"correction {AWKWARD}"


def test_awkward_data_survives_both_modes(app, schemas, tmp_path):
    long_text, reason = _awkward_data(app)
    snapshot = check(export(app, granularity="SingleSubject", subject="HZ-001")[0], schemas, tmp_path)
    values = {i.get("ItemOID"): i.get("Value") for i in snapshot.xpath("//odm:ItemData", namespaces=NS)}
    assert clean(AWKWARD) == '发热 中性粒细胞减少 & <b>"quoted"</b>  tab\there\nline'
    assert clean(AWKWARD) in values.values()
    assert long_text in values.values()
    assert None not in values.values() and "" not in values.values()  # missing values are left out
    # the removed exposure stays, with our status extension and its reason
    removed = snapshot.xpath("//cs:Status[@Value='deleted']", namespaces=NS)
    assert [s.get("Reason") for s in removed] == ["entered twice & <wrong>"]
    transactional = check(
        export(app, mode="transactional", granularity="SingleSubject", subject="HZ-001")[0], schemas, tmp_path
    )
    reasons = transactional.xpath("//odm:AuditRecord/odm:ReasonForChange/text()", namespaces=NS)
    assert clean(reason) in reasons
    gone = transactional.xpath("//odm:ItemGroupData[@TransactionType='Remove']", namespaces=NS)
    assert len(gone) == 1 and gone[0].get("ItemGroupOID") == "IG.EXPOSURE"
    assert gone[0].find("odm:AuditRecord/odm:ReasonForChange", NS).text == "entered twice & <wrong>"


def test_transactional_has_one_audit_record_per_value_change(app, schemas, tmp_path):
    _awkward_data(app)
    root = check(export(app, mode="transactional")[0], schemas, tmp_path)
    items = root.xpath("//odm:ItemData", namespaces=NS)
    assert items and all(len(i.findall("odm:AuditRecord", NS)) == 1 for i in items)
    exported = [int(i.findtext("odm:AuditRecord/odm:SourceID", namespaces=NS)) for i in items]
    assert len(exported) == len(set(exported))
    with app.app_context():
        fields = {f.name: set(f.items) for f in md.forms()}
        fields[md.EPISODES] = {"grade", "start_date", "end_date"}
        expected = {
            r.id
            for r in db.session.execute(
                select(AuditRecord).where(AuditRecord.subject_id.is_not(None), AuditRecord.action.in_(VALUE_ACTIONS))
            ).scalars()
            if r.field in fields.get(r.form, ())
        }
        by_id = {r.id: r for r in db.session.execute(select(AuditRecord).where(AuditRecord.id.in_(exported))).scalars()}
    assert set(exported) == expected
    for item in items:  # the value and the audit record are the trail's
        row = by_id[int(item.findtext("odm:AuditRecord/odm:SourceID", namespaces=NS))]
        assert item.find("odm:AuditRecord/odm:UserRef", NS).get("UserOID") == f"U.{row.username}"
        if row.new_value is None:
            assert item.get("IsNull") == "Yes"
        elif item.get("ItemOID").startswith("I.") and row.new_value not in ("yes", "no"):
            assert item.get("Value") == clean(row.new_value)
    assert set(root.xpath("//odm:ItemData/@TransactionType", namespaces=NS)) <= {"Insert", "Update"}


def test_a_coordinator_never_sees_another_sites_subjects(app, schemas, tmp_path):
    with app.app_context():
        coordinator = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        scope = user_sites(coordinator)
    for mode in MODES:
        root = check(export(app, sites=scope, mode=mode)[0], schemas, tmp_path)
        keys = root.xpath("//odm:SubjectData/@SubjectKey", namespaces=NS)
        assert keys and all(k.startswith("HZ-") for k in keys)
        assert set(root.xpath("//odm:SiteRef/@LocationOID", namespaces=NS)) == {"L.HZ"}
        assert "L.NB" not in root.xpath("//odm:Location/@OID", namespaces=NS)
        assert "U.coord-nb" not in root.xpath("//odm:User/@OID", namespaces=NS)
    with app.app_context(), pytest.raises(OdmError):
        write_odm(io.BytesIO(), sites=scope, granularity="SingleSite", site="NB")
    with app.app_context(), pytest.raises(OdmError):
        write_odm(io.BytesIO(), sites=scope, granularity="SingleSubject", subject="NB-001")


def test_subject_download_is_scoped_audited_and_refused_without_export_rights(app, login, schemas, tmp_path):
    own, other = sid_of(app, "HZ-001"), sid_of(app, "NB-001")
    investigator = login("inv-hz")
    response = investigator.get(f"/subjects/{own}/odm.xml?mode=transactional")
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "application/xml"
    root = check(response.data, schemas, tmp_path)
    assert root.xpath("//odm:SubjectData/@SubjectKey", namespaces=NS) == ["HZ-001"]
    assert investigator.get(f"/subjects/{other}/odm.xml").status_code == 404
    assert investigator.get(f"/subjects/{own}/odm.xml?mode=nonsense").status_code == 400
    coordinator = login("coord-hz")
    assert coordinator.get(f"/subjects/{own}/odm.xml").status_code == 403
    assert coordinator.post("/odm/study-export", data={"mode": "snapshot"}).status_code == 403
    with app.app_context():
        exports = db.session.execute(select(AuditRecord).where(AuditRecord.form == "odm")).scalars().all()
        assert [(r.username, r.field, r.subject_id) for r in exports] == [("inv-hz", "odm-transactional", own)]


def test_study_export_job_with_progress(app, login, schemas, tmp_path):
    monitor = login("monitor-hz")
    response = monitor.post("/odm/study-export", data={"mode": "transactional"})
    assert response.status_code == 302 and "/jobs/" in response.location
    job_id = int(response.location.rstrip("/").split("/jobs/")[1].split("/")[0])
    with app.app_context():
        jobs.wait(job_id, timeout=120)
        db.session.expire_all()
        job = db.session.get(Job, job_id)
        assert job.status == "done", job.error
        assert job.progress_done == job.progress_total > 0
        audited = db.session.execute(select(AuditRecord).where(AuditRecord.form == "odm")).scalar_one()
        assert (audited.username, audited.field) == ("monitor-hz", "odm-transactional")
    download = monitor.get(f"/jobs/{job_id}/download")
    assert download.status_code == 200
    root = check(download.data, schemas, tmp_path)
    assert root.get("FileType") == "Transactional"
    assert all(k.startswith("HZ-") for k in root.xpath("//odm:SubjectData/@SubjectKey", namespaces=NS))


def test_the_command(app, schemas, tmp_path):
    runner = app.test_cli_runner()
    path = tmp_path / "study.xml"
    result = runner.invoke(args=["odm", "export", "-o", str(path), "--mode", "transactional"])
    assert result.exit_code == 0, result.output
    assert "written to" in result.output
    root = check(path.read_bytes(), schemas, tmp_path)
    assert root.get("FileType") == "Transactional" and root.get("Granularity") == "AllClinicalData"
    one = tmp_path / "one.xml"
    result = runner.invoke(args=["odm", "export", "-o", str(one), "--subject", "NB-001"])
    assert result.exit_code == 0, result.output
    assert check(one.read_bytes(), schemas, tmp_path).xpath("//odm:SubjectData/@SubjectKey", namespaces=NS) == [
        "NB-001"
    ]
    result = runner.invoke(args=["odm", "export", "-o", str(one), "--granularity", "SingleSite", "--site", "XX"])
    assert result.exit_code == 2 and "no site" in result.output
    with app.app_context():
        assert db.session.query(AuditRecord).filter(AuditRecord.form == "odm").count() == 3
