"""PDF CRFs (issue 5): every form blank and filled, read back with pypdf; one page of each
as a PNG in test-artifacts/pdf/ for a reviewer."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import Boolean, Date, Integer, select

from cellstudy.adverse_events.models import CrsAssessment, IcansAssessment
from cellstudy.auth.models import Site, User
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.infusions.models import DltAssessment
from cellstudy import registry
from cellstudy.pdf.forms import pdf_forms
from cellstudy.records import service as records
from cellstudy.records.models import AuditRecord, Query

BLANK_TYPES = list(pdf_forms())
#: form key -> the URL of its filled PDF, given the subject and the record id
FILLED_URLS = {
    "screening": "/subjects/{s}/screening/{r}.pdf",
    "lymphodepletion": "/subjects/{s}/lymphodepletion/{r}.pdf",
    "infusion": "/subjects/{s}/infusions/{r}.pdf",
    "visit": "/subjects/{s}/visits/{r}.pdf",
    "ae": "/subjects/{s}/aes/{r}.pdf",
    "crs": "/subjects/{s}/crs/{r}.pdf",
    "icans": "/subjects/{s}/icans/{r}.pdf",
}
CJK_TEXT = "细胞因子释放综合征"
PROTOCOL = "CAR-NK-CLL1-CD33-AML"


def _user(name):
    return db.session.execute(select(User).where(User.username == name)).scalar_one()


def _subject(label="HZ-001"):
    return db.session.execute(select(Subject).where(Subject.subject_number == label)).scalar_one()


def _page_numbers_right(pdf):
    n = len(pdf.pages)
    for i, text in enumerate(pdf.pages, start=1):
        assert f"Page {i} of {n}" in text, (i, text[-200:])


@pytest.mark.parametrize("key", BLANK_TYPES)
def test_every_blank_crf_has_every_label_unit_help_and_choice(login, read_pdf, pdftoppm, key):
    ft = pdf_forms()[key]
    response = login("coord-hz").get(f"/crfs/blank/{key}.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    disposition = response.headers["Content-Disposition"]
    assert re.search(rf'filename="{PROTOCOL}_blank_{key}_\d{{8}}\.pdf"', disposition), disposition
    pdf = read_pdf(response.data)
    missing = []
    for spec in ft.specs:
        for text in (spec.label, spec.unit, spec.help, *(label for _, label in spec.choices or ())):
            if text and not pdf.has(text):
                missing.append(f"{spec.name}: {text}")
        if spec.kind == "bool" and not pdf.has("☐Yes☐No"):
            missing.append(f"{spec.name}: tick boxes")
    for column in ft.columns():
        if not pdf.has(column.label):
            missing.append(column.label)
    assert not missing, missing
    assert pdf.has(ft.title) and pdf.has(PROTOCOL) and pdf.has("Form version") and pdf.has("Subject no.")
    if any(s.kind == "date" for s in ft.specs):
        assert pdf.has("YYYY-MM-DD")
    _page_numbers_right(pdf)
    assert pdf.reader.metadata.title.startswith(ft.title) and pdf.reader.metadata.author == "CellStudy"
    assert float(pdf.reader.pages[0].mediabox.width) == pytest.approx(595.28, abs=0.5)  # A4
    pdf.png(f"blank_{key}")


def test_blank_crf_on_us_letter_and_a_bad_paper_size(login, read_pdf):
    coord = login("coord-hz")
    pdf = read_pdf(coord.get("/crfs/blank/visit.pdf?size=letter").data)
    box = pdf.reader.pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx((612, 792), abs=0.5)
    response = coord.get("/crfs/blank/visit.pdf?size=A3", follow_redirects=True)
    assert response.status_code == 200 and b"Paper size" in response.data and b"A4 or Letter" in response.data
    assert coord.get("/crfs/blank/nosuchform.pdf").status_code == 404


def test_the_blank_crfs_page_lists_every_form(login):
    page = login("monitor-hz").get("/crfs/blank").get_data(as_text=True)
    for key, ft in pdf_forms().items():
        assert f"/crfs/blank/{key}.pdf" in page and ft.title in page
    assert "/casebooks" in page


# --- filled CRFs -------------------------------------------------------------------------------


def _value_for(record, spec, i):
    """A value for every kind, typed as the record stores it (JSON text or a column)."""
    if spec.kind == "date":
        value = date(2026, 1, 1 + i % 27)
    elif spec.kind == "number":
        value = f"{10 + i}.5"
    elif spec.kind == "int":
        value = 1 + i
    elif spec.kind == "bool":
        value = i % 2 == 0
    elif spec.kind == "choice":
        value = spec.choices[-1][0]
    elif spec.kind == "time":
        value = f"0{i % 10}:3{i % 6}"
    else:
        value = f"{CJK_TEXT} {spec.name}"[: spec.max or 200]
    column = record.__table__.columns.get(spec.name) if spec.name != "data" else None
    if column is not None:
        if isinstance(column.type, Integer):
            value = int(value)
        elif isinstance(column.type, Boolean):
            value = bool(value)
        elif not isinstance(column.type, Date) and isinstance(value, date):
            value = value.isoformat()
    elif isinstance(value, date):
        value = value.isoformat()
    return value


def _expected(spec, value) -> str:
    if spec.kind == "bool":
        return "☒Yes" if value else "☒No"
    if spec.kind == "choice":
        return "☒" + dict(spec.choices)[str(value)]
    if spec.kind == "date":
        return value.isoformat() if isinstance(value, date) else value
    return str(value)


def _record(key, subject, user):
    if key == "screening":
        return subject.current_screening
    if key == "lymphodepletion":
        return subject.lymphodepletion_days[0]
    if key == "infusion":
        return subject.infusions[0]
    if key == "visit":
        return subject.visits[0]
    if key == "ae":
        return subject.adverse_events[0]
    model = {"crs": CrsAssessment, "icans": IcansAssessment}[key]
    return db.session.execute(select(model).where(model.subject_id == subject.id).order_by(model.id)).scalars().first()


def _fill(app, key):
    """Every field of a record of HZ-001 given a value through the write path; returns
    (subject id, record id, {spec: value})."""
    with app.app_context():
        user = _user("coord-hz")
        subject = _subject()
        record = _record(key, subject, user)
        values = {spec.name: _value_for(record, spec, i) for i, spec in enumerate(pdf_forms()[key].specs)}
        records.save(record, user=user, changes=values, expected_version=record.version, reason="PDF test")
        return subject.id, record.id, values


@pytest.mark.parametrize("key", list(FILLED_URLS))
def test_every_filled_crf_shows_every_label_and_value(app, login, read_pdf, pdftoppm, key):
    subject_id, record_id, values = _fill(app, key)
    response = login("inv-hz").get(FILLED_URLS[key].format(s=subject_id, r=record_id))
    assert response.status_code == 200, response.status_code
    assert re.search(
        rf'filename="{PROTOCOL}_HZ-001_{key}-{record_id}_\d{{8}}\.pdf"', response.headers["Content-Disposition"]
    )
    pdf = read_pdf(response.data)
    specs = {s.name: s for s in pdf_forms()[key].specs}
    missing = [f"{name}: label" for name, spec in specs.items() if not pdf.has(spec.label)]
    missing += [
        f"{name}: {_expected(specs[name], v)!r}" for name, v in values.items() if not pdf.has(_expected(specs[name], v))
    ]
    assert not missing, missing
    # the state of the record, the header and the footer
    for text in (
        "Form status",
        "Record version",
        "SDV",
        "Open queries",
        "Signatures",
        "HZ-001",
        "Site: HZ",
        PROTOCOL,
        "Form version",
        "Generated",
        "inv-hz",
        "Dr Wang Lei",
    ):
        assert pdf.has(text), text
    _page_numbers_right(pdf)
    meta = pdf.reader.metadata
    assert meta.author == "CellStudy" and "HZ-001" in meta.title and "HZ-001" in meta.subject
    pdf.png(f"filled_{key}")


def test_the_logs_print_filled(app, login, read_pdf, pdftoppm):
    from cellstudy.enrollment import service as enrollment_service
    from cellstudy.infusions import vaccination

    with app.app_context():
        subject = _subject()
        window = vaccination.vaccination_window(subject)
        given = (window[0].replace(day=1) if window else date(2025, 1, 1)).replace(year=2025)
        enrollment_service.record_vaccine(
            subject,
            {"name": "Influenza vaccine 流感疫苗", "last_date": given, "start_date": given, "indication": "seasonal"},
            user=_user("coord-hz"),
        )
        subject_id = subject.id
    inv = login("inv-hz")
    vaccines = read_pdf(inv.get(f"/subjects/{subject_id}/crf/vaccination.pdf").data)
    assert vaccines.has("Influenza vaccine 流感疫苗") and vaccines.has(given.isoformat()) and vaccines.has("seasonal")
    assert vaccines.has("Vaccination log") and vaccines.has("Date given")
    vaccines.png("filled_vaccination")
    log = read_pdf(inv.get(f"/subjects/{subject_id}/crf/exposure.pdf").data)
    assert log.has(registry.logs()["exposure"][1].label) and log.has("Influenza vaccine 流感疫苗")
    assert log.has("Vaccine")  # the category's label, not its code
    log.png("filled_exposure")


def test_a_filled_crf_shows_status_open_queries_sdv_and_signatures(app, login, read_pdf):
    with app.app_context():
        subject = _subject()
        ae = subject.adverse_events[0]
        db.session.add(
            Query(
                site_id=subject.site_id,
                subject_id=subject.id,
                form="adverse_event",
                form_id=ae.id,
                field="grade",
                text="Please confirm the grade against the source.",
                origin="manual",
                created_by_id=_user("monitor-hz").id,
            )
        )
        db.session.commit()
        inv = _user("inv-hz")
        with records.transaction():
            records.sign(ae, user=inv, password="cellstudy-demo", meaning="I approve this adverse event form")
        ids = subject.id, ae.id, ae.status
    pdf = read_pdf(login("monitor-hz").get(f"/subjects/{ids[0]}/aes/{ids[1]}.pdf").data)
    assert pdf.has("Please confirm the grade against the source.") and pdf.has("? query")
    assert pdf.has("Dr Wang Lei") and pdf.has("I approve this adverse event form") and pdf.has("UTC+8")
    assert pdf.has(f"Form status {ids[2]}")
    try:
        from cellstudy.monitoring.state import record_state  # noqa: F401
    except ImportError:
        assert pdf.has("SDV: not yet available")
    else:
        assert re.search(r"SDV\s*(verified|partly verified|not verified|not required)", pdf.text)


def test_cjk_text_is_extracted_as_the_same_characters_in_a_cjk_font(app, login, read_pdf):
    with app.app_context():
        site = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        site.name = "浙江大学医学院附属第一医院"
        db.session.commit()
        subject = _subject()
        ae = subject.adverse_events[0]
        records.save(
            ae,
            user=_user("coord-hz"),
            changes={"verbatim": CJK_TEXT},
            expected_version=ae.version,
            reason="翻译 translation",
        )
        ids = subject.id, ae.id
    pdf = read_pdf(login("inv-hz").get(f"/subjects/{ids[0]}/aes/{ids[1]}.pdf").data)
    assert CJK_TEXT in pdf.text and "浙江大学医学院附属第一医院" in pdf.text
    fonts = set()
    for page in pdf.reader.pages:
        for font in (page["/Resources"].get("/Font") or {}).values():
            fonts.add(str(font.get_object()["/BaseFont"]))
    assert any("NotoSansCJK" in f.replace("-", "") for f in fonts), fonts


def test_every_pdf_is_audited(app, login):
    coord = login("coord-hz")
    with app.app_context():
        subject = _subject()
        infusion_id = subject.infusions[0].id
        start = db.session.execute(select(AuditRecord.id).order_by(AuditRecord.id.desc())).scalar()
    name = re.search(
        r'filename="([^"]+)"',
        coord.get(f"/subjects/{subject.id}/infusions/{infusion_id}.pdf").headers["Content-Disposition"],
    ).group(1)
    coord.get("/crfs/blank/ae.pdf")
    with app.app_context():
        rows = (
            db.session.execute(select(AuditRecord).where(AuditRecord.id > start).order_by(AuditRecord.id))
            .scalars()
            .all()
        )
        exports = [r for r in rows if r.action == "export"]
        assert len(exports) == 2
        filled, blank = exports
        assert (filled.username, filled.form, filled.form_id, filled.subject_id, filled.field) == (
            "coord-hz",
            "infusion",
            infusion_id,
            subject.id,
            "pdf",
        )
        assert name in filled.new_value and "filled CRF" in filled.new_value
        assert blank.form == "adverse_event" and "blank CRF" in blank.new_value and blank.subject_id is None


def test_another_sites_subject_is_a_404_and_admin_gets_no_pdf(app, login):
    with app.app_context():
        subject = _subject()
        url = f"/subjects/{subject.id}/infusions/{subject.infusions[0].id}.pdf"
        casebook = f"/subjects/{subject.id}/casebook.pdf"
    for user in ("coord-nb", "inv-nb"):
        session = login(user)
        assert session.get(url).status_code == 404 and session.get(casebook).status_code == 404
    admin = login("admin")
    assert admin.get("/crfs/blank/ae.pdf").status_code == 403 and admin.get(url).status_code == 403


def test_a_dlt_assessment_prints_in_the_casebook(app, login, read_pdf):
    with app.app_context():
        subject = _subject()
        dlt = DltAssessment(subject_id=subject.id, data={})
        with records.transaction():
            records.create(dlt, user=_user("inv-hz"), fields={})
        records.save(dlt, user=_user("inv-hz"), changes={"evaluable": True, "dlt": False}, expected_version=dlt.version)
        subject_id = subject.id
    from cellstudy.pdf import build

    with app.app_context():
        pdf, _, _ = build.casebook(subject_id, _user("inv-hz"))
    text = read_pdf(pdf)
    # the casebook prints "question: answer"
    assert text.has("DLT assessment") and text.has("Evaluable for DLT: Yes") and text.has("Dose-limiting toxicity: No")
