"""Stage ``fairness`` of a spark repository: the same report as ``evaluation/fairness.py`` from Spark aggregations.

The test set is scored on Spark and joined to the protected attributes on the id column there.
Per attribute, the group table is four sums per group (rows, positives, flags, true positives)
and the headline metric within each group an exact ranking aggregation. The bootstrap needs no
rows either: ``group_stats._Resampler`` draws from the distinct count patterns of the resampled
units (rows, or data subjects) and how many units share each, and those are a group-by of a
group-by here. So the intervals are the pandas stage's, draw for draw, at any size.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..core import config, model, use_case
from ..core.contract import Contract
from ..core.errors import DataError, StageOrderError
from ..core.params import FairnessParams
from ..core.reports import AttributeFairness
from ..core.spark import get_session
from ..core.stage import LOGGER, entry_point
from . import fairness, spark_stats
from .group_stats import _Resampler, _table_from_sums, assess_table
from .spark_stats import LABEL, SCORE

log = logging.getLogger(LOGGER)
GROUP = "__group"
UNIT_COLUMNS = ["rows", "positives", "flags", "caught"]


def resampler(df, index: pd.Index, subject: str | None) -> _Resampler:
    """The bootstrap's resampler from the count patterns of the units (subjects within a group, else rows)."""
    from pyspark.sql import functions as F

    y, flag = F.col(LABEL), F.col("__flagged")
    if subject is None:
        units = df.select(GROUP, F.lit(1).alias("rows"), y.alias("positives"), flag.alias("flags"), (y * flag).alias("caught"))
    else:
        units = df.groupBy(GROUP, subject).agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(y).alias("positives"),
            F.sum(flag).alias("flags"),
            F.sum(y * flag).alias("caught"),
        )
    found = units.groupBy(GROUP, *UNIT_COLUMNS).count().toPandas()
    codes = pd.Index(index).get_indexer(found[GROUP].astype(str))
    stats = np.column_stack([codes, *(found[c].to_numpy(dtype=np.int64) for c in UNIT_COLUMNS)]).astype(np.int64)
    order = np.lexsort(stats.T[::-1])  # as np.unique(axis=0) sorts them: the same draws as pandas
    multiplicity = found["count"].to_numpy(dtype=np.int64)[order]
    return _Resampler(stats[order], multiplicity, len(index), int(multiplicity.sum()))


def attribute(df, name: str, subject: str | None, settings: FairnessParams, seed: int) -> AttributeFairness:
    """One protected attribute's group table, summaries and intervals, as ``group_stats.assess_attribute`` gives them."""
    from pyspark.sql import functions as F

    df = df.withColumn(GROUP, spark_stats.group_column(name))
    y, flag = F.col(LABEL), F.col("__flagged")
    sums = spark_stats.counts(df, [GROUP], {"n": F.lit(1), "positives": y, "flags": flag, "caught": y * flag})
    index = pd.Index(sums[GROUP].astype(str), name="group")
    table = _table_from_sums(*(sums[c].to_numpy(dtype=float) for c in ("n", "positives", "flags", "caught")), index)
    headline = use_case.load().headline_metric
    rank = spark_stats.ranking(df, SCORE, by=[GROUP])
    within = rank[headline].where((rank["positives"] > 0) & (rank["negatives"] > 0))  # one class: undefined, as pandas
    table[headline] = within.set_axis(rank.index.astype(str)).reindex(table.index)
    found = assess_table(table, resampler(df, index, subject), settings, seed, f"fairness: {name}")
    return AttributeFairness.model_validate(found)


def scored(test, protected, contract: Contract, pipeline, threshold: float):
    """The test set (``spark_stats.read_test``) scored on Spark and joined to its protected attributes on the id column."""
    from pyspark.sql import functions as F

    leaked = sorted(set(contract.protected) & set(test.columns))
    if leaked:
        raise DataError(f"{config.TEST} holds protected attribute(s) {leaked}: they must be stored apart (prepare stage)")
    key = contract.row_key
    if key not in test.columns or key not in protected.columns:
        raise StageOrderError(f"{config.TEST} and {config.PROTECTED} share no row key {key!r}: rerun the prepare stage")
    attrs = [c for c in contract.protected if c in protected.columns]
    keep = [
        key,
        LABEL,
        spark_stats.POSITION,
        *contract.features,
        *([contract.subject] if contract.subject in test.columns else []),
    ]
    test = spark_stats.with_scores(
        test.select(*dict.fromkeys(keep)), {SCORE: lambda frame: model.scores(pipeline, frame, contract)}
    )
    test = test.withColumn("__flagged", (F.col(SCORE) >= F.lit(threshold)).cast("long"))
    return test.join(protected.select(key, *attrs), on=key, how="left"), attrs


def main() -> int:
    """Write ``reports/fairness.json`` from Spark aggregations, log it to the run, and exit 1 when a gate fails."""
    params, contract, meta = fairness.stage_inputs()
    spark = get_session(params)
    test = spark_stats.read_test(spark, contract)
    protected = spark.read.parquet(str(config.PROTECTED.resolve()))
    df, attrs = scored(test, protected, contract, model.load(config.MODEL), meta.threshold)
    df = df.cache()
    subject = contract.subject if contract.subject in df.columns else None
    figures = {name: attribute(df, name, subject, params.fairness, params.seed + i) for i, name in enumerate(attrs)}
    report = fairness.report(figures, meta.threshold, df.count(), params.fairness, "subject" if subject else "row")
    df.unpersist()
    return fairness.publish(report, meta)


if __name__ == "__main__":
    entry_point(main)
