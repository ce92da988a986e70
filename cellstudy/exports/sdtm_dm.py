"""The CDISC SDTM DM (Demographics) domain (PROTOCOL 8, issue 15).

Pure: no Flask, no database. The caller passes one dict per subject of the user's sites
(sorted by subject; `safety.sdtm_source.iter_subject_facts`), the study's dose levels
and the subject's EX records (RFXSTDTC/RFXENDTC are the first and last EXSTDTC/EXENDTC,
so the two datasets agree by construction). Mapping rules: docs/sdtm_dm.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from ..enrollment.eligibility import age_on
from .sdtm_model import Domain, as_date, dy, finish, identifiers, iso, var

_V = var
DM = Domain(
    name="DM",
    label="Demographics",
    dataset_class="SPECIAL PURPOSE",
    structure="One record per subject",
    keys=("STUDYID", "USUBJID"),
    repeating=False,
    variables=(
        *identifiers("DM", None),
        _V("SUBJID", "Subject Identifier for the Study", core="Req", origin="Assigned"),
        _V("RFSTDTC", "Subject Reference Start Date/Time", "date", core="Exp"),
        _V("RFENDTC", "Subject Reference End Date/Time", "date", core="Exp"),
        _V("RFXSTDTC", "Date/Time of First Study Treatment", "date", core="Exp"),
        _V("RFXENDTC", "Date/Time of Last Study Treatment", "date", core="Exp"),
        _V("RFICDTC", "Date/Time of Informed Consent", "date", core="Exp", origin="Collected",
           source=("screening", "icf_signed_date")),
        _V("RFPENDTC", "Date/Time of End of Participation", "date", core="Exp"),
        _V("DTHDTC", "Date/Time of Death", "date", core="Exp"),
        _V("DTHFL", "Subject Death Flag", core="Exp", codelist="NY"),
        _V("SITEID", "Study Site Identifier", core="Req", origin="Assigned"),
        _V("AGE", "Age", "integer", core="Exp"),
        _V("AGEU", "Age Units", core="Exp", origin="Assigned", codelist="AGEU"),
        _V("SEX", "Sex", core="Req", origin="Collected", codelist="SEX", source=("screening", "sex")),
        _V("RACE", "Race", core="Exp", origin="Collected", comment="Not collected by the screening CRF: empty."),
        _V("ARMCD", "Planned Arm Code", core="Exp", origin="Assigned", codelist="ARMCD"),
        _V("ARM", "Description of Planned Arm", core="Exp", origin="Assigned"),
        _V("ACTARMCD", "Actual Arm Code", core="Exp", codelist="ARMCD"),
        _V("ACTARM", "Description of Actual Arm", core="Exp"),
        _V("ARMNRS", "Reason Arm and/or Actual Arm is Null", core="Exp", codelist="ARMNRS"),
        _V("ACTARMUD", "Description of Unplanned Actual Arm", core="Exp"),
        _V("COUNTRY", "Country", core="Req", origin="Assigned", codelist="COUNTRY"),
        _V("DMDTC", "Date/Time of Collection", "date", origin="Collected", source=("screening", "screening_date")),
        _V("DMDY", "Study Day of Collection", "integer"),
    ),
)  # fmt: skip

#: statuses before or instead of an arm assignment (PROTOCOL 3)
UNASSIGNED = frozenset({"screening", "screen_failed"})


def _arms(subject: Mapping, levels: Mapping[str, str]) -> dict[str, str]:
    status = subject.get("status") or ""
    planned = subject.get("dose_level") or ""
    if status in UNASSIGNED or planned not in levels:
        planned = ""
    given = sorted({level for level in subject.get("given_levels") or () if level})
    out = {"ARMCD": planned, "ARM": levels.get(planned, ""), "ACTARMCD": "", "ACTARM": "", "ARMNRS": ""}
    out["ACTARMUD"] = ""
    if status == "screen_failed":
        out["ARMNRS"] = "SCREEN FAILURE"
    elif not planned:
        out["ARMNRS"] = "NOT ASSIGNED"
    elif not given:
        out["ARMNRS"] = "ASSIGNED, NOT TREATED"
    elif len(given) == 1 and given[0] in levels:
        out["ACTARMCD"], out["ACTARM"] = given[0], levels[given[0]]
    else:
        # SDTM-IG 3.4 5.2: a treatment that matches no planned arm leaves ACTARMCD null
        out["ARMNRS"] = "UNPLANNED TREATMENT"
        out["ACTARMUD"] = "Dose levels given: " + ", ".join(given)
    return out


def _first_last(ex_records: Sequence[Mapping]) -> tuple[str, str]:
    starts = [r["EXSTDTC"] for r in ex_records if r.get("EXSTDTC")]
    ends = [r.get("EXENDTC") or r["EXSTDTC"] for r in ex_records if r.get("EXSTDTC")]
    # the date part: the reference dates are dates (times are site-local and partial)
    return (min(starts)[:10] if starts else "", max(ends)[:10] if ends else "")


def dm_record(subject: Mapping, *, studyid: str, levels: Mapping[str, str], ex_records: Sequence[Mapping] = ()) -> dict:
    """One DM record for one subject. ``levels``: dose level code -> description (the
    study definition's dose levels); ``ex_records``: the subject's EX records."""
    born, screened = as_date(subject.get("date_of_birth")), as_date(subject.get("screening_date"))
    age = age_on(born, screened) if born and screened else None
    first_x, last_x = _first_last(ex_records)
    ref = subject.get("rfstdtc")
    sex = subject.get("sex") or ""
    if sex not in ("", "F", "M"):
        raise ValueError(f"Unknown sex code {sex!r}")
    died = subject.get("status") == "died"
    record = {
        "STUDYID": studyid,
        "DOMAIN": "DM",
        "USUBJID": subject["usubjid"],
        "SUBJID": subject["subjid"],
        "RFSTDTC": iso(ref),
        "RFENDTC": iso(subject.get("rfendtc")),
        "RFXSTDTC": first_x,
        "RFXENDTC": last_x,
        "RFICDTC": iso(subject.get("icf_date")),
        "RFPENDTC": iso(subject.get("end_date")),
        "DTHDTC": iso(subject.get("death_date")) if died else "",
        "DTHFL": "Y" if died else "",
        "SITEID": subject["site"],
        "AGE": age,
        "AGEU": "YEARS" if age is not None else "",
        "SEX": sex,
        "RACE": "",
        **_arms(subject, levels),
        "COUNTRY": subject.get("country") or "",
        "DMDTC": iso(screened),
        "DMDY": dy(screened, ref),
    }
    return finish(DM, record)


def dm_domain(
    subjects: Iterable[Mapping],
    *,
    studyid: str,
    levels: Mapping[str, str],
    ex_by_subject: Mapping[str, Sequence[Mapping]] | None = None,
) -> Iterator[dict]:
    """DM records in the order given (the caller sorts by subject)."""
    ex_by_subject = ex_by_subject or {}
    for subject in subjects:
        yield dm_record(subject, studyid=studyid, levels=levels, ex_records=ex_by_subject.get(subject["usubjid"], ()))
