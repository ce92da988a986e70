"""Log-in attempts, account locks and user administration (issue 2)."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..records import audit
from ..records.transaction import transaction
from ..timeutil import as_utc, utcnow
from .models import ROLES, Site, User
from .passwords import check_password, hash_password


class AuthError(Exception):
    pass


def is_locked(user: User) -> bool:
    return user.locked_until is not None and as_utc(user.locked_until) > utcnow()


def _register_failure(user: User) -> None:
    user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= current_app.config["LOGIN_MAX_FAILURES"]:
        minutes = current_app.config["LOGIN_LOCK_MINUTES"]
        user.locked_until = utcnow() + timedelta(minutes=minutes)
        user.failed_logins = 0
        audit.append(
            "account_locked",
            user=user,
            field="locked_until",
            new=user.locked_until,
            reason=f"{current_app.config['LOGIN_MAX_FAILURES']} failed password attempts; locked for {minutes} minutes",
        )


def authenticate(username: str, password: str) -> User:
    """The user, or AuthError with a message that does not reveal which part was wrong."""
    user = db.session.execute(select(User).where(User.username == username.strip())).scalar_one_or_none()
    generic = "Unknown user name or wrong password."
    if user is None:
        raise AuthError(generic)
    if is_locked(user):
        raise AuthError(
            "This account is locked after repeated failed log-ins. Try again later or ask an administrator."
        )
    if not check_password(user.password_hash, password):
        with transaction():
            _register_failure(user)
        if is_locked(user):
            raise AuthError(
                "Too many failed log-ins: this account is locked for "
                f"{current_app.config['LOGIN_LOCK_MINUTES']} minutes."
            )
        raise AuthError(generic)
    if not user.active:
        raise AuthError("This account is disabled.")
    if user.failed_logins:
        with transaction():
            user.failed_logins = 0
    return user


def signature_refusal(user: User, password: str) -> str | None:
    """None when the signer's password is accepted (no write), else why not."""
    if is_locked(user) or not user.active:
        return "Your account is locked or disabled: the signature was not applied."
    if check_password(user.password_hash, password or ""):
        return None
    return "Password not accepted: the signature was not applied."


def register_signature_failure(user: User) -> str:
    """Signing counts like a log-in: a wrong password moves toward the account lock.
    Returns the message for the signer."""
    if is_locked(user) or not user.active:
        return "Your account is locked or disabled: the signature was not applied."
    _register_failure(user)
    if is_locked(user):
        return (
            "Too many wrong passwords: your account is now locked for "
            f"{current_app.config['LOGIN_LOCK_MINUTES']} minutes and you will be logged out."
        )
    left = current_app.config["LOGIN_MAX_FAILURES"] - user.failed_logins
    return (
        f"Password not accepted: the signature was not applied. {left} more wrong "
        f"password{'s' if left != 1 else ''} will lock your account."
    )


def get_user(username: str) -> User:
    user = db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise AuthError(f"No user named {username!r}.")
    return user


@transaction()
def create_user(
    username: str, full_name: str, role: str, password: str, sites: list[str] = (), actor: User | None = None
) -> User:
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")
    if len(password) < 12:
        raise AuthError("Password: at least 12 characters.")
    if db.session.execute(select(User.id).where(User.username == username)).first():
        raise AuthError(f"User name {username!r} is taken.")
    user = User(username=username, full_name=full_name, role=role, password_hash=hash_password(password))
    user.sites = [get_site(code) for code in sites]
    db.session.add(user)
    db.session.flush()
    audit.append(
        "user_create",
        user=actor,
        form="user",
        form_id=user.id,
        field="role",
        new=role,
        reason=f"sites: {', '.join(sites) or 'none'}",
    )
    return user


@transaction()
def set_role(username: str, role: str, actor: User | None = None) -> User:
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")
    user = get_user(username)
    audit.append("user_role", user=actor, form="user", form_id=user.id, field="role", old=user.role, new=role)
    user.role = role
    return user


@transaction()
def assign_site(username: str, code: str, actor: User | None = None, remove: bool = False) -> User:
    user, site = get_user(username), get_site(code)
    if remove and site in user.sites:
        user.sites.remove(site)
    elif not remove and site not in user.sites:
        user.sites.append(site)
    else:
        return user
    audit.append(
        "user_site", user=actor, form="user", form_id=user.id, field="sites", new=", ".join(s.code for s in user.sites)
    )
    return user


@transaction()
def set_active(username: str, active: bool, actor: User | None = None) -> User:
    user = get_user(username)
    audit.append("user_active", user=actor, form="user", form_id=user.id, field="active", old=user.active, new=active)
    user.active = active
    return user


def get_site(code: str) -> Site:
    site = db.session.execute(select(Site).where(Site.code == code)).scalar_one_or_none()
    if site is None:
        raise AuthError(f"No site with code {code!r}.")
    return site


@transaction()
def create_site(code: str, name: str, timezone: str = "UTC") -> Site:
    site = Site(code=code, name=name, timezone=timezone, next_screening_seq=1, next_subject_seq=1)
    db.session.add(site)
    return site
