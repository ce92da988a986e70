"""Steps every browser test shares: log in and out as a demo user, Playwright's expect."""

from __future__ import annotations

from cellstudy.demo import DEMO_PASSWORD, DEMO_USERS

FULL_NAME = {username: full_name for username, full_name, *_ in DEMO_USERS}


def expect(target):
    from playwright.sync_api import expect as _expect

    return _expect(target)


def log_in(page, username, password=DEMO_PASSWORD):
    page.goto("/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=f"Welcome, {FULL_NAME[username]}")).to_be_visible()


def log_out(page):
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_contain_text("You are logged out.")


def iso(day) -> str:
    return day.isoformat()
