"""The ceiling of issue 2: a bare Flask + Jinja page rendering a 50-row HTML table.

No database, no session, no login: what Flask, Jinja and gunicorn cost per request on
this machine. bench/run.py serves it with gunicorn (2 workers), next to the app:

    .venv/bin/gunicorn -w 2 -b 127.0.0.1:PORT --chdir bench bare_app:app
"""

from datetime import datetime, timedelta, timezone

from flask import Flask, render_template

app = Flask(__name__)

_T0 = datetime(2026, 1, 5, 8, 30, tzinfo=timezone.utc)
STATUSES = ("screening", "enrolled", "screen_failed", "on_treatment", "follow_up")


def rows(n: int = 50) -> list[dict]:
    return [
        {
            "id": i,
            "screening_number": f"HZ-S{i:03d}",
            "subject_number": f"HZ-{i:03d}" if i % 3 == 0 else None,
            "site": "HZ",
            "status": STATUSES[i % len(STATUSES)],
            "created_at": _T0 + timedelta(hours=i),
        }
        for i in range(1, n + 1)
    ]


@app.route("/")
def table():
    return render_template("bare_table.html", rows=rows())
