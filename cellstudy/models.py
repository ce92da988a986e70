"""Imports every model so that Alembic and create_app() see all tables."""
from .auth.models import Site, User, user_site  # noqa: F401
from .enrollment.models import EligibilityDecision, Exposure, Screening, Subject  # noqa: F401
from .records.models import AuditRecord, Query, Signature  # noqa: F401
from .adverse_events.models import (AdverseEvent, CrsAssessment, CtcaeTerm, GradeEpisode,  # noqa: F401
                                    IcansAssessment, LabSuggestionDismissal)
from .infusions.models import (Deviation, DltAssessment, EscalationReview, Infusion,  # noqa: F401
                               LymphodepletionDay, StudyAmendment, Visit)
