"""audit trail viewer indexes and dashboards (issue 6)

The viewer filters the audit trail by site, form type, user, action and date and pages
it by id (keyset): one index per filter, ending in id. The dashboards add no table but
indexes (cellstudy/dashboards/models.py): on adverse_event forms by status per site and a
partial covering index of the serious AEs' report clocks; (subject_id, status) on the CRF
tables with many rows per subject.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_audit_record_site", ["site_id", "id"]),
    ("ix_audit_record_form_type", ["form", "id"]),
    # form type and action together (e.g. "visits changed"): PostgreSQL's planner would
    # otherwise walk the whole trail backwards by id, the newest records being of other forms
    ("ix_audit_record_form_action", ["form", "action", "id"]),
    ("ix_audit_record_username", ["username", "id"]),
    ("ix_audit_record_action", ["action", "id"]),
    ("ix_audit_record_at", ["at"]),
)


STATUS_TABLES = ("screening", "lymphodepletion_day", "infusion", "visit")
SAE_CLOCK_COLUMNS = ["site_id", "sae_due_at", "sae_reported_at", "susar", "susar_due_at", "susar_reported_at",
                     "status", "awareness_at"]


def upgrade():
    for name, columns in INDEXES:
        op.create_index(name, "audit_record", columns)
    op.create_index("ix_adverse_event_site_status", "adverse_event", ["site_id", "status"])
    serious = sa.text("serious IS true") if op.get_bind().dialect.name == "postgresql" else sa.text("serious IS 1")
    op.create_index("ix_adverse_event_sae_clock", "adverse_event", SAE_CLOCK_COLUMNS,
                    sqlite_where=serious, postgresql_where=serious)
    for table in STATUS_TABLES:
        op.create_index(f"ix_{table}_subject_status", table, ["subject_id", "status"])


def downgrade():
    for table in reversed(STATUS_TABLES):
        op.drop_index(f"ix_{table}_subject_status", table_name=table)
    op.drop_index("ix_adverse_event_sae_clock", table_name="adverse_event")
    op.drop_index("ix_adverse_event_site_status", table_name="adverse_event")
    for name, _columns in reversed(INDEXES):
        op.drop_index(name, table_name="audit_record")
