"""Stage ``train``: fit the model on validated data, pick the decision threshold, track in MLflow."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..core import config, model
from ..core.contract import Contract, load_contract
from ..core.metrics import expected_cost
from . import tracking


class ValidationNotPassedError(config.UserError, RuntimeError):
    pass


def require_validation(path=config.VALIDATION) -> None:
    """Fail closed: train only on data whose validation report exists and passed."""
    import json

    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationNotPassedError(f"{path} not found: run the validate stage first") from None
    if summary.get("success") is not True:
        raise ValidationNotPassedError(f"{path}: data validation did not pass; refusing to train")


def tune_threshold(y: np.ndarray, score: np.ndarray, cost_fn: float, cost_fp: float) -> float:
    """Threshold minimising expected cost (flag when score >= threshold)."""
    candidates = np.unique(np.round(score, 6))
    if len(candidates) > 2000:
        candidates = np.unique(np.quantile(score, np.linspace(0, 1, 2001)))
    costs = [expected_cost(y, score >= t, cost_fn, cost_fp) for t in candidates]
    return float(candidates[int(np.argmin(costs))])


def decision_threshold(contract: Contract, params: dict[str, Any], train: pd.DataFrame) -> tuple[float, dict[str, Any]]:
    decision = config.param(params, "decision", dict)
    if decision.get("threshold") is not None:
        t = float(decision["threshold"])
        if not 0.0 < t < 1.0:
            raise config.ParamsError(f"params.yaml: 'decision.threshold' must be in (0, 1), got {t}")
        return t, {"threshold_source": "params"}
    # Cost-tuned: fit on the earlier part of the training window, tune on the later part.
    cut = int(len(train) * (1.0 - float(config.param(params, "decision.tuning_fraction", float))))
    early, late = train.iloc[:cut], train.iloc[cut:]
    probe = model.build_pipeline(contract, params)
    probe.fit(model.model_frame(early, contract), model.target_vector(early, contract))
    t = tune_threshold(
        model.target_vector(late, contract),
        model.scores(probe, late, contract),
        float(decision["cost_false_negative"]),
        float(decision["cost_false_positive"]),
    )
    return t, {"threshold_source": "cost_tuned", "tuning_rows": int(len(late))}


def main() -> int:
    log = config.setup_logging()
    params = config.load_params()
    contract = load_contract(config.param(params, "data.contract", str))
    try:
        require_validation()
    except ValidationNotPassedError as exc:
        log.error("%s", exc)
        return 1
    train = pd.read_parquet(config.TRAIN)
    X, y = model.model_frame(train, contract), model.target_vector(train, contract)
    threshold, threshold_info = decision_threshold(contract, params, train)
    pipeline = model.build_pipeline(contract, params)
    pipeline.fit(X, y)
    model.save(pipeline)

    import mlflow
    from mlflow.models import infer_signature

    tracking.experiment(config.param(params, "mlflow.experiment", str))
    data_hashes = {"train_md5": tracking.file_md5(config.TRAIN), "test_md5": tracking.file_md5(config.TEST)}
    with mlflow.start_run() as run:
        mlflow.log_params({k: v for k, v in tracking.flatten("", params).items() if k.split(".")[0] != "mlflow"})
        mlflow.log_params({f"data.{k}": v for k, v in data_hashes.items()})
        mlflow.set_tags(
            {
                **{k: str(v) for k, v in tracking.git_state().items()},
                "use_case": params["use_case"],
                "contract": f"{contract.name} v{contract.version}",
            }
        )
        mlflow.log_input(
            mlflow.data.from_pandas(
                train.drop(columns=contract.pii, errors="ignore").head(0),
                source=str(config.TRAIN),
                name="train",
                digest=data_hashes["train_md5"][:8],
            ),
            context="training",
        )
        mlflow.log_metric("decision_threshold", threshold)
        mlflow.log_metric("train_rows", len(train))
        mlflow.log_metric("train_positive_rate", float(y.mean()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlflow.sklearn.log_model(
                pipeline,
                name="model",
                serialization_format="skops",
                skops_trusted_types=model.TRUSTED_TYPES,
                signature=infer_signature(X.head(50), pipeline.predict_proba(X.head(50))[:, 1]),
                pip_requirements=[
                    f"scikit-learn=={__import__('sklearn').__version__}",
                    f"skops=={__import__('skops').__version__}",
                ],
            )
        run_id = run.info.run_id
    meta = {
        "run_id": run_id,
        "tracking_uri": tracking.tracking_uri(),
        "threshold": threshold,
        **threshold_info,
        "features": contract.model_input_order(),
        "data": data_hashes,
    }
    config.write_json(config.MODEL_META, meta)
    log.info("trained on %d rows; threshold %.4f; MLflow run %s", len(train), threshold, run_id)
    return 0


if __name__ == "__main__":
    sys.exit(config.run_stage(main))
