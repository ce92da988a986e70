"""Log-in attempts, account locks and user administration (issue 2)."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import func, or_, select, update

from ..extensions import db
from ..records import audit
from ..records.transaction import transaction
from ..timeutil import as_utc, utcnow
from . import limits, passwords, sessions
from .models import ROLES, Site, User


class AuthError(Exception):
    """A refused log-in or account change; `field`: the form field the message belongs to."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def is_locked(user: User) -> bool:
    return user.locked_until is not None and as_utc(user.locked_until) > utcnow()


def login_refused() -> str:
    """The one answer to a refused log-in: an unknown user name, a wrong password, a locked
    or a disabled account all read the same (issue 13: no account enumeration)."""
    cfg = current_app.config
    return (
        "Unknown user name or wrong password. After "
        f"{cfg['LOGIN_MAX_FAILURES']} failed attempts an account is locked for {cfg['LOGIN_LOCK_MINUTES']} "
        "minutes; a locked or disabled account cannot log in (ask an administrator)."
    )


def _not_locked(now):
    return or_(User.locked_until.is_(None), User.locked_until <= now)


def _count_failure(user_id: int) -> int:
    """One more failed password, atomically (UPDATE ... RETURNING): the count after it."""
    return db.session.execute(
        update(User)
        .where(User.id == user_id)
        .values(failed_logins=func.coalesce(User.failed_logins, 0) + 1)
        .returning(User.failed_logins)
        .execution_options(synchronize_session=False)
    ).scalar_one()


def _lock(user_id: int) -> None:
    """The account lock, audited; it ends every session of the account. Once: an account
    already locked (by a parallel attempt) is left as it is."""
    cfg = current_app.config
    minutes = cfg["LOGIN_LOCK_MINUTES"]
    now = utcnow()
    until = now + timedelta(minutes=minutes)
    locked = db.session.execute(
        update(User)
        .where(User.id == user_id, _not_locked(now))
        .values(locked_until=until, failed_logins=0)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount != 1:
        return
    user = db.session.get(User, user_id)
    db.session.refresh(user)
    audit.append(
        "account_locked",
        user=user,
        field="locked_until",
        new=until,
        reason=f"{cfg['LOGIN_MAX_FAILURES']} failed password attempts; locked for {minutes} minutes",
    )
    sessions.revoke_all(user_id, "account locked")


def _reserve_attempt(username: str) -> tuple[int, int, str, bool] | None:
    """Reserve one password attempt before the password is checked (issue 13, failure 5):
    one atomic UPDATE counts it while the account is not locked. Only the attempts counted
    up to LOGIN_MAX_FAILURES have their password checked, so a parallel burst gets at most
    that many checks before the lock. (id, attempts counted, password hash, active), or None
    for an unknown user name or a locked account (the same statement either way)."""
    now = utcnow()
    with transaction():
        row = db.session.execute(
            update(User)
            .where(User.username == username, _not_locked(now))
            .values(failed_logins=func.coalesce(User.failed_logins, 0) + 1)
            .returning(User.id, User.failed_logins, User.password_hash, User.active)
            .execution_options(synchronize_session=False)
        ).one_or_none()
    return tuple(row) if row is not None else None


def authenticate(username: str, password: str) -> User:
    """The user, or AuthError with `login_refused()`. Whatever the reason (unknown user name,
    locked account, wrong password, disabled account), the password hasher runs exactly once
    and the answer is the same; a locked account learns of its lock from its administrator
    (the Users page shows it, the lock is in the audit trail)."""
    reserved = _reserve_attempt(username.strip())
    if reserved is None:
        passwords.check_password(passwords.dummy_hash(), password)
        raise AuthError(login_refused(), "password")
    user_id, attempts, password_hash, active = reserved
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    if attempts > limit:
        # the attempts are used up (a burst overtook the check that locks): not checked, and
        # the account locked now (also when an attempt was cut off before its check)
        passwords.check_password(passwords.dummy_hash(), password)
        with transaction():
            _lock(user_id)
        raise AuthError(login_refused(), "password")
    if not passwords.check_password(password_hash, password):
        if attempts == limit:
            with transaction():
                _lock(user_id)
        raise AuthError(login_refused(), "password")
    if not active:
        raise AuthError(login_refused(), "password")  # the reserved attempt stays counted
    with transaction():
        db.session.execute(
            update(User).where(User.id == user_id).values(failed_logins=0).execution_options(synchronize_session=False)
        )
    user = db.session.get(User, user_id)
    db.session.refresh(user)
    return user


def signature_refusal(user: User, password: str) -> str | None:
    """None when the signer's password is accepted (no write), else why not. Every
    e-signature attempt passes here: it is counted against RATELIMIT_SIGNATURE first."""
    limits.count_signature_attempt()
    if is_locked(user) or not user.active:
        return "Your account is locked or disabled: the signature was not applied."
    if passwords.check_password(user.password_hash, password or ""):
        return None
    return "Password not accepted: the signature was not applied."


def _failed_password(user: User) -> int | None:
    """A wrong password from a signed-in user (a signature, a password change): counted
    atomically; the attempts left before the lock, or None when this one locked the account."""
    count = _count_failure(user.id)
    if count >= current_app.config["LOGIN_MAX_FAILURES"]:
        _lock(user.id)
        return None
    return current_app.config["LOGIN_MAX_FAILURES"] - count


def register_signature_failure(user: User) -> str:
    """Signing counts like a log-in: a wrong password moves toward the account lock.
    Returns the message for the signer."""
    if is_locked(user) or not user.active:
        return "Your account is locked or disabled: the signature was not applied."
    left = _failed_password(user)
    if left is None:
        return (
            "Too many wrong passwords: your account is now locked for "
            f"{current_app.config['LOGIN_LOCK_MINUTES']} minutes and you will be logged out."
        )
    return (
        f"Password not accepted: the signature was not applied. {left} more wrong "
        f"password{'s' if left != 1 else ''} will lock your account."
    )


def check_new_password(user_inputs: tuple[str, ...], password: str, field: str = "password") -> None:
    """The password policy (passwords.policy_problem), as an AuthError at `field`."""
    problem = passwords.policy_problem(password or "", user_inputs)
    if problem:
        raise AuthError(f"Password: {problem}", field)


def change_password(user: User, current: str, new: str) -> None:
    """The user's own password change: the current password re-entered (a wrong one counts
    toward the lock), the policy checked, audited; every other session of the user ends and
    this browser's session is re-issued under a new id."""
    if not passwords.check_password(user.password_hash, current or ""):
        with transaction():
            left = _failed_password(db.session.get(User, user.id))
        if left is None:
            raise AuthError(
                "Too many wrong passwords: your account is now locked for "
                f"{current_app.config['LOGIN_LOCK_MINUTES']} minutes and you will be logged out.",
                "current_password",
            )
        raise AuthError(
            f"Current password not accepted. {left} more wrong password{'s' if left != 1 else ''} "
            "will lock your account.",
            "current_password",
        )
    if new == current:
        raise AuthError("Password: choose a password other than the current one.", "new_password")
    check_new_password((user.username, user.full_name), new, "new_password")
    with transaction():
        user = db.session.get(User, user.id)
        user.password_hash = passwords.hash_password(new)
        user.must_change_password = False
        user.failed_logins = 0
        audit.append(
            "password_change", user=user, form="user", form_id=user.id, field="password", reason="changed by the user"
        )
        sessions.revoke_all(user.id, "password changed")
        sessions.start(user)


@transaction()
def reset_password(username: str, temporary: str, actor: User | None = None) -> User:
    """An administrator's reset: a temporary password that the user must change at the next
    log-in; the lock is lifted and every session of the user ends. Audited (never the password)."""
    user = get_user(username)
    check_new_password((user.username, user.full_name), temporary)
    user.password_hash = passwords.hash_password(temporary)
    user.must_change_password = True
    user.failed_logins = 0
    user.locked_until = None
    audit.append(
        "password_reset",
        user=actor,
        form="user",
        form_id=user.id,
        field="password",
        reason=f"temporary password for {user.username}; to be changed at the next log-in",
    )
    sessions.revoke_all(user.id, "password reset")
    return user


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
    if db.session.execute(select(User.id).where(User.username == username)).first():
        raise AuthError(f"User name {username!r} is taken.", "username")
    check_new_password((username, full_name), password)
    user = User(username=username, full_name=full_name, role=role, password_hash=passwords.hash_password(password))
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
    sessions.revoke_all(user.id, "role changed")  # a session never outlives the rights it was opened with
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
    sessions.revoke_all(user.id, "sites changed")
    return user


@transaction()
def set_active(username: str, active: bool, actor: User | None = None) -> User:
    user = get_user(username)
    audit.append("user_active", user=actor, form="user", form_id=user.id, field="active", old=user.active, new=active)
    user.active = active
    if not active:
        sessions.revoke_all(user.id, "account disabled")
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
