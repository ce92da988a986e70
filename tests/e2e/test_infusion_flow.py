"""End-to-end: scheduling the first NK-cell infusion around a steroid washout, recording
it, and a vaccine given inside the no-vaccination window (issue 3), through the real UI
of a live server (Playwright driving Debian's Chromium; see conftest.py).

The subject is made by the services (screening complete, enrolled at DL1 by the
investigator) so that its planned first infusion is yesterday at the site: the
infusion can be recorded today (an administration date is never in the future and
must equal the scheduled date). Every date is the site's (HZ: Asia/Shanghai), which
is not the server's date for 8 hours of each UTC day."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from cellstudy import registry
from cellstudy.demo import DEMO_PASSWORD, make_subject
from cellstudy.extensions import db

from .ui import FULL_NAME, expect, iso, log_in, log_out

pytestmark = pytest.mark.e2e

PLANNED_FIRST_IN_DAYS = -1  # the screening form's planned first infusion: yesterday at the site


@pytest.fixture
def enrolled_subject(live_server):
    """An HZ subject enrolled at DL1 with no infusion yet, its first infusion planned
    for yesterday at the site. make_subject(..., base) plans it at base + 14 days."""
    from cellstudy.auth.models import Site, User
    from cellstudy.enrollment import service as enrollment
    from cellstudy.timeutil import site_today

    with live_server.app.app_context():
        site = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        users = {u.username: u for u in db.session.execute(select(User)).scalars()}
        today = site_today(site)
        subject = make_subject(site, users["coord-hz"], "complete", today + timedelta(days=PLANNED_FIRST_IN_DAYS - 14))
        enrollment.enrol(
            subject,
            user=users["inv-hz"],
            password=DEMO_PASSWORD,
            screening_version=subject.current_screening.version,
            dose_level="DL1",
        )
        # the enrolment is dated a week back: an infusion cannot precede it
        subject.enrolled_at = subject.enrolled_at - timedelta(days=7)
        db.session.commit()
        info = {
            "id": subject.id,
            "number": subject.subject_number,
            "today": today,
            "planned_first": today + timedelta(days=PLANNED_FIRST_IN_DAYS),
        }
        assert subject.status == "enrolled" and subject.dose_level == "DL1" and not subject.infusions
        db.session.remove()
    return info


def test_schedule_around_a_steroid_washout_record_the_infusion_and_a_vaccine_deviation(page, shot, enrolled_subject):
    subject = enrolled_subject
    today = subject["today"]
    number = subject["number"]
    steroid_last = today - timedelta(days=4)
    permitted = steroid_last + timedelta(days=3)  # PROTOCOL 4.4: 3-day steroid washout
    proposed = today - timedelta(days=3)
    assert proposed < permitted == today - timedelta(days=1) == subject["planned_first"]
    subject_url = f"/subjects/{subject['id']}"

    # --- the coordinator adds dexamethasone, last given 4 days ago, to the therapy log ---
    log_in(page, "coord-hz")
    page.goto(f"{subject_url}/screening")
    expect(page.locator(".subject-header h1")).to_contain_text(number)
    expect(page.locator(".subject-header .badge")).to_have_text("enrolled")
    page.get_by_role("link", name="Add therapy or procedure").click()
    page.get_by_label("Category").select_option(label="Systemic steroid")
    page.get_by_label("Name").fill("Dexamethasone")
    page.get_by_label("First dose / start date").fill(iso(steroid_last - timedelta(days=2)))
    page.get_by_label("Last dose / treatment date").fill(iso(steroid_last))
    page.get_by_label("Indication").fill("Transfusion reaction prophylaxis")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.success")).to_have_text("Therapy added to the log.")
    steroid_row = page.locator("#exposures tbody tr", has_text="Dexamethasone")
    expect(steroid_row.locator("td").nth(0)).to_have_text("Systemic steroid")
    expect(steroid_row.locator("td").nth(3)).to_have_text(iso(steroid_last))
    shot("09-therapy-log-steroid")

    # --- Infusions: nothing scheduled yet; the plan is anchored on the planned first date ---
    page.locator(".subject-header .subnav").get_by_role("link", name="Infusions").click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + "/infusions$"))
    expect(page.get_by_role("heading", name=re.compile("NK-cell infusions"))).to_contain_text("dose level")
    plan_rows = page.locator("#plan tbody tr")
    expect(plan_rows).to_have_count(3)
    expect(plan_rows.nth(0).locator("td").nth(1)).to_contain_text(iso(subject["planned_first"]))
    expect(plan_rows.nth(0).locator("td").nth(4)).to_have_text("not scheduled")
    expect(page.locator("#proposal")).to_have_count(0)

    # --- proposes a date inside the washout: locked out, first permitted date shown ---
    propose = page.locator("#propose")
    propose.get_by_label("Date").fill(iso(proposed))
    propose.get_by_role("button", name="Check lockouts").click()
    proposal = page.locator("#proposal")
    expect(proposal).to_contain_text(f"Infusion 1 on {iso(proposed)}")
    expect(proposal.locator(".badge")).to_have_text("locked out")
    lockouts = proposal.locator("li.lockout")
    expect(lockouts).to_have_count(1)
    steroid = proposal.locator("li.lockout[data-code=washout_steroid]")
    expect(steroid).to_contain_text("Steroid washout")
    expect(steroid).to_contain_text(f"Dexamethasone (systemic steroid) last given {iso(steroid_last)}")
    expect(steroid).to_contain_text("3-day washout")
    expect(steroid.locator(".until")).to_have_text(iso(permitted))
    # before the first infusion a washout cannot be overridden: no schedule button at all
    expect(proposal.get_by_role("button", name=re.compile("Schedule|Override"))).to_have_count(0)
    use = page.locator("#use-earliest")
    expect(use).to_have_text(f"Use {iso(permitted)}")
    shot("10-schedule-steroid-lockout")

    # --- takes the suggested date: no lockout, schedules infusion 1 on it ---
    use.click()
    expect(page).to_have_url(re.compile(r"\?proposed=" + re.escape(iso(permitted)) + "$"))
    expect(propose.get_by_label("Date")).to_have_value(iso(permitted))
    expect(proposal).to_contain_text(f"Infusion 1 on {iso(permitted)}")
    expect(proposal.locator(".badge")).to_have_text("no lockout")
    expect(proposal.locator("li.lockout")).to_have_count(0)
    expect(page.locator("#use-earliest")).to_have_count(0)
    expect(proposal.locator(".flash.warning")).to_have_count(0)  # the planned date: inside its target window
    proposal.get_by_role("button", name=f"Schedule infusion 1 on {iso(permitted)}").click()
    expect(page.locator(".flash.success")).to_have_text(f"Infusion 1 scheduled for {iso(permitted)}.")
    first_row = plan_rows.nth(0)
    expect(first_row.locator("td").nth(3)).to_have_text(iso(permitted))
    expect(first_row.locator("td").nth(4)).to_have_text("scheduled")
    expect(plan_rows.nth(1).locator("td").nth(1)).to_contain_text(iso(permitted + timedelta(days=7)))
    expect(plan_rows.nth(2).locator("td").nth(1)).to_contain_text(iso(permitted + timedelta(days=14)))

    # --- records the administration on the infusion CRF ---
    first_row.get_by_role("link", name="Record administration").click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + r"/infusions/\d+$"))
    infusion_url = page.url
    expect(page.get_by_role("heading", name="Infusion 1")).to_be_visible()
    head = page.locator(".form-head")
    expect(head).to_contain_text(f"planned {iso(permitted)} · DL1")
    expect(head.locator(".badge").nth(0)).to_have_text("draft")
    expect(head.locator(".badge").nth(1)).to_have_text("scheduled")
    crf = page.locator("#crf-form")
    expect(crf.locator("[name=administration_date]")).to_have_value(iso(permitted))  # prefilled
    expect(crf.locator("[name=planned_cells]")).to_have_value("100000000")  # from DL1
    values = {
        "start_time": "09:40",
        "stop_time": "10:10",
        "premedication": "Paracetamol 500 mg PO 30 min before",
        "product_lot": "NK-CLL1-26-031",
        "viability_percent": "92.5",
        "weight_kg": "61.8",
        "actual_cells": "97000000",
        **{
            f"{p}_{k}": v
            for p, vitals in (("pre", ("36.7", "76", "118", "74", "98")), ("post", ("37.0", "82", "121", "77", "97")))
            for k, v in zip(("temp_c", "hr", "sbp", "dbp", "spo2"), vitals, strict=False)
        },
    }
    for name, value in values.items():
        crf.locator(f"[name={name}]").fill(value)
    crf.get_by_label("Infusion reaction").select_option("no")
    shot("11-infusion-crf-filled")
    crf.get_by_role("button", name="Save and mark complete").click()
    expect(page.locator(".flash.success")).to_have_text("Infusion 1 saved. Marked complete.")
    expect(page).to_have_url(infusion_url)
    expect(head.locator(".badge").nth(0)).to_have_text("complete")
    expect(head.locator(".badge").nth(1)).to_have_text("given")
    expect(crf.locator("[name=actual_cells]")).to_have_value("97000000")
    expect(crf.locator("[name=post_spo2]")).to_have_value("97")
    expect(page.get_by_role("button", name="Save changes")).to_be_visible()
    expect(page.locator(".alert.danger")).to_have_count(0)  # no infusion reaction
    expect(page.locator(".subject-header .badge")).to_have_text("on treatment")

    page.locator(".subject-header .subnav").get_by_role("link", name="Infusions").click()
    expect(first_row.locator("td").nth(3)).to_have_text(iso(permitted))
    expect(first_row.locator("td").nth(4)).to_have_text("given")
    expect(first_row.get_by_role("link", name="Open CRF")).to_be_visible()
    expect(plan_rows.nth(1).locator("td").nth(4)).to_have_text("not scheduled")
    expect(page.locator(".subject-header .badge")).to_have_text("on treatment")
    window_start = permitted - timedelta(days=27)
    window_end = permitted + timedelta(days=14 + 84)
    window_text = f"No vaccines from {window_start.strftime('%-d %b %Y')} to {window_end.strftime('%-d %b %Y')}."
    expect(page.locator("#vaccine-window strong")).to_have_text(window_text)
    shot("12-infusion-1-given")

    # --- a coordinator cannot record a vaccine inside the window: an investigator signs it ---
    page.locator(".subject-header .subnav").get_by_role("link", name=registry.log_label("vaccination")).click()
    expect(page.get_by_role("heading", name=registry.log_label("vaccination"))).to_be_visible()
    expect(page.locator("#vaccine-window strong")).to_have_text(window_text)
    expect(page.locator("#vaccines tbody")).to_have_text("No vaccinations recorded.")
    page.get_by_label("Vaccine", exact=True).fill("Influenza (inactivated)")
    page.get_by_label("Date given").fill(iso(today))
    page.get_by_role("button", name="Record").click()
    reason_field = page.locator(".field", has=page.get_by_label("Protocol-deviation reason"))
    expect(reason_field).to_have_class(re.compile(r"\bhas-error\b"))
    expect(reason_field.locator(".error")).to_have_text(
        f"{iso(today)} is inside the no-vaccination window ({iso(window_start)} to {iso(window_end)}): "
        "give a protocol-deviation reason."
    )
    deviation_reason = "Seasonal influenza outbreak on the ward; vaccination advised by infection control."
    page.get_by_label("Protocol-deviation reason").fill(deviation_reason)
    page.get_by_role("button", name="Record").click()
    # a coordinator is not offered a password field; the refusal says who must record it
    expect(page.get_by_label("Investigator password")).to_have_count(0)
    expect(page.locator("form .error[role=alert]")).to_have_text(
        "A vaccine inside the no-vaccination window needs an investigator's e-signature: "
        "ask the investigator to record it."
    )
    expect(page.locator(".flash.error")).to_contain_text("Nothing was saved")
    expect(page.locator(".flash.success")).to_have_count(0)
    expect(page.locator("#vaccines tbody")).to_have_text("No vaccinations recorded.")
    shot("13-vaccine-refused-for-coordinator")
    log_out(page)

    # --- the investigator records it as a signed protocol deviation ---
    log_in(page, "inv-hz")
    page.goto(f"{subject_url}/vaccinations")
    expect(page.locator(".subject-header h1")).to_contain_text(number)
    page.get_by_label("Vaccine", exact=True).fill("Influenza (inactivated)")
    page.get_by_label("Date given").fill(iso(today))
    page.get_by_label("Reason for vaccination").fill("Seasonal influenza")
    page.get_by_label("Protocol-deviation reason").fill(deviation_reason)
    page.get_by_label("Investigator password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Record").click()
    expect(page.locator(".flash.success")).to_have_text("Vaccination recorded.")
    rows = page.locator("#vaccines tbody tr")
    expect(rows).to_have_count(1)
    cells = rows.nth(0).locator("td")
    expect(cells.nth(0)).to_have_text("Influenza (inactivated)")
    expect(cells.nth(1)).to_have_text(iso(today))
    expect(cells.nth(2)).to_have_text("Seasonal influenza")
    expect(cells.nth(3).locator(".badge.s-fail")).to_have_text("protocol deviation")
    expect(cells.nth(3)).to_contain_text(deviation_reason)
    expect(cells.nth(3)).to_contain_text(f"signed by {FULL_NAME['inv-hz']}")
    shot("14-vaccine-deviation-signed")

    # --- the deviation list shows it, with the subject number ---
    page.get_by_role("navigation").get_by_role("link", name="Deviations").click()
    expect(page.get_by_role("heading", name="Protocol deviations")).to_be_visible()
    vaccine_rows = page.locator("#deviations tbody tr").filter(has_text="vaccine in window")
    expect(vaccine_rows).to_have_count(1)
    row = vaccine_rows.nth(0).locator("td")
    expect(row.nth(1)).to_have_text("HZ")
    expect(row.nth(2)).to_have_text(number)
    expect(row.nth(2).get_by_role("link")).to_have_attribute("href", subject_url)
    expect(row.nth(4)).to_have_text(
        f"Influenza (inactivated) given {iso(today)}, inside the no-vaccination "
        f"window {iso(window_start)} to {iso(window_end)}"
    )
    expect(row.nth(5)).to_have_text(deviation_reason)
    expect(row.nth(6)).to_have_text(FULL_NAME["inv-hz"])
    # scheduling on the planned date and a dose 3% under DL1 are no deviations
    expect(page.locator("#deviations tbody tr").filter(has_text=number)).to_have_count(1)
    shot("15-deviations")
