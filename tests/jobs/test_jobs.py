"""Background jobs (issue 5): submit -> queued -> running -> done/failed, progress in the
database, the download only for the user who submitted it."""

import os

import pytest
from sqlalchemy import select

from cellstudy import jobs
from cellstudy.auth.models import Site, User
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord


@jobs.task("test_echo", permission="view_clinical", title="Test echo")
def _echo(job, report_progress):
    total = int(job.params.get("n", 3))
    report_progress(0, total)
    for i in range(total):
        report_progress(i + 1)
    if job.params.get("fail") == "expected":
        raise jobs.JobError("Nothing to do for that site.")
    if job.params.get("fail") == "crash":
        raise RuntimeError("boom")
    path = jobs.result_file(job, "echo.txt")
    with open(path, "w") as out:
        out.write(f"echo {job.params.get('text', '')} for {job.created_by.username}")
    return path, "echo_result.txt"


def _user(name):
    return db.session.execute(select(User).where(User.username == name)).scalar_one()


def _submit(app, username, params, site_code=None):
    with app.app_context():
        site = db.session.execute(select(Site).where(Site.code == site_code)).scalar_one() if site_code else None
        job = jobs.submit("test_echo", params, _user(username), site_id=site.id if site else None)
        jobs.wait(job.id, timeout=30)
        return job.id


def test_a_job_runs_in_the_background_and_its_result_downloads(app, login):
    job_id = _submit(app, "coord-hz", {"n": 4, "text": "hello"}, "HZ")
    with app.app_context():
        job = db.session.get(jobs.Job, job_id)
        assert (job.status, job.progress_done, job.progress_total, job.percent) == ("done", 4, 4, 100)
        assert job.started_at and job.finished_at and job.finished_at >= job.started_at
        assert not os.path.isabs(job.result_path) and job.result_name == "echo_result.txt"
    coord = login("coord-hz")
    page = coord.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and b"jobs.js" in page.data and b"<script>" not in page.data
    state = coord.get(f"/jobs/{job_id}/status").get_json()
    assert state["status"] == "done" and state["download"] == f"/jobs/{job_id}/download"
    response = coord.get(f"/jobs/{job_id}/download")
    assert response.status_code == 200
    assert response.data == b"echo hello for coord-hz"
    assert "echo_result.txt" in response.headers["Content-Disposition"]
    with app.app_context():
        record = (
            db.session.execute(
                select(AuditRecord).where(AuditRecord.action == "download").order_by(AuditRecord.id.desc())
            )
            .scalars()
            .first()
        )
        assert (record.form, record.form_id, record.username) == ("job", job_id, "coord-hz")
    assert str(job_id).encode() in coord.get("/jobs").data


def test_only_the_submitter_sees_a_job(app, login):
    job_id = _submit(app, "coord-hz", {"n": 1}, "HZ")
    for other in ("inv-hz", "coord-nb", "dm"):
        session = login(other)
        for url in (f"/jobs/{job_id}", f"/jobs/{job_id}/status", f"/jobs/{job_id}/download"):
            assert session.get(url).status_code == 404, (other, url)
    assert login("coord-hz").get("/jobs/999999").status_code == 404


def test_a_user_removed_from_the_site_loses_the_result(app, login):
    job_id = _submit(app, "coord-hz", {"n": 1}, "HZ")
    with app.app_context():
        user = _user("coord-hz")
        user.sites = []
        db.session.commit()
    assert login("coord-hz").get(f"/jobs/{job_id}/download").status_code == 404


@pytest.mark.parametrize("fail, message", [("expected", "Nothing to do for that site."), ("crash", "internal error")])
def test_a_failing_job_is_failed_with_a_message(app, login, fail, message):
    job_id = _submit(app, "coord-hz", {"n": 2, "fail": fail})
    with app.app_context():
        job = db.session.get(jobs.Job, job_id)
        assert job.status == "failed" and message in job.error and job.result_path is None
    coord = login("coord-hz")
    assert coord.get(f"/jobs/{job_id}/download").status_code == 404
    assert message in coord.get(f"/jobs/{job_id}/status").get_json()["error"]


def test_submit_refuses_a_role_without_the_permission(app):
    with app.app_context(), pytest.raises(PermissionError):
        jobs.submit("test_echo", {}, _user("admin"))


def test_a_job_whose_process_died_is_shown_as_interrupted(app, login):
    with app.app_context():
        user = _user("coord-hz")
        job = jobs.Job(
            kind="test_echo",
            params={},
            status="running",
            created_by_id=user.id,
            worker="{}:{}".format(__import__("socket").gethostname(), 2**22 + 12345),
        )
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    state = login("coord-hz").get(f"/jobs/{job_id}/status").get_json()
    assert state["status"] == "failed" and "Interrupted" in state["error"]
