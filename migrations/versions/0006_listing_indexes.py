"""safety listing indexes (issue 4 speed)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

The AE listing's count and first page at 100,000 AEs (bench/RESULTS.md, "Issue 4"):

- ix_adverse_event_listing_count: every column the listing filters on, so the count
  of a filtered listing reads this index alone (SQLite: forced with INDEXED BY, a
  covering scan; PostgreSQL: an index-only scan), never the table. The onset date
  leads: an onset range narrows it.
- ix_adverse_event_grade_id: "worst grade first" read in index order on SQLite (its
  backward scan is grade DESC NULLS LAST, id DESC: no sort of the AEs of a grade).
- ix_subject_label: the subject label the listing sorts by (subject number, else the
  screening number), so `sort=subject` walks the subjects in order and reads their
  AEs through ix_adverse_event_subject_id instead of sorting every AE.
- PostgreSQL only: the descending sorts put empty values last (`DESC NULLS LAST`),
  which an ascending index read backwards does not give (DESC NULLS FIRST); these two
  indexes serve the default order (onset, newest first) and the worst grade first.
  SQLite needs none (NULLs sort first there, so a backward scan is already DESC NULLS
  LAST; and its CREATE INDEX has no NULLS LAST).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COUNT_COLUMNS = ["onset_date", "status", "site_id", "grade", "serious", "related", "treatment_emergent", "dlt",
                 "subject_id"]


def upgrade():
    op.create_index("ix_adverse_event_listing_count", "adverse_event", COUNT_COLUMNS, unique=False)
    op.create_index("ix_adverse_event_grade_id", "adverse_event", ["grade", "id"], unique=False)
    op.create_index("ix_subject_label", "subject", [sa.text("coalesce(subject_number, screening_number)")],
                    unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_adverse_event_onset_desc", "adverse_event",
                        [sa.text("onset_date DESC NULLS LAST"), sa.text("id DESC")], unique=False)
        op.create_index("ix_adverse_event_grade_desc", "adverse_event",
                        [sa.text("grade DESC NULLS LAST"), sa.text("id DESC")], unique=False)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_adverse_event_grade_desc", table_name="adverse_event")
        op.drop_index("ix_adverse_event_onset_desc", table_name="adverse_event")
    op.drop_index("ix_subject_label", table_name="subject")
    op.drop_index("ix_adverse_event_grade_id", table_name="adverse_event")
    op.drop_index("ix_adverse_event_listing_count", table_name="adverse_event")
