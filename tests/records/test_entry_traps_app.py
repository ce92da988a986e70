"""Data-entry traps (issue 11, item 7) through the web app, where the rule is the server's:

- every CRF type renders read-only when it (or its subject, or the study) is locked, saying
  who locked it and when, in site time with UTC on hover;
- the casebook is signed with open queries, drafts or forms needing a signature only with a
  confirmation naming them, kept in the signature's audit record; refused at the field
  otherwise, before the password is tried;
- queries, signatures and jobs show site time (UTC on hover);
- labels, not codes: grade drivers, failed screening criteria, coded values in the casebook's
  audit appendix.

Demo (cellstudy/demo.py): HZ-001 (site HZ, Asia/Shanghai) is on treatment with three complete
AEs needing a signature and three unresolved queries; HZ-S002 has a complete screening and
nothing outstanding; HZ-S003 failed screening on its transaminases."""

from __future__ import annotations

import html
import io
import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import func, select

from cellstudy import registry
from cellstudy.extensions import db
from cellstudy.monitoring import rules
from cellstudy.records.models import AuditRecord, Signature
from tests.helpers import subject_by_number

PW = "cellstudy-demo"
SITE_TIME = re.compile(
    r'<time datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d UTC">'
    r"\d{4}-\d\d-\d\d \d\d:\d\d UTC\+8</time>"
)
DM_NAME = "Omar Haddad"


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


class Controls(HTMLParser):
    """The form controls of a page section and whether each can be used: its own `disabled`
    or a disabled fieldset around it."""

    def __init__(self):
        super().__init__()
        self.controls: list[tuple[str, str, bool]] = []  # (tag, name, enabled)
        self.buttons: list[str] = []
        self._fieldsets: list[bool] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "fieldset":
            self._fieldsets.append("disabled" in a)
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            enabled = "disabled" not in a and not any(self._fieldsets)
            self.controls.append((tag, a.get("name") or "", enabled))
        elif tag == "button" and not any(self._fieldsets):
            self.buttons.append(a.get("name") or "")

    def handle_endtag(self, tag):
        if tag == "fieldset" and self._fieldsets:
            self._fieldsets.pop()


def crf_part(page: str) -> str:
    """The page between the subject header and the monitoring panel: the CRF itself (the
    panel keeps its own actions: queries, unlocking)."""
    start = page.index('class="subject-header')
    end = page.find('id="monitoring"')
    return page[start : end if end > 0 else len(page)]


def controls_of(page: str) -> Controls:
    parser = Controls()
    parser.feed(crf_part(page))
    return parser


@pytest.fixture
def hz(app):
    with app.app_context():
        s = subject_by_number("HZ-001")
        return {
            "id": s.id,
            "screening": s.screenings[0].id,
            "exposure": s.exposures[0].id,
            "lymphodepletion": s.lymphodepletion_days[0].id,
            "infusion": s.infusions[1].id,
            "visit": s.visits[0].id,
            "aes": {ae.term: ae.id for ae in s.adverse_events},
        }


def _assessment(app, model_name: str, subject_id: int) -> int:
    from cellstudy.adverse_events import models

    model = getattr(models, model_name)
    with app.app_context():
        return db.session.scalars(select(model.id).where(model.subject_id == subject_id).order_by(model.id)).first()


def _dlt(app, login, subject_id) -> int:
    """The DLT assessment of HZ-001, saved once as a draft by the coordinator."""
    from cellstudy.infusions.models import DltAssessment

    response = login("coord-hz").post(
        f"/subjects/{subject_id}/dlt",
        data={"version": "0", "evaluable": "", "dlt": "", "dlt_description": "Nothing so far.", "save": "1"},
    )
    assert response.status_code == 302, text(response)
    with app.app_context():
        return db.session.scalars(select(DltAssessment.id).where(DltAssessment.subject_id == subject_id)).one()


FORMS = (
    "screening",
    "exposure",
    "lymphodepletion",
    "infusion",
    "visit",
    "dlt_assessment",
    "adverse_event",
    "crs_assessment",
    "icans_assessment",
)


def _target(app, login, hz, form: str) -> tuple[int, str]:
    sid = hz["id"]
    if form == "adverse_event":
        rid = hz["aes"]["Nausea"]
        return rid, f"/subjects/{sid}/adverse-events/{rid}"
    if form == "crs_assessment":
        rid = _assessment(app, "CrsAssessment", sid)
        return rid, f"/subjects/{sid}/crs/{rid}"
    if form == "icans_assessment":
        rid = _assessment(app, "IcansAssessment", sid)
        return rid, f"/subjects/{sid}/icans/{rid}"
    if form == "dlt_assessment":
        return _dlt(app, login, sid), f"/subjects/{sid}/dlt"
    rid = hz[form]
    path = {
        "screening": f"screening/{rid}",
        "exposure": f"exposures/{rid}",
        "lymphodepletion": f"lymphodepletion/{rid}",
        "infusion": f"infusions/{rid}",
        "visit": f"visits/{rid}",
    }
    return rid, f"/subjects/{sid}/{path[form]}"


def _lock(dm, subject_id, target, reason="SAE reconciliation"):
    response = dm.post(f"/subjects/{subject_id}/lock", data={"target": target, "reason": reason})
    assert response.status_code == 302


# --- 2. a locked form is read-only, whichever form it is ------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_a_locked_form_of_every_type_renders_read_only_saying_who_locked_it_and_when(app, login, hz, form):
    coord, dm = login("coord-hz"), login("dm")
    rid, url = _target(app, login, hz, form)
    before = text(coord.get(url))
    editable = controls_of(before)
    assert any(enabled for *_, enabled in editable.controls), "the form is editable before the lock"
    assert "locked-notice" not in before and editable.buttons  # a save button

    _lock(dm, hz["id"], f"{form}:{rid}")
    response = coord.get(url)
    assert response.status_code == 200
    page = text(response)
    notice = re.search(r'<p class="alert danger locked-notice"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert f"Locked by {DM_NAME} on " in notice and "this form is locked (SAE reconciliation)" in notice
    assert SITE_TIME.search(notice), notice  # site time, UTC on hover
    locked = controls_of(page)
    from cellstudy.monitoring import catalog

    fields = set(catalog.get(form).field_names)  # the CRF's own fields are all still shown
    assert {n for _, n, _ in editable.controls} & fields <= {n for _, n, _ in locked.controls}
    assert [c for c in locked.controls if c[2]] == [], "an enabled control on a locked form"
    assert locked.buttons == [] and 'class="panel save-bar"' not in page
    # the data manager keeps the monitoring panel's unlock action (the therapy log's entry pages
    # are for data entry only: its lock is lifted from Locks)
    if form != "exposure":
        assert "Unlock this form" in text(dm.get(url))


def test_a_subject_lock_makes_every_form_and_new_forms_read_only(app, login, hz):
    coord, dm = login("coord-hz"), login("dm")
    _lock(dm, hz["id"], "subject", reason="Casebook frozen")
    sid = hz["id"]
    urls = [
        f"/subjects/{sid}/adverse-events/new",
        f"/subjects/{sid}/crs/new",
        f"/subjects/{sid}/icans/new",
        f"/subjects/{sid}/exposures/new",
        f"/subjects/{sid}/dlt",
        f"/subjects/{sid}/screening",
        f"/subjects/{sid}/visits/{hz['visit']}",
        f"/subjects/{sid}/adverse-events/{hz['aes']['Nausea']}",
    ]
    for url in urls:
        page = text(coord.get(url))
        assert f"Locked by {DM_NAME} on " in page and "this subject's data is locked (Casebook frozen)" in page, url
        parsed = controls_of(page)
        assert parsed.controls and not [c for c in parsed.controls if c[2]], url
        assert parsed.buttons == [], (url, parsed.buttons)
    # the AE list offers no new AE either
    assert "Record an adverse event" not in text(coord.get(f"/subjects/{sid}/adverse-events"))


def test_a_study_lock_says_so_and_a_refused_save_stays_read_only_with_what_was_typed(app, login, hz):
    from tests.monitoring.test_monitoring_app import ae_form

    coord, dm = login("coord-hz"), login("dm")
    assert dm.post("/locks/study", data={"reason": "Database freeze", "confirm": "y"}).status_code == 302
    nausea = hz["aes"]["Nausea"]
    url = f"/subjects/{hz['id']}/adverse-events/{nausea}"
    assert "the whole study is locked (Database freeze)" in text(coord.get(url))
    # a save posted from a page opened before the lock: refused, shown read-only, the entry kept
    response = coord.post(url, data=ae_form(app, nausea, comments="Typed before the lock", reason="late"))
    page = text(response)
    assert response.status_code == 200 and "The whole study was locked by" in page
    assert "Typed before the lock" in page
    assert not [c for c in controls_of(page).controls if c[2]]
    with app.app_context():
        from cellstudy.adverse_events.models import AdverseEvent

        assert (db.session.get(AdverseEvent, nausea).data or {}).get("comments") is None


# --- 3. the casebook signature names what is outstanding -----------------------------------------


def test_the_confirmation_names_queries_drafts_and_unsigned_forms():
    assert rules.casebook_confirmation([], [], []) is None
    one = rules.casebook_confirmation([7], [], [])
    assert one == "I sign this casebook knowing that it still has 1 unresolved query (#7)."
    every = rules.casebook_confirmation([1, 4], ["Visit Day 7"], ["AE 1: Nausea", "DLT assessment"])
    assert every == (
        "I sign this casebook knowing that it still has 2 unresolved queries (#1, #4); "
        "1 draft form (Visit Day 7); 2 forms still needing a signature (AE 1: Nausea, DLT assessment)."
    )


def _casebook_signatures(app, subject_id) -> int:
    with app.app_context():
        return db.session.scalar(
            select(func.count())
            .select_from(Signature)
            .where(Signature.form == "casebook", Signature.form_id == subject_id)
        )


def _confirmation(page: str) -> str:
    return re.search(r'<input id="cb-confirm" name="confirm_outstanding" type="checkbox" value="([^"]*)"', page).group(
        1
    )


def test_a_casebook_with_outstanding_work_is_signed_only_with_the_confirmation_naming_it(app, login, hz):
    inv = login("inv-hz")
    sid = hz["id"]
    page = text(inv.get(f"/subjects/{sid}/monitoring"))
    confirmation = _confirmation(page)
    assert "3 unresolved queries (#1, #2, #3)" in confirmation
    assert (
        "3 forms still needing a signature (AE 1: Cytokine release syndrome, AE 2: Febrile neutropenia, AE 3: Nausea)"
    ) in confirmation
    assert "draft" not in confirmation  # planned visits and the scheduled infusion are not started drafts
    sign = f"/subjects/{sid}/sign"

    # no tick: refused at the field, nothing signed, the password not tried (no failure counted)
    response = inv.post(sign, data={"target": "casebook", "password": PW})
    page = text(response)
    assert response.status_code == 200
    field = re.search(r'<div class="field has-error"><label class="check" for="cb-confirm">.*?</div>', page, re.S)
    assert field and "Tick the confirmation naming what is still outstanding" in field.group(0)
    assert _casebook_signatures(app, sid) == 0
    with app.app_context():
        assert (
            db.session.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "sign_refused"))
            == 0
        )

    # a confirmation of another state of the casebook (the page was opened earlier): refused
    stale = confirmation.replace("3 unresolved queries (#1, #2, #3)", "2 unresolved queries (#1, #2)")
    page = text(inv.post(sign, data={"target": "casebook", "password": PW, "confirm_outstanding": stale}))
    assert "What is outstanding changed since the page was opened" in page
    assert _casebook_signatures(app, sid) == 0

    # ticked, wrong password: refused at the password, the tick kept
    page = text(inv.post(sign, data={"target": "casebook", "password": "wrong", "confirm_outstanding": confirmation}))
    assert re.search(r'<div class="field has-error"><label for="cb-pw">.*?Password not accepted', page, re.S)
    assert re.search(r'name="confirm_outstanding" type="checkbox" value="[^"]*" checked', page)
    assert _casebook_signatures(app, sid) == 0

    # ticked with the password: signed; the audit record of the signature carries the text
    response = inv.post(sign, data={"target": "casebook", "password": PW, "confirm_outstanding": confirmation})
    assert response.status_code == 302
    with app.app_context():
        record = db.session.execute(
            select(AuditRecord).where(
                AuditRecord.action == "sign", AuditRecord.form == "casebook", AuditRecord.form_id == sid
            )
        ).scalar_one()
        assert record.reason == confirmation and record.new_value.endswith("I approve this casebook")
        from cellstudy.records import audit

        assert audit.verify().ok
    page = text(inv.get(f"/subjects/{sid}/monitoring"))
    assert re.search(r"signed</span> Dr Wang Lei, " + SITE_TIME.pattern, page)


def test_a_draft_somebody_started_is_outstanding(app, login):
    """HZ-S005's screening is a saved draft: the casebook names it."""
    with app.app_context():
        sid = subject_by_number("HZ-S005").id
    confirmation = _confirmation(text(login("inv-hz").get(f"/subjects/{sid}/monitoring")))
    with app.app_context():
        title = registry.record_title("screening", subject_by_number("HZ-S005").current_screening)
    assert f"1 draft form ({title})" in confirmation


def test_a_casebook_with_nothing_outstanding_is_signed_with_the_password_alone(app, login):
    with app.app_context():
        sid = subject_by_number("HZ-S002").id
    inv = login("inv-hz")
    page = text(inv.get(f"/subjects/{sid}/monitoring"))
    assert 'id="cb-confirm"' not in page and "Nothing outstanding" in page
    assert inv.post(f"/subjects/{sid}/sign", data={"target": "casebook", "password": PW}).status_code == 302
    assert _casebook_signatures(app, sid) == 1
    with app.app_context():
        record = db.session.execute(
            select(AuditRecord).where(
                AuditRecord.action == "sign", AuditRecord.form == "casebook", AuditRecord.form_id == sid
            )
        ).scalar_one()
        assert record.reason is None


def test_only_an_investigator_signs_a_casebook_and_bad_input_is_no_500(app, login, hz):
    sign = f"/subjects/{hz['id']}/sign"
    for username in ("coord-hz", "monitor-hz", "dm"):
        assert login(username).post(sign, data={"target": "casebook", "password": PW}).status_code == 403
    inv = login("inv-hz")
    response = inv.post(sign, data={"target": "casebook", "password": PW, "confirm_outstanding": "x" * 30000})
    assert response.status_code == 302 and _casebook_signatures(app, hz["id"]) == 0
    with app.app_context():
        other = subject_by_number("NB-001").id
    assert inv.post(f"/subjects/{other}/sign", data={"target": "casebook", "password": PW}).status_code == 404


def test_the_casebook_form_carries_the_csrf_token(app, hz, db_url):
    from cellstudy import create_app

    strict = create_app("test", {"SQLALCHEMY_DATABASE_URI": db_url, "WTF_CSRF_ENABLED": True})
    client = strict.test_client()
    login_page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login_page) or re.search(
        r'name="csrf_token" value="([^"]+)"', login_page
    )
    client.post("/login", data={"username": "inv-hz", "password": PW, "csrf_token": token.group(1)})
    page = client.get(f"/subjects/{hz['id']}/monitoring").get_data(as_text=True)
    form = page[page.index('id="casebook-signature"') :]
    assert 'name="csrf_token"' in form[: form.index("</form>")]
    response = client.post(f"/subjects/{hz['id']}/sign", data={"target": "casebook", "password": PW})
    assert response.status_code == 400  # no token: refused
    with strict.app_context():
        db.session.remove()
        db.engine.dispose()


# --- 4. site time everywhere ----------------------------------------------------------------------


def test_queries_signatures_and_jobs_show_site_time_with_utc_on_hover(app, login, hz):
    from cellstudy.auth.models import Site, User
    from cellstudy.jobs.models import Job
    from cellstudy.pdf.tasks import SITE_CASEBOOKS

    inv = login("inv-hz")
    nausea = hz["aes"]["Nausea"]
    assert (
        inv.post(f"/subjects/{hz['id']}/sign", data={"target": f"adverse_event:{nausea}", "password": PW}).status_code
        == 302
    )
    with app.app_context():
        user = db.session.execute(select(User).where(User.username == "inv-hz")).scalar_one()
        site = db.session.execute(select(Site).where(Site.code == "HZ")).scalar_one()
        job = Job(
            kind=SITE_CASEBOOKS, params={}, status="failed", error="stopped", site_id=site.id, created_by_id=user.id
        )
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    pages = {
        "query list": "/queries",
        "query threads": f"/subjects/{hz['id']}/monitoring",
        "signature block": f"/subjects/{hz['id']}/adverse-events/{nausea}",
        "jobs": "/jobs",
        "job": f"/jobs/{job_id}",
        "site casebooks": "/casebooks",
    }
    for what, url in pages.items():
        page = text(inv.get(url))
        assert SITE_TIME.search(page), what
        assert not re.search(r'\d\d:\d\d UTC(?![+\-"])', page), what  # no bare UTC time left
    thread = text(inv.get(f"/subjects/{hz['id']}/monitoring"))
    thread = thread[thread.index('id="queries"') :]
    assert len(SITE_TIME.findall(thread)) >= 6  # each query's opening and every message of its thread


# --- 5. labels, not codes -------------------------------------------------------------------------


def test_grade_drivers_are_labels():
    from cellstudy.adverse_events.fields import CRS_FIELDS, ICANS_FIELDS, component_label

    labels = {spec.name: spec.label for spec in (*CRS_FIELDS, *ICANS_FIELDS)}
    assert component_label("ice_score") == "ICE score"
    assert component_label("hypotension, hypoxia") == f"{labels['hypotension']}, {labels['hypoxia']}"
    assert component_label("cerebral_edema") == labels["cerebral_edema"]
    assert component_label(None) == "" and component_label("unknown_thing") == "unknown_thing"


def test_the_crs_assessment_and_the_ae_show_the_driver_as_a_label(app, login, hz):
    coord = login("coord-hz")
    with app.app_context():
        from cellstudy.adverse_events.models import CrsAssessment

        record = db.session.scalars(
            select(CrsAssessment)
            .where(CrsAssessment.subject_id == hz["id"], CrsAssessment.driver.is_not(None))
            .order_by(CrsAssessment.id)
        ).first()
        crs, driver, ae_id = record.id, record.driver, record.adverse_event_id
    from cellstudy.adverse_events.fields import component_label

    assert driver in ("fever", "hypotension", "hypoxia") or "," in driver  # stored as a code

    page = text(coord.get(f"/subjects/{hz['id']}/crs/{crs}"))
    assert f"driven by <strong>{component_label(driver)}</strong>" in page
    assert "Components: Fever" in page
    for url in (f"/subjects/{hz['id']}/adverse-events/{ae_id}", f"/subjects/{hz['id']}/adverse-events"):
        assert f"<td>{component_label(driver)}</td>" in text(coord.get(url)), url


def test_failed_screening_criteria_are_shown_as_the_protocol_words_them(app, login):
    from cellstudy.enrollment.eligibility import criteria
    from cellstudy.settings import current_study

    with app.app_context():
        sid = subject_by_number("HZ-S003").id
        wording = dict(criteria(current_study()))["transaminases"]
    page = text(login("coord-hz").get(f"/subjects/{sid}"))
    decision = re.search(r'<div class="decision">\s*<strong>Screen failure</strong>.*?</div>', page, re.S).group(0)
    assert f'Failed criteria: <span class="failed">{wording[0].upper()}{wording[1:]}</span>' in decision
    assert "transaminases" not in decision


def test_the_casebook_appendix_shows_coded_values_as_labels(app, login, hz):
    from pypdf import PdfReader

    response = login("monitor-hz").get(f"/subjects/{hz['id']}/casebook.pdf")
    assert response.status_code == 200
    reader = PdfReader(io.BytesIO(response.data))
    pages = [p.extract_text() or "" for p in reader.pages]
    start = next(i for i, t in enumerate(pages) if "Appendix: audit trail" in t and "Every create" in t)
    appendix = re.sub(r"\s+", " ", " ".join(pages[start:]))
    assert "Systemic antitumor therapy" in appendix and "Female" in appendix
    assert "systemic_antitumor" not in appendix
    assert not re.search(r"Sex: (\(empty\)|F|M) → (F|M)\b", appendix)
    assert "Sex: (empty) → Female" in appendix
