"""The subject casebook (issue 5): cover, contents with page numbers and real links,
every form in visit order with bookmarks, signatures and the audit trail; and the
casebooks of a whole site as a background job."""

from __future__ import annotations

import io
import re
import zipfile

from sqlalchemy import func, select

from cellstudy import jobs, registry
from cellstudy.auth.models import User
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord


def _subject(label="HZ-001"):
    return db.session.execute(select(Subject).where(Subject.subject_number == label)).scalar_one()


def _user(name):
    return db.session.execute(select(User).where(User.username == name)).scalar_one()


def test_casebook_contents_bookmarks_and_page_numbers_agree(app, login, read_pdf, pdftoppm):
    with app.app_context():
        subject = _subject()
        subject_id = subject.id
        audit_count = db.session.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.subject_id == subject_id)
        )
    response = login("monitor-hz").get(f"/subjects/{subject_id}/casebook.pdf")
    assert response.status_code == 200
    assert re.search(
        r'filename="CAR-NK-CLL1-CD33-AML_HZ-001_casebook_\d{8}\.pdf"', response.headers["Content-Disposition"]
    )
    pdf = read_pdf(response.data)
    n = len(pdf.pages)
    for i, text in enumerate(pdf.pages, start=1):
        assert f"Page {i} of {n}" in text
        assert "HZ-001" in text and "CAR-NK-CLL1-CD33-AML" in text  # the header on every page
    assert pdf.has("Subject casebook") and pdf.has("Sara Keller")

    bookmarks = pdf.outline()
    titles = [title for title, _ in bookmarks]
    # visit order: screening first, then the therapy log, lymphodepletion, the treatment
    # timeline, adverse events ..., the vaccination log; then signatures and the appendix
    assert titles[0] == registry.get("screening").label and titles[1] == registry.logs()["exposure"][1].label
    assert titles[2].startswith("Lymphodepletion day")
    assert titles.index("Infusion 1") < titles.index("Visit Day 1")
    assert any(t.startswith("AE 1") for t in titles) and "Vaccination log" in titles
    assert titles[-2:] == ["Signatures", "Appendix: audit trail"]

    toc = pdf.pages[1]
    assert "Contents" in toc
    for title, page in bookmarks:
        # the bookmark's page shows the form's heading, and the contents give that page
        assert pdf.has(title) and re.sub(r"\s+", "", title) in re.sub(r"\s+", "", pdf.pages[page - 1]), (title, page)
        assert re.search(
            re.escape(title.replace(" ", "")) + r"(\([^)]*\))?[.\s]*" + rf"{page}(?!\d)", toc.replace(" ", "")
        ), (title, page)
    # the contents are real links, to the pages of the bookmarks
    links = [a.get_object() for a in pdf.reader.pages[1].get("/Annots") or []]
    targets = [_link_page(pdf.reader, link) for link in links if link.get("/Subtype") == "/Link"]
    assert set(targets) == {page for _, page in bookmarks}  # (a link is one annotation per line box)
    # the audit trail: every record of the subject
    appendix_start = bookmarks[-1][1]
    appendix = "\n".join(pdf.pages[appendix_start - 1 :])
    assert len(re.findall(r"#\d+ · \d{4}-\d\d-\d\d \d\d:\d\d UTC", appendix)) == audit_count
    assert pdf.reader.metadata.title == "Casebook — HZ-001" and "HZ-001" in pdf.reader.metadata.subject
    pdf.png("casebook_contents", page=2)
    pdf.png("casebook_audit_trail", page=appendix_start)


def _link_page(reader, link) -> int:
    """The page number (1-based) a link annotation jumps to."""
    dest = link.get("/Dest")
    if dest is None:
        dest = link["/A"].get_object()["/D"]
    if isinstance(dest, str) or hasattr(dest, "original_bytes") or not hasattr(dest, "__getitem__"):
        dest = reader.named_destinations[str(dest)]
        return reader.get_destination_page_number(dest) + 1
    page_ref = dest[0]
    for number, page in enumerate(reader.pages, start=1):
        if (
            page.indirect_reference == page_ref.indirect_reference
            if hasattr(page_ref, "indirect_reference")
            else page_ref
        ):
            return number
    raise AssertionError(f"link to an unknown page: {dest}")


def test_casebook_is_audited_and_needs_the_subjects_site(app, login):
    with app.app_context():
        subject_id = _subject().id
    assert login("coord-nb").get(f"/subjects/{subject_id}/casebook.pdf").status_code == 404
    assert login("admin").get(f"/subjects/{subject_id}/casebook.pdf").status_code == 403
    login("coord-hz").get(f"/subjects/{subject_id}/casebook.pdf")
    with app.app_context():
        record = (
            db.session.execute(
                select(AuditRecord).where(AuditRecord.action == "export").order_by(AuditRecord.id.desc())
            )
            .scalars()
            .first()
        )
        assert (record.username, record.form, record.subject_id) == ("coord-hz", "casebook", subject_id)
        assert "subject casebook" in record.new_value and "audit_records" in record.new_value


def test_site_casebooks_run_as_a_background_job(app, login, read_pdf):
    monitor = login("monitor-hz")
    page = monitor.get("/casebooks").get_data(as_text=True)
    assert "HZ" in page and "NB ·" not in page  # only the monitor's site is offered
    # another site's code (forged) is refused with a message at the field
    refused = monitor.post("/casebooks", data={"site": "NB", "size": "a4"})
    assert refused.status_code == 200 and "Not a valid choice" in refused.get_data(as_text=True)
    response = monitor.post("/casebooks", data={"site": "HZ", "size": "letter"})
    assert response.status_code == 302 and "/jobs/" in response.headers["Location"]
    job_id = int(response.headers["Location"].rstrip("/").split("/")[-1])
    with app.app_context():
        jobs.wait(job_id, timeout=300)
        job = db.session.get(jobs.Job, job_id)
        assert job.status == "done", job.error
        subjects = db.session.scalars(
            select(
                Subject.subject_number,
            ).where(Subject.site_id == job.site_id)
        ).all()
        assert job.progress_done == job.progress_total == len(subjects)
    status = monitor.get(f"/jobs/{job_id}/status").get_json()
    assert status["status"] == "done" and status["download"]
    archive = zipfile.ZipFile(io.BytesIO(monitor.get(status["download"]).data))
    names = archive.namelist()
    assert len(names) == len(subjects) and all(n.endswith("_casebook_" + n[-12:-4] + ".pdf") for n in names)
    first = read_pdf(archive.read(sorted(names)[0]))
    assert float(first.reader.pages[0].mediabox.width) == 612  # US Letter, as asked
    with app.app_context():
        exports = db.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "export", AuditRecord.form == "casebook")
        ).all()
        assert len(exports) == len(subjects) and {r.username for r in exports} == {"monitor-hz"}
    # the coordinator may not export a site's casebooks; nobody else sees the job
    assert login("coord-hz").get("/casebooks").status_code == 403
    assert login("inv-hz").get(f"/jobs/{job_id}").status_code == 404
