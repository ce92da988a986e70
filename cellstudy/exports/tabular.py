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

Issue 13: a CSV starts with the UTF-8 byte-order mark, and a CSV cell that a spreadsheet
would run as a formula gets a leading apostrophe (`csv_safe`; numbers such as -2.5 are
left alone). XLSX text cells are typed strings (never a formula), so they stay verbatim.

A missing key in a row raises ``KeyError``: a misspelt column key must fail loudly,
not export an empty column.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any, BinaryIO

from markupsafe import Markup

from ..timeutil import utcnow
from ..pdf import build

if TYPE_CHECKING:
    from ..auth.models import User

KINDS = frozenset({"text", "int", "date", "bool", "number"})

#: rows per CSV chunk: a 1,000-row chunk of a typical AE listing is 100-200 KB,
#: big enough that the per-chunk cost vanishes, small enough to stream
CSV_BATCH_ROWS = 1000
#: rows per write into the XLSX sheet's zip entry
XLSX_BATCH_ROWS = 1000
#: zlib level of the XLSX parts (XlsxWriter's, and zipfile's, default is 6)
XLSX_DEFLATE_LEVEL = 6

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
_CSV_CONVERTERS: dict[str, Callable | None] = {"text": None, "int": None, "number": None, "date": _iso, "bool": _yn}
# XLSX: numbers and dates stay typed for write_row; text is forced to str
_XLSX_CONVERTERS: dict[str, Callable | None] = {"text": _text, "int": None, "number": None, "date": None, "bool": _yn}
# PDF: everything becomes display text
_PDF_CONVERTERS: dict[str, Callable] = {
    "text": _display,
    "int": _display,
    "number": _display,
    "date": lambda v: _display(_iso(v)),
    "bool": lambda v: _display(_yn(v)),
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


def _row_maker(
    columns: Sequence[Column], converters: dict[str, Callable | None], values: bool = False
) -> Callable[[Any], Sequence]:
    """A function row dict (or, with ``values``, a sequence of the columns' values) ->
    sequence of cell values, with the converters precomputed: the per-row work is one
    itemgetter call plus one call per converted column."""
    get = tuple if values else _getter(columns)
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

#: Issue 13, CSV formula injection: a spreadsheet program opening the CSV evaluates a cell
#: that starts with one of these as a formula (=, + and - start an expression, @ a function
#: in Excel; a leading tab or CR is skipped by some importers, exposing what follows).
CSV_FORMULA_START = "=+-@\t\r"
#: "parses as a number": a finite decimal in plain or scientific notation, ASCII digits
#: only, an optional sign, nothing around it: 12, -2.5, +3, .5, 5., 1e3, -1.5E-4. Not a
#: number: inf, -Infinity, NaN, 0x1F, 1_000, "-2.5 " (a space), "-2+3", "-", "--1".
#: Such a cell is written as it is: a spreadsheet reads it as that number, no formula.
CSV_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: the text a neutralised cell starts with (OWASP's advice: the cell reads as text)
CSV_FORMULA_GUARD = "'"
#: the UTF-8 byte-order mark every CSV starts with unless asked not to (``?bom=0``)
CSV_BOM = "\ufeff"
#: a field of a fast-path line (no quote, no line break, the commas are the separators)
#: that starts with a formula character: such lines get a closer look
_FIELD_FORMULA_START = re.compile(r",[=+\-@\t]")


def csv_safe(value: Any) -> Any:
    """The CSV cell for ``value`` (issue 13): text starting with a formula character
    (``CSV_FORMULA_START``) gets a leading apostrophe unless the whole text parses as
    a number (``CSV_NUMBER``), so ``=HYPERLINK(...)``, ``+cmd|' /C calc'!A0``, ``@SUM(A1)``
    and ``-2+3`` open as text and ``-2.5`` stays the number it is. ``None`` stays
    ``None`` (an empty cell); other values are judged by their ``str()``, as written."""
    if value is None:
        return None
    text = value if value.__class__ is str else str(value)
    if text[:1] in CSV_FORMULA_START and text and CSV_NUMBER.fullmatch(text) is None:
        return CSV_FORMULA_GUARD + text
    return text


def _formula_in(line: str) -> bool:
    """Does a fast-path line (see csv_stream) hold a field that `csv_safe` would change?
    csv_stream calls it only for the lines with a field starting with a formula
    character (a negative number does); each such field is checked whole."""
    number = CSV_NUMBER.fullmatch
    if line[:1] in CSV_FORMULA_START:
        end = line.find(",")
        if number(line if end < 0 else line[:end]) is None:
            return True
    for match in _FIELD_FORMULA_START.finditer(line):
        start = match.start() + 1
        end = line.find(",", start)
        if number(line[start:] if end < 0 else line[start:end]) is None:
            return True
    return False


def bom_argument(raw: str | None) -> bool:
    """The ``bom`` query argument of a CSV download: absent or empty -> True (the BOM),
    1/yes/true/on -> True, 0/no/false/off -> False; anything else is a ValueError whose
    message names the argument."""
    text = (raw or "").strip().lower()
    if text in ("", "1", "yes", "true", "on", "y"):
        return True
    if text in ("0", "no", "false", "off", "n"):
        return False
    raise ValueError(f"Byte-order mark (bom): “{raw}” is not 1 or 0 (bom=0 leaves the UTF-8 byte-order mark out).")


def _csv_line_maker(columns: Sequence[Column], values: bool = False) -> Callable[[Any], str]:
    """A function row dict (with ``values``: the sequence of the columns' values) -> the
    row's CSV line *before quoting* (fields joined by commas, no line end), converting
    each field like ``_CSV_CONVERTERS`` + str().

    Built once per export as one f-string (the source holds only the column
    positions and the kind's expression, never a key or a value): it is about twice
    as fast as the csv module, which matters for a 100,000-row export. Only rows that
    need no quoting and no formula guard use it; csv_stream checks that and lets the
    csv module write the others."""
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
    source = f'def line(row):\n    {names}, = {"row" if values else "_get(row)"}\n    return f"{",".join(fields)}"\n'
    namespace = {"_get": get, "_YN": _YN}
    exec(compile(source, "<csv line>", "exec"), namespace)  # noqa: S102 (no data in the source)  # nosec B102
    return namespace["line"]


def csv_stream(
    columns: Sequence[Column],
    rows: Iterable[dict] | Iterable[Sequence],
    *,
    values: bool = False,
    bom: bool = True,
) -> Iterator[str]:
    """The listing as CSV text, yielded in chunks of ``CSV_BATCH_ROWS`` rows. Every CSV
    of the app is written here (the safety listings and summaries, the SDTM AE domain,
    the audit trail's download and its background job).

    ``rows`` are dicts keyed by the columns' keys, or with ``values=True`` sequences of
    the columns' values in column order (what `listings.iter_listing_values` gives:
    no dict per row, for the 100,000-row exports); the file is the same.

    RFC 4180 (the csv module's "excel" dialect, QUOTE_MINIMAL): comma separated,
    a field quoted when it holds a comma, a double quote or a line break, CRLF line
    ends; the header row holds the column labels. Encode the chunks as UTF-8.

    Issue 13: the first chunk starts with the UTF-8 byte-order mark (``bom=False``
    leaves it out, for pipelines that would read it as part of the first header), so
    that a spreadsheet program opens Chinese verbatim terms as written; and every
    cell, the header's too, goes through `csv_safe`: text that a spreadsheet would run
    as a formula gets a leading apostrophe (numbers such as -2.5 stay as they are).
    Statistical software reading the file sees that apostrophe: the XLSX keeps such
    text verbatim (its cells are typed strings, never formulas).

    Streams: at most one batch of rows is held at a time, so the rows may come from
    a server-side cursor of any length."""
    columns = list(columns)
    make = _row_maker(columns, _CSV_CONVERTERS, values)
    line_of = _csv_line_maker(columns, values)
    commas = len(columns) - 1
    quoted = io.StringIO()  # rows that need quoting or a guard go through the csv module
    writer = csv.writer(quoted)
    writer.writerow([csv_safe(c.label) for c in columns])
    yield (CSV_BOM if bom else "") + quoted.getvalue()
    field_formula = _FIELD_FORMULA_START.search
    it = iter(rows)
    while True:
        chunk = []
        append = chunk.append
        for row in islice(it, CSV_BATCH_ROWS):
            line = line_of(row)
            # no field needs quoting iff the line has exactly the separators and no
            # quote or line break (an empty single field must be written as ""); then
            # the fields are the line's comma-separated parts, checked for a formula
            if (
                line.count(",") == commas
                and '"' not in line
                and "\n" not in line
                and "\r" not in line
                and line
                and not ((line[:1] in CSV_FORMULA_START or field_formula(line) is not None) and _formula_in(line))
            ):
                append(line)
            else:
                quoted.seek(0)
                quoted.truncate()
                writer.writerow([csv_safe(v) for v in make(row)])
                append(quoted.getvalue()[:-2])  # the csv module's line end: added by the join
        if not chunk:
            return
        append("")
        yield "\r\n".join(chunk)


# --- XLSX -----------------------------------------------------------------------------

_SHEET_NAME_FORBIDDEN = str.maketrans({ch: " " for ch in "[]:*?/\\"})


def _sheet_name(title: str) -> str:
    # Excel: at most 31 characters, none of []:*?/\, not starting or ending with an
    # apostrophe; "History" is reserved and "About" is our second sheet.
    name = " ".join(str(title).translate(_SHEET_NAME_FORBIDDEN).split()).strip("'")[:31].strip()
    return name if name and name.lower() not in ("history", "about") else "Listing"


def write_xlsx(
    columns: Sequence[Column],
    rows: Iterable[dict] | Iterable[Sequence],
    out: BinaryIO | str | os.PathLike,
    *,
    title: str,
    meta: Sequence[tuple[str, str]],
    values: bool = False,
) -> int:
    """Write the listing as an XLSX workbook to ``out`` (a path or a binary file
    object); return the number of data rows. ``rows``: dicts keyed by the columns'
    keys, or with ``values=True`` sequences of the columns' values in column order.

    Sheet 1 is the listing (bold frozen header, autofilter over all rows, column
    widths from the columns); sheet "About" holds the title, the ``meta`` pairs
    (filters, exported by, export time, ...) and the row count, which is added here
    because only the writer knows it when the rows are streamed.

    The workbook is written by `_XlsxWriter` below, not by XlsxWriter: at 100,000 rows
    XlsxWriter's per-cell path alone takes 17-23 s on the 2-core benchmark machine
    (about 10 us a cell), over the 15 s target, and no faster maintained writer that
    streams was found (docs/decisions.md, bench/RESULTS.md "Issue 4"). The XML is the
    one XlsxWriter writes for the same cells (inline strings, the same escapes, dates as
    serial numbers in a yyyy-mm-dd style), each row made by one generated function.

    Memory stays flat: the rows' XML is spooled to a temporary file as they come (the
    sheet's <dimension>, which comes first, needs their count), then deflated into the
    zip. The file is built in a private temporary directory and copied to ``out`` only
    when complete: if the rows raise, nothing is written to ``out`` (no truncated
    workbook that looks complete).

    Text is always written as a string cell, never as a formula or a hyperlink, so
    a value such as "=HYPERLINK(...)" stays inert text."""
    columns = list(columns)
    if not columns:
        raise ValueError("A listing needs at least one column")
    with tempfile.TemporaryDirectory(prefix="cellstudy-xlsx-") as tmpdir:
        path = os.path.join(tmpdir, "listing.xlsx")
        writer = _XlsxWriter(path, title=str(title))
        try:
            count = writer.listing(_sheet_name(title), columns, rows, values=values)
            writer.about(str(title), [(str(label), _display(value)) for label, value in meta], count)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        if isinstance(out, (str, os.PathLike)):
            shutil.copyfile(path, out)
        else:
            with open(path, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    return count


# --- the XLSX writer ---------------------------------------------------------------------------

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
#: cellXfs of styles.xml: 0 default, 1 bold (header, About labels), 2 date yyyy-mm-dd
_BOLD, _DATE = 1, 2
_STYLES = (
    _XML_HEAD + f'<styleSheet xmlns="{_NS_MAIN}">'
    '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><color theme="1"/><name val="Calibri"/><family val="2"/>'
    '<scheme val="minor"/></font><font><b/><sz val="11"/><color theme="1"/><name val="Calibri"/><family val="2"/>'
    '<scheme val="minor"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/>'
    "</fill></fills>"
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    '<dxfs count="0"/><tableStyles count="0" defaultTableStyle="TableStyleMedium9" '
    'defaultPivotStyle="PivotStyleLight16"/></styleSheet>'
)
_SHEET_TAIL = '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>'
#: what XlsxWriter escapes in text: &, <, >; control characters as _xHHHH_ (and a literal
#: "_xHHHH_" by escaping its underscore); a leading or trailing space is preserved
_TEXT_SPECIAL = re.compile(r"[&<>\x00-\x08\x0b-\x1f\ufffe\uffff]|_x[0-9a-fA-F]{4}_|^\s|\s$")
_CONTROL_ESCAPE = re.compile(r"(_x[0-9a-fA-F]{4}_)")
_CONTROL_CHAR = re.compile(r"([\x00-\x08\x0b-\x1f])")
#: date -> Excel serial (1900 date system: day 1 = 1900-01-01, with Excel's 1900-02-29)
_EXCEL_EPOCH = date(1899, 12, 30).toordinal()


def _inline_text(text: str) -> str:
    """The <is> of an inline string cell, escaped as XlsxWriter does."""
    if not _TEXT_SPECIAL.search(text):
        return f"<is><t>{text}</t></is>"
    preserve = text[:1].isspace() or text[-1:].isspace()
    text = _CONTROL_ESCAPE.sub(r"_x005F\1", text)
    text = _CONTROL_CHAR.sub(lambda m: f"_x{ord(m.group(1)):04X}_", text)
    text = text.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<is><t xml:space="preserve">{text}</t></is>' if preserve else f"<is><t>{text}</t></is>"


def _serial(value) -> str:
    """A date or datetime as Excel's serial number (days since 1899-12-30)."""
    days = value.toordinal() - _EXCEL_EPOCH
    if isinstance(value, datetime):
        seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
        return f"{days + seconds / 86400:.16G}"
    if days < 61:  # Excel's nonexistent 1900-02-29 shifts the dates after it only
        days -= 1
    return str(days)


def _number(value) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} cannot be written to an XLSX number cell")
    return f"{value:.16G}"


def _column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _col_width(width: float) -> str:
    """A width in characters as XlsxWriter's set_column stores it (pixels, then back)."""
    pixels = int(width * 7 + 0.5) + 5 if width >= 1 else int(width * 12 + 0.5)
    return f"{(pixels * 256 // 7) / 256.0:.16g}"


def _row_writer(columns: Sequence[Column], values: bool) -> Callable[[int, Any], str]:
    """A function (row number, row) -> the row's <row> element, generated once per
    export like the CSV line maker: per column, the cell for the column's kind (the
    source holds only column positions, letters and kinds, never data)."""
    lines = [
        "def row_xml(n, row):",
        f"    {', '.join(f'v{i}' for i in range(len(columns)))}, = " + ("row" if values else "_get(row)"),
        "    out = [f'<row r=\"{n}\">']",
    ]
    for i, column in enumerate(columns):
        v, ref = f"v{i}", f"{_column_letters(i)}{{n}}"
        text_cell = f'f\'<c r="{ref}" t="inlineStr">{{_text(_str({v}))}}</c>\''
        if column.kind in ("int", "number"):
            cell = (
                f'(f\'<c r="{ref}" t="b"><v>{{int({v})}}</v></c>\' if {v}.__class__ is bool else '
                f"f'<c r=\"{ref}\"><v>{{_num({v})}}</v></c>' if {v}.__class__ is not str else {text_cell})"
            )
        elif column.kind == "date":
            cell = (
                f"(f'<c r=\"{ref}\" s=\"{_DATE}\"><v>{{_serial({v})}}</v></c>' if hasattr({v}, 'toordinal') "
                f"else {text_cell})"
            )
        elif column.kind == "bool":
            cell = f'f\'<c r="{ref}" t="inlineStr">{{_text(_YN.get({v}, {v}) if {v}.__class__ is bool else _str({v}))}}</c>\''
        else:
            cell = text_cell
        # None and "" are no cell (XlsxWriter writes an empty string as a blank, and a
        # blank without a format not at all)
        lines.append(f"    if {v} is not None and {v} != '':\n        out.append({cell})")
    lines.append("    out.append('</row>')\n    return ''.join(out)")
    namespace = {
        "_get": _getter(columns),
        "_text": _cached_text(),
        "_str": _str,
        "_num": _number,
        "_serial": _serial,
        "_YN": _YN,
    }
    exec(compile("\n".join(lines) + "\n", "<xlsx row>", "exec"), namespace)  # noqa: S102 (no data in the source)  # nosec B102
    return namespace["row_xml"]


def _str(value) -> str:
    return value if value.__class__ is str else str(value)


def _cached_text(limit: int = 50_000) -> Callable[[str], str]:
    """_inline_text with a cache: a listing repeats its terms, SOCs, sites and labels."""
    cache: dict[str, str] = {}

    def text(value: str) -> str:
        out = cache.get(value)
        if out is None:
            if len(cache) >= limit:
                cache.clear()
            out = cache[value] = _inline_text(value)
        return out

    return text


class _XlsxWriter:
    """A two-sheet workbook (the listing, then "About"), each sheet streamed into its
    own deflated zip entry (the listing's rows through a temporary file, for its
    <dimension>). The package parts are the ones XlsxWriter writes for such a
    workbook (content types, relationships, workbook with the autofilter's defined
    name, styles, document properties)."""

    def __init__(self, path: str, *, title: str):
        import zipfile

        self.tmpdir = os.path.dirname(path)  # a private directory (write_xlsx's)
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=XLSX_DEFLATE_LEVEL)
        self.title = title
        self.sheets: list[tuple[str, str | None]] = []  # (name, autofilter range)
        self.entry = None  # the sheet being written

    def abort(self) -> None:
        """Close what is open after a failure (the file is then thrown away)."""
        try:
            if self.entry is not None:
                self.entry.close()
        finally:
            self.zip.close()

    def _sheet(self, name: str, widths: Sequence[float], frozen: bool, dimension: str):
        index = len(self.sheets) + 1
        entry = self.entry = self.zip.open(f"xl/worksheets/sheet{index}.xml", "w", force_zip64=True)
        pane = (
            (
                '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
                '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
            )
            if frozen
            else ""
        )
        selected = ' tabSelected="1"' if index == 1 else ""
        cols = "".join(
            f'<col min="{i}" max="{i}" width="{_col_width(w)}" customWidth="1"/>' for i, w in enumerate(widths, start=1)
        )
        entry.write(
            (
                _XML_HEAD + f'<worksheet xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}"><dimension ref="{dimension}"/>'
                f'<sheetViews><sheetView{selected} workbookViewId="0">{pane}</sheetView></sheetViews>'
                f'<sheetFormatPr defaultRowHeight="15"/><cols>{cols}</cols><sheetData>'
            ).encode()
        )
        return entry

    def listing(self, name: str, columns: Sequence[Column], rows: Iterable, *, values: bool) -> int:
        # The rows go to a temporary file first: the sheet's <dimension> (which readers
        # such as openpyxl's read-only mode size their rows by) comes before them and
        # needs their count. XlsxWriter's constant_memory mode does the same.
        row_xml = _row_writer(columns, values)
        count = 0
        it = iter(rows)
        with open(os.path.join(self.tmpdir, "rows.xml"), "w+b") as spool:
            while True:
                chunk = [row_xml(count + i, row) for i, row in enumerate(islice(it, XLSX_BATCH_ROWS), start=2)]
                if not chunk:
                    break
                count += len(chunk)
                spool.write("".join(chunk).encode())
            ref = f"A1:{_column_letters(len(columns) - 1)}{count + 1}"
            entry = self._sheet(name, [c.width for c in columns], frozen=True, dimension=ref)
            text = _cached_text()
            header = "".join(
                f'<c r="{_column_letters(i)}1" s="{_BOLD}" t="inlineStr">{text(c.label)}</c>'
                for i, c in enumerate(columns)
            )
            entry.write(f'<row r="1">{header}</row>'.encode())
            spool.seek(0)
            shutil.copyfileobj(spool, entry, 1 << 20)
        entry.write(f'</sheetData><autoFilter ref="{ref}"/>{_SHEET_TAIL}'.encode())
        entry.close()
        self.entry = None
        self.sheets.append((name, ref))
        return count

    def about(self, title: str, meta: Sequence[tuple[str, str]], count: int) -> None:
        entry = self._sheet("About", [24, 80], frozen=False, dimension=f"A1:B{len(meta) + 3}")
        text = _cached_text()
        rows = [f'<row r="1"><c r="A1" s="{_BOLD}" t="inlineStr">{text(title)}</c></row>']
        line = 3
        for label, value in meta:
            cells = f'<c r="A{line}" s="{_BOLD}" t="inlineStr">{text(label)}</c>'
            if value:  # XlsxWriter writes no cell for an empty string
                cells += f'<c r="B{line}" t="inlineStr">{text(value)}</c>'
            rows.append(f'<row r="{line}">{cells}</row>')
            line += 1
        rows.append(
            f'<row r="{line}"><c r="A{line}" s="{_BOLD}" t="inlineStr">{text("Rows")}</c>'
            f'<c r="B{line}"><v>{count}</v></c></row>'
        )
        entry.write(("".join(rows) + "</sheetData>" + _SHEET_TAIL).encode())
        entry.close()
        self.entry = None
        self.sheets.append(("About", None))

    def close(self) -> None:
        from xml.sax.saxutils import escape, quoteattr

        z = self.zip
        try:
            n = len(self.sheets)
            overrides = "".join(
                f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/'
                'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
                for i in range(1, n + 1)
            )
            z.writestr(
                "[Content_Types].xml",
                _XML_HEAD
                + (
                    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                    '<Default Extension="xml" ContentType="application/xml"/>'
                    '<Override PartName="/docProps/app.xml" ContentType="application/'
                    'vnd.openxmlformats-officedocument.extended-properties+xml"/>'
                    '<Override PartName="/docProps/core.xml" ContentType="application/'
                    'vnd.openxmlformats-package.core-properties+xml"/>'
                    '<Override PartName="/xl/styles.xml" ContentType="application/'
                    'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
                    '<Override PartName="/xl/workbook.xml" ContentType="application/'
                    f'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>{overrides}</Types>'
                ),
            )
            z.writestr(
                "_rels/.rels",
                _XML_HEAD
                + (
                    f'<Relationships xmlns="{_NS_PKG_REL}">'
                    f'<Relationship Id="rId1" Type="{_NS_REL}/officeDocument" Target="xl/workbook.xml"/>'
                    '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/'
                    'metadata/core-properties" Target="docProps/core.xml"/>'
                    f'<Relationship Id="rId3" Type="{_NS_REL}/extended-properties" Target="docProps/app.xml"/>'
                    "</Relationships>"
                ),
            )
            now = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
            z.writestr(
                "docProps/core.xml",
                _XML_HEAD
                + (
                    '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
                    'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/'
                    'terms/" xmlns:dcmitype="http://purl.org/dc/dcmitype/" xmlns:xsi="http://www.w3.org/2001/'
                    f'XMLSchema-instance"><dc:title>{escape(self.title)}</dc:title>'
                    f"<dc:creator>{PDF_AUTHOR}</dc:creator><cp:lastModifiedBy>{PDF_AUTHOR}</cp:lastModifiedBy>"
                    f'<dcterms:created xsi:type="dcterms:W3CDTF">{now}</dcterms:created>'
                    f'<dcterms:modified xsi:type="dcterms:W3CDTF">{now}</dcterms:modified></cp:coreProperties>'
                ),
            )
            z.writestr(
                "docProps/app.xml",
                _XML_HEAD
                + (
                    '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
                    "<Application>Microsoft Excel</Application><DocSecurity>0</DocSecurity></Properties>"
                ),
            )
            sheets = "".join(
                f'<sheet name={quoteattr(name)} sheetId="{i}" r:id="rId{i}"/>'
                for i, (name, _) in enumerate(self.sheets, start=1)
            )
            names = "".join(
                f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
                f"{escape(_quote_sheet(name))}!{_absolute(ref)}</definedName>"
                for i, (name, ref) in enumerate(self.sheets)
                if ref
            )
            z.writestr(
                "xl/workbook.xml",
                _XML_HEAD
                + (
                    f'<workbook xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}"><bookViews><workbookView xWindow="240" '
                    f'yWindow="15" windowWidth="16095" windowHeight="9660"/></bookViews><sheets>{sheets}</sheets>'
                    + (f"<definedNames>{names}</definedNames>" if names else "")
                    + '<calcPr calcId="124519"/></workbook>'
                ),
            )
            rels = "".join(
                f'<Relationship Id="rId{i}" Type="{_NS_REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
                for i in range(1, n + 1)
            )
            z.writestr(
                "xl/_rels/workbook.xml.rels",
                _XML_HEAD
                + (
                    f'<Relationships xmlns="{_NS_PKG_REL}">{rels}<Relationship Id="rId{n + 1}" '
                    f'Type="{_NS_REL}/styles" Target="styles.xml"/></Relationships>'
                ),
            )
            z.writestr("xl/styles.xml", _STYLES)
        finally:
            z.close()


def _quote_sheet(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _absolute(ref: str) -> str:
    """ "A1:R101" -> "$A$1:$R$101"."""
    return ":".join(re.sub(r"([A-Z]+)(\d+)", r"$\1$\2", part) for part in ref.split(":"))


# --- PDF ------------------------------------------------------------------------------
# Issue 5: the PDF is laid out by cellstudy.pdf (cellstudy/pdf/build.py `listing`), with
# the header, footer and static-only URL fetcher every PDF of the app shares; this module
# keeps converting the values by column kind, as for CSV and XLSX.
#
# Issue 13: no value may break inside itself (a MedDRA code split "1002920 / 5" or a date
# "2026-12- / 01" invites misreading) and the header words may not run into each other.
# The table is laid out by its content (CSS table-layout auto: each column at least as
# wide as its longest word), nothing breaks inside a word, and a column whose every value
# is one word (codes, dates, identifiers, status words, numbers) never wraps at all. So
# that such a table fits the page, its font size (and, for the widest, the paper) is
# chosen here from the content's widths, measured with the metrics of the font the PDFs
# print in (Liberation Sans, the metrics of Arial): the largest of PDF_FITS that fits.

#: (paper, font size in pt, width of the text area in mm), tried in this order: A4 landscape
#: down to 6 pt, then A3 landscape (the page margins of pdf.css are 12 mm left and right)
PDF_FITS = (
    ("A4", 7.5, 273.0),
    ("A4", 7.0, 273.0),
    ("A4", 6.5, 273.0),
    ("A4", 6.0, 273.0),
    ("A3", 7.5, 396.0),
    ("A3", 6.5, 396.0),
    ("A3", 6.0, 396.0),
)
#: a word longer than this (a pasted URL in a verbatim term) may break anywhere: it is
#: free text, not a code, and would otherwise widen its column past the page
PDF_LONG_WORD = 40
#: per cell: 1 mm padding left and right and 0.4 pt borders (pdf.css table.grid); the
#: metrics leave out kerning, so the estimate errs wide (the SAE listing of the demo:
#: 297 mm estimated at 7.5 pt, 287 mm as WeasyPrint lays it out)
_CELL_MM = 2.2
_FIT_MARGIN = 1.0
_MM_PER_PT = 25.4 / 72
#: advance widths (1/1000 em) of U+0020..U+007E in Liberation Sans Regular and Bold
_ASCII_WIDTHS = {
    False: (
        278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
        556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
        611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
        667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
        222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
    ),
    True: (
        278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
        556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
        611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
        667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
        278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
    ),
}  # fmt: skip


def _em_width(text: str, bold: bool = False) -> float:
    """The width of ``text`` in em: ASCII from the font's metrics, CJK (Noto Sans CJK)
    one em, any other character 0.7 em (wider than any Latin letter but M and W)."""
    widths = _ASCII_WIDTHS[bold]
    total = 0
    for ch in text:
        code = ord(ch)
        if 32 <= code < 127:
            total += widths[code - 32]
        elif code >= 0x2E80:
            total += 1000
        else:
            total += 700
    return total / 1000


def _widest_word(text: str, whole: bool, bold: bool = False) -> float:
    """The widest piece of ``text`` that may not break, in em: the whole text for a
    column that never wraps, else its longest word (long words may break)."""
    if whole:
        return _em_width(text, bold)
    words = [w for w in text.split() if len(w) <= PDF_LONG_WORD]
    return max((_em_width(w, bold) for w in words), default=0.0)


def _pdf_fit(labels: Sequence[str], body: Sequence[Sequence[str]], keep: Sequence[bool]) -> tuple[str, float]:
    """(paper, font size) of the listing: the first of PDF_FITS whose text area holds
    every column at its narrowest (the widest unbreakable piece of its values and of its
    bold header, plus the cell's padding)."""
    ems = []
    for i, label in enumerate(labels):
        seen: set[str] = set()
        widest = _widest_word(label, False, bold=True)
        for row in body:
            value = row[i]
            if value not in seen:
                seen.add(value)
                widest = max(widest, _widest_word(value, keep[i]))
        ems.append(widest)
    for paper, size, area in PDF_FITS:
        needed = sum(em * size * _MM_PER_PT * _FIT_MARGIN + _CELL_MM for em in ems)
        if needed <= area:
            return paper, size
    paper, size, _ = PDF_FITS[-1]
    return paper, size


def _breakable(text: str) -> str | Markup:
    """``text`` with its overlong words (free text only: a pasted URL) marked as
    breakable anywhere; other text unchanged (the template escapes it)."""
    if len(text) <= PDF_LONG_WORD or all(len(w) <= PDF_LONG_WORD for w in text.split()):
        return text
    parts = re.split(r"(\s+)", text)
    return Markup("").join(
        Markup('<span class="breakable">{}</span>').format(p) if len(p) > PDF_LONG_WORD else p for p in parts
    )


def pdf_listing(
    columns: Sequence[Column],
    rows: Iterable[dict],
    *,
    title: str,
    meta: Sequence[tuple[str, str]],
    footer: str,
    user: User | None = None,
) -> bytes:
    """The listing as a PDF: landscape, the column header repeated on every page,
    a running header (title; the ``meta`` pairs such as filters and export time),
    the footer bottom left (``footer``, or who exported it when: ``user``) and "Page x
    of y" bottom right. PDF title = ``title``, author = "CellStudy". Values are
    HTML-escaped by the template; only the app's static files are fetched
    (cellstudy.pdf.render).

    Issue 13: column widths follow the content and no value breaks inside a word; a
    column whose values are all single words (codes, dates, status) does not wrap. The
    font size and paper are the first of PDF_FITS that holds the table (A4 landscape at
    7.5 pt for the usual listings).

    Unlike CSV and XLSX this holds every row in memory (a PDF is laid out as a
    whole): callers should keep PDF listings to a printable size."""
    columns = list(columns)
    get = _getter(columns)
    converters = [_PDF_CONVERTERS[c.kind] for c in columns]
    body = [[fn(v) for fn, v in zip(converters, get(row), strict=False)] for row in rows]
    # a column "keeps" its values whole when each is one word: an identifier, a code, a
    # date, a number, a status ("complete") or Y/N; a free-text column wraps between words
    keep = [
        all(len(value) <= PDF_LONG_WORD and not any(ch.isspace() for ch in value) for value in values)
        for values in (zip(*body, strict=True) if body else [()] * len(columns))
    ]
    paper, size = _pdf_fit([c.label for c in columns], body, keep)
    for i, is_kept in enumerate(keep):
        if not is_kept:
            for row in body:
                row[i] = _breakable(row[i])
    fit = {"paper": paper, "font_pt": f"{size:g}"}
    layout = [
        {
            "label": c.label,
            "align": " ".join(["num" if c.kind in ("int", "number") else "text"] + (["keep"] if is_kept else [])),
            "fit": fit,  # the same for every column: the table's font size and paper
        }
        for c, is_kept in zip(columns, keep, strict=True)
    ]

    return build.listing(
        layout, body, title=str(title), meta=[(str(k), _display(v)) for k, v in meta], user=user, footer=str(footer)
    )
