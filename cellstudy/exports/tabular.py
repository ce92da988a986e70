"""One listing, three formats: CSV (streamed), XLSX (constant memory), PDF (WeasyPrint).

PROTOCOL 8: the safety listings go out as CSV, XLSX and PDF. The caller (a view) runs
the site-scoped query and passes the rows as an iterable of dicts, plus the columns:
this module never touches the database, so the same rows give the same values in
every format.

Values are converted by the column's declared ``kind`` (the type is decided once per
column, never guessed per cell, which keeps a 100,000-row export fast):

=========  ===========================  ===========================  ================
kind       CSV                          XLSX                         PDF
=========  ===========================  ===========================  ================
text       ``str(value)``               string cell (never a         ``str(value)``
                                        formula or a link)
int        ``str(value)``               number cell                  ``str(value)``
number     ``str(value)``               number cell                  ``str(value)``
date       ISO 8601 (``isoformat()``)   date cell, ``yyyy-mm-dd``    ISO 8601
bool       ``Y`` / ``N``                ``Y`` / ``N``                ``Y`` / ``N``
=========  ===========================  ===========================  ================

``None`` is always an empty cell; a string in a date, bool or number column is written
as given (e.g. a partial date "2024-03" or "Unknown").

A missing key in a row raises ``KeyError``: a misspelt column key must fail loudly,
not export an empty column.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any, BinaryIO

KINDS = frozenset({"text", "int", "date", "bool", "number"})

#: rows per CSV chunk: a 1,000-row chunk of a typical AE listing is 100-200 KB,
#: big enough that the per-chunk cost vanishes, small enough to stream
CSV_BATCH_ROWS = 1000

PDF_TEMPLATE = "exports/listing_pdf.html"
PDF_AUTHOR = "CellStudy"


@dataclass(frozen=True)
class Column:
    """One column of a listing.

    ``width`` is the XLSX column width in characters; in the PDF the widths are
    relative (each column gets ``width / sum(widths)`` of the table)."""

    key: str
    label: str
    width: int = 14
    kind: str = "text"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Column {self.key!r}: kind must be one of {sorted(KINDS)}, not {self.kind!r}")
        if self.width <= 0:
            raise ValueError(f"Column {self.key!r}: width must be positive")


# --- per-kind converters ------------------------------------------------------------

_YN = {True: "Y", False: "N"}


def _yn(value: Any) -> Any:
    return _YN.get(value, value)  # None and strings ("Unknown") pass through


def _iso(value: Any) -> Any:
    return value if value is None or value.__class__ is str else value.isoformat()


def _text(value: Any) -> Any:
    return value if value is None or value.__class__ is str else str(value)


def _display(value: Any) -> str:
    return "" if value is None else str(value)


# CSV: the csv module already writes None as "" and str()s numbers and text
_CSV_CONVERTERS: dict[str, Callable | None] = {"text": None, "int": None, "number": None,
                                               "date": _iso, "bool": _yn}
# XLSX: numbers and dates stay typed for write_row; text is forced to str
_XLSX_CONVERTERS: dict[str, Callable | None] = {"text": _text, "int": None, "number": None,
                                                "date": None, "bool": _yn}
# PDF: everything becomes display text
_PDF_CONVERTERS: dict[str, Callable] = {
    "text": _display, "int": _display, "number": _display,
    "date": lambda v: _display(_iso(v)), "bool": lambda v: _display(_yn(v)),
}


def _getter(columns: Sequence[Column]) -> Callable[[Any], tuple]:
    """row -> tuple of the columns' values (itemgetter: one C call per row)."""
    if not columns:
        raise ValueError("A listing needs at least one column")
    keys = [c.key for c in columns]
    if len(keys) > 1:
        return itemgetter(*keys)
    key = keys[0]
    return lambda row: (row[key],)


def _row_maker(columns: Sequence[Column], converters: dict[str, Callable | None]) -> Callable[[Any], Sequence]:
    """A function row dict -> sequence of cell values, with the converters precomputed:
    the per-row work is one itemgetter call plus one call per converted column."""
    get = _getter(columns)
    convert = [(i, converters[c.kind]) for i, c in enumerate(columns) if converters[c.kind] is not None]
    if not convert:
        return get

    def make(row):
        values = list(get(row))
        for i, fn in convert:
            values[i] = fn(values[i])
        return values

    return make


# --- CSV ------------------------------------------------------------------------------

def _csv_line_maker(columns: Sequence[Column]) -> Callable[[Any], str]:
    """A function row dict -> the row's CSV line *before quoting* (fields joined by
    commas, no line end), converting each field like ``_CSV_CONVERTERS`` + str().

    Built once per export as one f-string (the source holds only the column
    positions and the kind's expression, never a key or a value): it is about twice
    as fast as the csv module, which matters for a 100,000-row export. Only rows that
    need no quoting use it; csv_stream checks that and lets the csv module write the
    others."""
    get = _getter(columns)
    fields = []
    for i, column in enumerate(columns):
        v = f"v{i}"
        if column.kind == "date":
            expr = f"'' if {v} is None else {v} if {v}.__class__ is str else {v}.isoformat()"
        elif column.kind == "bool":
            expr = f"'' if {v} is None else _YN.get({v}, {v})"
        else:
            expr = f"'' if {v} is None else {v}"
        fields.append("{(" + expr + ")!s}")
    names = ", ".join(f"v{i}" for i in range(len(columns)))
    source = f'def line(row):\n    {names}, = _get(row)\n    return f"{",".join(fields)}"\n'
    namespace = {"_get": get, "_YN": _YN}
    exec(compile(source, "<csv line>", "exec"), namespace)  # noqa: S102 (no data in the source)
    return namespace["line"]


def csv_stream(columns: Sequence[Column], rows: Iterable[dict]) -> Iterator[str]:
    """The listing as CSV text, yielded in chunks of ``CSV_BATCH_ROWS`` rows.

    RFC 4180 (the csv module's "excel" dialect, QUOTE_MINIMAL): comma separated,
    a field quoted when it holds a comma, a double quote or a line break, CRLF line
    ends; the header row holds the column labels. Encode the chunks as UTF-8. No
    byte-order mark: the CSV is for statistical software (SAS, R, Python), which
    would read a BOM as part of the first header; Excel users take the XLSX. Cells
    starting with "=" are not altered either (no CSV-injection prefix): the file must
    round-trip the data exactly.

    Streams: at most one batch of rows is held at a time, so the rows may come from
    a server-side cursor of any length."""
    columns = list(columns)
    make = _row_maker(columns, _CSV_CONVERTERS)
    line_of = _csv_line_maker(columns)
    commas = len(columns) - 1
    quoted = io.StringIO()  # rows that need quoting go through the csv module
    writer = csv.writer(quoted)
    writer.writerow([c.label for c in columns])
    chunk = [quoted.getvalue()]
    it = iter(rows)
    while True:
        for row in islice(it, CSV_BATCH_ROWS):
            line = line_of(row)
            # no field needs quoting iff the line has exactly the separators and no
            # quote or line break (an empty single field must be written as "")
            if line.count(",") == commas and '"' not in line and "\n" not in line and "\r" not in line and line:
                chunk.append(line)
                chunk.append("\r\n")
            else:
                quoted.seek(0)
                quoted.truncate()
                writer.writerow(make(row))
                chunk.append(quoted.getvalue())
        if not chunk:
            return
        yield "".join(chunk)
        chunk = []


# --- XLSX -----------------------------------------------------------------------------

_SHEET_NAME_FORBIDDEN = str.maketrans({ch: " " for ch in "[]:*?/\\"})


def _sheet_name(title: str) -> str:
    # Excel: at most 31 characters, none of []:*?/\, not starting or ending with an
    # apostrophe; "History" is reserved and "About" is our second sheet.
    name = " ".join(str(title).translate(_SHEET_NAME_FORBIDDEN).split()).strip("'")[:31].strip()
    return name if name and name.lower() not in ("history", "about") else "Listing"


def write_xlsx(columns: Sequence[Column], rows: Iterable[dict], out: BinaryIO | str | os.PathLike, *,
               title: str, meta: Sequence[tuple[str, str]]) -> int:
    """Write the listing as an XLSX workbook to ``out`` (a path or a binary file
    object); return the number of data rows.

    Sheet 1 is the listing (bold frozen header, autofilter over all rows, column
    widths from the columns); sheet "About" holds the title, the ``meta`` pairs
    (filters, exported by, export time, ...) and the row count, which is added here
    because only the writer knows it when the rows are streamed.

    Memory stays flat: XlsxWriter's constant_memory mode writes each row to a
    temporary file as soon as the next row starts. The temporary files live in a
    private directory that is removed even when the rows raise; in that case
    nothing is written to ``out`` (no truncated workbook that looks complete).

    Text is always written as a string cell, never as a formula or a hyperlink, so
    a value such as "=HYPERLINK(...)" stays inert text."""
    import xlsxwriter

    columns = list(columns)
    make = _row_maker(columns, _XLSX_CONVERTERS)
    with tempfile.TemporaryDirectory(prefix="cellstudy-xlsx-") as tmpdir:
        workbook = xlsxwriter.Workbook(out, {
            "constant_memory": True,
            "in_memory": False,  # in_memory would switch constant_memory off
            "tmpdir": tmpdir,
            "default_date_format": "yyyy-mm-dd",
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        })
        workbook.set_properties({"title": str(title), "author": PDF_AUTHOR})
        bold = workbook.add_format({"bold": True})
        sheet = workbook.add_worksheet(_sheet_name(title))
        about = workbook.add_worksheet("About")

        for i, column in enumerate(columns):
            sheet.set_column(i, i, column.width)
        sheet.write_row(0, 0, [c.label for c in columns], bold)
        sheet.freeze_panes(1, 0)
        write_row = sheet.write_row
        count = 0
        for count, values in enumerate(map(make, rows), start=1):
            write_row(count, 0, values)
        # constant_memory only needs the range at close(): the last row is known now
        sheet.autofilter(0, 0, count, len(columns) - 1)

        about.set_column(0, 0, 24)
        about.set_column(1, 1, 80)
        about.write_string(0, 0, str(title), bold)
        line = 2
        for label, value in meta:
            about.write_string(line, 0, str(label), bold)
            about.write_string(line, 1, _display(value))
            line += 1
        about.write_string(line, 0, "Rows", bold)
        about.write_number(line, 1, count)
        workbook.close()
    return count


# --- PDF ------------------------------------------------------------------------------

def refuse_fetch(url: str, timeout: int = 10, ssl_context=None):
    """WeasyPrint URL fetcher that fetches nothing (PROTOCOL 8: no PDF may fetch
    anything from the network, nor read local files through file:// URLs).

    Same contract as WeasyPrint's legacy fetcher functions: return a dict
    (``string`` or ``file_obj``, ``mime_type``, ``encoding``, ``redirected_url``)
    or raise. WeasyPrint logs the refusal and renders without the resource."""
    raise ValueError(f"CellStudy PDFs fetch no resources: refused {url!r}")


@functools.cache
def _fetcher_class():
    # WeasyPrint >= 66 expects an URLFetcher instance; this one hands every URL to
    # the module's refuse_fetch, looked up at call time so it can be replaced.
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class ModuleFetcher(URLFetcher):
        def fetch(self, url, headers=None):
            result = refuse_fetch(url)
            if isinstance(result, URLFetcherResponse):
                return result
            content_type = result.get("mime_type") or "application/octet-stream"
            if result.get("encoding"):
                content_type += f"; charset={result['encoding']}"
            body = result["string"] if "string" in result else result["file_obj"]
            return URLFetcherResponse(result.get("redirected_url") or url, body,
                                      headers={"Content-Type": content_type})

    return ModuleFetcher


def html_to_pdf(html: str) -> bytes:
    """Render HTML to PDF with WeasyPrint; every URL goes through ``refuse_fetch``."""
    from weasyprint import HTML

    fetcher = _fetcher_class()(fail_on_errors=False)
    return HTML(string=html, url_fetcher=fetcher).write_pdf()


@functools.cache
def _standalone_env():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("cellstudy", "templates"), autoescape=True)


def _render(template: str, **context) -> str:
    # The app's Jinja environment when there is one (its loader and filters), but not
    # flask.render_template: its context processors query the database for things a
    # PDF listing does not show. Outside an app (scripts, pure tests) a plain
    # environment over the same templates, autoescaping too.
    from flask import current_app, has_app_context

    env = current_app.jinja_env if has_app_context() else _standalone_env()
    return env.get_template(template).render(**context)


def pdf_listing(columns: Sequence[Column], rows: Iterable[dict], *, title: str,
                meta: Sequence[tuple[str, str]], footer: str) -> bytes:
    """The listing as a PDF: A4 landscape, the column header repeated on every page,
    a running header (title; the ``meta`` pairs such as filters and export time),
    ``footer`` bottom left and "Page x of y" bottom right. PDF title = ``title``,
    author = "CellStudy". Values are HTML-escaped by the template, and nothing is
    fetched (``refuse_fetch``).

    Unlike CSV and XLSX this holds every row in memory (a PDF is laid out as a
    whole): callers should keep PDF listings to a printable size."""
    columns = list(columns)
    get = _getter(columns)
    converters = [_PDF_CONVERTERS[c.kind] for c in columns]
    body = [[fn(v) for fn, v in zip(converters, get(row))] for row in rows]
    total = sum(c.width for c in columns)
    layout = [{"label": c.label, "percent": f"{100 * c.width / total:.3f}",
               "align": "num" if c.kind in ("int", "number") else "text"} for c in columns]
    html = _render(PDF_TEMPLATE, title=str(title), meta=[(str(k), _display(v)) for k, v in meta],
                   footer=str(footer), columns=layout, rows=body, row_count=len(body), author=PDF_AUTHOR)
    return html_to_pdf(html)
