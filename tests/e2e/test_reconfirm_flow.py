"""Browser test (issue 11, item 5): a coordinator corrects the screening form of an enrolled
demo subject; the site investigator sees the banner and the worklist and re-confirms
eligibility with an e-signature; the old decision stays beside the new one."""

from __future__ import annotations

import re

import pytest

from .ui import FULL_NAME, expect, log_in, log_out

pytestmark = pytest.mark.e2e

PASSWORD = "cellstudy-demo"


def open_subject(page, number):
    page.get_by_role("navigation").get_by_role("link", name="Subjects").click()
    page.get_by_role("row").filter(has_text=number).get_by_role("link").first.click()
    expect(page.locator(".subject-header h1")).to_contain_text(number)


def test_a_correction_after_enrolment_is_reconfirmed_by_the_investigator(page, shot):
    log_in(page, "coord-hz")
    open_subject(page, "HZ-001")
    # the decision of record, not a re-check against today's medications
    record = page.locator("#decision-of-record")
    expect(record).to_contain_text("Eligibility: decision of record")
    expect(record).to_contain_text(FULL_NAME["inv-hz"])
    expect(page.locator("#eligibility-warning")).to_have_count(0)
    expect(page.get_by_text("No actions for this status")).to_have_count(0)
    shot("reconfirm-01-enrolled-subject")

    # --- the coordinator corrects ALT on the complete screening form (a reason is needed) ---
    page.get_by_role("navigation", name="Subject").get_by_role("link", name="Screening form").click()
    page.locator("#screening-form [name=alt]").fill("52")
    page.get_by_label("Reason for change").fill("Transcription error: ALT 52 U/L on the screening lab report.")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".flash.success")).to_contain_text("Screening form saved.")
    page.get_by_role("navigation", name="Subject").get_by_role("link", name="Overview").click()
    banner = page.locator("#eligibility-warning")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Eligibility to re-confirm")
    expect(banner).to_contain_text("Screening form changed: ALT")
    expect(banner).to_contain_text(FULL_NAME["coord-hz"])
    expect(banner.get_by_role("link", name=re.compile("Review eligibility"))).to_have_count(
        0
    )  # coordinators: no action
    # the banner is on screen without scrolling
    box = banner.bounding_box()
    assert box is not None and box["y"] < page.viewport_size["height"]
    shot("reconfirm-02-banner-coordinator")
    log_out(page)

    # --- the investigator finds the subject on the start page's worklist ---
    log_in(page, "inv-hz")
    worklist = page.locator("#eligibility-to-reconfirm")
    expect(worklist).to_contain_text("HZ-001")
    expect(worklist).to_contain_text("ALT")
    shot("reconfirm-03-start-page-worklist")
    worklist.get_by_role("link", name="Re-confirm or record a deviation").click()
    expect(page.get_by_role("heading", name="Eligibility review")).to_be_visible()
    expect(page.locator("section.eligibility h2 .badge")).to_have_text("eligible")

    # a wrong password is refused at the field; nothing else changes
    page.get_by_label("Your password").first.fill("not-my-password")
    page.locator("#reconfirm").get_by_label(re.compile("legally binding equivalent")).check()
    page.get_by_role("button", name="Sign and re-confirm eligibility").click()
    expect(page.locator("#reconfirm .error").first).to_be_visible()
    shot("reconfirm-04-wrong-password")

    page.locator("#reconfirm").get_by_label("Your password").fill(PASSWORD)
    page.locator("#reconfirm").get_by_label(re.compile("legally binding equivalent")).check()
    page.get_by_role("button", name="Sign and re-confirm eligibility").click()
    expect(page.locator(".flash.success")).to_contain_text("Eligibility re-confirmed and signed")
    expect(page.locator("#eligibility-warning")).to_have_count(0)
    record = page.locator("#decision-of-record")
    expect(record).to_contain_text("eligibility re-confirmed")
    expect(record).to_contain_text("ALT 52 U/L")
    decisions = page.locator(".decision:not(.review-history)")
    expect(decisions.filter(has_text="Enrolled")).to_have_count(1)
    expect(decisions.filter(has_text="Eligibility re-confirmed")).to_have_count(1)
    expect(page.locator(".review-history")).to_contain_text("eligibility re-confirmed")
    shot("reconfirm-05-reconfirmed")
    page.goto("/")
    expect(page.locator("#eligibility-to-reconfirm")).to_contain_text("No eligibility to re-confirm.")
