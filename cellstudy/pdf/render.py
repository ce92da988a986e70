"""HTML -> PDF for every PDF of the app (WeasyPrint), with the one URL fetcher.

PROTOCOL 8: no PDF may fetch anything from the network. WeasyPrint asks its URL
fetcher for every stylesheet, image and font a document references; ours serves the
app's own static files (``cellstudy/static/``, read from the package folder, never
over HTTP) under the fixed origin ``STATIC_ORIGIN`` and refuses every other URL:
another host, ``file:``, ``data:``, ``ftp:``, a path outside ``static/``. A refused URL
is logged and the document renders without it. Values typed into forms are
HTML-escaped by the templates, so a URL in a free-text field is printed as text and
never reaches the fetcher at all.

Templates are rendered with the app's Jinja environment when there is an app (its
filters), else with a plain autoescaping environment over the same folder (scripts,
pure tests), but not with ``flask.render_template``: a PDF needs no context processor.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import os
import posixpath
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

#: the origin under which templates reference static files; ``.invalid`` never resolves
STATIC_ORIGIN = "https://cellstudy.invalid"
STATIC_PREFIX = "/static/"
STATIC_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")
BASE_URL = STATIC_ORIGIN + "/"
AUTHOR = "CellStudy"

#: the font stack of every PDF: Latin from Liberation Sans / DejaVu Sans, Chinese (site
#: names, verbatim terms, investigator names) from Noto Sans CJK SC (Debian fonts-noto-cjk)
FONT_STACK = '"Liberation Sans", "DejaVu Sans", "Noto Sans CJK SC", sans-serif'


class FetchRefused(ValueError):
    pass


def static_path(url: str) -> str | None:
    """The file of the app's static folder that ``url`` names, or None."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}".lower() != STATIC_ORIGIN or parts.query:
        return None
    path = posixpath.normpath(unquote(parts.path))
    if not path.startswith(STATIC_PREFIX) or "\\" in path or "\x00" in path:
        return None
    relative = path[len(STATIC_PREFIX) :]
    full = os.path.realpath(os.path.join(STATIC_FOLDER, *relative.split("/")))
    if not full.startswith(os.path.realpath(STATIC_FOLDER) + os.sep) or not os.path.isfile(full):
        return None
    return full


def fetch(url: str) -> tuple[bytes, str]:
    """(content, mime type) of an app static file; ``FetchRefused`` for anything else."""
    path = static_path(url)
    if path is None:
        log.warning("PDF fetcher refused %r: only the app's own static files are served", url[:200])
        raise FetchRefused(f"CellStudy PDFs fetch nothing but the app's static files: refused {url[:200]!r}")
    with open(path, "rb") as handle:
        content = handle.read()
    return content, mimetypes.guess_type(path)[0] or "application/octet-stream"


@functools.cache
def _fetcher_class():
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class StaticOnlyFetcher(URLFetcher):
        """Never opens a connection nor a file outside ``cellstudy/static``."""

        def fetch(self, url, headers=None):
            content, mime = fetch(url)
            return URLFetcherResponse(url, content, headers={"Content-Type": mime})

    return StaticOnlyFetcher


def url_fetcher():
    """A new fetcher instance (WeasyPrint >= 66 takes an ``URLFetcher``)."""
    return _fetcher_class()(fail_on_errors=False)


def html_to_pdf(html: str) -> bytes:
    """Render HTML to PDF bytes; every URL goes through ``fetch``. Title, author and
    subject of the PDF come from the HTML's <title>, <meta name=author> and
    <meta name=description>."""
    from weasyprint import HTML

    return HTML(string=html, base_url=BASE_URL, url_fetcher=url_fetcher()).write_pdf()


@functools.cache
def _standalone_env():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("cellstudy", "templates"), autoescape=True)


def render_html(template: str, **context) -> str:
    from flask import current_app, has_app_context

    env = current_app.jinja_env if has_app_context() else _standalone_env()
    return env.get_template(template).render(
        font_stack=FONT_STACK, author=AUTHOR, static=STATIC_ORIGIN + STATIC_PREFIX, **context
    )


def render_pdf(template: str, **context) -> bytes:
    return html_to_pdf(render_html(template, **context))
