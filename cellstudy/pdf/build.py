"""The PDFs of the app (issue 5; PROTOCOL 8): blank and filled CRFs, the subject
casebook and the safety listings, with one header, footer and fetcher.

Each builder returns ``(pdf bytes, file name)``; the caller checks permissions (views,
jobs) and audits the export with ``audit_export``. File names are
``<protocol>_<subject>_<form>_<YYYYMMDD>.pdf`` (``blank`` in place of the subject for a
blank CRF)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..records import audit
from ..timeutil import fmt_utc, site_zone, utcnow
from . import documents
from .. import registry
from .forms import blank, pdf_forms
from .render import render_pdf
from ..settings import current_study
from ..study import STUDY

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from ..auth.models import User
    from ..enrollment.models import Subject
    from ..records.formrecord import FormRecord

#: the trial's title (PROTOCOL 1), printed in every header with the protocol id
PROTOCOL_TITLE = "NK cell therapy targeting CLL1 or CD33 in relapsed/refractory AML (CAR-NK)"
PAGE_SIZES = {"a4": "A4", "letter": "letter"}


def page_size(value: str | None) -> str:
    """ "a4" (default) or "letter"; anything else is a ValueError naming the choices."""
    key = (value or "a4").lower()
    if key not in PAGE_SIZES:
        raise ValueError(f"Paper size {value!r} is not offered: choose A4 or Letter.")
    return key


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "x"


def filename(protocol_id: str, subject: str, form: str, when: datetime | None = None) -> str:
    when = when or utcnow()
    return f"{_slug(protocol_id)}_{_slug(subject)}_{_slug(form)}_{when:%Y%m%d}.pdf"


def _study():
    return current_study()


@dataclass
class Page:
    """What every PDF's header, footer and metadata say."""

    title: str
    subject: str
    keywords: str
    page_size: str
    protocol_id: str
    protocol_title: str
    form_version: str
    footer: str
    generated: str
    generated_by: str
    created: str
    site: str | None = None
    subject_label: str | None = None
    blank: bool = False
    landscape: bool = False
    meta: list = None

    @property
    def form_version_css(self) -> str:
        return css_string(self.form_version)


def css_string(text: str) -> str:
    """Text for inside a CSS string in a <style> element: anything but letters, digits and
    a few safe marks is a CSS escape (no quote, backslash or "</style>" can get through)."""
    return "".join(c if c.isalnum() or c in " .,()-_:/" else f"\\{ord(c):x} " for c in text)


def _page(
    *,
    title: str,
    user,
    size: str,
    site=None,
    subject=None,
    blank_form=False,
    landscape=False,
    describe: str = "",
    study=None,
) -> Page:
    study = study or _study()
    now = utcnow()
    local = documents.site_time(now, site) if site is not None else None
    generated = fmt_utc(now) + (f" ({local} site time)" if local else "")
    by = f"{user.full_name} ({user.username})" if user is not None else "system"
    label = subject.label if subject is not None else None
    site_text = f"{site.code} · {site.name}" if site is not None else None
    footer = f"{'Blank CRF printed' if blank_form else 'Generated'} {generated} by {by} · CellStudy" + (
        " · a paper source worksheet: transcribe into CellStudy" if blank_form else ""
    )
    return Page(
        title=title,
        subject=describe or (f"Subject {label}" if label else title),
        keywords=", ".join(x for x in (study.protocol_id, label, site.code if site else None) if x),
        page_size=PAGE_SIZES[size],
        protocol_id=study.protocol_id,
        protocol_title=getattr(study, "title", None) or PROTOCOL_TITLE,
        form_version=study.version,
        footer=footer,
        generated=generated,
        generated_by=by,
        created=now.isoformat(timespec="seconds"),
        site=site_text,
        subject_label=label,
        blank=blank_form,
        landscape=landscape,
    )


def _context(**extra) -> dict:
    return {
        "when": documents.both_times,
        "labels": documents.field_labels(),
        "notes": {k: ft.note for k, ft in pdf_forms().items()},
        "form_labels": {name: t.label for name, t in registry.record_types().items()},
        **extra,
    }


def blank_crf(key: str, user: User, size: str = "a4") -> tuple[bytes, str]:
    ft = pdf_forms()[key]
    page = _page(title=f"{ft.title} — blank CRF", user=user, size=size, blank_form=True)
    pdf = render_pdf("pdf/crf.html", pdf=page, docs=[blank(ft)], **_context(site_obj=None))
    return pdf, filename(page.protocol_id, "blank", key)


def filled_crf(
    subject: Subject, key: str, record: FormRecord | None, user: User, size: str = "a4"
) -> tuple[bytes, str]:
    """One filled CRF (``record`` None for the two logs)."""
    doc = documents.single_doc(subject, key, record)
    page = _page(title=f"{doc.title} — {subject.label}", user=user, size=size, site=subject.site, subject=subject)
    # issue 11: the version the record was saved under, not the one in force now (an empty
    # log has no entry: the definition in force)
    page.form_version = doc.study_version or page.form_version
    pdf = render_pdf("pdf/crf.html", pdf=page, docs=[doc], **_context(site_obj=subject.site))
    part = key if record is None else f"{key}-{record.id}"
    return pdf, filename(page.protocol_id, subject.label, part)


def casebook_data(subject_id: int, user: User, size: str = "a4") -> dict:
    """Everything the casebook shows, read in a few queries (then no query is needed to
    render it: a background job ends its transaction before the slow rendering)."""
    subject = documents.load_subject(subject_id)
    docs, context = documents.subject_docs(subject)
    rows = documents.audit_rows(subject)
    signatures = [s for group in context.signatures.values() for s in group]
    signatures.sort(key=lambda s: (s.signed_at, s.id))
    page = _page(title=f"Casebook — {subject.label}", user=user, size=size, site=subject.site, subject=subject)
    return {
        "pdf": page,
        "docs": docs,
        "subject": subject,
        "audit": rows,
        "signatures": signatures,
        "site_zone": str(site_zone(subject.site)),
        **_context(site_obj=subject.site),
    }


def render_casebook(data: dict) -> tuple[bytes, str, dict]:
    pdf = render_pdf("pdf/casebook.html", **data)
    name = filename(data["pdf"].protocol_id, data["subject"].label, "casebook")
    return pdf, name, {"forms": len(data["docs"]), "audit_records": len(data["audit"])}


def casebook(subject_id: int, user: User, size: str = "a4") -> tuple[bytes, str, dict]:
    """The subject's casebook and a summary for the audit record ({forms, audit_records})."""
    return render_casebook(casebook_data(subject_id, user, size))


def listing(
    layout_columns: Sequence[dict[str, str]],
    rows: Sequence[Sequence[str]],
    *,
    title: str,
    meta: Sequence[tuple[str, str]],
    user: User | None = None,
    footer: str | None = None,
    size: str = "a4",
) -> bytes:
    """A safety listing (landscape) with the header and footer of every PDF."""

    # A listing needs no database beyond its rows: the protocol id is not amendable, and a
    # listing has no form version (its meta pairs say what it is, on every page).
    page = _page(title=title, user=user, size=size, landscape=True, describe=title, study=STUDY)
    page.form_version = ""
    if user is None and footer:
        page.footer = footer
    page.meta = list(meta)
    return render_pdf(
        "pdf/listing.html", pdf=page, title=title, meta=meta, columns=layout_columns, rows=rows, row_count=len(rows)
    )


def audit_export(
    user: User,
    *,
    what: str,
    name: str,
    subject: Subject | None = None,
    form: str | None = None,
    form_id: int | None = None,
    site_id: int | None = None,
    details: dict | None = None,
) -> None:
    """One audit record per generated PDF: who, what, which subject/form, the file."""
    audit.append(
        "export",
        user=user,
        site_id=site_id if site_id is not None else (subject.site_id if subject else None),
        subject_id=subject.id if subject is not None else None,
        form=form,
        form_id=form_id,
        field="pdf",
        new={"document": what, "file": name, **(details or {})},
    )
