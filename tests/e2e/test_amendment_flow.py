"""End-to-end: an amendment as a controlled change (issue 11, item 6), through the real UI of
a live server (Playwright driving Debian's Chromium; see conftest.py). The admin reads the
settings by their labels with units and proposes an amendment of the minimum interval with
an effective date; nothing changes until the investigator, on the start page and the
amendments page, sees the before and after and approves it with an e-signature (a wrong
password first, refused); then it is in force on every page."""

from __future__ import annotations

import pytest

from cellstudy.demo import DEMO_PASSWORD

from .ui import expect, log_in, log_out

pytestmark = pytest.mark.e2e

V2 = "2.0 (amendment 1)"


def log_in_admin(page):
    """The admin's start page is the user list (no clinical data), not the welcome page."""
    page.goto("/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password", exact=True).fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Study settings")).to_be_visible()


def test_admin_proposes_investigator_approves_with_e_signature_and_labels_are_shown(page, shot, live_server):
    from cellstudy.timeutil import utcnow

    today = utcnow().date().isoformat()

    log_in_admin(page)
    page.get_by_role("link", name="Study settings").click()
    expect(page.get_by_role("heading", name="Propose an amendment")).to_be_visible()
    # settings by their labels with units, grouped by section; no raw setting names
    expect(page.get_by_label("Sentinel stagger (days)")).to_be_visible()
    interval = page.get_by_label("Minimum interval between infusions (days)")
    expect(interval).to_have_value("6")
    expect(
        page.get_by_role("rowheader", name="Regimen and lockouts (PROTOCOL 5.1-5.3)").or_(
            page.get_by_text("Regimen and lockouts (PROTOCOL 5.1-5.3)")
        )
    ).to_be_visible()
    assert "regimen.sentinel_stagger_days" not in page.locator("main").inner_text()
    shot("amendment_settings_labels")

    interval.fill("7")
    page.get_by_label("New version label").fill(V2)
    page.get_by_label("Reason").fill("DSMB recommendation after cohort 1")
    expect(page.get_by_label("Effective date (UTC)")).to_have_value(today)
    page.get_by_role("button", name="Propose the amendment").click()
    expect(page.get_by_role("status").first).to_contain_text("takes effect only once an investigator approves it")
    expect(page.get_by_text(f"Amendment {V2} awaits an investigator's approval")).to_be_visible()
    # still the original protocol in force
    expect(page.locator(".topbar .protocol")).to_contain_text("v1.0 (original protocol)")
    log_out(page)

    log_in(page, "inv-hz")
    waiting = page.locator("#amendments-waiting")
    expect(waiting).to_contain_text(V2)
    expect(waiting).to_contain_text("Minimum interval between infusions (days): 6 → 7")
    waiting.get_by_role("link", name=V2).click()
    article = page.locator("article.decision", has_text=V2)
    expect(article.locator("tr[data-key='regimen.min_interval_days']")).to_contain_text("6")
    expect(article).to_contain_text("DSMB recommendation after cohort 1")
    shot("amendment_awaiting_approval")

    approve = page.get_by_role("form", name=f"Approve {V2}")
    approve.get_by_label("Your password").fill("wrong-password")
    approve.get_by_label("I understand that this electronic signature").check()
    approve.get_by_role("button", name="Sign and approve").click()
    expect(page.get_by_text("Password not accepted: the signature was not applied.")).to_be_visible()
    expect(page.locator(".topbar .protocol")).to_contain_text("v1.0 (original protocol)")

    approve = page.get_by_role("form", name=f"Approve {V2}")
    approve.get_by_label("Your password").fill("cellstudy-demo")
    approve.get_by_label("I understand that this electronic signature").check()
    approve.get_by_role("button", name="Sign and approve").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Amendment {V2} approved with your e-signature")
    expect(page.locator(".topbar .protocol")).to_contain_text(f"v{V2}")
    history = page.locator("#amendments-history")
    expect(history).to_contain_text("In force")
    expect(history).to_contain_text("Approved by Dr Wang Lei")
    expect(page.get_by_text("No amendment awaits approval.")).to_be_visible()
    shot("amendment_approved")
    log_out(page)

    log_in_admin(page)
    page.get_by_role("link", name="Study settings").click()
    expect(page.locator("h1")).to_contain_text(f"version {V2} in force")
    expect(page.locator("tr[data-key='regimen.min_interval_days'] td.num")).to_have_text("7")
