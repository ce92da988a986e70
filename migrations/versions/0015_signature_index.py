"""an index of signatures by the form they sign (issue 14)

ix_signature_form (form, form_id, valid): the monitoring state of a record and the
signatures list look a form's signatures up by (form, form_id). Without it PostgreSQL
answered the signatures list with a scan of the signature table per form once signatures
had been invalidated (1.3 s a page at 2,000 subjects).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("signature") as batch_op:
        batch_op.create_index("ix_signature_form", ["form", "form_id", "valid"], unique=False)


def downgrade():
    with op.batch_alter_table("signature") as batch_op:
        batch_op.drop_index("ix_signature_form")
