"""an anchored, keyed audit chain (issue 13)

- audit_record.key_id: which scheme hashed the record. NULL = the plain SHA-256 chain of
  every record written before this change (kept as it is: re-hashing the trail would itself
  be tampering); otherwise the key id (first 16 hex of the SHA-256 of the HMAC key, never
  the key) of the HMAC-SHA256 that hashed it. The first keyed record, "audit_chain_keyed",
  anchors the unkeyed records before it (cellstudy/records/audit.py). A column added in
  place (ALTER TABLE ... ADD COLUMN, no table rebuild), so the append-only triggers of
  0001 stay on the table.
- audit_head: one row, the chain's head (record count, last id, last hash, key id),
  checkpointed in the transaction that appends the records. It starts at the trail as it
  is now. Triggers refuse deleting it and moving it backwards (an administrator can get
  past them, which is why `flask audit checkpoint` exports a signed head).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

"""

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("audit_record", sa.Column("key_id", sa.String(length=16), nullable=True))
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=True),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    connection = op.get_bind()
    count, last_id = connection.execute(sa.text("SELECT count(*), max(id) FROM audit_record")).one()
    last_hash = (
        connection.execute(sa.text("SELECT hash FROM audit_record WHERE id = :id"), {"id": last_id}).scalar()
        if last_id is not None
        else "0" * 64
    )
    connection.execute(
        sa.text(
            "INSERT INTO audit_head (id, record_count, last_id, last_hash, key_id, updated_at)"
            " VALUES (1, :count, :last_id, :last_hash, NULL, CURRENT_TIMESTAMP)"
        ),
        {"count": count, "last_id": last_id, "last_hash": last_hash},
    )
    _forward_only_triggers()


def _forward_only_triggers():
    """The head moves forward only: no DELETE, no UPDATE that lowers the count or the last id."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION audit_head_forward_only() RETURNS trigger AS $$
            BEGIN
              IF TG_OP <> 'UPDATE' THEN
                RAISE EXCEPTION 'audit_head: % refused', TG_OP;
              END IF;
              IF NEW.record_count < OLD.record_count OR NEW.last_id < OLD.last_id OR NEW.id <> OLD.id THEN
                RAISE EXCEPTION 'audit_head moves forward only';
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        op.execute("""CREATE TRIGGER audit_head_forward BEFORE UPDATE OR DELETE ON audit_head
                      FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only()""")
        op.execute("""CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
                      FOR EACH STATEMENT EXECUTE FUNCTION audit_head_forward_only()""")
    else:
        op.execute("""CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
                      BEGIN SELECT RAISE(ABORT, 'audit_head: DELETE refused'); END""")
        op.execute("""CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
                      WHEN NEW.record_count < OLD.record_count OR NEW.last_id < OLD.last_id OR NEW.id <> OLD.id
                      BEGIN SELECT RAISE(ABORT, 'audit_head moves forward only'); END""")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_head_forward ON audit_head")
        op.execute("DROP TRIGGER IF EXISTS audit_head_no_truncate ON audit_head")
        op.execute("DROP FUNCTION IF EXISTS audit_head_forward_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_head_no_delete")
        op.execute("DROP TRIGGER IF EXISTS audit_head_forward")
    op.drop_table("audit_head")
    # SQLite >= 3.35 drops a column in place; the keyed records lose their scheme, which is
    # why a downgrade past 0013 is for a development database only
    op.drop_column("audit_record", "key_id")
