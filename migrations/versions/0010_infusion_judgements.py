"""infusion judgements (issue 11)

Every planned infusion's lockouts and stagger are judged again in the transaction that
changes a fact they depend on, and stored (infusion_judgement) so that pages read them.
infusion.override_lockouts keeps which lockouts ({code, reason}) an override covered.
The judgements of existing planned infusions are computed at the first start-up
(`judgement.ensure_judged`), not here: the rules live in the application code.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "infusion_judgement",
        sa.Column("infusion_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("planned_date", sa.Date(), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("lockouts", sa.JSON(), nullable=False),
        sa.Column("study_version", sa.String(length=60), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["infusion_id"], ["infusion.id"], name=op.f("fk_infusion_judgement_infusion_id_infusion")),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_infusion_judgement_site_id_site")),
        sa.ForeignKeyConstraint(["subject_id"], ["subject.id"], name=op.f("fk_infusion_judgement_subject_id_subject")),
        sa.PrimaryKeyConstraint("infusion_id", name=op.f("pk_infusion_judgement")),
    )
    with op.batch_alter_table("infusion_judgement", schema=None) as batch_op:
        batch_op.create_index("ix_infusion_judgement_site_locked", ["site_id", "locked"], unique=False)
        batch_op.create_index(batch_op.f("ix_infusion_judgement_subject_id"), ["subject_id"], unique=False)
    with op.batch_alter_table("infusion", schema=None) as batch_op:
        batch_op.add_column(sa.Column("override_lockouts", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("infusion", schema=None) as batch_op:
        batch_op.drop_column("override_lockouts")
    with op.batch_alter_table("infusion_judgement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_infusion_judgement_subject_id"))
        batch_op.drop_index("ix_infusion_judgement_site_locked")
    op.drop_table("infusion_judgement")
