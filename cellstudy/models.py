"""Imports every model so that Alembic and create_app() see all tables."""
# ruff: noqa: F401  (imported to be mapped, not used here)

from .auth.models import Site, User, user_site
from .enrollment.models import EligibilityDecision, EligibilityReview, Exposure, Screening, Subject
from .records.models import AuditRecord, Query, Signature
from .adverse_events.models import (
    AdverseEvent,
    CrsAssessment,
    CtcaeTerm,
    GradeEpisode,
    IcansAssessment,
    LabSuggestionDismissal,
)
from .infusions.models import (
    Deviation,
    DltAssessment,
    EscalationReview,
    Infusion,
    LymphodepletionDay,
    Visit,
)
from .settings.models import StudyAmendment
from .jobs.models import Job
from .monitoring.models import DataLock, QueryMessage, SdvMark, SdvStatus
from .dashboards import models as dashboard_indexes  # the dashboards' indexes on adverse_event and the CRFs
