"""Server-side sessions (issue 13, failure 4): a copy of the session cookie, taken before
the session ended, opens nothing afterwards, from any browser.

The attack of the outside review: copy the cookie of a signed-in browser, end the session
(log-out, a password change or reset, disabling the account, a role or site change, idleness)
and replay the copy from a fresh client. On the code before issue 13 every replay opened
/subjects/ (the cookie alone was the session)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select

from cellstudy.auth import sessions
from cellstudy.auth.models import User, UserSession
from cellstudy.extensions import db
from cellstudy.timeutil import wall_clock
from tests.conftest import DEMO_PASSWORD
from tests.helpers import flashes

NEW_PASSWORD = "violet tractor harbour 42"


def cookie_of(client) -> str:
    return client.get_cookie("session").value


def replay(app, cookie: str):
    """The copied cookie, sent from another browser (a fresh client)."""
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    return thief.get("/subjects/")


def opens(response) -> bool:
    return response.status_code == 200


def refused(response) -> bool:
    return response.status_code == 302 and "/login" in response.location


def rows(app, username: str) -> list[UserSession]:
    with app.app_context():
        user_id = db.session.execute(select(User.id).where(User.username == username)).scalar_one()
        found = db.session.execute(select(UserSession).where(UserSession.user_id == user_id)).scalars().all()
        db.session.expunge_all()
        return found


def test_a_copied_cookie_opens_pages_until_log_out_and_never_after(app, login):
    coord = login("coord-hz")
    copy = cookie_of(coord.client)
    assert opens(replay(app, copy))  # the copy works while the session is open: it is the session
    assert coord.post("/logout").status_code == 302
    assert refused(replay(app, copy))
    assert refused(replay(app, copy))  # and stays refused
    [row] = rows(app, "coord-hz")
    assert row.revoked_at is not None and row.revoke_reason == "logout"


def test_the_database_keeps_only_a_hash_of_the_session_id(app, login):
    coord = login("coord-hz")
    with coord.client.session_transaction() as cookie:
        sid = cookie[sessions.SID]
    [row] = rows(app, "coord-hz")
    assert sid not in row.token_hash and len(row.token_hash) == 64
    # a cookie with a session id made up (or read from the database) signs nobody in
    with coord.client.session_transaction() as cookie:
        cookie[sessions.SID] = row.token_hash
    assert refused(coord.get("/subjects/"))


@pytest.mark.parametrize(
    "args, reason",
    [
        (["users", "disable", "coord-hz"], "account disabled"),
        (["users", "set-role", "coord-hz", "monitor"], "role changed"),
        (["users", "assign-site", "coord-hz", "NB"], "sites changed"),
        (["users", "assign-site", "coord-hz", "HZ", "--remove"], "sites changed"),
    ],
    ids=["disable", "role change", "site added", "site removed"],
)
def test_an_account_change_ends_every_session_of_the_user(app, login, args, reason):
    first, second = login("coord-hz"), login("coord-hz")  # two browsers
    copies = [cookie_of(first.client), cookie_of(second.client)]
    other = login("coord-nb")  # another user's session is not touched
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    for copy in copies:
        assert refused(replay(app, copy))
    assert refused(first.get("/subjects/"))
    assert opens(other.get("/subjects/"))
    assert {r.revoke_reason for r in rows(app, "coord-hz")} == {reason}


def test_an_administrators_password_reset_ends_every_session_of_the_user(app, login):
    coord = login("coord-hz")
    copy = cookie_of(coord.client)
    admin = login("admin")
    response = admin.post("/admin/password-reset", data={"username": "coord-hz", "password": "plum kettle orbit 93"})
    assert response.status_code == 302
    assert refused(replay(app, copy)) and refused(coord.get("/subjects/"))
    assert opens(admin.get("/admin/users"))


def test_the_users_own_password_change_ends_the_other_sessions_and_reissues_this_one(app, login):
    here, elsewhere = login("coord-hz"), login("coord-hz")
    copy_here, copy_elsewhere = cookie_of(here.client), cookie_of(elsewhere.client)
    response = here.post(
        "/account/password",
        data={"current_password": DEMO_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert opens(here.get("/subjects/"))  # this browser stays signed in, under a new session id
    assert cookie_of(here.client) != copy_here
    assert refused(replay(app, copy_here))  # the copy taken before the change is worthless
    assert refused(replay(app, copy_elsewhere)) and refused(elsewhere.get("/subjects/"))
    reasons = [r.revoke_reason for r in rows(app, "coord-hz")]
    assert reasons.count("password changed") == 2 and reasons.count(None) == 1


def test_an_account_lock_ends_every_session_of_the_user(app, login, client):
    coord = login("coord-nb")
    copy = cookie_of(coord.client)
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        client.post("/login", data={"username": "coord-nb", "password": "wrong"})
    assert refused(replay(app, copy))
    assert {r.revoke_reason for r in rows(app, "coord-nb")} == {"account locked"}


# --- the idle limit, judged on the server ------------------------------------------------------


@pytest.fixture
def away(monkeypatch):
    """Move the machine's clock as the sessions read it (timeutil.wall_clock: real time away
    from the browser; the study clock is not the one that counts here)."""
    offset = [timedelta(0)]
    monkeypatch.setattr(sessions, "wall_clock", lambda: wall_clock() + offset[0])

    def move(delta: timedelta) -> None:
        offset[0] += delta

    return move


def test_idle_session_ends_after_the_limit_even_for_a_copy_of_the_cookie(app, login, away):
    coord = login("coord-hz")
    copy = cookie_of(coord.client)
    away(app.config["PERMANENT_SESSION_LIFETIME"] + timedelta(minutes=1))
    response = replay(app, copy)  # the attacker comes back first: the session is already over
    assert refused(response)
    response = coord.get("/subjects/")
    assert refused(response)
    [row] = rows(app, "coord-hz")
    assert row.revoke_reason == "idle"
    away(-app.config["PERMANENT_SESSION_LIFETIME"])  # even back in time, an ended session stays ended
    assert refused(replay(app, copy))


def test_the_idle_message_is_shown_on_the_login_page(app, login, away):
    coord = login("coord-hz")
    away(timedelta(minutes=31))
    response = coord.get("/subjects/")
    assert refused(response) and "next=" in response.location
    page = coord.get(response.location).data.decode()
    assert "You were logged out after 30 minutes without activity." in flashes(page)


def test_activity_within_the_limit_keeps_the_session_and_moves_it_on(app, login, away):
    coord = login("coord-hz")
    for _ in range(3):  # 87 minutes in all, never 30 without a request
        away(timedelta(minutes=29))
        assert opens(coord.get("/subjects/"))


def test_a_request_reads_its_session_with_one_query_and_writes_at_most_once_a_minute(app, login, away):
    coord = login("coord-hz")
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def count(conn, cursor, statement, parameters, context, executemany):
        if "user_session" in statement:
            statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            assert opens(coord.get("/subjects/"))
        assert statements == ["SELECT"] * 5  # no write: the session was seen less than a minute ago
        statements.clear()
        away(timedelta(seconds=61))
        assert opens(coord.get("/subjects/"))
        assert opens(coord.get("/subjects/"))
        assert statements == ["SELECT", "UPDATE", "SELECT"]
    finally:
        event.remove(engine, "before_cursor_execute", count)
