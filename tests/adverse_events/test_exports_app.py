"""Exports of the safety listings (issue 4; PROTOCOL 8): CSV, XLSX and PDF of each
listing and summary, and the CDISC SDTM AE domain. The files are parsed back (csv,
openpyxl, pypdf) and compared with the database; every export is audited with its
filters and row count; only export_safety roles (investigator, monitor, data manager)
get files, and only of their sites.

The data is the demo study plus tests/adverse_events/test_listings_app.py's
`safety_data`; the expectations come from the ORM rows, computed here."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date

import pytest
from sqlalchemy import select

from cellstudy.auth.models import Site
from cellstudy.auth.policy import ALL_SITES
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord
from tests.adverse_events.test_listings_app import (
    ATTRIBUTION,
    d,
    expected,
    expected_crs_icans,  # noqa: F401
    expected_summary,
    flatten,
    safety_data,  # noqa: F401  (a fixture)
)

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
AE_HEADER = [
    "Subject",
    "Site",
    "Dose level",
    "Study day",
    "AE",
    "CTCAE term",
    "System organ class",
    "MedDRA code",
    "Verbatim term",
    "Worst grade",
    "Serious",
    "Attribution NK cells",
    "Attribution lymphodepletion",
    "DLT",
    "Onset",
    "End",
    "Outcome",
    "Form status",
]
OUTCOME = {
    "recovered": "Recovered / resolved",
    "recovering": "Recovering / resolving",
    "not_recovered": "Not recovered / not resolved",
    "fatal": "Fatal",
}


def yn(value):
    return "" if value is None else ("Y" if value else "N")


def csv_row(r) -> list[str]:
    """How an expected AE must read in the CSV."""
    ae = r.ae
    end = ae.end_date.isoformat() if ae.end_date else ("Ongoing" if ae.ongoing else "")
    return [
        r.subject,
        r.site,
        r.dose_level or "",
        "" if r.day is None else str(r.day),
        str(ae.number),
        ae.term,
        ae.soc,
        ae.meddra_code,
        ae.verbatim or "",
        "" if ae.grade is None else str(ae.grade),
        yn(ae.serious),
        ATTRIBUTION.get(ae.related_nk, ""),
        ATTRIBUTION.get(ae.related_ld, ""),
        yn(ae.dlt),
        ae.onset_date.isoformat(),
        end,
        OUTCOME.get(ae.outcome, ae.outcome or ""),
        ae.status,
    ]


def read_csv(response) -> list[list[str]]:
    data = response.get_data()
    assert data.startswith(b"\xef\xbb\xbf")  # issue 13: every CSV starts with the UTF-8 BOM
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def exports(app) -> list[AuditRecord]:
    with app.app_context():
        rows = db.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "export").order_by(AuditRecord.id)
        ).all()
        db.session.expunge_all()
        db.session.remove()
    return rows


# --- CSV ------------------------------------------------------------------------------------------


def test_ae_listing_csv_matches_the_database(app, login, safety_data):
    response = login("dm").get("/safety/ae.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="CAR-NK-CLL1-CD33-AML_ae_listing_\d{8}T\d{4}Z\.csv"', disposition)
    rows = read_csv(response)
    assert rows[0] == AE_HEADER
    order = sorted(expected(app), key=lambda r: (r.ae.onset_date, r.id), reverse=True)
    assert rows[1:] == [csv_row(r) for r in order]


def test_filtered_and_sorted_csv_and_its_audit_record(app, login, safety_data):
    response = login("inv-hz").get("/safety/ae.csv?grade_min=2&te_only=1&sort=subject&dir=asc")
    rows = read_csv(response)[1:]
    wanted = sorted(
        (r for r in expected(app, ("HZ",)) if (r.ae.grade or 0) >= 2 and r.ae.treatment_emergent),
        key=lambda r: (r.subject, r.ae.number),
    )
    assert rows == [csv_row(r) for r in wanted]
    [record] = exports(app)
    assert (record.username, record.form, record.field, record.subject_id) == ("inv-hz", "safety_ae", "csv", None)
    assert json.loads(record.new_value) == {
        "filters": {"grade_min": 2, "te_only": True},
        "rows": len(wanted),
        "sites": ["HZ"],
    }


def test_sae_and_dlt_csv(app, login, safety_data):
    session = login("monitor-hz")
    sae = read_csv(session.get("/safety/sae.csv?sort=subject"))
    assert sae[0][:4] == ["Subject", "Site", "Dose level", "AE"] and "SAE report due (UTC)" in sae[0]
    wanted = sorted((r for r in expected(app, ("HZ",)) if r.ae.serious), key=lambda r: (r.subject, r.ae.number))
    assert [(row[0], int(row[3])) for row in sae[1:]] == [(r.subject, r.ae.number) for r in wanted]
    header = sae[0]
    fn = dict(zip(header, next(row for row in sae[1:] if row[0] == "HZ-101" and row[3] == "3"), strict=False))
    assert fn["SAE report"] == "late" and fn["SUSAR"] == "Y" and fn["SUSAR report"] == "overdue"
    assert fn["Site aware (UTC)"] == f"{d(-29).isoformat()} 10:00 UTC"
    assert fn["SAE report submitted (UTC)"] == f"{d(-28).isoformat()} 16:00 UTC"
    assert fn["Seriousness criteria"] == "Hospitalisation"
    dlt = read_csv(session.get("/safety/dlt.csv"))
    assert sorted(row[0] + "/" + row[4] for row in dlt[1:]) == sorted(
        f"{r.subject}/{r.ae.number}" for r in expected(app, ("HZ",)) if r.ae.dlt
    )


def test_csv_exports_only_the_users_sites(app, login, safety_data):
    rows = read_csv(login("inv-nb").get("/safety/ae.csv"))[1:]
    assert {row[1] for row in rows} == {"NB"}
    assert len(rows) == len(expected(app, ("NB",)))


# --- XLSX -----------------------------------------------------------------------------------------


def test_ae_listing_xlsx_matches_the_database_with_an_about_sheet(app, login, safety_data):
    from openpyxl import load_workbook

    response = login("dm").get("/safety/ae.xlsx?site=HZ&serious_only=1")
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert re.search(
        r'filename="?CAR-NK-CLL1-CD33-AML_ae_listing_\d{8}T\d{4}Z\.xlsx', response.headers["Content-Disposition"]
    )
    book = load_workbook(io.BytesIO(response.data))
    sheet, about = book.worksheets
    assert sheet.freeze_panes == "A2"
    values = list(sheet.iter_rows(values_only=True))
    assert list(values[0]) == AE_HEADER
    wanted = sorted(
        (r for r in expected(app, ("HZ",)) if r.ae.serious), key=lambda r: (r.ae.onset_date, r.id), reverse=True
    )
    assert len(values) - 1 == len(wanted)
    for row, r in zip(values[1:], wanted, strict=False):
        assert row[0] == r.subject and row[4] == r.ae.number and row[5] == r.ae.term
        assert row[9] == r.ae.grade and row[10] == yn(r.ae.serious)
        assert row[14].date() == r.ae.onset_date  # a date cell, not text
        assert row[3] == r.day
    info = {row[0]: row[1] for row in about.iter_rows(values_only=True) if row[0]}
    assert info["Filters"] == "Site HZ; Serious only"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", info["Exported at"])
    assert info["Exported by"].endswith("(dm)") and info["Rows"] == len(wanted)
    assert info["Protocol"].startswith("CAR-NK-CLL1-CD33-AML")
    [record] = exports(app)
    assert record.field == "xlsx" and json.loads(record.new_value)["rows"] == len(wanted)
    assert json.loads(record.new_value)["filters"] == {"site": "HZ", "serious_only": True}
    assert record.site_id is not None  # the site filtered on


def test_summary_xlsx_and_csv_match_the_summary(app, login, safety_data):
    from openpyxl import load_workbook

    table, n = expected_summary(app)
    session = login("dm")
    rows = read_csv(session.get("/safety/summary.csv"))
    assert rows[0][:2] == ["System organ class", "CTCAE term"]
    assert rows[0][2] == f"DL1 (N={n['DL1']}) Grade 1" and rows[0][-1] == f"Overall (N={n['Overall']}) Grade ≥ 3"
    got = {}
    for row in rows[1:]:
        soc, term = row[0], row[1]
        key = (None, None) if soc == "Any adverse event" else (soc, None if term == "All terms" else term)
        got[key] = [int(x) for x in row[2:]]
    assert got == {key: flatten(cells) for key, cells in table.items()}
    book = load_workbook(io.BytesIO(session.get("/safety/summary.xlsx").data))
    values = list(book.worksheets[0].iter_rows(values_only=True))
    assert [list(v) for v in values[1:]] == [[r[0], r[1] or None, *map(int, r[2:])] for r in rows[1:]]


def test_crs_icans_csv(app, login, safety_data):
    rows = read_csv(login("dm").get("/safety/crs-icans.csv"))
    wanted = expected_crs_icans(app)
    n = wanted["crs", "Overall"]["N"]
    assert rows[0] == [
        "Event",
        "Measure",
        *(f"{g} (N={wanted['crs', g]['N']})" for g in ("DL1", "DL2", "DL3")),
        f"Overall (N={n})",
    ]
    line = next(r for r in rows if r[0] == "CRS" and r[1].startswith("Subjects with CRS"))
    e = wanted["crs", "Overall"]
    assert line[-1] == f"{e['n']}/{e['N']} ({100 * e['n'] / e['N']:.1f}%)"


# --- PDF ------------------------------------------------------------------------------------------


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


@pytest.mark.parametrize(
    "listing, title",
    [
        ("sae", "Serious adverse event listing"),
        ("summary", "Subjects with adverse events by system organ class"),
        ("crs-icans", "CRS and ICANS summary"),
    ],
)
def test_pdf_has_the_title_filters_and_page_numbers(app, login, safety_data, listing, title):
    response = login("inv-hz").get(f"/safety/{listing}.pdf?te_only=1")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF")
    content = pdf_text(response.data)
    flat = " ".join(content.split())
    assert title in flat and "Page 1 of" in flat
    assert "Treatment-emergent only" in flat and "UTC" in flat
    [record] = exports(app)
    assert record.form == f"safety_{listing.replace('-', '_')}" and record.field == "pdf"
    assert json.loads(record.new_value)["filters"] == {"te_only": True}


def test_ae_listing_pdf_rows(app, login, safety_data):
    content = " ".join(pdf_text(login("dm").get("/safety/ae.pdf?site=NB").data).split())
    for r in expected(app, ("NB",)):
        assert r.subject in content
    assert "HZ-101" not in content


def test_a_pdf_too_long_to_print_is_refused_with_a_message(app, login, safety_data, monkeypatch):
    from cellstudy.safety import routes as listing_routes

    monkeypatch.setattr(listing_routes, "PDF_MAX_ROWS", 3)
    session = login("dm")
    response = session.get("/safety/ae.pdf?grade_min=1")
    assert response.status_code == 302 and response.location.endswith("/safety/ae?grade_min=1")
    page = session.get(response.location).get_data(as_text=True)
    assert "The PDF is limited to 3 rows" in page and "export it as XLSX or CSV" in page
    assert exports(app) == []  # nothing went out


# --- SDTM AE ---------------------------------------------------------------------------------------------


def test_sdtm_ae_domain(app, login, safety_data):
    from cellstudy.exports.sdtm import AE_NAMES

    response = login("dm").get("/safety/sdtm/ae.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert re.search(
        r'filename="CAR-NK-CLL1-CD33-AML_sdtm_ae_\d{8}T\d{4}Z\.csv"', response.headers["Content-Disposition"]
    )
    rows = read_csv(response)
    assert rows[0] == list(AE_NAMES)
    assert rows[0][:4] == ["STUDYID", "DOMAIN", "USUBJID", "AESEQ"]
    records = [dict(zip(rows[0], row, strict=False)) for row in rows[1:]]
    complete = [r for r in expected(app) if r.ae.status == "complete"]
    assert len(records) == len(complete)  # drafts and removed AEs are not data
    for rec in records:
        assert rec["STUDYID"] == "CAR-NK-CLL1-CD33-AML" and rec["DOMAIN"] == "AE"
        assert ISO_DATE.match(rec["AESTDTC"]) and (rec["AEENDTC"] == "" or ISO_DATE.match(rec["AEENDTC"]))
    # AESEQ numbers each subject's records 1, 2, ... in onset order
    by_subject = {}
    for rec in records:
        by_subject.setdefault(rec["USUBJID"], []).append(rec)
    for recs in by_subject.values():
        assert [int(r["AESEQ"]) for r in recs] == list(range(1, len(recs) + 1))
        assert [r["AESTDTC"] for r in recs] == sorted(r["AESTDTC"] for r in recs)
    # one record checked against the database
    fn = next(r for r in complete if r.subject == "HZ-101" and r.ae.number == 3)
    rec = next(r for r in by_subject["CAR-NK-CLL1-CD33-AML-HZ-101"] if r["AESPID"] == "3")
    assert (rec["AETERM"], rec["AEDECOD"], rec["AEBODSYS"], rec["AETOXGR"], rec["AESER"]) == (
        "Febrile neutropenia",
        "Febrile neutropenia",
        fn.ae.soc,
        "4",
        "Y",
    )
    assert rec["AESTDTC"] == fn.ae.onset_date.isoformat() and rec["AESTDY"] == str(fn.day) == "12"
    assert rec["AEENDY"] == str((fn.ae.end_date - fn.first).days + 1)
    assert rec["AESHOSP"] == "Y" and rec["AESDTH"] == "N"
    [record] = exports(app)
    assert (record.form, record.field) == ("safety_sdtm_ae", "csv")
    assert json.loads(record.new_value) == {"filters": {}, "rows": len(complete), "sites": "all"}


def test_sdtm_ae_of_an_investigator_has_only_the_sites_subjects(app, login, safety_data):
    rows = read_csv(login("inv-nb").get("/safety/sdtm/ae.csv"))[1:]
    assert rows and all("-NB-" in row[2] for row in rows)


# --- who may export ---------------------------------------------------------------------------------------

EXPORT_URLS = [
    f"/safety/{listing}.{fmt}"
    for listing in ("ae", "sae", "dlt", "summary", "crs-icans")
    for fmt in ("csv", "xlsx", "pdf")
] + ["/safety/sdtm/ae.csv"]


def test_coordinators_and_admins_may_not_export(app, login, safety_data):
    for username in ("coord-hz", "coord-nb", "admin"):
        session = login(username)
        for url in EXPORT_URLS:
            assert session.get(url).status_code == 403, (username, url)
    assert exports(app) == []
    assert app.test_client().get("/safety/ae.csv").status_code == 302  # anonymous: to the login page


def test_every_export_works_for_a_monitor_and_is_audited(app, login, safety_data):
    session = login("monitor-hz")
    for url in EXPORT_URLS:
        response = session.get(url)
        assert response.status_code == 200, url
        assert len(response.data) > 100, url
    records = exports(app)
    assert len(records) == len(EXPORT_URLS)
    assert all(r.username == "monitor-hz" and r.action == "export" for r in records)
    assert [(r.form, r.field) for r in records] == [
        (
            f"safety_{u.split('/')[-1].split('.')[0].replace('-', '_')}" if "sdtm" not in u else "safety_sdtm_ae",
            u.rsplit(".", 1)[1],
        )
        for u in EXPORT_URLS
    ]


def test_an_export_with_a_bad_filter_goes_back_to_the_page(app, login, safety_data):
    session = login("dm")
    response = session.get("/safety/sae.csv?grade_min=9&site=HZ")
    assert response.status_code == 302
    assert response.location.startswith("/safety/sae?") and "grade_min=9" in response.location
    page = session.get(response.location).get_data(as_text=True)
    assert "Nothing was exported" in page and "is not a grade from 1 to 5" in page
    assert exports(app) == []


def test_exported_file_names_carry_the_protocol_and_utc_time(login, safety_data):
    session = login("dm")
    today = date.today().strftime("%Y%m%d")
    for url, part in (
        ("/safety/summary.pdf", "ae_summary"),
        ("/safety/crs-icans.xlsx", "crs_icans_summary"),
        ("/safety/dlt.csv", "dlt_listing"),
    ):
        disposition = session.get(url).headers["Content-Disposition"]
        assert f"CAR-NK-CLL1-CD33-AML_{part}_" in disposition, url
        assert re.search(r"_(\d{8})T\d{4}Z\.", disposition).group(1) >= today[:6], url


# --- the export path at scale (issue 4's speed work) -----------------------------------------------


@pytest.mark.parametrize(
    "kind, query",
    [
        ("ae", {}),
        ("ae", {"sort": "subject", "dir": "desc"}),
        ("ae", {"sort": "grade", "dir": "desc"}),
        ("ae", {"sort": "onset", "dir": "asc", "site": "HZ"}),
        ("ae", {"grade_min": "2", "te_only": "1"}),
        ("ae", {"dose_level": "DL1", "related_only": "1"}),
        ("dlt", {}),
        ("sae", {"sort": "sae_due"}),
    ],
)
def test_export_values_are_the_listing_rows_in_column_order(app, safety_data, kind, query):
    """`iter_listing_values` (what the CSV and XLSX write) gives, row for row, the values
    of the page's row dicts in the export's column order, for every listing and order."""
    from operator import itemgetter

    from cellstudy.safety import listings
    from cellstudy.safety.filters import AE_SORTS, SAE_SORTS, parse_filters

    with app.app_context():
        filters, errors = parse_filters(query, sorts=SAE_SORTS if kind == "sae" else AE_SORTS)
        assert not errors
        keys = [c.key for c in listings.listing_columns(kind)]
        for sites in (ALL_SITES, [db.session.scalar(select(Site.id).where(Site.code == "NB"))]):
            rows = [itemgetter(*keys)(r) for r in listings.iter_listing(kind, filters, sites)]
            assert rows or sites is not ALL_SITES  # the safety data has rows for each case (all sites)
            assert list(listings.iter_listing_values(kind, filters, sites)) == rows
        db.session.rollback()


def test_listing_queries_use_their_indexes_on_sqlite(app, safety_data):
    """SQLite has no planner statistics: the listing names the index of its count and of
    its newest-first, worst-grade-first and subject orders (INDEXED BY, which
    SQLAlchemy's SQLite compiler would drop without safety.queries._sqlite_table_hint), and
    `sort=subject` reads the subjects first."""
    from sqlalchemy import func
    from sqlalchemy import text as sql_text

    from cellstudy.safety import listings
    from cellstudy.safety.filters import parse_filters
    from cellstudy.safety.queries import listing_order, listing_select, listing_where
    from cellstudy.adverse_events.models import LISTING_COUNT_INDEX, AdverseEvent

    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite's query plans")

        def plan(stmt) -> str:
            compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
            return " | ".join(r[-1] for r in db.session.execute(sql_text(f"EXPLAIN QUERY PLAN {compiled}")))

        filters, _ = parse_filters({"site": "HZ", "grade_min": "2"})
        count = (
            select(func.count())
            .select_from(AdverseEvent)
            .where(*listing_where("ae", filters, ALL_SITES))
            .with_hint(AdverseEvent, f"INDEXED BY {LISTING_COUNT_INDEX}", "sqlite")
        )
        assert "COVERING INDEX ix_adverse_event_listing_count" in plan(count)
        for query, index in (
            ({}, "ix_adverse_event_onset"),
            ({"sort": "grade", "dir": "desc"}, "ix_adverse_event_grade_id"),
            ({"sort": "subject"}, "ix_adverse_event_subject_id"),
        ):
            filters, _ = parse_filters(query)
            stmt = listing_select("ae", filters, ALL_SITES).order_by(*listing_order(filters)).limit(50)
            shown = plan(stmt)
            assert f"USING INDEX {index}" in shown, shown
            if query.get("sort") == "subject":
                assert "SCAN subject USING INDEX ix_subject_label" in shown, shown
                assert shown.index("SCAN subject") < shown.index("adverse_event"), shown
        # and the count the page shows is the count of the rows
        filters, _ = parse_filters({"site": "HZ", "grade_min": "2"})
        assert listings.count("ae", filters, ALL_SITES) == sum(
            1 for _ in listings.iter_listing("ae", filters, ALL_SITES)
        )
        db.session.rollback()
