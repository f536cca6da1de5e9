"""Stage ``explain`` of a spark repository: permutation importance on a Spark-drawn sample, reason codes checked on every row.

Permutation importance scores the sample once per feature and repeat, so it runs on at most
``explain.max_rows`` held-out rows drawn on Spark, stratified by the target and seeded (every
row below that); ``permutation_importance.sample`` in reports/explain.json says how they were
drawn. The reason-code check judges rows, so it sees every one: ``explain.reason_code_summary``
runs on each Arrow batch on the executors and only its counts and largest error come back.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ..core import config, model, use_case
from ..core.contract import Contract, load_contract
from ..core.params import load_params
from ..core.reports import ExplainReport, ModelMeta
from ..core.spark import get_session
from ..core.stage import LOGGER, entry_point
from . import explain, spark_stats

log = logging.getLogger(LOGGER)


def reason_codes(test, pipeline, contract: Contract, threshold: float) -> dict[str, Any]:
    """``explain.reason_code_summary`` over every row of ``test``, batch by batch on the executors."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    empty = explain.reason_code_summary(pipeline, test.limit(0).toPandas(), contract, threshold)
    if not empty["available"]:
        return empty  # not additive: nothing to check, the reason is in the summary
    codes = list(empty["principal_reason_counts"])
    names = [f"__code{i}" for i in range(len(codes))]
    schema = StructType(
        [StructField("error", DoubleType()), StructField("declined", LongType())]
        + [StructField(name, LongType()) for name in names]
    )

    def summarise(batches):
        for frame in batches:
            part = explain.reason_code_summary(pipeline, frame, contract, threshold)
            counts = [part["principal_reason_counts"][code] for code in codes]
            yield pd.DataFrame([[part["max_additivity_error"], part["declined"], *counts]], columns=schema.fieldNames())

    total = (
        test.mapInPandas(summarise, schema)
        .agg(F.max("error").alias("error"), F.sum("declined").alias("declined"), *(F.sum(n).alias(n) for n in names))
        .collect()[0]
    )
    return empty | {
        "max_additivity_error": float(total["error"] or 0.0),
        "declined": int(total["declined"] or 0),
        "principal_reason_counts": {code: int(total[name] or 0) for code, name in zip(codes, names, strict=True)},
    }


def main() -> int:
    """Write ``reports/explain.json`` and the importance plot; fail if reason codes are not exact."""
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    pipeline = model.load(config.MODEL)
    spark = get_session(params)
    test = spark_stats.read_test(spark, contract)
    rows = test.count()
    columns = list(dict.fromkeys([*contract.features, contract.target]))
    sample, how = spark_stats.sample_rows(test, params.explain.max_rows or rows, params.seed, columns, by_label=True)
    scoring = use_case.load().explain_scoring
    importance = explain.permutation_importance(pipeline, sample, contract, scoring, params.explain.n_repeats, params.seed)
    log.info("permutation importance on %s", how)
    checked = reason_codes(test.select(*columns), pipeline, contract, meta.threshold)
    report = ExplainReport(
        permutation_importance=importance | {"held_out_rows": rows, "sample": how},
        reason_codes=checked,
    )
    return explain.publish(report, meta, rows)


if __name__ == "__main__":
    entry_point(main)
