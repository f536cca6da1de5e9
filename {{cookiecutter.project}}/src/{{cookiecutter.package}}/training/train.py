"""Stage ``train``: fit the model on validated data, pick the decision threshold, track in MLflow.

``model.kind`` (params.yaml) says which model: ``gbm``, the boosted pipeline fitted here; or
(credit) ``scorecard``, the WoE points scorecard the benchmark stage fitted on the same split
(``models/scorecard.json``), taken as it is, not fitted twice, and saved as the model.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from .. import tracking
from ..core import config, model, use_case
from ..core.contract import Contract, load_contract
from ..core.errors import StageOrderError
from ..core.params import Params, load_params
{%- if cookiecutter.use_case == "credit_scoring" %}
from ..core.reports import ModelMeta, SearchRecord, ValidationReport
from ..core.scorecard import Scorecard, ScorecardModel
{%- else %}
from ..core.reports import ModelMeta, ValidationReport
{%- endif %}
from ..core.stage import LOGGER, entry_point, write_json
{%- if cookiecutter.compute == "spark" %}
from . import spark_sample
{%- endif %}
from .tuning import Tuned, choose

log = logging.getLogger(LOGGER)


class ValidationNotPassedError(StageOrderError):
    """The data this stage would train on has not passed validation."""


def require_validation(path=config.VALIDATION) -> None:
    """Fail closed: train only on data whose validation report exists and passed."""
    try:
        summary = ValidationReport.read(path)
    except StageOrderError as exc:
        raise ValidationNotPassedError(f"{exc}; run the validate stage first") from None
    if summary.success is not True:
        raise ValidationNotPassedError(f"{path}: data validation did not pass; refusing to train")


def tune_threshold(y: np.ndarray, score: np.ndarray, cost_fn: float, cost_fp: float) -> float:
    """Threshold minimising expected cost (flag when score >= threshold)."""
    candidates = np.unique(np.round(score, 6))
    if len(candidates) > 2000:
        candidates = np.unique(np.quantile(score, np.linspace(0, 1, 2001)))
    # The same counts expected_cost would take for each candidate, from two sorted arrays:
    # missed positives score below t, false alarms at or above it. O(n log n) once instead of
    # a pass over every row per candidate (2,000 passes at a million rows).
    y = np.asarray(y).astype(bool)
    score = np.asarray(score)
    positives, negatives = np.sort(score[y]), np.sort(score[~y])
    fn = np.searchsorted(positives, candidates, side="left")
    fp = len(negatives) - np.searchsorted(negatives, candidates, side="left")
    costs = (fn * cost_fn + fp * cost_fp) / max(len(y), 1)
    return float(candidates[int(np.argmin(costs))])


def decision_threshold(contract: Contract, params: Params, train: pd.DataFrame) -> tuple[float, dict[str, Any]]:
    """The threshold from params, or cost-tuned on the latest part of the training window."""
    decision = params.decision
    if decision.threshold is not None:
        return decision.threshold, {"threshold_source": "params"}
    # Cost-tuned: fit on the earlier part of the training window, tune on the later part.
    cut = int(len(train) * (1.0 - decision.tuning_fraction))
    early, late = train.iloc[:cut], train.iloc[cut:]
    probe = model.build_pipeline(contract, params)
    probe.fit(model.model_frame(early, contract), model.target_vector(early, contract))
    t = tune_threshold(
        model.target_vector(late, contract),
        model.scores(probe, late, contract),
        decision.cost_false_negative,
        decision.cost_false_positive,
    )
    return t, {"threshold_source": "cost_tuned", "tuning_rows": int(len(late))}


def as_doubles(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every integer column as float64, for the schemas MLflow infers.

    Any input may be missing at scoring time (the model handles NaN), and an integer column in
    a schema would refuse a missing value; so the schemas declare doubles.
    """
    ints = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    return df.astype(dict.fromkeys(ints, "float64"))
{%- if cookiecutter.use_case == "credit_scoring" %}


def scorecard_model() -> tuple[ScorecardModel, SearchRecord]:
    """The benchmark stage's scorecard (``models/scorecard.json``) as the model, and its record: scaling and bins."""
    card = Scorecard.read(config.BENCHMARK)
    s = card.scaling
    made_with = {"pdo": s.pdo, "base_points": s.base_points, "base_odds": s.base_odds}
    made_with["bins"] = sum(len(f.points) for f in card.features)
    return ScorecardModel(card.model_dump(mode="json")).fit(), SearchRecord(method="fixed", hyperparameters=made_with)
{%- endif %}


def log_run(
    params: Params, contract: Contract, train: pd.DataFrame, pipeline, threshold: float, tuned: Tuned
) -> tuple[str, dict[str, str]]:
    """Log params (as written, and the hyperparameters in effect), data hashes, git state and the skops model."""
    import mlflow
    from mlflow.models import infer_signature

    tracking.experiment(params.mlflow.experiment)
    data_hashes = {"train_md5": tracking.file_md5(config.TRAIN), "test_md5": tracking.file_md5(config.TEST)}
    X, y = model.model_frame(train, contract), model.target_vector(train, contract)
    with mlflow.start_run() as run:
        mlflow.log_params({k: v for k, v in tracking.flatten("", params.as_dict()).items() if k.split(".")[0] != "mlflow"})
        mlflow.log_params({f"data.{k}": v for k, v in data_hashes.items()})
        log_search(tuned)
        mlflow.set_tags(
            {
                **{k: str(v) for k, v in tracking.git_state().items()},
                "use_case": use_case.load().name,
                "contract": f"{contract.name} v{contract.version}",
            }
        )
        with warnings.catch_warnings():
            # MLflow registers its local-file dataset source twice (for "" and "file:") and warns
            # that a path matches both; either one records the same path.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            dataset = mlflow.data.from_pandas(
                as_doubles(train.drop(columns=contract.pii, errors="ignore").head(0)),
                source=str(config.TRAIN),
                name="train",
                digest=data_hashes["train_md5"][:8],
            )
        mlflow.log_input(dataset, context="training")
        mlflow.log_metric("decision_threshold", threshold)
        mlflow.log_metric("train_rows", len(train))
        mlflow.log_metric("train_positive_rate", float(y.mean()))
        sample = as_doubles(X.head(50))
        mlflow.sklearn.log_model(
            pipeline,
            name="model",
            serialization_format="skops",
            skops_trusted_types=model.TRUSTED_TYPES,
            signature=infer_signature(sample, pipeline.predict_proba(sample)[:, 1]),
            # Explicit requirements: MLflow's inference asks pip, which a uv environment does not have.
            pip_requirements=tracking.model_requirements(),
        )
        return run.info.run_id, data_hashes


def log_search(tuned: Tuned) -> None:
    """The hyperparameters in effect and, when searched, their cross-validation scores, on the active MLflow run."""
    import mlflow

    record = tuned.record
    mlflow.set_tag("search.method", record.method)
    mlflow.log_metrics({f"search.chosen.{k}": float(v) for k, v in record.hyperparameters.items()})
    if record.method == "cross_validation":
        mlflow.log_metrics(
            {
                "search.cv_log_loss": record.cv_log_loss,
                f"search.cv_{record.metric}": record.cv_score,
                "search.cv_folds": record.cv_folds,
                "search.rows": record.rows,
                "search.candidates": len(record.candidates),
                "search.grid_size": record.grid_size,
            }
        )


def fit_gbm(contract: Contract, written: Params, train: pd.DataFrame):
    """The boosted pipeline fitted and saved, how its hyperparameters were chosen, and its threshold."""
    # Hyperparameters chosen on the training split alone (training/tuning.py); the test set is not read here.
    tuned = choose(contract, written, train)
    params = tuned.params
    threshold, threshold_info = decision_threshold(contract, params, train)
    pipeline = model.build_pipeline(contract, params)
    pipeline.fit(model.model_frame(train, contract), model.target_vector(train, contract))
    model.save(pipeline)
    return pipeline, tuned, threshold, threshold_info


def main() -> int:
    """Fit, save ``models/model.skops``, ``models/model_meta.json`` (and the explanation background), track the run."""
    written = load_params()
    contract = load_contract(written.data.contract)
    require_validation()
{%- if cookiecutter.compute == "spark" %}
    # The fit is single-node: train on the rows drawn on Spark (every row up to spark.train_sample_rows).
    train, sample = spark_sample.training_rows(written, contract)
    log.info("training rows: %d of %d, %s", sample["rows"], sample["of"], sample["method"])
{%- else %}
    train = pd.read_parquet(config.TRAIN)
{%- endif %}
{%- if cookiecutter.use_case == "credit_scoring" %}
    if written.model.kind == "scorecard":
        # The benchmark stage fitted it on the same split (its sample of benchmark.max_rows rows):
        # the same table is the model, so the model and its benchmark cannot drift apart.
        pipeline, record = scorecard_model()
        tuned = Tuned(written, record)
        threshold, threshold_info = decision_threshold(contract, written, train)  # fixed: params refuse null
        model.save(pipeline)
    else:
        pipeline, tuned, threshold, threshold_info = fit_gbm(contract, written, train)
{%- else %}
    pipeline, tuned, threshold, threshold_info = fit_gbm(contract, written, train)
{%- endif %}
    params = tuned.params
    background = use_case.load().explanation_background(train, contract, params.seed)
    if background is not None:
        # Feature contributions are measured against a fixed sample of training rows (features only).
        write_json(config.EXPLAIN_BACKGROUND, background)
    run_id, data_hashes = log_run(written, contract, train, pipeline, threshold, tuned)
{%- if cookiecutter.compute == "spark" %}
    spark_sample.log_sample(run_id, sample)
{%- endif %}
    ModelMeta(
        run_id=run_id,
        tracking_uri=tracking.tracking_uri(),
        threshold=threshold,
        **threshold_info,
        search=tuned.record,
        kind=params.model.kind,
        explanations=params.model.explanations,
        features=contract.model_input_order(),
        data=data_hashes,
        git_sha=tracking.git_state()["git_sha"],
    ).write(config.MODEL_META)
    log.info("trained on %d rows; threshold %.4f; MLflow run %s", len(train), threshold, run_id)
    return 0


if __name__ == "__main__":
    entry_point(main)
