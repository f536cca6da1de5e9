"""Stage ``evaluate`` of a spark repository: the test set scored on Spark and its metrics from Spark aggregations.

The same metrics as ``evaluation/evaluate.py`` (``reports/metrics.json``), each from sums over
every held-out row (evaluation/spark_stats.py): nothing is collected but the sums. The benchmark
is scored beside the model in the same pass; its ROC-AUC and PR-AUC, and the model's lead, are
exact too. What needs rows, not sums, runs on a seeded sample drawn on Spark of at most
``spark_stats.SAMPLE_ROWS`` rows (every row below that, so a small test set gives the pandas
figures): the benchmark's paired bootstrap interval (its ``resampled`` key says how the rows
were drawn) and the plots.
"""

from __future__ import annotations

import logging

from ..core import config, metrics, model, use_case
from ..core.contract import load_contract
from ..core.errors import DataError
from ..core.params import Params, load_params
from ..core.reports import MetricsReport, ModelMeta
from ..core.spark import get_session
from ..core.stage import LOGGER, entry_point
from . import benchmark, spark_stats
from .evaluate import plots, record
from .spark_stats import LABEL, SCORE

log = logging.getLogger(LOGGER)
BENCHMARK_SCORE = "__benchmark_score"


def figures(test, threshold: float, params: Params) -> dict[str, float]:
    """The use case's metrics (``UseCase.metrics``) from aggregations of the scored test set, unrounded."""
    from pyspark.sql import functions as F

    score, y = F.col(SCORE), F.col(LABEL)
    flagged = (score >= F.lit(threshold)).cast("long")
    sums = spark_stats.counts(
        test,
        [],
        {
            "rows": F.lit(1),
            "positives": y,
            "flagged": flagged,
            "caught": y * flagged,
            "squared_error": (score - y) * (score - y),
        },
    ).iloc[0]
    rows, positives, flags, caught = (int(sums[k]) for k in ("rows", "positives", "flagged", "caught"))
    if positives in (0, rows):
        raise DataError("the evaluation set holds only one target class; metrics are undefined")
{%- if cookiecutter.use_case == "credit_scoring" %}
    rank = spark_stats.ranking(test, SCORE).iloc[0]
    approved, bad_approved = rows - flags, positives - caught
    return {
        "roc_auc": rank["roc_auc"],
        "gini": 2 * rank["roc_auc"] - 1,
        "ks": rank["ks"],
        "pr_auc": rank["pr_auc"],
        "brier": float(sums["squared_error"]) / rows,
        "approval_rate": approved / rows,
        "bad_rate_approved": bad_approved / approved if approved else 0.0,
        "default_rate": positives / rows,
        "threshold": threshold,
    }
{%- else %}
    ev, dec = params.evaluate, params.decision
    rank = spark_stats.ranking(test, SCORE, max_fpr=float(ev.max_fpr)).iloc[0]
    k = max(int(round(rows * float(ev.top_k_fraction))), 1)
    missed, false_alarms = positives - caught, flags - caught
    return {
        "pr_auc": rank["pr_auc"],
        "roc_auc": rank["roc_auc"],
        "precision_at_k": spark_stats.top_fraction_positives(test, SCORE, k) / k,
        "recall_at_fpr": rank["recall_at_fpr"],
        "expected_cost": (missed * float(dec.cost_false_negative) + false_alarms * float(dec.cost_false_positive)) / rows,
        "flag_rate": flags / rows,
        "fraud_rate": positives / rows,
        "threshold": threshold,
    }
{%- endif %}


def main() -> int:
    """Write ``reports/metrics.json`` and the plots from the test set scored on Spark; log both to the training run."""
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    pipeline = model.load(config.MODEL)
    facts = use_case.load()
    bench_scorer = benchmark.load_scorer(contract)
    spark = get_session(params)
    scorers = {SCORE: lambda frame: model.scores(pipeline, frame, contract), BENCHMARK_SCORE: bench_scorer}
    test = spark_stats.with_scores(spark_stats.read_test(spark, contract), scorers).cache()
    raw = figures(test, meta.threshold, params)
    rows = test.count()
    result = metrics.rounded(raw, rows)
    headline = facts.headline_metric
    bench_rank = spark_stats.ranking(test, BENCHMARK_SCORE).iloc[0]
    sample, how = spark_stats.sample_rows(test, spark_stats.SAMPLE_ROWS, params.seed, [LABEL, SCORE, BENCHMARK_SCORE])
    y, score = sample[LABEL].to_numpy(), sample[SCORE].to_numpy()
    low, high = benchmark.paired_interval(y, score, sample[BENCHMARK_SCORE].to_numpy(), headline, params.benchmark, params.seed)
    values = {"roc_auc": bench_rank["roc_auc"], "pr_auc": bench_rank["pr_auc"]}
    bench = benchmark.section(values, raw[headline], headline, low, high, params.benchmark) | {"resampled": how}
    # model.kind: scorecard: the model is the benchmark itself (evaluate.py says why this is recorded).
    section = bench | {"model_is_benchmark": meta.kind == "scorecard"}
    MetricsReport.parse(result | {"benchmark": section}, config.METRICS).write(config.METRICS)
    written = plots(y, score, meta.threshold, sample[BENCHMARK_SCORE].to_numpy())
    test.unpersist()
    log.info("metrics from Spark aggregations of all %d held-out rows; the interval and the plots from %s", rows, how)
    record(meta, result, bench, written)
    return 0


if __name__ == "__main__":
    entry_point(main)
