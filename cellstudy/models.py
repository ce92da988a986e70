"""Imports every model so that Alembic and create_app() see all tables."""
from .auth.models import Site, User, user_site  # noqa: F401
from .enrollment.models import EligibilityDecision, EligibilityReview, Exposure, Screening, Subject  # noqa: F401
from .records.models import AuditRecord, Query, Signature  # noqa: F401
from .adverse_events.models import (AdverseEvent, CrsAssessment, CtcaeTerm, GradeEpisode,  # noqa: F401
                                    IcansAssessment, LabSuggestionDismissal)
from .infusions.models import (Deviation, DltAssessment, EscalationReview, Infusion,  # noqa: F401
                               LymphodepletionDay, Visit)
from .settings.models import StudyAmendment  # noqa: F401
from .jobs.models import Job  # noqa: F401
from .monitoring.models import DataLock, QueryMessage, SdvMark  # noqa: F401
from .dashboards import models as dashboard_indexes  # noqa: F401  (the dashboards' indexes on adverse_event and the CRFs)
