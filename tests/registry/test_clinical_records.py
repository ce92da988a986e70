"""What the locks protect is declared by the ClinicalRecord mixin, not by module names
(issue 12): every mapped class that belongs to a subject is a ClinicalRecord, except the
derived rows listed here with the reason."""

from __future__ import annotations

import cellstudy.models  # noqa: F401  (every model mapped)
from cellstudy import registry
from cellstudy.extensions import db
from cellstudy.records.formrecord import ClinicalRecord

#: rows of a subject that a lock does not freeze, and why
NOT_CLINICAL = {
    "InfusionJudgement": "derived from the clinical records (issue 11); re-judged after any change, also under a lock",
    "AuditRecord": "the audit trail itself: a refused write leaves its audit record out with it",
    "Query": "a monitor may query locked data (queries are about the data, not the data)",
    "Signature": "signing a locked casebook is how a lock's review ends",
    "DataLock": "the lock itself",
    "SdvMark": "verification of locked data is allowed",
    "SdvStatus": "derived from the forms and their SDV marks (issue 14); re-judged after any change, also under a lock",
}


def test_every_subject_owned_model_is_a_clinical_record_or_says_why_not():
    for mapper in db.Model.registry.mappers:
        cls = mapper.class_
        columns = cls.__table__.columns if hasattr(cls, "__table__") else ()
        owned = "subject_id" in columns or cls.__name__ == "Subject"
        if owned:
            assert issubclass(cls, ClinicalRecord) or cls.__name__ in NOT_CLINICAL, cls.__name__
        if cls.__name__ in NOT_CLINICAL:
            assert not issubclass(cls, ClinicalRecord), cls.__name__


def test_every_case_report_form_is_a_clinical_record():
    for form in registry.form_types().values():
        assert issubclass(form.model, ClinicalRecord), form.name
