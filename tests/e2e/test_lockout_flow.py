"""End-to-end (issue 11): a toxicity hold that arises after an infusion was scheduled is
shown where staff work and the administration CRF refuses it, keeping what was typed; the
investigator overrides it with a reason and an e-signature. Through the real UI of a live
server (Playwright driving Debian's Chromium).

The subject (an HZ subject enrolled at DL1, first infusion scheduled for yesterday at the
site, so it can be recorded today) and its related grade 3 AE are made by the services;
everything the staff see and do is in the browser."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from cellstudy.demo import DEMO_PASSWORD
from cellstudy.extensions import db

from .test_infusion_flow import enrolled_subject  # noqa: F401  (the fixture)
from .ui import expect, iso, log_in, log_out

pytestmark = pytest.mark.e2e


@pytest.fixture
def held_subject(live_server, enrolled_subject):  # noqa: F811
    from cellstudy.adverse_events import service as ae_service
    from cellstudy.auth.models import User
    from cellstudy.enrollment.models import Subject
    from cellstudy.infusions import scheduling

    info = dict(enrolled_subject)
    with live_server.app.app_context():
        users = {u.username: u for u in db.session.execute(select(User)).scalars()}
        subject = db.session.get(Subject, info["id"])
        scheduling.schedule_infusion(subject, info["planned_first"], user=users["coord-hz"])
        subject = db.session.get(Subject, info["id"])
        ae = ae_service.new_ae(subject)
        ae_service.save_ae(
            subject,
            ae,
            {
                "term": "Nausea",
                "onset_date": info["today"] - timedelta(days=2),
                "ongoing": True,
                "grade": 3,
                "serious": False,
                "related_nk": "probable",
                "related_ld": "unlikely",
                "expectedness": "expected",
                "action": "none",
                "outcome": "recovering",
            },
            user=users["coord-hz"],
            expected_version=0,
            reason=None,
            complete=True,
            today=info["today"],
        )
        db.session.remove()
    return info


def test_a_toxicity_hold_locks_the_planned_infusion_and_only_a_signed_override_gives_it(page, shot, held_subject):
    subject = held_subject
    planned = iso(subject["planned_first"])

    # --- the coordinator's start page lists the locked infusion ---
    log_in(page, "coord-hz")
    locked = page.locator("#locked-infusions")
    expect(locked.get_by_role("heading")).to_contain_text("Planned infusions now locked")
    row = locked.locator("tr", has_text=subject["number"])
    expect(row).to_contain_text("Infusion 1")
    expect(row.locator("li.lockout[data-code=toxicity_hold]")).to_contain_text("Toxicity hold")
    expect(row.locator("li.lockout[data-code=toxicity_hold]")).to_contain_text("open AE 'Nausea' (other) grade 3")
    shot("40-start-page-locked-infusion")

    # --- the Infusions page says locked instead of "Record administration" ---
    row.get_by_role("link", name=subject["number"]).click()
    page.locator(".subject-header .subnav").get_by_role("link", name="Infusions").click()
    first = page.locator("#plan tbody tr").nth(0)
    expect(first.locator(".judgement .badge")).to_have_text("locked")
    expect(first.locator("li.lockout[data-code=toxicity_hold]")).to_be_visible()
    expect(first.get_by_role("link", name="Record administration")).to_have_count(0)
    shot("41-infusions-page-locked")

    # --- the CRF warns, and refuses the administration keeping what was typed ---
    first.get_by_role("link", name="Locked: see the lockouts").click()
    expect(page.locator("#infusion-judgement")).to_contain_text(f"Infusion 1 is locked on {planned}")
    crf = page.locator("#crf-form")
    expect(crf.locator("[name=override_reason]")).to_have_count(0)  # the coordinator cannot override
    values = {
        "start_time": "09:40",
        "stop_time": "10:10",
        "product_lot": "NK-CLL1-26-077",
        "viability_percent": "92.5",
        "weight_kg": "61.8",
        "actual_cells": "97000000",
        **{
            f"{p}_{k}": v
            for p in ("pre", "post")
            for k, v in zip(("temp_c", "hr", "sbp", "dbp", "spo2"), ("36.7", "76", "118", "74", "98"), strict=False)
        },
    }
    for name, value in values.items():
        crf.locator(f"[name={name}]").fill(value)
    crf.get_by_label("Infusion reaction").select_option("no")
    crf.get_by_role("button", name="Save and mark complete").click()
    date_field = page.locator(".field", has=page.locator("[name=administration_date]"))
    expect(date_field.locator(".error")).to_contain_text(f"Infusion 1 is locked on {planned}: Toxicity hold")
    expect(page.locator(".flash.error").first).to_contain_text("Nothing was saved")
    expect(crf.locator("[name=product_lot]")).to_have_value("NK-CLL1-26-077")  # kept
    expect(page.locator(".form-head .badge").nth(1)).to_have_text("scheduled")
    shot("42-administration-refused")
    log_out(page)

    # --- the investigator overrides with a reason and the e-signature ---
    log_in(page, "inv-hz")
    page.goto(f"/subjects/{subject['id']}/infusions")
    page.locator("#plan tbody tr").nth(0).get_by_role("link", name="Locked: see the lockouts").click()
    crf = page.locator("#crf-form")
    for name, value in values.items():
        crf.locator(f"[name={name}]").fill(value)
    crf.get_by_label("Infusion reaction").select_option("no")
    crf.get_by_label("Override reason (investigator)").fill("Grade 3 nausea controlled with antiemetics")
    crf.get_by_label("Investigator password (e-signature of the override)").fill(DEMO_PASSWORD)
    crf.get_by_role("button", name="Save and mark complete").click()
    expect(page.locator(".flash.success")).to_have_text("Infusion 1 saved. Marked complete.")
    expect(page.locator(".form-head .badge").nth(1)).to_have_text("given")
    page.goto("/deviations")
    expect(page.locator("body")).to_contain_text(re.compile(r"lockout override", re.I))
    expect(page.locator("body")).to_contain_text("Grade 3 nausea controlled with antiemetics")
    shot("43-override-listed-as-deviation")
