"""`flask ctcae load`: the shipped CTCAE v5.0 dictionary into the database, idempotently
(each term inserted once, changed rows updated, nothing deleted)."""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..records import audit
from ..records.transaction import transaction
from . import ctcae
from .models import CtcaeTerm

COLUMNS = (
    "meddra_code",
    "soc",
    "grade_1",
    "grade_2",
    "grade_3",
    "grade_4",
    "grade_5",
    "definition",
    "navigational_note",
)


def _row(term: ctcae.Term) -> dict:
    row = {
        "meddra_code": term.meddra_code,
        "soc": term.soc,
        "definition": term.definition or None,
        "navigational_note": term.navigational_note or None,
    }
    for grade in range(1, 6):
        row[f"grade_{grade}"] = term.grades.get(grade) or None
    return row


@transaction()
def load() -> tuple[int, int, int]:
    """(terms in the dictionary, inserted, updated)."""
    existing = {t.term: t for t in db.session.execute(select(CtcaeTerm)).scalars()}
    inserted = updated = 0
    for term in ctcae.terms():
        row = _row(term)
        current = existing.get(term.term)
        if current is None:
            db.session.add(CtcaeTerm(term=term.term, **row))
            inserted += 1
        elif any(getattr(current, k) != v for k, v in row.items()):
            for k, v in row.items():
                setattr(current, k, v)
            updated += 1
    if inserted or updated:
        audit.append(
            "reference_load",
            username="system",
            form="ctcae_term",
            field="CTCAE v5.0",
            new=f"{inserted} inserted, {updated} updated",
            reason="flask ctcae load",
        )
    return len(ctcae.terms()), inserted, updated
