"""Fast HTML for the eligibility criteria list (the live check, a signed decision, a review).

The list has one item per criterion (about 20): drawn through a Jinja loop it cost the
subject page more than its own queries (issue 11's decision of record made the page
within 10 % of its speed before only once this list was plain Python), so it is produced
here, the same markup `_macros.html`'s `criteria_list` used to write."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from markupsafe import Markup, escape

from .eligibility import INCLUSION_CODES

_MARKS = {"pass": "✓", "fail": "✗", "missing": "?"}
_GROUPS = (("Inclusion criteria", True, ""), ("Exclusion criteria", False, " <small>(pass = condition absent)</small>"))


def criteria_list(judged: Mapping | None, criteria: Iterable[tuple[str, str]]) -> Markup:
    """Every criterion of `criteria` ((code, text) in protocol order) that `judged` (code ->
    {"status", "reason"}: a checker result's or a signed decision's criteria) judged, with
    its status and reason: inclusion criteria, then exclusion criteria."""
    judged = judged or {}
    criteria = list(criteria)
    out = []
    for heading, inclusion, note in _GROUPS:
        out.append(f'<h3 class="crit-group">{heading}{note}</h3>\n<ol class="criteria">')
        for code, text in criteria:
            if (code in INCLUSION_CODES) != inclusion:
                continue
            c = judged.get(code)
            if not c:
                continue
            status = escape(c["status"])
            out.append(
                f'<li class="crit c-{status}" data-code="{escape(code)}" data-status="{status}">'
                f'<span class="mark" aria-hidden="true">{_MARKS.get(c["status"], "·")}</span> '
                f'<span class="ctext"><strong>{escape(text[:1].upper() + text[1:])}</strong> '
                f'<span class="cstatus">{status}</span><br><small>{escape(c.get("reason") or "")}</small></span></li>'
            )
        out.append("</ol>")
    html = "\n".join(out)
    return Markup(html)  # every value is escape()d above  # nosec B704
