"""Stage ``evaluate``: metrics and plots on the out-of-time test set, logged to the MLflow run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from ..core import config, metrics, model
from ..core.contract import load_contract


def plots(y: np.ndarray, score: np.ndarray, threshold: float, out_dir=config.PLOTS) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(name)

    fpr, tpr, _ = roc_curve(y, score)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve")
    ax.legend()
    save(fig, "roc.png")

    precision, recall, _ = precision_recall_curve(y, score)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision)
    ax.axhline(np.mean(y), ls="--", color="grey", label="base rate")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall curve")
    ax.legend()
    save(fig, "pr.png")

    frac_pos, mean_pred = calibration_curve(y, score, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(mean_pred, frac_pos, "o-", label="model")
    lim = max(mean_pred.max(), frac_pos.max())
    ax.plot([0, lim], [0, lim], "--", color="grey", label="perfect")
    ax.set(xlabel="Mean predicted probability", ylabel="Observed rate", title="Calibration")
    ax.legend()
    save(fig, "calibration.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(score[y == 0], bins=bins, alpha=0.6, density=True, label="negative")
    ax.hist(score[y == 1], bins=bins, alpha=0.6, density=True, label="positive")
    ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="Score", ylabel="Density", title="Score distribution")
    ax.legend()
    save(fig, "score_distribution.png")
    return written


def main() -> int:
    log = config.setup_logging()
    params = config.load_params()
    contract = load_contract(config.param(params, "data.contract", str))
    meta = json.loads(config.MODEL_META.read_text(encoding="utf-8"))
    pipeline = model.load(config.MODEL)
    test = pd.read_parquet(config.TEST)
    y = model.target_vector(test, contract)
    score = model.scores(pipeline, test, contract)
    result = metrics.compute(params["use_case"], y, score, float(meta["threshold"]), params)
    config.write_json(config.METRICS, result)
    written = plots(y, score, float(meta["threshold"]))

    import mlflow

    mlflow.set_tracking_uri(meta["tracking_uri"])
    with mlflow.start_run(run_id=meta["run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in result.items()})
        for name in written:
            mlflow.log_artifact(str(config.PLOTS / name), artifact_path="plots")
        mlflow.log_artifact(str(config.METRICS))
    headline = metrics.HEADLINE[params["use_case"]]
    log.info("%s = %.4f on %d out-of-time rows; reports in %s", headline, result[headline], len(y), config.REPORTS)
    return 0


if __name__ == "__main__":
    sys.exit(config.run_stage(main))
