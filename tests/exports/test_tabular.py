"""Listings as CSV, XLSX and PDF (PROTOCOL 8): what goes in comes back out.

No database: the PDF tests render without an app (a plain Jinja environment) and,
once, inside an app context that is never connected."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from datetime import date, datetime
from decimal import Decimal

import openpyxl
import pypdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellstudy.exports import tabular
from cellstudy.exports.tabular import CSV_BATCH_ROWS, Column, csv_stream, pdf_listing, write_xlsx

COLUMNS = [
    Column("subject", "Subject", 22),
    Column("ae_number", "AE #", 6, "int"),
    Column("term", "Term", 40),
    Column("grade", "Grade", 6, "int"),
    Column("onset_date", "Onset", 12, "date"),
    Column("serious", "Serious", 8, "bool"),
    Column("temp", "Max temp (°C)", 10, "number"),
]

TRICKY_ROWS = [
    {
        "subject": "CARNK-AML-01-HZ-001",
        "ae_number": 1,
        "term": "Fever",
        "grade": 1,
        "onset_date": date(2024, 3, 1),
        "serious": False,
        "temp": Decimal("38.5"),
    },
    {
        "subject": "CARNK-AML-01-HZ-001",
        "ae_number": 2,
        "term": 'Rash, "maculo-papular", itchy',
        "grade": 2,
        "onset_date": date(2024, 3, 9),
        "serious": True,
        "temp": None,
    },
    {
        "subject": "CARNK-AML-01-HZ-002",
        "ae_number": 3,
        "term": "line one\nline two\r\nline three",
        "grade": None,
        "onset_date": None,
        "serious": None,
        "temp": 39.25,
    },
    {
        "subject": "CARNK-AML-01-HZ-003",
        "ae_number": 4,
        "term": "王磊 发热",
        "grade": 3,
        "onset_date": "2024-04",
        "serious": "Unknown",
        "temp": 40,
    },
    {
        "subject": "CARNK-AML-01-HZ-004",
        "ae_number": 5,
        "term": '=HYPERLINK("http://x.invalid")',
        "grade": 4,
        "onset_date": date(2024, 12, 31),
        "serious": True,
        "temp": None,
    },
]


#: issue 13: what a spreadsheet would run as a formula (a number such as -2.5 is not)
FORMULA_START = "=+-@\t\r"
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def guarded(text: str) -> str:
    """The CSV's text for a cell `text`: a leading apostrophe on a would-be formula."""
    return "'" + text if text[:1] in FORMULA_START and text and not NUMBER.fullmatch(text) else text


def read_csv_text(text: str) -> list[list[str]]:
    """The rows of a CSV that must start with the UTF-8 byte-order mark."""
    assert text.startswith("\ufeff"), text[:40]
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def expected_text(row):
    """The CSV text each value must come back as."""

    def text(column, value):
        if value is None:
            return ""
        if column.kind == "bool" and isinstance(value, bool):
            return "Y" if value else "N"
        if column.kind == "date" and not isinstance(value, str):
            return value.isoformat()
        return guarded(str(value))

    return [text(c, row[c.key]) for c in COLUMNS]


def many_rows(n, term="Fever"):
    return (
        {
            "subject": f"CARNK-AML-01-HZ-{i:03d}",
            "ae_number": i,
            "term": term,
            "grade": 1 + i % 5,
            "onset_date": date(2024, 1, 1 + i % 28),
            "serious": i % 2 == 0,
            "temp": 38 + i % 3,
        }
        for i in range(n)
    )


# --- Column ---------------------------------------------------------------------------


def test_column_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        Column("x", "X", kind="datetime")


def test_a_missing_key_fails_loudly():
    with pytest.raises(KeyError):
        "".join(csv_stream(COLUMNS, [{"subject": "S"}]))


# --- CSV ------------------------------------------------------------------------------


def test_csv_round_trips_header_and_values():
    text = "".join(csv_stream(COLUMNS, TRICKY_ROWS))
    parsed = read_csv_text(text)
    assert parsed[0] == [c.label for c in COLUMNS]
    assert parsed[1:] == [expected_text(row) for row in TRICKY_ROWS]


def test_csv_conventions_none_bool_date_and_the_bom():
    text = "".join(csv_stream(COLUMNS, TRICKY_ROWS[:3]))
    assert text.startswith("\ufeffSubject,") and text.count("\ufeff") == 1
    assert "".join(csv_stream(COLUMNS, TRICKY_ROWS[:3], bom=False)) == text[1:]
    lines = text[1:].split("\r\n")
    assert lines[0] == "Subject,AE #,Term,Grade,Onset,Serious,Max temp (°C)"
    assert lines[1] == "CARNK-AML-01-HZ-001,1,Fever,1,2024-03-01,N,38.5"
    assert lines[2] == 'CARNK-AML-01-HZ-001,2,"Rash, ""maculo-papular"", itchy",2,2024-03-09,Y,'


def test_csv_guards_a_formula_looking_value():
    text = "".join(csv_stream(COLUMNS, TRICKY_ROWS[4:]))
    assert read_csv_text(text)[1][2] == '\'=HYPERLINK("http://x.invalid")'


def test_csv_of_no_rows_is_the_header():
    assert list(csv_stream(COLUMNS, [])) == ["\ufeffSubject,AE #,Term,Grade,Onset,Serious,Max temp (°C)\r\n"]


def test_csv_with_one_column():
    assert "".join(csv_stream([Column("a", "A")], [{"a": "x"}, {"a": None}])) == '\ufeffA\r\nx\r\n""\r\n'


_cell_text = st.one_of(st.none(), st.text(alphabet=st.sampled_from(list('ab ,"\r\n=王+-@\t1.e')), max_size=6))
_any_row = st.fixed_dictionaries(
    {
        "subject": _cell_text,
        "ae_number": st.one_of(st.none(), st.integers()),
        "term": _cell_text,
        "grade": st.one_of(st.none(), st.integers(1, 5)),
        "onset_date": st.one_of(st.none(), st.dates(), st.just("2024-03")),
        "serious": st.one_of(st.none(), st.booleans(), st.just("Unknown")),
        "temp": st.one_of(st.none(), st.floats(allow_nan=False), st.decimals(allow_nan=False, allow_infinity=False)),
    }
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(_any_row, max_size=8), ncols=st.integers(1, len(COLUMNS)))
def test_csv_fast_path_writes_what_the_csv_module_writes(rows, ncols):
    columns = COLUMNS[:ncols]
    reference = io.StringIO()
    writer = csv.writer(reference)
    writer.writerow([c.label for c in columns])
    for row in rows:
        writer.writerow(
            [
                None
                if row[c.key] is None
                else guarded(
                    str(
                        {True: "Y", False: "N"}.get(row[c.key], row[c.key])
                        if c.kind == "bool"
                        else row[c.key]
                        if c.kind != "date" or isinstance(row[c.key], str)
                        else row[c.key].isoformat()
                    )
                )
                for c in columns
            ]
        )
    assert "".join(csv_stream(columns, rows)) == "\ufeff" + reference.getvalue()


def test_csv_streams_in_chunks_without_reading_ahead():
    consumed = 0

    def rows():
        nonlocal consumed
        for row in many_rows(5000):
            consumed += 1
            yield row

    stream = csv_stream(COLUMNS, rows())
    first = next(stream)
    assert consumed <= CSV_BATCH_ROWS + 1  # one batch (islice may look at one more)
    assert first.startswith("\ufeffSubject,")
    chunks = [first, *stream]
    assert len(chunks) > 1
    parsed = read_csv_text("".join(chunks))
    assert len(parsed) == 5001
    assert parsed[-1][0] == "CARNK-AML-01-HZ-4999"


# --- XLSX -----------------------------------------------------------------------------

META = [
    ("Filters", "site = Hangzhou; grade >= 3"),
    ("Exported by", "dm.wang"),
    ("Export time (UTC)", "2024-05-01 10:00:00"),
]


def read_xlsx(path):
    return openpyxl.load_workbook(path)  # not read_only: freeze panes and widths are read too


def test_xlsx_values_types_and_layout(tmp_path):
    path = tmp_path / "ae.xlsx"
    assert write_xlsx(COLUMNS, TRICKY_ROWS, str(path), title="AE listing", meta=META) == len(TRICKY_ROWS)
    book = read_xlsx(path)
    assert book.sheetnames == ["AE listing", "About"]
    sheet = book["AE listing"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == tuple(c.label for c in COLUMNS)
    assert all(cell.font.b for cell in sheet[1])
    assert rows[1] == ("CARNK-AML-01-HZ-001", 1, "Fever", 1, datetime(2024, 3, 1), "N", 38.5)
    assert rows[2][2] == 'Rash, "maculo-papular", itchy' and rows[2][5] == "Y" and rows[2][6] is None
    # XlsxWriter stores a CR as the OOXML escape _x000D_, which Excel decodes; openpyxl does not
    assert rows[3][2] in ("line one\nline two\r\nline three", "line one\nline two_x000D_\nline three")
    assert rows[3][3:6] == (None, None, None) and rows[3][6] == 39.25
    assert rows[4][2] == "王磊 发热" and rows[4][4] == "2024-04" and rows[4][5] == "Unknown"
    # a formula-looking value stays text
    formula_cell = sheet.cell(row=6, column=3)
    assert formula_cell.data_type == "s" and formula_cell.value == '=HYPERLINK("http://x.invalid")'
    # types: ints and numbers are numbers, dates are real dates shown yyyy-mm-dd
    assert sheet.cell(row=2, column=2).data_type == "n"
    assert sheet.cell(row=2, column=7).data_type == "n"
    onset = sheet.cell(row=2, column=5)
    assert onset.is_date and onset.number_format == "yyyy-mm-dd"
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:G{len(TRICKY_ROWS) + 1}"
    for letter, column in zip("ABCDEFG", COLUMNS, strict=False):
        assert sheet.column_dimensions[letter].width == pytest.approx(column.width, abs=1)


def test_xlsx_about_sheet(tmp_path):
    path = tmp_path / "ae.xlsx"
    write_xlsx(COLUMNS, TRICKY_ROWS, path, title="AE listing", meta=META)
    about = list(read_xlsx(path)["About"].iter_rows(values_only=True))
    assert about[0][0] == "AE listing"
    pairs = {row[0]: row[1] for row in about[1:] if row[0]}
    assert pairs == {**dict(META), "Rows": len(TRICKY_ROWS)}


def test_xlsx_writes_to_a_file_object_and_sanitises_the_sheet_name():
    out = io.BytesIO()
    write_xlsx(COLUMNS, many_rows(3), out, title="SAE listing: sites [all]/2024?", meta=[])
    book = openpyxl.load_workbook(io.BytesIO(out.getvalue()))
    assert book.sheetnames[0] == "SAE listing sites all 2024"
    assert book.sheetnames[1] == "About"


def test_xlsx_with_no_rows(tmp_path):
    path = tmp_path / "empty.xlsx"
    assert write_xlsx(COLUMNS, [], path, title="AE listing", meta=META) == 0
    book = read_xlsx(path)
    sheet = book.worksheets[0]
    assert list(sheet.iter_rows(values_only=True)) == [tuple(c.label for c in COLUMNS)]
    assert sheet.auto_filter.ref == "A1:G1"
    assert {r[0]: r[1] for r in book["About"].iter_rows(values_only=True) if r[0]}["Rows"] == 0


def test_xlsx_many_rows_autofilter_covers_all(tmp_path):
    path = tmp_path / "many.xlsx"
    assert write_xlsx(COLUMNS, many_rows(1500), path, title="AE listing", meta=[]) == 1500
    sheet = read_xlsx(path).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) == 1501 and rows[-1][0] == "CARNK-AML-01-HZ-1499"
    assert sheet.auto_filter.ref == "A1:G1501"


def test_xlsx_failure_leaves_no_workbook(tmp_path):
    def rows():
        yield from many_rows(10)
        raise RuntimeError("cursor lost")

    path = tmp_path / "broken.xlsx"
    with pytest.raises(RuntimeError):
        write_xlsx(COLUMNS, rows(), path, title="AE listing", meta=[])
    assert not path.exists()


# --- PDF ------------------------------------------------------------------------------

PDF_META = [("Filters", "site = Hangzhou"), ("Exported", "2024-05-01 10:00 UTC by dm.wang")]


def pdf_text(pdf: bytes):
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return reader, [page.extract_text() for page in reader.pages]


@pytest.fixture(scope="module")
def long_pdf():
    return pdf_listing(
        COLUMNS,
        many_rows(150, term="Febrile neutropenia"),
        title="AE listing (all sites)",
        meta=PDF_META,
        footer="CARNK-AML-01 · confidential",
    )


def test_pdf_pages_headers_and_numbers(long_pdf):
    reader, pages = pdf_text(long_pdf)
    n = len(reader.pages)
    assert n >= 3
    assert "AE listing (all sites)" in pages[0]
    assert "site = Hangzhou" in pages[0]
    for i, text in enumerate(pages, start=1):
        assert f"Page {i} of {n}" in text
        assert "CARNK-AML-01 · confidential" in text
        assert "AE listing (all sites)" in text  # running header
        assert "2024-05-01 10:00 UTC" in text
    for text in pages[1:]:  # the column header repeats
        assert "Subject" in text and "Onset" in text and "Max temp (°C)" in text
    assert "CARNK-AML-01-HZ-149" in pages[-1]


def test_pdf_is_a4_landscape_with_metadata(long_pdf):
    reader = pypdf.PdfReader(io.BytesIO(long_pdf))
    box = reader.pages[0].mediabox
    assert float(box.width) > float(box.height)
    assert float(box.width) == pytest.approx(841.89, abs=1) and float(box.height) == pytest.approx(595.28, abs=1)
    assert reader.metadata.title == "AE listing (all sites)"
    assert reader.metadata.author == "CellStudy"


@pytest.fixture
def counting_fetcher(monkeypatch):
    # issue 5: every PDF of the app goes through cellstudy.pdf.render.fetch, which serves
    # the app's own static files only (tests/pdf/test_fetcher.py tests it in full)
    from cellstudy.pdf import render

    calls = []
    fetch = render.fetch

    def counting(url):
        calls.append(url)
        return fetch(url)

    monkeypatch.setattr(render, "fetch", counting)
    return calls


def test_the_fetcher_refuses_and_is_the_one_weasyprint_uses(counting_fetcher):
    # control for the next test: an <img> in the HTML does reach our fetcher
    from cellstudy.pdf import render

    pdf = render.html_to_pdf('<p>x</p><img src="http://example.invalid/logo.png"><img src="file:///etc/passwd">')
    assert pdf.startswith(b"%PDF")
    assert counting_fetcher == ["http://example.invalid/logo.png", "file:///etc/passwd"]
    with pytest.raises(ValueError):
        render.fetch("https://example.invalid/")


def test_pdf_shows_urls_and_markup_in_values_as_text(counting_fetcher):
    rows = [
        {**row, "term": term}
        for row, term in zip(
            many_rows(3),
            (
                '<img src="http://example.invalid/x.png">',
                "file:///etc/passwd",
                '<link rel="stylesheet" href="http://example.invalid/a.css">',
            ),
            strict=False,
        )
    ]
    pdf = pdf_listing(COLUMNS, rows, title="<b>AE</b> listing", meta=[("Filters", "<i>none</i>")], footer="f")
    assert counting_fetcher == ["https://cellstudy.invalid/static/pdf.css"]  # the stylesheet, nothing else
    reader, pages = pdf_text(pdf)
    text = " ".join(" ".join(pages).split())
    assert 'src="http://example.invalid/x.png"' in text
    assert "file:///etc/passwd" in text
    assert "<b>AE</b> listing" in text and "<i>none</i>" in text
    assert reader.metadata.title == "<b>AE</b> listing"


def test_pdf_with_no_rows():
    reader, pages = pdf_text(pdf_listing(COLUMNS, [], title="SAE listing", meta=[], footer=""))
    assert len(reader.pages) == 1
    assert "No rows match the filters." in pages[0] and "Page 1 of 1" in pages[0]


def test_pdf_inside_an_app_context_uses_the_app_templates():
    # an app that is never connected: the PDF needs no database
    from cellstudy import create_app

    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    with app.app_context():
        pdf = pdf_listing(COLUMNS, many_rows(2), title="AE listing", meta=PDF_META, footer="x")
    _, pages = pdf_text(pdf)
    assert "CARNK-AML-01-HZ-001" in pages[0]


def _has_cjk_font():
    if not shutil.which("fc-list"):
        return False
    out = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
    return "cjk" in out.lower() or "CJK" in out


@pytest.mark.skipif(not _has_cjk_font(), reason="no CJK font installed (fonts-noto-cjk; the Makefile adds it)")
def test_pdf_cjk_text_is_extracted_the_same():
    rows = [{**row, "term": "王磊 发热"} for row in many_rows(2)]
    _, pages = pdf_text(pdf_listing(COLUMNS, rows, title="不良事件 AE listing", meta=[], footer=""))
    assert "王磊 发热" in pages[0]
    assert "不良事件 AE listing" in pages[0]


# --- rows as values, and the XLSX writer against XlsxWriter (issue 4's speed work) ---------------

EDGE_TERMS = [
    " leading space",
    "trailing space ",
    "tab\tinside",
    "bell\x07and nul\x00",
    "literal _x0041_ escape",
    "a & b < c > d",
    "quote \" and apostrophe '",
    "\u00e9\u00e8 \U0001f600",
    "",
    "x" * 300,
    "\ufffe non-character",
]


def test_rows_as_values_give_the_same_csv_and_xlsx(tmp_path):
    from operator import itemgetter

    values = [itemgetter(*[c.key for c in COLUMNS])(r) for r in TRICKY_ROWS]
    assert "".join(csv_stream(COLUMNS, values, values=True)) == "".join(csv_stream(COLUMNS, TRICKY_ROWS))
    write_xlsx(COLUMNS, TRICKY_ROWS, tmp_path / "dicts.xlsx", title="AE listing", meta=META)
    write_xlsx(COLUMNS, iter(values), tmp_path / "values.xlsx", title="AE listing", meta=META, values=True)
    a, b = read_xlsx(tmp_path / "dicts.xlsx"), read_xlsx(tmp_path / "values.xlsx")
    for sa, sb in zip(a.worksheets, b.worksheets, strict=False):
        assert [[(c.value, c.data_type, c.number_format) for c in r] for r in sa.iter_rows()] == [
            [(c.value, c.data_type, c.number_format) for c in r] for r in sb.iter_rows()
        ]


def test_xlsx_cells_are_the_ones_xlsxwriter_writes(tmp_path):
    """The app's XLSX writer against XlsxWriter (constant_memory, as the app used it
    before) for the same rows: every cell's value, type, number format and font, the
    frozen header, the autofilter and the column widths read back the same."""
    import xlsxwriter

    rows = TRICKY_ROWS + [{**TRICKY_ROWS[0], "term": term, "ae_number": 10 + i} for i, term in enumerate(EDGE_TERMS)]
    rows += [
        {**TRICKY_ROWS[0], "onset_date": datetime(2024, 3, 1, 13, 30), "grade": True, "temp": 1e-7},
        {**TRICKY_ROWS[0], "onset_date": date(1900, 1, 15), "temp": 12345678901234567},
    ]
    ours = tmp_path / "ours.xlsx"
    write_xlsx(COLUMNS, rows, ours, title="AE listing", meta=META)
    theirs = tmp_path / "xlsxwriter.xlsx"
    book = xlsxwriter.Workbook(
        str(theirs),
        {
            "constant_memory": True,
            "default_date_format": "yyyy-mm-dd",
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    bold = book.add_format({"bold": True})
    sheet = book.add_worksheet("AE listing")
    for i, column in enumerate(COLUMNS):
        sheet.set_column(i, i, column.width)
    sheet.write_row(0, 0, [c.label for c in COLUMNS], bold)
    sheet.freeze_panes(1, 0)
    for n, row in enumerate(rows, start=1):
        sheet.write_row(
            n,
            0,
            [
                tabular._yn(row[c.key])
                if c.kind == "bool"
                else tabular._text(row[c.key])
                if c.kind == "text"
                else row[c.key]
                for c in COLUMNS
            ],
        )
    sheet.autofilter(0, 0, len(rows), len(COLUMNS) - 1)
    about = book.add_worksheet("About")
    about.set_column(0, 0, 24)
    about.set_column(1, 1, 80)
    about.write_string(0, 0, "AE listing", bold)
    for line, (label, value) in enumerate(META, start=2):
        about.write_string(line, 0, label, bold)
        about.write_string(line, 1, value)
    about.write_string(len(META) + 2, 0, "Rows", bold)
    about.write_number(len(META) + 2, 1, len(rows))
    book.close()
    a, b = read_xlsx(ours), read_xlsx(theirs)
    assert a.sheetnames == b.sheetnames
    for sa, sb in zip(a.worksheets, b.worksheets, strict=False):
        cells_a = [[(c.value, c.data_type, c.number_format, c.font.b) for c in r] for r in sa.iter_rows()]
        cells_b = [[(c.value, c.data_type, c.number_format, c.font.b) for c in r] for r in sb.iter_rows()]
        assert cells_a == cells_b
        assert (sa.freeze_panes, sa.auto_filter.ref) == (sb.freeze_panes, sb.auto_filter.ref)
        assert {k: d.width for k, d in sa.column_dimensions.items()} == {
            k: d.width for k, d in sb.column_dimensions.items()
        }


def test_xlsx_sheets_state_their_dimensions_for_read_only_readers(tmp_path):
    """openpyxl's read-only mode (and other streaming readers) size the rows by the
    sheet's <dimension>: every row comes back as wide as the sheet."""
    path = tmp_path / "ae.xlsx"
    write_xlsx(COLUMNS, TRICKY_ROWS, path, title="AE listing", meta=META)
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        listing = list(book.worksheets[0].iter_rows(values_only=True))
        about = list(book["About"].iter_rows(values_only=True))
        assert book.worksheets[0].calculate_dimension() == f"A1:G{len(TRICKY_ROWS) + 1}"
    finally:
        book.close()
    assert {len(r) for r in listing} == {len(COLUMNS)} and len(listing) == len(TRICKY_ROWS) + 1
    assert {len(r) for r in about} == {2}
    assert about[0] == ("AE listing", None)


# --- PDF: the table fits its paper (issue 13) ------------------------------------------------


def _pdf_size(columns, rows):
    pdf = pdf_listing(columns, rows, title="Wide listing", meta=[], footer="test")
    box = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].mediabox
    return round(float(box.width)), round(float(box.height))


def test_a_listing_that_fits_stays_a4_landscape_and_a_wider_one_goes_to_a3():
    narrow = [Column(f"c{i}", f"Column {i}") for i in range(8)]
    assert _pdf_size(narrow, [{c.key: "2026-12-01" for c in narrow}]) == (842, 595)  # A4 landscape
    wide = [Column(f"c{i}", f"Attribution{i}") for i in range(30)]
    assert _pdf_size(wide, [{c.key: "10019211" for c in wide}]) == (1191, 842)  # A3 landscape


def test_the_fit_prefers_a_smaller_font_on_a4_to_a3():
    labels = [f"Column{i}" for i in range(20)]
    body = [["2026-12-01"] * 20]
    paper, size = tabular._pdf_fit(labels, body, [True] * 20)
    assert paper == "A4" and size < 7.5


def test_only_an_overlong_free_text_word_is_marked_breakable():
    assert tabular._breakable("Transient pancytopenia") == "Transient pancytopenia"
    url = "https://lab.example.invalid/reports/2026/haematology/pancytopenia-1"
    marked = tabular._breakable(f"see <{url}>")
    assert str(marked) == f'see <span class="breakable">&lt;{url}&gt;</span>'
