"""eligibility reconfirmation (issue 11): the eligibility_review worklist

An enrolled subject whose screening data changes after enrolment (or whose signed
decision an amendment touches) gets an eligibility review: open until the site's
investigator re-confirms eligibility (a new signed eligibility_decision, outcome
"reconfirmed", kept beside the enrolment decision) or records a protocol deviation.
At most one open review per subject and cause (a partial unique index).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "eligibility_review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("cause", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_by_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by_id", sa.Integer(), nullable=True),
        sa.Column("resolution", sa.String(length=20), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("deviation_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["decision_id"], ["eligibility_decision.id"],
                                name=op.f("fk_eligibility_review_decision_id_eligibility_decision")),
        sa.ForeignKeyConstraint(["deviation_id"], ["deviation.id"],
                                name=op.f("fk_eligibility_review_deviation_id_deviation")),
        sa.ForeignKeyConstraint(["opened_by_id"], ["user.id"], name=op.f("fk_eligibility_review_opened_by_id_user")),
        sa.ForeignKeyConstraint(["resolved_by_id"], ["user.id"],
                                name=op.f("fk_eligibility_review_resolved_by_id_user")),
        sa.ForeignKeyConstraint(["subject_id"], ["subject.id"], name=op.f("fk_eligibility_review_subject_id_subject")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eligibility_review")),
    )
    with op.batch_alter_table("eligibility_review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_eligibility_review_subject_id"), ["subject_id"], unique=False)
        batch_op.create_index("ux_eligibility_review_open", ["subject_id", "cause"], unique=True,
                              sqlite_where=sa.text("resolved_at IS NULL"),
                              postgresql_where=sa.text("resolved_at IS NULL"))


def downgrade():
    with op.batch_alter_table("eligibility_review", schema=None) as batch_op:
        batch_op.drop_index("ux_eligibility_review_open")
        batch_op.drop_index(batch_op.f("ix_eligibility_review_subject_id"))
    op.drop_table("eligibility_review")
