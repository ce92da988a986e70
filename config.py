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
    # Issue 13, the keyed audit chain (cellstudy/records/audit_keys.py). The HMAC key is never
    # in the database nor in the instance folder: CELLSTUDY_AUDIT_KEY (hex or "base64:...",
    # with CELLSTUDY_AUDIT_RETIRED_KEYS, comma-separated, after a rotation) or a key file
    # (CELLSTUDY_AUDIT_KEY_FILE: one key per line, the first writes). Without either,
    # development generates a key file in the user's config folder (AUDIT_DEV_KEY_FILE) and
    # says so; production refuses to start. The Ed25519 key signs `flask audit checkpoint`.
    AUDIT_KEY = os.environ.get("CELLSTUDY_AUDIT_KEY")
    AUDIT_RETIRED_KEYS = os.environ.get("CELLSTUDY_AUDIT_RETIRED_KEYS")
    AUDIT_KEY_FILE = os.environ.get("CELLSTUDY_AUDIT_KEY_FILE")
    AUDIT_SIGNING_KEY_FILE = os.environ.get("CELLSTUDY_AUDIT_SIGNING_KEY_FILE")
    AUDIT_DEV_KEY_FILE = os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"), "cellstudy", "audit.key"
    )
    # --- Database faults (issue 13) ---
    # A pooled connection is checked before use: one the server ended (a restart, an idle
    # timeout, pg_terminate_backend) is replaced instead of failing the request.
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    # Strict-Transport-Security value (None: not sent). Production only: a development server
    # on plain http must not make the browser refuse http://127.0.0.1 for a year.
    HSTS = None
    # --- Sessions, log-in, passwords and rate limits (issue 13; cellstudy/auth) ---
    # The idle limit (PERMANENT_SESSION_LIFETIME above) is judged on the server from the
    # session's last_seen_at, written at most once per SESSION_TOUCH_SECONDS (not per request).
    SESSION_TOUCH_SECONDS = 60
    PASSWORD_MIN_LENGTH = 12
    PASSWORD_MIN_SCORE = 3  # zxcvbn's 0-4 estimate; 3: "safely unguessable" (~10^8 guesses and up)
    # Flask-Limiter: counts in memory (one process) unless REDIS_URL names a Redis that all
    # workers share. Limits: "N/period" strings (the limits library's syntax).
    RATELIMIT_STORAGE_URI = os.environ.get("REDIS_URL") or "memory://"
    RATELIMIT_HEADERS_ENABLED = True
    RATELIMIT_LOGIN = os.environ.get("RATELIMIT_LOGIN", "10/minute")  # log-in POSTs, per address and per user name
    RATELIMIT_SIGNATURE = os.environ.get("RATELIMIT_SIGNATURE", "20/minute")  # e-signature attempts, per user
    RATELIMIT_EXPORT = os.environ.get("RATELIMIT_EXPORT", "30/minute")  # export downloads and jobs, per user


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret"
    STRICT_TRANSACTIONS = True
    # Cheap hashing keeps the suite fast; production parameters are tested separately.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_COST = 8
    ARGON2_PARALLELISM = 1
    # a fixed audit HMAC key: the suite never reads or writes a key file of the machine (issue 13)
    AUDIT_KEY = "7e57" * 16
    AUDIT_RETIRED_KEYS = None
    AUDIT_KEY_FILE = None
    AUDIT_DEV_KEY_FILE = None
    # The suite logs in and downloads far more than a person does; tests/auth/test_rate_limits.py
    # sets the real limits back (or small ones) and hits them.
    RATELIMIT_STORAGE_URI = "memory://"
    RATELIMIT_LOGIN = RATELIMIT_SIGNATURE = RATELIMIT_EXPORT = "10000/minute"


class ProductionConfig(Config):
    LOAD_DEMO_ALLOWED = False
    SESSION_COOKIE_SECURE = os.environ.get("SESSION_COOKIE_SECURE", "1") == "1"
    HSTS = "max-age=31536000; includeSubDomains"  # issue 13: one year, behind the TLS proxy

    AUDIT_DEV_KEY_FILE = None  # issue 13: production never generates its audit key

    @classmethod
    def validate(cls):
        missing = [name for name in ("SECRET_KEY", "DATABASE_URL") if not os.environ.get(name)]
        if not (os.environ.get("CELLSTUDY_AUDIT_KEY") or os.environ.get("CELLSTUDY_AUDIT_KEY_FILE")):
            missing.append("CELLSTUDY_AUDIT_KEY (or CELLSTUDY_AUDIT_KEY_FILE)")
        if missing:
            raise RuntimeError(
                "ProductionConfig refuses to start: set " + " and ".join(missing) + " in the environment."
            )
        cls.SECRET_KEY = os.environ["SECRET_KEY"]
        cls.SQLALCHEMY_DATABASE_URI = os.environ["DATABASE_URL"]


CONFIGS = {"development": Config, "test": TestConfig, "production": ProductionConfig}
