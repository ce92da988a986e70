"""What the app accepts from a URL or a form as an address or an id (issue 13).

The bottom layer, so every layer may use it:

- :class:`IdConverter` replaces Werkzeug's ``int`` converter app-wide: an id in a URL is at
  most ``MAX_ID``, the largest the schema's ``Integer`` id columns hold on both databases
  (PostgreSQL's ``integer``: 2^31 - 1); a larger one matches no route and answers 404, never
  an ``OverflowError`` in SQLite's driver (2^63 and up) nor PostgreSQL's "integer out of range".
- :func:`parse_id` reads an id that a form posts ("screening:12", a query id) the same way.
- :func:`local_path` and :func:`safe_next` check every redirect target the app takes from
  a request (a form's or a query string's ``next``, a referrer): only a path on this site.

Browsers are lenient where an open redirect hides: the URL parser of the WHATWG standard
drops tab, CR and LF anywhere, strips leading and trailing spaces and control characters,
and reads ``\\`` as ``/``, so ``/\\t/evil.example`` and ``/\\\\evil.example`` both become
``//evil.example`` (another host). A target containing any of those is refused outright
rather than repaired: no address the app writes itself contains them.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from werkzeug.routing import IntegerConverter

#: the largest id the tables store: their ids are sqlalchemy.Integer, PostgreSQL's 32-bit
#: `integer` (SQLite's are 64-bit); a migration to BigInteger would raise it to 2**63 - 1
MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """``<int:...>`` in every route: an integer the id columns can store (at most MAX_ID, and
    no less than -MAX_ID - 1 when signed); a route's own narrower ``min``/``max`` still apply."""

    def __init__(self, map, fixed_digits=0, min=None, max=None, signed=False):  # Werkzeug's names
        low = -MAX_ID - 1 if signed else 0
        super().__init__(
            map,
            fixed_digits=fixed_digits,
            min=low if min is None or min < low else min,
            max=MAX_ID if max is None or max > MAX_ID else max,
            signed=signed,
        )


def parse_id(raw: object) -> int | None:
    """A posted id as an int, or None when it is not one the database could hold: ASCII
    digits only (no sign, no spaces, no "1_000", no other scripts' digits), 1..MAX_ID."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 < raw <= MAX_ID else None
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


def page_number(raw: object) -> int:
    """A list's ``?page=``: a page number as parse_id reads an id, else the first page (a
    page past 2^63 was an OverflowError in SQLite's OFFSET)."""
    return parse_id(raw) or 1


def _browser_would_alter(url: str) -> bool:
    """Whether a browser's URL parser would read `url` differently from what it says:
    control characters (tab, CR, LF are dropped), a leading or trailing space, a backslash;
    also percent-encoded (a proxy or a second decoding would bring them back)."""
    for text in (url, unquote(url)):
        if text != text.strip(" ") or "\\" in text or any(ord(c) < 32 or ord(c) == 127 for c in text):
            return True
    return False


def local_path(url: str | None, host: str | None = None) -> str | None:
    """`url` as a path on this site (with its query), or None when a browser could take it
    anywhere else. Accepted: "/path?query"; with `host` given (a referrer), also
    "http(s)://<host>/path". Refused: "//host", "///host", "/\\\\host", "https:host",
    "javascript:...", anything with control characters, backslashes or edge spaces."""
    if not url or not isinstance(url, str) or _browser_would_alter(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        if host is None or parts.scheme not in ("http", "https") or parts.netloc != host:
            return None
        path = parts.path
    else:
        path = url.split("#", 1)[0].split("?", 1)[0]  # as typed: urlsplit reads "///host" as a path
    if not path.startswith("/") or path.startswith("//"):
        return None
    return path + (f"?{parts.query}" if parts.query else "")


def safe_next(target: str | None, fallback: str) -> str:
    """The page to return to: `target` when it is a path on this site, else `fallback`."""
    return local_path(target) or fallback
