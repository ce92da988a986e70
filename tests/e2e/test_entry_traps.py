"""End-to-end (issue 11, item 7): data-entry traps found on the way, each through the real UI of
a live server (Playwright driving Debian's Chromium; see conftest.py).

1. Enter in the CTCAE term picker with no option highlighted must not submit the AE form
   (it created a stray draft AE); Enter picks the highlighted option, or does nothing.
2. A locked form renders read-only (no enabled input, no save bar) and says who locked it
   and when (site time, UTC on hover).
3. The casebook cannot be signed with open queries, drafts or forms needing a signature
   without a confirmation that names them; the confirmation goes into the signature's
   audit record.
4. Queries, jobs and signatures show site time with UTC on hover, like the rest of the app.
5. Labels, not raw codes: the component that drove a CRS/ICANS grade, the failed criteria of
   a screen failure (the demo's HZ-S003: transaminases).

Demo (cellstudy/demo.py): HZ-001 is on treatment (site HZ, Asia/Shanghai) with three complete
AEs needing a signature and unresolved queries; HZ-S003 is a screen failure."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from cellstudy.extensions import db

from .ui import FULL_NAME, expect, log_in, log_out

pytestmark = pytest.mark.e2e

SITE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC[+-]\d+(:\d{2})?$")
UTC_TITLE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$")


def _subject(live_server, number: str) -> dict:
    from cellstudy.enrollment.models import Subject

    with live_server.app.app_context():
        subject = db.session.execute(
            select(Subject).where((Subject.subject_number == number) | (Subject.screening_number == number))
        ).scalar_one()
        info = {"id": subject.id, "site": subject.site.code, "aes": {ae.term: ae.id for ae in subject.adverse_events}}
        db.session.remove()
    return info


@pytest.fixture
def hz_001(live_server):
    return _subject(live_server, "HZ-001")


def _ae_count(live_server, subject_id: int) -> int:
    from cellstudy.adverse_events.models import AdverseEvent

    with live_server.app.app_context():
        count = db.session.scalar(
            select(func.count()).select_from(AdverseEvent).where(AdverseEvent.subject_id == subject_id)
        )
        db.session.remove()
    return count


def _expect_site_time(locator):
    """A <time> shown in site time with the UTC time in its tooltip (timeutil.fmt_site)."""
    expect(locator).to_have_text(SITE_TIME)
    expect(locator).to_have_attribute("title", UTC_TITLE)


# --- 1. the term picker's Enter -----------------------------------------------------------------


def test_enter_in_the_term_picker_never_submits_the_ae_form(page, shot, live_server, hz_001):
    url = f"/subjects/{hz_001['id']}/adverse-events/new"
    before = _ae_count(live_server, hz_001["id"])
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    log_in(page, "coord-hz")
    posts.clear()
    page.goto(url)
    term = page.get_by_role("combobox", name="CTCAE term")
    term.press_sequentially("nause", delay=30)
    options = page.locator("#term-options")
    expect(options).to_be_visible()
    expect(options.get_by_role("option").first).to_contain_text("Nausea")
    expect(options.locator("[aria-selected=true]")).to_have_count(0)  # nothing highlighted
    shot("traps-1-term-picker-no-highlight")

    term.press("Enter")  # no option highlighted: nothing happens
    page.wait_for_timeout(700)
    assert posts == [], "Enter with no option highlighted submitted the AE form"
    expect(page).to_have_url(re.compile(re.escape(url) + "$"))
    expect(term).to_have_value("nause")
    assert _ae_count(live_server, hz_001["id"]) == before

    term.press("ArrowDown")  # now Enter picks the highlighted option, and only that
    expect(options.locator("[aria-selected=true]")).to_have_count(1)
    term.press("Enter")
    expect(term).to_have_value(re.compile("^Nausea"))
    expect(options).to_be_hidden()
    term.press("Enter")  # the list is closed: Enter does nothing either
    page.wait_for_timeout(500)
    assert posts == []
    expect(page).to_have_url(re.compile(re.escape(url) + "$"))
    assert _ae_count(live_server, hz_001["id"]) == before
    shot("traps-1-term-picked")


# --- 2. a locked form is read-only --------------------------------------------------------------


def test_a_locked_form_renders_read_only_and_says_who_locked_it_and_when(page, shot, hz_001):
    nausea = hz_001["aes"]["Nausea"]
    url = f"/subjects/{hz_001['id']}/adverse-events/{nausea}"
    log_in(page, "coord-hz")
    page.goto(url)
    form = page.locator("#ae-form")
    expect(form.get_by_role("button", name="Save changes")).to_be_visible()
    expect(form.get_by_label("Comments")).to_be_editable()
    log_out(page)

    log_in(page, "dm")
    page.goto(url)
    panel = page.locator("#monitoring")
    panel.get_by_label("Reason").fill("SAE reconciliation")
    panel.get_by_role("button", name="Lock this form").click()
    expect(page.locator(".flash.success")).to_contain_text("locked")
    log_out(page)

    log_in(page, "coord-hz")
    page.goto(url)
    notice = page.locator(".locked-notice")
    expect(notice).to_contain_text(f"Locked by {FULL_NAME['dm']}")
    expect(notice).to_contain_text("this form is locked (SAE reconciliation)")
    _expect_site_time(notice.locator("time"))
    expect(notice.locator("time")).to_contain_text("UTC+8")  # HZ is Asia/Shanghai
    form = page.locator("#ae-form")
    expect(form.locator(".save-bar")).to_have_count(0)
    expect(form.get_by_role("button")).to_have_count(0)
    controls = form.locator("input:not([type=hidden]), select, textarea")
    assert controls.count() > 10
    for i in range(controls.count()):
        expect(controls.nth(i)).to_be_disabled()
    expect(page.get_by_role("button", name="Record a change of grade")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
    shot("traps-2-locked-ae-read-only")


# --- 3. the casebook signature names what is outstanding --------------------------------------


def test_signing_a_casebook_with_outstanding_work_needs_a_confirmation_naming_it(page, shot, live_server, hz_001):
    from cellstudy.records.models import AuditRecord, Signature

    log_in(page, "inv-hz")
    page.goto(f"/subjects/{hz_001['id']}/monitoring")
    section = page.locator("#casebook-signature")
    outstanding = section.locator("#casebook-outstanding")
    expect(outstanding).to_contain_text("unresolved quer")
    expect(outstanding).to_contain_text("AE 3: Nausea")  # a form still needing a signature
    confirm = section.get_by_role("checkbox")
    expect(confirm).not_to_be_checked()
    label = section.locator("label[for=cb-confirm]").inner_text()
    assert "AE 1: Cytokine release syndrome" in label and "still need" in label and "quer" in label
    shot("traps-3-casebook-outstanding")

    # without the confirmation: refused at the field, nothing signed, the password not spent
    section.get_by_label("Password").fill("cellstudy-demo")
    section.get_by_role("button", name="Sign the casebook").click()
    error = page.locator("#casebook-signature .field.has-error .error")
    expect(error).to_contain_text("Tick the confirmation")
    with live_server.app.app_context():
        assert (
            db.session.scalar(
                select(func.count())
                .select_from(Signature)
                .where(Signature.form == "casebook", Signature.form_id == hz_001["id"])
            )
            == 0
        )
        db.session.remove()
    shot("traps-3-casebook-refused")

    # with it: signed, and the audit record of the signature carries the confirmation text
    section = page.locator("#casebook-signature")
    section.get_by_role("checkbox").check()
    section.get_by_label("Password").fill("cellstudy-demo")
    section.get_by_role("button", name="Sign the casebook").click()
    expect(page.locator(".flash.success")).to_contain_text("Casebook signed")
    signed = page.locator("#casebook-signature")
    expect(signed).to_contain_text(f"signed {FULL_NAME['inv-hz']}")
    _expect_site_time(signed.locator("time").first)
    with live_server.app.app_context():
        record = db.session.execute(
            select(AuditRecord).where(
                AuditRecord.action == "sign", AuditRecord.form == "casebook", AuditRecord.form_id == hz_001["id"]
            )
        ).scalar_one()
        assert record.reason == label.strip()
        db.session.remove()
    shot("traps-3-casebook-signed")


# --- 4. site time everywhere (UTC on hover) -----------------------------------------------------


def test_queries_signatures_and_jobs_show_site_time_with_utc_on_hover(page, shot, live_server, hz_001):
    log_in(page, "monitor-hz")
    page.goto("/queries")
    rows = page.locator("table.queries tbody tr")
    expect(rows.first).to_be_visible()
    _expect_site_time(rows.first.locator("time"))
    page.goto(f"/subjects/{hz_001['id']}/monitoring")
    thread = page.locator("#queries article.query").first
    for i in range(thread.locator("time").count()):
        _expect_site_time(thread.locator("time").nth(i))
    shot("traps-4-query-thread-site-time")
    log_out(page)

    log_in(page, "inv-hz")
    nausea = hz_001["aes"]["Nausea"]
    page.goto(f"/subjects/{hz_001['id']}/adverse-events/{nausea}")
    panel = page.locator("#monitoring")
    panel.get_by_text("Sign this form").click()
    panel.get_by_label("Password").fill("cellstudy-demo")
    panel.get_by_role("button", name="Sign", exact=True).click()
    expect(page.locator(".flash.success")).to_contain_text("signed")
    _expect_site_time(page.locator("#monitoring h2 .badge.s-complete time"))
    # a site casebooks job (written directly: running one takes a minute): its list and its page
    job_id = _finished_job(live_server, "inv-hz", hz_001["site"])
    page.goto("/jobs")
    row = page.locator("table.grid tbody tr", has_text=f"{job_id}").first
    _expect_site_time(row.locator("time"))
    expect(row.locator("time")).to_contain_text("UTC+8")
    page.goto(f"/jobs/{job_id}")
    _expect_site_time(page.locator("p.help time").first)
    page.goto("/casebooks")
    _expect_site_time(page.locator("table.grid tbody tr").first.locator("time"))
    shot("traps-4-jobs-site-time")


def _finished_job(live_server, username: str, site_code: str) -> int:
    from cellstudy.auth.models import Site, User
    from cellstudy.jobs.models import Job
    from cellstudy.pdf.tasks import SITE_CASEBOOKS

    with live_server.app.app_context():
        user = db.session.execute(select(User).where(User.username == username)).scalar_one()
        site = db.session.execute(select(Site).where(Site.code == site_code)).scalar_one()
        job = Job(
            kind=SITE_CASEBOOKS,
            params={"site_id": site.id},
            status="failed",
            error="Stopped by the test.",
            site_id=site.id,
            created_by_id=user.id,
        )
        db.session.add(job)
        db.session.commit()
        job_id = job.id
        db.session.remove()
    return job_id


# --- 5. labels, not codes -------------------------------------------------------------------


def test_grade_drivers_and_failed_criteria_are_shown_as_labels(page, shot, live_server, hz_001):
    from cellstudy.adverse_events.fields import ICE_ITEMS

    log_in(page, "coord-hz")
    page.goto(f"/subjects/{hz_001['id']}/adverse-events")
    page.get_by_role("link", name="ICANS assessment").click()
    crf = page.locator("#crf-form")
    crf.get_by_label("Assessment date").fill(page.evaluate("new Date().toISOString().slice(0, 10)"))
    crf.get_by_label("Assessment time").fill("00:00")
    for name, _label in ICE_ITEMS[:6]:  # ICE 6/10: grade 2, driven by the ICE score
        crf.locator(f"#{name}").select_option("yes")
    for name, _label in ICE_ITEMS[6:]:
        crf.locator(f"#{name}").select_option("no")
    crf.get_by_label("Depressed level of consciousness").select_option("awakens_spontaneously")
    crf.get_by_label("Seizure").select_option("none")
    crf.get_by_label("Motor findings").select_option("none")
    crf.get_by_label("Raised intracranial pressure / cerebral oedema").select_option("none")
    crf.get_by_role("button", name="Save draft and compute the grade").click()
    result = page.locator("#computed-grade")
    expect(result).to_contain_text("ICANS grade 2")
    expect(result).to_contain_text("driven by ICE score")
    expect(result).not_to_contain_text("ice_score")
    expect(result).not_to_contain_text("ice score")
    expect(result).to_contain_text("Depressed level of consciousness 1")
    shot("traps-5-icans-driver-label")
    page.goto(f"/subjects/{hz_001['id']}/adverse-events")
    icans = page.locator("section.panel", has=page.get_by_role("heading", name="ICANS assessments"))
    expect(icans.locator("tbody")).to_contain_text("ICE score")
    expect(icans.locator("tbody")).not_to_contain_text("ice_score")

    # the demo's HZ-S003 failed screening on its transaminases
    failed = _subject(live_server, "HZ-S003")
    page.goto(f"/subjects/{failed['id']}")
    decision = page.locator(".decision", has_text="Screen failure")
    expect(decision).to_contain_text("Failed criteria: ALT and AST <= ")
    expect(decision).not_to_contain_text("transaminases")
    with live_server.app.app_context():
        from cellstudy.enrollment.eligibility import criteria
        from cellstudy.enrollment.models import EligibilityDecision
        from cellstudy.settings import current_study

        codes = db.session.execute(
            select(EligibilityDecision.failed_criteria).where(EligibilityDecision.subject_id == failed["id"])
        ).scalar_one()
        texts = dict(criteria(current_study()))
        db.session.remove()
    assert codes == ["transaminases"]
    expect(decision.locator(".failed")).to_have_text(texts["transaminases"][0].upper() + texts["transaminases"][1:])
    shot("traps-5-screen-failure-labels")
