"""Site scoping has one helper (issue 12): `auth.policy.scoped` / `within` restrict a query to
sites, `user_sites()` says which, and "every site" is a value (ALL_SITES) that a caller must
pass, never a missing argument."""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from sqlalchemy import bindparam, column, select, table

import cellstudy
from cellstudy.auth.policy import ALL_SITES, covers, scoped, within

ROOT = Path(cellstudy.__file__).parent
ROWS = table("rows", column("id"), column("site_id"))


def _sql(stmt) -> str:
    return str(stmt.compile(compile_kwargs={"literal_binds": True})).replace("\n", " ")


def test_all_sites_leaves_the_query_as_it_is():
    stmt = select(ROWS.c.id)
    assert scoped(stmt, ROWS.c.site_id, ALL_SITES) is stmt
    assert covers(ALL_SITES, 7) and covers(ALL_SITES, None)


def test_no_sites_match_nothing():
    assert _sql(scoped(select(ROWS.c.id), ROWS.c.site_id, [])).endswith("WHERE false")
    assert not covers([], 1)


def test_one_site_and_several_sites():
    assert _sql(scoped(select(ROWS.c.id), ROWS.c.site_id, [3])).endswith("WHERE rows.site_id = 3")
    assert _sql(scoped(select(ROWS.c.id), ROWS.c.site_id, [4, 3, 4])).endswith("WHERE rows.site_id IN (3, 4)")
    assert covers([3, 4], 4) and not covers([3, 4], 5) and not covers([3], None)


def test_a_statement_built_once_binds_its_sites():
    stmt = select(ROWS.c.id).where(within(ROWS.c.site_id, bindparam("sites", expanding=True)))
    assert "IN (__[POSTCOMPILE_sites])" in str(stmt)


@pytest.mark.parametrize("missing", [None, 3, "HZ"])
def test_a_missing_or_malformed_scope_is_refused(missing):
    """None used to mean "every site": a forgotten argument then showed every site's data."""
    with pytest.raises(TypeError, match="ALL_SITES"):
        scoped(select(ROWS.c.id), ROWS.c.site_id, missing)


def _sources():
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        yield path, path.read_text()


def test_no_query_restricts_sites_by_hand():
    """`X.site_id.in_(...)` (or `Site.id.in_`) anywhere but auth/policy.py is a scope written
    a second time: it is where a site filter is forgotten or a default of every site creeps in."""
    pattern = re.compile(r"(\bsite_id|\bSite\.id)\s*\)?\s*\.in_\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path, text in _sources()
        if path.relative_to(ROOT).as_posix() != "auth/policy.py"
        for n, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders
    assert not [p for p, text in _sources() if re.search(r"\bsite_ids\(", text)], "the old helper is gone"


def _functions():
    for info in pkgutil.walk_packages(cellstudy.__path__, "cellstudy."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                yield f"{info.name}.{name}", inspect.unwrap(obj)


def test_every_function_that_takes_sites_requires_them():
    taking = {}
    for name, fn in _functions():
        for param in inspect.signature(fn).parameters.values():
            if "Sites" in str(param.annotation):
                taking.setdefault(name, []).append(param)
    # the services of every list that crosses subjects take a scope
    for expected in (
        "cellstudy.monitoring.service.queries",
        "cellstudy.monitoring.service.active_locks",
        "cellstudy.monitoring.state.sdv_rows",
        "cellstudy.adverse_events.service.sae_worklist",
        "cellstudy.infusions.worklists.calendar",
        "cellstudy.infusions.judgement.locked_planned",
        "cellstudy.enrollment.reconfirm.open_reviews",
        "cellstudy.safety.listings.listing_page",
        "cellstudy.dashboards.service.build",
        "cellstudy.audit_viewer.service.statement",
    ):
        assert expected in taking, expected
    defaulted = [f"{n}({p.name})" for n, params in taking.items() for p in params if p.default is not p.empty]
    assert not defaulted, defaulted


def test_a_list_without_a_scope_is_refused(app):
    from cellstudy.monitoring import service

    with app.app_context():
        with pytest.raises(TypeError):
            service.active_locks()  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="ALL_SITES"):
            service.active_locks(None)  # type: ignore[arg-type]
        assert service.active_locks([]) == []
