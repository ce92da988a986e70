"""The audit trail viewer (issue 6; PROTOCOL 7): per field, form, subject, site and study.

Pages (view_audit; records of the user's sites only, data managers all):
  /audit                        the study-wide trail with filters (site, subject, form type,
                                form id, field, user, action, date range), newest first,
                                keyset-paginated (?before=<id> / ?after=<id>)
  /subjects/<id>/audit          the same for one subject
Files (export_audit):
  /audit/export.csv             the filtered view as CSV, streamed (more than STREAM_MAX_ROWS
                                records: a background job, as below)
  /audit/study-export (POST)    the whole trail of the user's sites as a background job
                                (cellstudy.jobs) with a progress page

Every export writes an audit record ("export", form "audit_trail", field = the format,
new = {"filters", "rows", "sites"}), committed before the file is sent.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy import or_, select

from ..auth.policy import ALL_SITES, allowed_sites, can, get_subject_or_404, require, scoped, user_sites
from ..extensions import db
from ..records import audit
from ..records import service as records
from ..timeutil import utcnow
from . import export_job, labels, service  # export_job registers its task with cellstudy.jobs at import
from ..enrollment.models import Subject
from ..exports import tabular

bp = Blueprint("audit_viewer", __name__)

#: a filtered CSV longer than this is written by a background job instead of a web worker
STREAM_MAX_ROWS = 100_000


def _sites() -> list[str]:
    return [s.code for s in allowed_sites()]


def _resolve_subject(number: str, errors: dict):
    """A subject named by its number (subject or screening number) at the user's sites."""
    number = number.strip().upper()
    if len(number) > 20:
        errors["subject"] = "Subject: at most 20 characters."
        return None
    stmt = select(Subject).where(or_(Subject.subject_number == number, Subject.screening_number == number))
    stmt = scoped(stmt, Subject.site_id, user_sites())
    subject = db.session.execute(stmt).scalar_one_or_none()
    if subject is None:
        errors["subject"] = f"Subject: no subject {number} at your sites."
    return subject


def _filters(subject=None):
    subject_arg = None
    errors: dict[str, str] = {}
    if subject is None and (request.args.get("subject") or "").strip():
        subject = _resolve_subject(request.args["subject"], errors)
        subject_arg = subject.label if subject else None
    filters, more = service.parse_filters(request.args, sites=_sites(), subject_id=subject.id if subject else None)
    errors.update(more)
    return filters, errors, subject, subject_arg


def _cursor(name: str, errors: dict) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[name] = f"Page position {name!r}: a record number, not {raw!r}. Showing the newest records."
        return None
    return value if 0 <= value < 2**62 else None


def render_trail(subject=None):
    """The viewer page; with `subject`, that subject's trail (URL /subjects/<id>/audit)."""
    filters, errors, subject_filter, subject_arg = _filters(subject)
    scope = user_sites()
    before, after = _cursor("before", errors), _cursor("after", errors)
    if errors:
        # a filter that does not parse is never silently dropped (the page would show more
        # than was asked for): nothing is listed until it is corrected
        page = service.Page([], filters, zone=service.range_zone(filters, scope, service._site_map()))
    else:
        page = service.page(filters, scope, before=before, after=after)
    args = filters.args()
    if subject_arg:
        args["subject"] = subject_arg
    endpoint = "audit_viewer.subject_audit" if subject is not None else "audit_viewer.trail"
    base = {"subject_id": subject.id} if subject is not None else {}
    export_args = dict(args)
    if subject is not None:
        export_args["subject"] = subject.label

    path = url_for(endpoint, **base)

    def link(drop=(), reset=False, **changes):
        """This view's URL with some arguments changed (reset: only the subject kept).
        Built by hand from the view's path: a page has ~100 of these links."""
        values = {**({} if reset else args), **changes}
        query = urlencode([(k, v) for k, v in values.items() if k not in drop and v not in (None, "")])
        return path + ("?" + query if query else "")

    return render_template(
        "audit_viewer/trail.html",
        link=link,
        page=page,
        filters=filters,
        errors=errors,
        subject=subject,
        subject_filter=subject_filter,
        args=args,
        base=base,
        endpoint=endpoint,
        export_args=export_args,
        sites=_sites(),
        forms=labels.form_choices(),
        actions=labels.action_choices(),
        users=service.users_in_scope(scope),
        can_export=can("export_audit"),
        title=f"Audit trail · {subject.label}" if subject is not None else "Audit trail",
    )


@bp.route("/audit", endpoint="trail")
@require("view_audit")
def audit_trail():
    return render_trail()


@bp.route("/subjects/<int:subject_id>/audit", endpoint="subject_audit")
@require("view_audit")
def subject_audit(subject_id):
    """One subject's trail (PROTOCOL 7: who changed what, when, why)."""
    return render_trail(get_subject_or_404(subject_id))


@records.transaction()
def _audit_export(fmt: str, filters: service.Filters, rows: int | None, note: str | None = None) -> None:
    ids = user_sites()
    site_id = None
    if filters.site:
        site_id = next((s.id for s in allowed_sites() if s.code == filters.site), None)
    value = {"filters": filters.active(), "rows": rows, "sites": "all" if ids is ALL_SITES else sorted(_sites())}
    if note:
        value["note"] = note
    audit.append(
        "export",
        user=current_user,
        form="audit_trail",
        field=fmt,
        site_id=site_id,
        subject_id=filters.subject_id,
        new=value,
    )


@bp.route("/audit/export.csv", endpoint="export_csv")
@require("export_audit")
def audit_export_csv():
    """The filtered view as CSV (every matching record, newest first), streamed. Issue 13:
    the file starts with the UTF-8 byte-order mark unless ``bom=0``."""
    filters, errors, _subject, _ = _filters()
    try:
        bom = tabular.bom_argument(request.args.get("bom"))
    except ValueError as error:
        errors["bom"], bom = str(error), True
    if errors:
        for message in errors.values():
            flash(message, "error")
        flash("Nothing was exported: correct the filters first.", "error")
        return redirect(url_for("audit_viewer.trail", **request.args.to_dict()))
    scope = user_sites()
    total = service.count(filters, scope)
    if total > STREAM_MAX_ROWS:
        # a web worker would be busy for minutes: the same file from the job pool
        with records.transaction():  # the audit record and the job are one write
            _audit_export("csv", filters, total, note="too long to stream: written by a background job")
            job = export_job.start(current_user, scope, _sites(), filters, bom=bom)
        flash(f"{total:,} records: the file is prepared in the background; this page shows its progress.", "info")
        return redirect(export_job.progress_url(job))
    _audit_export("csv", filters, total)
    now = utcnow()
    name = f"audit_trail_{now.strftime('%Y%m%dT%H%MZ')}.csv"
    stream = stream_with_context(
        chunk.encode("utf-8")
        for chunk in tabular.csv_stream(service.export_columns(), service.iter_rows(filters, scope), bom=bom)
    )
    return Response(stream, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.route("/audit/study-export", methods=["POST"], endpoint="study_export")
@require("export_audit")
def audit_study_export():
    """The whole trail of the user's sites as CSV, written by a background job (the pages
    others use are not slowed: it runs in the job pool, reading in keyset batches)."""
    scope = user_sites()
    filters = service.Filters()
    # the export's audit record is committed with the job (one transaction): a job that
    # starts at once must not race the request for the write lock
    with records.transaction():
        _audit_export("csv", filters, None, note="study-wide export, written by a background job")
        job = export_job.start(current_user, scope, _sites())
    flash("The study-wide audit export is running; this page shows its progress.", "info")
    return redirect(export_job.progress_url(job))


@bp.app_template_filter("audit_form")
def audit_form(form):
    return labels.form_label(form)


@bp.app_template_filter("audit_field")
def audit_field(pair):
    form, field = pair
    return labels.field_label(form, field)


@bp.app_context_processor
def _query_url():
    def query_url(query):
        """The query's thread on the subject's monitoring page (cellstudy.monitoring); without
        that page, the audit trail of the field the query is on."""
        if query.subject_id is None:
            return "#"
        if "monitoring.subject" in current_app.view_functions:
            return url_for("monitoring.subject", subject_id=query.subject_id) + f"#query-{query.id}"
        return url_for(
            "audit_viewer.subject_audit",
            subject_id=query.subject_id,
            form=query.form,
            form_id=query.form_id or "",
            field=query.field or "",
        )

    return {"query_url": query_url}
