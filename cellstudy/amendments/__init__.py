"""Study amendments as controlled changes (issue 11): the admin proposes, an investigator
approves with an e-signature, the amendment comes into force on its effective date.
The life cycle is service.py; the pages are routes.py; the definition in force is read by
cellstudy.settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import registry
from ..study import SETTING_LABELS, setting_label

if TYPE_CHECKING:
    from flask import Flask

#: what a reader calls each status (the pages and the audit viewer)
STATUS_LABELS = {
    "proposed": "Awaiting approval",
    "approved": "Approved",
    "rejected": "Rejected",
    "withdrawn": "Withdrawn",
}

# the audit trail names an amendment's settings by their labels and units (study.SETTING_LABELS)
registry.register(
    registry.RecordType(
        "study_amendment",
        "Study amendment",
        fields={
            **{key: (setting_label(key), None) for key in SETTING_LABELS},
            "version": ("Version label", None),
            "effective_date": ("Effective date (UTC)", None),
            "in_force_at": ("In force since (UTC)", None),
            "status": ("Status", STATUS_LABELS),
        },
    )
)


def init_app(app: Flask) -> None:
    """The start-up check (an amendment whose effective date arrived while no process was
    running comes into force now) and, outside tests unless AMENDMENTS_SCHEDULER is set, the
    scheduled run, started with the first request a process serves (so that `flask` commands,
    `flask db upgrade` among them, start no thread)."""
    # at call time: service.py imports STATUS_LABELS from this package's module
    from . import service

    service.check_due(app)
    if app.config.get("AMENDMENTS_SCHEDULER", not app.testing):

        @app.before_request
        def _start_amendment_scheduler():
            if "cellstudy.amendments" not in app.extensions:
                service.start_scheduler(app)
