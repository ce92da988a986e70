"""Who may do what, and where (PROTOCOL 2). The one place that decides it.

Two checks, in this order: the role must hold the permission (else 403), and a
subject-owned record must belong to one of the user's sites (else 404: a record of
another site is not acknowledged to exist)."""

from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user, login_required
from sqlalchemy import select

from .. import registry
from ..extensions import db

# export_safety: the safety listings, summaries and SDTM AE domain as files (issue 4):
# investigators for their sites, monitors for theirs, data managers for all.
# export_casebooks: the PDF casebooks of a whole site as a background job (issue 5), same roles.
# export_audit: the audit trail as CSV, filtered or study-wide (issue 6), same roles.
# view_dashboards: the monitor's dashboard of their sites (data managers: every site, plus
# the data-manager dashboard, which also needs all_sites) (issue 6).
PERMISSIONS: dict[str, frozenset[str]] = {
    "coordinator": frozenset({"view_clinical", "view_audit", "enter_data"}),
    "investigator": frozenset(
        {
            "view_clinical",
            "view_audit",
            "enter_data",
            "sign_eligibility",
            "export_safety",
            "export_casebooks",
            "export_audit",
        }
    ),
    "monitor": frozenset(
        {"view_clinical", "view_audit", "export_safety", "export_casebooks", "export_audit", "view_dashboards"}
    ),
    "data_manager": frozenset(
        {
            "view_clinical",
            "view_audit",
            "all_sites",
            "export_safety",
            "export_casebooks",
            "export_audit",
            "view_dashboards",
        }
    ),
    "admin": frozenset({"manage_users"}),
}

# Queries, SDV, signatures and locks (issue 6, PROTOCOL 2): monitors and data managers raise,
# close, re-open and cancel queries; site staff answer them; only monitors verify against
# source; only investigators sign forms and casebooks; only data managers lock and unlock.
_MONITORING_PERMISSIONS = {
    "coordinator": {"answer_query"},
    "investigator": {"answer_query", "sign_forms"},
    "monitor": {"raise_query", "verify"},
    "data_manager": {"raise_query", "lock"},
}
PERMISSIONS.update({role: PERMISSIONS[role] | perms for role, perms in _MONITORING_PERMISSIONS.items()})

# Study amendments (issue 11, PROTOCOL 2 "admin: study definition"): the admin proposes (and
# withdraws) an amendment; it takes effect only once an investigator approves it with an
# e-signature (any investigator: the study definition is not a site's). Every role may read
# the amendments and their before/after (the definition every page works under).
_AMENDMENT_PERMISSIONS = {
    "admin": {"propose_amendment", "view_amendments"},
    "investigator": {"approve_amendment", "view_amendments"},
    "coordinator": {"view_amendments"},
    "monitor": {"view_amendments"},
    "data_manager": {"view_amendments"},
}
PERMISSIONS.update({role: PERMISSIONS[role] | perms for role, perms in _AMENDMENT_PERMISSIONS.items()})

#: endpoint -> permission, filled by @require (used by docs and the authorisation test)
ENDPOINT_PERMISSIONS: dict[str, str | None] = {}


def can(permission: str, user=None) -> bool:
    user = user or current_user
    return bool(user and user.is_authenticated and permission in PERMISSIONS.get(user.role, ()))


def require(permission: str | None):
    """Login required; with a permission, the role must hold it (403 otherwise)."""

    def decorator(view):
        ENDPOINT_PERMISSIONS[view.__name__] = permission

        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if permission is not None and not can(permission):
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def site_ids(user=None) -> list[int] | None:
    """The sites whose clinical data the user may see; None means every site."""
    user = user or current_user
    if can("all_sites", user):
        return None
    if not can("view_clinical", user):
        return []
    return [site.id for site in user.sites]


def scoped(stmt, site_column):
    """Restrict a select over subject-owned data to the user's sites."""
    ids = site_ids()
    return stmt if ids is None else stmt.where(site_column.in_(ids))


def get_subject_or_404(subject_id: int, *options):
    Subject = registry.model_of("subject")  # declared by enrolment, which builds on this layer
    subject = db.session.execute(
        scoped(select(Subject).where(Subject.id == subject_id).options(*options), Subject.site_id)
    ).scalar_one_or_none()
    if subject is None:
        abort(404)
    return subject


def get_owned_or_404(model, record_id: int, subject):
    """A record that must belong to `subject` (itself already site-checked)."""
    record = db.session.get(model, record_id)
    if record is None or record.subject_id != subject.id:
        abort(404)
    return record


def allowed_sites(user=None):
    """Sites the user may register subjects at / filter by."""
    from .models import Site

    user = user or current_user
    if not can("all_sites", user):
        return list(user.sites) if can("view_clinical", user) else []
    return db.session.execute(select(Site).order_by(Site.code)).scalars().all()
