"""The CTCAE v5.0 dictionary and lab-grading suggestions (PROTOCOL 6).

Pure: no Flask, no database. The dictionaries ship inside the package
(``cellstudy/data/ctcae_v5.0.csv`` and ``ctcae_v5.0_lab_grading.csv``, byte-for-byte
copies of ``shared/reference``) because the installed application must carry its own
dictionaries (reference README). They are parsed once, on first use, and cached.

Public API:

- ``Term``: one CTCAE term (frozen). ``grades`` is a read-only mapping
  grade -> definition text holding only the grades that exist for the term.
- ``terms()``, ``socs()``: every term (dictionary order) and every SOC (first-seen
  order).
- ``get(term)``, ``allowed_grades(term)``, ``grade_definition(term, grade)``: the term
  is matched case-insensitively after trimming surrounding spaces; an unknown term or a
  non-string raises ``KeyError`` (PROTOCOL 6).
- ``search(query, limit=20)``: search as you type over term, SOC and MedDRA code, and
  over ``SYNONYMS`` (abbreviations and common names: "ALT", "CRS", "neutropenia").
- ``lab_terms()``, ``lab_unit(term)``, ``suggest_lab_grade(term, value, *, uln, lln,
  unit)``: a grade suggested from one lab value; the user confirms it (PROTOCOL 6).
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from types import MappingProxyType
from typing import Callable, NamedTuple

from ..enrollment.eligibility import parse_number

CTCAE_FILE = "ctcae_v5.0.csv"
LAB_GRADING_FILE = "ctcae_v5.0_lab_grading.csv"
GRADES = (1, 2, 3, 4, 5)
# reference README: terms ending in "- Other, specify" require free text.
VERBATIM_SUFFIX = "- Other, specify"

_PACKAGE = __name__.split(".")[0]  # "cellstudy": the data ships in cellstudy/data/
_WORD = re.compile(r"[a-z0-9]+")
_TOP = "\U0010ffff"  # sorts after any text: prefix ranges for bisect


@dataclass(frozen=True)
class Term:
    meddra_code: str
    soc: str
    term: str
    # Excluded from the hash: a mapping is not hashable, and (term, code) identify a Term.
    grades: Mapping[int, str] = field(hash=False)
    definition: str
    navigational_note: str
    requires_verbatim: bool


# ---------------------------------------------------------------------------
# Loading


def _read_csv(name: str) -> list[dict[str, str]]:
    text = (resources.files(_PACKAGE) / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _key(term: object) -> str:
    # PROTOCOL 6: case-insensitive after trimming surrounding spaces; a non-string
    # raises KeyError (a bytes term is not a string).
    if not isinstance(term, str):
        raise KeyError(f"CTCAE term must be a string, got {type(term).__name__}")
    return term.strip().casefold()


def _normalise_query(text: str) -> str:
    return " ".join(text.casefold().split())


class _Dictionary(NamedTuple):
    terms: tuple[Term, ...]
    socs: tuple[str, ...]
    by_key: dict[str, int]  # casefolded term -> index in terms
    # Search indexes, all over casefolded text, with indexes into ``terms``:
    term_keys: list[str]  # sorted casefolded terms ...
    term_key_idx: list[int]  # ... and the index of each
    words: list[str]  # sorted (word, idx) pairs of every word of every term ...
    word_idx: list[int]
    codes: list[str]  # sorted MedDRA codes ...
    code_idx: list[int]
    soc_keys: tuple[str, ...]  # casefolded SOC names, parallel to socs
    soc_words: tuple[frozenset[str], ...]
    soc_members: tuple[tuple[int, ...], ...]  # term indexes of each SOC, in order


@functools.cache
def _dictionary() -> _Dictionary:
    terms: list[Term] = []
    for row in _read_csv(CTCAE_FILE):
        # reference README: an empty grade cell means the grade does not exist.
        grades = {g: row[f"grade_{g}"].strip() for g in GRADES if row[f"grade_{g}"].strip()}
        if not grades:
            raise RuntimeError(f"{CTCAE_FILE}: term {row['term']!r} has no grade")
        terms.append(
            Term(
                meddra_code=row["meddra_code"].strip(),
                soc=row["soc"].strip(),
                term=row["term"].strip(),
                grades=MappingProxyType(grades),
                definition=row["definition"].strip(),
                navigational_note=row["navigational_note"].strip(),
                requires_verbatim=row["term"].strip().endswith(VERBATIM_SUFFIX),
            )
        )
    by_key: dict[str, int] = {}
    for i, t in enumerate(terms):
        k = t.term.casefold()
        if k in by_key:
            raise RuntimeError(f"{CTCAE_FILE}: term {t.term!r} is not unique")
        by_key[k] = i

    socs = tuple(dict.fromkeys(t.soc for t in terms))
    soc_pos = {s: n for n, s in enumerate(socs)}
    members: list[list[int]] = [[] for _ in socs]
    for i, t in enumerate(terms):
        members[soc_pos[t.soc]].append(i)

    term_pairs = sorted((t.term.casefold(), i) for i, t in enumerate(terms))
    word_pairs = sorted({(w, i) for i, t in enumerate(terms) for w in _WORD.findall(t.term.casefold())})
    code_pairs = sorted((t.meddra_code, i) for i, t in enumerate(terms))
    return _Dictionary(
        terms=tuple(terms),
        socs=socs,
        by_key=by_key,
        term_keys=[k for k, _ in term_pairs],
        term_key_idx=[i for _, i in term_pairs],
        words=[w for w, _ in word_pairs],
        word_idx=[i for _, i in word_pairs],
        codes=[c for c, _ in code_pairs],
        code_idx=[i for _, i in code_pairs],
        soc_keys=tuple(_normalise_query(s) for s in socs),
        soc_words=tuple(frozenset(_WORD.findall(s.casefold())) for s in socs),
        soc_members=tuple(tuple(m) for m in members),
    )


# ---------------------------------------------------------------------------
# Dictionary look-ups


def terms() -> tuple[Term, ...]:
    """Every CTCAE v5.0 term, in dictionary order (837)."""
    return _dictionary().terms


def socs() -> tuple[str, ...]:
    """Every MedDRA system organ class, in dictionary order (26)."""
    return _dictionary().socs


def get(term: str) -> Term:
    """The dictionary entry of ``term`` (PROTOCOL 6 matching); KeyError if unknown."""
    d = _dictionary()
    try:
        return d.terms[d.by_key[_key(term)]]
    except KeyError:
        raise KeyError(f"{term!r} is not a CTCAE v5.0 term") from None


def allowed_grades(term: str) -> list[int]:
    """PROTOCOL 6: the grades that have a definition for ``term``, ascending
    ("Alopecia" -> [1, 2]). Unknown term or non-string: KeyError."""
    return sorted(get(term).grades)


def grade_definition(term: str, grade: int) -> str:
    """The CTCAE definition of ``grade`` for ``term`` (shown on the AE form, PROTOCOL 6).

    Unknown term or non-string: KeyError. A grade that is not an int, or that does not
    exist for the term (e.g. "Alopecia" grade 3): ValueError naming the allowed grades.
    """
    t = get(term)
    if isinstance(grade, bool) or not isinstance(grade, int):
        raise ValueError(f"grade must be an integer 1-5, got {grade!r}")
    if grade not in t.grades:
        allowed = ", ".join(str(g) for g in sorted(t.grades))
        raise ValueError(f"{t.term} has no grade {grade} in CTCAE v5.0 (allowed grades: {allowed})")
    return t.grades[grade]


# ---------------------------------------------------------------------------
# Search as you type (PROTOCOL 6: "the term is chosen from the dictionary")

_ALT, _AST = "Alanine aminotransferase increased", "Aspartate aminotransferase increased"
_BILI, _ALP, _GGT = "Blood bilirubin increased", "Alkaline phosphatase increased", "GGT increased"
_ANC, _PLT, _WBC = "Neutrophil count decreased", "Platelet count decreased", "White blood cell decreased"
_BLOOD_OTHER = "Blood and lymphatic system disorders - Other, specify"
_IMMUNE_OTHER = "Immune system disorders - Other, specify"
_NERVOUS_OTHER = "Nervous system disorders - Other, specify"  # = fields.ICANS_TERM

#: abbreviation or common name -> the CTCAE v5.0 terms it stands for, best first.
#: Matched case-insensitively, whitespace collapsed; every target must be a term
#: (checked on first use). CTCAE v5.0 has no term for GVHD, HLH or ICANS: they are
#: recorded under their SOC's "Other, specify" term with a verbatim term.
SYNONYMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        # liver
        "ALT": (_ALT,),
        "SGPT": (_ALT,),
        "AST": (_AST,),
        "SGOT": (_AST,),
        "LFT": (_ALT, _AST, _BILI, _ALP, _GGT),
        "transaminases": (_ALT, _AST),
        "transaminitis": (_ALT, _AST),
        "ALP": (_ALP,),
        "bilirubin": (_BILI,),
        "jaundice": (_BILI,),
        # blood counts
        "ANC": (_ANC,),
        "neutropenia": (_ANC, "Febrile neutropenia"),
        "neutrophils": (_ANC,),
        "FN": ("Febrile neutropenia",),
        "neutropenic fever": ("Febrile neutropenia",),
        "thrombocytopenia": (_PLT,),
        "platelets": (_PLT,),
        "PLT": (_PLT,),
        "WBC": (_WBC,),
        "leukopenia": (_WBC,),
        "leucopenia": (_WBC,),
        "lymphopenia": ("Lymphocyte count decreased",),
        "ALC": ("Lymphocyte count decreased",),
        "Hb": ("Anemia",),
        "Hgb": ("Anemia",),
        "anaemia": ("Anemia",),
        "hemoglobin": ("Anemia", "Hemoglobin increased"),
        "haemoglobin": ("Anemia", "Hemoglobin increased"),
        "DIC": ("Disseminated intravascular coagulation",),
        "aPTT": ("Activated partial thromboplastin time prolonged",),
        "PTT": ("Activated partial thromboplastin time prolonged",),
        "TTP": ("Thrombotic thrombocytopenic purpura",),
        "HUS": ("Hemolytic uremic syndrome",),
        "HLH": (_BLOOD_OTHER,),
        "hemophagocytic lymphohistiocytosis": (_BLOOD_OTHER,),
        "MAS": (_BLOOD_OTHER,),
        "macrophage activation syndrome": (_BLOOD_OTHER,),
        "IEC-HS": (_BLOOD_OTHER,),
        # cell therapy
        "CRS": ("Cytokine release syndrome",),
        "cytokine storm": ("Cytokine release syndrome",),
        "ICANS": (_NERVOUS_OTHER,),
        "neurotoxicity": (_NERVOUS_OTHER,),
        "GVHD": (_IMMUNE_OTHER,),
        "graft versus host disease": (_IMMUNE_OTHER,),
        "graft-versus-host disease": (_IMMUNE_OTHER,),
        "IRR": ("Infusion related reaction",),
        "infusion reaction": ("Infusion related reaction",),
        "TLS": ("Tumor lysis syndrome",),
        "tumour lysis syndrome": ("Tumor lysis syndrome",),
        "CLS": ("Capillary leak syndrome",),
        "PRES": ("Reversible posterior leukoencephalopathy syndrome",),
        "cerebral edema": ("Edema cerebral",),
        "cerebral oedema": ("Edema cerebral",),
        # general, kidney, chemistry
        "fever": ("Fever",),
        "pyrexia": ("Fever",),
        "hypoxemia": ("Hypoxia",),
        "hypoxaemia": ("Hypoxia",),
        "desaturation": ("Hypoxia",),
        "low blood pressure": ("Hypotension",),
        "AKI": ("Acute kidney injury",),
        "acute renal failure": ("Acute kidney injury",),
        "renal failure": ("Acute kidney injury", "Chronic kidney disease"),
        "creatinine": ("Creatinine increased",),
        "LDH": ("Blood lactate dehydrogenase increased",),
        "CK": ("CPK increased",),
        "CPK": ("CPK increased",),
        "hyperkalaemia": ("Hyperkalemia",),
        "hypokalaemia": ("Hypokalemia",),
        "hyponatraemia": ("Hyponatremia",),
        "hypernatraemia": ("Hypernatremia",),
        "hypocalcaemia": ("Hypocalcemia",),
        "hypercalcaemia": ("Hypercalcemia",),
        "diarrhoea": ("Diarrhea",),
        # infections, heart
        "CMV": ("Cytomegalovirus infection reactivation",),
        "HSV": ("Herpes simplex reactivation",),
        "UTI": ("Urinary tract infection",),
        "URTI": ("Upper respiratory infection",),
        "URI": ("Upper respiratory infection",),
        "pneumonia": ("Lung infection",),
        "AF": ("Atrial fibrillation",),
        "AFib": ("Atrial fibrillation",),
    }
)
#: a query prefixes a synonym only from this many characters on ("a" alone would put
#: ALT, AST and AKI before every term starting with "a")
SYNONYM_MIN_PREFIX = 2


class _SynonymIndex(NamedTuple):
    keys: list[str]  # sorted normalised synonyms ...
    targets: list[tuple[int, ...]]  # ... and the term indexes of each, best first


@functools.cache
def _synonyms() -> _SynonymIndex:
    d = _dictionary()
    pairs: dict[str, tuple[int, ...]] = {}
    for name, targets in SYNONYMS.items():
        key = _normalise_query(name)
        if not key or key in pairs:
            raise RuntimeError(f"SYNONYMS: {name!r} is empty or repeated")
        missing = [t for t in targets if t.casefold() not in d.by_key]
        if missing or not targets:
            raise RuntimeError(f"SYNONYMS: {name!r} -> {missing!r}: not CTCAE v5.0 terms")
        pairs[key] = tuple(dict.fromkeys(d.by_key[t.casefold()] for t in targets))
    keys = sorted(pairs)
    return _SynonymIndex(keys, [pairs[k] for k in keys])


def _prefix_range(keys: list[str], prefix: str) -> tuple[int, int]:
    return bisect.bisect_left(keys, prefix), bisect.bisect_left(keys, prefix + _TOP)


def _take_in_order(indexes, seen: set[int], found: list[int], limit: int) -> bool:
    for i in indexes:
        if i not in seen:
            seen.add(i)
            found.append(i)
            if len(found) >= limit:
                return True
    return False


def search(query: str, limit: int = 20) -> list[Term]:
    """Terms matching ``query`` (case-insensitive, whitespace collapsed), best first.

    Ranks, each in dictionary order (unless said) and each term in its best rank only:
    0 the term itself; S the targets of ``SYNONYMS`` (in the table's order) whose
    name equals the query, then of those the query starts (from 2 characters on, in
    name order: "neutro" -> "neutropenia", "neutrophils"); 1 terms starting with the query; 2 terms in which every query
    word starts a word ("febrile neut", "count neutrophil"); 3 terms whose MedDRA code
    starts with the query (digits only); 4 terms of a SOC that starts with the query or
    whose words are each started by a query word ("blood and lymph").
    An empty query finds nothing. A non-string query or a bad limit: ValueError.
    """
    if not isinstance(query, str):
        raise ValueError(f"search query must be a string, got {type(query).__name__}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    q = _normalise_query(query)
    if not q or limit == 0:
        return []
    d = _dictionary()
    found: list[int] = []
    seen: set[int] = set()

    def take(indexes) -> bool:
        for i in sorted(indexes):
            if i not in seen:
                seen.add(i)
                found.append(i)
                if len(found) >= limit:
                    return True
        return False

    exact = d.by_key.get(q)
    if exact is not None and take((exact,)):
        return [d.terms[i] for i in found]

    syn = _synonyms()
    if len(q) >= SYNONYM_MIN_PREFIX:
        lo, hi = _prefix_range(syn.keys, q)  # a key equal to the query sorts first
    else:
        lo = bisect.bisect_left(syn.keys, q)
        hi = lo + 1 if lo < len(syn.keys) and syn.keys[lo] == q else lo
    for n in range(lo, hi):
        if _take_in_order(syn.targets[n], seen, found, limit):
            return [d.terms[i] for i in found]

    lo, hi = _prefix_range(d.term_keys, q)
    if take(d.term_key_idx[lo:hi]):
        return [d.terms[i] for i in found]

    tokens = _WORD.findall(q)
    if tokens:
        hits: set[int] | None = None
        for tok in sorted(set(tokens), key=len, reverse=True):  # longest: smallest set
            lo, hi = _prefix_range(d.words, tok)
            s = set(d.word_idx[lo:hi])
            hits = s if hits is None else hits & s
            if not hits:
                break
        if hits and take(hits):
            return [d.terms[i] for i in found]

    if q.isdigit():
        lo, hi = _prefix_range(d.codes, q)
        if take(d.code_idx[lo:hi]):
            return [d.terms[i] for i in found]

    for n, soc_key in enumerate(d.soc_keys):
        words = d.soc_words[n]
        if soc_key.startswith(q) or (tokens and all(any(w.startswith(tok) for w in words) for tok in tokens)):
            if take(d.soc_members[n]):
                break
    return [d.terms[i] for i in found]


# ---------------------------------------------------------------------------
# Lab grading (reference README, ctcae_v5.0_lab_grading.csv)

_OPERATORS: dict[str, Callable[[Fraction, Fraction], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_KINDS = ("absolute", "x_uln", "x_lln", "uln_plus")


class _LabRule(NamedTuple):
    grade: int
    op: Callable[[Fraction, Fraction], bool]
    kind: str
    unit: str  # "" for a relative rule or a dimensionless absolute one (INR, pH)
    threshold: Fraction


class _LabTerm(NamedTuple):
    term: str
    direction: str  # "low" or "high"
    rules: tuple[_LabRule, ...]
    unit: str | None  # the unit the caller must give for this term's unit-bound rules


@functools.cache
def _lab() -> dict[str, _LabTerm]:
    grouped: dict[str, tuple[str, str, list[_LabRule]]] = {}
    for row in _read_csv(LAB_GRADING_FILE):
        name, direction = row["term"].strip(), row["direction"].strip()
        kind, op = row["threshold_kind"].strip(), row["operator"].strip()
        grade = int(row["grade"])
        if direction not in ("low", "high") or kind not in _KINDS or op not in _OPERATORS:
            raise RuntimeError(f"{LAB_GRADING_FILE}: bad row {row}")
        # Monotonicity of the suggestion relies on every rule pointing the term's way.
        if op[0] != ("<" if direction == "low" else ">") or not 1 <= grade <= 4:
            raise RuntimeError(f"{LAB_GRADING_FILE}: rule against its direction: {row}")
        rule = _LabRule(grade, _OPERATORS[op], kind, row["unit"].strip(), Fraction(Decimal(row["threshold"])))
        entry = grouped.setdefault(name.casefold(), (name, direction, []))
        if entry[1] != direction:
            raise RuntimeError(f"{LAB_GRADING_FILE}: {name!r} has two directions")
        entry[2].append(rule)
    out: dict[str, _LabTerm] = {}
    for key, (name, direction, rules) in grouped.items():
        units = {r.unit for r in rules if r.unit}
        if len(units) > 1:
            raise RuntimeError(f"{LAB_GRADING_FILE}: {name!r} mixes units {sorted(units)}")
        out[key] = _LabTerm(name, direction, tuple(rules), units.pop() if units else None)
    return out


def _lab_term(term: object) -> _LabTerm:
    try:
        return _lab()[_key(term)]
    except KeyError:
        raise KeyError(f"{term!r} has no CTCAE v5.0 lab-grading rule") from None


def lab_terms() -> tuple[str, ...]:
    """The terms that can be graded from a lab value, in file order (40)."""
    return tuple(t.term for t in _lab().values())


def lab_unit(term: str) -> str | None:
    """The SI unit in which ``value`` must be given (and named with ``unit=``) for the
    absolute thresholds of ``term``; None when its rules need no unit (relative to
    ULN/LLN, or dimensionless such as INR and pH). Unknown lab term: KeyError."""
    return _lab_term(term).unit


def _exact(name: str, x: object, *, allow_none: bool = False) -> Fraction | None:
    # PROTOCOL 4.1 numbers, read by the one exact parser (int, float by its shortest repr,
    # Decimal; bool, str and non-finite values are bad input); a Fraction is exact already.
    if x is None and allow_none:
        return None
    v = x if isinstance(x, Fraction) else parse_number(x, name)
    if v < 0:
        raise ValueError(f"{name} must not be negative, got {x!r}")
    return v


def suggest_lab_grade(
    term: str,
    value: int | float | Decimal | Fraction,
    *,
    uln: int | float | Decimal | Fraction | None = None,
    lln: int | float | Decimal | Fraction | None = None,
    unit: str | None = None,
) -> int | None:
    """The CTCAE grade suggested by one lab value (the user confirms it, PROTOCOL 6).

    The highest grade any of whose rules holds; 0 when none holds (normal). ``uln`` and
    ``lln`` are the normal limits in the unit of ``value``; ``unit`` names that unit,
    and an absolute threshold (or "ULN + n") is used only when it equals the rule's unit
    (``lab_unit(term)``; None or "" for dimensionless rules such as INR).

    A rule that cannot be evaluated (its ULN/LLN not given, or the unit differs) gives
    None whenever it could raise the grade: suggest nothing rather than a lower grade
    (reference README). It does not matter once a higher grade is already certain
    (platelets 20 x 10^9/L are grade 4 without a LLN).

    Unknown lab term or non-string: KeyError. A value, ULN or LLN that is not a number
    (bool, str), not finite or negative, a zero ULN, a LLN above the ULN or a non-string
    unit: ValueError.
    """
    lab = _lab_term(term)
    v = _exact("value", value)
    upper = _exact("uln", uln, allow_none=True)
    lower = _exact("lln", lln, allow_none=True)
    if upper is not None and upper == 0:
        raise ValueError("uln must be greater than zero")  # as PROTOCOL 4.1: a zero ULN is bad input
    if upper is not None and lower is not None and lower > upper:
        raise ValueError(f"lln ({lln!r}) must not exceed uln ({uln!r})")
    if unit is not None and not isinstance(unit, str):
        raise ValueError(f"unit must be a string, got {unit!r}")
    given_unit = (unit or "").strip()  # exact match: "G/L" is not "g/L"

    best = 0
    unknown = 0  # highest grade of a rule that could not be evaluated
    for rule in lab.rules:
        if rule.kind == "x_uln":
            limit = None if upper is None else rule.threshold * upper
        elif rule.kind == "x_lln":
            limit = None if lower is None else rule.threshold * lower
        elif given_unit != rule.unit:
            limit = None
        elif rule.kind == "uln_plus":
            limit = None if upper is None else upper + rule.threshold
        else:
            limit = rule.threshold
        if limit is None:
            unknown = max(unknown, rule.grade)
        elif rule.op(v, limit):
            best = max(best, rule.grade)
    return None if unknown > best else best
