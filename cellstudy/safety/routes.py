"""Safety listings, summaries and their exports (issue 4; PROTOCOL 8).

Pages (view_clinical): /safety/ae, /safety/sae, /safety/dlt, /safety/summary,
/safety/crs-icans. Files (export_safety): /safety/<listing>.<csv|xlsx|pdf> and the
SDTM domains /safety/sdtm/<ae|dm|ds|ex>.<csv|xpt|json> and /safety/sdtm/define.xml (issue 15).
Rows come only from the user's sites (`user_sites()`).
The rows live in listings.py (filters in filters.py, SQL in queries.py),
the summaries in summaries.py, the SDTM source rows in sdtm_source.py, the file
formats in cellstudy/exports/.

Every export is audited ("export", form "safety_<listing>", field = the format, new =
{"filters", "rows", "sites"}) and committed *before* the file is sent: a download that
is interrupted is still on record. A CSV streams, so its row count is the count query's
(same filters, run just before the stream); the XLSX and PDF counts are the rows
written.
"""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from markupsafe import Markup, escape

from ..auth.policy import ALL_SITES, allowed_sites, can, require, user_sites
from ..exports import sdtm, sdtm_files, tabular
from ..records import audit
from ..records import service as records
from ..settings import current_study
from ..timeutil import fmt_utc, utcnow
from . import listings, queries, sdtm_source, summaries
from .filters import AE_SORTS, SAE_SORTS, Filters, parse_filters

bp = Blueprint("safety", __name__, url_prefix="/safety")

#: listing key -> (title, file name part, sort keys)
LISTINGS = {
    "ae": ("Adverse event listing", "ae_listing", AE_SORTS),
    "sae": ("Serious adverse event listing", "sae_listing", SAE_SORTS),
    "dlt": ("Dose-limiting toxicity listing", "dlt_listing", AE_SORTS),
    "summary": ("Subjects with adverse events by system organ class, term and worst grade", "ae_summary", {}),
    "crs-icans": ("CRS and ICANS summary", "crs_icans_summary", {}),
}
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
#: a PDF is laid out whole in memory: bigger listings go out as CSV or XLSX
PDF_MAX_ROWS = 2000
#: XLSX files up to this size stay in memory, bigger ones spill to a temporary file
XLSX_SPOOL_BYTES = 8 * 1024 * 1024


def _filters(listing: str):
    sites = [s.code for s in allowed_sites()]
    levels = [d.name for d in current_study().regimen.dose_levels]
    filters, errors = parse_filters(
        request.args, sites=sites, dose_levels=levels, sorts=LISTINGS[listing][2] or {"onset": "Onset"}
    )
    return filters, errors, sites, levels


def _page_context(listing: str, filters, errors, sites, levels) -> dict:
    return {
        "listing": listing,
        "title": LISTINGS[listing][0],
        "filters": filters,
        "errors": errors,
        "sites": sites,
        "levels": levels,
        "can_export": can("export_safety"),
        "sorts": LISTINGS[listing][2],
    }


def _listing_page(listing: str):
    filters, errors, sites, levels = _filters(listing)
    page = listings.listing_page(listing, filters, user_sites())
    for row in page.rows:  # times on screen are shown in the site's zone (ARCHITECTURE rule 5)
        row["zone"] = SimpleNamespace(timezone=row["timezone"])
    columns = listings.sae_columns() if listing == "sae" else listings.ae_columns()
    return render_template(
        "safety/listing.html",
        page=page,
        columns=columns,
        row_cells=listing_cells(page.rows, columns),
        **_page_context(listing, page.filters, errors, sites, levels),
    )


_CLOCK_KEYS = frozenset({"awareness", "sae_due", "sae_reported", "susar_due", "susar_reported"})
_YES_NO = {True: "Yes", False: "No"}
_SENTINEL = 987654321  # stands for an id in a link built once per page


def _link_maker(endpoint: str, *names: str):
    """ids -> the endpoint's URL: url_for once, with sentinel ids, then a format string
    (url_for per row and link was a tenth of the page's time); url_for per link if the
    sentinels do not come back in the URL exactly once each."""
    sentinels = [str(_SENTINEL + i) for i in range(len(names))]
    url = url_for(endpoint, **{name: _SENTINEL + i for i, name in enumerate(names)})
    if any(url.count(s) != 1 for s in sentinels):
        return lambda *ids: url_for(endpoint, **dict(zip(names, ids, strict=False)))
    pattern = url.replace("{", "{{").replace("}", "}}")
    for i, s in enumerate(sentinels):
        pattern = pattern.replace(s, "{%d}" % i)
    return lambda *ids: pattern.format(*(int(x) for x in ids))


def listing_cells(rows: list[dict], columns) -> list[Markup]:
    """Each listing row's cells as HTML, built here once per cell rather than through
    a Jinja branch per cell (the page's template time). The same cells the template
    wrote: links to the subject's AEs and to the AE, the grade badge, the draft badge,
    report clocks in the site's time zone, Yes/No, numbers and dates; every value
    escaped."""
    subject_link = _link_maker("adverse_events.subject_aes", "subject_id")
    ae_link = _link_maker("adverse_events.ae", "subject_id", "ae_id")
    sitetime = current_app.jinja_env.filters["sitetime"]
    out = []
    for r in rows:
        cells = []
        for c in columns:
            key = c.key
            v = r[key]
            if key == "subject":
                cells.append(
                    f'<td class="nowrap"><a href="{escape(subject_link(r["subject_id"]))}">{escape(v)}</a></td>'
                )
            elif key == "ae":
                cells.append(
                    f'<td class="nowrap"><a href="{escape(ae_link(r["subject_id"], r["ae_id"]))}">AE {escape(v)}</a></td>'
                )
            elif key == "grade":
                cells.append(
                    f'<td class="num"><span class="grade g{escape(v)}">{escape(v)}</span></td>'
                    if v
                    else '<td class="num"></td>'
                )
            elif key == "status":
                cells.append(
                    '<td><span class="badge s-draft">draft</span></td>' if v == "draft" else f"<td>{escape(v)}</td>"
                )
            elif key in ("sae_state", "susar_state"):
                cells.append(
                    f'<td><span class="badge clock-{escape(v.replace(" ", "-"))}">{escape(v)}</span></td>'
                    if v
                    else "<td></td>"
                )
            elif key in _CLOCK_KEYS:
                cells.append(f'<td class="nowrap">{escape(sitetime(r[key + "_at"], r["zone"]))}</td>')
            elif c.kind == "bool":
                cells.append(f"<td>{_YES_NO.get(v, '')}</td>")
            elif c.kind in ("date", "int"):
                cells.append(
                    f'<td class="{"num" if c.kind == "int" else "nowrap"}">{"" if v is None else escape(v)}</td>'
                )
            else:
                cells.append(f"<td>{'' if v is None else escape(v)}</td>")
        out.append(Markup("\n    ".join(cells)))  # every value escape()d above  # nosec B704
    return out


@bp.route("/ae", endpoint="ae")
@require("view_clinical")
def ae_listing():
    return _listing_page("ae")


@bp.route("/sae", endpoint="sae")
@require("view_clinical")
def sae_listing():
    return _listing_page("sae")


@bp.route("/dlt", endpoint="dlt")
@require("view_clinical")
def dlt_listing():
    return _listing_page("dlt")


@bp.route("/summary", endpoint="summary")
@require("view_clinical")
def ae_summary():
    filters, errors, sites, levels = _filters("summary")
    table = summaries.summary_table(filters, user_sites(), levels)
    return render_template(
        "safety/summary.html",
        table=table,
        cells=summaries.SUMMARY_CELLS,
        row_cells=summary_cells(table["rows"], len(summaries.SUMMARY_CELLS)),
        **_page_context("summary", filters, errors, sites, levels),
    )


def summary_cells(rows: list[dict], width: int) -> list[Markup]:
    """Each summary row's count cells as HTML, built here rather than cell by cell in
    the template (a 100,000-AE summary has 863 rows x 28 counts; a Jinja loop step,
    conditional classes and an escape per cell took most of the page's time). Class
    "zero" on a 0, "group-start" on the first cell of each dose level. The counts are
    ints (`:d` refuses anything else), so nothing needs escaping."""
    classes = [
        ("num zero" if zero else "num") + (" group-start" if i % width == 0 else "")
        for i in range(max((len(r["values"]) for r in rows), default=0))
        for zero in (False, True)
    ]
    return [
        Markup(
            "".join([f'<td class="{classes[2 * i + (not n)]}">{n:d}</td>' for i, n in enumerate(row["values"])])
        )  # integers formatted with :d  # nosec B704
        for row in rows
    ]


@bp.route("/crs-icans", endpoint="crs_icans")
@require("view_clinical")
def crs_icans_summary():
    filters, errors, sites, levels = _filters("crs-icans")
    result = summaries.crs_icans_summary(filters, user_sites(), levels)
    return render_template(
        "safety/crs_icans.html",
        summary=result,
        rows=summaries.crs_icans_rows(result),
        **_page_context("crs-icans", filters, errors, sites, levels),
    )


# --- exports ------------------------------------------------------------------------------------


def _stamp(now) -> str:
    return now.strftime("%Y%m%dT%H%MZ")


def _filename(part: str, fmt: str, now) -> str:
    return f"{current_study().protocol_id}_{part}_{_stamp(now)}.{fmt}"


@records.transaction()
def _audit_export(key: str, fmt: str, filters, rows: int, sites: list[str]) -> None:
    """One audit record per export: who (the user), when (the record's time), what
    (listing, format, filters, the sites it covered) and how many rows."""
    ids = user_sites()
    site_id = None
    if filters.site:
        site_id = next((s.id for s in allowed_sites() if s.code == filters.site), None)
    audit.append(
        "export",
        user=current_user,
        form=f"safety_{key}",
        field=fmt,
        site_id=site_id,
        new={"filters": filters.active(), "rows": rows, "sites": "all" if ids is ALL_SITES else sorted(sites)},
    )


def _meta(title: str, filters, ignored, sites, now) -> list[tuple[str, str]]:
    study = current_study()
    ids = user_sites()
    return [
        ("Protocol", f"{study.protocol_id} (version {study.version})"),
        ("Listing", title),
        ("Filters", filters.describe(ignored)),
        ("Sites", "All sites" if ids is ALL_SITES else ", ".join(sorted(sites)) or "None"),
        ("Exported by", f"{current_user.full_name} ({current_user.username})"),
        ("Exported at", fmt_utc(now)),
    ]


def _send(
    listing: str,
    key: str,
    fmt: str,
    columns,
    rows,
    *,
    count,
    filters,
    ignored,
    sites,
    title,
    part,
    values: bool = False,
    bom: bool = True,
):
    """Write the rows as `fmt`, audit the export, answer with the file. `count` is the
    row count when it is known before the rows are read (the CSV streams them).
    `values`: the rows are tuples in column order (listings.iter_listing_values), not
    dicts (the CSV and XLSX writers take either). `bom`: the CSV starts with the UTF-8
    byte-order mark (issue 13; ``?bom=0`` leaves it out)."""
    now = utcnow()
    filename = _filename(part, fmt, now)
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    meta = _meta(title, filters, ignored, sites, now)
    if fmt == "csv":
        _audit_export(key, fmt, filters, count if count is not None else len(rows), sites)
        stream = stream_with_context(
            chunk.encode("utf-8") for chunk in tabular.csv_stream(columns, rows, values=values, bom=bom)
        )
        return Response(stream, mimetype="text/csv", headers=disposition)
    if fmt == "xlsx":
        spool = tempfile.SpooledTemporaryFile(max_size=XLSX_SPOOL_BYTES)
        try:
            written = tabular.write_xlsx(columns, rows, spool, title=title, meta=meta, values=values)
        except BaseException:
            spool.close()
            raise
        _audit_export(key, fmt, filters, written, sites)
        spool.seek(0)
        return send_file(spool, mimetype=FORMATS["xlsx"], as_attachment=True, download_name=filename)
    if count is not None and count > PDF_MAX_ROWS:
        flash(
            f"The PDF is limited to {PDF_MAX_ROWS:,} rows and this listing has {count:,}: narrow the filters, "
            "or export it as XLSX or CSV.",
            "error",
        )
        return redirect(url_for(f".{listing.replace('-', '_')}", **filters.args()))
    rows = list(rows)
    footer = f"{current_study().protocol_id} · {title} · exported {fmt_utc(now)} by {current_user.username}"
    pdf = tabular.pdf_listing(columns, rows, title=title, meta=meta, footer=footer, user=current_user)
    _audit_export(key, fmt, filters, len(rows), sites)
    return Response(pdf, mimetype=FORMATS["pdf"], headers=disposition)


def _refuse_export(errors: dict[str, str], why: str, back: str) -> Response:
    """An export refused before anything was written: each named error, then "Nothing was
    exported" (with why), and back to the page."""
    for message in errors.values():
        flash(message, "error")
    flash(f"Nothing was exported: {why}" if why else "Nothing was exported.", "error")
    return redirect(back)


def _csv_bom(errors: dict[str, str]) -> bool:
    """The ``bom`` argument of a CSV download (issue 13: the byte-order mark by default);
    a bad value goes into `errors`, named, like a bad filter."""
    try:
        return tabular.bom_argument(request.args.get("bom"))
    except ValueError as error:
        errors["bom"] = str(error)
        return True


@bp.route('/<any(ae, sae, dlt, summary, "crs-icans"):listing>.<any(csv, xlsx, pdf):fmt>', endpoint="export")
@require("export_safety")
def export_listing(listing, fmt):
    """A listing or summary as CSV, XLSX or PDF, with the page's filters and order.
    Filters that do not parse are not silently dropped from a file: the user is sent
    back to the page, which says what is wrong."""
    filters, errors, sites, levels = _filters(listing)
    bom = _csv_bom(errors) if fmt == "csv" else True
    page_endpoint = f".{listing.replace('-', '_')}"
    if errors:
        return _refuse_export(errors, "correct the filters first.", url_for(page_endpoint, **request.args.to_dict()))
    title, part, _ = LISTINGS[listing]
    key = listing.replace("-", "_")
    ids = user_sites()
    common = {"filters": filters, "sites": sites, "title": title, "part": part, "bom": bom}
    if listing in ("ae", "sae", "dlt"):
        columns = listings.listing_columns(listing)
        total = queries.count(listing, filters, ids)
        if fmt == "pdf":
            rows = listings.iter_listing(listing, filters, ids)
            return _send(listing, key, fmt, columns, rows, count=total, ignored=(), **common)
        rows = listings.iter_listing_values(listing, filters, ids, for_csv=fmt == "csv")  # tuples, no dicts
        return _send(listing, key, fmt, columns, rows, count=total, ignored=(), values=True, **common)
    if listing == "summary":
        table = summaries.summary_table(filters, ids, levels)
        columns, rows = summaries.summary_columns(table), summaries.summary_export_rows(table)
    else:
        result = summaries.crs_icans_summary(filters, ids, levels)
        columns, rows = summaries.crs_icans_columns(result), summaries.crs_icans_rows(result)
    return _send(listing, key, fmt, columns, rows, count=len(rows), ignored=summaries.SUMMARY_IGNORES, **common)


@bp.route("/sdtm/ae.csv", endpoint="sdtm_ae")
@require("export_safety")
def sdtm_ae_domain():
    """The CDISC SDTM AE domain of the user's sites (complete AEs; no filters: a domain
    is delivered whole), as CSV, streamed."""
    errors: dict[str, str] = {}
    bom = _csv_bom(errors)
    if errors:
        return _refuse_export(errors, "", url_for(".ae"))
    study = current_study()
    ids = user_sites()
    sites = [s.code for s in allowed_sites()]
    columns = sdtm.AE_COLUMNS
    total = sdtm_source.count_sdtm(ids)
    now = utcnow()
    _audit_export("sdtm_ae", "csv", Filters(), total, sites)
    source = sdtm_source.iter_sdtm_source(ids, studyid=study.protocol_id)
    stream = stream_with_context(
        chunk.encode("utf-8")
        for chunk in tabular.csv_stream(columns, sdtm.ae_domain(source, studyid=study.protocol_id), bom=bom)
    )
    filename = _filename("sdtm_ae", "csv", now)
    return Response(stream, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'})


#: the files of an SDTM domain (issue 15): CSV, SAS transport v5, Dataset-JSON 1.1
SDTM_FORMATS = {
    "csv": "text/csv",
    "xpt": "application/octet-stream",
    "json": "application/json",
}


@bp.route("/sdtm/<any(ae, dm, ds, ex):domain>.<any(csv, xpt, json):fmt>", endpoint="sdtm")
@require("export_safety")
def sdtm_dataset(domain, fmt):
    """One SDTM domain of the user's sites (no filters: a domain is delivered whole) as
    CSV, SAS transport (XPT v5) or Dataset-JSON 1.1; audited like the listings."""
    if domain == "ae" and fmt == "csv":
        return sdtm_ae_domain()
    errors: dict[str, str] = {}
    bom = _csv_bom(errors) if fmt == "csv" else True
    if errors:
        return _refuse_export(errors, "", url_for(".ae"))
    study = current_study()
    ids = user_sites()
    sites = [s.code for s in allowed_sites()]
    now = utcnow()
    filename = _filename(f"sdtm_{domain}", fmt, now)
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    try:  # a value the mapping cannot code (e.g. an AE term outside CTCAE v5.0) is named, never a 500
        declaration, records = sdtm_source.domain_records(domain, ids, study=study)
        if fmt == "csv":
            body = "".join(tabular.csv_stream(declaration.columns, records, bom=bom)).encode("utf-8")
        elif fmt == "json":
            body = sdtm_files.dataset_json_bytes(declaration, records, sdtm_source.study_meta(study, ids, now=now))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = f"{tmp}/{domain}.xpt"
                sdtm_files.write_xpt(declaration, records, path)
                with open(path, "rb") as handle:
                    body = handle.read()
    except ValueError as error:
        return _refuse_export({}, f"the SDTM {domain.upper()} domain cannot be written: {error}", url_for(".ae"))
    _audit_export(f"sdtm_{domain}", fmt, Filters(), len(records), sites)
    return Response(body, mimetype=SDTM_FORMATS[fmt], headers=disposition)


@bp.route("/sdtm/define.xml", endpoint="sdtm_define")
@require("export_safety")
def sdtm_define():
    """The Define-XML 2.1 of the SDTM domains of the user's sites (the same data as
    the dataset downloads: its lengths are the data's); audited."""
    study = current_study()
    ids = user_sites()
    sites = [s.code for s in allowed_sites()]
    now = utcnow()
    datasets = [sdtm_source.domain_records(domain, ids, study=study) for domain in sdtm_source.DOMAINS]
    body = sdtm_files.define_xml(
        datasets, sdtm_source.study_meta(study, ids, now=now), terms=sdtm_source.codelist_terms(study)
    )
    _audit_export("sdtm_define", "xml", Filters(), sum(len(records) for _, records in datasets), sites)
    filename = _filename("sdtm_define", "xml", now)
    return Response(
        body, mimetype="application/xml", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
