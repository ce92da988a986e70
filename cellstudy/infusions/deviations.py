"""Protocol deviations (PROTOCOL 5.2, 5.3): recorded, with their audit, by the treatment
services and by other features (issue 11: enrollment/reconfirm.py); listed across sites."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import contains_eager, joinedload

from ..auth.policy import Sites, scoped
from ..enrollment.models import Subject
from ..extensions import db
from ..records import service as records
from ..timeutil import utcnow
from .models import Deviation

if TYPE_CHECKING:
    from ..auth.models import User
    from ..records.models import Signature


def record_deviation(
    subject: Subject,
    *,
    kind: str,
    description: str,
    reason: str,
    user: User,
    form: str | None = None,
    form_id: int | None = None,
    signature: Signature | None = None,
) -> Deviation:
    """A protocol deviation: the row and its audit; not committed."""
    deviation = Deviation(
        subject_id=subject.id,
        kind=kind,
        description=description,
        reason=reason,
        form=form,
        form_id=form_id,
        signature_id=signature.id if signature else None,
        created_by_id=user.id,
        created_at=utcnow(),
    )
    records.create(
        deviation, user=user, form="deviation", fields={"kind": kind, "description": description, "reason": reason}
    )
    return deviation


def deviations(sites: Sites) -> list[Deviation]:
    stmt = (
        select(Deviation)
        .join(Subject)
        .order_by(Deviation.id.desc())
        .options(contains_eager(Deviation.subject).joinedload(Subject.site), joinedload(Deviation.signature))
    )
    stmt = scoped(stmt, Subject.site_id, sites)
    return db.session.execute(stmt).scalars().all()
