"""The study definition in force: the defaults of study.py plus the admin's amendments
(issue 3: "a change of a setting is an admin action with an audit record").

Scalar settings of `eligibility`, `regimen` and `toxicity_hold` can be amended from the
admin page; tables (washouts, dose levels, visits, infusion days) change with the code
of a new study definition, reviewed like any code change."""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from decimal import Decimal, InvalidOperation

from flask import g, has_app_context
from sqlalchemy import select

from .extensions import db
from .records import audit
from .study import STUDY, Study

SECTIONS = ("eligibility", "regimen", "toxicity_hold", "edit_checks")  # edit_checks: issue 6 (monitoring)


def editable_settings(study: Study = STUDY) -> list[tuple[str, object, type]]:
    """(dotted key, current value, type) of every scalar setting."""
    out = []
    for section in SECTIONS:
        obj = getattr(study, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            kind = int if f.type in ("int", "int | None") else Decimal if f.type == "Decimal" else None
            # Physical constants of the Cockcroft-Gault formula are not study settings.
            if kind is not None and not f.name.startswith(("cg_", "creatinine_umol")):
                out.append((f"{section}.{f.name}", value, kind))
    return out


def apply(overrides: dict, base: Study = STUDY, version: str | None = None) -> Study:
    """A Study with the overrides applied; ValueError naming the setting on bad values."""
    changes: dict[str, dict] = {}
    types = {key: kind for key, _value, kind in editable_settings(base)}
    for key, raw in overrides.items():
        if key not in types:
            raise ValueError(f"{key}: not an editable setting")
        section, name = key.split(".")
        changes.setdefault(section, {})[name] = parse(key, raw, types[key])
    study = dataclasses.replace(base, **{section: dataclasses.replace(getattr(base, section), **values)
                                         for section, values in changes.items()})
    return dataclasses.replace(study, version=version) if version else study


def parse(key: str, raw, kind):
    if raw is None or raw == "":
        if key == "regimen.sentinel_stagger_days":
            return None
        raise ValueError(f"{key}: a value is required")
    try:
        value = kind(str(raw).strip())
    except (ValueError, InvalidOperation):
        raise ValueError(f"{key}: {raw!r} is not a valid {'whole number' if kind is int else 'number'}") from None
    if value < 0:
        raise ValueError(f"{key}: must not be negative")
    return value


#: database URL -> (read at, study): the amendment in force, re-read at most every few
#: seconds per process (an amendment is rare; every page needs the definition).
_IN_FORCE: dict[str, tuple[float, Study]] = {}
REFRESH_SECONDS = 5.0


def current_study() -> Study:
    """The definition in force now (cached for the request, and per process for a few
    seconds; the process that records an amendment sees it at once)."""
    if not has_app_context():
        return STUDY
    if "cellstudy_study" not in g:
        key = str(db.engine.url)
        cached = _IN_FORCE.get(key)
        if cached is None or time.monotonic() - cached[0] > REFRESH_SECONDS:
            cached = (time.monotonic(), _read_in_force())
            _IN_FORCE[key] = cached
        g.cellstudy_study = cached[1]
    return g.cellstudy_study


def study_in_force(session=None) -> Study:
    """The definition in force, read in the caller's transaction (no per-process cache):
    what a rule that stores its judgement must use (issue 11)."""
    return _read_in_force(session)


def _read_in_force(session=None) -> Study:
    from .infusions.models import StudyAmendment

    session = session if session is not None else db.session
    latest = session.execute(select(StudyAmendment.id, StudyAmendment.version, StudyAmendment.overrides)
                                .order_by(StudyAmendment.id.desc()).limit(1)).first()
    return _amended(latest.id, latest.version, json.dumps(latest.overrides, sort_keys=True)) if latest else STUDY


@functools.lru_cache(maxsize=64)
def _amended(amendment_id: int, version: str, overrides_json: str) -> Study:
    """Amendments never change once written: each is built once per process."""
    return apply(json.loads(overrides_json), version=version)


def amend(values: dict, *, version: str, reason: str, user) -> Study:
    """Record an amendment of the settings; every changed setting is audited."""
    from .infusions.models import StudyAmendment

    before = current_study()
    current = {key: value for key, value, _ in editable_settings(before)}
    defaults = {key: value for key, value, _ in editable_settings(STUDY)}
    proposed = apply(values, base=before, version=version)  # validates
    after = {key: value for key, value, _ in editable_settings(proposed)}
    changed = {k: (current[k], after[k]) for k in after if after[k] != current[k]}
    if not changed:
        raise ValueError("No setting was changed.")
    overrides = {k: (str(v) if v is not None else None) for k, v in after.items() if v != defaults[k]}
    amendment = StudyAmendment(version=version, overrides=overrides, reason=reason, created_by_id=user.id)
    db.session.add(amendment)
    db.session.flush()
    for key, (old, new) in changed.items():
        audit.append("setting", user=user, form="study_amendment", form_id=amendment.id, field=key,
                     old=old, new=new, reason=f"{version}: {reason}")
    db.session.commit()
    g.pop("cellstudy_study", None)
    _IN_FORCE.pop(str(db.engine.url), None)
    return proposed
