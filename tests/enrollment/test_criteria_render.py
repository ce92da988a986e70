"""The criteria list in plain Python (enrollment/render.py): what the Jinja loop it
replaced showed, in protocol order, inclusion then exclusion, every text escaped."""

from __future__ import annotations

import re

from cellstudy.enrollment.eligibility import INCLUSION_CODES
from cellstudy.enrollment.render import criteria_list


def test_the_list_keeps_protocol_order_and_groups_and_skips_what_was_not_judged():
    inclusion = sorted(INCLUSION_CODES)[:2]
    criteria = [(inclusion[1], "second inclusion"), ("washout_x", "an exclusion"), (inclusion[0], "first inclusion")]
    judged = {
        inclusion[0]: {"status": "pass", "reason": "ok"},
        inclusion[1]: {"status": "fail", "reason": "too low"},
        "washout_x": {"status": "missing", "reason": "no date"},
    }
    html = str(criteria_list(judged, criteria + [("not_judged", "never shown")]))
    codes = re.findall(r'data-code="([^"]+)"', html)
    assert codes == [inclusion[1], inclusion[0], "washout_x"]
    assert html.index("Inclusion criteria") < html.index(inclusion[1]) < html.index("Exclusion criteria")
    assert html.index("Exclusion criteria") < html.index("washout_x")
    assert "never shown" not in html
    assert '<span class="mark" aria-hidden="true">✗</span>' in html and "Second inclusion" in html
    assert 'data-status="missing"' in html and "(pass = condition absent)" in html


def test_every_text_is_escaped_and_an_unknown_status_or_no_reason_still_renders():
    code = sorted(INCLUSION_CODES)[0]
    judged = {code: {"status": "fail", "reason": '<script>alert("x")</script> & more'}}
    html = str(criteria_list(judged, [(code, "<b>text</b>")]))
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; more" in html
    assert "<b>" not in html and "&lt;b&gt;text&lt;/b&gt;" in html
    html = str(criteria_list({code: {"status": "odd", "reason": None}}, [(code, "x")]))
    assert ">·</span>" in html and "<small></small>" in html and "None" not in html
    assert str(criteria_list(None, [])).count("<ol") == 2  # nothing judged: the two headings, empty lists
