"""A larger study for the ODM round trip (issue 15): SUBJECTS subjects at two sites, built with
the demo's builders (cellstudy/demo.py) through the real services, in a loop with varied values
and awkward text (CJK, ``&<>"``, line breaks and tabs, C0 controls, long text): drafts, complete
screenings awaiting the investigator, screen failures and re-screenings, enrolments (e-signed),
scheduled, cancelled and given infusions, lymphodepletion, visits, AEs with CRS and ICANS assessments,
queries in every state, SDV and signed DLT assessments."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from sqlalchemy import select

from cellstudy import demo
from cellstudy.adverse_events import service as aes
from cellstudy.auth import service as auth
from cellstudy.auth.models import Site, User
from cellstudy.enrollment import service as enrollment
from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.infusions.dose_levels import dlt_form, proposed_dose_level, save_dlt
from cellstudy.infusions.proposal import first_infusion_date
from cellstudy.infusions import scheduling
from cellstudy.infusions.scheduling import schedule_infusion
from cellstudy.monitoring import service as monitoring
from cellstudy.records.transaction import transaction
from cellstudy.settings import current_study
from cellstudy.timeutil import utcnow

SUBJECTS = 32
SITES = (
    ("HZ", 'Hangzhou — 浙江大学医学院附属第一医院 & <"First"> Hospital', "Asia/Shanghai"),
    ("NB", "Ningbo & Berlin (fictional) — 宁波", "Europe/Berlin"),
)
EXTRA_USERS = (("inv2-nb", '李娜 & "Nina" <Co-PI>', "investigator", ("NB",)),)
#: awkward text: CJK, the XML specials, a tab and a line break, C0 controls XML 1.0 forbids
AWKWARD = '发热 中性粒细胞减少 & <b>"quoted"</b> \x01\x07 tab\there\nline'
LONG = ("Très long — 很长的文本 & <ok> " * 120)[:2000]
OTHER_SPECIFY = "Blood and lymphatic system disorders - Other, specify"


def _users() -> dict[str, User]:
    return {u.username: u for u in db.session.execute(select(User)).scalars()}


def _enrol(subject: Subject, investigator: User, on: date | None = None) -> None:
    """As demo._enrol; once the escalation rule proposes no level (a cohort waiting for its DLT
    evaluations), at the first level with a reason (a dose-level deviation)."""
    level, _why = proposed_dose_level()
    first = current_study().regimen.dose_levels[0].name
    decision = enrollment.enrol(
        subject,
        user=investigator,
        password=demo.DEMO_PASSWORD,
        screening_version=subject.current_screening.version,
        dose_level=level or first,
        dose_level_reason=None if level else "Generated study: the cohort is open for testing",
    )
    if on is not None:
        stamp = datetime.combine(on, time(2, 0), tzinfo=timezone.utc)
        with transaction():
            subject.enrolled_at = decision.decided_at = decision.signature.signed_at = stamp


def _awkward_ae(subject: Subject, user: User, today: date, n: int) -> None:
    """An "Other, specify" AE with awkward verbatim text and a long comment."""
    aes.save_ae(
        subject,
        aes.new_ae(subject),
        {
            "term": OTHER_SPECIFY,
            "verbatim": f"{AWKWARD} #{n}",
            "onset_date": today - timedelta(days=1),
            "ongoing": True,
            "grade": "1",
            "serious": False,
            "related_nk": "unlikely",
            "related_ld": "unlikely",
            "expectedness": "unexpected",
            "action": "none",
            "outcome": "recovering",
            "comments": LONG if n % 2 else f"短 & <short> {n}",
        },
        user=user,
        expected_version=0,
        reason=None,
        complete=n % 3 != 0,
        today=today,
    )


def _queries(subject: Subject, users: dict[str, User], n: int) -> None:
    """Queries on the subject's AEs: open, answered, closed and cancelled, with awkward text."""
    site = subject.site.code.lower()
    author = users["monitor-hz"] if site == "hz" else users["dm"]
    for k, ae in enumerate(subject.adverse_events):
        query = monitoring.open_query(
            subject,
            user=author,
            form="adverse_event",
            form_id=ae.id,
            field=("grade", "comments", "onset_date", None)[(n + k) % 4],
            text=f"Please check {AWKWARD} ({n}.{k})",
        )
        action = (None, "answer", "close", "cancel")[(n + k) % 4]
        if action == "answer":
            monitoring.act(query, "answer", user=users[f"inv-{site}"], text=f"Checked: 已确认 & <ok> {n}")
        elif action is not None:
            monitoring.act(query, action, user=author, text=f"{action}d & done")


def _treated(subject: Subject, users: dict[str, User], today: date, n: int) -> None:
    """demo's treatment (lymphodepletion, infusion 1 given, D1/D3 visits, infusion 2 scheduled),
    its AEs with the CRS and ICANS assessments, SDV, a signed DLT assessment for some."""
    site = subject.site.code.lower()
    coord = users[f"coord-{site}"]
    demo._treat(subject, coord, today)
    demo._adverse_events(subject, coord, today)
    db.session.expire(subject)
    monitor = users["monitor-hz"] if site == "hz" else users["dm"]
    monitoring.verify(subject.infusions[0], user=monitor)
    for visit in subject.visits:
        if visit.status == "complete" and n % 2:
            monitoring.verify(visit, user=monitor)
    if n // 12 % 2 == 0:  # a signed DLT assessment: a DLT, and none
        investigator = users["inv2-nb"] if site == "nb" else users["inv-hz"]
        with transaction():
            form = dlt_form(subject, user=investigator)
            save_dlt(
                form,
                {
                    "evaluable": True,
                    "dlt": True,
                    "dlt_description": f"Grade 4 neutropenia > 14 days — 中性粒细胞 & <{n}>",
                }
                if n % 2 == 0
                else {"evaluable": True, "dlt": False},
                user=investigator,
                expected_version=form.version or 0,
                reason=None,
                complete=True,
                password=demo.DEMO_PASSWORD,
            )


def build(today: date | None = None) -> None:
    """The generated study, into an empty instance (no sites yet)."""
    today = today or utcnow().astimezone().date()  # the server's date, by the one clock
    sites = {code: auth.create_site(code, name, tz) for code, name, tz in SITES}
    for username, name, role, codes in (*demo.DEMO_USERS, *EXTRA_USERS):
        auth.create_user(username, name, role, demo.DEMO_PASSWORD, list(codes))
    db.session.commit()
    users = _users()
    for n in range(SUBJECTS):
        code = ("HZ", "NB")[n % 2]
        site = db.session.get(Site, sites[code].id)
        coord = users[f"coord-{code.lower()}"]
        investigator = users["inv2-nb"] if code == "NB" and n % 4 == 1 else users[f"inv-{code.lower()}"]
        stage = n // 2 % 6
        values = {
            "weight_kg": Decimal("48.5") + n,
            "sex": "FM"[n % 2],
            "date_of_birth": date(1950 + n, 1 + n % 12, 1 + n % 28),
            "ecog": n % 2,
        }
        if values["sex"] == "M":
            values.update(childbearing_potential=False, pregnancy_test=None)
        if stage == 0:
            demo.make_subject(site, coord, "draft", today, **values)
        elif stage == 1:
            subject = demo.make_subject(site, coord, "complete", today, **values)
            monitoring.verify(subject.current_screening, user=users["dm"], fields=["weight_kg", "sex"])
        elif stage == 2:
            failed = demo.make_subject(site, coord, "complete", today, alt=Decimal("130"), **values)
            enrollment.screen_fail(failed, user=coord, note=f"Excluded: {AWKWARD}")
            if n % 4 == 0:
                enrollment.rescreen(failed, user=coord, reason=f"Labs improved — 复查 & <ok> {n}")
        elif stage in (3, 4):
            subject = demo.make_subject(site, coord, "complete", today, **values)
            _enrol(subject, investigator)
            planned = first_infusion_date(subject)
            infusion = schedule_infusion(subject, planned, user=coord)
            if stage == 4:  # cancelled, and scheduled again a day later
                scheduling.cancel(
                    infusion,
                    user=coord,
                    expected_version=infusion.version,
                    reason=f"Product not released — 未放行 & <{n}>",
                )
                schedule_infusion(subject, planned + timedelta(days=1), user=coord)
            _awkward_ae(subject, coord, today, n)
            db.session.expire(subject)
            _queries(subject, users, n)
        else:  # on treatment: screened 20 days ago, first infusion 6 days ago
            subject = demo.make_subject(site, coord, "complete", today - timedelta(days=20), **values)
            _enrol(subject, investigator, on=today - timedelta(days=22))
            _treated(subject, users, today, n)
            _awkward_ae(subject, coord, today, n)
            db.session.expire(subject)
            _queries(subject, users, n)
        db.session.commit()
