"""The audit trail: complete, append-only in code and database, hash-chained and
verifiable (PROTOCOL 7, issue 2)."""

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from cellstudy.extensions import db
from cellstudy.records import audit
from cellstudy.records.models import AuditRecord
from tests.helpers import new_subject, screening_post


def test_demo_chain_verifies(app):
    with app.app_context():
        result = audit.verify()
        assert result.ok and result.checked == db.session.scalar(select(sa.func.count()).select_from(AuditRecord))
        assert result.checked > 100


def test_every_record_links_to_the_previous_hash(app):
    with app.app_context():
        rows = db.session.execute(select(AuditRecord).order_by(AuditRecord.id)).scalars().all()
        assert rows[0].prev_hash == audit.GENESIS
        assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_record SET new_value = 'forged' WHERE id = 5",
        "DELETE FROM audit_record WHERE id = 5",
    ],
)
def test_the_database_refuses_to_update_or_delete_audit_records(app, statement):
    with app.app_context():
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            db.session.execute(sa.text(statement))
            db.session.flush()
        db.session.rollback()
        assert audit.verify().ok


def _drop_guard():
    """What an attacker with DDL rights would have to do first."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("DROP TRIGGER audit_record_no_update ON audit_record"))
    else:
        db.session.execute(sa.text("DROP TRIGGER audit_record_no_update"))
        db.session.execute(sa.text("DROP TRIGGER audit_record_no_delete"))


@pytest.mark.parametrize(
    "tamper,expected",
    [
        ("UPDATE audit_record SET new_value = 'forged' WHERE id = 7", "record 7: content does not match"),
        ("DELETE FROM audit_record WHERE id = 9", "record 10: previous-hash link broken"),
        ("UPDATE audit_record SET reason = 'backdated' WHERE id = 12", "record 12: content does not match"),
    ],
)
def test_verify_names_the_first_tampered_record(app, tamper, expected):
    with app.app_context():
        _drop_guard()
        db.session.execute(sa.text(tamper))
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert expected in result.output


@pytest.mark.parametrize("keyed", [False, True])
def test_verify_detects_a_rewritten_record_with_a_recomputed_hash(app, keyed):
    """Re-hashed with plain SHA-256 (no key): its own keyed hash no longer matches (and the next
    link). Re-hashed with the app's key: the link of the next record breaks (issue 13)."""
    with app.app_context():
        _drop_guard()
        row = db.session.get(AuditRecord, 20)
        values = {k: getattr(row, k) for k in audit._HASHED}
        values["new_value"] = "forged"
        key = audit.hmac_keys().current if keyed else None
        db.session.execute(
            sa.text("UPDATE audit_record SET new_value='forged', hash=:h WHERE id=20"),
            {"h": audit.chain_hash(row.prev_hash, values, key)},
        )
        db.session.commit()
        result = audit.verify()
        assert not result.ok
        assert [(f.record_id, f.kind) for f in result.findings] == (
            [(21, "link")] if keyed else [(20, "content"), (21, "link")]
        )


def test_each_field_change_is_one_record_with_user_old_new_and_reason(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    s.post(f"/subjects/{sid}/screening", data=screening_post(1, complete=True))
    with app.app_context():
        version = db.session.execute(
            sa.text("SELECT version FROM screening WHERE subject_id = :s"), {"s": sid}
        ).scalar()
        before = db.session.scalar(select(sa.func.max(AuditRecord.id)))
    s.post(f"/subjects/{sid}/screening", data=screening_post(version, {"alt": "39", "ast": "32"}, reason="lab re-run"))
    with app.app_context():
        rows = (
            db.session.execute(select(AuditRecord).where(AuditRecord.id > before).order_by(AuditRecord.id))
            .scalars()
            .all()
        )
        updates = [(r.field, r.old_value, r.new_value, r.reason, r.username) for r in rows if r.action == "update"]
        assert updates == [("alt", "38", "39", "lab re-run", "coord-hz"), ("ast", "31", "32", "lab re-run", "coord-hz")]
        assert all(r.subject_id == sid and r.site_id == 1 and r.form == "screening" for r in rows)
        assert audit.verify().ok


def test_subject_audit_view_shows_who_what_when_why(app, login):
    s = login("coord-hz")
    sid = new_subject(s)
    s.post(f"/subjects/{sid}/screening", data=screening_post(1, complete=True))
    with app.app_context():
        version = db.session.execute(
            sa.text("SELECT version FROM screening WHERE subject_id = :s"), {"s": sid}
        ).scalar()
    s.post(f"/subjects/{sid}/screening", data=screening_post(version, {"qtc_ms": "440"}, reason="ECG repeated"))
    page = login("monitor-hz").get(f"/subjects/{sid}/audit").data.decode()
    assert "ECG repeated" in page and ">432<" in page and ">440<" in page and "coord-hz" in page
    assert login("coord-nb").get(f"/subjects/{sid}/audit").status_code == 404


def test_concurrent_appends_from_several_connections_keep_one_linear_chain(app):
    """Writers in parallel threads (own connections) must not fork the chain: appends
    are serialised (advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    import threading

    errors = []

    def writer(name):
        try:
            with app.app_context():
                for i in range(10):
                    audit.append("test", username=name, field=f"{name}{i}")
                    db.session.commit()
                db.session.remove()
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with app.app_context():
        result = audit.verify()
        assert result.ok, result.problem
        assert (
            db.session.scalar(select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == "test"))
            == 40
        )
