"""Stage ``evaluate``: metrics and plots on the out-of-time test set, logged to the MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tracking
from ..core import config, metrics, model, use_case
from ..core.contract import load_contract
from ..core.params import load_params
from ..core.reports import MetricsReport, ModelMeta
from ..core.stage import LOGGER, entry_point
from . import benchmark
from .plots import figure

log = logging.getLogger(LOGGER)


def plots(
    y: np.ndarray, score: np.ndarray, threshold: float, benchmark_score: np.ndarray, out_dir: Path = config.PLOTS
) -> list[str]:
    """ROC, precision-recall and calibration (scikit-learn's displays) and the score distribution.

    The ROC and precision-recall plots draw the benchmark's curve beside the model's, on the
    same rows: the gap the benchmark gate judges, seen across every threshold.
    """
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    bench_name = f"benchmark: {config.BENCHMARK_NAME}"
    # The legend goes below the (square) axes, where the benchmark's long name hides no curve.
    legend = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "fontsize": "small"}
    with figure(out_dir / "roc.png", size=(5, 5.6)) as ax:
        RocCurveDisplay.from_predictions(y, score, name="model", ax=ax, plot_chance_level=True)
        RocCurveDisplay.from_predictions(y, benchmark_score, name=bench_name, ax=ax, curve_kwargs={"ls": "--"})
        ax.legend(**legend)
        ax.set_title("ROC curve")
    with figure(out_dir / "pr.png", size=(5, 5.6)) as ax:
        PrecisionRecallDisplay.from_predictions(y, score, name="model", ax=ax, plot_chance_level=True)
        PrecisionRecallDisplay.from_predictions(y, benchmark_score, name=bench_name, ax=ax, curve_kwargs={"ls": "--"})
        ax.legend(**legend)
        ax.set_title("Precision-recall curve")
    with figure(out_dir / "calibration.png") as ax:
        CalibrationDisplay.from_predictions(y, score, n_bins=10, strategy="quantile", name="model", ax=ax)
        ax.set_title("Calibration")
    # No scikit-learn display for class-conditional score histograms with the threshold marked.
    with figure(out_dir / "score_distribution.png") as ax:
        bins = np.linspace(0, 1, 41)
        ax.hist(score[y == 0], bins=bins, alpha=0.6, density=True, label="negative")
        ax.hist(score[y == 1], bins=bins, alpha=0.6, density=True, label="positive")
        ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3f}")
        ax.set(xlabel="Score", ylabel="Density", title="Score distribution")
        ax.legend()
    return ["roc.png", "pr.png", "calibration.png", "score_distribution.png"]


def main() -> int:
    """Write ``reports/metrics.json`` and the plots; log both to the training run."""
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    pipeline = model.load(config.MODEL)
    test = pd.read_parquet(config.TEST)
    y = model.target_vector(test, contract)
    score = model.scores(pipeline, test, contract)
    facts = use_case.load()
    result = metrics.compute(facts, y, score, meta.threshold, params)
    bench_score = benchmark.load_scorer(contract)(test)
    bench = benchmark.compare(y, score, bench_score, facts.headline_metric, params.benchmark, params.seed)
    # model.kind: scorecard: the model is this benchmark (one table, train took it as it is), so the
    # comparison is recorded as such and the gate says so rather than passing a zero difference.
    section = bench | {"model_is_benchmark": meta.kind == "scorecard"}
    MetricsReport.parse(result | {"benchmark": section}, config.METRICS).write(config.METRICS)
    written = plots(y, score, meta.threshold, bench_score)
    record(meta, result, bench, written)
    return 0


def record(meta: ModelMeta, result: dict[str, float], bench: dict[str, float | int], written: list[str]) -> None:
    """Log the metrics and plots to the training run, and the headline figures to the console."""
    import mlflow

    with tracking.resume_run(meta):
        mlflow.log_metrics({f"test_{k}": v for k, v in result.items()})
        # (A spark repository's section also says, in words, how the rows it resampled were drawn.)
        mlflow.log_metrics({f"benchmark.{k}": v for k, v in bench.items() if not isinstance(v, str)})
        for name in written:
            mlflow.log_artifact(str(config.PLOTS / name), artifact_path="plots")
        mlflow.log_artifact(str(config.METRICS))
    headline = use_case.load().headline_metric
    log.info("%s = %.4f on %d out-of-time rows; reports in %s", headline, result[headline], result["rows"], config.REPORTS)
    log.info(
        "benchmark (%s): %s = %.4f; model - benchmark = %+.4f (%.0f%% interval %+.4f to %+.4f)",
        config.BENCHMARK_NAME,
        headline,
        bench[headline],
        bench["difference"],
        100 * bench["confidence"],
        bench["difference_ci_low"],
        bench["difference_ci_high"],
    )


if __name__ == "__main__":
    entry_point(main)
