"""Configuration classes. Environment variables override the defaults.

- Config: development (SQLite file in the instance folder, WAL, foreign keys on).
- TestConfig: used by the test-suite; the database URL is set per test.
- ProductionConfig: refuses to start without SECRET_KEY and DATABASE_URL.
"""

import os
from datetime import timedelta


class Config:
    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-not-secret")
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL")  # None: instance/cellstudy.db
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    # PROTOCOL 2 / issue 2: idle session timeout of 30 minutes.
    PERMANENT_SESSION_LIFETIME = timedelta(minutes=int(os.environ.get("SESSION_IDLE_MINUTES", "30")))
    SESSION_REFRESH_EACH_REQUEST = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_DURATION = timedelta(seconds=0)
    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the (idle-limited) session
    LOGIN_MAX_FAILURES = 5
    LOGIN_LOCK_MINUTES = 15
    # argon2id parameters (RFC 9106 "second recommended option" scale): ~64 MiB.
    ARGON2_TIME_COST = 3
    ARGON2_MEMORY_COST = 65536
    ARGON2_PARALLELISM = 4
    SUBJECTS_PER_PAGE = 25
    LOAD_DEMO_ALLOWED = True
    # SQLite: a statement that writes outside records.transaction() (in a read transaction,
    # which would have to upgrade its lock) raises instead of being logged (issue 12).
    STRICT_TRANSACTIONS = os.environ.get("STRICT_TRANSACTIONS", "0") == "1"


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret"
    STRICT_TRANSACTIONS = True
    # Cheap hashing keeps the suite fast; production parameters are tested separately.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_COST = 8
    ARGON2_PARALLELISM = 1


class ProductionConfig(Config):
    LOAD_DEMO_ALLOWED = False
    SESSION_COOKIE_SECURE = os.environ.get("SESSION_COOKIE_SECURE", "1") == "1"

    @classmethod
    def validate(cls):
        missing = [name for name in ("SECRET_KEY", "DATABASE_URL") if not os.environ.get(name)]
        if missing:
            raise RuntimeError(
                "ProductionConfig refuses to start: set " + " and ".join(missing) + " in the environment."
            )
        cls.SECRET_KEY = os.environ["SECRET_KEY"]
        cls.SQLALCHEMY_DATABASE_URI = os.environ["DATABASE_URL"]


CONFIGS = {"development": Config, "test": TestConfig, "production": ProductionConfig}
