"""the ODM import's historical records (issue 15)

What an ODM import cannot redo (an enrolment decision, an e-signature, an infusion already
given) comes in as a historical record marked with the FileOID of the file it came from:
``imported_from`` on signature, eligibility_decision and infusion (NULL: made here).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04

"""

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("signature", "eligibility_decision", "infusion")


def upgrade():
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("imported_from", sa.String(length=120), nullable=True))


def downgrade():
    # Not in batch mode (as 0012): on SQLite a batch drop copies the table, and the copy cannot
    # drop a table other rows refer to (foreign keys are on); ALTER TABLE ... DROP COLUMN
    # (SQLite 3.35+) drops a plain column in place.
    for table in reversed(TABLES):
        op.drop_column(table, "imported_from")
