"""controlled amendments (issue 11)

A study amendment is proposed, approved with an investigator's e-signature (or rejected or
withdrawn) and comes into force on its effective date (a UTC date); every form record keeps
the study-definition version in force at its last save.

Existing rows:
- amendments (applied on the admin's click before this change) become approved and in
  force at their created_at: effective_date = the UTC date of created_at, in_force_at =
  decided_at = created_at, no approver and no signature (there was none); each builds on
  the amendment before it (base_id).
- form records get the version in force at their last save where it can be known: the
  label of the latest amendment created at or before the record's updated_at, else the
  original protocol, "1.0 (original protocol)" (docs/decisions.md, issue 11).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

"""
from datetime import timezone

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ORIGINAL = "1.0 (original protocol)"
#: the tables of every FormRecord model (cellstudy/records/formrecord.py)
FORM_TABLES = ("screening", "exposure", "infusion", "lymphodepletion_day", "visit", "dlt_assessment",
               "adverse_event", "crs_assessment", "icans_assessment")


def upgrade():
    with op.batch_alter_table("study_amendment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("effective_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("base_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("decided_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("decision_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("signature_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("in_force_at", sa.DateTime(timezone=True), nullable=True))

    amendment = sa.table("study_amendment", sa.column("id", sa.Integer()),
                         sa.column("created_at", sa.DateTime(timezone=True)),
                         sa.column("status", sa.String()), sa.column("effective_date", sa.Date()),
                         sa.column("base_id", sa.Integer()), sa.column("decided_at", sa.DateTime(timezone=True)),
                         sa.column("in_force_at", sa.DateTime(timezone=True)))
    connection = op.get_bind()
    previous = None
    for row in connection.execute(sa.select(amendment.c.id, amendment.c.created_at).order_by(amendment.c.id)).all():
        created = row.created_at
        created_utc = created.replace(tzinfo=timezone.utc) if created.tzinfo is None else created.astimezone(timezone.utc)
        connection.execute(amendment.update().where(amendment.c.id == row.id).values(
            status="approved", effective_date=created_utc.date(), base_id=previous, decided_at=created,
            in_force_at=created))
        previous = row.id

    with op.batch_alter_table("study_amendment", schema=None) as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column("effective_date", existing_type=sa.Date(), nullable=False)
        batch_op.create_foreign_key(batch_op.f("fk_study_amendment_base_id_study_amendment"), "study_amendment",
                                    ["base_id"], ["id"])
        batch_op.create_foreign_key(batch_op.f("fk_study_amendment_decided_by_id_user"), "user",
                                    ["decided_by_id"], ["id"])
        batch_op.create_foreign_key(batch_op.f("fk_study_amendment_signature_id_signature"), "signature",
                                    ["signature_id"], ["id"])
        batch_op.create_index("ix_study_amendment_status_effective", ["status", "effective_date"], unique=False)

    for table in FORM_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("study_version", sa.String(length=60), nullable=True))
        # the version in force at the record's last save: the latest amendment created at or
        # before its updated_at (existing amendments came into force when created)
        op.execute(sa.text(
            f"UPDATE {table} SET study_version = COALESCE("
            f"(SELECT a.version FROM study_amendment a WHERE a.created_at <= {table}.updated_at "
            f"ORDER BY a.created_at DESC, a.id DESC LIMIT 1), :original)").bindparams(original=ORIGINAL))


def downgrade():
    # Under the old rule the latest row is in force: an amendment that never came into force
    # (proposed, rejected, withdrawn, approved for a later date) would silently take effect.
    # Nothing is deleted (PROTOCOL 7): the downgrade is refused while there is one.
    waiting = op.get_bind().execute(sa.text("SELECT count(*) FROM study_amendment WHERE in_force_at IS NULL")).scalar()
    if waiting:
        raise RuntimeError(f"{waiting} study amendment(s) never came into force: the schema before 0012 would put "
                           "them in force. Resolve them before downgrading.")
    with op.batch_alter_table("study_amendment", schema=None) as batch_op:
        batch_op.drop_index("ix_study_amendment_status_effective")
        batch_op.drop_constraint(batch_op.f("fk_study_amendment_signature_id_signature"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_study_amendment_decided_by_id_user"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_study_amendment_base_id_study_amendment"), type_="foreignkey")
        batch_op.drop_column("in_force_at")
        batch_op.drop_column("signature_id")
        batch_op.drop_column("decision_reason")
        batch_op.drop_column("decided_by_id")
        batch_op.drop_column("decided_at")
        batch_op.drop_column("base_id")
        batch_op.drop_column("effective_date")
        batch_op.drop_column("status")
    # Not in batch mode: on SQLite a batch drop copies the table, and the copy cannot drop a
    # table other rows refer to (foreign keys are on); ALTER TABLE ... DROP COLUMN (SQLite
    # 3.35+) drops a plain column in place.
    for table in reversed(FORM_TABLES):
        op.drop_column(table, "study_version")
