"""A new CRF is one declaration (issue 12): a form type that only this test registers, with
a table only this test creates, appears in the catalogue, the casebook, the PDFs, the audit
labels, SDV, signatures and the dashboards, with no other file touched."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellstudy import registry
from cellstudy.audit_viewer import labels
from cellstudy.auth.models import User
from cellstudy.extensions import db
from cellstudy.monitoring import catalog, state
from cellstudy.records import service as records
from cellstudy.records.formrecord import DataFormRecord
from cellstudy.registry.fields import FieldSpec
from cellstudy.settings import current_study
from tests.helpers import subject_by_number
from tests.pdf.conftest import Pdf

NAME, LABEL = "qol_test", "Quality of life (test-only form)"
SPECS = (
    FieldSpec("qol_date", "Date of the questionnaire", "date", "Questionnaire"),
    FieldSpec("qol_score", "Global health score", "int", "Questionnaire", min=0, max=100),
    FieldSpec("qol_note", "Comment", "text", "Questionnaire"),
)
_classes = itertools.count()


@pytest.fixture
def qol_form(app):
    """The model (its table created in this test's database only, and kept out of the
    metadata that `flask db check` compares) and the one registry declaration."""
    n = next(_classes)
    model = type(
        f"QolTestRecord{n}",
        (DataFormRecord, db.Model),
        {
            "__tablename__": f"qol_test_record_{n}",
            "FORM_NAME": NAME,
            "id": mapped_column(primary_key=True),
            "subject_id": mapped_column(ForeignKey("subject.id")),
            "subject": relationship("Subject"),
            "__annotations__": {"id": Mapped[int], "subject_id": Mapped[int]},
        },
    )
    with app.app_context():
        model.__table__.create(db.engine)

    def records_of(subject):
        return db.session.query(model).filter_by(subject_id=subject.id).order_by(model.id).all()

    form = registry.register(
        registry.FormType(
            NAME,
            LABEL,
            model=model,
            specs=SPECS,
            position=85,
            records_of=records_of,
            title_of=lambda ft, r: f"{ft.label} of {r.data.get('qol_date')}",
            sdv="key",
            sdv_fields=("qol_score",),
            signature=True,
            pdf_key="qol",
            note="Filled in by the subject.",
        )
    )
    yield form
    registry.unregister(NAME)
    db.metadata.remove(model.__table__)


def _record(app, form) -> tuple[int, int]:
    """A completed record of HZ-001, written through the write path (audited)."""
    with app.app_context():
        subject = subject_by_number("HZ-001")
        user = db.session.query(User).filter_by(username="coord-hz").one()
        values = {"qol_date": "2026-11-20", "qol_score": 72, "qol_note": "以后 <b>&"}
        record = form.model(subject_id=subject.id, data=values, status="complete")
        with records.transaction():
            records.create(record, user=user, fields=values)
        return subject.id, record.id


def test_the_catalogue_audit_labels_sdv_and_signatures_know_it(app, login, qol_form):
    sid, rid = _record(app, qol_form)
    assert catalog.get(NAME) is qol_form and NAME in registry.form_types()
    assert labels.form_label(NAME) == LABEL and labels.field_label(NAME, "qol_score") == "Global health score"
    with app.app_context():
        assert state.sdv_plan(NAME) == ("key", ("qol_score",))
        assert (NAME, "key", ("qol_score",)) in current_study().sdv_plan
        assert NAME in current_study().signature_forms
        record = db.session.get(qol_form.model, rid)
        assert state.record_state(NAME, rid)["sdv"] == "not verified"
        assert state.record_state(NAME, rid)["signature_needed"] is True

    monitor = login("monitor-hz")
    page = monitor.get(f"/subjects/{sid}/monitoring").get_data(as_text=True)
    assert f"{LABEL} of 2026-11-20" in page and f'value="{NAME}:{rid}"' in page
    assert LABEL in monitor.get(f"/sdv?form={NAME}").get_data(as_text=True)
    assert LABEL in monitor.get("/dashboards/monitor").get_data(as_text=True)
    # verified through the page, as a monitor does
    response = monitor.post(f"/subjects/{sid}/verify", data={"target": f"{NAME}:{rid}"})
    assert response.status_code == 302
    with app.app_context():
        assert state.record_state(NAME, rid)["sdv"] == "verified"
    # the audit viewer names the form and its fields by their labels
    trail = login("dm").get(f"/audit?form={NAME}").get_data(as_text=True)
    assert LABEL in trail and "Global health score" in trail
    assert record is not None


def test_the_casebook_and_the_pdfs_print_it(app, login, qol_form):
    sid, rid = _record(app, qol_form)
    coordinator = login("coord-hz")
    assert LABEL in coordinator.get("/crfs/blank").get_data(as_text=True)
    blank = coordinator.get("/crfs/blank/qol.pdf")
    assert blank.status_code == 200
    blank_pdf = Pdf(blank.data)
    assert blank_pdf.has(LABEL) and blank_pdf.has("Global health score") and blank_pdf.has("Filled in by the subject.")
    with app.app_context():
        subject = subject_by_number("HZ-001")
        order = [(ft.name, getattr(r, "id", None)) for ft, _log, r in registry.casebook(subject)]
    assert (NAME, rid) in order
    # position 85: after the ICANS assessments (80), before the vaccination log (90)
    names = [n for n, _ in order]
    assert names.index(NAME) > max(i for i, n in enumerate(names) if n in ("adverse_event", "infusion"))
    casebook = login("monitor-hz").get(f"/subjects/{sid}/casebook.pdf")
    assert casebook.status_code == 200
    pdf = Pdf(casebook.data)
    titles = [t for t, _ in pdf.outline()]
    assert f"{LABEL} of 2026-11-20" in titles
    assert titles.index(f"{LABEL} of 2026-11-20") < titles.index(registry.log_label("vaccination"))
    assert pdf.has("Global health score") and pdf.has("以后")
