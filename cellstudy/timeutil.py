"""UTC time helpers (ARCHITECTURE rule 5: times are UTC-aware datetimes) and the one clock.

The one clock
-------------
Everything the app records or judges reads "now" through `utcnow()` (and a site's "today"
through `site_today()`): no other module calls `datetime.now()`, `datetime.utcnow()` or
`date.today()` (tests/test_one_clock.py scans for them). `utcnow()` reads a clock kept in
this module, so `from ..timeutil import utcnow` sees a clock that tests and tools set.

- Unset (production, the default), the clock is the machine's clock.
- `set_clock(at)` freezes it at `at` (an aware datetime; a naive one is read as UTC, a
  `date` as its 00:00 UTC). A frozen clock **stands still**: every read returns that
  instant until it is set again or moved with `advance(timedelta)`. Standing still is
  deliberate: a test that pins 23:59:59 must not see midnight pass while it runs, and rows
  stamped at the same instant are ordered by id wherever the order matters.
- `set_clock(callable)` installs any clock (a function returning a datetime), e.g. one
  that ticks from an instant; `advance()` then shifts it.
- `reset_clock()` goes back to the machine's clock; `frozen(at)` is the context manager
  (restoring whatever clock was set before); the tests' `clock` fixture resets after each test.

The clock is one process-wide setting, not per thread or per request: the amendments'
scheduled run and the job workers (threads of their own) read the same clock as the test
that set it. `wall_clock()` is the machine's clock whatever is set: only for the real
elapsed time of people and processes (the idle timeout of a browser session), never for
anything the study records or judges. Durations and timeouts are not read from a clock
at all: `time.monotonic()` (the settings cache) or a wait's own timeout (the amendments'
check interval, `jobs.wait`).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Iterator, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup


class Located(Protocol):
    """A site as this module needs it (auth.models.Site; this layer knows no model)."""

    timezone: str | None


def wall_clock() -> datetime:
    """The machine's clock, never set (see the module docstring for its only use)."""
    return datetime.now(timezone.utc)


class _Frozen:
    """A clock standing still at `at` until advanced."""

    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


#: The one clock: None is the machine's clock; else a callable returning an aware datetime.
_clock: Callable[[], datetime] | None = None


def utcnow() -> datetime:
    """Now, in UTC, by the one clock."""
    clock = _clock
    return datetime.now(timezone.utc) if clock is None else clock()


def _instant(at: datetime | date) -> datetime:
    if not isinstance(at, datetime):
        at = datetime.combine(at, time(0), tzinfo=timezone.utc)
    return as_utc(at)


def set_clock(at: datetime | date | Callable[[], datetime]) -> datetime | None:
    """Freeze the one clock at `at` (it stands still) and return that instant; or install
    a callable clock (not called here: None is returned)."""
    global _clock
    if callable(at):
        source = at
        _clock = lambda: as_utc(source())  # noqa: E731
        return None
    _clock = _Frozen(_instant(at))
    return _clock.at


def advance(delta: timedelta) -> datetime:
    """Move the one clock by `delta` (a frozen clock stays frozen at the new instant; an
    unset clock is frozen at the machine's time + `delta`). Returns the new time."""
    global _clock
    clock = _clock
    if clock is None:
        _clock = _Frozen(wall_clock() + delta)
    elif isinstance(clock, _Frozen):
        clock.at = clock.at + delta
    else:
        _clock = lambda: clock() + delta  # noqa: E731
    return utcnow()


def reset_clock() -> None:
    """Back to the machine's clock."""
    global _clock
    _clock = None


@contextmanager
def frozen(at: datetime | date) -> Iterator[datetime]:
    """`with frozen(at):` the one clock stands still at `at` (`advance()` moves it);
    afterwards the clock set before (or the machine's) is back."""
    global _clock
    before = _clock
    try:
        yield set_clock(at)
    finally:
        _clock = before


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def fmt_utc(value: datetime | None) -> str:
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def site_zone(site: Located | None) -> ZoneInfo:
    try:
        return ZoneInfo(getattr(site, "timezone", None) or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def site_today(site: Located | None) -> date:
    """Today's date at the site (a Hangzhou coordinator's "today" at 07:00 local is
    yesterday in UTC)."""
    return utcnow().astimezone(site_zone(site)).date()


def site_date(value: datetime, site: Located | None) -> date:
    """The site-local calendar date of a stored UTC time."""
    return as_utc(value).astimezone(site_zone(site)).date()


def fmt_site(value: datetime | None, site: Located | None) -> Markup:
    """A stored UTC time shown in the site's time zone (ARCHITECTURE rule 5), with the
    UTC time in the tooltip and the machine-readable attribute."""
    value = as_utc(value)
    if value is None:
        return Markup("")
    local = value.astimezone(site_zone(site))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(), fmt_utc(value), local.strftime("%Y-%m-%d %H:%M ") + _offset(local)
    )


def _offset(local: datetime) -> str:
    """ "UTC+8", "UTC-3:30": unambiguous where abbreviations are not (CST is China and US)."""
    minutes = int(local.utcoffset().total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
