"""The CDISC SDTM AE domain (PROTOCOL 8, issue 15), mapped from the EDC's adverse events.

Pure: no Flask, no database. The caller queries the AEs (site-scoped), sorts them by
subject, onset date and AE id, and passes one dict per AE; ``ae_domain`` yields one
SDTM record per AE. Variables, origins and mapping rules are documented in
``docs/sdtm_ae.md`` (the define notes): change both together. The variables are
declared once in ``AE`` (``sdtm_model.Domain``); the CSV, XPT, Dataset-JSON and
define.xml read that declaration.

Character variables are strings ("" when null, as in a SAS transport file) without
control characters or line breaks, at most 200 bytes; the numeric variables (AESEQ, the
MedDRA codes, AESTDY, AEENDY) are ``int`` or ``None``. Bad input (an unknown action,
outcome or attribution code, a grade outside 1-5, a term that is not CTCAE v5.0) raises
``ValueError``: an export must not silently invent a controlled term.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

from ..adverse_events import ctcae
from ..adverse_events.ctcae import VERBATIM_SUFFIX
from ..adverse_events.fields import ATTRIBUTIONS, RELATED, SERIOUSNESS_CRITERIA
from ..adverse_events.rules import study_day
from .sdtm_model import Domain, Variable, finish, identifiers, iso, sequence, var
from .tabular import Column

__all__ = ["AE", "AE_COLUMNS", "AE_NAMES", "AE_VARIABLES", "ae_domain", "ae_record", "study_day"]

_SDTM_LABELS = {
    "AESCONG": "Congenital Anomaly or Birth Defect",
    "AESDISAB": "Persist or Signif Disability/Incapacity",
    "AESDTH": "Results in Death",
    "AESHOSP": "Requires or Prolongs Hospitalization",
    "AESLIFE": "Is Life Threatening",
    "AESMIE": "Other Medically Important Serious Event",
}
# (flag, SDTM label, form field): the flags come from adverse_events.fields, so a renamed
# criterion changes the export in one place; the dataset takes them in the IG's order
_FLAGS: tuple[tuple[str, str, str], ...] = tuple(
    (flag, _SDTM_LABELS[flag], code) for flag in _SDTM_LABELS for code, _, f in SERIOUSNESS_CRITERIA if f == flag
)
if len(_FLAGS) != len(SERIOUSNESS_CRITERIA):
    raise RuntimeError("every seriousness criterion needs its SDTM flag label")

DOMAIN = "AE"

_V = var
#: the AE dataset: SDTM-IG 3.4 AE variables in the standard's order, restricted to what
#: the EDC collects or derives plus the Expected MedDRA variables (empty where CTCAE v5.0
#: does not supply them, docs/sdtm_ae.md)
AE = Domain(
    name="AE",
    label="Adverse Events",
    dataset_class="EVENTS",
    structure="One record per adverse event per subject",
    keys=("STUDYID", "USUBJID", "AEDECOD", "AESTDTC"),
    variables=(
        *identifiers("AE", "AESEQ"),
        _V("AESPID", "Sponsor-Defined Identifier", source=("adverse_event", "number")),
        _V(
            "AETERM",
            "Reported Term for the Adverse Event",
            core="Req",
            origin="Collected",
            source=("adverse_event", "verbatim"),
        ),
        _V("AELLT", "Lowest Level Term", core="Exp", codelist="MEDDRA"),
        _V("AELLTCD", "Lowest Level Term Code", "integer", core="Exp", codelist="MEDDRA_CODE"),
        _V("AEDECOD", "Dictionary-Derived Term", core="Req", codelist="CTCAE", source=("adverse_event", "term")),
        _V("AEPTCD", "Preferred Term Code", "integer", core="Exp", codelist="MEDDRA_CODE"),
        _V("AEHLT", "High Level Term", core="Exp", codelist="MEDDRA"),
        _V("AEHLTCD", "High Level Term Code", "integer", core="Exp", codelist="MEDDRA_CODE"),
        _V("AEHLGT", "High Level Group Term", core="Exp", codelist="MEDDRA"),
        _V("AEHLGTCD", "High Level Group Term Code", "integer", core="Exp", codelist="MEDDRA_CODE"),
        _V("AEBODSYS", "Body System or Organ Class", core="Exp", codelist="MEDDRA"),
        _V("AEBDSYCD", "Body System or Organ Class Code", "integer", core="Exp", codelist="MEDDRA_CODE"),
        _V("AESOC", "Primary System Organ Class", core="Exp", codelist="MEDDRA"),
        _V("AESOCCD", "Primary System Organ Class Code", "integer", core="Exp", codelist="MEDDRA_CODE"),
        _V(
            "AESER", "Serious Event", core="Exp", origin="Collected", codelist="NY", source=("adverse_event", "serious")
        ),
        _V(
            "AEACN",
            "Action Taken with Study Treatment",
            core="Exp",
            origin="Collected",
            codelist="ACN",
            source=("adverse_event", "action"),
        ),
        _V("AEREL", "Causality", core="Exp", codelist="AEREL"),
        _V(
            "AEOUT", "Outcome of Adverse Event", origin="Collected", codelist="OUT", source=("adverse_event", "outcome")
        ),
        # SDTM-IG 3.4 AE order of the seriousness flags (not the form's order)
        *(
            _V(flag, label, origin="Collected", codelist="NY", source=("adverse_event", code))
            for flag, label, code in _FLAGS
        ),
        _V(
            "AETOXGR",
            "Standard Toxicity Grade",
            origin="Collected",
            codelist="TOXGR",
            source=("adverse_event", "grade"),
        ),
        _V(
            "AESTDTC",
            "Start Date/Time of Adverse Event",
            "date",
            core="Exp",
            origin="Collected",
            source=("adverse_event", "onset_date"),
        ),
        _V(
            "AEENDTC",
            "End Date/Time of Adverse Event",
            "date",
            core="Exp",
            origin="Collected",
            source=("adverse_event", "end_date"),
        ),
        _V("AESTDY", "Study Day of Start of Adverse Event", "integer"),
        _V("AEENDY", "Study Day of End of Adverse Event", "integer"),
    ),
)
AE_VARIABLES: tuple[Variable, ...] = AE.variables
AE_NAMES: tuple[str, ...] = AE.names
NUMERIC = AE.numeric

#: the CSV columns of the SDTM AE dataset: the header is the variable name
AE_COLUMNS: tuple[Column, ...] = AE.columns

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


@functools.cache
def _soc_codes() -> dict[str, int]:
    """SOC name -> its MedDRA code: CTCAE v5.0 gives each SOC's "Other, specify" row
    the SOC's own code."""
    return {t.soc: int(t.meddra_code) for t in ctcae.terms() if t.requires_verbatim}


def _term(name: str) -> ctcae.Term:
    try:
        return ctcae.get(name)
    except KeyError:
        raise ValueError(f"{name!r} is not a CTCAE v5.0 term: AEDECOD must be a dictionary term") from None


def ae_record(ae: dict, *, studyid: str, seq: int) -> dict:
    """One SDTM AE record (a dict in ``AE_NAMES`` order) for one EDC adverse event."""
    term = _term((ae.get("term") or "").strip())
    verbatim = (ae.get("verbatim") or "").strip()
    other_specify = term.requires_verbatim or _is_other_specify(term.term)
    related = _relatedness(ae)
    ongoing = bool(ae.get("ongoing"))
    onset = ae.get("onset_date")
    end = None if ongoing else ae.get("end_date")
    ref = ae.get("rfstdtc")
    soc_code = _soc_codes()[term.soc]

    record = {
        "STUDYID": studyid,
        "DOMAIN": DOMAIN,
        "USUBJID": ae["usubjid"],
        "AESEQ": seq,
        "AESPID": "" if ae.get("ae_number") is None else str(ae["ae_number"]),
        # the verbatim when the investigator gave one ("Other, specify" always has one)
        "AETERM": verbatim or term.term,
        # CTCAE's term is a MedDRA LLT and its code an LLT code; the "Other, specify"
        # placeholder is no LLT (its code is the SOC's), so it has neither
        "AELLT": "" if other_specify else term.term,
        "AELLTCD": None if other_specify else int(term.meddra_code),
        # the dictionary term, never free text: for "Other, specify" the placeholder
        # itself, the verbatim stays in AETERM until medical coding
        "AEDECOD": term.term,
        # CTCAE v5.0 carries no PT, HLT or HLGT (docs/sdtm_ae.md)
        "AEPTCD": None,
        "AEHLT": "",
        "AEHLTCD": None,
        "AEHLGT": "",
        "AEHLGTCD": None,
        "AEBODSYS": term.soc,
        "AEBDSYCD": soc_code,
        "AESOC": term.soc,
        "AESOCCD": soc_code,
        "AETOXGR": _grade(ae.get("grade")),
        "AESER": "" if ae.get("serious") is None else _yn(ae["serious"]),
        "AEREL": "" if related is None else (RELATED_TERM if related else NOT_RELATED_TERM),
        "AEACN": _choice(ACTION_TERMS, ae.get("action"), "action"),
        "AEOUT": _choice(OUTCOME_TERMS, ae.get("outcome"), "outcome"),
        "AESTDTC": iso(onset),
        "AEENDTC": iso(end),
        # SDTM --DY: RFSTDTC is day 1, there is no day 0 (the listings' study day)
        "AESTDY": study_day(onset, ref),
        "AEENDY": study_day(end, ref),
    }
    # The criteria are mapped as recorded ("N" when not ticked, so also for a
    # non-serious event): an inconsistent record shows up rather than being hidden.
    for flag, _label, code in _FLAGS:
        record[flag] = _yn(ae.get(code))
    return finish(AE, record)


def ae_domain(aes: Iterable[dict], *, studyid: str) -> Iterator[dict]:
    """SDTM AE records for ``aes`` in the order given (the caller sorts by subject,
    onset date, AE id). AESEQ counts 1, 2, ... within each USUBJID."""
    records = (ae_record(ae, studyid=studyid, seq=0) for ae in aes)
    return sequence(records, "AESEQ")
