"""The CDISC SDTM DS (Disposition) domain (PROTOCOL 3, 8; issue 15): informed consent
(a protocol milestone) and the subject's disposition event (screen failure, completed,
withdrawn, death).

Pure: no Flask, no database. The caller passes one dict per subject (sorted by
subject; `safety.sdtm_source.iter_subject_facts`). Mapping rules: docs/sdtm_ds.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from .sdtm_model import Domain, dy, finish, identifiers, iso, sequence, var

_V = var
DS = Domain(
    name="DS",
    label="Disposition",
    dataset_class="EVENTS",
    structure="One record per disposition status or protocol milestone per subject",
    keys=("STUDYID", "USUBJID", "DSDECOD", "DSSTDTC"),
    variables=(
        *identifiers("DS", "DSSEQ"),
        _V("DSTERM", "Reported Term for the Disposition Event", core="Req"),
        _V("DSDECOD", "Standardized Disposition Term", core="Req", codelist="DSDECOD"),
        _V("DSCAT", "Category for Disposition Event", codelist="DSCAT"),
        _V("DSSTDTC", "Start Date/Time of Disposition Event", "date", core="Exp"),
        _V("DSSTDY", "Study Day of Start of Disposition Event", "integer"),
    ),
)

MILESTONE = "PROTOCOL MILESTONE"
DISPOSITION = "DISPOSITION EVENT"
#: subject status (PROTOCOL 3) -> NCOMPLT (C66727) term; the statuses of a subject still
#: in the study have no disposition event yet
STATUS_TERMS: dict[str, str] = {
    "screen_failed": "SCREEN FAILURE",
    "completed": "COMPLETED",
    "died": "DEATH",
    # the EDC records no reason for a withdrawal: OTHER, the reason given in DSTERM
    "withdrawn": "OTHER",
}
ON_STUDY = frozenset({"screening", "enrolled", "on_treatment", "follow_up"})


def _event(subject: Mapping, *, studyid: str, term: str, decod: str, cat: str, day: object) -> dict:
    return finish(
        DS,
        {
            "STUDYID": studyid,
            "DOMAIN": "DS",
            "USUBJID": subject["usubjid"],
            "DSSEQ": 0,
            "DSTERM": term,
            "DSDECOD": decod,
            "DSCAT": cat,
            "DSSTDTC": iso(day),
            "DSSTDY": dy(day, subject.get("rfstdtc")),
        },
    )


def ds_records(subject: Mapping, *, studyid: str) -> list[dict]:
    """The DS records of one subject, in date order: informed consent when its date is
    recorded, then the disposition event of a subject who left the study."""
    out = []
    if subject.get("icf_date"):
        consent = "INFORMED CONSENT OBTAINED"
        out.append(
            _event(subject, studyid=studyid, term=consent, decod=consent, cat=MILESTONE, day=subject["icf_date"])
        )
    status = subject.get("status") or ""
    if status in ON_STUDY:
        return out
    try:
        decod = STATUS_TERMS[status]
    except KeyError:
        raise ValueError(f"Unknown subject status {status!r}") from None
    reason = (subject.get("status_reason") or "").strip()
    day = subject.get("status_date")
    if status == "screen_failed":
        failed = ", ".join(subject.get("failed_criteria") or ())
        term = f"SCREEN FAILURE: {failed}" if failed else "SCREEN FAILURE"
        day = subject.get("screen_fail_date") or day
    elif status == "died":
        term = "DEATH"
        day = subject.get("death_date") or day
    elif status == "withdrawn":
        term = f"WITHDRAWN: {reason}" if reason else "WITHDRAWN"
    else:
        term = decod
    out.append(_event(subject, studyid=studyid, term=term, decod=decod, cat=DISPOSITION, day=day))
    return sorted(out, key=lambda r: (r["DSSTDTC"] or "9999", r["DSCAT"] != MILESTONE))


def ds_domain(subjects: Iterable[Mapping], *, studyid: str) -> Iterator[dict]:
    """DS records of ``subjects`` (sorted by subject), DSSEQ 1, 2, ... per USUBJID."""
    return sequence((rec for subject in subjects for rec in ds_records(subject, studyid=studyid)), "DSSEQ")
