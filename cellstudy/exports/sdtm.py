"""The CDISC SDTM AE domain (PROTOCOL 8), mapped from the EDC's adverse events.

Pure: no Flask, no database. The caller queries the AEs (site-scoped), sorts them by
subject, onset date and AE id, and passes one dict per AE; ``ae_domain`` yields one
SDTM record per AE. Variables, origins and mapping rules are documented in
``docs/sdtm_ae.md`` (the define notes): change both together.

Character variables are strings ("" when null, as in a SAS transport file); the
numeric variables AESEQ, AESTDY and AEENDY are ``int`` or ``None``. Bad input (an
unknown action, outcome or attribution code, a grade outside 1-5) raises
``ValueError``: an export must not silently invent a controlled term.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime

from ..adverse_events.ctcae import VERBATIM_SUFFIX
from ..adverse_events.fields import ATTRIBUTIONS, RELATED, SERIOUSNESS_CRITERIA
from ..adverse_events.rules import study_day
from .tabular import Column

DOMAIN = "AE"

#: (variable, label) in dataset order: SDTM-IG 3.4 AE order, restricted to what the
#: EDC collects or derives
AE_VARIABLES: tuple[tuple[str, str], ...] = (
    ("STUDYID", "Study Identifier"),
    ("DOMAIN", "Domain Abbreviation"),
    ("USUBJID", "Unique Subject Identifier"),
    ("AESEQ", "Sequence Number"),
    ("AESPID", "Sponsor-Defined Identifier"),
    ("AETERM", "Reported Term for the Adverse Event"),
    ("AEDECOD", "Dictionary-Derived Term"),
    ("AEPTCD", "Preferred Term Code"),
    ("AEBODSYS", "Body System or Organ Class"),
    ("AETOXGR", "Standard Toxicity Grade"),
    ("AESER", "Serious Event"),
    ("AEREL", "Causality"),
    ("AEACN", "Action Taken with Study Treatment"),
    ("AEOUT", "Outcome of Adverse Event"),
    ("AESTDTC", "Start Date/Time of Adverse Event"),
    ("AEENDTC", "End Date/Time of Adverse Event"),
    ("AESTDY", "Study Day of Start of Adverse Event"),
    ("AEENDY", "Study Day of End of Adverse Event"),
    ("AESDTH", "Results in Death"),
    ("AESLIFE", "Is Life Threatening"),
    ("AESHOSP", "Requires or Prolongs Hospitalization"),
    ("AESDISAB", "Persist or Signif Disability/Incapacity"),
    ("AESCONG", "Congenital Anomaly or Birth Defect"),
    ("AESMIE", "Other Medically Important Serious Event"),
)
AE_NAMES: tuple[str, ...] = tuple(name for name, _ in AE_VARIABLES)
NUMERIC = frozenset({"AESEQ", "AESTDY", "AEENDY"})

#: the CSV columns of the SDTM AE dataset: the header is the variable name
AE_COLUMNS: tuple[Column, ...] = tuple(
    Column(name, name, width=max(len(name) + 2, 10), kind="int" if name in NUMERIC else "text") for name in AE_NAMES
)

# CDISC CT codelist ACN (C66767). The EDC's "delayed" and "interrupted" both mean the
# infusion did not go ahead as scheduled: DRUG INTERRUPTED (docs/sdtm_ae.md).
ACTION_TERMS: dict[str, str] = {
    "none": "DOSE NOT CHANGED",
    "delayed": "DRUG INTERRUPTED",
    "interrupted": "DRUG INTERRUPTED",
    "dose_reduced": "DOSE REDUCED",
    "withdrawn": "DRUG WITHDRAWN",
    "not_applicable": "NOT APPLICABLE",
    "unknown": "UNKNOWN",
}
# CDISC CT codelist OUT (C66768)
OUTCOME_TERMS: dict[str, str] = {
    "recovered": "RECOVERED/RESOLVED",
    "recovering": "RECOVERING/RESOLVING",
    "not_recovered": "NOT RECOVERED/NOT RESOLVED",
    "recovered_with_sequelae": "RECOVERED/RESOLVED WITH SEQUELAE",
    "fatal": "FATAL",
    "unknown": "UNKNOWN",
}
# Sponsor-defined causality codelist (PROTOCOL 6: possible, probable and definite
# count as related)
RELATED_TERM = "RELATED"
NOT_RELATED_TERM = "NOT RELATED"

_ATTRIBUTION_CODES = frozenset(code for code, _ in ATTRIBUTIONS)


def _as_date(value: date) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise ValueError(f"Expected a date, got {value!r}")


def _iso(value: date | None) -> str:
    return "" if value is None else _as_date(value).isoformat()


def _yn(flag) -> str:
    return "Y" if flag else "N"


def _choice(terms: dict[str, str], code, what: str) -> str:
    if code is None or code == "":
        return ""
    try:
        return terms[code]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown {what} code {code!r}") from None


def _grade(value) -> str:
    # the form stores the grade choice as text ("3"), the models as an integer
    if value is None or value == "":
        return ""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, int) and not isinstance(text, bool):
        grade = text
    elif isinstance(text, str) and text.isascii() and text.isdigit():
        grade = int(text)
    else:
        grade = 0
    if not 1 <= grade <= 5:
        raise ValueError(f"CTCAE grade must be 1-5, got {value!r}")
    return str(grade)


def _relatedness(ae: dict) -> bool | None:
    related = ae.get("related")
    if related is not None:
        return bool(related)
    # Not given: derive it from the two attributions (PROTOCOL 6), None until both
    # are assessed unless one of them already makes the event related.
    codes = [ae.get("related_nk"), ae.get("related_ld")]
    for code in codes:
        if code not in (None, "") and code not in _ATTRIBUTION_CODES:
            raise ValueError(f"Unknown attribution code {code!r}")
    if any(code in RELATED for code in codes):
        return True
    if all(code in _ATTRIBUTION_CODES for code in codes):
        return False
    return None


def _is_other_specify(term: str) -> bool:
    return term.strip().lower().endswith(VERBATIM_SUFFIX.lower())


def ae_record(ae: dict, *, studyid: str, seq: int) -> dict:
    """One SDTM AE record (a dict in ``AE_VARIABLES`` order) for one EDC adverse event."""
    term = (ae.get("term") or "").strip()
    verbatim = (ae.get("verbatim") or "").strip()
    other_specify = _is_other_specify(term)
    related = _relatedness(ae)
    ongoing = bool(ae.get("ongoing"))
    onset = ae.get("onset_date")
    end = None if ongoing else ae.get("end_date")
    ref = ae.get("rfstdtc")

    record = {
        "STUDYID": studyid,
        "DOMAIN": DOMAIN,
        "USUBJID": ae["usubjid"],
        "AESEQ": seq,
        "AESPID": "" if ae.get("ae_number") is None else str(ae["ae_number"]),
        "AETERM": verbatim or term,
        # "Other, specify" is a CTCAE placeholder, not a MedDRA PT: the verbatim is the
        # best decoded term until it is coded, and the placeholder's code is the SOC's.
        "AEDECOD": (verbatim or term) if other_specify else term,
        "AEPTCD": "" if other_specify or ae.get("meddra_code") in (None, "") else str(ae["meddra_code"]),
        "AEBODSYS": ae.get("soc") or "",
        "AETOXGR": _grade(ae.get("grade")),
        "AESER": "" if ae.get("serious") is None else _yn(ae["serious"]),
        "AEREL": "" if related is None else (RELATED_TERM if related else NOT_RELATED_TERM),
        "AEACN": _choice(ACTION_TERMS, ae.get("action"), "action"),
        "AEOUT": _choice(OUTCOME_TERMS, ae.get("outcome"), "outcome"),
        "AESTDTC": _iso(onset),
        "AEENDTC": _iso(end),
        # SDTM --DY: RFSTDTC is day 1, there is no day 0 (the listings' study day)
        "AESTDY": study_day(onset, ref),
        "AEENDY": study_day(end, ref),
    }
    # The criteria are mapped as recorded ("N" when not ticked, so also for a
    # non-serious event): an inconsistent record shows up rather than being hidden.
    for code, _label, variable in SERIOUSNESS_CRITERIA:
        record[variable] = _yn(ae.get(code))
    return {name: record[name] for name in AE_NAMES}


def ae_domain(aes: Iterable[dict], *, studyid: str) -> Iterator[dict]:
    """SDTM AE records for ``aes`` in the order given (the caller sorts by subject,
    onset date, AE id). AESEQ counts 1, 2, ... within each USUBJID."""
    seqs: dict[str, int] = {}
    for ae in aes:
        usubjid = ae["usubjid"]
        seqs[usubjid] = seq = seqs.get(usubjid, 0) + 1
        yield ae_record(ae, studyid=studyid, seq=seq)
