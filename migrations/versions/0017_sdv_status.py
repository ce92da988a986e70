"""the stored SDV status of completed forms (issue 14)

One row per completed form whose type's SDV plan requires fields: the required fields
with a current mark (done), the plan's count (required), verified (done >= required) and
the study definition it was judged under. Kept by the writing transaction
(monitoring/sdv_status.py); the rows of an existing database are computed by
`flask rejudge-sdv` (make run does it), not here: the rule lives in the application code.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05

"""

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sdv_status",
        sa.Column("form", sa.String(length=40), nullable=False),
        sa.Column("form_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("study_version", sa.String(length=60), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_sdv_status_site_id_site")),
        sa.ForeignKeyConstraint(["subject_id"], ["subject.id"], name=op.f("fk_sdv_status_subject_id_subject")),
        sa.PrimaryKeyConstraint("form", "form_id", name=op.f("pk_sdv_status")),
    )
    # plain operations: a new table, nothing refers to it (no batch copy on SQLite)
    op.create_index("ix_sdv_status_site_form", "sdv_status", ["site_id", "form", "verified"], unique=False)
    op.create_index(op.f("ix_sdv_status_subject_id"), "sdv_status", ["subject_id"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_sdv_status_subject_id"), table_name="sdv_status")
    op.drop_index("ix_sdv_status_site_form", table_name="sdv_status")
    op.drop_table("sdv_status")
