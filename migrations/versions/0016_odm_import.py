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
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("imported_from")
