"""Issue 13: the listing PDFs are readable. The demo study plus AEs with long terms and
long verbatim text (entered through the AE form), each listing downloaded over HTTP as
the data manager, and the PDF read back word by word (`pdftotext -bbox-layout`, which
gives every word's box):

- no two words of the column header overlap (before: "Serious" printed over
  "Attribution NK cells", "lymphodepletion" over "DLT"), and every header word is one
  box (headers wrap between words only);
- no value breaks inside itself: every word of every cell of the listing (its CSV has
  the same values) is one word box in the table (before: "1002920 / 5", "2026-12- / 01");
- no two words of the page overlap at all, and nothing is printed past the page's text
  area (the table fits its paper).

Page 1 of the AE listing is kept as test-artifacts/pdf/listing_ae.png for a reviewer."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass

import pytest

from cellstudy.exports.tabular import PDF_LONG_WORD
from tests.adverse_events.test_ae_app import create, day, sid

#: AEs with long dictionary terms and long free text, at both sites
LONG_AES = [
    ("HZ-001", {"term": "Aspartate aminotransferase increased", "grade": "2"}),
    (
        "HZ-001",
        {
            "term": "Nervous system disorders - Other, specify",
            "verbatim": "Intermittent severe frontal headache with photophobia, nausea and blurred vision lasting "
            "several hours after each infusion, resolving spontaneously without analgesics",
            "grade": "1",
        },
    ),
    (
        "HZ-001",
        {
            "term": "Blood and lymphatic system disorders - Other, specify",
            "verbatim": "Transient pancytopenia, see https://lab.example.invalid/reports/2026/haematology/"
            "pancytopenia-episode-0001",  # one word over PDF_LONG_WORD characters: free text, may break
            "grade": "3",
            "onset_date": day(-8),
        },
    ),
    ("NB-001", {"term": "Alanine aminotransferase increased", "grade": "1", "onset_date": day(-1)}),
    ("HZ-001", {"term": "Febrile neutropenia", "grade": "3", "dlt": "yes"}),  # the DLT listing's row
]
LISTINGS = ["ae", "sae", "dlt", "summary", "crs-icans"]
NS = "{http://www.w3.org/1999/xhtml}"
MM = 72 / 25.4


@dataclass(frozen=True)
class Word:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Word, tolerance: float = 0.2) -> bool:
        return (
            min(self.x1, other.x1) - max(self.x0, other.x0) > tolerance
            and min(self.y1, other.y1) - max(self.y0, other.y0) > tolerance
        )


@dataclass
class Page:
    width: float
    height: float
    words: list[Word]


def pdf_words(data: bytes, tmp_path) -> list[Page]:
    path = tmp_path / "listing.pdf"
    path.write_bytes(data)
    out = subprocess.run(
        ["pdftotext", "-bbox-layout", str(path), "-"], check=True, capture_output=True, timeout=120
    ).stdout
    pages = []
    for page in ET.fromstring(out).iter(f"{NS}page"):
        words = [
            Word(w.text or "", *(float(w.get(k)) for k in ("xMin", "yMin", "xMax", "yMax")))
            for w in page.iter(f"{NS}word")
        ]
        pages.append(Page(float(page.get("width")), float(page.get("height")), words))
    return pages


def header_band(page: Page, first_word: str, first_column: set[str], label_words: set[str]) -> tuple[list[Word], float]:
    """The words of the table's header row on `page` and the y where the body starts.
    The header's first word (the first column's label, at the table's left edge) sits on
    the header's last line (headers are bottom-aligned); the body starts at the first
    word of the first column below it that is not the label's, and the header reaches up
    to the first word above that is no header word (the meta table, the running head)."""
    starts = [w for w in page.words if w.text == first_word and w.x0 < 14 * MM]
    assert starts, f"no table header ({first_word!r}) on the page"
    anchor = starts[-1]
    below = [w.y0 for w in page.words if w.y0 > anchor.y1 and abs(w.x0 - anchor.x0) < 1 and w.text not in first_column]
    bottom = min(below) if below else page.height
    above = sorted((w for w in page.words if w.y1 <= bottom), key=lambda w: -w.y0)
    top = 0.0
    for word in above:
        if word.text not in label_words:
            top = word.y1
            break
    return [w for w in page.words if w.y0 >= top and w.y1 <= bottom], bottom


@pytest.fixture
def long_aes(app, login):
    for number, fields in LONG_AES:
        site = number.split("-")[0].lower()
        create(login(f"coord-{site}"), sid(app, number), **fields)


@pytest.fixture(scope="module")
def pdftotext():
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: `make test` installs poppler-utils")


@pytest.mark.parametrize("listing", LISTINGS)
def test_listing_pdf_headers_do_not_overlap_and_no_value_breaks(
    app, login, long_aes, listing, tmp_path, pdftotext, pdftoppm, read_pdf
):
    dm = login("dm")
    response = dm.get(f"/safety/{listing}.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    pages = pdf_words(response.get_data(), tmp_path)
    table = list(csv.reader(io.StringIO(dm.get(f"/safety/{listing}.csv?bom=0").get_data(as_text=True))))
    labels, rows = table[0], table[1:]
    assert rows, "the listing has rows"
    first_word = labels[0].split()[0]
    first_column = set(labels[0].split())
    label_words = {w for label in labels for w in label.split()}

    body_words: Counter[str] = Counter()
    for number, page in enumerate(pages, start=1):
        header, body_top = header_band(page, first_word, first_column, label_words)
        # no two header words overlap
        clashes = [(a.text, b.text) for i, a in enumerate(header) for b in header[i + 1 :] if a.overlaps(b)]
        assert clashes == [], f"page {number}: header words print over each other: {clashes}"
        # every word of every label is one box of the header (no break inside a header word)
        missing = Counter(w for label in labels for w in label.split()) - Counter(w.text for w in header)
        assert not missing, f"page {number}: header words broken or missing: {sorted(missing)}"
        # nothing past the text area (12 mm margins left and right)
        outside = [w.text for w in page.words if w.x1 > page.width - 12 * MM + 1 or w.x0 < 12 * MM - 1]
        assert outside == [], f"page {number}: printed outside the text area: {outside[:10]}"
        # no value runs into its neighbour either (a word wider than its column would)
        ordered = sorted(page.words, key=lambda w: w.x0)
        crowded = [
            (a.text, b.text)
            for i, a in enumerate(ordered)
            for b in ordered[i + 1 :]
            if b.x0 < a.x1 and a.overlaps(b)  # sorted by x: b can overlap a only if it starts before a ends
        ]
        assert crowded == [], f"page {number}: words print over each other: {crowded[:10]}"
        footer_top = page.height - 15 * MM
        body_words.update(w.text for w in page.words if body_top <= w.y0 and w.y1 <= footer_top)

    # every word of every cell is one word box of the table body: a code, a date, a status
    # or a term's word printed whole (overlong free-text words may break: not counted)
    expected = Counter(w for row in rows for cell in row for w in cell.split() if len(w) <= PDF_LONG_WORD)
    split = expected - body_words
    assert not split, f"values broken inside themselves (or missing) in the PDF: {sorted(split)[:20]}"
    if listing == "ae":
        # the codes and dates the issue names, as the reader sees them
        assert all(body_words[row[labels.index("MedDRA code")]] for row in rows)
        assert all(body_words[row[labels.index("Onset")]] for row in rows)
        read_pdf(response.get_data()).png("listing_ae")
