"""UTC time helpers (ARCHITECTURE rule 5: times are UTC-aware datetimes)."""
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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


def site_zone(site) -> ZoneInfo:
    try:
        return ZoneInfo(getattr(site, "timezone", None) or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def site_today(site) -> date:
    """Today's date at the site (a Hangzhou coordinator's "today" at 07:00 local is
    yesterday in UTC)."""
    return utcnow().astimezone(site_zone(site)).date()


def site_date(value: datetime, site) -> date:
    """The site-local calendar date of a stored UTC time."""
    return as_utc(value).astimezone(site_zone(site)).date()


def fmt_site(value: datetime | None, site) -> Markup:
    """A stored UTC time shown in the site's time zone (ARCHITECTURE rule 5), with the
    UTC time in the tooltip and the machine-readable attribute."""
    value = as_utc(value)
    if value is None:
        return Markup("")
    local = value.astimezone(site_zone(site))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(), fmt_utc(value), local.strftime("%Y-%m-%d %H:%M ") + _offset(local))


def _offset(local: datetime) -> str:
    """"UTC+8", "UTC-3:30": unambiguous where abbreviations are not (CST is China and US)."""
    minutes = int(local.utcoffset().total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
