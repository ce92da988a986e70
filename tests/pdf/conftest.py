"""Helpers of the PDF tests: text extraction (pypdf), PNG artefacts (pdftoppm)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import unicodedata

import pytest
from pypdf import PdfReader

ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts", "pdf")


def squash(text: str) -> str:
    """Text without any whitespace (a label may wrap anywhere in a PDF)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


class Pdf:
    def __init__(self, data: bytes):
        assert data.startswith(b"%PDF"), data[:200]
        self.data = data
        self.reader = PdfReader(io.BytesIO(data))
        self.pages = [page.extract_text() or "" for page in self.reader.pages]
        self.text = "\n".join(self.pages)
        self.flat = squash(self.text)

    def has(self, text: str) -> bool:
        return squash(str(text)) in self.flat

    def outline(self) -> list[tuple[str, int]]:
        out = []
        for item in self.reader.outline:
            assert not isinstance(item, list), "one bookmark level only"
            out.append((item.title, self.reader.get_destination_page_number(item) + 1))
        return out

    def png(self, name: str, page: int = 1) -> str:
        """Page `page` as test-artifacts/pdf/<name>.png, for a reviewer to look at."""
        os.makedirs(ARTIFACTS, exist_ok=True)
        pdf_path = os.path.join(ARTIFACTS, f"{name}.pdf")
        with open(pdf_path, "wb") as out:
            out.write(self.data)
        base = os.path.join(ARTIFACTS, name)
        subprocess.run(
            ["pdftoppm", "-png", "-r", "70", "-singlefile", "-f", str(page), "-l", str(page), pdf_path, base],
            check=True,
            timeout=60,
        )
        os.remove(pdf_path)
        return base + ".png"


@pytest.fixture
def read_pdf():
    return Pdf


@pytest.fixture(scope="session")
def pdftoppm():
    if shutil.which("pdftoppm") is None:
        pytest.fail("pdftoppm is missing: `make test` installs poppler-utils")
    return True
