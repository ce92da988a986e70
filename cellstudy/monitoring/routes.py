"""Monitoring pages and actions (issue 6). Thin: the rules are in rules.py, the writes in
service.py, the authorisation in auth/policy.py. Actions name their target in the
POSTed form ("form:id"), checked to belong to the subject of the URL (else 404)."""

from __future__ import annotations

from collections import Counter, defaultdict

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup, escape
from sqlalchemy import func, select

from ..auth.policy import can, covers, get_subject_or_404, require, sites_of, user_sites
from ..enrollment.models import Subject
from ..extensions import db
from ..pagination import page_count
from ..records.models import Query
from ..records.service import RecordError
from ..records.views import lock_notice, post_action
from ..timeutil import as_utc, utcnow
from ..urls import local_path, page_number, parse_id
from . import catalog, rules, service, state
from .forms import AnswerForm, LockForm, RaiseQueryForm, ResolveForm, SignForm, StudyLockForm, UnlockForm, VerifyForm
from .models import DataLock
from ..infusions.models import Visit

bp = Blueprint("monitoring", __name__)
PER_PAGE = 50


# --- helpers -------------------------------------------------------------------------------------

subject_forms = state.subject_forms  # every saved form of a subject, in casebook order


def _target(subject, raw: str | None):
    """'form:id' of a POST -> (form name, record); 404 for a record of another subject, and
    for an id no database holds (urls.parse_id: 2^63 is an OverflowError on SQLite)."""
    form, _, rid = (raw or "").partition(":")
    ft = catalog.get(form)
    record_id = parse_id(rid)
    if ft is None or record_id is None:
        abort(404)
    record = db.session.get(ft.model, record_id)
    if record is None or record.subject_id != subject.id:
        abort(404)
    return form, record


def _next() -> str | None:
    """The page a POST returns to (the form's `next`), when it is a path on this site
    (urls.local_path: the one check of a redirect target)."""
    return local_path(request.form.get("next"))


def _back_url(subject) -> str:
    return _next() or url_for("monitoring.subject", subject_id=subject.id)


def _back(subject):
    return redirect(_back_url(subject))


REFUSED = "Nothing was saved: "


def _form_errors(form) -> str:
    """The validation messages (each names its field: "Query: write the question.")."""
    return " ".join(
        msg if ":" in msg else f"{form[name].label.text}: {msg}"
        for name, messages in form.errors.items()
        if name in form
        for msg in messages
    )


def _query_or_404(subject, raw) -> Query:
    query_id = parse_id(raw)
    query = db.session.get(Query, query_id) if query_id is not None else None
    if query is None or query.subject_id != subject.id:
        abort(404)
    return query


# --- the panel on every CRF page and the field badges -----------------------------------------------


def field_badges(record) -> Markup:
    """Called once at the top of a CRF template: remembers the record's unresolved queries
    and SDV marks per field, for records/render.py's field markup (the badges). Returns a
    notice when the form is locked, saying who locked it and when (else nothing)."""
    form = getattr(record, "FORM_NAME", None)
    if "crf_lock" in g:  # the page's lock, found once by records/views.py (new records too)
        notice = lock_notice(g.crf_lock, g.crf_site) if g.crf_lock is not None else Markup("")
    else:
        subject = getattr(record, "subject", None)
        lock = (
            state.lock_in_force(
                form if catalog.get(form) else None, getattr(record, "id", None), getattr(record, "subject_id", None)
            )
            if record is not None
            else None
        )
        notice = lock_notice(lock, getattr(subject, "site", None)) if lock is not None else Markup("")
    if not catalog.get(form) or getattr(record, "id", None) is None:
        g.monitoring_badges = {}
        return notice
    if g.get("crf_record") is record:  # the page's record, whose lock in force is known
        st = state.page_state(record, g.crf_lock)
    else:
        st = state.record_state(form, record.id)
    # the panel at the foot of the same page shows this state: read once per page (issue 14)
    g.monitoring_state = ((form, record.id), st)
    badges: dict[str, list[str]] = defaultdict(list)
    for query in st["open_queries"]:
        if query.field:
            badges[query.field].append(
                f'<a class="badge q-{query.state}" href="#query-{query.id}" title="{escape(query.text)}">'
                f"query #{query.id} {query.state}</a>"
            )
    for field in st["verified_fields"]:
        badges[field].append('<span class="badge sdv-ok" title="source data verified">SDV ✓</span>')
    g.monitoring_badges = {}
    for k, v in badges.items():
        html = " ".join(v)
        g.monitoring_badges[k] = Markup(html)  # the query text is escape()d above  # nosec B704
    return notice


def _page_state(form: str, form_id: int) -> dict:
    """The record's monitoring state, as field_badges read it at the top of this page (the
    same render: nothing was written in between), else read now."""
    kept = g.get("monitoring_state")
    if kept is not None and kept[0] == (form, form_id):
        return kept[1]
    return state.record_state(form, form_id)


def _form_lock(record, form: str):
    """The form's own lock (the panel's unlock action). The page's lock in force
    (records/views.py, g.crf_lock for this record) answers it when it is none or the form's;
    a study or subject lock may hide a form lock, which is then read."""
    if g.get("crf_record") is record:
        lock = g.crf_lock
        if lock is None:
            return None
        if lock.scope == "form":
            return lock
    return state.form_lock(form, record.id)


def monitoring_panel(record, subject=None) -> Markup:
    """The monitoring panel of a CRF page: state, queries with their thread and the
    actions the user's role may take (raise, answer, close, verify, sign, lock)."""
    form = getattr(record, "FORM_NAME", None)
    ft = catalog.get(form)
    if ft is None:
        return Markup("")
    subject = subject or getattr(record, "subject", None) or db.session.get(Subject, record.subject_id)
    saved = getattr(record, "id", None) is not None
    st = _page_state(form, record.id) if saved else None
    if st is not None and "queries" in st:  # page_state read them all, resolved ones too
        queries = st["queries"]
    elif saved:
        queries = (
            db.session.execute(
                select(Query).where(Query.form == form, Query.form_id == record.id).order_by(Query.created_at, Query.id)
            )
            .scalars()
            .all()
        )
    else:
        queries = (
            db.session.execute(
                select(Query).where(
                    Query.form == form,
                    Query.form_id.is_(None),
                    Query.subject_id == subject.id,
                    Query.state.in_(rules.UNRESOLVED),
                )
            )
            .scalars()
            .all()
        )
    raise_form = RaiseQueryForm()
    raise_form.target.data = f"{form}:{record.id}" if saved else f"{form}:new"
    plan, required = state.sdv_plan(form)
    return Markup(  # an autoescaped template  # nosec B704
        render_template(
            "monitoring/_panel.html",
            record=record,
            form_name=form,
            ft=ft,
            subject=subject,
            st=st,
            saved=saved,
            queries=queries,
            raise_form=raise_form,
            answer_form=AnswerForm(),
            resolve_form=ResolveForm(),
            verify_form=VerifyForm(),
            sign_form=SignForm(),
            lock_form=LockForm(),
            unlock_form=UnlockForm(),
            plan=plan,
            required=required,
            lock=_form_lock(record, form) if saved else None,
            next_url=request.full_path.rstrip("?"),
            now=utcnow(),
            rules=rules,
        )
    )


@bp.app_template_global()
def query_age(query) -> int:
    return rules.days_open(as_utc(query.created_at), utcnow(), as_utc(query.closed_at) if query.closed_at else None)


@bp.app_template_global()
def query_actions(query) -> tuple[str, ...]:
    return rules.allowed_actions(query.state)


# --- the subject's monitoring page -----------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/monitoring", endpoint="subject")  # the audit viewer links here
@require("view_clinical")
def subject_page(subject_id):
    return _subject_page(get_subject_or_404(subject_id))


def _subject_page(subj, casebook_errors: dict | None = None, confirmed: str | None = None):
    """The subject's monitoring page; after a refused casebook signature, with the message
    at its field and the confirmation kept as ticked."""
    forms = subject_forms(subj)
    states = state.record_states((name, r.id) for name, r in forms)
    rows = [
        {
            "form": name,
            "record": r,
            "title": catalog.record_title(name, r),
            "url": catalog.url_of(name, r.id, subj.id),
            "state": states[(name, r.id)],
        }
        for name, r in forms
    ]
    all_queries = state.subject_queries(subj.id, unresolved_only=False)
    raise_form = RaiseQueryForm()
    raise_form.target.choices = [(f"{name}:{r.id}", catalog.record_title(name, r)) for name, r in forms] + [
        (f"{name}:new", f"{ft.label} (not yet recorded: missing data)") for name, ft in catalog.form_types().items()
    ]
    valid, invalid = service.casebook_signature(subj.id)
    return render_template(
        "monitoring/subject.html",
        subject=subj,
        rows=rows,
        queries=all_queries,
        raise_form=raise_form,
        answer_form=AnswerForm(),
        resolve_form=ResolveForm(),
        verify_form=VerifyForm(),
        sign_form=SignForm(),
        lock_form=LockForm(),
        unlock_form=UnlockForm(),
        casebook=valid,
        casebook_invalid=invalid,
        subject_lock=state.subject_lock(subj.id),
        study_lock=state.study_lock(),
        labels=catalog,
        now=utcnow(),
        rules=rules,
        outstanding=None
        if valid
        else service.casebook_outstanding(subj, forms, states, [q for q in all_queries if q.state in rules.UNRESOLVED]),
        casebook_errors=casebook_errors or {},
        confirmed=confirmed,
    )


# --- queries -------------------------------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/queries", methods=["POST"])
@require("raise_query")
def raise_query(subject_id):
    subj = get_subject_or_404(subject_id)
    form = RaiseQueryForm()

    def do():
        name, _, rid = (form.target.data or "").partition(":")
        form_id = None
        if rid != "new":
            name, record = _target(subj, form.target.data)
            form_id = record.id
        return service.open_query(
            subj,
            user=current_user,
            form=name,
            form_id=form_id,
            field=(form.field.data or "").strip() or None,
            text=form.text.data,
            assignee_role=form.assignee_role.data,
        )

    return post_action(
        form,
        do,
        done=lambda query: f"Query #{query.id} opened.",
        refused=REFUSED,
        invalid=lambda form: REFUSED + (_form_errors(form) or "fill in the query."),
        back=_back_url(subj),
    )


@bp.route("/subjects/<int:subject_id>/queries/answer", methods=["POST"])
@require("answer_query")
def answer_query(subject_id):
    subj = get_subject_or_404(subject_id)
    form = AnswerForm()

    def do():
        query = _query_or_404(subj, form.query_id.data)
        service.act(query, "answer", user=current_user, text=form.text.data)
        return query

    return post_action(
        form,
        do,
        done=lambda query: f"Query #{query.id} answered.",
        refused=REFUSED,
        invalid=lambda form: REFUSED + (_form_errors(form) or "write an answer."),
        back=_back_url(subj),
    )


@bp.route("/subjects/<int:subject_id>/queries/resolve", methods=["POST"])
@require("raise_query")
def resolve_query(subject_id):
    subj = get_subject_or_404(subject_id)
    form = ResolveForm()

    def do():
        query = _query_or_404(subj, form.query_id.data)
        service.act(query, form.action.data, user=current_user, text=form.text.data)
        return query

    return post_action(
        form,
        do,
        done=lambda query: f"Query #{query.id} {query.state}.",
        refused=REFUSED,
        invalid=lambda form: REFUSED + (_form_errors(form) or "choose an action."),
        back=_back_url(subj),
    )


@bp.route("/queries")
@require("view_clinical")
def query_list():
    sites = user_sites()
    site_id = request.args.get("site", type=int)
    state_filter = request.args.get("state") or "unresolved"
    if state_filter not in ("unresolved", "all", *rules.QUERY_STATES):
        state_filter = "unresolved"
    assignee = request.args.get("assignee") or None
    if assignee not in (None, "coordinator", "investigator"):
        assignee = None
    form = request.args.get("form") or None
    if form and not catalog.get(form):
        form = None
    order = request.args.get("order") or "age"
    stmt = service.queries(
        sites=sites,
        state_filter=None if state_filter == "all" else state_filter,
        assignee_role=assignee,
        form=form,
        site_id=site_id,
        order="age" if order == "age" else "new",
    )
    page = db.paginate(stmt, page=page_number(request.args.get("page")), per_page=PER_PAGE, error_out=False)
    subjects = (
        {
            s.id: s
            for s in db.session.execute(
                select(Subject).where(Subject.id.in_({q.subject_id for q in page.items}))
            ).scalars()
        }
        if page.items
        else {}
    )
    counts = Counter(
        dict(
            db.session.execute(
                service.queries(sites=sites, state_filter=None, site_id=site_id)
                .with_only_columns(Query.state, func.count())
                .group_by(Query.state)
                .order_by(None)
            ).all()
        )
    )
    return render_template(
        "monitoring/queries.html",
        page=page,
        subjects=subjects,
        counts=counts,
        sites=_sites(),
        site_id=site_id,
        state_filter=state_filter,
        assignee=assignee,
        form=form,
        order=order,
        catalog=catalog,
        now=utcnow(),
        rules=rules,
    )


def _sites():
    return sites_of(user_sites())


@bp.app_template_global("waiting_queries")
def waiting_for_me(limit: int = 20) -> list[Query]:
    """For the start page: queries waiting for the site staff user (with `subject_ref`)."""
    if not can("answer_query"):
        return []
    rows = db.session.execute(service.waiting_for(current_user, user_sites()).limit(limit)).scalars().all()
    subjects = (
        {
            s.id: s
            for s in db.session.execute(select(Subject).where(Subject.id.in_({q.subject_id for q in rows}))).scalars()
        }
        if rows
        else {}
    )
    for query in rows:
        query.subject_ref = subjects.get(query.subject_id)
    return rows


@bp.app_template_global()
def form_url(form, form_id, subject_id) -> str:
    return catalog.url_of(form, form_id, subject_id)


@bp.app_template_global()
def form_label(form) -> str:
    return catalog.label(form)


@bp.app_template_global()
def field_label(form, field) -> str:
    ft = catalog.get(form)
    return ft.label_of(field) if ft else (field or "")


# --- SDV -----------------------------------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/verify", methods=["POST"])
@require("verify")
def verify_forms(subject_id):
    subj = get_subject_or_404(subject_id)
    form = VerifyForm()

    def do() -> str:
        if form.visit_id.data:
            visit_id = parse_id(form.visit_id.data)
            visit = db.session.get(Visit, visit_id) if visit_id is not None else None
            if visit is None or visit.subject_id != subj.id:
                abort(404)
            count = service.verify_visit(subj, visit, user=current_user)
            return f"Visit {visit.label}: {count} field(s) verified."
        if form.target.data:
            name, record = _target(subj, form.target.data)
            fields = [f for f in (form.fields.data or []) if f] or None
            done = service.verify(record, user=current_user, fields=fields)
            return f"{catalog.record_title(name, record)}: {len(done)} field(s) verified."
        raise RecordError("choose a form or a visit to verify.")

    return post_action(
        form,
        do,
        done=lambda message: message,
        refused=REFUSED,
        invalid=REFUSED + "the form had expired.",
        back=_back_url(subj),
    )


@bp.route("/sdv")
@require("view_clinical")
def sdv_progress():
    """SDV progress per site and form type (percent of completed forms verified) and the
    list of what is left to verify, filterable by site and form type."""
    sites = _sites()
    site_id = request.args.get("site", type=int)
    if site_id is not None and site_id not in {s.id for s in sites}:
        site_id = None
    chosen = [f for f in request.args.getlist("form") if catalog.get(f)]
    site_list = [s.id for s in sites] if site_id is None else [site_id]
    # counted, grouped and paged in the database: the page's work follows what it shows
    forms = state.sdv_forms(site_list)  # the statement built once, run four times
    progress = state.sdv_progress(site_list, forms)
    subjects_total, subjects_page, by_subject = state.sdv_by_subject(
        site_list, page=page_number(request.args.get("subjects_page")), per_page=PER_PAGE, u=forms
    )
    left_total, left_page, shown = state.sdv_left(
        site_list,
        chosen or None,
        page=page_number(request.args.get("page")),
        per_page=PER_PAGE,
        u=forms,
        progress=progress,
    )
    keys = [key for key, _ in shown]
    records = state.records_of(keys)
    states = state.record_states(keys, known=records)  # their status and subject: the rows just read
    return render_template(
        "monitoring/sdv.html",
        sites=sites,
        site_id=site_id,
        chosen=chosen,
        progress=progress,
        by_subject=by_subject,
        subjects_total=subjects_total,
        subjects_page=subjects_page,
        left=[(key, states[key], subj) for key, subj in shown],
        left_total=left_total,
        left_page=left_page,
        per_page=PER_PAGE,
        records=records,
        catalog=catalog,
        plans={n: state.sdv_plan(n) for n in catalog.form_types()},
    )


# --- signatures ------------------------------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/sign", methods=["POST"])
@require("sign_forms")
def sign_forms(subject_id):
    subj = get_subject_or_404(subject_id)
    form = SignForm()
    if form.target.data == "casebook" and form.validate_on_submit():
        return _sign_casebook(subj, form)  # refused at its fields, on the page: not an action's flash

    def do() -> str:
        if not form.target.data:
            raise RecordError("choose what to sign.")
        name, record = _target(subj, form.target.data)
        service.sign_form(record, user=current_user, password=form.password.data or "")
        return f"{catalog.record_title(name, record)} signed."

    return post_action(
        form,
        do,
        done=lambda message: message,
        refused=REFUSED,
        invalid=REFUSED + "the form had expired.",
        back=_back_url(subj),
    )


def _sign_casebook(subj, form):
    """A refused casebook signature shows the page again with the message at its field
    (the confirmation, the password) and the confirmation kept; nothing is signed."""
    confirmed = form.confirm_outstanding.data or None
    try:
        service.sign_casebook(subj, user=current_user, password=form.password.data or "", confirmation=confirmed)
    except RecordError as error:
        db.session.rollback()
        field = error.field if error.field in ("confirm_outstanding", "password") else "password"
        flash("The casebook was not signed: see the message at the field.", "error")
        return _subject_page(subj, casebook_errors={field: str(error)}, confirmed=confirmed)
    flash("Casebook signed.", "success")
    return _back(subj)


@bp.route("/signatures")
@require("view_clinical")
def signature_list():
    """Forms needing the investigator's signature (a change invalidated it, or the form
    type must be signed once complete), and casebooks whose signature was invalidated."""
    sites = [s.id for s in _sites()]
    total, page, needed = state.signatures_needed(sites, page=page_number(request.args.get("page")), per_page=PER_PAGE)
    return render_template(
        "monitoring/signatures.html",
        needed=needed,
        total=total,
        page=page,
        pages=page_count(total, PER_PAGE),
        records=state.records_of(key for key, _, _ in needed),
        invalid_casebooks=state.invalidated_casebooks(sites),
        catalog=catalog,
    )


# --- locks -----------------------------------------------------------------------------------------


@bp.route("/subjects/<int:subject_id>/lock", methods=["POST"])
@require("lock")
def lock_data(subject_id):
    subj = get_subject_or_404(subject_id)
    form = LockForm()

    def do() -> str:
        if form.target.data == "subject":
            service.lock("subject", user=current_user, reason=form.reason.data, subject=subj)
            return f"Subject {subj.label} locked."
        if form.target.data:
            name, record = _target(subj, form.target.data)
            service.lock("form", user=current_user, reason=form.reason.data, record=record)
            return f"{catalog.record_title(name, record)} locked."
        raise RecordError("choose what to lock.")

    return post_action(
        form,
        do,
        done=lambda message: message,
        refused=REFUSED,
        invalid=lambda form: REFUSED + (_form_errors(form) or "the form had expired."),
        back=_back_url(subj),
    )


@bp.route("/locks/study", methods=["POST"])
@require("lock")
def lock_study():
    form = StudyLockForm()
    return post_action(
        form,
        lambda: service.lock("study", user=current_user, reason=form.reason.data),
        done="The whole study is locked: no clinical data can change until it is unlocked.",
        refused=REFUSED,
        invalid=lambda form: REFUSED + (_form_errors(form) or "the form had expired."),
        back=url_for("monitoring.lock_list"),
    )


@bp.route("/locks/unlock", methods=["POST"])
@require("lock")
def unlock_data():
    form = UnlockForm()
    chosen = []  # a lock was found: the action returns to the page it came from

    def do():
        lock_id = parse_id(form.lock_id.data)
        if lock_id is None:
            raise RecordError("choose the lock to lift.")
        row = db.session.get(DataLock, lock_id)
        if row is None or (row.scope != "study" and not covers(user_sites(), row.site_id)):
            abort(404)
        chosen.append(row)
        service.unlock(row, user=current_user, reason=form.reason.data)

    return post_action(
        form,
        do,
        done="Unlocked.",
        refused=REFUSED,
        invalid=REFUSED + "the form had expired.",
        back=lambda: (chosen and _next()) or url_for("monitoring.lock_list"),
    )


@bp.route("/locks")
@require("lock")
def lock_list():
    rows = service.active_locks(user_sites())
    history = (
        db.session.execute(
            select(DataLock).where(DataLock.unlocked_at.is_not(None)).order_by(DataLock.id.desc()).limit(50)
        )
        .scalars()
        .all()
    )
    subjects = {
        s.id: s
        for s in db.session.execute(
            select(Subject).where(Subject.id.in_({r.subject_id for r in [*rows, *history] if r.subject_id}))
        ).scalars()
    }
    return render_template(
        "monitoring/locks.html",
        rows=rows,
        subjects=subjects,
        history=history,
        study_lock=state.study_lock(),
        study_form=StudyLockForm(),
        unlock_form=UnlockForm(),
        catalog=catalog,
    )


# --- a refused write anywhere: the lock message, never a 500 ---------------------------------------


@bp.app_errorhandler(service.Locked)
def locked(error):
    db.session.rollback()
    if request.method == "GET":
        return render_template("errors/error.html", code=409, title="Locked", message=str(error)), 409
    flash(str(error), "error")
    return redirect(local_path(request.referrer, host=request.host) or url_for("main.index"))
