"""``params.yaml`` parsed once into a typed, checked object.

Every stage reads its settings from :class:`Params`; a missing key, a wrong type or a value
out of range fails at load time with one line naming the key, e.g.
``params.yaml: 'model.learning_rate' must be greater than 0, got 0``. Unknown keys are refused
too, so a typo cannot silently leave a default in force.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .config import PARAMS_FILE
from .decision import band_problem
from .errors import ParamsError
from .use_case import Explanations


class _Section(BaseModel):
    # strict: "5" is not an int and true is not a number; extra: a misspelt key is an error.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class DataParams(_Section):
    """``data``: the contract and the input file."""

    contract: str = "contract.yaml"
    path: str


class GenerateParams(_Section):
    """``generate``: the synthetic data set's size, and an optional injected bias (for demos)."""

    n_rows: Annotated[int, Field(ge=100)]
    # 0: protected groups' true disparity sits within the default fairness gates at any size.
    bias: Annotated[float, Field(ge=0.0, le=5.0)] = 0.0


class PrepareParams(_Section):
    """``prepare``: the erasure ledger."""

    erasure_ledger: str


class SplitParams(_Section):
    """``split``: the held-out fraction."""

    test_fraction: Annotated[float, Field(ge=0.05, le=0.5)]


class ValidateParams(_Section):
    """``validate``: the suite's table-level limits."""

    min_rows: PositiveInt
    max_null_fraction: Fraction
    target_rate: list[Fraction]

    @field_validator("target_rate")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or value[0] > value[1]:
            raise ValueError("must be [low, high] with low <= high")
        return value


# The bounds of each hyperparameter, shared by its value in ``model`` and its candidates in ``model.search.grid``.
LearningRate = Annotated[float, Field(gt=0)]
MaxLeafNodes = Annotated[int, Field(ge=2)]
L2 = Annotated[float, Field(ge=0)]


class SearchGrid(_Section):
    """``model.search.grid``: the candidate values of the hyperparameters the search chooses."""

    learning_rate: Annotated[list[LearningRate], Field(min_length=1)] | None = None
    max_leaf_nodes: Annotated[list[MaxLeafNodes], Field(min_length=1)] | None = None
    min_samples_leaf: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    l2_regularization: Annotated[list[L2], Field(min_length=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_trees(cls, value: Any) -> Any:
        if isinstance(value, dict) and "max_iter" in value:
            raise ValueError(
                "max_iter is not a grid key: early stopping on the validation folds chooses the number of trees, "
                "up to model.max_iter"
            )
        return value

    def candidates(self) -> dict[str, list[Any]]:
        """The grid's keys and values, as scikit-learn's ``ParameterGrid`` takes them."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SearchParams(_Section):
    """``model.search``: cross-validated choice of the hyperparameters on the training split (training/tuning.py)."""

    enabled: bool
    grid: SearchGrid = SearchGrid()
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 3
    # The search runs on a seeded sample of at most this many training rows, stratified by the target.
    sample_rows: Annotated[int, Field(ge=100)] = 20_000
    time_budget_s: Annotated[float, Field(gt=0)] = 60.0


class ModelParams(_Section):
    """``model``: which model, and the HistGradientBoostingClassifier's settings."""

    # gbm: the boosted model below. scorecard: the benchmark stage's WoE points scorecard is the
    # model (credit only; core/scorecard.py), and the settings below do not apply to it.
    kind: Literal["gbm", "scorecard"] = "gbm"
    learning_rate: LearningRate
    max_iter: PositiveInt
    max_leaf_nodes: MaxLeafNodes
    min_samples_leaf: PositiveInt
    l2_regularization: L2
    monotone: bool = True
    interaction_cst: str | None = None
    # How decisions are explained; which kinds a repository can give is its use case's (core/use_case.py).
    explanations: Annotated[Explanations, Field(strict=False)]
    class_weight: str | None = None
    # Absent (a params.yaml older than the search): the values above, as written.
    search: SearchParams = SearchParams(enabled=False)

    @field_validator("interaction_cst")
    @classmethod
    def _interactions(cls, value: str | None) -> str | None:
        if value not in (None, "no_interactions"):
            raise ValueError("must be no_interactions or null")
        return value

    @field_validator("class_weight")
    @classmethod
    def _class_weight(cls, value: str | None) -> str | None:
        if value not in (None, "balanced"):
            raise ValueError("must be balanced or null")
        return value


class DecisionParams(_Section):
    """``decision``: a fixed threshold, or the costs that tune one."""

    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    tuning_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    cost_false_negative: Annotated[float, Field(gt=0)] | None = None
    cost_false_positive: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _tunable(self) -> DecisionParams:
        if self.threshold is None:
            missing = [k for k in ("tuning_fraction", "cost_false_negative", "cost_false_positive") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"threshold is null (cost-tuned), so {', '.join(missing)} must be set")
        return self


class EvaluateParams(_Section):
    """``evaluate``: the minimum headline metric and fraud operating points."""

    min_headline: Fraction
    top_k_fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_fpr: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None


class ExplainParams(_Section):
    """``explain``: permutation repeats, and the held-out rows they shuffle at most."""

    n_repeats: PositiveInt
    max_rows: PositiveInt | None = 20_000


FairnessMetric = Literal[
    "demographic_parity_ratio",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "tpr_difference",
    "fpr_difference",
]


class FairnessGate(_Section):
    """One fairness gate: a between-group metric and its bound."""

    metric: FairnessMetric
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> FairnessGate:
        if (self.min is None) == (self.max is None):
            raise ValueError("needs exactly one numeric bound, 'min' or 'max'")
        return self

    @property
    def bound(self) -> Literal["min", "max"]:
        """Which side the gate judges."""
        return "min" if self.min is not None else "max"

    @property
    def threshold(self) -> float:
        """The bound's value."""
        return float(self.min if self.min is not None else self.max)


class FairnessParams(_Section):
    """``fairness``: group-size minimums, the bootstrap, the rule and the gates."""

    min_group_size: PositiveInt
    min_group_outcomes: PositiveInt
    bootstrap: Annotated[int, Field(ge=0)]
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)]
    rule: Literal["point", "significant"]
    gates: list[FairnessGate]


class MonitorParams(_Section):
    """``monitor``: drift bins, PSI/CSI thresholds and the tolerated fall of the headline metric."""

    bins: Annotated[int, Field(ge=2, le=100)]
    psi_warn: Annotated[float, Field(gt=0)]
    psi_alert: Annotated[float, Field(gt=0)]
    epsilon: Annotated[float, Field(gt=0, lt=0.01)]
    performance_tolerance: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> MonitorParams:
        if not self.psi_warn < self.psi_alert:
            raise ValueError(f"psi_warn ({self.psi_warn}) must be above 0 and below psi_alert ({self.psi_alert})")
        return self


class ReferBand(_Section):
    """``serving.refer_band``: scores from ``lower`` up to ``upper`` go to a person (core/decision.py)."""

    lower: Annotated[float, Field(gt=0.0, lt=1.0)]
    upper: Annotated[float, Field(gt=0.0, lt=1.0)]

    @model_validator(mode="after")
    def _ordered(self) -> ReferBand:
        if self.lower > self.upper:
            raise ValueError(f"lower ({self.lower:g}) must not be above upper ({self.upper:g})")
        return self


class ServingParams(_Section):
    """``serving``: what the decision service refuses before it parses a request (docs/serving.md)."""

    # A batch of 1,000 records is about 400 KB of JSON: 1 MiB leaves room and stops a padded body.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    # Seconds a connection may take to send a request's headers before it is closed (slow-header clients).
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Scores a person decides (approve / refer / decline); null: the threshold alone decides.
    refer_band: ReferBand | None = None


class BenchmarkGateParams(_Section):
    """``benchmark.gate``: how far the model must beat its benchmark on the headline metric."""

    enabled: bool = True
    # The model's headline metric minus the benchmark's must reach this (negative: may trail by it).
    margin: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    # point: fail when the difference is below the margin. significant: fail only when the whole
    # bootstrap interval of the difference lies below it (a shortfall within noise passes, warned).
    rule: Literal["point", "significant"] = "significant"


class BenchmarkParams(_Section):
    """``benchmark``: the benchmark fitted beside the model, its comparison and its gate."""

    # Points-to-double-the-odds scaling of the credit scorecard (unused by the fraud benchmark).
    pdo: Annotated[float, Field(gt=0)] = 20.0
    base_points: float = 600.0
    base_odds: Annotated[float, Field(gt=0)] = 50.0
    # The benchmark is fitted on a seeded sample of at most this many training rows (null: all).
    max_rows: PositiveInt | None = 50_000
    bootstrap: Annotated[int, Field(ge=10)] = 200  # paired resamples of the held-out rows
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95
    gate: BenchmarkGateParams = BenchmarkGateParams()


class ScoreParams(_Section):
    """``score``: portfolio scoring (``make score``; docs/scoring.md)."""

    # Hash buckets of the output by id: a consumer reads one of them to find a record. Changing it moves records.
    buckets: Annotated[int, Field(ge=1, le=4096)] = 16
    # Records read, checked and scored at a time by the pandas engine: memory follows this, not the portfolio.
    batch_rows: Annotated[int, Field(ge=1)] = 100_000


class ValidationPackParams(_Section):
    """``validation_pack``: the validation pack's settings (docs/validation.md)."""

    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95  # of the ROC-AUC interval
    significance: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05  # a test with a p-value below it fails
    score_bands: Annotated[int, Field(ge=2, le=100)] = 10  # rows of the gains/KS table (deciles)
    # Lower edges of the amount bands of the fraud figures, in the contract's monetary column's unit.
    value_bands: list[Annotated[float, Field(ge=0)]] | None = None

    @field_validator("value_bands")
    @classmethod
    def _increasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) < 1 or any(b <= a for a, b in zip(value, value[1:], strict=False))):
            raise ValueError("must be a non-empty list of increasing lower band edges")
        return value


def _check_grades(value: dict[str, float] | None) -> dict[str, float] | None:
    if value is None:
        return value
    bounds = list(value.values())
    if len(bounds) < 2 or any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)) or bounds[0] <= 0:
        raise ValueError("needs at least 2 grades with increasing PD upper bounds above 0")
    if bounds[-1] != 1.0:
        raise ValueError("the last grade's upper bound must be 1.0 (it takes every PD above the others)")
    return value
{%- if cookiecutter.compute == "spark" %}


class SparkParams(_Section):
    """``spark``: where the data stages run (core/spark.py) and how many rows training draws."""

    # local[N] on one machine; spark://host:7077, yarn, k8s://... on a cluster. SPARK_REMOTE (Spark
    # Connect) and spark-submit's --master take precedence, so a cluster needs no edit here.
    master: str = "local[2]"
    # A Spark Connect server (sc://host:15002; local[N] starts one in this process). SPARK_REMOTE overrides it.
    remote: str | None = None
    app_name: str = "{{ cookiecutter.project }}"
    # Any Spark setting, passed to the session as written (spark.driver.memory, spark.sql.shuffle.partitions ...).
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # HistGradientBoosting fits on one machine: train on a stratified sample of at most this many rows.
    train_sample_rows: PositiveInt = 500_000
{%- endif %}


class MlflowParams(_Section):
    """``mlflow``: the experiment name."""

    experiment: str


class GateMetricParams(_Section):
    """``gates.metric``: direction and tolerance of the headline-metric gate."""

    direction: Literal["higher", "lower"] = "higher"
    tolerance: Annotated[float, Field(ge=0)] = 0.0


class GatesParams(_Section):
    """``gates``: what a change must meet to replace the champion."""

    metric: GateMetricParams = GateMetricParams()
    require_baseline: bool = True


class Params(_Section):
    """Every tunable of the pipeline (``params.yaml``), checked."""

    seed: Annotated[int, Field(ge=0)]
    data: DataParams
    generate: GenerateParams
    prepare: PrepareParams
    split: SplitParams
    validate_: ValidateParams = Field(alias="validate")
    model: ModelParams
    decision: DecisionParams
    evaluate: EvaluateParams
    explain: ExplainParams
    fairness: FairnessParams
    monitor: MonitorParams
    mlflow: MlflowParams
    serving: ServingParams = ServingParams()
    score: ScoreParams = ScoreParams()
    gates: GatesParams = GatesParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    # The master scale: grade name -> upper PD bound (exclusive), best grade first (validation pack, outcomes).
    grades: dict[str, Annotated[float, Field(strict=False)]] | None = None
    validation_pack: ValidationPackParams = ValidationPackParams()
{%- if cookiecutter.compute == "spark" %}
    spark: SparkParams = SparkParams()
{%- endif %}
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())

    @field_validator("grades")
    @classmethod
    def _grades(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _check_grades(value)

    @model_validator(mode="after")
    def _use_case_settings(self) -> Params:
        from . import use_case

        facts, model = use_case.load(), self.model
        if model.kind == "scorecard":
            if facts.name != "credit_scoring":
                # The scorecard is fitted by optbinning, which only a credit repository ships, and
                # a points table with adverse-action reasons is a credit convention.
                raise ValueError(f"model.kind: scorecard is for credit scoring; a {facts.title.lower()} repository trains gbm")
            if model.explanations is not Explanations.REASON_CODES:
                raise ValueError(f"model.kind: scorecard explains by reason_codes (got model.explanations: {model.explanations})")
            if self.decision.threshold is None:
                # Cost tuning fits a probe model on the earlier training rows; the scorecard is fitted
                # once, by the benchmark stage.
                raise ValueError("model.kind: scorecard needs a fixed decision.threshold (null tunes it on a second fit)")
        if model.explanations not in facts.explanations:
            raise ValueError(
                f"model.explanations: {model.explanations} needs shap, which this {facts.title.lower()} repository "
                f"does not ship; use {' or '.join(facts.explanations)}"
            )
        if model.kind == "gbm" and model.explanations is Explanations.REASON_CODES and model.interaction_cst != "no_interactions":
            # Reason codes are exact only for an additive model (core/reasons.py); a model with
            # interactions would train, then fail the service at start.
            got = "null" if model.interaction_cst is None else model.interaction_cst
            raise ValueError(f"model.explanations: reason_codes needs model.interaction_cst: no_interactions (got {got})")
        band, threshold = self.serving.refer_band, self.decision.threshold
        if band is not None and threshold is not None:  # a cost-tuned threshold is checked by train and the service
            problem = band_problem(band.lower, band.upper, threshold, "decision.threshold")
            if problem:
                raise ValueError(problem)
        facts.check_params(self)
        return self

    def as_dict(self) -> dict[str, Any]:
        """The parameters exactly as written in params.yaml (for lineage and MLflow)."""
        return self._raw

    def replace(self, **sections: dict[str, Any]) -> Params:
        """A checked copy with some keys of some sections changed, e.g. ``replace(model={"max_iter": 5})``."""
        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in self._raw.items()}
        for name, changes in sections.items():
            raw[name] = {**raw.get(name, {}), **changes} if isinstance(changes, dict) else changes
        return parse(raw)


def _where(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "constrained-")):
            continue
        else:
            parts.append(str(part))
    return ".".join(parts)


_TYPES = {
    "int_type": "must be int",
    "int_from_float": "must be int",
    "float_type": "must be int/float",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
}


def _message(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    where = _where(tuple(p for p in error["loc"] if p not in ("int", "float", "none", "str", "list[...]")))
    if kind == "missing":
        return f"params.yaml: missing '{where}'"
    if kind == "extra_forbidden":
        return f"params.yaml: unknown key '{where}' (misspelt? see the template's params.yaml)"
    got = f", got {error.get('input')!r}"
    if kind in _TYPES:
        return f"params.yaml: '{where}' {_TYPES[kind]}{got}"
    if kind == "greater_than":
        return f"params.yaml: '{where}' must be greater than {ctx['gt']}{got}"
    if kind == "greater_than_equal":
        return f"params.yaml: '{where}' must be at least {ctx['ge']}{got}"
    if kind == "less_than":
        return f"params.yaml: '{where}' must be less than {ctx['lt']}{got}"
    if kind == "less_than_equal":
        return f"params.yaml: '{where}' must be at most {ctx['le']}{got}"
    if kind in ("literal_error", "enum"):
        return f"params.yaml: '{where}' must be {ctx.get('expected')}{got}"
    if kind == "value_error":
        return (
            f"params.yaml: '{where}' {str(ctx.get('error', error['msg']))}{got}" if where else f"params.yaml: {ctx.get('error')}"
        )
    return f"params.yaml: '{where}': {error['msg']}{got}"


def parse(raw: Any) -> Params:
    """Check a params mapping; the first problem becomes one :class:`ParamsError` naming the key."""
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # Report a union's most specific branch (e.g. 'must be greater than 0', not 'must be null').
        best = next((e for e in errors if e["type"] not in ("none_required",)), errors[0])
        raise ParamsError(_message(best)) from None
    params._raw.update(raw)
    return params


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and check ``params.yaml``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run stages from the repository root") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw)


def parse_section(model: type[_Section], raw: Any, name: str) -> Any:
    """Check one section of params.yaml on its own (the CI gates read only ``gates``)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise ParamsError(_message({**error, "loc": (name, *error["loc"])})) from None
