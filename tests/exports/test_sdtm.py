"""The CDISC SDTM AE domain (PROTOCOL 8; define notes in docs/sdtm_ae.md)."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from cellstudy.adverse_events.fields import ACTIONS, OUTCOMES, SERIOUSNESS_CRITERIA
from cellstudy.adverse_events.rules import study_day
from cellstudy.exports import sdtm
from cellstudy.exports.sdtm import AE_COLUMNS, AE_NAMES, AE_VARIABLES, ae_domain, ae_record
from cellstudy.exports.tabular import csv_stream

STUDYID = "CARNK-AML-01"
FIRST_INFUSION = date(2024, 3, 4)


def ae(**changes):
    """A non-serious, grade 2 fever of subject 001, day 3 to day 5, changed."""
    return {
        "usubjid": "CARNK-AML-01-HZ-001",
        "ae_number": 7,
        "term": "Fever",
        "verbatim": None,
        "soc": "General disorders and administration site conditions",
        "meddra_code": "10016558",
        "grade": 2,
        "serious": False,
        "related": True,
        "related_nk": "possible",
        "related_ld": "unlikely",
        "action": "none",
        "outcome": "recovered",
        "onset_date": date(2024, 3, 6),
        "end_date": date(2024, 3, 8),
        "ongoing": False,
        "rfstdtc": FIRST_INFUSION,
        **{code: False for code, _, _ in SERIOUSNESS_CRITERIA},
        **changes,
    }


def test_variables_in_dataset_order():
    # SDTM-IG 3.4 AE: the variables in the standard's order (restricted to what we map)
    assert AE_NAMES == (
        "STUDYID",
        "DOMAIN",
        "USUBJID",
        "AESEQ",
        "AESPID",
        "AETERM",
        "AELLT",
        "AELLTCD",
        "AEDECOD",
        "AEPTCD",
        "AEHLT",
        "AEHLTCD",
        "AEHLGT",
        "AEHLGTCD",
        "AEBODSYS",
        "AEBDSYCD",
        "AESOC",
        "AESOCCD",
        "AESER",
        "AEACN",
        "AEREL",
        "AEOUT",
        "AESCONG",
        "AESDISAB",
        "AESDTH",
        "AESHOSP",
        "AESLIFE",
        "AESMIE",
        "AETOXGR",
        "AESTDTC",
        "AEENDTC",
        "AESTDY",
        "AEENDY",
    )
    assert all(len(name) <= 8 and name.isupper() for name in AE_NAMES)  # SDTM variable names
    assert all(len(v.label) <= 40 for v in AE_VARIABLES)  # SAS V5 label limit
    assert [c.key for c in AE_COLUMNS] == [c.label for c in AE_COLUMNS] == list(AE_NAMES)


def test_required_and_expected_variables_of_the_ig_are_present():
    required = {"STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM", "AEDECOD"}
    expected = {
        "AELLT", "AELLTCD", "AEPTCD", "AEHLT", "AEHLTCD", "AEHLGT", "AEHLGTCD", "AEBODSYS", "AEBDSYCD",
        "AESOC", "AESOCCD", "AESER", "AEACN", "AEREL", "AESTDTC", "AEENDTC",
    }  # fmt: skip
    assert {v.name for v in AE_VARIABLES if v.core == "Req"} == required
    assert {v.name for v in AE_VARIABLES if v.core == "Exp"} == expected


def test_every_variable_present_in_order():
    record = ae_record(ae(), studyid=STUDYID, seq=1)
    assert tuple(record) == AE_NAMES


def test_a_non_serious_related_fever():
    assert ae_record(ae(), studyid=STUDYID, seq=1) == {
        "STUDYID": "CARNK-AML-01",
        "DOMAIN": "AE",
        "USUBJID": "CARNK-AML-01-HZ-001",
        "AESEQ": 1,
        "AESPID": "7",
        "AETERM": "Fever",
        "AELLT": "Fever",
        "AELLTCD": 10016558,  # CTCAE's MedDRA code is an LLT code
        "AEDECOD": "Fever",
        "AEPTCD": None,  # CTCAE v5.0 supplies no PT, HLT or HLGT
        "AEHLT": "",
        "AEHLTCD": None,
        "AEHLGT": "",
        "AEHLGTCD": None,
        "AEBODSYS": "General disorders and administration site conditions",
        "AEBDSYCD": 10018065,  # the code of the SOC's "Other, specify" row
        "AESOC": "General disorders and administration site conditions",
        "AESOCCD": 10018065,
        "AESER": "N",
        "AEACN": "DOSE NOT CHANGED",
        "AEREL": "RELATED",
        "AEOUT": "RECOVERED/RESOLVED",
        "AESCONG": "N",
        "AESDISAB": "N",
        "AESDTH": "N",
        "AESHOSP": "N",
        "AESLIFE": "N",
        "AESMIE": "N",
        "AETOXGR": "2",
        "AESTDTC": "2024-03-06",
        "AEENDTC": "2024-03-08",
        "AESTDY": 3,
        "AEENDY": 5,
    }


def test_verbatim_is_the_reported_term_and_an_other_specify_term_decodes_to_the_placeholder():
    record = ae_record(ae(verbatim="high fever after infusion"), studyid=STUDYID, seq=1)
    assert record["AETERM"] == "high fever after infusion" and record["AEDECOD"] == "Fever"
    icans = ae(
        term="Nervous system disorders - Other, specify",
        verbatim="Immune effector cell-associated neurotoxicity syndrome (ICANS)",
        soc="Nervous system disorders",
        meddra_code="10029205",
    )
    record = ae_record(icans, studyid=STUDYID, seq=1)
    assert record["AETERM"] == "Immune effector cell-associated neurotoxicity syndrome (ICANS)"
    # AEDECOD is a dictionary term, never free text: the CTCAE placeholder itself
    assert record["AEDECOD"] == "Nervous system disorders - Other, specify"
    # the placeholder is no LLT: its code is the SOC's
    assert (record["AELLT"], record["AELLTCD"], record["AEPTCD"]) == ("", None, None)
    assert record["AEBODSYS"] == record["AESOC"] == "Nervous system disorders"
    assert record["AESOCCD"] == record["AEBDSYCD"] == 10029205


def test_every_soc_has_its_code_from_its_other_specify_row():
    from cellstudy.adverse_events import ctcae

    for term in ctcae.terms():
        record = ae_record(ae(term=term.term, verbatim="x" if term.requires_verbatim else None), studyid=STUDYID, seq=1)
        other = next(t for t in ctcae.terms() if t.soc == term.soc and t.requires_verbatim)
        assert record["AESOCCD"] == int(other.meddra_code), term.term
        assert record["AEDECOD"] == term.term
        assert record["AELLTCD"] == (None if term.requires_verbatim else int(term.meddra_code))


def test_a_term_outside_ctcae_is_refused():
    with pytest.raises(ValueError, match="not a CTCAE v5.0 term"):
        ae_record(ae(term="Feeling blue"), studyid=STUDYID, seq=1)


@pytest.mark.parametrize(
    "verbatim, expected",
    [
        ("fever\nafter\r\ninfusion", "fever after infusion"),
        ("tab\there", "tab here"),
        ("bell\x07 and nul\x00 gone", "bell and nul gone"),
        ("line\u2028separator", "line separator"),
        ("发热 (输注后)", "发热 (输注后)"),
        ("  padded  ", "padded"),
    ],
)
def test_control_characters_and_line_breaks_are_removed(verbatim, expected):
    assert ae_record(ae(verbatim=verbatim), studyid=STUDYID, seq=1)["AETERM"] == expected


def test_very_long_text_is_cut_at_200_bytes_on_a_character_boundary():
    record = ae_record(ae(verbatim="发" * 150), studyid=STUDYID, seq=1)
    assert len(record["AETERM"].encode("utf-8")) <= 200 and record["AETERM"] == "发" * 66


def test_serious_event_and_its_criteria():
    record = ae_record(
        ae(serious=True, grade=4, sae_hospitalisation=True, sae_life_threatening=True), studyid=STUDYID, seq=1
    )
    assert record["AESER"] == "Y" and record["AETOXGR"] == "4"
    flags = {variable: record[variable] for _, _, variable in SERIOUSNESS_CRITERIA}
    assert flags == {"AESDTH": "N", "AESLIFE": "Y", "AESHOSP": "Y", "AESDISAB": "N", "AESCONG": "N", "AESMIE": "N"}


@pytest.mark.parametrize("code, flag", [(code, flag) for code, _, flag in SERIOUSNESS_CRITERIA])
def test_each_criterion_maps_to_its_flag(code, flag):
    record = ae_record(ae(serious=True, **{code: True}), studyid=STUDYID, seq=1)
    assert [v for _, _, v in SERIOUSNESS_CRITERIA if record[v] == "Y"] == [flag]


def test_fatal_event():
    record = ae_record(
        ae(grade=5, serious=True, sae_death=True, outcome="fatal", action="not_applicable", end_date=date(2024, 3, 20)),
        studyid=STUDYID,
        seq=1,
    )
    assert (record["AETOXGR"], record["AESDTH"], record["AEOUT"], record["AEACN"]) == (
        "5",
        "Y",
        "FATAL",
        "NOT APPLICABLE",
    )


@pytest.mark.parametrize(
    "related, nk, ld, expected",
    [
        (True, "possible", "unrelated", "RELATED"),
        (False, "unlikely", "unrelated", "NOT RELATED"),
        (None, None, None, ""),
        # not given: derived from the two attributions (possible/probable/definite = related)
        (None, "definite", None, "RELATED"),
        (None, "unrelated", "probable", "RELATED"),
        (None, "unlikely", "unrelated", "NOT RELATED"),
        (None, "unlikely", None, ""),
    ],
)
def test_causality(related, nk, ld, expected):
    record = ae_record(ae(related=related, related_nk=nk, related_ld=ld), studyid=STUDYID, seq=1)
    assert record["AEREL"] == expected


@pytest.mark.parametrize(
    "action, term",
    [
        ("none", "DOSE NOT CHANGED"),
        ("delayed", "DRUG INTERRUPTED"),
        ("interrupted", "DRUG INTERRUPTED"),
        ("dose_reduced", "DOSE REDUCED"),
        ("withdrawn", "DRUG WITHDRAWN"),
        ("not_applicable", "NOT APPLICABLE"),
        ("unknown", "UNKNOWN"),
        (None, ""),
    ],
)
def test_action_taken_controlled_terms(action, term):
    assert ae_record(ae(action=action), studyid=STUDYID, seq=1)["AEACN"] == term


@pytest.mark.parametrize(
    "outcome, term",
    [
        ("recovered", "RECOVERED/RESOLVED"),
        ("recovering", "RECOVERING/RESOLVING"),
        ("not_recovered", "NOT RECOVERED/NOT RESOLVED"),
        ("recovered_with_sequelae", "RECOVERED/RESOLVED WITH SEQUELAE"),
        ("fatal", "FATAL"),
        ("unknown", "UNKNOWN"),
        (None, ""),
    ],
)
def test_outcome_controlled_terms(outcome, term):
    assert ae_record(ae(outcome=outcome), studyid=STUDYID, seq=1)["AEOUT"] == term


def test_every_edc_code_has_a_controlled_term():
    assert set(sdtm.ACTION_TERMS) == {code for code, _ in ACTIONS}
    assert set(sdtm.OUTCOME_TERMS) == {code for code, _ in OUTCOMES}


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "paused"},
        {"outcome": "resolved"},
        {"grade": 0},
        {"grade": 6},
        {"grade": True},
        {"grade": "3a"},
        {"related": None, "related_nk": "maybe"},
    ],
)
def test_bad_codes_raise(changes):
    with pytest.raises(ValueError):
        ae_record(ae(**changes), studyid=STUDYID, seq=1)


def test_grade_stored_as_text():
    assert ae_record(ae(grade="3"), studyid=STUDYID, seq=1)["AETOXGR"] == "3"
    assert ae_record(ae(grade=None), studyid=STUDYID, seq=1)["AETOXGR"] == ""


@pytest.mark.parametrize(
    "d, expected",
    [
        (date(2024, 3, 4), 1),  # the reference day itself is day 1
        (date(2024, 3, 5), 2),
        (date(2024, 3, 3), -1),  # the day before is -1: there is no day 0
        (date(2024, 2, 26), -7),
        (date(2025, 3, 4), 366),  # 2024 is a leap year
        (None, None),
    ],
)
def test_study_day(d, expected):
    assert study_day(d, FIRST_INFUSION) == expected


def test_study_day_without_reference():
    assert study_day(date(2024, 3, 4), None) is None


def test_days_relative_to_the_first_infusion():
    record = ae_record(ae(onset_date=date(2024, 3, 1), end_date=date(2024, 3, 4)), studyid=STUDYID, seq=1)
    assert (record["AESTDY"], record["AEENDY"]) == (-3, 1)
    record = ae_record(ae(rfstdtc=None), studyid=STUDYID, seq=1)  # never infused
    assert (record["AESTDY"], record["AEENDY"]) == (None, None)


def test_ongoing_has_no_end():
    record = ae_record(ae(ongoing=True, end_date=None, outcome="not_recovered"), studyid=STUDYID, seq=1)
    assert record["AEENDTC"] == "" and record["AEENDY"] is None
    # an end date left behind on an ongoing event is not exported
    record = ae_record(ae(ongoing=True), studyid=STUDYID, seq=1)
    assert record["AEENDTC"] == "" and record["AEENDY"] is None


def test_dates_are_iso_8601():
    record = ae_record(ae(onset_date=date(2024, 1, 9), end_date=date(2024, 12, 31)), studyid=STUDYID, seq=1)
    assert (record["AESTDTC"], record["AEENDTC"]) == ("2024-01-09", "2024-12-31")


def test_aeseq_restarts_at_one_for_each_subject():
    aes = [
        ae(usubjid="CARNK-AML-01-HZ-001", ae_number=1),
        ae(usubjid="CARNK-AML-01-HZ-001", ae_number=4),
        ae(usubjid="CARNK-AML-01-HZ-002", ae_number=2),
        ae(usubjid="CARNK-AML-01-SH-001", ae_number=3),
        ae(usubjid="CARNK-AML-01-SH-001", ae_number=5),
        ae(usubjid="CARNK-AML-01-SH-001", ae_number=6),
    ]
    records = list(ae_domain(iter(aes), studyid=STUDYID))
    assert [(r["USUBJID"][-6:], r["AESEQ"], r["AESPID"]) for r in records] == [
        ("HZ-001", 1, "1"),
        ("HZ-001", 2, "4"),
        ("HZ-002", 1, "2"),
        ("SH-001", 1, "3"),
        ("SH-001", 2, "5"),
        ("SH-001", 3, "6"),
    ]
    assert all(r["STUDYID"] == STUDYID and r["DOMAIN"] == "AE" for r in records)


def test_aeseq_is_unique_per_usubjid():
    aes = [ae(usubjid=f"S-{n % 3}", ae_number=n) for n in range(20)]
    records = list(ae_domain(aes, studyid=STUDYID))
    keys = [(r["USUBJID"], r["AESEQ"]) for r in records]
    assert len(set(keys)) == len(keys) == 20


def test_domain_as_csv():
    text = "".join(csv_stream(AE_COLUMNS, ae_domain([ae(), ae(ongoing=True)], studyid=STUDYID)))
    assert text.startswith("\ufeffSTUDYID,")  # issue 13: the UTF-8 byte-order mark
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    assert list(rows[0]) == list(AE_NAMES)
    assert rows[0]["AESTDY"] == "3" and rows[1]["AESEQ"] == "2" and rows[1]["AEENDY"] == ""
