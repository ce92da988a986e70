"""Browser test (issue 5): a monitor prints a blank CRF from the menu, a filled visit CRF
from its page and HZ-001's casebook from the subject's menu, then has the casebooks of the
whole site made in the background, watches the progress page and downloads the zip."""

from __future__ import annotations

import io
import re
import zipfile

from pypdf import PdfReader
from sqlalchemy import select

from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db

from .ui import expect, log_in


def _download(page, click, tmp_path):
    with page.expect_download() as info:
        click()
    download = info.value
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    return download.suggested_filename, path.read_bytes()


def test_a_monitor_prints_crfs_and_casebooks(page, shot, live_server, tmp_path):
    with live_server.app.app_context():
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
        subject_id, visit_label = subject.id, subject.visits[0].label
        db.session.remove()

    log_in(page, "monitor-hz")
    page.get_by_role("navigation").get_by_role("link", name="Blank CRFs").click()
    expect(page.get_by_role("heading", name="Blank CRFs")).to_be_visible()
    shot("pdf_blank_crfs_page")
    row = page.locator("#blank-crfs tbody tr", has_text="Adverse event")
    name, data = _download(page, lambda: row.get_by_role("link", name="PDF (Letter)").click(), tmp_path)
    assert re.fullmatch(r"CAR-NK-CLL1-CD33-AML_blank_ae_\d{8}\.pdf", name), name
    blank = PdfReader(io.BytesIO(data))
    assert float(blank.pages[0].mediabox.width) == 612 and "Grade (CTCAE v5.0)" in blank.pages[0].extract_text()

    page.goto(f"/subjects/{subject_id}/visits/{subject.visits[0].id}")
    expect(page.get_by_role("heading", name=f"Visit {visit_label}")).to_be_visible()
    name, data = _download(page, lambda: page.get_by_role("link", name="Print (PDF)").click(), tmp_path)
    assert re.fullmatch(r"CAR-NK-CLL1-CD33-AML_HZ-001_visit-\d+_\d{8}\.pdf", name), name
    assert "Visit date" in PdfReader(io.BytesIO(data)).pages[0].extract_text()

    name, data = _download(
        page,
        lambda: page.locator(".subject-header .subnav").get_by_role("link", name="Casebook (PDF)").click(),
        tmp_path,
    )
    assert re.fullmatch(r"CAR-NK-CLL1-CD33-AML_HZ-001_casebook_\d{8}\.pdf", name), name
    casebook = PdfReader(io.BytesIO(data))
    assert [o.title for o in casebook.outline][-1] == "Appendix: audit trail"

    page.goto("/casebooks")
    page.get_by_label("Site").select_option("HZ")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("heading", name="Casebooks of a site (PDF, zip)")).to_be_visible()
    link = page.locator("#job-download-link")
    expect(link).to_be_visible(timeout=180_000)  # the page polls its status (static/jobs.js)
    expect(page.locator("#job-status")).to_have_text("done")
    shot("pdf_site_casebooks_done")
    name, data = _download(page, lambda: link.click(), tmp_path)
    assert name.endswith(".zip") and "_HZ_casebooks_" in name
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert any("HZ-001_casebook" in n for n in names) and all(n.endswith(".pdf") for n in names)
