"""Issue 13, failure 2: on SQLite a third of the downloads failed with 500 "database is
locked" while others saved (121 of 362 exports, 2 writers and 2 readers; the background
casebook job alone triggered it too).

Reproduced as the review did it: the real app under gunicorn (2 sync worker processes, so
two SQLite connections in two processes, as in production), on a file database with the
demo study; for STRESS_SECONDS (60 by default) two writers add therapy-log entries to
the site's subjects (a save for an enrolled one re-judges its planned infusions and writes audit
records), two readers download the CSV, XLSX and PDF exports (each download writes its
own audit record) and a monitor runs site casebook jobs back to back. Every answer must
be the expected one: no 5xx, no "database is locked", and every save acknowledged is in
the database afterwards.

`CELLSTUDY_STRESS_APP_ROOT=/path/to/an/old/checkout` runs the same attack against another
tree (how the failure was shown on the code before issue 12's transaction owner)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date, timedelta

import pytest

from tests.conftest import DEMO_PASSWORD, PG_URL

pytestmark = [
    pytest.mark.db,
    pytest.mark.skipif(bool(PG_URL), reason="the write lock under test is SQLite's"),
]

ROOT = os.environ.get("CELLSTUDY_STRESS_APP_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SECONDS = float(os.environ.get("STRESS_SECONDS", "60"))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One logged-in user over real HTTP (cookies kept, redirects not followed)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str, username: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._NoRedirect
        )
        status, _headers, _body = self.request("POST", "/login", {"username": username, "password": DEMO_PASSWORD})
        assert status == 302, f"log-in as {username}: HTTP {status}"

    def request(self, method: str, path: str, data: dict | None = None) -> tuple[int, dict, bytes]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, method=method)
        try:
            with self.opener.open(req, timeout=120) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture
def server(db_url, tmp_path):
    path = db_url.removeprefix("sqlite:///")
    module = tmp_path / "stress_wsgi.py"
    module.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {ROOT!r})
            from cellstudy import create_app
            app = create_app("test", {{
                "SQLALCHEMY_DATABASE_URI": {db_url!r},
                "WTF_CSRF_ENABLED": False,
                "AMENDMENTS_SCHEDULER": False,
                "RATELIMIT_ENABLED": False,
            }})
            """
        )
    )
    port = _free_port()
    log = open(tmp_path / "gunicorn.log", "w+")
    proc = subprocess.Popen(
        [GUNICORN, "-w", "2", "-k", "sync", "-t", "300", "-b", f"127.0.0.1:{port}", "stress_wsgi:app"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/login", timeout=5).read()
            break
        except OSError:  # not listening yet (URLError, refused, timed out)
            if time.time() > deadline or proc.poll() is not None:
                log.seek(0)
                pytest.fail("gunicorn did not start:\n" + log.read()[-3000:])
            time.sleep(0.3)
    yield base, path
    proc.terminate()
    proc.wait(timeout=30)
    log.seek(0)
    server_log = log.read()
    log.close()
    assert "database is locked" not in server_log, server_log[-3000:]


def _site_subjects(path: str) -> list[int]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT subject.id FROM subject JOIN site ON site.id = subject.site_id "
            "WHERE site.code = 'HZ' AND subject.status != 'screen_failed' ORDER BY subject.id"
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def test_two_writers_two_exporting_readers_and_a_casebook_job_for_a_minute_without_one_error(server):
    base, path = server
    subjects = _site_subjects(path)
    assert len(subjects) >= 2
    coords = [Browser(base, "coord-hz") for _ in range(2)]
    readers = [Browser(base, "monitor-hz"), Browser(base, "dm")]
    monitor = Browser(base, "monitor-hz")
    downloads = [
        "/safety/ae.csv",
        "/safety/ae.xlsx",
        "/safety/sae.pdf",
        "/safety/sdtm/ae.csv",
        "/audit/export.csv",
        f"/subjects/{subjects[0]}/casebook.pdf",
    ]
    errors: list[str] = []
    saved: list[str] = []
    counts = {"saves": 0, "downloads": 0, "jobs": 0}
    lock = threading.Lock()
    stop = time.time() + SECONDS
    yesterday = (date.today() - timedelta(days=1)).isoformat()

    def writer(k: int) -> None:
        i = 0
        while time.time() < stop:
            sid = subjects[(2 * i + k) % len(subjects)]
            name = f"stress-{k}-{i} paracetamol"
            status, headers, body = coords[k].request(
                "POST",
                f"/subjects/{sid}/exposures/new",
                {"category": "other", "name": name, "start_date": yesterday, "last_date": yesterday},
            )
            with lock:
                if status == 302 and "/login" not in headers.get("Location", ""):
                    saved.append(name)
                    counts["saves"] += 1
                else:
                    errors.append(f"save {name}: HTTP {status} {body[:300]!r}")
            i += 1

    def reader(k: int) -> None:
        i = 0
        while time.time() < stop:
            url = downloads[(i + 3 * k) % len(downloads)]
            status, headers, body = readers[k].request("GET", url)
            ok = status == 200 and len(body) > 0 and "html" not in headers.get("Content-Type", "")
            with lock:
                if ok:
                    counts["downloads"] += 1
                else:
                    errors.append(f"download {url}: HTTP {status} {body[:300]!r}")
            i += 1

    def jobs() -> None:
        while time.time() < stop:
            status, headers, body = monitor.request("POST", "/casebooks", {"site": "HZ", "size": "a4"})
            if status != 302 or "/jobs/" not in headers.get("Location", ""):
                with lock:
                    errors.append(f"casebook job submit: HTTP {status} {body[:300]!r}")
                return
            job = urllib.parse.urlsplit(headers["Location"]).path.rstrip("/")
            while True:
                status, _h, body = monitor.request("GET", job + "/status")
                state = re.search(rb'"status":\s*"(\w+)"', body)
                if status != 200 or state is None:
                    with lock:
                        errors.append(f"job status {job}: HTTP {status} {body[:300]!r}")
                    return
                if state.group(1) in (b"done", b"failed"):
                    with lock:
                        if state.group(1) == b"done":
                            counts["jobs"] += 1
                        else:
                            errors.append(f"casebook job {job} failed: {body[:300]!r}")
                    break
                time.sleep(0.5)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=reader, args=(k,)) for k in range(2)]
    threads.append(threading.Thread(target=jobs))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 600)
    assert errors == [], f"{len(errors)} errors, {counts}: " + "\n".join(errors[:10])
    assert counts["saves"] >= 10 and counts["downloads"] >= 10 and counts["jobs"] >= 1, counts
    con = sqlite3.connect(path)
    try:
        stored = {r[0] for r in con.execute("SELECT name FROM exposure WHERE name LIKE 'stress-%'")}
    finally:
        con.close()
    assert stored == set(saved), "an acknowledged save is not in the database"
    print(f"\nSQLite under concurrent load for {SECONDS:.0f} s: {counts}, 0 errors")
