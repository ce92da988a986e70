"""The adverse-event, CRS and ICANS forms declared as data (PROTOCOL 6, issue 4).

Pure: the web forms, the stored values, the listings' labels and (issue 5) the PDFs
are generated from these specs, so a label or a choice list changes in one place."""

from __future__ import annotations

from ..registry.fields import FieldSpec
from .grading import CRS_COMPONENTS, ICANS_COMPONENTS

EVENT = "Event"
GRADE = "Grade"
SERIOUSNESS = "Seriousness (ICH E2A)"
CAUSALITY = "Causality and expectedness"
OUTCOME = "Action and outcome"

GRADE_CHOICES: tuple[tuple[str, str], ...] = (
    ("1", "Grade 1 — mild"),
    ("2", "Grade 2 — moderate"),
    ("3", "Grade 3 — severe"),
    ("4", "Grade 4 — life-threatening"),
    ("5", "Grade 5 — death"),
)

#: 5-point attribution scale; the last three count as related (PROTOCOL 6)
ATTRIBUTIONS: tuple[tuple[str, str], ...] = (
    ("unrelated", "Unrelated"),
    ("unlikely", "Unlikely"),
    ("possible", "Possible"),
    ("probable", "Probable"),
    ("definite", "Definite"),
)
RELATED = frozenset({"possible", "probable", "definite"})

EXPECTEDNESS: tuple[tuple[str, str], ...] = (
    ("expected", "Expected (listed in the reference safety information)"),
    ("unexpected", "Unexpected"),
)

ACTIONS: tuple[tuple[str, str], ...] = (
    ("none", "None"),
    ("delayed", "Infusion delayed"),
    ("interrupted", "Infusion interrupted"),
    ("dose_reduced", "Dose reduced"),
    ("withdrawn", "Study treatment permanently discontinued"),
    ("not_applicable", "Not applicable (no further treatment planned)"),
    ("unknown", "Unknown"),
)

OUTCOMES: tuple[tuple[str, str], ...] = (
    ("recovered", "Recovered / resolved"),
    ("recovering", "Recovering / resolving"),
    ("not_recovered", "Not recovered / not resolved"),
    ("recovered_with_sequelae", "Recovered with sequelae"),
    ("fatal", "Fatal"),
    ("unknown", "Unknown"),
)

#: ICH E2A seriousness criteria: (code, label, SDTM flag variable)
SERIOUSNESS_CRITERIA: tuple[tuple[str, str, str], ...] = (
    ("sae_death", "Results in death", "AESDTH"),
    ("sae_life_threatening", "Is life-threatening", "AESLIFE"),
    ("sae_hospitalisation", "Requires or prolongs hospitalisation", "AESHOSP"),
    ("sae_disability", "Results in persistent or significant disability/incapacity", "AESDISAB"),
    ("sae_congenital_anomaly", "Is a congenital anomaly/birth defect", "AESCONG"),
    ("sae_important_medical_event", "Other important medical event", "AESMIE"),
)
CRITERIA_CODES: tuple[str, ...] = tuple(code for code, _, _ in SERIOUSNESS_CRITERIA)

CATEGORIES: tuple[tuple[str, str], ...] = (("other", "Adverse event"), ("crs", "CRS"), ("icans", "ICANS"))

AE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "term",
        "CTCAE term",
        "text",
        EVENT,
        max=200,
        help="Type to search CTCAE v5.0 by term, system organ class or MedDRA code.",
    ),
    FieldSpec(
        "verbatim",
        "Verbatim term",
        "text",
        EVENT,
        max=200,
        help="As the investigator describes it. Required for an 'Other, specify' term.",
    ),
    FieldSpec("onset_date", "Onset date", "date", EVENT),
    FieldSpec("ongoing", "Ongoing", "bool", EVENT, help="No end date yet."),
    FieldSpec("end_date", "End date", "date", EVENT),
    FieldSpec(
        "grade",
        "Grade (CTCAE v5.0)",
        "choice",
        GRADE,
        choices=GRADE_CHOICES,
        help="Only the grades CTCAE defines for the term are offered.",
    ),
    FieldSpec(
        "grade_reason",
        "Reason the grade differs from the computed grade",
        "text",
        GRADE,
        max=500,
        help="CRS and ICANS: the grade is computed from the assessments (ASTCT 2019).",
    ),
    FieldSpec("serious", "Serious", "bool", SERIOUSNESS),
    *(FieldSpec(code, label, "bool", SERIOUSNESS) for code, label, _ in SERIOUSNESS_CRITERIA),
    FieldSpec(
        "awareness_date", "Site became aware on", "date", SERIOUSNESS, help="Starts the 24-hour SAE reporting clock."
    ),
    FieldSpec("awareness_time", "Site became aware at", "time", SERIOUSNESS, help="HH:MM, site time."),
    FieldSpec("related_nk", "Relationship to NK cells", "choice", CAUSALITY, choices=ATTRIBUTIONS),
    FieldSpec("related_ld", "Relationship to lymphodepletion", "choice", CAUSALITY, choices=ATTRIBUTIONS),
    FieldSpec("expectedness", "Expectedness", "choice", CAUSALITY, choices=EXPECTEDNESS),
    FieldSpec("action", "Action taken with study treatment", "choice", OUTCOME, choices=ACTIONS),
    FieldSpec("outcome", "Outcome", "choice", OUTCOME, choices=OUTCOMES),
    FieldSpec("death_date", "Date of death", "date", OUTCOME),
    FieldSpec(
        "dlt", "Dose-limiting toxicity", "bool", OUTCOME, help="Offered only for an onset inside the DLT window."
    ),
    FieldSpec("comments", "Comments", "text", OUTCOME, max=2000),
)

#: fields the form cannot leave empty when it is marked complete
AE_REQUIRED: tuple[str, ...] = (
    "term",
    "onset_date",
    "grade",
    "serious",
    "related_nk",
    "related_ld",
    "expectedness",
    "action",
    "outcome",
)

ADMIN = "Assessment"
CRS = "CRS components (ASTCT 2019)"
ICANS = "ICANS components (ASTCT 2019)"
ICE = "ICE score (10 points)"

HYPOTENSION: tuple[tuple[str, str], ...] = (
    ("none", "None"),
    ("no_vasopressor", "Not requiring vasopressors"),
    ("one_vasopressor", "Requiring one vasopressor (with or without vasopressin)"),
    ("multiple_vasopressors", "Requiring multiple vasopressors (excluding vasopressin)"),
)
HYPOXIA: tuple[tuple[str, str], ...] = (
    ("none", "None"),
    ("low_flow", "Low-flow nasal cannula (≤ 6 L/min) or blow-by"),
    ("high_flow", "High-flow cannula (> 6 L/min), facemask, non-rebreather or Venturi mask"),
    ("positive_pressure", "Positive pressure (CPAP, BiPAP, intubation and mechanical ventilation)"),
)
CONSCIOUSNESS: tuple[tuple[str, str], ...] = (
    ("normal", "Normal"),
    ("awakens_spontaneously", "Awakens spontaneously"),
    ("awakens_to_voice", "Awakens to voice"),
    ("awakens_to_tactile", "Awakens only to tactile stimulus"),
    ("unarousable", "Unarousable, or needs vigorous/repetitive tactile stimuli; stupor or coma"),
)
SEIZURE: tuple[tuple[str, str], ...] = (
    ("none", "None"),
    (
        "rapidly_resolving",
        "Any clinical seizure that resolves rapidly, or non-convulsive seizures on EEG that resolve with intervention",
    ),
    (
        "prolonged_or_repetitive",
        "Life-threatening prolonged seizure (> 5 min), or repetitive seizures without return to baseline in between",
    ),
)
MOTOR: tuple[tuple[str, str], ...] = (
    ("none", "None"),
    ("deep_focal", "Deep focal motor weakness (hemiparesis, paraparesis)"),
)
EDEMA: tuple[tuple[str, str], ...] = (
    ("none", "None"),
    ("focal", "Focal/local oedema on neuroimaging"),
    (
        "diffuse",
        "Diffuse cerebral oedema; decerebrate/decorticate posturing; cranial nerve VI palsy; "
        "papilloedema; Cushing's triad",
    ),
)

CRS_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("assessment_date", "Assessment date", "date", ADMIN),
    FieldSpec("assessment_time", "Assessment time", "time", ADMIN, help="HH:MM, site time."),
    FieldSpec(
        "max_temp_c",
        "Highest temperature",
        "number",
        CRS,
        unit="°C",
        min=30,
        max=45,
        help="Fever is ≥ 38.0 °C. May be empty only when fever is masked.",
    ),
    FieldSpec(
        "fever_masked",
        "Fever masked by antipyretic or anti-cytokine therapy",
        "bool",
        CRS,
        help="Tocilizumab or steroids given: fever is then no longer required.",
    ),
    FieldSpec("hypotension", "Hypotension", "choice", CRS, choices=HYPOTENSION),
    FieldSpec("hypoxia", "Hypoxia (oxygen needed)", "choice", CRS, choices=HYPOXIA),
    FieldSpec("notes", "Notes", "text", ADMIN, max=1000),
)

#: the ten items of the ICE score (ASTCT 2019), one point each; the names are
#: grading.ICE_ITEMS, so the app sums them with grading.ice_score
ICE_ITEMS: tuple[tuple[str, str], ...] = (
    ("orientation_year", "Orientation: year"),
    ("orientation_month", "Orientation: month"),
    ("orientation_city", "Orientation: city"),
    ("orientation_hospital", "Orientation: hospital"),
    ("naming_1", "Naming: first object"),
    ("naming_2", "Naming: second object"),
    ("naming_3", "Naming: third object"),
    ("follows_commands", "Follows commands (e.g. 'show me 2 fingers')"),
    ("writes_sentence", "Writes a standard sentence"),
    ("counts_backwards", "Counts backwards from 100 by ten"),
)

ICANS_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("assessment_date", "Assessment date", "date", ADMIN),
    FieldSpec("assessment_time", "Assessment time", "time", ADMIN, help="HH:MM, site time."),
    FieldSpec(
        "ice_not_assessable",
        "Patient cannot be assessed with ICE",
        "bool",
        ICE,
        help="Unarousable or otherwise unable: the ICE score is then left out and consciousness decides.",
    ),
    *(FieldSpec(name, label, "bool", ICE, help="Yes = done correctly (1 point).") for name, label in ICE_ITEMS),
    FieldSpec("consciousness", "Depressed level of consciousness", "choice", ICANS, choices=CONSCIOUSNESS),
    FieldSpec("seizure", "Seizure", "choice", ICANS, choices=SEIZURE),
    FieldSpec("motor_weakness", "Motor findings", "choice", ICANS, choices=MOTOR),
    FieldSpec("cerebral_edema", "Raised intracranial pressure / cerebral oedema", "choice", ICANS, choices=EDEMA),
    FieldSpec("notes", "Notes", "text", ADMIN, max=1000),
)

# The components that drive a CRS or ICANS grade (grading.CRS_COMPONENTS, ICANS_COMPONENTS)
# as people read them: the label of the component's own field; fever (read from the highest
# temperature) and the ICE score (the sum of its ten items) have no field of their own.
_COMPONENT_FIELDS = {spec.name: spec.label for spec in (*CRS_FIELDS, *ICANS_FIELDS)}
COMPONENT_LABELS: dict[str, str] = {
    name: _COMPONENT_FIELDS.get(name) or {"fever": "Fever", "ice_score": "ICE score"}[name]
    for name in (*CRS_COMPONENTS, *ICANS_COMPONENTS)
}


def component_label(names: str | None) -> str:
    """A stored driver ("ice_score", or "hypotension, hypoxia" on a tie) or a component
    name as its label(s); an unknown name is shown as stored."""
    if not names:
        return ""
    return ", ".join(COMPONENT_LABELS.get(name.strip(), name.strip()) for name in names.split(","))


#: the CTCAE term a CRS or ICANS event is recorded under
CRS_TERM = "Cytokine release syndrome"
ICANS_TERM = "Nervous system disorders - Other, specify"
ICANS_VERBATIM = "Immune effector cell-associated neurotoxicity syndrome (ICANS)"
