"""Study settings: an admin amendment is validated, versioned, audited, and in force for the
rules once an investigator has approved it (issue 3; issue 11: amendments as controlled
changes, the whole flow in tests/auth/test_amendments_app.py)."""

from sqlalchemy import select

from cellstudy.extensions import db
from cellstudy.settings.models import StudyAmendment
from cellstudy.records.models import AuditRecord
from cellstudy.settings import current_study, editable_settings
from cellstudy.timeutil import utcnow

PW = "cellstudy-demo"


def _form(overrides=None, version="2.0 (amendment 1)", reason="Sponsor amendment", effective=None):
    data = {key: "" if value is None else str(value) for key, value, _ in editable_settings()}
    data.update(overrides or {})
    return {**data, "version": version, "reason": reason, "effective_date": effective or utcnow().date().isoformat()}


def _approve(app, login, username="inv-hz"):
    with app.app_context():
        amendment_id = db.session.execute(
            select(StudyAmendment.id).where(StudyAmendment.status == "proposed")
        ).scalar_one()
    return login(username).post(
        "/amendments/approve", data={"amendment_id": str(amendment_id), "password": PW, "confirm": "y"}
    )


def test_admin_amends_a_setting_and_it_is_audited_and_in_force(app, login):
    admin = login("admin")
    assert b"Minimum interval between infusions (days)" in admin.get("/admin/study").data  # labels, not raw names
    response = admin.post("/admin/study", data=_form({"eligibility.nyha_fail_at": "2"}))
    assert response.status_code == 302
    with app.test_request_context():
        # proposed, not yet approved: the definition in force is unchanged
        assert current_study().version == "1.0 (original protocol)" and current_study().eligibility.nyha_fail_at == 3
    assert _approve(app, login).status_code == 302
    with app.test_request_context():
        study = current_study()
        assert study.version == "2.0 (amendment 1)" and study.eligibility.nyha_fail_at == 2
        record = db.session.execute(select(AuditRecord).where(AuditRecord.action == "setting")).scalar_one()
        assert (record.field, record.old_value, record.new_value, record.username) == (
            "eligibility.nyha_fail_at",
            "3",
            "2",
            "admin",
        )
    # the panel's checker runs under the definition in force
    page = login("coord-hz").get("/subjects/4").data.decode()
    assert "NYHA class 1 (limit &lt; 2)" in page and "2.0 (amendment 1)" in page


def test_bad_setting_values_are_refused_naming_the_setting(app, login):
    admin = login("admin")
    for value, message in (
        ("abc", "not a valid whole number"),
        ("-1", "must not be negative"),
        ("", "a value is required"),
    ):
        response = admin.post("/admin/study", data=_form({"regimen.min_interval_days": value}))
        assert response.status_code == 200
        assert b"regimen.min_interval_days" in response.data and message.encode() in response.data
        assert b"Minimum interval between infusions (days): " in response.data  # the message names the setting
    with app.app_context():
        assert db.session.execute(select(StudyAmendment)).first() is None


def test_an_amendment_must_change_something_and_needs_version_and_reason(app, login):
    admin = login("admin")
    assert b"No setting was changed" in admin.post("/admin/study", data=_form()).data
    response = admin.post("/admin/study", data=_form({"regimen.min_interval_days": "7"}, version="", reason=""))
    assert b"Name the amendment" in response.data and b"Give the reason" in response.data


def test_only_the_admin_changes_settings(login):
    assert login("dm").post("/admin/study", data=_form({"regimen.min_interval_days": "7"})).status_code == 403
    assert login("inv-hz").get("/admin/study").status_code == 403
