"""The study definition: every protocol number lives here, nowhere else.

Pure data (no Flask, no database). ``STUDY`` is the default definition, the original
protocol; an amendment is a new ``Study`` built with ``dataclasses.replace``::

    from dataclasses import replace
    AMENDMENT_1 = replace(
        STUDY,
        version="2.0 (amendment 1)",
        eligibility=replace(STUDY.eligibility, qtc_max_ms=470),
    )
    check(case, study=AMENDMENT_1)

Limits are ``int`` or ``Decimal`` (never ``float``) so that rule code can compare them
exactly (PROTOCOL 4.1). Sections: ``eligibility`` (4.3), ``washouts`` (4.4), ``regimen``
(5.1-5.3: lymphodepletion, infusions, dose levels, vaccination window, DLT window),
``visits`` (the follow-up schedule) and ``toxicity_hold`` (5.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from . import registry


@dataclass(frozen=True)
class EligibilityLimits:
    """The numbers of the eligibility criteria (PROTOCOL 4.3)."""

    # age: completed years at screening_date
    min_age_years: int = 18
    # ecog: ECOG <= 1
    ecog_max: int = 1
    # renal: Cr <= 2 x ULN, or Cockcroft-Gault CrCl >= 50 mL/min where
    # CrCl = (140 - age) x weight_kg x (0.85 if F) / (72 x Cr in mg/dL)
    creatinine_uln_ratio: Decimal = Decimal("2.0")
    crcl_min_ml_min: Decimal = Decimal("50")
    cg_age_constant: int = 140
    cg_denominator: int = 72
    cg_female_factor: Decimal = Decimal("0.85")
    # PROTOCOL 4.2: 1 mg/dL creatinine = 88.4 umol/L
    creatinine_umol_per_mg_dl: Decimal = Decimal("88.4")
    # bilirubin: TBIL <= 2 x ULN
    bilirubin_uln_ratio: Decimal = Decimal("2.0")
    # transaminases: ALT and AST <= 3 x ULN
    transaminase_uln_ratio: Decimal = Decimal("3.0")
    # coagulation: INR and aPTT <= 1.5 x ULN
    coagulation_uln_ratio: Decimal = Decimal("1.5")
    # dsa: DSA negative = MFI <= 2000
    dsa_mfi_max: Decimal = Decimal("2000")
    # cardiovascular: fails if QTc > 480 ms, LVEF < 50 %, NYHA class >= III
    # (the listing's "class l or above" is garbled; PROTOCOL 4.3 keeps it a setting)
    qtc_max_ms: Decimal = Decimal("480")
    lvef_min_percent: Decimal = Decimal("50")
    nyha_fail_at: int = 3
    # pulmonary: fails if SpO2 <= 90 %
    spo2_fail_at_or_below: Decimal = Decimal("90")
    # prior_toxicity: recovered to <= grade 2 (CTCAE 5.0)
    max_prior_toxicity_grade: int = 2
    # other_malignancy: complete remission more than 5 years before screening
    other_malignancy_cr_years: int = 5


@dataclass(frozen=True)
class Washout:
    """One row of the washout table (PROTOCOL 4.4).

    ``criterion`` is the eligibility code the category feeds (and the lockout code of
    PROTOCOL 5.2); ``None`` means the exposure is recorded but never blocks. The window
    is ``days`` or calendar ``months``; with ``half_lives`` it is
    ``min(days, half_lives x half_life_days)`` (``days`` when the half-life is unknown).
    """

    category: str
    criterion: str | None
    days: int | None = None
    months: int | None = None
    half_lives: int | None = None
    ignore_physiological_replacement: bool = False

    def __post_init__(self) -> None:
        if self.criterion is None:
            if self.days is not None or self.months is not None:
                raise ValueError(f"washout {self.category}: a window needs a criterion")
            return
        if (self.days is None) == (self.months is None):
            raise ValueError(f"washout {self.category}: give days or months, not both")
        if self.half_lives is not None and self.days is None:
            raise ValueError(f"washout {self.category}: half_lives needs days")
        for name in ("days", "months", "half_lives"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value <= 0):
                raise ValueError(f"washout {self.category}: {name} must be a positive int")

    @property
    def blocks(self) -> bool:
        return self.criterion is not None


# PROTOCOL 4.4, in the order of its table.
DEFAULT_WASHOUTS: tuple[Washout, ...] = (
    Washout("systemic_steroid", "washout_steroid", days=3, ignore_physiological_replacement=True),
    Washout("systemic_antitumor", "washout_antitumor", days=14, half_lives=5),
    Washout("radiotherapy", "washout_radiotherapy", days=28),
    Washout("donor_lymphocyte_infusion", "washout_dli", days=42),
    Washout("intrathecal", "washout_intrathecal", days=7),
    Washout("gene_modified_cell_therapy", "washout_cell_therapy", months=6),
    Washout("vaccine", "vaccine", days=28),
    Washout("major_surgery", "major_surgery", days=28),
    Washout("diagnostic_biopsy", None),
)


@dataclass(frozen=True)
class DoseLevel:
    """A dose level of the phase I escalation (PROTOCOL 5.1): cells per infusion."""

    name: str
    cells: int

    @property
    def label(self) -> str:
        mantissa, exponent = f"{self.cells:.0e}".split("e")
        return f"{self.name} ({mantissa} x 10^{int(exponent)} cells)"


@dataclass(frozen=True)
class LymphodepletionDrug:
    name: str
    dose_mg_per_m2: Decimal  # per day


@dataclass(frozen=True)
class Visit:
    """A follow-up visit declared as data (ARCHITECTURE: windows are data): a target
    `day` after the first infusion (day 0) or a number of calendar `months`, with a
    window of `before`/`after` days around the target."""

    code: str
    label: str
    day: int | None = None
    months: int | None = None
    before: int = 0
    after: int = 0

    def __post_init__(self) -> None:
        if (self.day is None) == (self.months is None):
            raise ValueError(f"visit {self.code}: give day or months, not both")
        if self.before < 0 or self.after < 0:
            raise ValueError(f"visit {self.code}: window days must not be negative")


@dataclass(frozen=True)
class Regimen:
    """PROTOCOL 5.1 (defaults) and the numbers of the lockouts of 5.2 and 5.3."""

    lymphodepletion_days: tuple[int, ...] = (-5, -4, -3)
    lymphodepletion_drugs: tuple[LymphodepletionDrug, ...] = (
        LymphodepletionDrug("fludarabine", Decimal("30")),
        LymphodepletionDrug("cyclophosphamide", Decimal("300")),
    )
    # NK infusions: target days after the first infusion, +/- window (targets, not lockouts)
    infusion_days: tuple[int, ...] = (0, 7, 14)
    infusion_window_days: int = 1
    # lockout min_interval: the next infusion at least 6 days after the latest one
    min_interval_days: int = 6
    dose_levels: tuple[DoseLevel, ...] = (
        DoseLevel("DL1", 100_000_000),
        DoseLevel("DL2", 1_000_000_000),
        DoseLevel("DL3", 3_000_000_000),
    )
    # a given dose more than 10 % away from the dose level needs a deviation reason
    dose_tolerance_percent: Decimal = Decimal("10")
    # vaccination window: from (first infusion - 27 days), i.e. "within 4 weeks before",
    # to (last infusion + 84 days), 12 weeks after; both ends inclusive (PROTOCOL 5.2)
    vaccine_days_before_first: int = 28
    vaccine_days_after_last: int = 84
    # dose-limiting toxicity window after the first infusion (PROTOCOL 6)
    dlt_window_days: int = 28
    escalation_design: str = "3+3"
    # sentinel stagger (PROTOCOL 5.3): days between the first and second subject of a level
    sentinel_stagger_days: int | None = None

    @property
    def infusion_count(self) -> int:
        return len(self.infusion_days)

    def dose_level(self, name: str) -> DoseLevel:
        for level in self.dose_levels:
            if level.name == name:
                return level
        raise KeyError(name)


@dataclass(frozen=True)
class ToxicityHold:
    """Lockout toxicity_hold (PROTOCOL 5.2): an open AE at or above these grades."""

    crs_min_grade: int = 2
    icans_min_grade: int = 1
    related_min_grade: int = 3


@dataclass(frozen=True)
class EditChecks:
    """Implausible-but-valid values (issue 6): a save that passes validation but meets one
    of these opens a system query for the monitor; correcting the value closes it."""

    weight_min_kg: Decimal = Decimal("30")
    weight_max_kg: Decimal = Decimal("200")
    alt_uln_multiple: Decimal = Decimal("20")
    qtc_max_ms: Decimal = Decimal("600")
    visit_window_check: int = 1  # 1: a visit dated outside its window opens a query; 0: off


@dataclass(frozen=True)
class SafetyReporting:
    """The reporting timelines of PROTOCOL 6 that the clocks count. Not an amendable
    setting (not in settings.SECTIONS, so no SETTING_LABELS entry): the protocol does not
    call it a study setting, as it does the DLT window; a new definition changes it."""

    # PROTOCOL 6: an SAE is reported within 24 hours of site awareness
    sae_report_hours: int = 24
    # ICH E2A expedited SUSAR reports: 7 calendar days when fatal or life-threatening, else 15
    susar_fatal_days: int = 7
    susar_days: int = 15

    def __post_init__(self) -> None:
        for name, what in (
            ("sae_report_hours", "SAE report hours"),
            ("susar_fatal_days", "fatal or life-threatening SUSAR report days"),
            ("susar_days", "SUSAR report days"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"study: {what} must be a positive whole number, got {value!r}")


# What people call each amendable setting, with its unit (issue 11: "raw setting names become
# labels with units"). Declared once, here next to the numbers; the settings screen, the
# amendment pages and the audit viewer read it (settings.setting_label). A setting of the
# sections above without a label here is a test failure (tests/auth/test_amendments_app.py).
SETTING_SECTIONS: dict[str, str] = {
    "eligibility": "Eligibility (PROTOCOL 4.3)",
    "regimen": "Regimen and lockouts (PROTOCOL 5.1-5.3)",
    "toxicity_hold": "Toxicity hold (PROTOCOL 5.2)",
    "edit_checks": "Edit checks (implausible values open a query)",
}
#: "section.name" -> (label, unit or None)
SETTING_LABELS: dict[str, tuple[str, str | None]] = {
    "eligibility.min_age_years": ("Minimum age", "years"),
    "eligibility.ecog_max": ("Highest ECOG performance status", "ECOG 0-5"),
    "eligibility.creatinine_uln_ratio": ("Creatinine limit", "x ULN"),
    "eligibility.crcl_min_ml_min": ("Lowest creatinine clearance (Cockcroft-Gault)", "mL/min"),
    "eligibility.bilirubin_uln_ratio": ("Total bilirubin limit", "x ULN"),
    "eligibility.transaminase_uln_ratio": ("ALT and AST limit", "x ULN"),
    "eligibility.coagulation_uln_ratio": ("INR and aPTT limit", "x ULN"),
    "eligibility.dsa_mfi_max": ("Highest donor-specific antibody", "MFI"),
    "eligibility.qtc_max_ms": ("Longest QTc", "ms"),
    "eligibility.lvef_min_percent": ("Lowest LVEF", "%"),
    "eligibility.nyha_fail_at": ("NYHA class that excludes (this class and above)", None),
    "eligibility.spo2_fail_at_or_below": ("SpO2 that excludes (this value and below)", "%"),
    "eligibility.max_prior_toxicity_grade": ("Highest residual toxicity of prior therapy", "CTCAE grade"),
    "eligibility.other_malignancy_cr_years": ("Other malignancy: complete remission for more than", "years"),
    "regimen.infusion_window_days": ("Infusion target window", "± days"),
    "regimen.min_interval_days": ("Minimum interval between infusions", "days"),
    "regimen.dose_tolerance_percent": ("Dose difference allowed without a deviation", "%"),
    "regimen.vaccine_days_before_first": ("No vaccination before the first infusion", "days"),
    "regimen.vaccine_days_after_last": ("No vaccination after the last infusion", "days"),
    "regimen.dlt_window_days": ("DLT window after the first infusion", "days"),
    "regimen.sentinel_stagger_days": ("Sentinel stagger", "days"),
    "toxicity_hold.crs_min_grade": ("Hold for CRS from grade", "ASTCT grade"),
    "toxicity_hold.icans_min_grade": ("Hold for ICANS from grade", "ASTCT grade"),
    "toxicity_hold.related_min_grade": ("Hold for a related AE from grade", "CTCAE grade"),
    "edit_checks.weight_min_kg": ("Weight below", "kg"),
    "edit_checks.weight_max_kg": ("Weight above", "kg"),
    "edit_checks.alt_uln_multiple": ("ALT above", "x ULN"),
    "edit_checks.qtc_max_ms": ("QTc above", "ms"),
    "edit_checks.visit_window_check": ("Visit outside its window", "1 = on, 0 = off"),
}


def setting_label(key: str) -> str:
    """ "Sentinel stagger (days)": the label and unit of a setting; an unknown key as it is."""
    label, unit = SETTING_LABELS.get(key, (key, None))
    return f"{label} ({unit})" if unit else label


# PROTOCOL 5.1: days 1, 3, 7, 14, 21, 28 after the first infusion, then months 2, 3, 6.
DEFAULT_VISITS: tuple[Visit, ...] = (
    Visit("D1", "Day 1", day=1),
    Visit("D3", "Day 3", day=3, before=1, after=1),
    Visit("D7", "Day 7", day=7, before=1, after=1),
    Visit("D14", "Day 14", day=14, before=1, after=1),
    Visit("D21", "Day 21", day=21, before=2, after=2),
    Visit("D28", "Day 28", day=28, before=3, after=3),
    Visit("M2", "Month 2", months=2, before=7, after=7),
    Visit("M3", "Month 3", months=3, before=7, after=7),
    Visit("M6", "Month 6", months=6, before=14, after=14),
)


@dataclass(frozen=True)
class Study:
    protocol_id: str
    version: str
    eligibility: EligibilityLimits = field(default_factory=EligibilityLimits)
    washouts: tuple[Washout, ...] = DEFAULT_WASHOUTS
    regimen: Regimen = field(default_factory=Regimen)
    visits: tuple[Visit, ...] = DEFAULT_VISITS
    toxicity_hold: ToxicityHold = field(default_factory=ToxicityHold)
    edit_checks: EditChecks = field(default_factory=EditChecks)
    safety_reporting: SafetyReporting = field(default_factory=SafetyReporting)

    def __post_init__(self) -> None:
        categories = [w.category for w in self.washouts]
        if len(set(categories)) != len(categories):
            raise ValueError("study: a washout category is listed twice")
        codes = [v.code for v in self.visits]
        if len(set(codes)) != len(codes):
            raise ValueError("study: a visit code is listed twice")
        names = [d.name for d in self.regimen.dose_levels]
        if not names or len(set(names)) != len(names):
            raise ValueError("study: dose levels must be named uniquely")
        days = self.regimen.infusion_days
        if not days or days[0] != 0 or list(days) != sorted(set(days)):
            raise ValueError("study: infusion days must start at day 0 and increase")

    @property
    def sdv_plan(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """Source data verification plan per form type (issue 6): (form, "all" | "key" |
        "none", the key fields), as each form declares it (cellstudy.registry)."""
        return registry.sdv_plans()

    @property
    def signature_forms(self) -> tuple[str, ...]:
        """Form types the investigator must sign once complete (besides any form whose
        signature a later change invalidated, which always needs signing again)."""
        return registry.signature_forms()

    def washout(self, category: str) -> Washout:
        """The washout row of an exposure category; KeyError if unknown."""
        for row in self.washouts:
            if row.category == category:
                return row
        raise KeyError(category)

    @property
    def exposure_categories(self) -> tuple[str, ...]:
        return tuple(w.category for w in self.washouts)

    @property
    def exposure_criteria(self) -> tuple[str, ...]:
        """Criterion codes fed by exposures, in table order, each once."""
        codes: list[str] = []
        for row in self.washouts:
            if row.criterion is not None and row.criterion not in codes:
                codes.append(row.criterion)
        return tuple(codes)


STUDY = Study(
    protocol_id="CAR-NK-CLL1-CD33-AML",
    version="1.0 (original protocol)",
)
