"""End-to-end (issue 6): a monitor raises a query on an AE grade, the coordinator sees it
waiting on the start page and corrects the grade with a reason, the monitor closes the
query and verifies the form, and the subject's audit trail shows the whole story --
through the real UI of a live server (Playwright driving Debian's Chromium).

The AE is the demo's ongoing grade 1 nausea of HZ-001."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from cellstudy.extensions import db

from .ui import expect, log_in, log_out

pytestmark = pytest.mark.e2e

QUERY_TEXT = "Source notes say vomiting 3 times a day with IV fluids: please check the grade."


@pytest.fixture
def nausea(live_server):
    from cellstudy.adverse_events.models import AdverseEvent
    from cellstudy.enrollment.models import Subject

    with live_server.app.app_context():
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
        ae = db.session.execute(
            select(AdverseEvent).where(AdverseEvent.subject_id == subject.id, AdverseEvent.term == "Nausea")
        ).scalar_one()
        assert ae.grade == 1 and ae.status == "complete"
        info = {"subject": subject.id, "ae": ae.id, "url": f"/subjects/{subject.id}/adverse-events/{ae.id}"}
        db.session.remove()
    return info


def test_query_on_an_ae_grade_corrected_closed_verified_and_audited(page, shot, nausea):
    # 1. The monitor raises a query on the grade.
    log_in(page, "monitor-hz")
    page.goto(nausea["url"])
    panel = page.locator("#monitoring")
    panel.get_by_text("Raise a query").click()
    panel.get_by_label("Field").select_option(label="Grade (CTCAE v5.0)")
    panel.get_by_label("Query").fill(QUERY_TEXT)
    panel.get_by_role("button", name="Raise query").click()
    flash = page.locator(".flash.success")
    expect(flash).to_contain_text("opened")
    query_id = re.search(r"Query #(\d+) opened", flash.inner_text()).group(1)
    expect(page.locator(f"#query-{query_id}")).to_contain_text(QUERY_TEXT)
    shot("monitoring-1-query-raised")
    log_out(page)

    # 2. The coordinator sees it waiting, opens the form and corrects the grade with a reason.
    log_in(page, "coord-hz")
    waiting = page.locator("#queries-waiting")
    expect(waiting).to_contain_text(QUERY_TEXT)
    waiting.locator("tr", has_text=QUERY_TEXT).get_by_role("link").click()
    expect(page).to_have_url(re.compile(nausea["url"] + f"#query-{query_id}$"))
    grade_label = page.locator("label[for=grade]")
    expect(grade_label).to_contain_text(f"query #{query_id} open")
    page.locator("#ae-form select[name=grade]").select_option("2")
    page.locator("#ae-form").get_by_label("Reason for change").fill("Grade 2 per source: IV fluids needed")
    shot("monitoring-2-correction")
    page.locator("#ae-form").get_by_role("button", name=re.compile("Save")).first.click()
    expect(page.locator(".flash.success")).to_be_visible()
    card = page.locator(f"#query-{query_id}")
    expect(card).to_contain_text("answered")
    expect(card).to_contain_text("Corrected Grade (CTCAE v5.0): 1 → 2")
    log_out(page)

    # 3. The monitor closes the query and verifies the whole form.
    log_in(page, "monitor-hz")
    page.goto(nausea["url"])
    card = page.locator(f"#query-{query_id}")
    card.get_by_label("Reply").fill("Agreed: grade 2.")
    card.get_by_role("button", name=f"Close query #{query_id}").click()
    expect(page.locator(".flash.success")).to_contain_text(f"Query #{query_id} closed.")
    expect(page.locator(f"#query-{query_id}")).to_contain_text("closed")
    page.locator("#monitoring").get_by_role("button", name="Verify the whole form").click()
    expect(page.locator(".flash.success")).to_contain_text("field(s) verified")
    expect(page.locator("#monitoring h2")).to_contain_text("SDV: verified")
    expect(page.locator("label[for=grade]")).to_contain_text("SDV ✓")
    shot("monitoring-3-closed-and-verified")

    # 4. The subject's audit trail tells the whole story.
    page.goto(f"/subjects/{nausea['subject']}/audit")
    trail = page.locator("table").first
    for fragment in (
        QUERY_TEXT,
        f"Grade 2 per source: IV fluids needed [query #{query_id}]",
        f"#{query_id} answered",
        f"#{query_id} closed: Agreed: grade 2.",
        "verified against source",
    ):
        expect(trail).to_contain_text(fragment)
    shot("monitoring-4-audit-trail")
