"""Issue 11 benchmark: planned infusions re-judged (`make bench-judgement`; not part of make test).

Targets (issue 11, "Done when"), on SQLite and PostgreSQL with the 2,000-subject dataset
(bench/dataset.py `load`), after `judgement.rejudge_everything` (the copied subjects are
inserted without the ORM, so they have no judgement rows until then):

1. an AE save and an exposure save re-judge in < 20 ms p50 extra: N saves of each through
   the real services (adverse_events.service.save_ae: a related grade 3 AE, which puts the
   subject's planned infusions on a toxicity hold; enrollment.service.add_exposure: a
   systemic steroid given today), each on another subject with planned infusions, with
   the re-judging hook on and off (judgement._noted / judgement._rejudge removed from
   records.hooks._WRITE_HOOKS / _COMMIT_HOOKS in the same process), interleaved; "extra"
   = p50(on) - p50(off). A third mode, every write-path hook removed (issue 11's
   eligibility re-confirmation hook too), is shown for reference.
2. a first-infusion move (infusions.scheduling.reschedule of a planned infusion number 1,
   nothing given yet, by one day) with regimen.sentinel_stagger_days in force (set by a
   real amendment, proposed by the admin and approved by inv-hz): it re-judges the planned
   first infusions of the dose level: < 2 s. On and off interleaved; also
   `judgement.judge_subjects` over the level's subjects alone, timed with its commit.
3. an amendment coming into force re-judges every planned infusion: < 2 s. The real path
   (amendments.service.propose, then approve with the investigator's e-signature, hook on
   and off interleaved), and `judge_subjects` over every subject with a planned infusion
   under a definition with a new version label (so every stored judgement is rewritten),
   plus commit, in one transaction.
4. the calendar (/calendar) and a subject page (/subjects/<id>, 20 subjects with planned
   infusions, the same subject numbers in both trees) within 10 % of their speed before
   issue 11: Flask test client logged in as coord-hz, this working tree (a snapshot of it)
   against a clean checkout of the commit before issue 11's core (a git worktree), each in
   its own process with its own database loaded by its own bench/dataset.py, run in
   alternating blocks (A B, B A, ...) and compared pair by pair (median of the per-round
   ratios of the blocks' medians), so that the machine's drift cancels.

    .venv/bin/python bench/judgement_bench.py                  # both databases, writes bench/RESULTS.md
    .venv/bin/python bench/judgement_bench.py --db sqlite --subjects 300 --no-write   # a quick look

PostgreSQL: BENCH_PG_ADMIN (default postgresql://postgres@127.0.0.1:5432/postgres); two
databases cellstudy_judgement_<pid> and cellstudy_judgement_parent_<pid> are created and
dropped. SQLite files go to a temporary directory, removed afterwards. Raw figures and the
cProfile of one hooked run of each write go to bench/out/judgement/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out", "judgement")
PY = os.path.join(REPO, ".venv", "bin", "python")
RESULTS = os.path.join(BENCH, "RESULTS.md")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
HEADING = "## Issue 11: planned infusions re-judged"
BEGIN, END = "<!-- bench/judgement_bench.py: generated, begin -->", "<!-- bench/judgement_bench.py: generated, end -->"
PASSWORD = "cellstudy-demo"
# `--extra-pages` (issue 12): page -> the demo user who reads it, and its path
EXTRA_PAGES = {
    "screening form": "coord-hz",
    "queries": "monitor-hz",
    "monitor dashboard": "monitor-hz",
    "data-manager dashboard": "dm",
    "audit trail": "dm",
    "AE listing": "inv-hz",
}
EXTRA_PATHS = {
    "screening form": "/subjects/{subject}/screening",
    "queries": "/queries",
    "monitor dashboard": "/dashboards/monitor",
    "data-manager dashboard": "/dashboards/data-manager",
    "audit trail": "/audit",
    "AE listing": "/safety/ae",
}
USER_AGENT = "cellstudy-bench/1"

SAVE_EXTRA_MS = 20.0  # target 1: p50 extra of an AE / exposure save
MOVE_S = 2.0  # target 2: a first-infusion move
AMEND_S = 2.0  # target 3: an amendment coming into force
PAGE_SHARE = 0.10  # target 4: pages within 10 % of before
STAGGER_DAYS = 7


def log(msg: str) -> None:
    # a worker's stdout carries its JSON answers: its log goes to stderr
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True, file=sys.stderr if "--worker" in sys.argv else sys.stdout)


# =================================================================================================
# Workers: run in a subprocess whose BENCH_APP_ROOT names the app tree (snapshot or parent)
# =================================================================================================


def _worker_app(url: str):
    root = os.environ["BENCH_APP_ROOT"]
    sys.path.insert(0, root)
    import cellstudy
    from cellstudy import create_app

    if not os.path.abspath(cellstudy.__file__).startswith(os.path.abspath(root) + os.sep):
        raise SystemExit(f"imported {cellstudy.__file__}, not the tree {root}")
    app = create_app(
        "development",
        overrides={"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False, "AMENDMENTS_SCHEDULER": False},
    )
    return app, os.path.dirname(cellstudy.__file__)


class _Statements:
    """Counts the SQL statements the engine sends (installed in an app context)."""

    def __init__(self):
        self.n = 0

    def install(self, engine):
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args):
        self.n += 1


def _machine_sample() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return sum(parts[:8]), parts[3] + parts[4]


def _busy_since(sample: tuple[int, int]) -> float:
    total, idle = _machine_sample()
    return 0.0 if total == sample[0] else 100.0 * (1 - (idle - sample[1]) / (total - sample[0]))


def wait_quiet(limit_s: float, threshold: float = 30.0) -> float:
    """Wait (at most limit_s) until the machine is less than threshold % busy (our own
    processes idle at that moment: that is other people's load); returns the last reading."""
    deadline = time.time() + limit_s
    sample = _machine_sample()
    time.sleep(1.0)
    busy = _busy_since(sample)
    while busy >= threshold and time.time() < deadline:
        sample = _machine_sample()
        time.sleep(2.0)
        busy = _busy_since(sample)
    return busy


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation (statistics.quantiles needs n >= 2)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _summary(ms: list[float]) -> dict:
    return {
        "n": len(ms),
        "p50_ms": _pct(ms, 0.5),
        "p95_ms": _pct(ms, 0.95),
        "min_ms": min(ms) if ms else None,
        "max_ms": max(ms) if ms else None,
    }


def _j(values, spec: str = ".2f") -> str:
    return ", ".join(format(v, spec) for v in values)


def _range(values) -> str:
    return f"{min(values)}–{max(values)}" if values else "?"


def _approvals(runs: list[dict]) -> str:
    return ", ".join(format(r["approve_s"], ".2f") + (" (cProfile)" if r["profiled"] else "") for r in runs)


def _queries(runs: list[dict]) -> str:
    return ", ".join(f"{r['propose_queries']} / {r['approve_queries']}" for r in runs)


def _profile(fn, path: str) -> None:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).sort_stats("cumulative")
        stats.print_stats(40)
        buf.write("\n--- by own time ---\n")
        stats.sort_stats("tottime").print_stats(25)
        with open(path, "w") as f:
            f.write(buf.getvalue())


def worker_writes(args) -> dict:
    """Targets 1-3 on the snapshot of this tree (its database loaded, judgements not yet stored)."""
    from datetime import timedelta

    app, pkg = _worker_app(args.url)
    from sqlalchemy import func, select

    from cellstudy.adverse_events import service as aes
    from cellstudy.amendments import service as amendments
    from cellstudy.auth.models import Site, User
    from cellstudy.enrollment import service as enrollment
    from cellstudy.enrollment.models import Subject
    from cellstudy.extensions import db
    from cellstudy.infusions import judgement
    from cellstudy.infusions import scheduling
    from cellstudy.infusions.models import Infusion, InfusionJudgement
    from cellstudy.records import hooks
    from cellstudy.records.service import InvalidForm, RecordError
    from cellstudy import settings
    from cellstudy.timeutil import site_today

    out: dict = {"cellstudy": pkg, "db": args.url.split(":", 1)[0]}
    all_write, all_commit = list(hooks._WRITE_HOOKS), list(hooks._COMMIT_HOOKS)
    out["hooks"] = {
        "write": [f"{h.__module__}.{h.__name__}" for h in all_write],
        "commit": [f"{h.__module__}.{h.__name__}" for h in all_commit],
    }
    if judgement._noted not in all_write or judgement._rejudge not in all_commit:
        raise SystemExit("the re-judging hooks are not registered: nothing to measure")

    def set_mode(mode: str) -> None:
        if mode == "on":
            write, commit = all_write, all_commit
        elif mode == "off":
            write = [h for h in all_write if h is not judgement._noted]
            commit = [h for h in all_commit if h is not judgement._rejudge]
        else:  # "no hooks"
            write, commit = [], []
        hooks._WRITE_HOOKS[:] = write
        hooks._COMMIT_HOOKS[:] = commit

    stmts = _Statements()
    os.makedirs(OUT, exist_ok=True)
    tag = out["db"].split("+")[0]

    with app.app_context():
        stmts.install(db.engine)
        user = lambda name: db.session.execute(select(User).where(User.username == name)).scalar_one()  # noqa: E731
        hz = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        today = site_today(hz)
        db.session.remove()

    # --- 0. judge everything (after the bulk load) ---------------------------------------------
    with app.app_context():
        sample, t = _machine_sample(), time.perf_counter()
        judged = judgement.rejudge_everything(db.session)
        out["rejudge_everything"] = {"judged": judged, "s": time.perf_counter() - t, "busy_pct": _busy_since(sample)}
        out["planned_infusions"] = db.session.scalar(
            select(func.count()).select_from(Infusion).where(Infusion.state == "scheduled")
        )
        out["subjects_with_planned"] = db.session.scalar(
            select(func.count(func.distinct(Infusion.subject_id))).where(Infusion.state == "scheduled")
        )
        out["judgement_rows"] = db.session.scalar(select(func.count()).select_from(InfusionJudgement))
        out["locked_before"] = db.session.scalar(
            select(func.count()).select_from(InfusionJudgement).where(InfusionJudgement.locked)
        )
        db.session.remove()
    log(
        f"   rejudge_everything: {judged} planned infusions judged in {out['rejudge_everything']['s']:.2f} s "
        f"({out['subjects_with_planned']} subjects; {out['locked_before']} locked)"
    )

    # --- 1. an AE save, an exposure save -------------------------------------------------------
    modes = ["on", "off", "no hooks"]
    with app.app_context():
        candidates = (
            db.session.execute(
                select(Subject.id)
                .join(Infusion, Infusion.subject_id == Subject.id)
                .where(Subject.site_id == hz.id, Infusion.state == "scheduled", Subject.dose_level.is_not(None))
                .group_by(Subject.id)
                .order_by(Subject.id)
            )
            .scalars()
            .all()
        )
        db.session.remove()
    out["save_candidates"] = len(candidates)
    order = iter([candidates[(i * 7919) % len(candidates)] for i in range(len(candidates))] * 4)

    ae_values = lambda: {
        "term": "Nausea",
        "onset_date": today,
        "ongoing": True,
        "grade": "3",  # noqa: E731
        "serious": False,
        "related_nk": "possible",
        "related_ld": "unlikely",
        "expectedness": "expected",
        "action": "none",
        "outcome": "not_recovered",
    }
    exposure_values = lambda: {
        "category": "systemic_steroid",
        "name": "Dexamethasone",  # noqa: E731
        "start_date": today - timedelta(days=2),
        "last_date": today,
        "half_life_days": None,
        "physiological_replacement": False,
        "indication": "bench: nausea",
    }

    def save(kind: str, sid: int, profile_to: str | None = None) -> tuple[float, int, dict]:
        with app.app_context():
            coord = user("coord-hz")
            subject = db.session.get(Subject, sid)
            _ = subject.site, subject.infusions  # what the route has loaded before the service runs
            n0 = stmts.n
            if kind == "AE":
                call = lambda: aes.save_ae(
                    subject,
                    aes.new_ae(subject),
                    ae_values(),
                    user=coord,  # noqa: E731
                    expected_version=0,
                    reason=None,
                    complete=True,
                    today=today,
                )
            else:
                call = lambda: enrollment.add_exposure(subject, exposure_values(), user=coord)  # noqa: E731
            t = time.perf_counter()
            if profile_to:
                _profile(call, profile_to)
            else:
                call()
            elapsed = (time.perf_counter() - t) * 1000
            queries = stmts.n - n0
            db.session.remove()
        with app.app_context():  # afterwards, not timed: what is stored for the subject
            rows = (
                db.session.execute(select(InfusionJudgement.lockouts).where(InfusionJudgement.subject_id == sid))
                .scalars()
                .all()
            )
            codes = {lo["code"] for row in rows for lo in row}
            db.session.remove()
        return elapsed, queries, {"codes": sorted(codes)}

    saves: dict = {
        kind: {m: {"ms": [], "queries": [], "hold": 0, "washout": 0} for m in modes} for kind in ("AE", "exposure")
    }
    out["others_busy_pct"] = {}
    refused, touched = [], set()
    warm = next(order)
    touched.add(warm)
    for kind in ("AE", "exposure"):  # one warm-up save of each (first imports, caches), not counted
        set_mode("on")
        save(kind, warm)
    out["others_busy_pct"]["saves"] = wait_quiet(args.quiet_wait)
    sample = _machine_sample()
    for i in range(args.n):
        for kind in ("AE", "exposure"):
            rotated = modes[i % 3 :] + modes[: i % 3]
            for mode in rotated:
                set_mode(mode)
                for _attempt in range(5):
                    sid = next(order)
                    try:
                        ms, queries, stored = save(kind, sid)
                    except (InvalidForm, RecordError) as error:
                        refused.append(f"{kind} subject {sid}: {getattr(error, 'errors', None) or error}")
                        continue
                    break
                else:
                    raise SystemExit("5 saves refused in a row: " + "; ".join(refused[-5:]))
                touched.add(sid)
                cell = saves[kind][mode]
                cell["ms"].append(ms)
                cell["queries"].append(queries)
                cell["hold"] += "toxicity_hold" in stored["codes"]
                cell["washout"] += any(c.startswith(("steroid", "washout")) for c in stored["codes"])
    set_mode("on")
    busy = _busy_since(sample)
    for kind in ("AE", "exposure"):  # one hooked save under cProfile
        sid = next(order)
        touched.add(sid)
        save(kind, sid, profile_to=os.path.join(OUT, f"profile-{tag}-{kind.lower()}-save.txt"))
    out["saves"] = {
        kind: {
            m: {
                **_summary(c["ms"]),
                "queries_p50": _pct(c["queries"], 0.5),
                "stored_toxicity_hold": c["hold"],
                "stored_steroid_or_washout": c["washout"],
                "ms_all": [round(x, 2) for x in c["ms"]],
            }
            for m, c in by_mode.items()
        }
        for kind, by_mode in saves.items()
    }
    out["saves_busy_pct"], out["saves_refused"] = busy, refused[:5]
    for kind in ("AE", "exposure"):
        s = out["saves"][kind]
        log(
            f"   {kind} save p50: on {s['on']['p50_ms']:.1f} ms, off {s['off']['p50_ms']:.1f} ms, no hooks "
            f"{s['no hooks']['p50_ms']:.1f} ms (queries {s['on']['queries_p50']:.0f} / {s['off']['queries_p50']:.0f}) "
            f"-> extra {s['on']['p50_ms'] - s['off']['p50_ms']:.1f} ms"
        )
    # the saves made with the hook off left stale judgements: judge everything again
    with app.app_context():
        t = time.perf_counter()
        judgement.rejudge_everything(db.session)
        out["rejudge_after_saves_s"] = time.perf_counter() - t
        db.session.remove()

    # --- 3. an amendment coming into force ----------------------------------------------------
    def amend(values: dict, label: str, mode: str, profile_to: str | None = None) -> dict:
        """Propose (admin), approve (inv-hz, e-signature; in force at once): both timed."""
        set_mode(mode)
        try:
            with app.app_context():
                admin, inv = user("admin"), user("inv-hz")
                n0, t = stmts.n, time.perf_counter()
                amendment = amendments.propose(
                    values,
                    label=label,
                    reason="bench/judgement_bench.py",
                    effective_date=amendments._now().date(),
                    user=admin,
                )
                t_proposed, q_proposed = time.perf_counter(), stmts.n
                approve = lambda: amendments.approve(amendment.id, user=inv, password=PASSWORD)  # noqa: E731
                _profile(approve, profile_to) if profile_to else approve()
                result = {
                    "propose_s": t_proposed - t,
                    "approve_s": time.perf_counter() - t_proposed,
                    "propose_queries": q_proposed - n0,
                    "approve_queries": stmts.n - q_proposed,
                    "profiled": bool(profile_to),
                    "values": values,
                }
                db.session.remove()
        finally:
            set_mode("on")
        return result

    def stale_judgements() -> tuple[str, int | None, int]:
        with app.app_context():
            in_force = settings.study_in_force(db.session)
            stale = db.session.scalar(
                select(func.count())
                .select_from(InfusionJudgement)
                .where(InfusionJudgement.study_version != in_force.version)
            )
            db.session.remove()
        return in_force.version, in_force.regimen.sentinel_stagger_days, stale

    # (a) no stagger in force: amendments of the toxicity hold (related AEs from grade 2, then 3
    # again: each changes the definition), hook off and on interleaved, ending "on"
    real = {"on": [], "off": []}
    out["others_busy_pct"]["amendments"] = wait_quiet(args.quiet_wait)
    sample = _machine_sample()
    for k in range(2 * args.amend_real):
        mode, grade = ("off", 2) if k % 2 == 0 else ("on", 3)
        real[mode].append(
            amend(
                {"toxicity_hold.related_min_grade": str(grade)},
                f"bench-{os.getpid()}-{k} (related hold from grade {grade})",
                mode,
            )
        )
    out["amend_real"] = {"runs": real, "busy_pct": _busy_since(sample)}
    version, _days, stale = stale_judgements()
    out["amend_real"]["stale_after"] = stale
    for mode in ("on", "off"):
        log(
            f"   amendment, hook {mode}: propose {_j(r['propose_s'] for r in real[mode])} s, "
            f"approve {_j(r['approve_s'] for r in real[mode])} s"
        )
    # judge_subjects over every subject with a planned infusion, under the definition in force
    # with a new version label (every stored judgement rewritten), plus commit: one transaction
    direct = []
    sample = _machine_sample()
    for k in range(args.amend_direct):
        with app.app_context():
            t = time.perf_counter()
            study = settings.apply(
                {}, base=settings.study_in_force(db.session), version=f"bench judgement {os.getpid()}-{k}"
            )
            ids = sorted(
                set(db.session.execute(select(Infusion.subject_id).where(Infusion.state == "scheduled")).scalars())
            )
            n0 = stmts.n
            judged = judgement.judge_subjects(db.session, ids, study)
            t_judged = time.perf_counter()
            db.session.commit()
            direct.append(
                {
                    "s": time.perf_counter() - t,
                    "judge_s": t_judged - t,
                    "judged": judged,
                    "subjects": len(ids),
                    "queries": stmts.n - n0,
                }
            )
            db.session.remove()
    out["amend_direct"] = {
        "runs": direct,
        "busy_pct": _busy_since(sample),
        "p50_s": _pct([r["s"] for r in direct], 0.5),
    }
    log(
        f"   every planned infusion judged + commit: {_j(r['s'] for r in direct)} s "
        f"({direct[0]['judged']} infusions, {direct[0]['subjects']} subjects)"
    )
    with app.app_context():  # back to the judgements of the definition in force (not timed)
        judgement.rejudge_everything(db.session)
        db.session.remove()

    # (b) the amendment that sets the sentinel stagger (what target 2 needs in force)
    out["others_busy_pct"]["stagger amendment"] = wait_quiet(args.quiet_wait)
    sample = _machine_sample()
    out["amend_stagger"] = amend(
        {"regimen.sentinel_stagger_days": str(STAGGER_DAYS)}, f"bench-{os.getpid()}-stagger ({STAGGER_DAYS} days)", "on"
    )
    out["amend_stagger"]["busy_pct"] = _busy_since(sample)
    out["version_in_force"], out["stagger_in_force"], out["judgements_not_of_version_in_force"] = stale_judgements()
    log(
        f"   stagger amendment: propose {out['amend_stagger']['propose_s']:.2f} s, approve "
        f"{out['amend_stagger']['approve_s']:.2f} s ({out['amend_stagger']['approve_queries']} statements)"
    )
    if out["stagger_in_force"] != STAGGER_DAYS:
        raise SystemExit(f"the stagger in force is {out['stagger_in_force']!r}, expected {STAGGER_DAYS}")

    # the stagger in force: the planned first infusions of each level
    with app.app_context():
        given = select(Infusion.subject_id).where(Infusion.state == "given")
        firsts = db.session.execute(
            select(Infusion.id, Subject.dose_level, Infusion.subject_id)
            .join(Subject, Subject.id == Infusion.subject_id)
            .where(
                Infusion.number == 1,
                Infusion.state == "scheduled",
                Subject.dose_level.is_not(None),
                Subject.site_id == hz.id,
                Infusion.subject_id.not_in(given),
                Infusion.planned_date > today + timedelta(days=1),
            )
            .order_by(Infusion.id)
        ).all()
        level_sizes = dict(
            db.session.execute(
                select(Subject.dose_level, func.count(func.distinct(Infusion.subject_id)))
                .join(Subject, Subject.id == Infusion.subject_id)
                .where(
                    Infusion.state == "scheduled", Subject.dose_level.is_not(None), Infusion.subject_id.not_in(given)
                )
                .group_by(Subject.dose_level)
            ).all()
        )
        largest = max(level_sizes, key=level_sizes.get)
        sample_ids = sorted({sid for _i, level, sid in firsts if level == largest})[: args.profile_subjects]
        study = settings.study_in_force(db.session)
        t = time.perf_counter()
        judgement.judge_subjects(db.session, sample_ids, study)
        per_subject = (time.perf_counter() - t) / max(1, len(sample_ids))
        db.session.rollback()
        _profile(
            lambda: judgement.judge_subjects(db.session, sample_ids, study),
            os.path.join(OUT, f"profile-{tag}-judge-planned-first-stagger.txt"),
        )
        db.session.rollback()
        db.session.remove()
    out["move_level_sizes"], out["judge_planned_first_s_per_subject"] = level_sizes, per_subject
    log(
        f"   stagger in force: judging one subject with a planned first infusion takes {per_subject:.3f} s "
        f"(mean of {len(sample_ids)} of {largest}); levels {level_sizes}"
    )

    # 1b. an AE save for a subject whose first infusion is planned, the stagger in force
    planned_first = [sid for _i, _level, sid in firsts if sid not in touched]
    stag = {m: {"ms": [], "queries": []} for m in ("on", "off")}
    for i in range(args.n_stagger):
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            set_mode(mode)
            sid = planned_first.pop()
            touched.add(sid)
            try:
                ms, queries, _stored = save("AE", sid)
            except (InvalidForm, RecordError) as error:
                refused.append(f"AE (stagger) subject {sid}: {getattr(error, 'errors', None) or error}")
                continue
            finally:
                set_mode("on")
            stag[mode]["ms"].append(ms)
            stag[mode]["queries"].append(queries)
    out["saves_stagger"] = {
        m: {**_summary(c["ms"]), "queries_p50": _pct(c["queries"], 0.5), "ms_all": [round(x, 1) for x in c["ms"]]}
        for m, c in stag.items()
    }
    log(
        f"   AE save, planned first infusion, stagger in force: on {out['saves_stagger']['on']['p50_ms']:.0f} ms, "
        f"off {out['saves_stagger']['off']['p50_ms']:.0f} ms"
    )

    # --- 2. a first-infusion move (the stagger in force) ---------------------------------------
    firsts = [(i, level) for i, level, sid in firsts if sid not in touched]  # step 1's AEs may lock the date
    out["move_candidates"] = len(firsts)
    pick = iter([firsts[(i * 104729) % len(firsts)] for i in range(len(firsts))] * 2)

    def move(infusion_id: int, profile_to: str | None = None) -> tuple[float, int, str]:
        with app.app_context():
            coord = user("coord-hz")
            infusion = db.session.get(Infusion, infusion_id)
            _ = infusion.subject.infusions, infusion.subject.site
            last_error = None
            for delta in (-1, 1):
                proposed = infusion.planned_date + timedelta(days=delta)
                n0 = stmts.n
                call = lambda proposed=proposed: scheduling.reschedule(
                    infusion,
                    proposed,
                    user=coord,  # noqa: E731
                    expected_version=infusion.version,
                    reason="bench: first infusion moved by a day",
                )
                t = time.perf_counter()
                try:
                    _profile(call, profile_to) if profile_to else call()
                except RecordError as error:
                    db.session.rollback()
                    last_error = str(error)
                    continue
                elapsed = (time.perf_counter() - t) * 1000
                db.session.remove()
                return elapsed, stmts.n - n0, f"{delta:+d} day"
            db.session.remove()
            raise RecordError(last_error or "refused")

    moves = {m: {"ms": [], "queries": [], "levels": []} for m in ("on", "off")}
    move_refused = []

    def next_move(profile_to: str | None = None):
        for _attempt in range(8):
            inf_id, level = next(pick)
            try:
                return (*move(inf_id, profile_to), level)
            except RecordError as error:
                move_refused.append(f"infusion {inf_id}: {error}")
        raise SystemExit("8 moves refused in a row: " + "; ".join(move_refused[-8:]))

    set_mode("off")
    next_move()  # warm-up (the reschedule's own code; the judging is warm from the amendment)
    out["others_busy_pct"]["moves"] = wait_quiet(args.quiet_wait)
    sample, started = _machine_sample(), time.perf_counter()
    for i in range(args.moves):
        if i >= 2 and time.perf_counter() - started > args.move_budget:
            break
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            set_mode(mode)
            ms, queries, _how, level = next_move()
            moves[mode]["ms"].append(ms)
            moves[mode]["queries"].append(queries)
            moves[mode]["levels"].append(level)
    set_mode("on")
    busy = _busy_since(sample)
    out["moves"] = {
        m: {
            **_summary(c["ms"]),
            "queries_p50": _pct(c["queries"], 0.5),
            "levels": c["levels"],
            "ms_all": [round(x, 1) for x in c["ms"]],
        }
        for m, c in moves.items()
    }
    out["moves_busy_pct"], out["moves_refused"] = busy, move_refused[:5]
    log(
        f"   first-infusion move p50: on {out['moves']['on']['p50_ms']:.0f} ms (p95 {out['moves']['on']['p95_ms']:.0f}), "
        f"off {out['moves']['off']['p50_ms']:.0f} ms; queries {out['moves']['on']['queries_p50']:.0f} / "
        f"{out['moves']['off']['queries_p50']:.0f}"
    )
    if out["moves"]["on"]["p50_ms"] < 5000:  # cheap enough: profile one, and judge each level alone
        next_move(profile_to=os.path.join(OUT, f"profile-{tag}-first-infusion-move.txt"))
        direct = []
        for level in sorted(level_sizes):
            with app.app_context():
                study = settings.study_in_force(db.session)
                t = time.perf_counter()
                ids = sorted(
                    set(
                        db.session.execute(
                            select(Infusion.subject_id)
                            .join(Subject, Subject.id == Infusion.subject_id)
                            .where(
                                Subject.dose_level == level,
                                Infusion.state == "scheduled",
                                Infusion.subject_id.not_in(
                                    select(Infusion.subject_id).where(Infusion.state == "given")
                                ),
                            )
                        ).scalars()
                    )
                )
                judged = judgement.judge_subjects(db.session, ids, study)
                db.session.commit()
                direct.append({"level": level, "subjects": len(ids), "judged": judged, "s": time.perf_counter() - t})
                db.session.remove()
        out["move_direct"] = direct
    else:
        out["move_direct"] = []
    out["saves_refused"] = refused[:5]
    return out


def worker_pages(args) -> None:
    """A page-timing server: reads JSON commands on stdin, answers JSON lines on stdout."""
    app, pkg = _worker_app(args.url)
    from sqlalchemy import select

    from cellstudy.auth.models import Site
    from cellstudy.enrollment.models import Subject
    from cellstudy.extensions import db
    from cellstudy.infusions.models import Infusion

    stmts = _Statements()
    with app.app_context():
        stmts.install(db.engine)
        hz = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        numbers = (
            db.session.execute(
                select(Subject.subject_number)
                .join(Infusion, Infusion.subject_id == Subject.id)
                .where(Subject.site_id == hz.id, Infusion.state == "scheduled", Subject.subject_number.is_not(None))
                .group_by(Subject.subject_number)
                .order_by(Subject.subject_number)
            )
            .scalars()
            .all()
        )
        step = max(1, len(numbers) // args.subject_pages)
        chosen = numbers[::step][: args.subject_pages]
        ids = dict(
            db.session.execute(
                select(Subject.subject_number, Subject.id).where(Subject.subject_number.in_(chosen))
            ).all()
        )
        db.session.remove()
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = USER_AGENT
    resp = client.post("/login", data={"username": "coord-hz", "password": PASSWORD})
    if resp.status_code != 302:
        raise SystemExit(f"login as coord-hz: HTTP {resp.status_code}")
    markers = {"calendar": 'id="calendar"', "subject page": "Eligibility decisions"}
    clients = dict.fromkeys(markers, client)
    if args.extra_pages:  # issue 12: the pages whose site scoping and queries it rewrote
        for page, username in EXTRA_PAGES.items():
            if username not in clients:
                other = app.test_client()
                other.environ_base["HTTP_USER_AGENT"] = USER_AGENT
                resp = other.post("/login", data={"username": username, "password": PASSWORD})
                if resp.status_code != 302:
                    raise SystemExit(f"login as {username}: HTTP {resp.status_code}")
                clients[username] = other
            clients[page] = clients[username]
            markers[page] = "</html>"

    def path(page: str, i: int) -> str:
        if page in EXTRA_PATHS:
            return EXTRA_PATHS[page].format(subject=ids[chosen[i % len(chosen)]])
        return "/calendar" if page == "calendar" else f"/subjects/{ids[chosen[i % len(chosen)]]}"

    info = {}
    for page in markers:  # check each page once, and warm up
        for i in range(len(chosen) if page == "subject page" else 3):
            resp = clients[page].get(path(page, i))
            body = resp.get_data(as_text=True)
            if resp.status_code != 200 or markers[page] not in body:
                raise SystemExit(
                    f"GET {path(page, i)}: HTTP {resp.status_code}, marker "
                    f"{'found' if markers[page] in body else 'missing'}"
                )
            if i == 0:
                info[page] = {"bytes": len(body.encode()), "rows": body.count("<tr")}
    print(json.dumps({"ready": True, "cellstudy": pkg, "subjects": chosen, "pages": info}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        if cmd.get("profile"):  # cProfile n GETs of the page; the statements of one
            n0 = stmts.n
            statements: list[str] = []
            from sqlalchemy import event

            def keep(_conn, _cursor, statement, *_rest, statements=statements):
                statements.append(" ".join(statement.split())[:200])

            with app.app_context():
                event.listen(db.engine, "before_cursor_execute", keep)
            clients[cmd["page"]].get(path(cmd["page"], 0))
            with app.app_context():
                event.remove(db.engine, "before_cursor_execute", keep)
            _profile(
                lambda cmd=cmd: [clients[cmd["page"]].get(path(cmd["page"], i)).get_data() for i in range(cmd["n"])],
                cmd["profile"],
            )
            with open(cmd["profile"], "a") as f:
                f.write(f"\n--- the {len(statements)} SQL statements of one GET {path(cmd['page'], 0)} ---\n")
                f.write("\n".join(statements) + "\n")
            print(json.dumps({"profiled": cmd["profile"], "queries": stmts.n - n0}), flush=True)
            continue
        wall, cpu, queries = [], [], []
        for i in range(cmd["n"]):
            p = path(cmd["page"], cmd.get("offset", 0) + i)
            n0, c0, t0 = stmts.n, time.process_time(), time.perf_counter()
            resp = clients[cmd["page"]].get(p)
            resp.get_data()
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            queries.append(stmts.n - n0)
            if resp.status_code != 200:
                raise SystemExit(f"GET {p}: HTTP {resp.status_code}")
        print(json.dumps({"wall": wall, "cpu": cpu, "queries": queries}), flush=True)


# =================================================================================================
# The driver
# =================================================================================================


def sh(cmd: list[str], cwd: str | None = None) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def take_snapshot() -> tuple[str, str]:
    """Copy the app (cellstudy/, migrations/, config.py, wsgi.py) of the working tree: edits
    others make during the run cannot mix two versions of the code."""
    import hashlib

    dest = os.path.join(OUT, "snapshot")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("cellstudy", "migrations"):
        shutil.copytree(os.path.join(REPO, name), os.path.join(dest, name), ignore=ignore)
    for name in ("config.py", "wsgi.py"):
        shutil.copy2(os.path.join(REPO, name), dest)
    os.makedirs(os.path.join(dest, "bench"))
    shutil.copy2(os.path.join(BENCH, "dataset.py"), os.path.join(dest, "bench"))  # the loader of the same moment
    digest = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(dest)):
        dirs.sort()
        for fname in sorted(files):
            p = os.path.join(base, fname)
            digest.update(os.path.relpath(p, dest).encode() + b"\0")
            with open(p, "rb") as f:
                digest.update(f.read())
    return dest, digest.hexdigest()[:12]


def parent_commit() -> str:
    """The commit before issue 11's core: the parent of the commit that added judgement.py."""
    added = sh(["git", "log", "--diff-filter=A", "--format=%H", "--", "cellstudy/infusions/judgement.py"], cwd=REPO)
    if not added or added == "?":
        return "HEAD"  # issue 11's core not committed yet: HEAD is the commit before it
    return sh(["git", "rev-parse", added.splitlines()[-1] + "^"], cwd=REPO)


class Databases:
    """The databases this run creates, dropped at the end."""

    def __init__(self, kind: str, tmp: str):
        self.kind, self.tmp, self.pg = kind, tmp, []

    def fresh(self, name: str) -> str:
        if self.kind == "sqlite":
            return "sqlite:///" + os.path.join(self.tmp, f"{name}.db")
        import psycopg

        db = f"cellstudy_judgement_{name}_{os.getpid()}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')
        self.pg.append(db)
        admin = urllib.parse.urlsplit(PG_ADMIN_URL)
        return urllib.parse.urlunsplit(("postgresql+psycopg", admin.netloc, "/" + db, "", ""))

    def drop(self) -> None:
        if not self.pg:
            return
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for db in self.pg:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.pg = []


def load_dataset(tree: str, url: str, args) -> dict:
    script = os.path.join(tree, "bench", "dataset.py")
    t = time.perf_counter()
    proc = subprocess.run(
        [PY, script, "load", "--url", url, "--subjects", str(args.subjects), "--real", str(args.real)],
        cwd=tree,
        env={**os.environ, "BENCH_APP_ROOT": tree, "PYTHONPATH": tree},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} load failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "s": time.perf_counter() - t,
        "subjects_total": out.get("subjects_total"),
        "audit_records": out.get("audit_records"),
        "infusions": out.get("infusions"),
        "calendar_infusions": out.get("calendar_infusions"),
        "today": out.get("today"),
        "demo_error": out.get("demo_error"),
    }


def worker_cmd(kind: str, url: str, args) -> list[str]:
    return [
        PY,
        os.path.abspath(__file__),
        "--worker",
        kind,
        "--url",
        url,
        "-n",
        str(args.n),
        "--moves",
        str(args.moves),
        "--amend-real",
        str(args.amend_real),
        "--amend-direct",
        str(args.amend_direct),
        "--move-budget",
        str(args.move_budget),
        "--n-stagger",
        str(args.n_stagger),
        "--profile-subjects",
        str(args.profile_subjects),
        "--quiet-wait",
        str(args.quiet_wait),
        "--subject-pages",
        str(args.subject_pages),
        *(["--extra-pages"] if args.extra_pages else []),
    ]


def run_writes(tree: str, url: str, args) -> dict:
    proc = subprocess.run(
        worker_cmd("writes", url, args),
        cwd=tree,
        env={**os.environ, "BENCH_APP_ROOT": tree},
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the writes worker failed ({proc.returncode}); its log is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class PageWorker:
    def __init__(self, name: str, tree: str, url: str, args):
        self.name = name
        self.proc = subprocess.Popen(
            worker_cmd("pages", url, args),
            cwd=tree,
            env={**os.environ, "BENCH_APP_ROOT": tree},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"page worker {self.name} exited ({self.proc.wait()})")
        return json.loads(line)

    def profile(self, page: str, n: int, path: str) -> dict:
        self.proc.stdin.write(json.dumps({"page": page, "n": n, "profile": path}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, page: str, n: int, offset: int) -> dict:
        self.proc.stdin.write(json.dumps({"page": page, "n": n, "offset": offset}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.terminate()
                self.proc.wait(10)


def kind_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def run_pages(snapshot: str, url: str, parent: str, parent_url: str, args) -> dict:
    after = PageWorker("after", snapshot, url, args)
    try:
        before = PageWorker("before", parent, parent_url, args)
    except Exception:
        after.stop()
        raise
    try:
        res: dict = {"after": after.ready, "before": before.ready}
        if after.ready["subjects"] != before.ready["subjects"]:
            log(
                "   NOTE: the two datasets' subject-page targets differ: "
                f"{after.ready['subjects'][:5]}... vs {before.ready['subjects'][:5]}..."
            )
        pages = [("calendar", args.calendar_n), ("subject page", args.subject_n)]
        if args.extra_pages:
            pages += [(page, args.extra_n) for page in EXTRA_PAGES]
        for page, n in pages:
            rounds, quiet = [], []
            sample = _machine_sample()
            for r in range(args.page_rounds):
                quiet.append(wait_quiet(args.quiet_wait))  # both workers idle: others' load
                first, second = (after, before) if r % 2 == 0 else (before, after)
                got = {}
                for w in (first, second):
                    got[w.name] = w.run(page, n, offset=r * n)
                rounds.append(got)
            busy = _busy_since(sample)
            ratios = [statistics.median(g["after"]["wall"]) / statistics.median(g["before"]["wall"]) for g in rounds]
            cpu_ratios = [
                statistics.median(g["after"]["cpu"]) / statistics.median(g["before"]["cpu"])
                for g in rounds
                if statistics.median(g["before"]["cpu"]) > 0
            ]
            flat = {side: [x for g in rounds for x in g[side]["wall"]] for side in ("after", "before")}
            cpu = {side: [x for g in rounds for x in g[side]["cpu"]] for side in ("after", "before")}
            queries = {
                side: statistics.median([x for g in rounds for x in g[side]["queries"]]) for side in ("after", "before")
            }
            res[page] = {
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratios": [round(x, 3) for x in ratios],
                "cpu_ratio_median": statistics.median(cpu_ratios) if cpu_ratios else None,
                "after": {
                    **_summary(flat["after"]),
                    "cpu_p50_ms": _pct(cpu["after"], 0.5),
                    "queries_p50": queries["after"],
                },
                "before": {
                    **_summary(flat["before"]),
                    "cpu_p50_ms": _pct(cpu["before"], 0.5),
                    "queries_p50": queries["before"],
                },
                "busy_pct": busy,
                "n_per_block": n,
                "rounds": args.page_rounds,
                "others_before_rounds_pct": [round(x) for x in quiet],
            }
            p = res[page]
            log(
                f"   {page}: before p50 {p['before']['p50_ms']:.1f} ms, after {p['after']['p50_ms']:.1f} ms; "
                f"paired ratio after/before {p['ratio_median']:.3f} ({p['ratio_min']:.3f}-{p['ratio_max']:.3f}); "
                f"CPU ratio {p['cpu_ratio_median'] or 0:.3f}; queries {p['before']['queries_p50']:.0f} -> "
                f"{p['after']['queries_p50']:.0f}"
            )
        tag = kind_of(url)
        for page, n in (("calendar", args.calendar_n), ("subject page", args.subject_n)):
            for w in (after, before):
                w.profile(page, n, os.path.join(OUT, f"profile-{tag}-page-{page.replace(' ', '-')}-{w.name}.txt"))
        return res
    finally:
        after.stop()
        before.stop()


def run_database(kind: str, snapshot: str, parent: str, args) -> dict:
    tmp = tempfile.mkdtemp(prefix="judgement-bench-")
    dbs = Databases(kind, tmp)
    res: dict = {"db": kind, "loadavg_start": os.getloadavg()}
    try:
        url, parent_url = dbs.fresh("main"), dbs.fresh("parent")
        log(f"== {kind}: dataset ({args.subjects} subjects) for this tree")
        res["load"] = load_dataset(snapshot, url, args)
        log(f"   loaded in {res['load']['s']:.0f} s: {res['load']['subjects_total']} subjects")
        if args.pages:
            log(f"   dataset for the parent commit ({parent})")
            res["load_parent"] = load_dataset(parent, parent_url, args)
            log(f"   loaded in {res['load_parent']['s']:.0f} s")
        # Judge everything first (the writes worker's step 0), then the pages, then the writes.
        log("   judging every planned infusion, then the pages (paired with the parent commit)")
        pre = subprocess.run(
            [
                PY,
                "-c",
                "import os,sys; sys.path.insert(0, os.environ['BENCH_APP_ROOT']);"
                "from cellstudy import create_app; from cellstudy.extensions import db;"
                "from cellstudy.infusions import judgement; import time;"
                f"app = create_app('development', overrides={{'SQLALCHEMY_DATABASE_URI': {url!r},"
                "'AMENDMENTS_SCHEDULER': False});"
                "ctx = app.app_context(); ctx.push(); t = time.perf_counter();"
                "n = judgement.rejudge_everything(db.session); print(n, time.perf_counter() - t)",
            ],
            cwd=snapshot,
            env={**os.environ, "BENCH_APP_ROOT": snapshot},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if pre.returncode != 0:
            raise RuntimeError("rejudge_everything failed:\n" + pre.stderr[-2000:])
        judged, seconds = pre.stdout.split()
        res["rejudge_everything_first"] = {"judged": int(judged), "s": float(seconds)}
        log(f"   rejudge_everything (fresh process): {judged} planned infusions in {float(seconds):.2f} s")
        if args.pages:
            res["pages"] = run_pages(snapshot, url, parent, parent_url, args)
        if args.writes:
            log("   the writes (targets 1-3)")
            res["writes"] = run_writes(snapshot, url, args)
    finally:
        dbs.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    return res


# --- report ---------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def report(results: dict) -> str:
    m = results["machine"]
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    dbs = results["databases"]
    lines = [
        BEGIN,
        "",
        f"Run: {m['date']} · commit {m['commit']} + working tree, snapshot {m['snapshot']} · compared with "
        f"{m['parent']} (the commit before issue 11's core, a clean `git worktree`) · "
        f"`{' '.join(results['argv'])}` · {m['cpu']} (`nproc` = {m['nproc']}), Python {m['python']}, "
        f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql']} · load average at start {m['loadavg_start']}, "
        f"at the end {m['loadavg_end']} (the machine is shared with other sessions) · took "
        f"{results['elapsed_s'] / 60:.0f} min.",
        "",
        "### Targets",
        "",
        "| target | " + " | ".join(names[d["db"]] for d in dbs) + " |",
        "|---|" + "---|" * len(dbs),
    ]

    def row(label: str, cell) -> None:
        lines.append(
            f"| {label} | "
            + " | ".join(cell(d) if "writes" in d or label.startswith("4.") else "not measured" for d in dbs)
            + " |"
        )

    for kind in ("AE", "exposure"):

        def cell(d, kind=kind):
            s = d["writes"]["saves"][kind]
            extra = s["on"]["p50_ms"] - s["off"]["p50_ms"]
            return (
                f"{extra:+.1f} ms ({s['on']['p50_ms']:.1f} on vs {s['off']['p50_ms']:.1f} off): "
                f"{mark(extra < SAVE_EXTRA_MS)}"
            )

        row(f"1. {kind} save: p50 extra of the re-judging < 20 ms", cell)

    def stagger_cell(d):
        s = d["writes"]["saves_stagger"]
        extra = s["on"]["p50_ms"] - s["off"]["p50_ms"]
        return f"{extra:+,.0f} ms ({s['on']['p50_ms']:,.0f} on vs {s['off']['p50_ms']:,.0f} off): {mark(extra < SAVE_EXTRA_MS)}"

    row("1. (same target) AE save for a subject whose first infusion is planned, stagger in force", stagger_cell)
    row(
        "2. first-infusion move (stagger in force), p50 < 2 s",
        lambda d: (
            f"{d['writes']['moves']['on']['p50_ms'] / 1000:.2f} s (p95 {d['writes']['moves']['on']['p95_ms'] / 1000:.2f}): "
            f"{mark(d['writes']['moves']['on']['p50_ms'] / 1000 < MOVE_S)}"
        ),
    )

    def amend_cell(d):
        runs = d["writes"]["amend_real"]["runs"]["on"]
        worst = max(r["approve_s"] for r in runs)
        direct = d["writes"]["amend_direct"]["p50_s"]
        return (
            f"approval {worst:.2f} s (worst of {len(runs)}); every planned infusion judged + commit "
            f"{direct:.2f} s: {mark(worst < AMEND_S and direct < AMEND_S)}"
        )

    row("3. amendment coming into force (re-judges every planned infusion) < 2 s: no stagger in force", amend_cell)
    row(
        "3. (same target) the amendment that sets the sentinel stagger",
        lambda d: (
            f"approval {d['writes']['amend_stagger']['approve_s']:,.1f} s: "
            f"{mark(d['writes']['amend_stagger']['approve_s'] < AMEND_S)}"
        ),
    )
    for page in ("calendar", "subject page"):

        def pcell(d, page=page):
            if "pages" not in d:
                return "not measured"
            p = d["pages"][page]
            return (
                f"{100 * (p['ratio_median'] - 1):+.1f} % ({p['before']['p50_ms']:.1f} → {p['after']['p50_ms']:.1f} ms): "
                f"{mark(p['ratio_median'] <= 1 + PAGE_SHARE)}"
            )

        row(f"4. {page}: within 10 % of before (paired, median of per-round ratios)", pcell)
    lines.append("")

    for d in dbs:
        w = d.get("writes")
        title = names[d["db"]]
        lines += [f"### {title}", ""]
        ld = d["load"]
        lines.append(
            f"Dataset: {ld['subjects_total']:,} subjects, {ld['audit_records']:,} audit records, loaded in "
            f"{ld['s']:.0f} s (this tree)"
            + (
                f", {d['load_parent']['s']:.0f} s (parent commit, its own bench/dataset.py)"
                if "load_parent" in d
                else ""
            )
            + (
                f"; {w['planned_infusions']:,} planned infusions of {w['subjects_with_planned']:,} subjects"
                if w
                else ""
            )
            + f". `rejudge_everything` after the load: {d['rejudge_everything_first']['judged']:,} judged in "
            f"{d['rejudge_everything_first']['s']:.2f} s (a fresh process"
            + (
                f"; again in the writes process: {w['rejudge_everything']['s']:.2f} s), {w['locked_before']} locked"
                if w
                else ")"
            )
            + ". Load average "
            f"{' '.join(f'{x:.2f}' for x in d['loadavg_start'])} at the start of this database, "
            f"{' '.join(f'{x:.2f}' for x in d['loadavg_end'])} at its end."
        )
        if w:
            lines += [
                "",
                "| save (through the service, commit included) | hook | n | p50 ms | p95 ms | SQL statements (p50) "
                "| stored afterwards |",
                "|---|---|---:|---:|---:|---:|---|",
            ]
            for kind in ("AE", "exposure"):
                for mode in ("on", "off", "no hooks"):
                    s = w["saves"][kind][mode]
                    label = {"on": "re-judging on", "off": "re-judging off", "no hooks": "every write hook off"}[mode]
                    stored = (
                        f"{s['stored_toxicity_hold']} of {s['n']} subjects' planned infusions on toxicity hold"
                        if kind == "AE"
                        else f"{s['stored_steroid_or_washout']} of {s['n']} with a steroid/washout lockout"
                    )
                    lines.append(
                        f"| {kind} ({'related grade 3 Nausea' if kind == 'AE' else 'systemic steroid, last dose today'}) "
                        f"| {label} | {s['n']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['queries_p50']:.0f} | {stored} |"
                    )
            others = ", ".join(f"{k} {v:.0f} %" for k, v in w.get("others_busy_pct", {}).items()) or "not recorded"
            lines.append(f"\nOther people's use of the CPUs just before each part (ours idle): {others}.")
            lines.append(
                f"\nMachine busy during the saves (all processes, ours included): {w['saves_busy_pct']:.0f} %. "
                f"Saves interleaved: for each i, AE then exposure, the three modes in rotated order, each "
                f"save on another subject with planned infusions (of {w['save_candidates']})."
            )
            st = w["saves_stagger"]
            lines.append(
                f"\nStagger in force ({w['stagger_in_force']} days), an AE save (same values) for a subject whose "
                f"first infusion is planned: re-judging on p50 {st['on']['p50_ms']:,.0f} ms (n {st['on']['n']}: "
                f"{_j(st['on']['ms_all'], ',.0f')} ms), off p50 {st['off']['p50_ms']:,.0f} ms (n {st['off']['n']}); "
                f"SQL statements {st['on']['queries_p50']:,.0f} / {st['off']['queries_p50']:,.0f}. Judging one such "
                f"subject takes {w['judge_planned_first_s_per_subject']:.2f} s (`judge_subjects`, mean of "
                f"{results['args'].get('profile_subjects', 5)} subjects; cProfile in "
                f"profile-{d['db']}-judge-planned-first-stagger.txt)."
            )
            mv = w["moves"]
            lines += [
                "",
                "| first-infusion move (`reschedule`, one day; stagger in force) | n | p50 ms | p95 ms | max ms | SQL statements (p50) |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for mode in ("on", "off"):
                s_ = mv[mode]
                lines.append(
                    f"| re-judging {mode} | {s_['n']} | {s_['p50_ms']:,.0f} | {s_['p95_ms']:,.0f} | {s_['max_ms']:,.0f} "
                    f"| {s_['queries_p50']:,.0f} |"
                )
            sizes = ", ".join(f"{k} {v}" for k, v in sorted(w["move_level_sizes"].items()))
            direct = (
                "; ".join(
                    f"{r['level']} {r['s']:.2f} s ({r['subjects']} subjects, {r['judged']} infusions)"
                    for r in w["move_direct"]
                )
                if w["move_direct"]
                else "not run (the moves themselves take longer than 5 s)"
            )
            lines.append(
                f"\nMoves on: {_j(mv['on']['ms_all'], ',.0f')} ms (levels {', '.join(mv['on']['levels'])}). "
                f"Subjects of each dose level with nothing given and an infusion planned (a move re-judges "
                f"those of its level): {sizes}. `judge_subjects` over one level's alone, plus commit: {direct}. "
                f"Machine busy during the moves: {w['moves_busy_pct']:.0f} %."
            )
            ar = w["amend_real"]["runs"]
            lines += [
                "",
                "| amendment | hook | propose s | approve s (e-signature included) | "
                "SQL statements propose / approve |",
                "|---|---|---|---|---|",
            ]
            for mode in ("on", "off"):
                lines.append(
                    f"| toxicity hold from grade 2 / 3 (no stagger in force) | re-judging {mode} | "
                    f"{_j(r['propose_s'] for r in ar[mode])} | {_approvals(ar[mode])} | {_queries(ar[mode])} |"
                )
            sa = w["amend_stagger"]
            lines.append(
                f"| sentinel stagger {w['stagger_in_force']} days | re-judging on | {sa['propose_s']:.2f} | "
                f"{sa['approve_s']:,.2f} | {sa['propose_queries']:,} / {sa['approve_queries']:,} |"
            )
            ad = w["amend_direct"]["runs"]
            lines.append(
                f"| `judge_subjects` over every subject with a planned infusion (definition in force, new "
                f"version label: every judgement rewritten) + commit, no stagger | | | {_j(r['s'] for r in ad)} "
                f"(judging alone {_j(r['judge_s'] for r in ad)}) | {ad[0]['queries']:,} |"
            )
            lines.append(
                f"\n{ad[0]['judged']:,} planned infusions of {ad[0]['subjects']:,} subjects. After the stagger "
                f"amendment, judgements not of the version in force: {w['judgements_not_of_version_in_force']}. "
                f"Machine busy during the amendments: {w['amend_real']['busy_pct']:.0f} % (toxicity hold), "
                f"{sa['busy_pct']:.0f} % (stagger)."
            )
        if "pages" in d:
            pg = d["pages"]
            lines += [
                "",
                "| page (test client, coord-hz) | before p50 ms | after p50 ms | before p95 | after p95 | "
                "paired ratio after/before: median (range) | CPU ratio | SQL before → after | "
                "bytes before → after |",
                "|---|---:|---:|---:|---:|---|---:|---|---|",
            ]
            for page in ("calendar", "subject page"):
                p = pg[page]
                lines.append(
                    f"| {page} | {p['before']['p50_ms']:.1f} | {p['after']['p50_ms']:.1f} | "
                    f"{p['before']['p95_ms']:.1f} | {p['after']['p95_ms']:.1f} | {p['ratio_median']:.3f} "
                    f"({p['ratio_min']:.3f}–{p['ratio_max']:.3f}) | {p['cpu_ratio_median'] or 0:.3f} | "
                    f"{p['before']['queries_p50']:.0f} → {p['after']['queries_p50']:.0f} | "
                    f"{pg['before']['pages'][page]['bytes']:,} → {pg['after']['pages'][page]['bytes']:,} |"
                )
            c, s = pg["calendar"], pg["subject page"]
            lines.append(
                f"\n{c['rounds']} rounds, alternating which tree goes first; per round a block of "
                f"{c['n_per_block']} calendar GETs and of {s['n_per_block']} subject-page GETs (20 subjects "
                f"with planned infusions, cycled, the same subject numbers in both) per tree. *CPU ratio*: the "
                f"same with the Python process's CPU time (the database server's excluded). Machine busy "
                f"during the pages (ours included): {c['busy_pct']:.0f} % / {s['busy_pct']:.0f} %; other "
                f"people's use of the CPUs just before each round (our workers idle): calendar "
                f"{_range(c.get('others_before_rounds_pct'))} %, subject page "
                f"{_range(s.get('others_before_rounds_pct'))} %."
            )
        lines.append("")
    lines += [
        "### How to reproduce",
        "",
        "`make bench-judgement` (= `.venv/bin/python bench/judgement_bench.py`; options `--db sqlite|postgres|both`, "
        "`--subjects`, `-n` saves per mode, `--moves`, `--page-rounds`, `--no-pages`, `--no-writes`, `--extra-pages` (issue 12: screening form, queries, dashboards, audit trail, AE listing), `--extra-n`, `--parent-rev`, `--parent-tree`, `--no-write`, `--report-from JSON`). "
        "The parent commit is checked out with `git worktree add --detach /tmp/bench-parent-<pid> <rev>` and removed "
        "with `git worktree remove --force` at the end; `--parent-tree DIR` uses an existing checkout instead. "
        "Raw figures: bench/out/judgement/results-*.json; cProfile (bench/out/judgement/profile-*.txt) of one "
        "hooked AE save and exposure save, of `judge_subjects` over 5 subjects with a planned first infusion "
        "(stagger in force), of 5 calendar and 20 subject-page GETs in each tree (with the SQL statements of "
        "one GET) and, when a move takes under 5 s, of one first-infusion move.",
        "",
        END,
    ]
    return "\n".join(lines)


def write_results(block: str) -> None:
    text = open(RESULTS).read()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + f"\n\n{HEADING}\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)


def machine() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as error:  # noqa: BLE001 (--db sqlite works without it)
        pg = f"unavailable ({error.__class__.__name__})"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "nproc": sh(["nproc"]),
        "python": sh([PY, "-c", "import sys; print(sys.version.split()[0])"]),
        "sqlite": sh([PY, "-c", "import sqlite3; print(sqlite3.sqlite_version)"]),
        "postgresql": pg,
        "commit": sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--real", type=int, default=100, help="subjects loaded through the real services")
    parser.add_argument("-n", type=int, default=40, help="saves of each kind per mode (default 40)")
    parser.add_argument("--moves", type=int, default=10, help="first-infusion moves per mode (default 10)")
    parser.add_argument("--amend-real", type=int, default=2, help="amendments approved per mode (default 2)")
    parser.add_argument("--amend-direct", type=int, default=3, help="judge_subjects runs over everything (default 3)")
    parser.add_argument(
        "--move-budget", type=float, default=120.0, help="seconds of moves after the first 2 per mode (default 120)"
    )
    parser.add_argument(
        "--n-stagger",
        type=int,
        default=4,
        help="AE saves per mode on subjects with a planned first infusion, stagger in force (default 4)",
    )
    parser.add_argument(
        "--profile-subjects",
        type=int,
        default=5,
        help="subjects with a planned first infusion judged under cProfile (default 5)",
    )
    parser.add_argument("--page-rounds", type=int, default=10)
    parser.add_argument("--calendar-n", type=int, default=5, help="calendar GETs per block (default 5)")
    parser.add_argument("--subject-n", type=int, default=20, help="subject-page GETs per block (default 20)")
    parser.add_argument("--subject-pages", type=int, default=20)
    parser.add_argument("--no-pages", dest="pages", action="store_false")
    parser.add_argument(
        "--extra-pages",
        action="store_true",
        help="also the issue 12 pages: screening, queries, dashboards, audit, AE listing",
    )
    parser.add_argument("--extra-n", type=int, default=5, help="GETs per block of each extra page (default 5)")
    parser.add_argument("--no-writes", dest="writes", action="store_false", help="only the pages (target 4)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="wait up to N s before each measured part until others use < 30 %% of the CPUs",
    )
    parser.add_argument("--parent-rev", help="the commit before issue 11's core (default: found with git log)")
    parser.add_argument("--parent-tree", help="an existing checkout of the parent commit (read-only use)")
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not update bench/RESULTS.md")
    parser.add_argument("--report-from", metavar="JSON", help="only re-render the report from a results-*.json")
    parser.add_argument("--worker", choices=("writes", "pages"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "writes":
        print(json.dumps(worker_writes(args), default=str), flush=True)
        return
    if args.worker == "pages":
        worker_pages(args)
        return

    if args.report_from:
        with open(args.report_from) as f:
            block = report(json.load(f))
        print(block)
        if args.write:
            write_results(block)
            log("bench/RESULTS.md updated from " + args.report_from)
        return
    os.makedirs(OUT, exist_ok=True)
    started = time.time()
    results: dict = {
        "argv": ["bench/judgement_bench.py", *sys.argv[1:]],
        "machine": machine(),
        "databases": [],
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "url")},
    }
    snapshot, results["machine"]["snapshot"] = take_snapshot()
    log(f"app snapshot {results['machine']['snapshot']}; load average {results['machine']['loadavg_start']}")
    made_worktree = None
    parent = args.parent_tree
    rev = args.parent_rev or parent_commit()
    if args.pages and not parent:
        parent = made_worktree = f"/tmp/bench-parent-{os.getpid()}"
        subprocess.run(
            ["git", "worktree", "add", "--detach", parent, rev], cwd=REPO, check=True, capture_output=True, text=True
        )
    if parent:
        rev = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=parent)
    results["machine"]["parent"] = rev
    log(f"parent commit {rev} in {parent}")
    try:
        for kind in (
            ["sqlite", "postgresql"] if args.db == "both" else ["postgresql" if args.db == "postgres" else "sqlite"]
        ):
            results["databases"].append(run_database(kind, snapshot, parent, args))
    finally:
        if made_worktree:
            subprocess.run(["git", "worktree", "remove", "--force", made_worktree], cwd=REPO, capture_output=True)
    results["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["elapsed_s"] = time.time() - started
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(OUT, f"results-{stamp}.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    block = report(results)
    print("\n" + block)
    if args.write:
        write_results(block)
        log("bench/RESULTS.md updated")


if __name__ == "__main__":
    main()
