"""The ODM 1.3.2 import (issue 15): `flask odm import FILE [--dry-run] [--create-users]`.

The real app on real databases: the demo study (the test template) is exported as a Snapshot,
imported with --create-users into an EMPTY instance (a fresh database with the migrations and
no demo), exported again and compared; a dry run writes nothing; a bad value, an unknown site
or an unknown user refuses the whole file with a message naming subject, form, item and value.

The round trip (the demo study, and a larger one generated through the services:
odm_generated.py) is equal apart from FileOID and CreationDateTime and the two differences by
design, which `drop_differences_by_design` asserts and removes (the created users' Active, the
import's own account); any other difference fails (docs/odm_import.md)."""

from __future__ import annotations

import copy
import difflib
import os
import shutil

import pytest
from flask_migrate import upgrade
from lxml import etree
from sqlalchemy import func, select

from cellstudy import create_app
from cellstudy.auth.models import Site, User
from cellstudy.auth.policy import ALL_SITES
from cellstudy.enrollment.models import EligibilityDecision, Subject
from cellstudy.exports.odm.import_cli import odm_import
from cellstudy.exports.odm.importer import IMPORT_ACCOUNT
from cellstudy.exports.odm.writer import CS_NS, ODM_NS, write_odm
from cellstudy.extensions import db
from cellstudy.infusions.models import Infusion
from cellstudy.records import audit
from cellstudy.records import service as records
from cellstudy.records.models import AuditRecord, Signature
from tests.exports import odm_generated
from tests.exports.test_odm_export import check, schemas  # noqa: F401  (schemas: a fixture)

MIGRATIONS = os.path.join(os.path.dirname(__file__), "..", "..", "migrations")
NS = {"odm": ODM_NS, "cs": CS_NS}


def _o(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _c(tag: str) -> str:
    return f"{{{CS_NS}}}{tag}"


@pytest.fixture(scope="module")
def empty_template(tmp_path_factory) -> str:
    """A migrated database with the same study definition and no data: built once."""
    path = str(tmp_path_factory.mktemp("odm-import") / "empty.db")
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": "sqlite:///" + path})
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        db.session.remove()
        db.engine.dispose()
    return path


@pytest.fixture
def empty_app(empty_template, tmp_path):
    path = str(tmp_path / "instance.db")
    shutil.copyfile(empty_template, path)
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": "sqlite:///" + path, "WTF_CSRF_ENABLED": False})
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def export(app, path, mode: str = "snapshot") -> bytes:
    with app.app_context():
        with open(path, "wb") as out:
            write_odm(out, sites=ALL_SITES, mode=mode)
        db.session.remove()
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def demo_file(app, tmp_path) -> str:
    """A Snapshot export of the demo study (the test template's database)."""
    path = str(tmp_path / "demo.xml")
    export(app, path)
    return path


def run(app, *args: str):
    return app.test_cli_runner().invoke(odm_import, list(args))


def counts(app) -> dict[str, int]:
    with app.app_context():
        out = {
            model.__name__: db.session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Subject, User, AuditRecord, Signature)
        }
        db.session.remove()
    return out


def file_oid(path: str) -> str:
    return etree.parse(path).getroot().get("FileOID")


def canonical(root: etree._Element) -> str:
    root = etree.fromstring(etree.tostring(root))
    for name in ("FileOID", "CreationDateTime"):
        root.attrib.pop(name, None)
    etree.indent(root)
    return etree.tostring(root, method="c14n2").decode()


def created_users(output: str) -> list[str]:
    """The login names the import's report says it created (--create-users)."""
    line = next((x for x in output.splitlines() if x.startswith(CREATED)), "")
    return [name.strip() for name in line.removeprefix(CREATED).split(",") if name.strip()]


CREATED = "Users created (disabled until an admin sets their password): "


def drop_differences_by_design(first: etree._Element, second: etree._Element, created: list[str]) -> None:
    """The round trip's two differences by design (docs/odm_import.md), asserted, then removed
    from both documents; nothing else is: every other difference fails the comparison.

    1. Users created by --create-users are disabled until an admin sets their password: their
       ``cs:Role Active`` is "false" in `second`; the attribute is dropped on both sides for
       those users only (a user disabled in the source is compared as any other).
    2. The import writes as its own account: `second` lists ``U.odm-import``, `first` does not;
       that one User is dropped."""
    assert created
    for login in created:
        theirs = first.find(f"odm:AdminData/odm:User[odm:LoginName='{login}']/cs:Role", NS)
        ours = second.find(f"odm:AdminData/odm:User[odm:LoginName='{login}']/cs:Role", NS)
        assert theirs is not None and ours is not None, login
        assert ours.get("Active") == "false", login
        theirs.attrib.pop("Active", None)
        del ours.attrib["Active"]
    oid = f"U.{IMPORT_ACCOUNT}"
    assert first.find(f"odm:AdminData/odm:User[@OID='{oid}']", NS) is None
    account = second.find(f"odm:AdminData/odm:User[@OID='{oid}']", NS)
    assert account is not None
    account.getparent().remove(account)


def assert_round_trip_equal(source: str, again: str, output: str) -> None:
    """Equal apart from FileOID, CreationDateTime and the differences by design."""
    first, second = etree.parse(source).getroot(), etree.parse(again).getroot()
    drop_differences_by_design(first, second, created_users(output))
    a, b = canonical(first), canonical(second)
    if a != b:
        diff = difflib.unified_diff(a.splitlines(), b.splitlines(), "source", "again", lineterm="", n=2)
        raise AssertionError("the round trip differs:\n" + "\n".join(list(diff)[:80]))


def edited(path: str, out: str, edit) -> str:
    tree = etree.parse(path)
    edit(tree.getroot())
    tree.write(out, xml_declaration=True, encoding="UTF-8")
    return out


def subject_el(root, key: str):
    return root.find(f".//odm:SubjectData[@SubjectKey='{key}']", NS)


# --- the round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["snapshot", "transactional"])
def test_round_trip_of_the_demo_study_is_equal_apart_from_the_known_differences(app, empty_app, tmp_path, mode):
    """Snapshot -> import -> Snapshot (issue 15's round trip); and a Transactional file of the
    same study, whose last values and states are the same study: its Snapshot is the same."""
    demo_file = str(tmp_path / f"demo-{mode}.xml")
    export(app, demo_file, mode)
    snapshot = str(tmp_path / "demo.xml")
    export(app, snapshot)
    result = run(empty_app, demo_file, "--create-users")
    assert result.exit_code == 0, result.output
    assert "Imported 12 subjects" in result.output
    again = tmp_path / "again.xml"
    export(empty_app, again)
    assert "Not imported" not in result.output
    # the scheduled infusion 2 of HZ-001 is scheduled again, on its date, and judged here
    root = etree.parse(str(again)).getroot()
    planned = subject_el(root, "HZ-001").find(
        ".//odm:FormData[@FormOID='F.INFUSION'][@FormRepeatKey='2']/cs:Status", NS
    )
    assert planned is not None and planned.get("State") == "scheduled" and planned.get("Number") == "2"
    assert planned.get("PlannedDate") == subject_el(etree.parse(snapshot).getroot(), "HZ-001").find(
        ".//odm:FormData[@FormOID='F.INFUSION'][@FormRepeatKey='2']/cs:Status", NS
    ).get("PlannedDate")
    # the sites keep their time zones
    zones = root.xpath("odm:AdminData/odm:Location/cs:TimeZone/@Name", namespaces=NS)
    assert zones == ["Asia/Shanghai", "Asia/Shanghai"]
    # everything else is equal: metadata, admin data, every subject, form, value, status, SDV,
    # query, e-signature and its ID (apart from FileOID, CreationDateTime and the differences by
    # design: the created users' Active and the import's account)
    assert_round_trip_equal(snapshot, str(again), result.output)


def test_every_other_difference_fails_the_comparison(app, empty_app, tmp_path):
    """The comparison drops only what is by design: an edited value, a user's Active in the
    source, or a second extra user each fail it."""
    snapshot = str(tmp_path / "demo.xml")
    export(app, snapshot)
    result = run(empty_app, snapshot, "--create-users")
    assert result.exit_code == 0, result.output
    again = str(tmp_path / "again.xml")
    export(empty_app, again)
    assert_round_trip_equal(snapshot, again, result.output)

    def value(root):
        _set_value(root, "HZ-001", "I.INFUSION.PRODUCT_LOT", "NK-OTHER")

    def extra_user(root):
        admin = root.find("odm:AdminData", NS)
        user = copy.deepcopy(admin.find("odm:User[@OID='U.dm']", NS))
        user.set("OID", "U.dm2")
        user.find("odm:LoginName", NS).text = "dm2"
        admin.insert(list(admin).index(admin.find("odm:User[@OID='U.dm']", NS)) + 1, user)

    def not_created_active(root):  # the system user's Role has no Active; a created one's does
        root.find("odm:AdminData/odm:User[@OID='U.SYSTEM']/cs:Role", NS).set("Active", "false")

    def signature_id(root):
        root.find(".//odm:Signature", NS).set("ID", "SIG.other")

    for n, edit in enumerate((value, extra_user, not_created_active, signature_id)):
        changed = edited(again, str(tmp_path / f"changed-{n}.xml"), edit)
        with pytest.raises(AssertionError):
            assert_round_trip_equal(snapshot, changed, result.output)


def test_the_import_goes_through_the_write_path_and_is_audited(empty_app, demo_file):
    assert run(empty_app, demo_file, "--create-users").exit_code == 0
    oid = file_oid(demo_file)
    reason = f"imported from ODM file demo.xml, FileOID {oid}"
    with empty_app.app_context():
        rows = db.session.execute(select(AuditRecord).where(AuditRecord.subject_id.is_not(None))).scalars().all()
        assert len(rows) > 500
        assert all(reason in (r.reason or "") for r in rows)
        actions = {r.action for r in rows}
        assert {"create", "set", "status", "sdv", "query_open", "sign_imported"} <= actions
        assert audit.verify().ok
        # what cannot be redone comes in as historical, marked with the FileOID, never re-signed
        signatures = db.session.execute(select(Signature)).scalars().all()
        assert signatures and all(s.imported_from == oid for s in signatures)
        decisions = db.session.execute(
            select(EligibilityDecision).where(EligibilityDecision.outcome == "enrolled")
        ).scalars()
        assert [d.imported_from for d in decisions] == [oid, oid]
        given = db.session.execute(select(Infusion).where(Infusion.state == "given")).scalars().all()
        assert [i.imported_from for i in given] == [oid]
        # planned infusions are judged as the scheduling page's are (issues 7, 11)
        planned = db.session.execute(select(Infusion).where(Infusion.state == "scheduled")).scalars().all()
        assert planned and all(i.judgement is not None for i in planned)
        # users of the file: created disabled, to change their password once an admin sets one
        users = {u.username: u for u in db.session.execute(select(User)).scalars()}
        assert {"coord-hz", "inv-hz", "monitor-hz", "dm", "admin"} <= set(users)
        assert not any(u.active for u in users.values())
        assert all(users[n].must_change_password for n in ("coord-hz", "inv-hz"))
        assert [s.code for s in users["coord-hz"].sites] == ["HZ"]


def test_a_dry_run_reports_and_writes_nothing(empty_app, demo_file):
    before = counts(empty_app)
    result = run(empty_app, demo_file, "--create-users", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: nothing was written. Would import 12 subjects" in result.output
    assert "HZ-001: exposure 1, screening 1, lymphodepletion 3" in result.output
    assert counts(empty_app) == before
    with empty_app.app_context():
        assert audit.verify().ok


def test_the_same_file_twice_is_refused(empty_app, demo_file):
    assert run(empty_app, demo_file, "--create-users").exit_code == 0
    before = counts(empty_app)
    result = run(empty_app, demo_file, "--create-users")
    assert result.exit_code == 2
    assert "subject HZ-001" in result.output and "already taken" in result.output
    assert counts(empty_app) == before


# --- refusals: a report naming subject, form, item, value; nothing applied --------------------


def _set_value(root, subject: str, item: str, value: str) -> None:
    el = subject_el(root, subject).find(f".//odm:ItemData[@ItemOID='{item}']", NS)
    assert el is not None
    el.set("Value", value)


def test_a_non_numeric_value_in_a_numeric_item_refuses_the_file(empty_app, demo_file, tmp_path):
    bad = edited(
        demo_file, str(tmp_path / "bad.xml"), lambda r: _set_value(r, "NB-S003", "I.SCREENING.WEIGHT_KG", "heavy")
    )
    before = counts(empty_app)
    result = run(empty_app, bad, "--create-users")
    assert result.exit_code == 2
    assert (
        "Import refused (subject NB-S003, form F.SCREENING, item I.SCREENING.WEIGHT_KG, value 'heavy'): "
        "not a number (float)" in result.output
    )
    assert "Nothing was imported." in result.output
    assert counts(empty_app) == before  # not even the users and the subjects before it


def test_a_value_the_screens_refuse_refuses_the_file(empty_app, demo_file, tmp_path):
    """Validated by the same rules as the screens: an ECOG of 7 is refused by the checker."""
    bad = edited(demo_file, str(tmp_path / "bad.xml"), lambda r: _set_value(r, "HZ-S004", "I.SCREENING.ECOG", "7"))
    before = counts(empty_app)
    result = run(empty_app, bad, "--create-users")
    assert result.exit_code == 2
    assert "subject HZ-S004, form F.SCREENING, item I.SCREENING.ECOG, value '7'" in result.output
    assert counts(empty_app) == before


def test_an_unknown_subject_site_refuses_the_file(empty_app, demo_file, tmp_path):
    def move(root):
        subject_el(root, "NB-S004").find("odm:SiteRef", NS).set("LocationOID", "L.XX")

    bad = edited(demo_file, str(tmp_path / "bad.xml"), move)
    before = counts(empty_app)
    result = run(empty_app, bad, "--create-users")
    assert result.exit_code == 2
    assert "subject NB-S004, item SiteRef, value 'L.XX'" in result.output
    assert "site XX is not a site" in result.output
    assert counts(empty_app) == before


def test_an_unknown_site_or_user_refuses_the_file_without_create_users(empty_app, demo_file):
    before = counts(empty_app)
    result = run(empty_app, demo_file)
    assert result.exit_code == 2
    assert "unknown site 'HZ'" in result.output and "--create-users" in result.output
    with empty_app.app_context():  # the sites exist, the users do not
        from cellstudy.auth import service as auth

        auth.create_site("HZ", "Hangzhou", "Asia/Shanghai")
        auth.create_site("NB", "Ningbo", "Asia/Shanghai")
        db.session.remove()
    before = counts(empty_app)
    result = run(empty_app, demo_file)
    assert result.exit_code == 2
    assert "unknown user 'admin' (System Administrator)" in result.output and "--create-users" in result.output
    assert counts(empty_app) == before


def test_users_are_matched_by_login_name(app, empty_app, demo_file, tmp_path):
    """Into an instance that has the users and sites (the demo instance, whose subjects are
    numbered differently): a signature names a user the file does not declare -> refused."""

    def strange_signer(root):
        sig = subject_el(root, "HZ-001").find(".//cs:Signature", NS)
        sig.set("UserOID", "U.nobody")

    bad = edited(demo_file, str(tmp_path / "bad.xml"), strange_signer)
    result = run(empty_app, bad, "--create-users")
    assert result.exit_code == 2
    assert "subject HZ-001" in result.output and "user 'U.nobody'" in result.output
    assert counts(empty_app)["Subject"] == 0


def test_a_site_time_zone_that_is_not_one_refuses_the_file(empty_app, demo_file, tmp_path):
    def zone(root):
        root.find("odm:AdminData/odm:Location[@OID='L.NB']/cs:TimeZone", NS).set("Name", "Mars/Olympus")

    bad = edited(demo_file, str(tmp_path / "bad.xml"), zone)
    before = counts(empty_app)
    result = run(empty_app, bad, "--create-users")
    assert result.exit_code == 2
    assert "item Location L.NB cs:TimeZone, value 'Mars/Olympus'" in result.output
    assert counts(empty_app) == before


def test_created_sites_take_the_files_time_zone(empty_app, demo_file, tmp_path):
    def zone(root):
        root.find("odm:AdminData/odm:Location[@OID='L.NB']/cs:TimeZone", NS).set("Name", "Europe/Berlin")

    assert run(empty_app, edited(demo_file, str(tmp_path / "tz.xml"), zone), "--create-users").exit_code == 0
    with empty_app.app_context():
        zones = dict(db.session.execute(select(Site.code, Site.timezone)).tuples().all())
    assert zones == {"HZ": "Asia/Shanghai", "NB": "Europe/Berlin"}


def test_a_file_that_is_not_odm_is_refused(empty_app, tmp_path):
    path = tmp_path / "not.xml"
    path.write_text("<hello/>")
    result = run(empty_app, str(path))
    assert result.exit_code == 2
    assert "not an ODM 1.3 document" in result.output


def test_a_signed_dlt_assessment_comes_in_completed_as_historical(app, empty_app, tmp_path):
    from cellstudy.demo import DEMO_PASSWORD
    from cellstudy.infusions.dose_levels import dlt_form, save_dlt

    with app.app_context():
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
        investigator = db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one()
        with records.transaction():  # as the DLT page saves it
            form = dlt_form(subject, user=investigator)
            save_dlt(
                form,
                {"evaluable": True, "dlt": True, "dlt_description": "Grade 4 neutropenia > 14 days"},
                user=investigator,
                expected_version=form.version or 0,
                reason=None,
                complete=True,
                password=DEMO_PASSWORD,
            )
        db.session.remove()
    source = str(tmp_path / "dlt.xml")
    export(app, source)
    result = run(empty_app, source, "--create-users")
    assert result.exit_code == 0, result.output
    assert "1 completed DLT assessments" in result.output
    again = str(tmp_path / "again.xml")
    export(empty_app, again)

    def dlt(path):
        el = subject_el(etree.parse(path).getroot(), "HZ-001").find(".//odm:FormData[@FormOID='F.DLT_ASSESSMENT']", NS)
        assert el is not None
        (sig,) = el.findall("odm:Signature", NS)
        assert sig.get("ID") == "SIG.HZ-001.SE.DLT_ASSESSMENT.F.DLT_ASSESSMENT"  # from what it signs
        return canonical(el)

    assert dlt(source) == dlt(again)  # values, status, the investigator's signature (not re-signed)
    with empty_app.app_context():
        signature = db.session.execute(select(Signature).where(Signature.form == "dlt_assessment")).scalar_one()
        assert signature.imported_from == file_oid(source) and signature.user.username == "inv-hz"


# --- a larger generated study -----------------------------------------------------------------


def test_round_trip_of_a_larger_generated_study(empty_template, tmp_path, schemas):
    """issue 15's second round trip: a study generated through the real services (odm_generated:
    32 subjects at two sites, every stage, awkward text), Snapshot -> import --create-users into
    an empty instance -> Snapshot: equal but for the differences by design."""
    source_db, target_db = str(tmp_path / "generated.db"), str(tmp_path / "target.db")
    shutil.copyfile(empty_template, source_db)
    shutil.copyfile(empty_template, target_db)
    apps = [create_app("test", {"SQLALCHEMY_DATABASE_URI": "sqlite:///" + p}) for p in (source_db, target_db)]
    try:
        with apps[0].app_context():
            odm_generated.build()
            db.session.remove()
        source = str(tmp_path / "generated.xml")
        export(apps[0], source)
        check(open(source, "rb").read(), schemas, tmp_path)  # valid, odmlib reads it
        root = etree.parse(source).getroot()
        assert len(root.findall(".//odm:SubjectData", NS)) == odm_generated.SUBJECTS
        assert {s.get("LocationOID") for s in root.iterfind(".//odm:SiteRef", NS)} == {"L.HZ", "L.NB"}
        states = [s.get("State") for s in root.iterfind(".//odm:FormData[@FormOID='F.INFUSION']/cs:Status", NS)]
        assert states.count("given") >= 4 and states.count("scheduled") >= 10 and states.count("cancelled") >= 4
        assert root.findall(".//odm:FormData[@FormOID='F.DLT_ASSESSMENT']/odm:Signature", NS)
        assert root.findall(".//odm:FormData[@FormOID='F.CRS_ASSESSMENT']", NS)
        assert {q.get("State") for q in root.iterfind(".//cs:Query", NS)} >= {"open", "answered", "closed", "cancelled"}
        assert root.xpath(f"//odm:ItemData[contains(@Value, '{odm_generated.LONG[:40]}')]", namespaces=NS)

        result = run(apps[1], source, "--create-users")
        assert result.exit_code == 0, result.output
        assert f"Imported {odm_generated.SUBJECTS} subjects" in result.output
        assert "Not imported" not in result.output
        again = str(tmp_path / "again.xml")
        export(apps[1], again)
        assert [z for z in etree.parse(again).getroot().xpath("//cs:TimeZone/@Name", namespaces=NS)] == [
            tz for _code, _name, tz in odm_generated.SITES
        ]
        assert_round_trip_equal(source, again, result.output)
    finally:
        for app in apps:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
