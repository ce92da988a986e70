"""The streamed ODM export at the benchmark scale (issue 15): time and peak memory.

    .venv/bin/python bench/odm_bench.py --url DATABASE_URL [--out DIR] [--modes snapshot,transactional]

On a database made by `bench/dataset.py load` then `bench/dataset.py aes --count 100000`
(issue 4's dataset: 2,000 subjects, about 2.8 million audit records), for each mode:

1. `flask odm export -o FILE --mode MODE` as its own process under GNU time: wall time and
   peak RSS (the issue's targets for Transactional: < 10 minutes, < 200 MB);
2. the in-app job: a fresh process makes the app, answers a few pages through Flask's test
   client (the web worker's baseline memory), then runs the job's task exactly as the job
   runner does (`cellstudy.exports.odm.job.odm_export`), sampling its RSS every 20 ms: the
   peak above the baseline (target < 60 MB);
3. the file: its size, and that it parses (lxml iterparse, flat memory) with the counts the
   command printed.

Prints one JSON line per mode; `--out` keeps the files. Needs CELLSTUDY_AUDIT_KEY (the
loader's key) in the environment, as `flask` does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
ODM_NS = "{http://www.cdisc.org/ns/odm/v1.3}"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cli_run(url: str, mode: str, path: str) -> dict:
    env = dict(os.environ, DATABASE_URL=url, FLASK_APP="wsgi.py")
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    cmd = ["/usr/bin/time", "-v", flask, "odm", "export", "-o", path, "--mode", mode]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024, 1), "printed": done.stdout.strip()}


def job_run(url: str, mode: str) -> dict:
    """In a child process (its own memory): baseline after a few pages, then the job's task."""
    code = f"""
import json, sys, threading, time
sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {BENCH!r})
from odm_bench import rss_mb
from cellstudy import create_app
from cellstudy.extensions import db
from cellstudy.auth.models import User
from cellstudy.jobs.models import Job
from cellstudy.exports.odm import job as odm_job
from sqlalchemy import select
app = create_app("development", overrides={{"SQLALCHEMY_DATABASE_URI": {url!r}, "WTF_CSRF_ENABLED": False}})
client = app.test_client()
client.post("/login", data={{"username": "monitor-hz", "password": "cellstudy-demo"}})
for path in ("/subjects/", "/audit", "/sdv", "/dashboards/monitor", "/subjects/1"):
    client.get(path)
baseline = rss_mb()
peak = [baseline]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb()); time.sleep(0.02)
with app.app_context():
    user = db.session.execute(select(User).where(User.username == "dm")).scalar_one()
    job = Job(kind=odm_job.KIND, params={{"mode": {mode!r}}}, created_by_id=user.id, status="running")
    db.session.add(job); db.session.commit()
    seen = []
    def progress(done, total=None):
        seen.append((done, total))
    sampler = threading.Thread(target=sample, daemon=True); sampler.start()
    t = time.perf_counter()
    path, name = odm_job.odm_export(job, progress)
    wall = time.perf_counter() - t
    stop.set(); sampler.join()
import os
print(json.dumps({{"baseline_mb": round(baseline, 1), "peak_mb": round(peak[0], 1), "above_baseline_mb": round(peak[0] - baseline, 1), "wall_s": round(wall, 1), "progress_reports": len(seen), "bytes": os.path.getsize(path)}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_counts(path: str) -> dict:
    from lxml import etree

    counts = {"SubjectData": 0, "FormData": 0, "ItemData": 0, "AuditRecord": 0}
    tags = {ODM_NS + k: k for k in counts}
    for _event, el in etree.iterparse(path, events=("end",)):
        name = tags.get(el.tag)
        if name:
            counts[name] += 1
        if el.tag == ODM_NS + "SubjectData":
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", help="keep the files in this folder")
    parser.add_argument("--modes", default="snapshot,transactional")
    parser.add_argument("--no-job", action="store_true", help="only the command line")
    args = parser.parse_args()
    folder = args.out or tempfile.mkdtemp(prefix="odm-bench-")
    os.makedirs(folder, exist_ok=True)
    for mode in args.modes.split(","):
        path = os.path.join(folder, f"study-{mode}.xml")
        result = {"mode": mode, "cli": cli_run(args.url, mode, path)}
        result["file_mb"] = round(os.path.getsize(path) / 2**20, 1)
        result["parsed"] = parse_counts(path)
        if not args.no_job:
            result["job"] = job_run(args.url, mode)
        print(json.dumps(result), flush=True)
        if not args.out:
            os.remove(path)


if __name__ == "__main__":
    main()
