"""The therapy log page (prior therapies and on-study medications) and the infusion
dose per kg."""

from datetime import timedelta

from cellstudy.infusions.administration import cells_per_kg
from tests.helpers import subject_by_number


def test_the_log_separates_prior_therapies_from_on_study_medications(app, login):
    with app.app_context():
        subject = subject_by_number("HZ-001")
        sid = subject.id
        first = subject.infusions[0].planned_date
    coord = login("coord-hz")
    response = coord.post(
        f"/subjects/{sid}/exposures/new?next=medications",
        data={
            "category": "systemic_steroid",
            "name": "Dexamethasone 10 mg",
            "start_date": (first + timedelta(days=2)).isoformat(),
            "last_date": (first + timedelta(days=3)).isoformat(),
            "indication": "CRS grade 2",
        },
    )
    assert response.status_code == 302 and response.location.endswith(f"/subjects/{sid}/medications")
    page = coord.get(f"/subjects/{sid}/medications").data.decode()
    rows = page[page.index('id="medications"') :]
    assert "Dexamethasone 10 mg" in rows and "Venetoclax + azacitidine" in rows
    dex_row = rows[: rows.index("Dexamethasone 10 mg")].rsplit("<tr>", 1)[1]
    ven_row = rows[: rows.index("Venetoclax + azacitidine")].rsplit("<tr>", 1)[1]
    assert "on study" in dex_row and "prior" in ven_row
    # an on-study steroid does not make the enrolled subject ineligible after the fact
    assert 'id="eligibility-warning"' not in coord.get(f"/subjects/{sid}").data.decode()
    assert login("coord-nb").get(f"/subjects/{sid}/medications").status_code == 404


def test_dose_per_kg_is_computed_from_the_day_weight():
    assert cells_per_kg({"weight_kg": "50", "planned_cells": 100_000_000, "actual_cells": 150_000_000}) == {
        "planned_cells": "2.00 x 10^6",
        "actual_cells": "3.00 x 10^6",
    }
    assert cells_per_kg({"planned_cells": 100_000_000}) == {}
