"""Indexes the dashboards' aggregates read (issue 6; created by migration 0009).

They belong to the adverse_event table but serve only the dashboards, so they are declared
here, next to the queries that need them (cellstudy/models.py imports this module, so
Alembic and `flask db check` know them):

- ix_adverse_event_site_status (site_id, status): forms by status per site, read from the
  index alone instead of 100,000 table rows;
- ix_adverse_event_sae_clock, partial (serious AEs only, ~8 % of them), covering the
  report clocks: SAE and SUSAR reports due / overdue per site and the most urgent rows;
- ix_<table>_subject_status (subject_id, status) on the CRF tables with many rows per subject
  (screening, lymphodepletion day, infusion, visit): their rows carry the answers (a JSON
  column), so counting by status through the subject reads these small entries instead.
"""

from sqlalchemy import Index

from ..adverse_events.models import AdverseEvent as AE
from ..enrollment.models import Screening
from ..infusions.models import Infusion, LymphodepletionDay, Visit

SAE_CLOCK_COLUMNS = (
    "site_id",
    "sae_due_at",
    "sae_reported_at",
    "susar",
    "susar_due_at",
    "susar_reported_at",
    "status",
    "awareness_at",
)

ix_adverse_event_site_status = Index("ix_adverse_event_site_status", AE.site_id, AE.status)
ix_adverse_event_sae_clock = Index(
    "ix_adverse_event_sae_clock",
    *(AE.__table__.c[c] for c in SAE_CLOCK_COLUMNS),
    sqlite_where=AE.serious.is_(True),
    postgresql_where=AE.serious.is_(True),
)

STATUS_TABLES = (Screening, LymphodepletionDay, Infusion, Visit)
subject_status_indexes = [Index(f"ix_{m.__tablename__}_subject_status", m.subject_id, m.status) for m in STATUS_TABLES]
