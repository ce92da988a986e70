"""server-side sessions and forced password changes (issue 13)

- user_session: one row per log-in. The session cookie carries a random id; the row keeps
  only its SHA-256 (token_hash), so a copy of the database cannot be replayed as a cookie.
  Log-out, a password change or reset, disabling the account, a role or site change and an
  account lock revoke rows (revoked_at, revoke_reason); the idle limit is judged from
  last_seen_at on the server, not from the cookie.
- user.must_change_password: set by an administrator's password reset; every page leads to
  the change-password page until the user has chosen a new password.

Existing cookies carry no session id: everyone logs in again once after the upgrade.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

"""

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "user_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.String(length=40), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_user_session_user_id_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_session_token_hash")),
    )
    op.create_index(op.f("ix_user_session_user_id"), "user_session", ["user_id"])
    op.add_column("user", sa.Column("must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    op.drop_index(op.f("ix_user_session_user_id"), table_name="user_session")
    op.drop_table("user_session")
    # in place (SQLite >= 3.35 drops a plain column): a batch rebuild of "user" would drop a
    # table that every other table references
    op.drop_column("user", "must_change_password")
