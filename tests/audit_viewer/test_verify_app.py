"""`flask audit verify` covers every form type (issue 6): each form type's writes are in
the hash chain, and a row altered directly in the database -- past the append-only
triggers, as a database superuser could -- is named by the command.

Runs on SQLite and (with TEST_DATABASE_URL) on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord

#: every form type whose writes the demo study makes (each goes through records.service /
#: audit.append, so each is in the chain)
DEMO_FORMS = (
    "subject",
    "screening",
    "exposure",
    "eligibility_decision",
    "infusion",
    "lymphodepletion",
    "visit",
    "adverse_event",
    "ae_grade_episode",
    "crs_assessment",
    "icans_assessment",
)


def _tamper(record_id: int, column: str, value) -> None:
    """UPDATE one audit row past the triggers that refuse it."""
    conn = db.session.connection()
    if conn.dialect.name == "postgresql":
        # what a superuser with direct database access could do
        conn.exec_driver_sql("ALTER TABLE audit_record DISABLE TRIGGER USER")
        conn.execute(text(f"UPDATE audit_record SET {column} = :v WHERE id = :id"), {"v": value, "id": record_id})
        conn.exec_driver_sql("ALTER TABLE audit_record ENABLE TRIGGER USER")
    else:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_record_no_update")
        conn.execute(text(f"UPDATE audit_record SET {column} = :v WHERE id = :id"), {"v": value, "id": record_id})
    db.session.commit()


def _verify(app):
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    return result.exit_code, result.output


def test_the_triggers_refuse_a_plain_update(app, ctx):
    rid = db.session.execute(select(func.max(AuditRecord.id))).scalar()
    with pytest.raises(DBAPIError):
        db.session.execute(text("UPDATE audit_record SET reason = 'x' WHERE id = :id"), {"id": rid})
        db.session.commit()
    db.session.rollback()


def test_every_form_type_is_in_the_chain_and_the_chain_is_intact(app, ctx):
    forms = set(db.session.execute(select(AuditRecord.form).distinct()).scalars())
    assert set(DEMO_FORMS) <= forms, sorted(set(DEMO_FORMS) - forms)
    code, output = _verify(app)
    total = db.session.execute(select(func.count(AuditRecord.id))).scalar()
    assert code == 0, output
    assert f"{total} records verified" in output


@pytest.mark.parametrize("form", DEMO_FORMS)
def test_verify_names_a_tampered_record_of_each_form_type(app, ctx, form):
    rows = db.session.execute(
        select(AuditRecord.id, AuditRecord.new_value).where(AuditRecord.form == form).order_by(AuditRecord.id)
    ).all()
    target_id, value = rows[len(rows) // 2]
    _tamper(target_id, "new_value", (value or "") + " (altered)")
    code, output = _verify(app)
    assert code == 1
    assert f"AUDIT TRAIL BROKEN at record {target_id}:" in output
    assert "content does not match its hash" in output


def test_verify_names_a_record_whose_time_was_moved(app, ctx):
    target_id = db.session.execute(select(func.min(AuditRecord.id)).where(AuditRecord.form == "visit")).scalar()
    at = db.session.get(AuditRecord, target_id).at
    from datetime import timedelta

    _tamper(target_id, "at", at - timedelta(hours=1))
    code, output = _verify(app)
    assert code == 1 and f"record {target_id}" in output


def test_verify_names_the_record_after_a_deleted_one(app, ctx):
    """A deleted row breaks the next record's link to its predecessor."""
    ids = (
        db.session.execute(select(AuditRecord.id).where(AuditRecord.form == "adverse_event").order_by(AuditRecord.id))
        .scalars()
        .all()
    )
    victim = ids[1]
    following = db.session.execute(select(func.min(AuditRecord.id)).where(AuditRecord.id > victim)).scalar()
    conn = db.session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE audit_record DISABLE TRIGGER USER")
        conn.execute(text("DELETE FROM audit_record WHERE id = :id"), {"id": victim})
        conn.exec_driver_sql("ALTER TABLE audit_record ENABLE TRIGGER USER")
    else:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_record_no_delete")
        conn.execute(text("DELETE FROM audit_record WHERE id = :id"), {"id": victim})
    db.session.commit()
    code, output = _verify(app)
    assert code == 1
    assert f"AUDIT TRAIL BROKEN at record {following}:" in output and "previous-hash link broken" in output
