"""The ODM 1.3.2 import (issue 15): `flask odm import FILE [--dry-run] [--create-users]`.

The real app on real databases: the demo study (the test template) is exported as a Snapshot,
imported with --create-users into an EMPTY instance (a fresh database with the migrations and
no demo), exported again and compared; a dry run writes nothing; a bad value, an unknown site
or an unknown user refuses the whole file with a message naming subject, form, item and value.

The round trip is equal apart from FileOID and CreationDateTime and the KNOWN DIFFERENCES
below, each asserted explicitly (docs/odm_import.md lists them and why)."""

from __future__ import annotations

import os
import shutil

import pytest
from flask_migrate import upgrade
from lxml import etree
from sqlalchemy import func, select

from cellstudy import create_app
from cellstudy.auth.models import User
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


def signature_ids(root) -> list[str]:
    """KNOWN DIFFERENCE 4: ODM ``Signature/@ID`` is ``SIG.<row id>`` even in Snapshot files
    (odmlib requires an ID), and the importing instance numbers its rows itself. Removed for
    the comparison; returns the IDs removed."""
    out = []
    for sig in root.iter(_o("Signature")):
        out.append(sig.attrib.pop("ID"))
    return out


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
    first, second = etree.parse(snapshot).getroot(), etree.parse(str(again)).getroot()

    # KNOWN DIFFERENCE 1: users created by --create-users are disabled until an admin sets
    # their password (issue 15), so their cs:Role says Active="false".
    roles = second.findall("odm:AdminData/odm:User/cs:Role", NS)
    created = [r for r in roles if r.getparent().get("OID") not in ("U.SYSTEM",)]
    assert created and all(r.get("Active") == "false" for r in created)
    for role in created:
        role.set("Active", "true")
    # KNOWN DIFFERENCE 2: the import writes as its own disabled account, which AdminData lists.
    account = second.find(f"odm:AdminData/odm:User[@OID='U.{IMPORT_ACCOUNT}']", NS)
    assert account is not None
    account.getparent().remove(account)
    # KNOWN DIFFERENCE 3: a scheduled infusion after the first cannot be scheduled again: the
    # export carries no planned date (docs/odm.md: planned dates are not exported). HZ-001's
    # infusion 2 (scheduled) is reported as not imported.
    assert "Not imported: HZ-001: scheduled infusion 2" in result.output
    hz = subject_el(first, "HZ-001")
    scheduled = [
        fd
        for fd in hz.findall(".//odm:FormData[@FormOID='F.INFUSION']", NS)
        if fd.find("cs:Status", NS).get("State") == "scheduled" and fd.get("FormRepeatKey") != "1"
    ]
    assert (
        len(scheduled) == 1
        and subject_el(second, "HZ-001").find(".//odm:FormData[@FormOID='F.INFUSION'][@FormRepeatKey='2']", NS) is None
    )
    scheduled[0].getparent().remove(scheduled[0])

    ids = signature_ids(first), signature_ids(second)
    assert len(ids[0]) == len(ids[1]) > 0  # the same signatures; their row ids may differ

    # everything else is equal: metadata, admin data, every subject, form, value, status, SDV,
    # query, e-signature (apart from FileOID and CreationDateTime)
    assert canonical(first) == canonical(second)


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
        assert len(signature_ids(el)) == 1  # KNOWN DIFFERENCE 4: its ID is a row id
        return canonical(el)

    assert dlt(source) == dlt(again)  # values, status, the investigator's signature (not re-signed)
    with empty_app.app_context():
        signature = db.session.execute(select(Signature).where(Signature.form == "dlt_assessment")).scalar_one()
        assert signature.imported_from == file_oid(source) and signature.user.username == "inv-hz"
