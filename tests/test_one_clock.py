"""One clock (issue 12): every module reads "now" through cellstudy.timeutil, and a test
(or a tool) that sets that clock moves all of them: the audit trail, the rows' stamps, the
sites' "today" on a page, the job workers' and the amendments' threads. A source scan keeps
any module from reading the machine's clock directly."""

from __future__ import annotations

import ast
import io
import threading
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select

from cellstudy import timeutil
from cellstudy.enrollment.models import Screening, Subject
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord
from tests.helpers import new_subject

#: 17:30 UTC on 6 May 2031 is 01:30 on 7 May in Hangzhou (UTC+8): the site's "today" is
#: not the UTC date, so a page that shows the UTC date (or the machine's) is caught.
AT = datetime(2031, 5, 6, 17, 30, tzinfo=timezone.utc)
SITE_TODAY = date(2031, 5, 7)


def _stamps(app, sid: int) -> dict:
    with app.app_context():
        subject = db.session.get(Subject, sid)
        screening = db.session.execute(select(Screening).where(Screening.subject_id == sid)).scalar_one()
        audit = db.session.execute(
            select(AuditRecord.action, AuditRecord.form, AuditRecord.at)
            .where(AuditRecord.subject_id == sid)
            .order_by(AuditRecord.id)
        ).all()
        return {
            "subject": timeutil.as_utc(subject.created_at),
            "screening": timeutil.as_utc(screening.updated_at),
            "audit": [(a.action, a.form, timeutil.as_utc(a.at)) for a in audit],
        }


def test_the_set_clock_stamps_every_module_and_gives_the_sites_today(app, login, clock):
    clock.set(AT)
    coord = login("coord-hz")
    sid = new_subject(coord)  # enrollment (Subject, Screening) + records (audit trail)
    stamps = _stamps(app, sid)
    assert stamps["subject"] == AT and stamps["screening"] == AT
    assert stamps["audit"] and all(at == AT for _, _, at in stamps["audit"]), stamps["audit"]

    # the clock stands still until moved; a save later is stamped at the moved time
    later = clock.advance(timedelta(minutes=5))
    assert later == AT + timedelta(minutes=5) and timeutil.utcnow() == later
    response = coord.post(
        f"/subjects/{sid}/screening", data={"version": "1", "save": "1", "screening_date": SITE_TODAY.isoformat()}
    )
    assert response.status_code == 302  # the site's today (7 May) is not in the future
    stamps = _stamps(app, sid)
    assert stamps["screening"] == later
    assert stamps["audit"][-1][2] == later and stamps["subject"] == AT
    tomorrow = (SITE_TODAY + timedelta(days=1)).isoformat()
    refused = coord.post(f"/subjects/{sid}/screening", data={"version": "2", "save": "1", "screening_date": tomorrow})
    assert b"cannot be in the future" in refused.data

    # a site-local "today" shown on a page: the calendar starts on the site's date
    calendar = coord.get("/calendar").get_data(as_text=True)
    assert f"{SITE_TODAY} to {SITE_TODAY + timedelta(days=27)}" in calendar

    # the audit trail page shows the record at the set time (in site time, UTC in the attribute)
    trail = coord.get(f"/subjects/{sid}/audit").get_data(as_text=True)
    for at in (AT, later):
        local = (at + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M")
        assert f'<time datetime="{at.isoformat()}" title="{at:%Y-%m-%d %H:%M} UTC">{local} UTC+8</time>' in trail, at


def test_threads_read_the_same_clock(app, clock):
    """The amendments' scheduled run and the job workers run in threads of their own."""
    from cellstudy.amendments import service as amendments

    clock.set(AT)
    seen = []
    worker = threading.Thread(
        target=lambda: seen.extend([timeutil.utcnow(), amendments._now(), timeutil.site_today(None)])
    )
    worker.start()
    worker.join(10)
    assert seen == [AT, AT, AT.date()]


def test_an_xlsx_export_is_dated_by_the_clock(clock, tmp_path):
    from cellstudy.exports.tabular import Column, write_xlsx

    clock.set(AT)
    out = io.BytesIO()
    write_xlsx([Column("n", "N", 6, "int")], [{"n": 1}], out, title="Listing", meta=())
    core = zipfile.ZipFile(io.BytesIO(out.getvalue())).read("docProps/core.xml").decode()
    assert '<dcterms:created xsi:type="dcterms:W3CDTF">2031-05-06T17:30:00Z</dcterms:created>' in core


def test_the_clock_api(clock):
    real = datetime.now(timezone.utc)
    assert abs(timeutil.utcnow() - real) < timedelta(seconds=5)  # unset: the machine's clock
    assert clock.set(date(2031, 5, 6)) == datetime(2031, 5, 6, tzinfo=timezone.utc)
    assert clock.set(datetime(2031, 5, 6, 17, 30)) == AT  # naive is UTC
    assert timeutil.utcnow() == timeutil.utcnow() == AT  # frozen: it stands still
    with timeutil.frozen(AT + timedelta(days=1)) as inner:
        assert inner == timeutil.utcnow() == AT + timedelta(days=1)
        assert timeutil.advance(timedelta(hours=1)) == AT + timedelta(days=1, hours=1)
    assert timeutil.utcnow() == AT  # the clock set before is back
    assert timeutil.utcnow().tzinfo is not None
    ticks = iter([AT, AT + timedelta(seconds=1)])
    assert clock.set(lambda: next(ticks)) is None  # any callable clock (not read by set)
    assert (timeutil.utcnow(), timeutil.utcnow()) == (AT, AT + timedelta(seconds=1))
    timeutil.reset_clock()
    assert abs(timeutil.utcnow() - datetime.now(timezone.utc)) < timedelta(seconds=5)
    assert abs(timeutil.wall_clock() - datetime.now(timezone.utc)) < timedelta(seconds=5)


# --- the source scan -------------------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parent.parent / "cellstudy"
#: module (relative to cellstudy/) -> why it may read the machine's clock directly.
ALLOWED: dict[str, str] = {
    "timeutil.py": "the one clock itself (utcnow() when unset, wall_clock())",
}
_CLOCK_READS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
}


def clock_reads(source: str) -> list[tuple[int, str]]:
    """Calls of datetime.now / datetime.utcnow / datetime.today / date.today / time.time,
    whatever the import spelling (`import datetime as dt`, `from datetime import date as d`)."""
    tree = ast.parse(source)
    names: dict[str, str] = {}  # local name -> "datetime" | "date" | "module:datetime" | "module:time"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ("datetime", "time"):
                    names[alias.asname or alias.name] = "module:" + alias.name
        elif isinstance(node, ast.ImportFrom) and node.module in ("datetime", "time"):
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
    hits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, attr = node.func.value, node.func.attr
        if isinstance(owner, ast.Name):
            kind = names.get(owner.id, owner.id if owner.id in ("datetime", "date") else None)
            cls = kind.removeprefix("module:") if kind else None
        elif (
            isinstance(owner, ast.Attribute)
            and isinstance(owner.value, ast.Name)
            and names.get(owner.value.id) == "module:datetime"
        ):
            cls = owner.attr  # datetime.datetime.now(), dt.date.today()
        else:
            continue
        if (cls, attr) in _CLOCK_READS:
            hits.append((node.lineno, f"{cls}.{attr}()"))
    for node in ast.walk(tree):  # `from datetime import datetime; now = datetime.now` without a call
        if (
            isinstance(node, ast.Attribute)
            and (node.attr in ("now", "utcnow", "today"))
            and isinstance(node.value, ast.Name)
            and names.get(node.value.id, "") in ("datetime", "date")
            and not any(h[0] == node.lineno for h in hits)
        ):
            hits.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return sorted(hits)


def test_the_scan_finds_every_spelling():
    source = (
        "import datetime as dt\nimport time\nfrom datetime import date as d, datetime\n"
        "a = dt.datetime.now(dt.timezone.utc)\nb = d.today()\nc = datetime.utcnow()\n"
        "e = time.time()\nf = dt.date.today()\ng = datetime.now\nh = time.monotonic()\n"
        "i = utcnow()\nj = datetime(2031, 1, 1)\n"
    )
    assert [line for line, _ in clock_reads(source)] == [4, 5, 6, 7, 8, 9]
    assert clock_reads((PACKAGE / "timeutil.py").read_text()), "the scan must see timeutil's own reads"


def test_no_module_reads_the_machine_clock_but_timeutil():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        hits = clock_reads(path.read_text(encoding="utf-8"))
        if hits and rel not in ALLOWED:
            found[rel] = hits
    assert not found, (
        "read the clock through cellstudy.timeutil (utcnow(), site_today()), or allow it "
        f"in ALLOWED with the reason: {found}"
    )
    assert set(ALLOWED) <= {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
