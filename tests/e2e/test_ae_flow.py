"""End-to-end: a grade 3 CRS recorded from its components, made serious, its SAE clock,
the CTCAE term picker, and the investigator's SAE listing exported as XLSX (issue 4),
through the real UI of a live server (Playwright driving Debian's Chromium; see
conftest.py).

The subject is the demo's HZ-001 (on treatment, site HZ): its demo CRS has ended, so
today's grade 3 assessment opens a new CRS adverse event. Every date and time typed is
the site's (HZ: Asia/Shanghai), which is not the server's date for 8 hours of each UTC
day."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from cellstudy.extensions import db

from .ui import FULL_NAME, expect, iso, log_in, log_out

pytestmark = pytest.mark.e2e

CRS_TERM = "Cytokine release syndrome"
#: the SAE listing's columns, in order (sheet 1, row 1 of the XLSX)
SAE_HEADER = [
    "Subject",
    "Site",
    "Dose level",
    "AE",
    "CTCAE term",
    "Verbatim term",
    "Worst grade",
    "Onset",
    "Seriousness criteria",
    "Attribution NK cells",
    "Attribution lymphodepletion",
    "Expectedness",
    "Outcome",
    "Site aware (UTC)",
    "SAE report due (UTC)",
    "SAE report submitted (UTC)",
    "SAE report",
    "SUSAR",
    "SUSAR report due (UTC)",
    "SUSAR report submitted (UTC)",
    "SUSAR report",
    "Form status",
]


@pytest.fixture
def hz_001(live_server):
    """The demo's HZ-001, the site's date and the time the site became aware of the SAE:
    one hour ago in site time (00:00 when that would be yesterday)."""
    from cellstudy.auth.models import Site
    from cellstudy.enrollment.models import Subject
    from cellstudy.timeutil import site_today, site_zone, utcnow

    with live_server.app.app_context():
        site = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
        assert subject.status == "on_treatment" and subject.site_id == site.id
        today = site_today(site)
        zone = site_zone(site)
        now_local = utcnow().astimezone(zone)
        hour_ago = now_local - timedelta(hours=1)
        aware_time = hour_ago.strftime("%H:%M") if hour_ago.date() == today else "00:00"
        info = {
            "id": subject.id,
            "number": subject.subject_number,
            "today": today,
            "zone": zone,
            "aware_time": aware_time,
        }
        db.session.remove()
    return info


def test_grade_3_crs_made_serious_starts_the_sae_clock_and_the_sae_listing_exports_as_xlsx(
    page, shot, hz_001, tmp_path
):
    subject = hz_001
    today = subject["today"]
    number = subject["number"]
    subject_url = f"/subjects/{subject['id']}"

    # --- the coordinator opens HZ-001's adverse events and starts a CRS assessment ---
    log_in(page, "coord-hz")
    page.get_by_role("navigation").get_by_role("link", name="Subjects").click()
    page.locator("#subjects tbody tr", has_text=number).get_by_role("link").click()
    expect(page.locator(".subject-header h1")).to_contain_text(number)
    expect(page.locator(".subject-header .badge")).to_have_text("on treatment")
    page.locator(".subject-header .subnav").get_by_role("link", name="Adverse events").click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + "/adverse-events$"))
    expect(page.get_by_role("heading", name="Adverse events")).to_be_visible()
    ae_rows = page.locator("#ae-table tbody tr")
    aes_before = ae_rows.count()
    page.get_by_role("link", name="CRS assessment").click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + "/crs/new$"))
    expect(page.get_by_role("heading", name="CRS assessment")).to_be_visible()
    expect(page.locator("#computed-grade")).to_have_count(0)  # nothing saved yet

    # --- fills the components: fever 39.5 °C, one vasopressor, low-flow oxygen ---
    crf = page.locator("#crf-form")
    crf.get_by_label("Assessment date").fill(iso(today))
    crf.get_by_label("Highest temperature").fill("39.5")
    crf.get_by_label("Fever masked by antipyretic or anti-cytokine therapy").select_option("no")
    crf.get_by_label("Hypotension", exact=True).select_option("one_vasopressor")
    crf.get_by_label("Hypoxia (oxygen needed)").select_option("low_flow")
    expect(crf.get_by_label("Hypotension", exact=True).locator("option:checked")).to_have_text(
        "Requiring one vasopressor (with or without vasopressin)"
    )
    expect(crf.get_by_label("Hypoxia (oxygen needed)").locator("option:checked")).to_have_text(
        re.compile(r"^Low-flow nasal cannula")
    )
    shot("16-crs-assessment-filled")
    crf.get_by_role("button", name="Save and mark complete").click()

    # --- the app computes grade 3, driven by hypotension, and opens the CRS AE ---
    expect(page).to_have_url(re.compile(re.escape(subject_url) + r"/crs/\d+$"))
    expect(page.locator(".flash.success")).to_have_text(
        re.compile(r"^CRS assessment saved: grade 3, recorded on AE \d+\.$")
    )
    expect(page.get_by_role("heading", name=f"CRS assessment of {iso(today)}")).to_be_visible()
    expect(page.locator(".form-head .badge")).to_have_text("complete")
    graded = page.locator("#computed-grade")
    expect(graded.locator(".grade-result")).to_contain_text("CRS grade 3")
    expect(graded.locator(".grade-result")).to_contain_text("driven by Hypotension")
    expect(graded).to_contain_text("Components: Fever 1, Hypotension 3, Hypoxia (oxygen needed) 2")
    ae_link = graded.get_by_role("link", name=re.compile(r"^AE \d+$"))
    expect(ae_link).to_be_visible()
    expect(graded).to_contain_text("(worst grade 3)")
    ae_label = ae_link.inner_text()
    shot("17-crs-grade-3-computed")

    # --- follows the link to the AE: term, onset and grade come from the assessment ---
    ae_link.click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + r"/adverse-events/\d+$"))
    ae_url = page.url
    expect(page.get_by_role("heading", name=f"{ae_label}: {CRS_TERM}")).to_be_visible()
    head = page.locator(".form-head")
    expect(head.locator(".badge").nth(0)).to_have_text("draft")
    expect(head.locator(".badge.cat-crs")).to_have_text("CRS")
    expect(head).to_contain_text("worst grade 3 · computed (ASTCT) 3")
    expect(page.locator("#sae-clock")).to_have_count(0)  # not serious yet
    form = page.locator("#ae-form")
    expect(form.locator("#term")).to_have_value(CRS_TERM)
    expect(form.get_by_label("Onset date")).to_have_value(iso(today))
    expect(form.get_by_label("Ongoing", exact=True)).to_have_value("yes")
    expect(form.get_by_label("Grade (CTCAE v5.0)")).to_have_value("3")
    expect(page.locator("#grade-definitions dt")).to_have_count(5)  # CRS has grades 1 to 5

    # --- completes it as serious (hospitalisation), aware an hour ago ---
    form.get_by_label("Serious", exact=True).select_option("yes")
    form.get_by_label("Requires or prolongs hospitalisation").select_option("yes")
    form.get_by_label("Site became aware on").fill(iso(today))
    form.get_by_label("Site became aware at").fill(subject["aware_time"])
    form.get_by_label("Relationship to NK cells").select_option("probable")
    form.get_by_label("Relationship to lymphodepletion").select_option("unlikely")
    form.get_by_label("Expectedness").select_option("expected")
    form.get_by_label("Action taken with study treatment").select_option("none")
    form.get_by_label("Outcome", exact=True).select_option("recovering")
    form.get_by_label("Ongoing", exact=True).select_option("yes")
    shot("18-crs-ae-serious-filled")
    form.get_by_role("button", name="Save and mark complete").click()

    expect(page.locator(".flash.success")).to_have_text(f"{ae_label} saved. Marked complete.")
    expect(page.locator(".flash.warning")).to_have_text(
        "Serious adverse event: the investigator must submit the SAE report within 24 hours of site awareness."
    )
    expect(page).to_have_url(ae_url)
    expect(head.locator(".badge").nth(0)).to_have_text("complete")
    expect(page.locator(".flash.error")).to_have_count(0)
    expect(page.locator(".field.has-error")).to_have_count(0)

    # --- the SAE panel: aware time in site time, the 24-hour clock running ---
    aware_at = datetime.combine(today, datetime.strptime(subject["aware_time"], "%H:%M").time())
    due_at = aware_at + timedelta(hours=24)
    sae = page.locator("#sae-clock")
    expect(sae).to_be_visible()
    expect(sae.get_by_role("heading", name="Serious adverse event")).to_be_visible()
    expect(sae).to_contain_text(f"Site aware {aware_at:%Y-%m-%d %H:%M} UTC+8")
    badge = sae.locator(".badge.clock-due")
    expect(badge).to_have_count(1)
    expect(badge).to_have_text(
        re.compile(r"^due " + re.escape(f"{due_at:%Y-%m-%d %H:%M} UTC+8") + r" · (2[0-4]|1\d) h \d{1,2} min left$")
    )
    expect(sae.locator(".badge.clock-overdue")).to_have_count(0)
    # a coordinator cannot sign it: the investigator submits the report
    expect(sae.get_by_role("button", name=re.compile("Submit the SAE report"))).to_have_count(0)
    expect(sae).to_contain_text("The investigator submits the SAE report with an e-signature.")
    expect(sae).not_to_contain_text("SUSAR")  # expected: not a SUSAR
    # the saved answers are shown back
    expect(form.get_by_label("Serious", exact=True)).to_have_value("yes")
    expect(form.get_by_label("Requires or prolongs hospitalisation")).to_have_value("yes")
    expect(form.get_by_label("Site became aware at")).to_have_value(subject["aware_time"])
    expect(form.get_by_label("Relationship to NK cells")).to_have_value("probable")
    expect(form.get_by_label("Outcome", exact=True)).to_have_value("recovering")
    shot("19-crs-ae-sae-clock")

    # --- the subject's AE list: one more AE, serious, with its clock ---
    page.locator(".subject-header .subnav").get_by_role("link", name="Adverse events").click()
    expect(ae_rows).to_have_count(aes_before + 1)
    crs_row = ae_rows.filter(has=page.get_by_role("link", name=ae_label, exact=True))
    expect(crs_row.locator("td").nth(1)).to_contain_text(CRS_TERM)
    expect(crs_row.locator("td").nth(2)).to_have_text("3")
    expect(crs_row.locator("td").nth(5)).to_contain_text("SAE")
    expect(crs_row.locator("td").nth(5).locator(".badge.clock-due")).to_be_visible()
    expect(crs_row.locator("td").nth(6)).to_have_text("yes")

    # --- the term picker on a new AE form (not saved) ---
    page.get_by_role("link", name="Record an adverse event").click()
    expect(page).to_have_url(re.compile(re.escape(subject_url) + "/adverse-events/new$"))
    expect(page.get_by_role("heading", name="New adverse event")).to_be_visible()
    term = page.get_by_role("combobox", name="CTCAE term")
    term.press_sequentially("febrile neu", delay=30)
    options = page.locator("#term-options")
    expect(options).to_be_visible()
    expect(term).to_have_attribute("aria-expanded", "true")
    expect(options.get_by_role("option").first).to_contain_text("Febrile neutropenia")
    term.press("ArrowDown")
    expect(options.get_by_role("option").first).to_have_attribute("aria-selected", "true")
    shot("20-term-picker-options")
    term.press("Enter")
    expect(term).to_have_value("Febrile neutropenia")
    expect(options).to_be_hidden()
    grade = page.get_by_label("Grade (CTCAE v5.0)")
    values = grade.locator("option")
    expect(values).to_have_count(4)  # "not answered" and grades 3, 4, 5
    assert values.evaluate_all("opts => opts.map(o => o.value)") == ["", "3", "4", "5"]
    definitions = page.locator("#grade-definitions")
    expect(definitions.locator("dt")).to_have_text(["Grade 3", "Grade 4", "Grade 5"])
    expect(definitions.locator("dd").first).not_to_be_empty()
    expect(definitions).to_contain_text(re.compile(r"\w{10}"))
    expect(page.locator("#term-soc")).to_contain_text("MedDRA")
    shot("21-term-picker-febrile-neutropenia")
    log_out(page)

    # --- the investigator opens the SAE listing from the Safety pages ---
    log_in(page, "inv-hz")
    page.get_by_role("navigation").get_by_role("link", name="Safety").click()
    expect(page).to_have_url(re.compile(r"/safety/ae$"))
    page.get_by_role("navigation", name="Safety listings").get_by_role("link", name="SAE listing").click()
    expect(page).to_have_url(re.compile(r"/safety/sae(\?.*)?$"))
    expect(page.get_by_role("heading", name=re.compile("^Serious adverse event listing"))).to_be_visible()
    listing = page.locator("#listing")
    header = listing.locator("thead th")
    # the sorted column carries an arrow (the default order: onset, newest first)
    # on screen the times are the site's (the XLSX keeps UTC)
    expect(header).to_have_text(
        [
            re.compile(r"^\s*" + re.escape(label.replace(" (UTC)", " (site time)")) + r"(\s*[▲▼])?\s*$")
            for label in SAE_HEADER
        ]
    )
    expect(listing.locator("thead th[aria-sort=descending]")).to_have_attribute("data-key", "onset")
    crs_listed = listing.locator("tbody tr").filter(has_text=number).filter(has_text=CRS_TERM)
    expect(crs_listed).to_have_count(1)
    cells = crs_listed.locator("td")
    expect(cells.nth(SAE_HEADER.index("Subject"))).to_have_text(number)
    expect(cells.nth(SAE_HEADER.index("Site"))).to_have_text("HZ")
    expect(cells.nth(SAE_HEADER.index("AE"))).to_have_text(ae_label)
    expect(cells.nth(SAE_HEADER.index("Worst grade"))).to_have_text("3")
    expect(cells.nth(SAE_HEADER.index("Onset"))).to_have_text(iso(today))
    expect(cells.nth(SAE_HEADER.index("SAE report")).locator(".badge")).to_have_text("due")
    shot("22-sae-listing")
    # the clock columns are at the right of the scrolled table
    page.locator(".table-scroll").evaluate("box => { box.scrollLeft = box.scrollWidth; }")
    shot("23-sae-listing-clock-columns")

    # --- exports it as XLSX and reads it back ---
    with page.expect_download() as download_info:
        page.locator("#exports").get_by_role("link", name="Excel (XLSX)").click()
    download = download_info.value
    assert re.fullmatch(r".+_sae_listing_\d{8}T\d{4}Z\.xlsx", download.suggested_filename), download.suggested_filename
    path = tmp_path / download.suggested_filename
    download.save_as(path)

    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        sheet = workbook.worksheets[0]
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        about = {r[0]: r[1] for r in workbook["About"].iter_rows(values_only=True) if r and r[0]}
    finally:
        workbook.close()
    assert rows[0] == SAE_HEADER
    records = [dict(zip(SAE_HEADER, r, strict=False)) for r in rows[1:]]
    assert records and all(r["Site"] == "HZ" for r in records)  # the investigator's site only
    crs_records = [r for r in records if r["Subject"] == number and r["CTCAE term"] == CRS_TERM]
    assert len(crs_records) == 1, records
    crs = crs_records[0]
    assert crs["Worst grade"] == 3
    assert crs["AE"] == int(ae_label.removeprefix("AE "))
    assert crs["Attribution NK cells"] and "probable" in str(crs["Attribution NK cells"]).lower()
    assert crs["SAE report"] == "due"
    assert about["Rows"] == len(records)
    assert about["Exported by"] == f"{FULL_NAME['inv-hz']} (inv-hz)"
