"""Monitoring's answers to the write path's questions (records.hooks.WritePathHooks): the
locks, the query links of a correction, SDV clearing and casebook-signature invalidation.
Served when the monitoring package loads, so every write of the app asks them."""

from __future__ import annotations

from ..records import hooks
from . import service, state


class MonitoringHooks(hooks.WritePathHooks):
    def check_writable(self, record) -> None:
        service.check_writable(record)

    def lock_in_force(self, record, subject):
        return state.lock_in_force(service.form_of(record), getattr(record, "id", None), getattr(subject, "id", None))

    def link_queries(self, record, changed: dict, reason: str | None):
        return service.link_queries(record, changed, reason)

    def after_write(
        self, record, *, user, changed: dict, reason: str | None, created: bool = False, answered: list = ()
    ) -> None:
        service.after_write(record, user=user, changed=changed, reason=reason, created=created, answered=answered)

    def after_status(self, record, *, user, reason: str | None) -> None:
        service.after_status(record, user=user, reason=reason)


hooks.serve_write_path(MonitoringHooks())
