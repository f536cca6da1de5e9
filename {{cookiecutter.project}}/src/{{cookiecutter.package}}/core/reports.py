"""The reports stages write and others read, as typed models shared by writer and reader.

A stage writes a report with :meth:`Report.write`; the gates, the PR report and the model
card read it with :meth:`Report.read`. A renamed, missing or misspelt key fails the reader
with the file and the key named, instead of quietly dropping out of a PR comment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import StageOrderError
from .use_case import Explanations

R = TypeVar("R", bound="Report")


class ReportError(StageOrderError):
    """A report file is missing, unreadable or not in the shape its reader expects."""


class Report(BaseModel):
    """Base of every report: strict about unknown keys and types, written as sorted, indented JSON."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        """Load and check a report; every problem is a :class:`ReportError` naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReportError(f"{path} not found: the stage that writes it did not run (dvc repro)") from None
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}: not valid JSON ({exc})") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls: type[R], data: Any, source: str | Path) -> R:
        """Check an already-read report; a wrong shape is a :class:`ReportError` naming ``source`` and the key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise ReportError(f"{source}: '{where}': {first['msg']} ({exc.error_count()} problem(s))") from None

    def write(self, path: str | Path) -> None:
        """Write the report atomically."""
        from .stage import write_json

        write_json(Path(path), self.model_dump(mode="json"))


class _Part(BaseModel):
    """A nested part of a report: as strict as the report itself."""

    model_config = ConfigDict(extra="forbid", strict=True)


Status = Literal["pass", "warn", "fail", "skip"]


class Verdict(_Part):
    """A check's outcome and why: the one verdict type of the fairness stage, the gates and monitoring.

    ``warn`` passes (it is shown, not blocking); ``skip`` means not judged, which a gate never
    returns (gates fail closed) and monitoring uses for drift on data that broke the contract.
    """

    status: Status
    reason: str

    @property
    def passed(self) -> bool:
        """The check does not block: it passed, perhaps with a warning."""
        return self.status in ("pass", "warn")


class GateId(_Part):
    """Which gate a verdict is about, as data: the gate, and for fairness the attribute, metric or group."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    gate: str
    attribute: str | None = None
    metric: str | None = None
    group: str | None = None

    def __str__(self) -> str:
        return ":".join(p for p in (self.gate, self.attribute, self.metric, self.group) if p is not None)


class GateVerdict(Verdict):
    """One gate's verdict on one thing it checked: the value judged and its threshold, when there are numbers."""

    id: GateId
    value: float | None = None
    threshold: float | None = None


class GatesReport(Report):
    """``reports/gates.json``: written by ``ci/gates.py``, read by the PR report and the release."""

    passed: bool
    baseline: str
    stale_stages: list[str]
    gates: list[GateVerdict]

    @model_validator(mode="after")
    def _consistent(self) -> GatesReport:
        if self.passed != (bool(self.gates) and all(g.passed for g in self.gates)):
            raise ValueError(f"passed is {self.passed} but the gates say otherwise")
        return self


class BenchmarkMetrics(_Part):
    """``benchmark`` in reports/metrics.json: the benchmark on the same held-out rows, and the model's lead.

    ``difference`` is the model's headline metric minus the benchmark's; its interval comes from
    ``bootstrap`` paired resamples of the held-out rows at ``confidence`` (evaluation/benchmark.py).
    """

    roc_auc: float
    pr_auc: float
    difference: float
    difference_ci_low: float
    difference_ci_high: float
    confidence: float
    bootstrap: int
    # model.kind: scorecard: the model IS this benchmark, so the difference is zero by construction
    # and the gate has nothing to judge (ci/gates.py says so instead of passing).
    model_is_benchmark: bool = False
{%- if cookiecutter.compute == "spark" %}
    # How the rows the interval resampled were drawn (a seeded Spark sample past evaluation/spark_stats.py's SAMPLE_ROWS).
    resampled: str | None = None
{%- endif %}


class MetricsReport(Report):
    """``reports/metrics.json``: written by ``evaluate``, read by the gates, the PR report, the card and the monitor."""
{%- if cookiecutter.use_case == "credit_scoring" %}

    roc_auc: float
    gini: float
    ks: float
    pr_auc: float
    brier: float
    approval_rate: float
    bad_rate_approved: float
    default_rate: float
{%- else %}

    pr_auc: float
    roc_auc: float
    precision_at_k: float
    recall_at_fpr: float
    expected_cost: float
    flag_rate: float
    fraud_rate: float
{%- endif %}
    threshold: float
    rows: int
    # The benchmark fitted beside the model (None in metrics committed before there was one).
    benchmark: BenchmarkMetrics | None = None

    @classmethod
    def metric_names(cls) -> list[str]:
        """The model's own metrics (every field but the benchmark section), sorted."""
        return sorted(name for name in cls.model_fields if name != "benchmark")

    def headline(self, name: str) -> float:
        """The value of metric ``name``; a :class:`ReportError` if this report has no such metric."""
        if name not in self.metric_names():
            raise ReportError(f"metrics report: no metric {name!r} (has: {', '.join(type(self).model_fields)})")
        return getattr(self, name)


class ExpectationFailure(_Part):
    """One failed (or unevaluable) expectation, in words a person can act on."""

    column: str
    expectation: str
    kwargs: dict[str, Any] = {}
    unexpected_count: int | None = None
    element_count: int | None = None
    observed_value: Any = None
    examples: list[Any] = []
    error: str | None = None


class ValidationReport(Report):
    """``reports/validation.json``: written by ``validate``, read by train, gates and the PR report."""

    success: bool
    contract: str
    rows: int
    expectations: int  # how many expectations were evaluated
    failed: int
    failures: list[ExpectationFailure]


SummaryMetric = Literal[
    "demographic_parity_ratio", "demographic_parity_difference", "equalized_odds_difference", "tpr_difference", "fpr_difference"
]


class FairnessVerdict(GateVerdict):
    """One fairness gate's verdict for one protected attribute (``skip``: reported, not gated, and why)."""

    bound: Literal["min", "max"] | None = None
    ci: list[float] | None = None


class GroupGated(_Part):
    """Which of a group's figures are large enough to be gated."""

    outcome_rate: bool
    tpr: bool
    fpr: bool


class GroupStats(_Part):
    """One protected group's counts and rates (None where undefined), with bootstrap intervals."""

    n: int
    positives: int
    {{ "approval_rate" if cookiecutter.use_case == "credit_scoring" else "flag_rate" }}: float | None
    tpr: float | None
    fpr: float | None
    positive_rate: float | None
    {{ "roc_auc" if cookiecutter.use_case == "credit_scoring" else "pr_auc" }}: float | None = None  # the headline metric within the group
    ci: dict[str, list[float] | None]
    gated: GroupGated
    not_gated_reason: str | None = None


class SummaryStat(_Part):
    """A between-group spread: its value, the groups at each end, its interval."""

    value: float | None
    low_group: str
    high_group: str
    component: Literal["tpr", "fpr"] | None = None  # equalized odds: the error rate that set it
    ci: list[float] | None


class SkippedGroup(_Part):
    """A group reported but not gated, and why."""

    group: str
    reason: str


class AttributeFairness(_Part):
    """Everything measured for one protected attribute."""

    groups: dict[str, GroupStats]
    summary: dict[SummaryMetric, SummaryStat]
    not_gated: list[SkippedGroup]
    bootstrap_units: int


class FairnessSettings(_Part):
    """The ``fairness`` params the report was computed with."""

    min_group_size: int
    min_group_outcomes: int
    bootstrap: int
    confidence: float
    rule: Literal["point", "significant"]


class FairnessReport(Report):
    """``reports/fairness.json``: written by ``fairness``, read by the gates, the PR report and the card."""

    use_case: str
    threshold: float
    rows: int
    outcome: str
    definitions: dict[str, str]
    settings: FairnessSettings
    bootstrap_unit: Literal["subject", "row"]
    attributes: dict[str, AttributeFairness]
    gates: list[FairnessVerdict]
    not_gated: list[FairnessVerdict]
    passed: bool

    @model_validator(mode="after")
    def _consistent(self) -> FairnessReport:
        if any(g.status == "skip" for g in self.gates) or any(g.status != "skip" for g in self.not_gated):
            raise ValueError("gates holds judged verdicts only and not_gated only skipped ones")
        if self.passed != (bool(self.gates) and all(g.passed for g in self.gates)):
            raise ValueError(f"passed is {self.passed} but the gates say otherwise")
        return self


class FeatureImportance(_Part):
    """One feature's drop in the scoring metric when shuffled: mean and spread over repeats."""

    feature: str
    mean: float
    std: float


class PermutationImportance(_Part):
    """Permutation importance on the held-out rows, most important first."""

    scoring: str
    n_repeats: int
    rows: int
    held_out_rows: int
    features: list[FeatureImportance]
{%- if cookiecutter.compute == "spark" %}
    # How the rows were drawn (a seeded Spark sample past explain.max_rows); None: by the pandas stage.
    sample: str | None = None
{%- endif %}


class ReasonCode(_Part):
    """A feature's reason code and its consumer-facing text (from the contract)."""

    feature: str
    code: str
    text: str


class ReasonCodes(_Part):
    """The reason-code check of the held-out declines; ``available`` false (with ``why``) for a non-additive model."""

    available: bool
    why: str | None = None
    base_score: float | None = None
    best_values: dict[str, float | str] | None = None
    max_additivity_error: float | None = None
    declined: int | None = None
    principal_reason_counts: dict[str, int] | None = None
    catalogue: list[ReasonCode]

    @model_validator(mode="after")
    def _complete(self) -> ReasonCodes:
        needed = ("base_score", "max_additivity_error", "declined", "principal_reason_counts")
        missing = [k for k in needed if getattr(self, k) is None] if self.available else ([] if self.why else ["why"])
        if missing:
            raise ValueError(f"available is {self.available} but {', '.join(missing)} missing")
        return self


class ExplainReport(Report):
    """``reports/explain.json``: written by ``explain``, read by the model card."""

    permutation_importance: PermutationImportance
    reason_codes: ReasonCodes


Hyperparameters = dict[str, float | int]


class CandidateScore(_Part):
    """One candidate of the search: its grid values, the trees early stopping gave it and its validation scores."""

    values: Hyperparameters
    trees: int
    cv_log_loss: float
    cv_score: float  # the headline metric (core/use_case.yaml) on the validation folds, at ``trees``


class SearchRecord(_Part):
    """How the model's hyperparameters were chosen (params.yaml ``model.search``), written by ``train``.

    ``fixed``: as written in params.yaml. ``cross_validation``: the candidate and number of trees with
    the lowest mean validation log-loss over ``cv_folds`` stratified folds of ``rows`` training rows.
    """

    method: Literal["fixed", "cross_validation"]
    hyperparameters: Hyperparameters  # in effect: the chosen ones where searched, else params.yaml's
    cv_folds: int | None = None
    rows: int | None = None  # training rows the search ran on (a stratified sample when fewer than the split's)
    train_rows: int | None = None
    metric: str | None = None  # the name of cv_score
    cv_log_loss: float | None = None
    cv_score: float | None = None
    grid_size: int | None = None
    candidates: list[CandidateScore] = []  # those evaluated, in grid order
    complete: bool | None = None  # false: the time budget stopped the search before every candidate was tried
    time_budget_s: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchRecord:
        needed = ("cv_folds", "rows", "train_rows", "metric", "cv_log_loss", "cv_score", "grid_size", "complete", "time_budget_s")
        missing = [k for k in needed if getattr(self, k) is None] if self.method == "cross_validation" else []
        if missing or (self.method == "cross_validation") != bool(self.candidates):
            raise ValueError(f"method is {self.method} but {', '.join(missing) or 'candidates'} do not agree")
        return self


class ModelMeta(Report):
    """``models/model_meta.json``: the model's threshold and MLflow run, written by ``train``.

    Read by every later stage and by the decision service.
    """

    run_id: str
    tracking_uri: str
    threshold: float
    threshold_source: Literal["params", "cost_tuned"]
    tuning_rows: int | None = None
    search: SearchRecord  # how the hyperparameters were chosen
    # params.yaml model.kind: the boosted model, or the benchmark stage's points scorecard (core/scorecard.py).
    kind: Literal["gbm", "scorecard"] = "gbm"
    # How the service explains this model's decisions (params.yaml: model.explanations).
    explanations: Annotated[Explanations, Field(strict=False)]
    features: list[str]
    data: dict[str, str]
    git_sha: str = "unknown"  # the commit that trained the model


class PrepareSummary(Report):
    """``data/prepared/summary.json``: what ``prepare`` read, erased, dropped and split."""

    rows_in: int
    rows_erased: int
    columns_dropped: list[str]
    rows_train: int
    rows_test: int


class NumericProfile(_Part):
    """A numeric column's reference: quantile edges, the share of rows in each bin and of nulls."""

    kind: Literal["numeric"]
    edges: list[float]
    shares: list[float]
    null: float

    @model_validator(mode="after")
    def _aligned(self) -> NumericProfile:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) + 1} shares, not {len(self.shares)}")
        return self


class CategoricalProfile(_Part):
    """A categorical column's reference: the share of each level and of nulls."""

    kind: Literal["categorical"]
    levels: dict[str, float]
    null: float


Profile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceModel(_Part):
    """The model run a reference belongs to."""

    run_id: str


class ReferenceContract(_Part):
    """The contract a reference was profiled under."""

    name: str
    version: int


class ReferenceReport(Report):
    """``models/reference.json``: written by the ``reference`` stage, read by the monitor; versioned with the model."""

    schema_version: Literal[1]
    model: ReferenceModel
    contract: ReferenceContract
    rows: int
    bins: int
    score: NumericProfile
    decision_rate: float
    threshold: float
    features: dict[str, Profile]


# --- the validation pack (evaluation/validation_pack.py; keys documented in docs/validation.md) ---


class StatTest(_Part):
    """A statistical test's p-value and its verdict at the pack's significance level."""

    p_value: float
    status: Literal["pass", "fail"]


class ValidationReference(Report):
    """``models/validation_reference.json``: the first validated model's ROC-AUC, kept as the reference.

    Written by the ``validation_pack`` stage when the file is absent (so the first validated run
    sets it), committed, and kept across retraining; ``make validation-reference`` re-anchors it.
    """

    roc_auc: float
    se: float
    rows: int
    run_id: str
    git_sha: str


class Discrimination(_Part):
    """ROC-AUC with its DeLong interval, and against the reference (the first validated model)."""

    roc_auc: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    method: Literal["DeLong"]
    reference: ValidationReference
    reference_is_this_model: bool
    change: float  # roc_auc - reference.roc_auc
    decline: StatTest  # one-sided test that the AUC fell below the reference's


class GainsBand(_Part):
    """One score band of the gains/KS table, highest scores first."""

    band: int
    rows: int
    min_score: float
    max_score: float
    positives: int
    positive_rate: float
    cum_positive_share: float
    cum_negative_share: float
    ks: float
    lift: float


class Gains(_Part):
    """The gains/KS table by score band and its largest KS."""

    bands: list[GainsBand]
    ks: float


class GradeRow(_Part):
    """One grade of the master scale on the held-out set: counts, rates and the two calibration tests."""

    grade: str
    pd_low: float
    pd_high: float
    rows: int
    defaults: int
    observed_rate: float | None
    mean_pd: float | None
    jeffreys: StatTest | None  # None: no rows in the grade
    binomial: StatTest | None


class HosmerLemeshowResult(StatTest):
    """Hosmer-Lemeshow over the non-empty grades."""

    statistic: float
    df: int


class Concentration(_Part):
    """Grade concentration: the Herfindahl index and the ECB's normalised form (0 even, 1 all in one grade)."""

    hhi: float
    normalised: float


class GradeAssignments(_Part):
    """Each held-out row's grade, compact, for the migration matrix on a pull request.

    ``grades`` is base64 of zlib-compressed bytes, one byte per row (the grade's index on the
    scale), rows ordered by their key; ``keys_sha256`` fingerprints those keys, so two runs are
    compared only on the same rows.
    """

    rows: int
    keys_sha256: str
    grades: str


class Grades(_Part):
    """The master scale's grades on the held-out set."""

    scale: dict[str, float]
    rows: list[GradeRow]
    hosmer_lemeshow: HosmerLemeshowResult
    concentration: Concentration
    assignments: GradeAssignments


class ValueBand(_Part):
    """One value band (fraud): operating figures at the threshold and the fraud rate by value."""

    band: str
    low: float
    high: float | None
    rows: int
    frauds: int
    flagged: int
    precision: float | None
    recall: float | None
    value: float
    fraud_value: float
    fraud_rate_by_value: float | None


class ValueBands(_Part):
    """Fraud figures by band of the contract's monetary column, and over all rows."""

    column: str
    bands: list[ValueBand]
    overall: ValueBand


class ValidationPackReport(Report):
    """``reports/validation_pack.json``: written by ``validation_pack``; read by the card, the PR report, regulator documents."""

    schema_version: Literal[1]
    use_case: str
    run_id: str
    rows: int
    positives: int
    threshold: float
    significance: float
    discrimination: Discrimination
    gains: Gains
    grades: Grades | None  # None: no master scale (params.yaml has no grades)
    grades_why_not: str | None = None
    value_bands: ValueBands | None  # None: not a fraud repository, or no monetary column
    value_bands_why_not: str | None = None
    failed_tests: list[str]
