"""The anchored, keyed audit chain (issue 13): every tamper of the issue, done as a database
administrator would (tests/records/audit_tamper.py), is found and named by `flask audit
verify`; the exported signed head catches even an attacker who has the HMAC key."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from cellstudy.extensions import db
from cellstudy.records import audit, audit_keys
from cellstudy.records.models import AuditHead, AuditRecord
from cellstudy.records.transaction import transaction
from tests.records import audit_tamper as tamper


def _verify(app, *args):
    return app.test_cli_runner().invoke(args=["audit", "verify", *args])


def _kinds(result: audit.Verification) -> set[tuple[int | None, str]]:
    return {(f.record_id, f.kind) for f in result.findings}


def _attacker_without_key():
    return tamper.plain_sha256(audit.canonical)


def _attacker_with_key():
    key = audit.hmac_keys().current
    return lambda prev, values: audit.chain_hash(prev, values, key)


@contextmanager
def _admin():
    """The administrator's own connection; the test's session first lets go of its
    transaction (on SQLite it holds the write lock)."""
    db.session.rollback()
    with tamper.past_the_triggers(db.engine) as conn:
        yield conn
    db.session.expire_all()


def _last_id() -> int:
    return db.session.scalar(select(sa.func.max(AuditRecord.id)))


@pytest.fixture
def keys(tmp_path, app):
    """The auditor's Ed25519 pair, made by `flask audit keygen` (outside the instance folder)."""
    result = app.test_cli_runner().invoke(args=["audit", "keygen", "--out", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    return tmp_path / "keys"


def _checkpoint(app, keys, path) -> dict:
    result = app.test_cli_runner().invoke(
        args=["audit", "checkpoint", "-o", str(path), "--signing-key", str(keys / "audit-signing.pem")]
    )
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())


# --- the chain as the app writes it ----------------------------------------------------------


def test_the_first_keyed_record_anchors_the_chain_and_the_head_follows_every_commit(app):
    with app.app_context():
        first = db.session.get(AuditRecord, 1)
        kid = audit.hmac_keys().current_id
        assert (first.action, first.new_value, first.key_id) == (audit.ANCHOR, kid, kid)
        assert kid == audit_keys.key_id(bytes.fromhex(app.config["AUDIT_KEY"])) and len(kid) == 16
        assert app.config["AUDIT_KEY"] not in {r.new_value for r in db.session.scalars(select(AuditRecord))}
        with transaction():
            audit.append("test", username="t", field="a")
            audit.append("test", username="t", field="b")
        head = db.session.get(AuditHead, 1)
        top = db.session.get(AuditRecord, _last_id())
        count = db.session.scalar(select(sa.func.count()).select_from(AuditRecord))
        assert (head.record_count, head.last_id, head.last_hash, head.key_id) == (count, top.id, top.hash, kid)
        assert count == top.id  # ids follow the head: no gaps
        result = audit.verify()
        assert result.ok and result.keyed == count, result.findings


def test_a_rollback_moves_neither_the_trail_nor_the_head(app):
    with app.app_context():
        before = db.session.get(AuditHead, 1).record_count
        with pytest.raises(RuntimeError):
            with transaction():
                audit.append("test", username="t")
                raise RuntimeError("refused")
        db.session.expire_all()
        assert db.session.get(AuditHead, 1).record_count == before
        with transaction():
            audit.append("test", username="t")
        assert audit.verify().ok


def test_the_database_refuses_to_delete_the_head_or_move_it_back(app):
    with app.app_context():
        for statement in ("DELETE FROM audit_head", "UPDATE audit_head SET record_count = record_count - 1"):
            with pytest.raises(sa.exc.DatabaseError, match="audit_head"):
                with transaction():
                    db.session.execute(sa.text(statement))


def test_a_legacy_unkeyed_trail_is_kept_and_anchored_by_the_first_keyed_record(app):
    """Records written before issue 13 (plain SHA-256, key_id NULL) keep their hashes; the
    first keyed record chains onto the last of them."""
    with app.app_context():
        with _admin() as conn:  # a trail as the code before issue 13 wrote it
            conn.exec_driver_sql("DELETE FROM audit_record")
            conn.exec_driver_sql("DELETE FROM audit_head")
            prev = audit.GENESIS
            for n in range(1, 4):
                values = audit._system_record("legacy", audit.utcnow(), new=str(n))
                digest = audit.chain_hash(prev, values)
                conn.execute(sa.insert(AuditRecord), [{**values, "id": n, "prev_hash": prev, "hash": digest}])
                prev = digest
        db.session.expire_all()
        with transaction():
            audit.append("test", username="t")
        rows = db.session.scalars(select(AuditRecord).order_by(AuditRecord.id)).all()
        assert [(r.action, r.key_id is None) for r in rows] == [
            ("legacy", True),
            ("legacy", True),
            ("legacy", True),
            (audit.ANCHOR, False),
            ("test", False),
        ]
        assert rows[3].prev_hash == rows[2].hash and "anchors the 3 before it" in rows[3].reason
        assert audit.verify().ok


def test_a_new_key_is_announced_in_the_chain_and_old_records_verify_with_the_retired_key(app):
    with app.app_context():
        old = app.config["AUDIT_KEY"]
        new = audit_keys.new_hmac_key()
        app.config.update(AUDIT_KEY=new, AUDIT_RETIRED_KEYS=old)
        app.extensions.pop(audit._KEYS, None)
        with transaction():
            audit.append("test", username="t")
        rotation = db.session.get(AuditRecord, _last_id() - 1)
        assert rotation.action == audit.ROTATION
        assert (rotation.old_value, rotation.new_value) == (audit_keys.key_id(bytes.fromhex(old)), rotation.key_id)
        assert audit.verify().ok
        app.config.update(AUDIT_RETIRED_KEYS=None)  # the old key lost: its records cannot be checked
        app.extensions.pop(audit._KEYS, None)
        result = audit.verify()
        assert not result.ok and result.findings[0].kind == "key" and "is not configured" in result.problem


def test_no_key_refuses_to_write_and_a_key_file_in_the_instance_folder_is_refused(app, tmp_path):
    with app.app_context():
        app.config.update(AUDIT_KEY=None, AUDIT_KEY_FILE=None, AUDIT_DEV_KEY_FILE=None)
        app.extensions.pop(audit._KEYS, None)
        with pytest.raises(audit_keys.AuditKeyError, match="CELLSTUDY_AUDIT_KEY"):
            with transaction():
                audit.append("test", username="t")
        inside = f"{app.instance_path}/audit.key"
        app.config.update(AUDIT_KEY_FILE=inside)
        app.extensions.pop(audit._KEYS, None)
        with pytest.raises(audit_keys.AuditKeyError, match="outside the instance folder"):
            audit.hmac_keys()
        app.config.update(AUDIT_KEY_FILE=None, AUDIT_DEV_KEY_FILE=str(tmp_path / "cfg" / "audit.key"))
        app.extensions.pop(audit._KEYS, None)
        kid = audit.hmac_keys().current_id  # development: generated once, 0600, then reused
        assert (tmp_path / "cfg" / "audit.key").stat().st_mode & 0o777 == 0o600
        app.extensions.pop(audit._KEYS, None)
        assert audit.hmac_keys().current_id == kid


@pytest.mark.parametrize("text", ["nothex", "ab" * 8, "base64:!!"])
def test_a_bad_key_is_refused_with_a_message_naming_it(text):
    with pytest.raises(audit_keys.AuditKeyError, match="CELLSTUDY_AUDIT_KEY"):
        audit_keys.load_hmac_keys(key=text, key_file=None)


# --- the tampering of the issue: each found and named ---------------------------------------


def test_deleting_the_last_record_is_truncation(app):
    with app.app_context():
        top = _last_id()
        with _admin() as conn:
            tamper.delete_last(conn, 1)
    result = _verify(app)
    assert result.exit_code == 1
    assert f"[head]: audit_head records {top} records ending at id {top}" in result.output
    assert f"records after id {top - 1} were deleted (truncation)" in result.output


def test_deleting_the_last_25_records_is_truncation(app):
    with app.app_context():
        top = _last_id()
        with _admin() as conn:
            tamper.delete_last(conn, 25)
        result = audit.verify()
    assert _kinds(result) == {(top - 25, "head")}
    assert f"records after id {top - 25} were deleted (truncation)" in result.problem


@pytest.mark.parametrize("cover", [False, True], ids=["head-left", "head-moved"])
def test_a_forged_append_with_a_recomputed_sha256_is_refused(app, cover):
    with app.app_context():
        with _admin() as conn:
            forged = tamper.forged_append(conn, _attacker_without_key())
            if cover:
                tamper.cover_the_head(conn)
        result = audit.verify()
    expected = {(forged, "unkeyed")} | (set() if cover else {(forged, "head")})
    assert _kinds(result) == expected
    assert f"record {forged}: a plain SHA-256 record after the keyed chain began" in result.problem


def test_a_forged_append_claiming_the_key_fails_its_hmac(app):
    with app.app_context():
        kid = audit.hmac_keys().current_id
        with _admin() as conn:
            forged = tamper.forged_append(conn, _attacker_without_key(), key_id=kid)
            tamper.cover_the_head(conn)
    result = _verify(app)
    assert result.exit_code == 1
    assert f"record {forged} [content]: record {forged}: content does not match its hash (HMAC-SHA256" in result.output


def test_rewriting_a_middle_record_and_rechaining_everything_after_it(app):
    with app.app_context():
        top = _last_id()
        with _admin() as conn:
            tamper.rewrite_middle_and_rechain(conn, _attacker_without_key(), 300)
            tamper.cover_the_head(conn)
        result = audit.verify(limit=5)
    assert result.first_bad_id == 300 and result.findings[0].kind == "content"
    assert result.total == top - 300 + 1  # every re-chained record fails its HMAC
    assert {f.kind for f in result.findings} == {"content"}


def test_deleting_a_middle_record_and_rechaining(app):
    with app.app_context():
        with _admin() as conn:
            tamper.delete_middle_and_rechain(conn, _attacker_without_key(), 300)
            tamper.cover_the_head(conn)
    result = _verify(app)
    assert result.exit_code == 1
    assert "record 301 [gap]: record 301: ids 300..300 are missing (records deleted)" in result.output
    assert "record 301 [content]: record 301: content does not match its hash (HMAC-SHA256" in result.output


def test_the_signed_head_catches_an_attacker_with_the_hmac_key(app, keys, tmp_path):
    """The strongest attacker: the database, the app's HMAC key, and audit_head rewritten too.
    `flask audit verify` alone cannot tell; the auditor's exported head can."""
    head = _checkpoint(app, keys, tmp_path / "head.json")
    with app.app_context():
        with _admin() as conn:
            tamper.rewrite_middle_and_rechain(conn, _attacker_with_key(), 2)
            tamper.cover_the_head(conn)
    assert _verify(app).exit_code == 0  # the trail is self-consistent now
    public = str(keys / "audit-signing.pub.pem")
    result = _verify(app, "--head", str(tmp_path / "head.json"), "--public-key", public)
    assert result.exit_code == 1
    assert f"record {head['last_id']} [signed_head]: record {head['last_id']}: its hash" in result.output
    assert "the trail was rewritten up to it" in result.output


def test_the_signed_head_catches_truncation_with_the_key_and_the_head_rewritten(app, keys, tmp_path):
    head = _checkpoint(app, keys, tmp_path / "head.json")
    with app.app_context():
        with _admin() as conn:
            tamper.delete_last(conn, 25)
            tamper.cover_the_head(conn)
    public = str(keys / "audit-signing.pub.pem")
    result = _verify(app, "--head", str(tmp_path / "head.json"), "--public-key", public)
    assert result.exit_code == 1
    assert f"record {head['last_id']} is missing" in result.output and "(truncation)" in result.output


def test_a_later_trail_still_matches_an_earlier_signed_head(app, keys, tmp_path):
    _checkpoint(app, keys, tmp_path / "head.json")
    with app.app_context():
        with transaction():
            audit.append("test", username="t")
    public = str(keys / "audit-signing.pub.pem")
    result = _verify(app, "--head", str(tmp_path / "head.json"), "--public-key", public)
    assert result.exit_code == 0, result.output
    assert "and the signed head of" in result.output


def test_a_signed_head_is_checked_with_the_public_key_alone(app, keys, tmp_path):
    head = _checkpoint(app, keys, tmp_path / "head.json")
    public = (keys / "audit-signing.pub.pem").read_bytes()
    assert audit_keys.verify_signed_head(head, public)["count"] == head["count"]
    assert set(head) >= {"count", "last_id", "last_hash", "at", "key_id", "signature", "public_key_fingerprint"}
    for forged in ({**head, "count": head["count"] + 1}, {**head, "last_hash": "0" * 64}):
        with pytest.raises(audit_keys.BadHead, match="signature does not match"):
            audit_keys.verify_signed_head(forged, public)
    other = tmp_path / "other"
    audit_keys.generate_signing_key(other / "k.pem", other / "k.pub.pem")
    with pytest.raises(audit_keys.BadHead, match="another key"):
        audit_keys.verify_signed_head(head, (other / "k.pub.pem").read_bytes())
    (tmp_path / "edited.json").write_text(json.dumps({**head, "count": 1}))
    result = _verify(app, "--head", str(tmp_path / "edited.json"), "--public-key", str(keys / "audit-signing.pub.pem"))
    assert result.exit_code == 1 and "SIGNED HEAD REFUSED" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--head", "missing.json"], "--head and --public-key go together"),
        (["--head", "/nonexistent/h.json", "--public-key", "/nonexistent/k.pem"], "No such file"),
    ],
)
def test_verify_names_a_bad_head_argument(app, args, message):
    result = _verify(app, *args)
    assert result.exit_code != 0 and message in result.output


def test_checkpoint_refuses_to_sign_a_broken_trail(app, keys, tmp_path):
    with app.app_context():
        with _admin() as conn:
            tamper.delete_last(conn, 1)
    result = app.test_cli_runner().invoke(
        args=["audit", "checkpoint", "-o", str(tmp_path / "h.json"), "--signing-key", str(keys / "audit-signing.pem")]
    )
    assert result.exit_code == 1 and "Not signed" in result.output and not (tmp_path / "h.json").exists()


# --- replay: the clinical tables against the trail --------------------------------------------


def test_replay_of_the_demo_study_matches(app):
    result = _verify(app, "--replay")
    assert result.exit_code == 0, result.output
    assert "clinical rows match the trail" in result.output


def test_replay_names_a_value_changed_in_the_database_without_an_audit_record(app):
    with app.app_context():
        row = db.session.execute(sa.text("SELECT id, name FROM exposure ORDER BY id LIMIT 1")).one()
        with _admin() as conn:
            conn.execute(sa.text("UPDATE exposure SET name = 'forged' WHERE id = :id"), {"id": row.id})
    assert _verify(app).exit_code == 0  # the chain itself is intact
    result = _verify(app, "--replay")
    assert result.exit_code == 1
    assert f"exposure row {row.id} (exposure), field name: stored 'forged', the audit trail says {row.name!r}" in (
        result.output
    )


def test_replay_names_a_crf_answer_changed_in_its_json_data(app):
    with app.app_context():
        sid, data = db.session.execute(sa.text("SELECT id, data FROM screening ORDER BY id LIMIT 1")).one()
        data = json.loads(data) if isinstance(data, str) else data
        name = sorted(data)[0]
        data[name] = "forged"
        with _admin() as conn:
            conn.execute(sa.text("UPDATE screening SET data = :d WHERE id = :id"), {"d": json.dumps(data), "id": sid})
        replayed = audit.replay()
    assert not replayed.ok
    assert any(
        f"screening row {sid} (screening), field {name}: stored 'forged'" in f.message for f in replayed.findings
    )


_KILLED_WRITER = """
import sys, time
from sqlalchemy import event
from sqlalchemy.engine import Engine
from cellstudy import create_app
from cellstudy.records import audit
from cellstudy.records.transaction import transaction

app = create_app("test", {"SQLALCHEMY_DATABASE_URI": sys.argv[1]})


@event.listens_for(Engine, "commit")
def hang(conn):  # the records and the head are written; the COMMIT is not sent yet
    print("in-commit", flush=True)
    time.sleep(120)


with app.app_context():
    with transaction():
        for _ in range(5):
            audit.append("test", username="killed")
"""


def test_a_writer_killed_in_its_commit_leaves_the_trail_and_the_head_as_they_were(app, db_url):
    """SIGKILL between writing the records and the head and the COMMIT: both or neither."""
    import os
    import signal
    import subprocess
    import sys

    with app.app_context():
        before = db.session.get(AuditHead, 1).record_count
        db.session.rollback()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, db_url], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "in-commit"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    with app.app_context():
        assert db.session.get(AuditHead, 1).record_count == before
        assert not db.session.scalar(select(sa.func.count()).where(AuditRecord.username == "killed"))
        with transaction():  # the lock died with the writer
            audit.append("test", username="after")
        assert audit.verify().ok
        assert db.session.get(AuditHead, 1).record_count == before + 1
