"""A page of an ordered list and the count of the whole list, in one statement.

A list page used to send two: ``count(*)`` over the list, then the page. Both walk the same
rows (the sort needs them all), so the count rides on the page as a window function
(``count(*) OVER ()``): one pass in the database, one statement fewer per page."""

from __future__ import annotations

from sqlalchemy import Select, func

from .extensions import db

_TOTAL = "_list_total"
_MAX_OFFSET = 2**31 - 1  # the databases' 32-bit integers


def page_count(total: int, per_page: int) -> int:
    """How many pages a list of `total` rows fills (an empty list still shows one)."""
    return max(1, -(-total // per_page))


def page_in(total: int, page: int, per_page: int) -> int:
    """The page asked for, clamped to the pages there are (a page past the last shows the last)."""
    return min(max(page, 1), page_count(total, per_page))


def paged_with_total(stmt: Select, page: int, per_page: int) -> tuple[int, int, list]:
    """(rows in the whole list, the page shown, the page's rows) of an ordered select; each row
    as the select gives it (without the count). A page past the last shows the last one: the
    count is then only known from the first page, so that case costs a second statement."""
    # a page number beyond any list (a hand-typed 2**63) must not overflow the OFFSET: it is
    # past the end, which shows the last page
    page = min(max(page, 1), _MAX_OFFSET // max(per_page, 1))
    counted = stmt.add_columns(func.count().over().label(_TOTAL))
    rows = db.session.execute(counted.limit(per_page).offset((page - 1) * per_page)).all()
    if rows:
        total = rows[0][-1]
    elif page == 1:
        total = 0
    else:  # past the end: count, and show the last page
        total = db.session.execute(counted.limit(1)).first()
        total = total[-1] if total else 0
        page = page_in(total, page, per_page)
        rows = db.session.execute(counted.limit(per_page).offset((page - 1) * per_page)).all() if total else []
    return int(total), page, [tuple(row)[:-1] for row in rows]
