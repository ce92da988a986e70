"""One URL fetcher for every PDF (issue 5, PROTOCOL 8): the app's own static files, and
nothing else: no network, no file://, no path out of static/."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from cellstudy.enrollment.models import Subject
from cellstudy.extensions import db
from cellstudy.pdf import render
from cellstudy.records import service as records
from cellstudy.auth.models import User


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/logo.png",
        "http://cellstudy.invalid/static/pdf.css",  # not https
        "https://cellstudy.invalid.example.com/static/pdf.css",
        "https://cellstudy.invalid/pdf.css",
        "https://cellstudy.invalid/static/../__init__.py",
        "https://cellstudy.invalid/static/%2e%2e/__init__.py",
        "https://cellstudy.invalid/static/nosuchfile.css",
        "https://cellstudy.invalid/static/pdf.css?x=1",
        "file:///etc/passwd",
        "file:///work/main/cellstudy/static/pdf.css",
        "data:text/css,p{color:red}",
        "ftp://example.com/x",
        "//example.com/x.png",
        "/etc/passwd",
    ],
)
def test_everything_but_the_apps_static_files_is_refused(url):
    with pytest.raises(render.FetchRefused):
        render.fetch(url)


def test_the_apps_static_files_are_served_from_the_package():
    content, mime = render.fetch("https://cellstudy.invalid/static/pdf.css")
    assert mime == "text/css" and b"@page" in content


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection during the test fails the test."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise AssertionError(f"a PDF tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    return attempts


@pytest.fixture
def fetched(monkeypatch):
    calls = []
    fetch = render.fetch

    def recording(url):
        calls.append(url)
        return fetch(url)

    monkeypatch.setattr(render, "fetch", recording)
    return calls


def test_a_url_in_a_free_text_field_is_printed_not_fetched(app, login, read_pdf, no_network, fetched):
    sneaky = (
        '<img src="https://example.com/track.png"> file:///etc/passwd '
        '<link rel="stylesheet" href="file:///etc/passwd"> url(https://example.com/x.css)'
    )
    with app.app_context():
        subject = db.session.execute(select(Subject).where(Subject.subject_number == "HZ-001")).scalar_one()
        ae = subject.adverse_events[0]
        user = db.session.execute(select(User).where(User.username == "coord-hz")).scalar_one()
        records.save(ae, user=user, changes={"comments": sneaky}, expected_version=ae.version, reason="test")
        ids = subject.id, ae.id
    pdf = read_pdf(login("inv-hz").get(f"/subjects/{ids[0]}/aes/{ids[1]}.pdf").data)
    assert pdf.has(sneaky)  # shown as the text it is
    assert fetched == ["https://cellstudy.invalid/static/pdf.css"]  # the stylesheet, nothing else
    assert no_network == []


def test_markup_that_reaches_weasyprint_is_refused_by_the_fetcher(no_network, fetched):
    # control: were a URL ever to reach WeasyPrint, the fetcher refuses it and the PDF still renders
    pdf = render.html_to_pdf(
        '<link rel="stylesheet" href="/static/pdf.css"><p>x</p>'
        '<img src="https://example.com/x.png"><img src="file:///etc/passwd">'
    )
    assert pdf.startswith(b"%PDF")
    assert fetched == ["https://cellstudy.invalid/static/pdf.css", "https://example.com/x.png", "file:///etc/passwd"]
    assert no_network == []
