"""`flask ctcae load`: the dictionary in the database, counted against the shipped file,
and idempotent (issue 4)."""

import csv
from importlib import resources

from sqlalchemy import func, select

from cellstudy.adverse_events.models import CtcaeTerm
from cellstudy.extensions import db
from cellstudy.records.models import AuditRecord


def _file_rows():
    text = (resources.files("cellstudy") / "data" / "ctcae_v5.0.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_load_is_idempotent_and_matches_the_file(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["ctcae", "load"])
    assert first.exit_code == 0 and "837 terms (837 inserted, 0 updated)" in first.output
    second = runner.invoke(args=["ctcae", "load"])
    assert second.exit_code == 0 and "(0 inserted, 0 updated)" in second.output
    rows = _file_rows()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(CtcaeTerm)) == len(rows) == 837
        assert (
            db.session.scalar(select(func.count(func.distinct(CtcaeTerm.soc)))) == len({r["soc"] for r in rows}) == 26
        )
        alopecia = db.session.execute(select(CtcaeTerm).where(CtcaeTerm.term == "Alopecia")).scalar_one()
        assert alopecia.grade_1 and alopecia.grade_2 and alopecia.grade_3 is None
        loads = db.session.execute(select(AuditRecord).where(AuditRecord.action == "reference_load")).scalars().all()
        assert len(loads) == 1  # the second, empty load writes nothing


def test_a_changed_row_is_updated_by_the_next_load(app):
    runner = app.test_cli_runner()
    runner.invoke(args=["ctcae", "load"])
    with app.app_context():
        term = db.session.execute(select(CtcaeTerm).where(CtcaeTerm.term == "Alopecia")).scalar_one()
        term.definition = "edited by hand"
        db.session.commit()
    result = runner.invoke(args=["ctcae", "load"])
    assert "(0 inserted, 1 updated)" in result.output
    with app.app_context():
        term = db.session.execute(select(CtcaeTerm).where(CtcaeTerm.term == "Alopecia")).scalar_one()
        assert term.definition != "edited by hand"
