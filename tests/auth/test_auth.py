"""Log-in, account lock, idle timeout, password hashing, user CLI (issue 2)."""

from datetime import timedelta

from sqlalchemy import select

from cellstudy.auth.models import User
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord
from cellstudy.timeutil import utcnow


def _user(app, username) -> User:
    with app.app_context():
        user = db.session.execute(select(User).where(User.username == username)).scalar_one()
        db.session.expunge(user)
        return user


def _login(client, username, password):
    return client.post("/login", data={"username": username, "password": password})


def test_login_form_is_a_plain_html_form(client):
    page = client.get("/login").data.decode()
    assert 'name="username"' in page and 'type="text"' in page and 'type="password"' in page


def test_pages_need_a_login(client):
    response = client.get("/subjects/")
    assert response.status_code == 302 and "/login" in response.location


def test_wrong_password_gives_one_message_for_both_mistakes(client):
    for username in ("coord-hz", "nobody"):
        response = _login(client, username, "wrong-password")
        assert response.status_code == 200 and b"Unknown user name or wrong password." in response.data


def test_five_failures_lock_the_account_for_fifteen_minutes_and_the_lock_is_audited(app, client):
    for _ in range(4):
        _login(client, "coord-nb", "wrong")
    response = _login(client, "coord-nb", "wrong")
    # the same answer as any refused log-in (issue 13: no enumeration), which names the lock rule
    assert b"Unknown user name or wrong password" in response.data and b"locked for 15 minutes" in response.data
    response = _login(client, "coord-nb", "cellstudy-demo")  # the right password: still locked
    assert response.status_code == 200 and b"Unknown user name or wrong password" in response.data
    user = _user(app, "coord-nb")
    from cellstudy.timeutil import as_utc

    remaining = as_utc(user.locked_until) - utcnow()
    assert timedelta(minutes=14) < remaining <= timedelta(minutes=15)
    with app.app_context():
        record = db.session.execute(select(AuditRecord).where(AuditRecord.action == "account_locked")).scalar_one()
        assert record.username == "coord-nb" and "5 failed" in record.reason
        # the lock expires: move it into the past
        u = db.session.get(User, user.id)
        u.locked_until = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert _login(client, "coord-nb", "cellstudy-demo").status_code == 302


def test_four_failures_then_success_resets_the_count(app, client):
    for _ in range(4):
        _login(client, "coord-nb", "wrong")
    assert _login(client, "coord-nb", "cellstudy-demo").status_code == 302
    assert _user(app, "coord-nb").failed_logins == 0


def test_disabled_user_cannot_log_in(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "disable", "coord-hz"])
    assert result.exit_code == 0, result.output
    response = _login(client, "coord-hz", "cellstudy-demo")
    # the one answer of a refused log-in, which says that a disabled account cannot log in
    assert response.status_code == 200 and b"a locked or disabled account cannot log in" in response.data


# the idle timeout (now judged on the server): tests/auth/test_sessions.py


def test_passwords_are_hashed_with_argon2id(app):
    assert _user(app, "coord-hz").password_hash.startswith("$argon2id$")


def test_production_argon2_parameters_are_memory_hard():
    from config import Config

    assert Config.ARGON2_MEMORY_COST >= 65536 and Config.ARGON2_TIME_COST >= 2


def test_logout_is_a_post(app, client):
    _login(client, "coord-hz", "cellstudy-demo")
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 302
    assert client.get("/subjects/").status_code == 302


def test_open_redirect_after_login_is_refused(client):
    response = client.post(
        "/login?next=https://evil.example/", data={"username": "coord-hz", "password": "cellstudy-demo"}
    )
    assert response.location == "/"


def test_user_cli_create_set_role_assign_site_disable(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "coord-2", "--name", "Ann Lee", "--role", "coordinator", "--site", "HZ"],
        input="a-long-password\na-long-password\n",
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["users", "assign-site", "coord-2", "NB"]).exit_code == 0
    assert runner.invoke(args=["users", "set-role", "coord-2", "investigator"]).exit_code == 0
    user = _user(app, "coord-2")
    assert user.role == "investigator"
    with app.app_context():
        assert [s.code for s in db.session.get(User, user.id).sites] == ["HZ", "NB"]
        actions = (
            db.session.execute(
                select(AuditRecord.action)
                .where(AuditRecord.form == "user", AuditRecord.form_id == user.id)
                .order_by(AuditRecord.id)
            )
            .scalars()
            .all()
        )
        assert actions == ["user_create", "user_site", "user_role"]
    bad = runner.invoke(args=["users", "set-role", "coord-2", "superuser"])
    assert bad.exit_code == 2 and "Unknown role" in bad.output
    short = runner.invoke(args=["users", "create", "x", "--name", "X", "--role", "admin"], input="short\nshort\n")
    assert short.exit_code == 2 and "12 characters" in short.output
    assert runner.invoke(args=["users", "assign-site", "coord-2", "XX"]).exit_code == 2


def test_admin_creates_a_user_in_the_browser_form(app, login):
    admin = login("admin")
    response = admin.post(
        "/admin/users",
        data={
            "username": "mon-nb",
            "full_name": "Kai Sun",
            "role": "monitor",
            "sites": ["NB"],
            "password": "another-long-pass",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        user = db.session.execute(select(User).where(User.username == "mon-nb")).scalar_one()
        assert user.role == "monitor" and [s.code for s in user.sites] == ["NB"]
    response = admin.post(
        "/admin/users",
        data={"username": "mon-nb", "full_name": "Kai Sun", "role": "monitor", "password": "another-long-pass"},
    )
    assert b"is taken" in response.data


def test_security_headers(client):
    response = client.get("/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
