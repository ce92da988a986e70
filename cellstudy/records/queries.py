"""The one way a data query is written (issue 12).

A query is opened by a person (a monitor's or data manager's question, through
``monitoring.service.open_query``) or by the system (an edit check, an AE grade that differs
from the grade computed from its assessments), and moves through its life cycle by
:func:`transition`. Every step is a message in the query's thread and an audit record on the
form it is about, in the caller's transaction (``records.transaction()``). The life cycle
itself is the pure table below; ``monitoring.rules`` re-exports it for the pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..extensions import db
from ..timeutil import utcnow
from . import audit
from .models import Query, QueryMessage
from .transaction import require_active

if TYPE_CHECKING:
    from ..auth.models import User

QUERY_STATES = ("open", "answered", "closed", "cancelled")
UNRESOLVED = ("open", "answered")
#: (state, action) -> new state. "answer" is site staff; the others the opener's side.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("open", "answer"): "answered",
    ("answered", "answer"): "answered",
    ("open", "close"): "closed",
    ("answered", "close"): "closed",
    ("answered", "reopen"): "open",
    ("closed", "reopen"): "open",
    ("open", "cancel"): "cancelled",
    ("answered", "cancel"): "cancelled",
}
ACTIONS = ("answer", "close", "reopen", "cancel")
_PAST = {"answer": "answered", "close": "closed", "reopen": "re-opened", "cancel": "cancelled"}


def next_state(state: str, action: str) -> str:
    """The query's state after `action`; ValueError naming what is not allowed."""
    if state not in QUERY_STATES:
        raise ValueError(f"state: unknown query state {state!r}")
    if action not in ACTIONS:
        raise ValueError(f"action: unknown query action {action!r}")
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise ValueError(f"A query that is {state} cannot be {_PAST[action]}.") from None


def allowed_actions(state: str) -> tuple[str, ...]:
    return tuple(a for a in ACTIONS if (state, a) in TRANSITIONS)


def _who(user) -> dict:
    """A person's step names them; the system's is recorded as "system"."""
    return {"user": user} if user is not None else {"username": "system"}


def new_query(
    *,
    site_id: int,
    subject_id: int,
    form: str,
    form_id: int | None,
    field: str | None,
    text: str,
    user: User | None = None,
    rule: str | None = None,
    assignee_role: str = "coordinator",
    assignee_id: int | None = None,
) -> Query:
    """Open a query: by `user` (origin "manual") or, with no user, by the system (origin
    "system", e.g. the edit check `rule`). Its first message is the text."""
    require_active("records.queries.new_query()")
    now = utcnow()
    query = Query(
        site_id=site_id,
        subject_id=subject_id,
        form=form,
        form_id=form_id,
        field=field,
        text=text,
        origin="manual" if user is not None else "system",
        rule=rule,
        state="open",
        created_at=now,
        updated_at=now,
        created_by_id=user.id if user is not None else None,
        assignee_role=assignee_role,
        assignee_id=assignee_id,
    )
    db.session.add(query)
    db.session.flush()
    db.session.add(QueryMessage(query_id=query.id, user_id=query.created_by_id, kind="open", text=text, at=now))
    audit.append(
        "query_open",
        **_who(user),
        form=form,
        form_id=form_id,
        field=field,
        new=f"#{query.id}: {text}",
        subject_id=subject_id,
        site_id=site_id,
    )
    return query


def transition(query: Query, action: str, *, user: User | None, text: str) -> None:
    """Answer, close, re-open or cancel `query` (ValueError when its state does not allow
    it); `user` None for the system's own step (an edit check whose value was corrected)."""
    require_active("records.queries.transition()")
    new_state = next_state(query.state, action)
    now = utcnow()
    old_state = query.state
    by = user.id if user is not None else None
    query.state = new_state
    query.updated_at = now
    if action == "answer":
        query.answered_at, query.answered_by_id = now, by
    if action in ("close", "cancel"):
        query.closed_at, query.closed_by_id, query.close_note = now, by, text
    if action == "reopen":
        query.closed_at = query.closed_by_id = query.close_note = None
    db.session.add(QueryMessage(query_id=query.id, user_id=by, kind=action, text=text, at=now))
    audit.append(
        f"query_{action}",
        **_who(user),
        form=query.form,
        form_id=query.form_id,
        field=query.field,
        old=old_state,
        new=f"#{query.id} {new_state}: {text}",
        subject_id=query.subject_id,
        site_id=query.site_id,
    )
