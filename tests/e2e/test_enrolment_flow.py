"""End-to-end: the screening-to-enrolment flow and the account lock, through the real
UI of a live server (Playwright driving Debian's Chromium; see conftest.py)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest

from cellstudy.demo import DEMO_USERS, eligible_values
from cellstudy.enrollment.fields import FIELDS_BY_NAME

pytestmark = pytest.mark.e2e

PASSWORD = "cellstudy-demo"
FULL_NAME = {username: full_name for username, full_name, *_ in DEMO_USERS}
MEANING = "I confirm this subject meets all eligibility criteria"


def expect(target):
    from playwright.sync_api import expect as _expect

    return _expect(target)


def as_text(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, date):
        return value.isoformat()  # <input type=date> takes ISO YYYY-MM-DD
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def log_in(page, username, password=PASSWORD):
    page.goto("/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def log_out(page):
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_contain_text("You are logged out.")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def fill_screening(page, values: dict):
    """Answer the screening form as a user would: type numbers and dates, pick from the
    drop-downs (yes/no questions, sex, units, the pregnancy test)."""
    form = page.locator("#screening-form")
    for name, value in values.items():
        spec = FIELDS_BY_NAME[name]
        control = form.locator(f"[name='{name}']")
        if spec.kind in ("bool", "choice"):
            control.select_option(as_text(value))
        else:
            control.fill(as_text(value))


def eligibility_badge(page):
    return page.locator("section.eligibility h2 .badge")


def test_coordinator_screens_and_investigator_enrols(page, shot):
    today = date.today()
    values = {**eligible_values(today), "alt": Decimal("130"), "alt_uln": Decimal("40")}
    assert values["screening_date"] <= today < values["first_infusion_date"]

    # --- the coordinator logs in and registers a subject ---
    log_in(page, "coord-hz")
    expect(page.get_by_role("heading", name=f"Welcome, {FULL_NAME['coord-hz']}")).to_be_visible()
    page.get_by_role("navigation").get_by_role("link", name="Subjects").click()
    expect(page.get_by_role("heading", name="Subjects", exact=True)).to_be_visible()
    page.get_by_role("button", name="Register subject").click()
    flash = page.locator(".flash.success")
    expect(flash).to_contain_text(re.compile(r"Subject HZ-S\d{3} registered"))
    screening_number = re.search(r"HZ-S\d{3}", flash.inner_text()).group(0)
    expect(page).to_have_url(re.compile(r"/subjects/\d+/screening$"))
    subject_url = re.search(r"/subjects/\d+", page.url).group(0)
    expect(page.locator(".subject-header h1")).to_contain_text(screening_number)
    expect(eligibility_badge(page)).to_have_text("incomplete")
    shot("01-empty-screening-form")

    # --- fills every field, with one ineligible value (ALT 130, ULN 40), and completes it ---
    fill_screening(page, values)
    page.get_by_label("No prior therapies or procedures to record").check()
    page.get_by_role("button", name="Save and mark complete").click()
    expect(page.locator(".flash.success")).to_have_text("Screening form saved. Marked complete.")
    expect(page.locator(".form-head .badge")).to_have_text("complete")
    transaminases = page.locator("section.eligibility li[data-code=transaminases]")
    expect(transaminases).to_have_attribute("data-status", "fail")
    expect(transaminases).to_contain_text("3.25")
    expect(transaminases).to_contain_text("ALT 130 U/L")
    expect(eligibility_badge(page)).to_have_text("not eligible")
    # every other criterion passes: ALT is the only thing keeping the subject out
    expect(page.locator("section.eligibility li[data-status=fail]")).to_have_count(1)
    expect(page.locator("section.eligibility li[data-status=missing]")).to_have_count(0)
    shot("02-screening-not-eligible")

    # --- corrects ALT: the form is complete, so the change needs a reason ---
    page.locator("#screening-form [name=alt]").fill("38")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".flash.success")).to_have_count(0)
    reason_field = page.locator(".field.has-error", has=page.get_by_label("Reason for change"))
    expect(reason_field.locator(".error")).to_contain_text("give a reason for the change")
    expect(transaminases).to_have_attribute("data-status", "fail")  # nothing was saved
    shot("03-reason-required")

    reason = "Transcription error: ALT is 38 U/L on the lab report of the screening visit."
    page.locator("#screening-form [name=alt]").fill("38")
    page.get_by_label("Reason for change").fill(reason)
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".flash.success")).to_contain_text("Screening form saved.")
    expect(transaminases).to_have_attribute("data-status", "pass")
    expect(eligibility_badge(page)).to_have_text("eligible")
    expect(page.locator("section.eligibility li[data-status=fail]")).to_have_count(0)
    shot("04-screening-eligible")

    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_text("Eligible: an investigator can now enrol this subject.")).to_be_visible()
    expect(page.get_by_role("link", name="Enrol subject (e-signature)")).to_have_count(0)  # coordinators cannot
    log_out(page)

    # --- the investigator finds the subject and enrols it with an e-signature ---
    log_in(page, "inv-hz")
    page.get_by_role("navigation").get_by_role("link", name="Subjects").click()
    page.get_by_label("Search").fill(screening_number)
    page.get_by_role("button", name="Filter").click()
    page.locator("#subjects").get_by_role("link", name=screening_number).click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + "$"))
    expect(page.locator(".subject-header .badge")).to_have_text("screening")
    page.get_by_role("link", name="Enrol subject (e-signature)").click()
    expect(page.locator("blockquote.meaning")).to_contain_text(MEANING)
    expect(page.get_by_text(f"Signed as {FULL_NAME['inv-hz']}")).to_be_visible()

    page.get_by_label("Your password").fill("not-my-password")
    page.get_by_label(re.compile("legally binding equivalent")).check()
    page.get_by_role("button", name="Sign and enrol").click()
    password_field = page.locator(".field", has=page.get_by_label("Your password"))
    expect(password_field).to_have_class(re.compile(r"\bhas-error\b"))
    expect(password_field.locator(".error")).to_have_text(
        "Password not accepted: the signature was not applied. 4 more wrong passwords will lock your account."
    )
    expect(page.locator(".subject-header .badge")).to_have_text("screening")
    expect(page.locator(".subject-header h1")).not_to_contain_text(re.compile(r"HZ-\d{3}"))
    shot("05-enrol-wrong-password")

    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_label(re.compile("legally binding equivalent")).check()
    page.get_by_role("button", name="Sign and enrol").click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + "$"))
    flash = page.locator(".flash.success")
    expect(flash).to_contain_text(re.compile(r"Subject enrolled as HZ-\d{3}\."))
    subject_number = re.search(r"HZ-\d{3}", flash.inner_text()).group(0)
    assert re.fullmatch(r"HZ-0\d\d", subject_number)
    header = page.locator(".subject-header")
    expect(header.locator("h1")).to_contain_text(subject_number)
    expect(header.locator("h1")).to_contain_text(screening_number)
    expect(header.locator(".badge")).to_have_text("enrolled")
    decision = page.locator(".decision")
    expect(decision).to_have_count(1)
    expect(decision).to_contain_text("Enrolled")
    expect(decision).to_contain_text(f"Signed by {FULL_NAME['inv-hz']}")
    expect(decision).to_contain_text(f"“{MEANING}”")
    expect(decision.locator(".badge.s-fail")).to_have_count(0)  # the signature is valid
    expect(page.locator("#eligibility-warning")).to_have_count(0)
    shot("06-subject-enrolled")

    # --- the audit trail shows the ALT correction with its reason ---
    page.get_by_role("navigation", name="Subject").get_by_role("link", name="Audit trail").click()
    rows = page.locator("#audit tbody tr")
    alt_change = rows.filter(has=page.locator("td:nth-child(6) small.code", has_text=re.compile(r"^alt$"))).filter(
        has=page.locator("td.old", has_text=re.compile(r"^130$"))
    )
    expect(alt_change).to_have_count(1)
    cells = alt_change.locator("td")
    expect(cells.nth(2)).to_have_text("coord-hz")
    expect(cells.nth(3)).to_have_text("Changed")
    expect(cells.nth(4)).to_contain_text("Screening")
    expect(cells.nth(5)).to_contain_text("ALT")
    expect(alt_change.locator("td.old")).to_have_text("130")
    expect(alt_change.locator("td.new")).to_have_text("38")
    expect(cells.nth(8)).to_have_text(reason)
    sign_row = rows.filter(has=page.locator("td:nth-child(4)", has_text=re.compile(r"^Signed$")))
    expect(sign_row).to_have_count(1)
    expect(sign_row).to_contain_text(f"{FULL_NAME['inv-hz']}: {MEANING}")
    shot("07-audit-trail")


def test_five_wrong_passwords_lock_the_account(page, shot):
    for attempt in range(1, 6):
        log_in(page, "coord-nb", f"wrong-password-{attempt}")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        expect(page.locator(".field.has-error .error")).to_be_visible()
    expect(page.locator(".field.has-error .error")).to_contain_text("locked")
    shot("08-login-fifth-failure")

    log_in(page, "coord-nb", PASSWORD)
    expect(page).to_have_url(re.compile(r"/login$"))
    error = page.locator(".field.has-error .error")
    expect(error).to_contain_text("locked")
    expect(page.get_by_role("link", name="Subjects")).to_have_count(0)
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    shot("09-login-locked")
