"""The CTCAE v5.0 dictionary in the database (issue 4), loaded by `flask ctcae load`
from the copy shipped in the package (cellstudy/data/ctcae_v5.0.csv)."""
from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class CtcaeTerm(db.Model):
    __tablename__ = "ctcae_term"
    id: Mapped[int] = mapped_column(primary_key=True)
    meddra_code: Mapped[str] = mapped_column(String(12), index=True)
    soc: Mapped[str] = mapped_column(String(120), index=True)
    term: Mapped[str] = mapped_column(String(200), unique=True)
    grade_1: Mapped[str | None] = mapped_column(Text)
    grade_2: Mapped[str | None] = mapped_column(Text)
    grade_3: Mapped[str | None] = mapped_column(Text)
    grade_4: Mapped[str | None] = mapped_column(Text)
    grade_5: Mapped[str | None] = mapped_column(Text)
    definition: Mapped[str | None] = mapped_column(Text)
    navigational_note: Mapped[str | None] = mapped_column(Text)
