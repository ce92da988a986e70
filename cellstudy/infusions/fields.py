"""The CRFs of treatment and follow-up, declared as data (issue 3): lymphodepletion,
infusion, visit and DLT assessment. Pure: the forms, the stored values and (issue 5)
the PDFs are generated from these specs."""

from __future__ import annotations

from collections.abc import Iterable

from ..registry.fields import FieldSpec

ADMIN = "Administration"
PRODUCT = "Product and dose"
VITALS = "Vital signs"
REACTION = "Infusion reaction"
LABS = "Laboratory"
DISEASE = "Disease assessment"
DLT = "Dose-limiting toxicity"


def _vitals(prefix: str, when: str) -> tuple[FieldSpec, ...]:
    section = f"{VITALS} {when}"
    return (
        FieldSpec(f"{prefix}_temp_c", "Temperature", "number", section, unit="°C", min=30, max=45),
        FieldSpec(f"{prefix}_hr", "Heart rate", "int", section, unit="/min", min=20, max=250),
        FieldSpec(f"{prefix}_sbp", "Systolic blood pressure", "int", section, unit="mmHg", min=40, max=260),
        FieldSpec(f"{prefix}_dbp", "Diastolic blood pressure", "int", section, unit="mmHg", min=20, max=160),
        FieldSpec(f"{prefix}_spo2", "SpO2", "number", section, unit="%", min=50, max=100),
    )


LYMPHODEPLETION_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("administration_date", "Date given", "date", ADMIN),
    FieldSpec("height_cm", "Height", "number", ADMIN, unit="cm", min=50, max=250, positive=True),
    FieldSpec("weight_kg", "Weight", "number", ADMIN, unit="kg", min=2, max=400, positive=True),
    FieldSpec(
        "fludarabine_mg_m2",
        "Fludarabine dose",
        "number",
        ADMIN,
        unit="mg/m²",
        min=0,
        max=100,
        help="Protocol: 30 mg/m²/day.",
    ),
    FieldSpec("fludarabine_mg", "Fludarabine given", "number", ADMIN, unit="mg", min=0, max=500),
    FieldSpec(
        "cyclophosphamide_mg_m2",
        "Cyclophosphamide dose",
        "number",
        ADMIN,
        unit="mg/m²",
        min=0,
        max=2000,
        help="Protocol: 300 mg/m²/day.",
    ),
    FieldSpec("cyclophosphamide_mg", "Cyclophosphamide given", "number", ADMIN, unit="mg", min=0, max=10000),
    FieldSpec("start_time", "Start time", "time", ADMIN, help="HH:MM, site time."),
    FieldSpec("stop_time", "Stop time", "time", ADMIN, help="HH:MM, site time."),
)

INFUSION_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("administration_date", "Date of infusion", "date", ADMIN),
    FieldSpec("start_time", "Start time", "time", ADMIN, help="HH:MM, site time."),
    FieldSpec("stop_time", "Stop time", "time", ADMIN, help="HH:MM, site time."),
    FieldSpec(
        "premedication",
        "Premedication",
        "text",
        ADMIN,
        max=500,
        help="Drugs, doses and times (e.g. paracetamol 500 mg PO, 30 min before).",
    ),
    FieldSpec("product_lot", "Product lot number", "text", PRODUCT, max=60),
    FieldSpec("viability_percent", "Viability", "number", PRODUCT, unit="%", min=0, max=100),
    FieldSpec(
        "weight_kg",
        "Weight on the day",
        "number",
        PRODUCT,
        unit="kg",
        min=2,
        max=400,
        positive=True,
        help="For the dose in cells/kg.",
    ),
    FieldSpec(
        "planned_cells",
        "Planned cell dose",
        "int",
        PRODUCT,
        unit="cells",
        min=1,
        help="Filled from the subject's dose level.",
    ),
    FieldSpec(
        "actual_cells",
        "Cells given",
        "int",
        PRODUCT,
        unit="cells",
        min=1,
        help="A dose more than 10% away from the dose level needs a deviation reason.",
    ),
    FieldSpec("dose_deviation_reason", "Dose deviation reason", "text", PRODUCT, max=500),
    *_vitals("pre", "before"),
    *_vitals("during", "during"),
    *_vitals("post", "after"),
    FieldSpec(
        "infusion_reaction", "Infusion reaction", "bool", REACTION, help="If yes, record it as an adverse event."
    ),
    FieldSpec("reaction_description", "Describe the reaction", "text", REACTION, max=1000),
)

RESPONSES = (
    ("CR", "CR — complete remission"),
    ("CRh", "CRh — CR with partial haematologic recovery"),
    ("CRi", "CRi — CR with incomplete haematologic recovery"),
    ("MLFS", "MLFS — morphologic leukemia-free state"),
    ("PR", "PR — partial remission"),
    ("SD", "SD — stable disease"),
    ("PD", "PD — progressive disease"),
    ("relapse", "Relapse"),
    ("not_assessed", "Not assessed at this visit"),
)

VISIT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("visit_date", "Visit date", "date", ADMIN),
    FieldSpec("temp_c", "Temperature", "number", VITALS, unit="°C", min=30, max=45),
    FieldSpec("hr", "Heart rate", "int", VITALS, unit="/min", min=20, max=250),
    FieldSpec("sbp", "Systolic blood pressure", "int", VITALS, unit="mmHg", min=40, max=260),
    FieldSpec("dbp", "Diastolic blood pressure", "int", VITALS, unit="mmHg", min=20, max=160),
    FieldSpec("spo2", "SpO2", "number", VITALS, unit="%", min=50, max=100),
    FieldSpec("ecog", "ECOG performance status", "int", VITALS, min=0, max=5),
    FieldSpec("wbc", "White blood cells", "number", LABS, unit="10^9/L", min=0),
    FieldSpec("anc", "Neutrophils (ANC)", "number", LABS, unit="10^9/L", min=0),
    FieldSpec("hemoglobin", "Haemoglobin", "number", LABS, unit="g/L", min=0),
    FieldSpec("platelets", "Platelets", "number", LABS, unit="10^9/L", min=0),
    FieldSpec("alt", "ALT", "number", LABS, unit="U/L", min=0),
    FieldSpec("ast", "AST", "number", LABS, unit="U/L", min=0),
    FieldSpec("total_bilirubin", "Total bilirubin", "number", LABS, unit="µmol/L", min=0),
    FieldSpec("creatinine", "Creatinine", "number", LABS, unit="µmol/L", min=0),
    FieldSpec("marrow_blasts_percent", "Bone marrow blasts", "number", DISEASE, unit="%", min=0, max=100),
    FieldSpec("response", "Response (ELN 2022)", "choice", DISEASE, choices=RESPONSES),
    FieldSpec("assessment_notes", "Notes", "text", DISEASE, max=1000),
)

DLT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("evaluable", "Evaluable for DLT", "bool", DLT, help="Completed the DLT window or had a DLT."),
    FieldSpec("evaluable_reason", "Reason if not evaluable", "text", DLT, max=500),
    FieldSpec("dlt", "Dose-limiting toxicity", "bool", DLT),
    FieldSpec("dlt_description", "Describe the DLT", "text", DLT, max=1000),
)


def by_name(specs: Iterable[FieldSpec]) -> dict[str, FieldSpec]:
    return {spec.name: spec for spec in specs}
