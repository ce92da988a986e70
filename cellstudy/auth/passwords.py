"""Password hashing with argon2id (memory-hard), parameters from the app config, and the
password policy (issue 13): a minimum length and zxcvbn's guessability estimate.

Every password check goes through `check_password` (a test counts its calls): a log-in with
an unknown user name, a locked account or a wrong password each runs it exactly once, an
unknown user against `dummy_hash()`, so the answer and its time do not tell them apart."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from zxcvbn import zxcvbn

#: argon2 parameters -> a hash of a random secret nobody knows, made with those parameters
_DUMMY: dict[tuple[int, int, int], str] = {}
#: zxcvbn's run time grows with the length; past this many characters only the length counts
_SCORED_CHARS = 100
MAX_LENGTH = 256


def _params() -> tuple[int, int, int]:
    cfg = current_app.config
    return cfg["ARGON2_TIME_COST"], cfg["ARGON2_MEMORY_COST"], cfg["ARGON2_PARALLELISM"]


def _hasher() -> PasswordHasher:
    time_cost, memory_cost, parallelism = _params()
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def dummy_hash() -> str:
    """A hash with the app's parameters that no password matches: checked for an unknown
    user or a locked account so that they cost what a real check costs."""
    params = _params()
    if params not in _DUMMY:
        _DUMMY[params] = _hasher().hash(secrets.token_urlsafe(32))
    return _DUMMY[params]


def policy_problem(password: str, user_inputs: tuple[str, ...] = ()) -> str | None:
    """Why a new password is refused (a sentence for the person choosing it), or None.
    `user_inputs`: the user name and printed name, which a password must not lean on."""
    minimum = current_app.config["PASSWORD_MIN_LENGTH"]
    if len(password) < minimum:
        return f"At least {minimum} characters."
    if len(password) > MAX_LENGTH:
        return f"At most {MAX_LENGTH} characters."
    result = zxcvbn(password[:_SCORED_CHARS], user_inputs=[s for s in user_inputs if s])
    if result["score"] < current_app.config["PASSWORD_MIN_SCORE"]:
        feedback = result["feedback"]
        hint = feedback.get("warning") or "It follows a pattern that is easy to guess."
        advice = " ".join(feedback.get("suggestions") or ["Add another word or two. Uncommon words are better."])
        return f"Too easy to guess. {hint} {advice}".strip()
    return None
