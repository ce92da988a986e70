"""The SDTM DM, EX and DS domains (issue 15; define notes in docs/sdtm_dm.md,
docs/sdtm_ex.md, docs/sdtm_ds.md): pure mapping rules written from SDTM-IG 3.4."""

from __future__ import annotations

import re
from datetime import date

import pytest

from cellstudy.exports import sdtm, sdtm_dm, sdtm_ds, sdtm_ex
from cellstudy.exports.sdtm_model import CODELISTS, MAX_BYTES, clean, dy

STUDYID = "CARNK-AML-01"
LEVELS = {"DL1": "DL1 (1 x 10^8 cells)", "DL2": "DL2 (1 x 10^9 cells)"}
DRUGS = ("fludarabine", "cyclophosphamide")
FIRST = date(2024, 3, 4)
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(T([01]\d|2[0-3]):[0-5]\d)?$")


def subject(**changes):
    return {
        "usubjid": f"{STUDYID}-HZ-001",
        "subjid": "HZ-001",
        "site": "HZ",
        "status": "follow_up",
        "dose_level": "DL1",
        "given_levels": ["DL1", "DL1", "DL1"],
        "rfstdtc": FIRST,
        "rfendtc": date(2024, 3, 18),
        "icf_date": "2024-02-10",
        "date_of_birth": "1960-05-20",
        "sex": "F",
        "screening_date": "2024-02-12",
        "status_date": None,
        "status_reason": None,
        "screen_fail_date": None,
        "failed_criteria": [],
        "death_date": None,
        "end_date": None,
        "country": None,
        **changes,
    }


def infusion(**changes):
    return {
        "usubjid": f"{STUDYID}-HZ-001",
        "kind": "infusion",
        "number": 1,
        "date": FIRST,
        "start_time": "10:30",
        "stop_time": "11:00",
        "actual_cells": 100_000_000,
        "product_lot": "LOT-1",
        "rfstdtc": FIRST,
        **changes,
    }


def ld_day(day, when, **changes):
    return {
        "usubjid": f"{STUDYID}-HZ-001",
        "kind": "lymphodepletion",
        "day": day,
        "date": when,
        "start_time": "09:00",
        "stop_time": None,
        "doses": {"fludarabine": "30", "cyclophosphamide": "300"},
        "rfstdtc": FIRST,
        **changes,
    }


ALL = [
    ld_day(-5, date(2024, 2, 28)),
    ld_day(-4, date(2024, 2, 29)),
    ld_day(-3, date(2024, 3, 1)),
    infusion(),
    infusion(number=2, date=date(2024, 3, 11)),
    infusion(number=3, date=date(2024, 3, 18), stop_time=None, product_lot="批号\n7"),
]


# --- the IG's structure ---------------------------------------------------------------------------

IG = {
    # SDTM-IG 3.4: Req variables and the order of the variables we map
    "DM": (
        {"STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "SEX", "COUNTRY"},
        "STUDYID DOMAIN USUBJID SUBJID RFSTDTC RFENDTC RFXSTDTC RFXENDTC RFICDTC RFPENDTC DTHDTC DTHFL SITEID "
        "AGE AGEU SEX RACE ARMCD ARM ACTARMCD ACTARM ARMNRS ACTARMUD COUNTRY DMDTC DMDY",
    ),
    "EX": (
        {"STUDYID", "DOMAIN", "USUBJID", "EXSEQ", "EXTRT"},
        "STUDYID DOMAIN USUBJID EXSEQ EXSPID EXTRT EXCAT EXDOSE EXDOSU EXDOSFRM EXDOSFRQ EXROUTE EXLOT "
        "EXSTDTC EXENDTC EXSTDY EXENDY",
    ),
    "DS": (
        {"STUDYID", "DOMAIN", "USUBJID", "DSSEQ", "DSTERM", "DSDECOD"},
        "STUDYID DOMAIN USUBJID DSSEQ DSTERM DSDECOD DSCAT DSSTDTC DSSTDY",
    ),
}
DOMAINS = {"DM": sdtm_dm.DM, "EX": sdtm_ex.EX, "DS": sdtm_ds.DS, "AE": sdtm.AE}


@pytest.mark.parametrize("name", sorted(IG))
def test_required_variables_and_the_standards_order(name):
    required, order = IG[name]
    domain = DOMAINS[name]
    assert domain.names == tuple(order.split())
    assert {v.name for v in domain.variables if v.core == "Req"} == required


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_names_and_labels_fit_sas_v5(name):
    for v in DOMAINS[name].variables:
        assert re.fullmatch(r"[A-Z][A-Z0-9]{0,7}", v.name) and 1 <= len(v.label) <= 40
        # the domain's own variables carry its prefix (SDTM-IG 3.4 section 4.2.1)
        if name != "DM" and v.name not in ("STUDYID", "DOMAIN", "USUBJID"):
            assert v.name.startswith(name), v.name


def test_dm_expected_variables():
    expected = {v.name for v in sdtm_dm.DM.variables if v.core == "Exp"}
    assert {"RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "RFICDTC", "AGE", "AGEU", "ARMCD", "ARM"} <= expected
    assert {"ACTARMCD", "ACTARM", "ARMNRS", "ACTARMUD", "DTHDTC", "DTHFL", "RACE"} <= expected


# --- DM ---------------------------------------------------------------------------------------------


def dm(subject_dict, ex=ALL):
    records = list(sdtm_ex.ex_domain(ex, studyid=STUDYID, drugs=DRUGS))
    return sdtm_dm.dm_record(subject_dict, studyid=STUDYID, levels=LEVELS, ex_records=records)


def test_dm_of_a_treated_subject():
    record = dm(subject())
    assert record == {
        "STUDYID": STUDYID,
        "DOMAIN": "DM",
        "USUBJID": f"{STUDYID}-HZ-001",
        "SUBJID": "HZ-001",
        "RFSTDTC": "2024-03-04",  # the first NK-cell infusion: day 1 of every --DY
        "RFENDTC": "2024-03-18",
        "RFXSTDTC": "2024-02-28",  # the first EX record: lymphodepletion day -5
        "RFXENDTC": "2024-03-18",
        "RFICDTC": "2024-02-10",
        "RFPENDTC": "",
        "DTHDTC": "",
        "DTHFL": "",
        "SITEID": "HZ",
        "AGE": 63,
        "AGEU": "YEARS",
        "SEX": "F",
        "RACE": "",
        "ARMCD": "DL1",
        "ARM": "DL1 (1 x 10^8 cells)",
        "ACTARMCD": "DL1",
        "ACTARM": "DL1 (1 x 10^8 cells)",
        "ARMNRS": "",
        "ACTARMUD": "",
        "COUNTRY": "",
        "DMDTC": "2024-02-12",
        "DMDY": -21,
    }


@pytest.mark.parametrize(
    "changes, armcd, actarmcd, armnrs",
    [
        ({"status": "screen_failed", "dose_level": None, "given_levels": []}, "", "", "SCREEN FAILURE"),
        ({"status": "screening", "dose_level": None, "given_levels": []}, "", "", "NOT ASSIGNED"),
        ({"status": "enrolled", "given_levels": []}, "DL1", "", "ASSIGNED, NOT TREATED"),
        ({"given_levels": ["DL1", "DL2"]}, "DL1", "", "UNPLANNED TREATMENT"),
        ({"given_levels": ["DL2"]}, "DL1", "DL2", ""),
    ],
)
def test_arms_and_the_reason_they_are_null(changes, armcd, actarmcd, armnrs):
    record = dm(subject(**changes), ex=[])
    assert (record["ARMCD"], record["ACTARMCD"], record["ARMNRS"]) == (armcd, actarmcd, armnrs)
    assert armnrs in ("", *CODELISTS["ARMNRS"].terms)
    assert (record["ACTARMUD"] != "") == (armnrs == "UNPLANNED TREATMENT")


def test_a_subject_who_died():
    record = dm(subject(status="died", death_date=date(2024, 4, 2), end_date=date(2024, 4, 2)))
    assert (record["DTHFL"], record["DTHDTC"], record["RFPENDTC"]) == ("Y", "2024-04-02", "2024-04-02")


def test_bad_sex_code_raises():
    with pytest.raises(ValueError):
        dm(subject(sex="X"))


# --- EX ---------------------------------------------------------------------------------------------


def test_ex_infusions_and_lymphodepletion():
    records = list(sdtm_ex.ex_domain(ALL, studyid=STUDYID, drugs=DRUGS))
    assert [(r["EXSEQ"], r["EXTRT"], r["EXSTDY"]) for r in records] == [
        (1, "CYCLOPHOSPHAMIDE", -5),
        (2, "FLUDARABINE", -5),
        (3, "CYCLOPHOSPHAMIDE", -4),
        (4, "FLUDARABINE", -4),
        (5, "CYCLOPHOSPHAMIDE", -3),
        (6, "FLUDARABINE", -3),
        (7, "CAR-NK CELLS", 1),
        (8, "CAR-NK CELLS", 8),
        (9, "CAR-NK CELLS", 15),
    ]
    nk = records[6]
    assert (nk["EXDOSE"], nk["EXDOSU"], nk["EXDOSFRM"], nk["EXROUTE"]) == (
        100_000_000,
        "cells",
        "SUSPENSION",
        "INTRAVENOUS",
    )
    assert (nk["EXSTDTC"], nk["EXENDTC"], nk["EXENDY"]) == ("2024-03-04T10:30", "2024-03-04T11:00", 1)
    flu = records[1]
    assert (flu["EXDOSE"], flu["EXDOSU"], flu["EXDOSFRM"], flu["EXCAT"]) == (30, "mg/m2", "SOLUTION", "LYMPHODEPLETION")
    assert records[-1]["EXLOT"] == "批号 7" and records[-1]["EXENDTC"] == "2024-03-18"
    for r in records:
        assert ISO.match(r["EXSTDTC"]) and ISO.match(r["EXENDTC"])
        assert r["EXDOSU"] in CODELISTS["UNIT"].terms and r["EXDOSFRM"] in CODELISTS["FRM"].terms
        assert r["EXROUTE"] in CODELISTS["ROUTE"].terms and r["EXDOSFRQ"] in CODELISTS["FREQ"].terms


def test_ex_decimal_dose_and_a_missing_drug():
    [record] = list(
        sdtm_ex.ex_domain([ld_day(-5, date(2024, 2, 28), doses={"fludarabine": "28.5"})], studyid=STUDYID, drugs=DRUGS)
    )
    assert record["EXDOSE"] == 28.5 and record["EXTRT"] == "FLUDARABINE"


def test_ex_bad_input_raises():
    with pytest.raises(ValueError):
        list(sdtm_ex.ex_domain([infusion(actual_cells="many")], studyid=STUDYID, drugs=DRUGS))
    with pytest.raises(ValueError):
        list(sdtm_ex.ex_domain([infusion(start_time="25:00")], studyid=STUDYID, drugs=DRUGS))


# --- DS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, decods",
    [
        ({}, ["INFORMED CONSENT OBTAINED"]),
        (
            {
                "status": "screen_failed",
                "screen_fail_date": date(2024, 2, 12),
                "failed_criteria": ["ecog"],
                "rfstdtc": None,
            },
            ["INFORMED CONSENT OBTAINED", "SCREEN FAILURE"],
        ),
        ({"status": "completed", "status_date": date(2024, 9, 1)}, ["INFORMED CONSENT OBTAINED", "COMPLETED"]),
        ({"status": "died", "death_date": date(2024, 4, 2)}, ["INFORMED CONSENT OBTAINED", "DEATH"]),
        (
            {"status": "withdrawn", "status_date": date(2024, 4, 5), "status_reason": "moved\nabroad"},
            ["INFORMED CONSENT OBTAINED", "OTHER"],
        ),
    ],
)
def test_ds_consent_and_disposition(changes, decods):
    records = list(sdtm_ds.ds_domain([subject(**changes)], studyid=STUDYID))
    assert [r["DSDECOD"] for r in records] == decods
    assert [r["DSSEQ"] for r in records] == list(range(1, len(records) + 1))
    for r in records:
        assert r["DSDECOD"] in CODELISTS["DSDECOD"].terms and r["DSCAT"] in CODELISTS["DSCAT"].terms
        assert ISO.match(r["DSSTDTC"]) and r["DSSTDY"] != 0
    if changes.get("status") == "withdrawn":
        assert records[-1]["DSTERM"] == "WITHDRAWN: moved abroad"
    if changes.get("status") == "screen_failed":
        assert records[-1]["DSTERM"] == "SCREEN FAILURE: ecog" and records[-1]["DSSTDY"] is None
    assert records[0]["DSSTDY"] == dy(date(2024, 2, 10), changes.get("rfstdtc", FIRST))


def test_ds_unknown_status_raises():
    with pytest.raises(ValueError):
        sdtm_ds.ds_records(subject(status="lost"), studyid=STUDYID)


# --- rules across the domains -----------------------------------------------------------------------


def test_sequence_keys_are_unique_per_usubjid():
    rows = [dict(r, usubjid=f"{STUDYID}-{s}") for s in ("HZ-001", "HZ-002") for r in ALL]
    for records in (
        list(sdtm_ex.ex_domain(rows, studyid=STUDYID, drugs=DRUGS)),
        list(sdtm_ds.ds_domain([subject(usubjid=u, status="completed") for u in ("A", "B")], studyid=STUDYID)),
    ):
        seq = next(n for n in records[0] if n.endswith("SEQ"))
        keys = [(r["USUBJID"], r[seq]) for r in records]
        assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("offset", range(-40, 40))
def test_there_is_no_study_day_zero(offset):
    from datetime import timedelta

    day = dy(FIRST + timedelta(days=offset), FIRST)
    assert day != 0 and day == (offset + 1 if offset >= 0 else offset)


def test_clean_keeps_within_200_bytes():
    text = clean("a\r\nb" + "é" * 300)
    assert text.startswith("a b") and len(text.encode("utf-8")) <= MAX_BYTES
