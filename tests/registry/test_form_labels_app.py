"""One declaration per form (issue 12): every label a page, PDF or export gives a form type
is the registry's. Each registry label is swapped for a sentinel; the pages that name forms
must show the sentinels and none of the old labels."""

from __future__ import annotations

import dataclasses
import html
import re

import pytest

from cellstudy import registry
from tests.helpers import subject_by_number
from tests.pdf.conftest import Pdf

#: labels that also name something other than the form type on these pages (an AE
#: category "Adverse event", a visit's own name "Visit Day 7"): only their sentinels are checked
SHARED_WORDS = {"adverse_event", "audit_trail", "visit", "subject", "query", "user", "job", "casebook", "deviation"}


#: the names the forms had in the copies before issue 12 (five for the therapy log)
FORMER_NAMES = {
    "exposure": ("Medications", "Prior / concomitant therapy", "Prior and concomitant therapy", "Therapy log entry")
}


def sentinel(name: str) -> str:
    return f"Zq{name.replace('_', '')}Zq"


@pytest.fixture
def swapped(app):
    """Every form and record type, and every log view, labelled by its sentinel."""
    originals = registry.record_types()
    for name, entry in originals.items():
        registry.unregister(name)
        changes = {"label": sentinel(name)}
        if isinstance(entry, registry.FormType) and entry.logs:
            changes["logs"] = tuple(dataclasses.replace(log, label=sentinel(log.key)) for log in entry.logs)
        registry.register(dataclasses.replace(entry, **changes))
    old = {name: entry.label for name, entry in originals.items()}
    old |= {log.key: log.label for entry in originals.values() for log in getattr(entry, "logs", ())}
    yield old
    for name, entry in originals.items():
        registry.unregister(name)
        registry.register(entry)


def page_text(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


#: text the demo's users typed (a query's message): data, not a label
DEMO_DATA = ("Missing data: the DLT assessment is due at the end of the DLT window.",)


def assert_named(text: str, names, old: dict, where: str) -> None:
    for typed in DEMO_DATA:
        text = text.replace(typed, "")
    for name in names:
        assert sentinel(name) in text, f"{where}: {name} is not named by its registry label"
        if name in SHARED_WORDS:
            continue
        for pattern in (re.escape(old[name]), *map(re.escape, FORMER_NAMES.get(name, ()))):
            pattern = rf"\b{pattern}\b"
            hit = re.search(rf".{{0,60}}{pattern}.{{0,60}}", text)
            assert not hit, f"{where}: an old name of {name} is left: {hit.group(0)!r}"


def test_every_page_that_names_a_form_reads_the_registry(app, login, swapped):
    with app.app_context():
        hz = subject_by_number("HZ-001")
        sid, screening_id = hz.id, hz.current_screening.id
    crfs = list(registry.form_types())
    monitor, coordinator, dm = login("monitor-hz"), login("coord-hz"), login("dm")

    # the monitoring page of a subject: its forms, and every form type as a query target
    assert_named(page_text(monitor.get(f"/subjects/{sid}/monitoring")), crfs, swapped, "subject monitoring page")
    # the dashboards: one row per form type
    assert_named(page_text(monitor.get("/dashboards/monitor")), crfs, swapped, "monitor dashboard")
    assert_named(page_text(dm.get("/dashboards/data-manager")), crfs, swapped, "data-manager dashboard")
    # the audit viewer's form filter: every record type the trail names
    assert_named(page_text(dm.get("/audit")), list(registry.record_types()), swapped, "audit viewer")
    # the SDV worklist's form filter
    assert_named(
        page_text(monitor.get("/sdv")),
        [n for n, ft in registry.form_types().items() if ft.sdv != "none"],
        swapped,
        "SDV page",
    )
    # the subject's own pages: the navigation, the form list, the therapy log, the screening form
    subject_page = page_text(coordinator.get(f"/subjects/{sid}"))
    assert_named(subject_page, ["screening", "exposure", "dlt_assessment"], swapped, "subject page")
    assert_named(
        page_text(coordinator.get(f"/subjects/{sid}/medications")), ["exposure", "vaccination"], swapped, "therapy log"
    )
    assert_named(
        page_text(coordinator.get(f"/subjects/{sid}/vaccinations")), ["vaccination"], swapped, "vaccination log"
    )
    assert_named(
        page_text(coordinator.get(f"/subjects/{sid}/screening/{screening_id}")),
        ["screening"],
        swapped,
        "screening form",
    )
    assert_named(
        page_text(coordinator.get(f"/subjects/{sid}/adverse-events")),
        ["crs_assessment", "icans_assessment"],
        swapped,
        "adverse events of the subject",
    )
    # the blank CRFs: every form, each log view by its own label
    logs = list(registry.logs())
    blank = page_text(coordinator.get("/crfs/blank"))
    assert_named(blank, [n for n, ft in registry.form_types().items() if not ft.logs] + logs, swapped, "blank CRFs")


def test_the_casebook_and_the_audit_export_read_the_registry(app, login, swapped):
    with app.app_context():
        sid = subject_by_number("HZ-001").id
    monitor = login("monitor-hz")
    response = monitor.get(f"/subjects/{sid}/casebook.pdf")
    assert response.status_code == 200
    titles = " ".join(title for title, _page in Pdf(response.data).outline())
    assert_named(titles, ["screening"] + list(registry.logs()), swapped, "casebook bookmarks")
    export = login("dm").get("/audit/export.csv?form=screening")
    assert export.status_code == 200
    assert_named(export.get_data(as_text=True), ["screening"], swapped, "audit trail export")
