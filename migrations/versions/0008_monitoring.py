"""queries, SDV, signatures and locking (issue 6)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    # Query: assignee, answered state, last activity, the edit check of a system query.
    with op.batch_alter_table("query", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assignee_role", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("assignee_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("answered_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rule", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_query_assignee_id_user"), "user", ["assignee_id"], ["id"])
        batch_op.create_foreign_key(batch_op.f("fk_query_answered_by_id_user"), "user", ["answered_by_id"], ["id"])

    op.create_table(
        "query_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["query_id"], ["query.id"], name=op.f("fk_query_message_query_id_query")),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_query_message_user_id_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_query_message")),
    )
    op.create_index(op.f("ix_query_message_query_id"), "query_message", ["query_id"], unique=False)

    op.create_table(
        "sdv_mark",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("form", sa.String(length=40), nullable=False),
        sa.Column("form_id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("form_version", sa.Integer(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_by_id", sa.Integer(), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleared_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_sdv_mark_site_id_site")),
        sa.ForeignKeyConstraint(["subject_id"], ["subject.id"], name=op.f("fk_sdv_mark_subject_id_subject")),
        sa.ForeignKeyConstraint(["verified_by_id"], ["user.id"], name=op.f("fk_sdv_mark_verified_by_id_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sdv_mark")),
    )
    op.create_index("ix_sdv_mark_form", "sdv_mark", ["form", "form_id", "cleared_at"], unique=False)
    op.create_index(op.f("ix_sdv_mark_subject_id"), "sdv_mark", ["subject_id"], unique=False)

    op.create_table(
        "data_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("form", sa.String(length=40), nullable=True),
        sa.Column("form_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_by_id", sa.Integer(), nullable=False),
        sa.Column("unlocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unlocked_by_id", sa.Integer(), nullable=True),
        sa.Column("unlock_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_data_lock_site_id_site")),
        sa.ForeignKeyConstraint(["subject_id"], ["subject.id"], name=op.f("fk_data_lock_subject_id_subject")),
        sa.ForeignKeyConstraint(["locked_by_id"], ["user.id"], name=op.f("fk_data_lock_locked_by_id_user")),
        sa.ForeignKeyConstraint(["unlocked_by_id"], ["user.id"], name=op.f("fk_data_lock_unlocked_by_id_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_lock")),
    )
    op.create_index("ix_data_lock_form", "data_lock", ["form", "form_id"], unique=False)
    op.create_index("ix_data_lock_scope", "data_lock", ["scope", "unlocked_at"], unique=False)
    op.create_index(op.f("ix_data_lock_subject_id"), "data_lock", ["subject_id"], unique=False)


def downgrade():
    op.drop_table("data_lock")
    op.drop_table("sdv_mark")
    op.drop_table("query_message")
    with op.batch_alter_table("query", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_query_answered_by_id_user"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_query_assignee_id_user"), type_="foreignkey")
        for name in ("rule", "updated_at", "answered_by_id", "answered_at", "assignee_id", "assignee_role"):
            batch_op.drop_column(name)
