"""Bad input is refused at the field, never a 500 (issue 13, failure 6).

- Every number field of every form of the registry (cellstudy.registry: the screening form,
  the therapy log, lymphodepletion, infusion, visit, CRS...) is posted NaN, infinity, a
  signalling NaN and numbers too large or too fine to store, through the form's own page as
  a browser posts it: 200, the field's error naming it, what was typed kept, nothing saved.
- Every route with an id in its URL (read off the URL map) answers 404 for ids the id columns
  cannot hold (2^63 was an OverflowError in SQLite's driver, 2^31 "integer out of range" on
  PostgreSQL), and the ids a monitoring form posts (a query's target, a query, a visit, a
  lock) are refused the same way.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from flask import url_for
from sqlalchemy import func, select
from werkzeug.routing import IntegerConverter

from cellstudy import registry
from cellstudy.extensions import db
from cellstudy.records.crf import DecimalField
from cellstudy.records.models import AuditRecord
from cellstudy.urls import MAX_ID
from tests.helpers import field_errors

NOT_NUMBERS = ["NaN", "nan", "-NaN", "sNaN", "Infinity", "inf", "-inf", "+Infinity"]
TOO_BIG_OR_FINE = ["1e999999", "-1e999999", "1e-999999", "1e9999999999999999999", "1234567890123.5", "0.1234567"]
INTEGERS_TOO_BIG = [str(2**63), str(2**64), "9" * 5000]  # 5,000 digits: past Python's int() limit too
BIG_IDS = [2**31, 2**63, 2**64]  # past PostgreSQL's integer ids; past SQLite's 64-bit integers

COORDINATOR = {"HZ": "coord-hz", "NB": "coord-nb"}


class _Form(HTMLParser):
    """The controls of the <form> that holds a given field, as a browser would post them."""

    def __init__(self, field: str):
        super().__init__(convert_charrefs=True)
        self.field, self.forms, self._current, self._select, self._textarea = field, [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._current = {"action": a.get("action"), "data": {}, "buttons": []}
        if self._current is None:
            return
        data = self._current["data"]
        name = a.get("name")
        if tag == "input" and name and "disabled" not in a:
            kind = a.get("type", "text")
            if kind == "submit":
                self._current["buttons"].append((name, a.get("value", "")))
            elif kind not in ("checkbox", "radio") or "checked" in a:
                data[name] = a.get("value", "")
        elif tag == "button" and name:
            self._current["buttons"].append((name, a.get("value", "")))
        elif tag == "select" and name:
            self._select = name
            data.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            data[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            data[name] = ""

    def handle_data(self, text):
        if self._textarea and self._current is not None:
            self._current["data"][self._textarea] += text

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form" and self._current is not None:
            self.forms.append(self._current)
            self._current = None

    @classmethod
    def of(cls, page: str, field: str) -> dict:
        parser = cls(field)
        parser.feed(page)
        for form in parser.forms:
            if field in form["data"]:
                return form
        raise AssertionError(f"no editable form with the field {field} on the page")


def _numeric_forms(app) -> list[tuple]:
    """(form name, page URL, record model, record id, coordinator, number fields) of every
    registry form with number fields, for a demo record of it."""
    out = []
    with app.test_request_context():
        for name, ft in registry.form_types().items():
            specs = [s for s in ft.specs if s.kind in ("number", "int")]
            if not specs:
                continue
            assert ft.model is not None and ft.endpoint is not None, name
            row = db.session.execute(select(ft.model).order_by(ft.model.id).limit(1)).scalar()
            assert row is not None, f"the demo study has no {name} record to post to"
            endpoint, arg = ft.endpoint
            args = {"subject_id": row.subject_id, **({arg: row.id} if arg else {})}
            site = row.subject.site.code
            out.append((name, url_for(endpoint, **args), ft.model, row.id, COORDINATOR[site], specs))
    return out


def _state(app, model, record_id):
    with app.app_context():
        row = db.session.get(model, record_id)
        values = {c.key: getattr(row, c.key) for c in model.__table__.columns}
        audits = db.session.execute(select(func.count()).select_from(AuditRecord)).scalar()
        return values, audits


def _form(session, url: str, field: str) -> dict:
    page = session.get(url)
    assert page.status_code == 200, (url, page.status_code)
    return _Form.of(page.get_data(as_text=True), field)


def _post_bad(session, url: str, values: dict[str, str], form: dict | None = None):
    """The form of the page as it stands, with `values` typed in (and a reason for change)."""
    form = form or _form(session, url, next(iter(values)))
    data = {**form["data"], **values}
    if "reason" in data:
        data["reason"] = "Correcting a transcription error"
    buttons = dict(form["buttons"])
    button = "save" if "save" in buttons else next(iter(buttons), None)
    if button:
        data[button] = buttons[button]
    return session.post(form["action"] or url, data=data)


def _check_refused(response, specs, typed: dict[str, str], labels: dict[str, str]):
    assert response.status_code == 200, response.data[:500]
    page = response.get_data(as_text=True)
    for spec in specs:
        errors = field_errors(page, spec.name)
        assert errors, f"{spec.name}: no error at the field for {typed[spec.name]!r}"
        assert any(e.startswith(labels[spec.name] + ":") or "between" in e or "at least" in e for e in errors), errors
        assert f'value="{typed[spec.name]}"' in page or f'value="{typed[spec.name][:50]}' in page, spec.name


def _labels(page: str, specs) -> dict[str, str]:
    import re

    out = {}
    for spec in specs:
        match = re.search(rf'<label for="{spec.name}">([^<]*)', page)
        out[spec.name] = (match.group(1).strip() if match else spec.label).replace("&amp;", "&")
    return out


@pytest.mark.parametrize("value", NOT_NUMBERS + TOO_BIG_OR_FINE + INTEGERS_TOO_BIG, ids=lambda v: v[:24])
def test_every_number_field_of_every_form_refuses_the_value_at_the_field(app, login, value):
    """One POST per form with `value` in every number field: each field says so, by name."""
    for name, url, model, record_id, user, specs in _numeric_forms(app):
        s = login(user)
        before = _state(app, model, record_id)
        typed = {spec.name: value for spec in specs}
        response = _post_bad(s, url, typed)
        _check_refused(response, specs, typed, _labels(response.get_data(as_text=True), specs))
        assert _state(app, model, record_id) == before, f"{name}: something was saved"


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_each_number_field_alone_refuses_nan_and_infinity(app, login, value):
    """The reported failure: NaN in one field (the exposure half-life, a screening ULN) with
    every other answer valid. A 500 (decimal.InvalidOperation) before."""
    for name, url, model, record_id, user, specs in _numeric_forms(app):
        s = login(user)
        before = _state(app, model, record_id)
        form = _form(s, url, specs[0].name)
        for spec in specs:
            response = _post_bad(s, url, {spec.name: value}, form)
            page = response.get_data(as_text=True)
            assert response.status_code == 200, (name, spec.name, response.data[:300])
            errors = field_errors(page, spec.name)
            label = _labels(page, [spec])[spec.name]
            assert errors == [
                f"{label}: enter a number written with digits, such as 12.5 (NaN and infinity are not numbers)."
            ] or (spec.kind == "int" and errors == [f"{label}: enter a whole number, such as 12."]), (
                name,
                spec.name,
                errors,
            )
            assert f'value="{value}"' in page, (name, spec.name)
        assert _state(app, model, record_id) == before, f"{name}: something was saved"


def test_the_largest_number_a_field_takes_is_saved_exactly(app, login):
    """The limits keep a number's exact text within the 20 characters the therapy log's
    half-life column holds (PostgreSQL refuses a longer one: a 500 before)."""
    from cellstudy.enrollment.models import Exposure

    s = login("coord-hz")
    data = {"category": "systemic_antitumor", "name": "Azacitidine", "last_date": "2026-01-05"}
    response = s.post("/subjects/1/exposures/new", data={**data, "half_life_days": "999999999999.999999"})
    assert response.status_code == 302, response.data[:500]
    with app.app_context():
        saved = db.session.execute(select(Exposure).order_by(Exposure.id.desc())).scalars().first()
        assert saved.half_life_days == "999999999999.999999"
    refused = s.post("/subjects/1/exposures/new", data={**data, "half_life_days": "9999999999999.5"})
    assert refused.status_code == 200
    assert field_errors(refused.get_data(as_text=True), "half_life_days") == [
        "Half-life: enter a number of at most 12 digits before the decimal point."
    ]


def test_every_decimal_field_of_every_form_class_is_the_one_that_refuses_nan():
    """The one fix, not one per form: no form of the app uses WTForms' own DecimalField
    (which takes "NaN"), hand-written forms included."""
    import wtforms
    from flask_wtf import FlaskForm

    import cellstudy  # noqa: F401  (every feature and its forms loaded)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    checked = 0
    for form_class in subclasses(FlaskForm):
        if not form_class.__module__.startswith("cellstudy."):
            continue
        for attr in dir(form_class):
            unbound = getattr(form_class, attr, None)
            field_class = getattr(unbound, "field_class", None)
            if isinstance(field_class, type) and issubclass(field_class, wtforms.DecimalField):
                assert issubclass(field_class, DecimalField), f"{form_class.__name__}.{attr}"
                checked += 1
    assert checked >= 40


# --- ids past what the id columns hold ----------------------------------------------------------------------------------


def _routes_with_ids(app):
    """Every rule of the URL map with an <int:...> part, with each of its other parts filled."""
    out = []
    for rule in app.url_map.iter_rules():
        ints = [arg for arg, conv in rule._converters.items() if isinstance(conv, IntegerConverter)]
        if not ints:
            continue
        others = {}
        for arg, conv in rule._converters.items():
            if arg in ints:
                continue
            items = getattr(conv, "items", None)
            others[arg] = sorted(items)[0] if items else "screening"
        method = "GET" if "GET" in rule.methods else "POST"
        out.append((rule, ints, others, method))
    return out


def test_the_url_map_has_id_routes_to_check(app):
    assert len(_routes_with_ids(app)) >= 50


@pytest.mark.parametrize("big", BIG_IDS)
@pytest.mark.parametrize("user", ["coord-hz", "monitor-hz", "dm"])
def test_every_route_with_an_id_answers_404_for_ids_the_tables_cannot_hold(app, login, user, big):
    s = login(user)
    failures = []
    for rule, ints, others, method in _routes_with_ids(app):
        for arg in ints:
            values = {**dict.fromkeys(ints, 1), **others, arg: big}
            with app.test_request_context():
                url = url_for(rule.endpoint, **values)
            response = s.client.open(url, method=method)
            if response.status_code != 404:
                failures.append((url, method, response.status_code))
    assert not failures


def test_the_largest_id_a_database_holds_is_an_ordinary_missing_record(app, login):
    s = login("coord-hz")
    for rule, ints, others, method in _routes_with_ids(app):
        with app.test_request_context():
            url = url_for(rule.endpoint, **{**dict.fromkeys(ints, MAX_ID), **others})
        assert s.client.open(url, method=method).status_code < 500, url


@pytest.mark.parametrize("big", [*BIG_IDS, MAX_ID, "-1", "1e3", "99" * 3000], ids=lambda v: str(v)[:24])
def test_ids_posted_by_the_monitoring_forms_that_no_table_holds_answer_404(app, login, big):
    """The query form's target ("form:id") and the other ids the monitoring forms post."""
    monitor, coordinator = login("monitor-hz"), login("coord-hz")
    posts = [
        (monitor, "/subjects/1/queries", {"target": f"screening:{big}", "text": "Please check", "field": ""}),
        (monitor, "/subjects/1/verify", {"target": f"screening:{big}"}),
        (monitor, "/subjects/1/verify", {"visit_id": f"{big}"}),
        (coordinator, "/subjects/1/queries/answer", {"query_id": f"{big}", "text": "Checked"}),
        (monitor, "/subjects/1/queries/resolve", {"query_id": f"{big}", "action": "close", "text": ""}),
    ]
    before = db_count(app)
    for session, url, data in posts:
        response = session.post(url, data=data)
        assert response.status_code == 404, (url, data, response.status_code)
    assert db_count(app) == before


def test_a_lock_id_no_table_holds_is_refused_with_a_message(app, login):
    dm = login("dm")
    for big in BIG_IDS:
        response = dm.post("/locks/unlock", data={"lock_id": str(big), "reason": "x"})
        assert response.status_code in (302, 404), response.status_code


def db_count(app) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(AuditRecord)).scalar()


@pytest.mark.parametrize("big", [str(2**63), str(2**64), "-1", "1e3"])
def test_no_page_breaks_on_a_page_number_or_a_keyset_id_no_table_holds(app, login, big):
    """?page= (the subject and query lists: an OverflowError in SQLite's OFFSET before) and
    the audit trail's ?before= / ?after=, on every GET page of the URL map."""
    s = login("dm")
    failures = []
    for rule, ints, others, method in _routes_with_ids(app) + _routes_without_ids(app):
        if method != "GET" or rule.rule.endswith((".pdf", "xlsx):fmt>")):
            continue
        with app.test_request_context():
            url = url_for(rule.endpoint, **{**dict.fromkeys(ints, 1), **others})
        response = s.get(url, query_string={"page": big, "before": big, "after": big})
        response.close()
        if response.status_code >= 500:
            failures.append((url, response.status_code))
    assert not failures


def _routes_without_ids(app):
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or any(isinstance(c, IntegerConverter) for c in rule._converters.values()):
            continue
        others = {
            arg: sorted(getattr(conv, "items", None) or ["screening"])[0] for arg, conv in rule._converters.items()
        }
        out.append((rule, [], others, "GET" if "GET" in rule.methods else "POST"))
    return out
