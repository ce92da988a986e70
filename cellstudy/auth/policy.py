"""Who may do what, and where (PROTOCOL 2). The one place that decides it.

Two checks, in this order: the role must hold the permission (else 403), and a
subject-owned record must belong to one of the user's sites (else 404: a record of
another site is not acknowledged to exist)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, Final, TypeVar

from flask import abort
from flask_login import current_user, login_required
from sqlalchemy import BindParameter, false, select, true

from .. import registry
from ..extensions import db
from .models import Site

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Select
    from sqlalchemy.orm import ORMOption

    from .models import User

View = TypeVar("View", bound=Callable[..., Any])
Stmt = TypeVar("Stmt", bound="Select")

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


def can(permission: str, user: User | None = None) -> bool:
    user = user or current_user
    return bool(user and user.is_authenticated and permission in PERMISSIONS.get(user.role, ()))


def require(permission: str | None) -> Callable[[View], View]:
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


class _AllSites:
    """The scope of a user who sees every site (data managers, admins): a value of its own,
    so that "every site" is always said, never implied by a missing argument."""

    _instance: _AllSites | None = None

    def __new__(cls) -> _AllSites:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_SITES"


ALL_SITES: Final = _AllSites()

#: The sites a caller may see: a list of site ids (possibly empty: none), or ALL_SITES.
Sites = list[int] | _AllSites


def user_sites(user: User | None = None) -> Sites:
    """The sites whose clinical data the user may see."""
    user = user or current_user
    if can("all_sites", user):
        return ALL_SITES
    if not can("view_clinical", user):
        return []
    return [site.id for site in user.sites]


def covers(sites: Sites, site_id: int | None) -> bool:
    """Whether a scope includes one site (a row of that site may be shown)."""
    return sites is ALL_SITES or site_id in sites


def within(site_column: ColumnElement[Any], sites: Sites | BindParameter) -> ColumnElement[bool]:
    """The SQL condition "this row's site is in scope": the one place a query is restricted to
    sites. `sites` is a scope, or an expanding bound parameter of a statement built once (the
    caller then binds a list). An empty scope matches nothing."""
    if isinstance(sites, BindParameter):
        return site_column.in_(sites)
    if sites is ALL_SITES:
        return true()
    if not isinstance(sites, list | tuple | set | frozenset):
        raise TypeError(f"sites must be a list of site ids or ALL_SITES, not {sites!r}")
    ids = sorted(set(sites))
    if not ids:
        return false()
    return site_column == ids[0] if len(ids) == 1 else site_column.in_(ids)


def scoped(stmt: Stmt, site_column: ColumnElement[Any], sites: Sites) -> Stmt:
    """Restrict a select over subject-owned data to a scope (required: pass `user_sites()`
    for the signed-in user, `user_sites(job.created_by)` in a job, ALL_SITES for the system)."""
    if sites is ALL_SITES:
        return stmt
    return stmt.where(within(site_column, sites))


def get_subject_or_404(subject_id: int, *options: ORMOption) -> Any:
    Subject = registry.model_of("subject")  # declared by enrolment, which builds on this layer
    subject = db.session.execute(
        scoped(select(Subject).where(Subject.id == subject_id).options(*options), Subject.site_id, user_sites())
    ).scalar_one_or_none()
    if subject is None:
        abort(404)
    return subject


def get_owned_or_404(model: type[Any], record_id: int, subject: Any) -> Any:
    """A record that must belong to `subject` (itself already site-checked)."""
    record = db.session.get(model, record_id)
    if record is None or record.subject_id != subject.id:
        abort(404)
    return record


def allowed_sites(user: User | None = None) -> Sequence[Site]:
    """Sites the user may register subjects at / filter by."""
    user = user or current_user
    if not can("all_sites", user):
        return list(user.sites) if can("view_clinical", user) else []
    return sites_of(ALL_SITES)


def sites_of(sites: Sites) -> Sequence[Site]:
    """The Site rows of a scope, by code."""
    return db.session.execute(scoped(select(Site).order_by(Site.code), Site.id, sites)).scalars().all()
