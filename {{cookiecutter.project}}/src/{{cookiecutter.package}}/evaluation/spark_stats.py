"""Held-out statistics on Spark: the test set scored on Spark and measured by aggregations, never collected.

The test split is scored where it lies, with ``mapInPandas`` and the same ``model.scores`` the
pandas stages call (the path ``make score ENGINE=spark`` takes), and every statistic that needs
every row is a Spark aggregation of it: counts and sums by group, grade or band, and the ranking
metrics (ROC-AUC, average precision, KS, DeLong's variance, recall at a false-positive rate)
from running sums over the distinct scores in score order.

Running sums are a distributed sort (:func:`running_sums`): rows are cut into ``RANGES`` score
ranges at approximate quantiles, each range's running sums are a window over that range only
(never one window over the whole set), and each range is offset by the totals of the ranges
before it, a table of ``RANGES`` rows. The ranges only spread the work; the sums are exact.

What needs rows rather than sums (the benchmark's bootstrap interval, the plots, permutation
importance) runs on a seeded sample drawn on Spark (:func:`sample_rows`), and says so.
Imported only by the Spark stages (spark bakes).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core import config
from ..core.contract import Contract

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

POSITION = "__position"  # the row's place in the test split's file (ties in score order keep it, as pandas' stable sorts)
LABEL = "__y"  # 1 where the target is the contract's positive label
SCORE = "__score"  # the model's probability of the positive class
RANGE = "__range"
# Score ranges of the distributed running sums: enough to spread the work over a cluster's
# cores, few enough that the offsets table stays a handful of rows per group.
RANGES = 64
# The plots, the benchmark's bootstrap interval and permutation importance draw at most this many rows.
SAMPLE_ROWS = 200_000


def read_test(spark: SparkSession, contract: Contract) -> DataFrame:
    """The prepared test split with its row position and 0/1 label."""
    from pyspark.sql import functions as F

    # Absolute: Spark resolves relative paths against the directory its JVM started in.
    df = spark.read.parquet(str(config.TEST.resolve()))
    label = (F.col(contract.target) == F.lit(contract.positive_label)).cast("long")
    return df.withColumns({POSITION: F.monotonically_increasing_id(), LABEL: label})


def with_scores(df: DataFrame, scorers: dict[str, Callable[[pd.DataFrame], np.ndarray]]) -> DataFrame:
    """``df`` with one double column per scorer, computed on the executors batch by batch (mapInPandas)."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([*df.schema.fields, *(StructField(name, DoubleType(), False) for name in scorers)])

    def score_batches(batches):
        for frame in batches:
            yield frame.assign(**{name: np.asarray(fn(frame), dtype=np.float64) for name, fn in scorers.items()})

    return df.mapInPandas(score_batches, schema)


def running_sums(df: DataFrame, order: Sequence[str], sums: Sequence[str], by: Sequence[str] = ()) -> DataFrame:
    """``df`` with ``cum_<c>`` for each column ``c`` of ``sums``: its running sum in ``order`` (ascending) within ``by``.

    Inclusive of the row itself; ``total_<c>`` is the sum over the whole ``by`` group. The first
    ``order`` column decides the range a row falls in, so rows equal in it share a range and the
    window orders them by the other columns.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = order[0]
    probabilities = [i / RANGES for i in range(1, RANGES)]
    cuts = sorted(set(df.approxQuantile(first, probabilities, 1.0 / (4 * RANGES))))
    part = functools.reduce(operator.add, [(F.col(first) > F.lit(c)).cast("int") for c in cuts], F.lit(0))
    df = df.withColumn(RANGE, part)
    totals = df.groupBy(*by, RANGE).agg(*(F.sum(c).alias(c) for c in sums)).toPandas().sort_values([*by, RANGE])
    grouped = totals.groupby(list(by), sort=False)[list(sums)] if by else totals[list(sums)]
    before = (grouped.cumsum() - totals[list(sums)]).astype("int64").add_prefix("__off_")
    if by:
        whole = totals.groupby(list(by), sort=False)[list(sums)].transform("sum")
    else:
        whole = totals[list(sums)] * 0 + totals[list(sums)].sum()
    whole = whole.astype("int64").add_prefix("total_")
    parts = [totals[[*by, RANGE]], before, whole]
    offsets = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
    spark = df.sparkSession
    window = Window.partitionBy(*by, RANGE).orderBy(*order).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    out = df.join(F.broadcast(spark.createDataFrame(offsets)), on=[*by, RANGE])
    out = out.withColumns({f"cum_{c}": F.sum(c).over(window) + F.col(f"__off_{c}") for c in sums})
    return out.drop(RANGE, *(f"__off_{c}" for c in sums))


def ranking(df: DataFrame, score: str, by: Sequence[str] = (), max_fpr: float | None = None) -> pd.DataFrame:
    """Ranking statistics of ``score`` against the label, exact, per ``by`` group (one row, no ``by``).

    Columns: ``positives``, ``negatives``, ``roc_auc`` (ties count half, as scikit-learn's),
    ``pr_auc`` (scikit-learn's average precision), ``ks`` (the largest TPR - FPR over thresholds),
    ``se`` (DeLong's standard error: Sun & Xu's placement values, summed per distinct score), and
    with ``max_fpr`` ``recall_at_fpr`` (the largest TPR at an FPR at most ``max_fpr``).
    """
    from pyspark.sql import functions as F

    levels = df.groupBy(*by, score).agg(F.sum(LABEL).alias("pos"), (F.count(F.lit(1)) - F.sum(LABEL)).alias("neg")).cache()
    keys = list(by) or None
    # One pass from the highest score down: what flagging at each score catches (cum_*), and below it.
    down = running_sums(levels.withColumn("__desc", -F.col(score)), ["__desc"], ["pos", "neg"], by)
    p_all, n_all = F.col("total_pos"), F.col("total_neg")
    tpr, fpr = F.col("cum_pos") / p_all, F.col("cum_neg") / n_all
    # DeLong placements, doubled to stay integers: a positive's is the negatives below it plus half
    # those tied (t); a negative's the positives above it plus half those tied (u).
    t = 2 * (n_all - F.col("cum_neg")) + F.col("neg")
    u = 2 * F.col("cum_pos") - F.col("pos")
    aggregates = [
        F.max(p_all).alias("P"),
        F.max(n_all).alias("N"),
        F.sum(F.col("pos") * t).alias("auc2"),
        F.sum(F.col("pos") * t.cast("double") * t.cast("double")).alias("sq10"),
        F.sum(F.col("neg") * u.cast("double") * u.cast("double")).alias("sq01"),
        F.sum(F.col("pos") * F.col("cum_pos") / (F.col("cum_pos") + F.col("cum_neg"))).alias("ap_num"),
        F.max(tpr - fpr).alias("ks"),
    ]
    if max_fpr is not None:
        aggregates.append(F.max(F.when(fpr <= F.lit(max_fpr), tpr)).alias("recall_at_fpr"))
    joined = down.groupBy(*by).agg(*aggregates)
    out = joined.toPandas()
    levels.unpersist()
    if keys:
        out = out.sort_values(keys).reset_index(drop=True)
    p, n = out["P"].astype(float), out["N"].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = out["auc2"].astype(float) / (2.0 * p * n)
        # Sample variances of the placements (ddof 1) from their sums and sums of squares.
        var10 = (out["sq10"] / (4.0 * n * n) - p * auc * auc) / (p - 1.0)
        var01 = (out["sq01"] / (4.0 * p * p) - n * auc * auc) / (n - 1.0)
        result = pd.DataFrame(
            {
                "positives": out["P"].astype("int64"),
                "negatives": out["N"].astype("int64"),
                "roc_auc": auc,
                "pr_auc": out["ap_num"].astype(float) / p,
                "ks": np.maximum(out["ks"].astype(float), 0.0),  # the curve starts at (0, 0)
                "se": np.sqrt(var10 / p + var01 / n),
            }
        )
    if max_fpr is not None:
        result["recall_at_fpr"] = out["recall_at_fpr"].astype(float).fillna(0.0)
    if keys:
        result.index = pd.MultiIndex.from_frame(out[keys]) if len(keys) > 1 else pd.Index(out[keys[0]], name=keys[0])
    return result


def top_fraction_positives(df: DataFrame, score: str, k: int) -> int:
    """Positives among the ``k`` highest scores, ties in file order (as ``np.argsort(-score, kind="stable")``)."""
    from pyspark.sql import functions as F

    levels = df.groupBy(score).agg(F.sum(LABEL).alias("pos"), F.count(F.lit(1)).alias("rows"))
    down = running_sums(levels.withColumn("__desc", -F.col(score)), ["__desc"], ["pos", "rows"])
    edge = down.where(F.col("cum_rows") >= k).orderBy("__desc").limit(1).collect()[0]
    above = int(edge["cum_rows"] - edge["rows"])
    positives_above = int(edge["cum_pos"] - edge["pos"])
    # The tied rows at the edge score: only the first ones in file order make the top k.
    tied = df.where(F.col(score) == F.lit(float(edge[score]))).orderBy(POSITION).limit(k - above)
    return positives_above + int(tied.agg(F.sum(LABEL)).collect()[0][0] or 0)


def row_ranks(df: DataFrame, score: str) -> DataFrame:
    """``df`` with ``cum___one``: each row's 1-based place in descending score order, ties in file order."""
    from pyspark.sql import functions as F

    return running_sums(df.withColumns({"__desc": -F.col(score), "__one": F.lit(1)}), ["__desc", POSITION], ["__one"])


def band_of_rank(rank: Any, rows: int, bands: int) -> Any:
    """The band (1-based) of 0-based rank ``rank``: ``np.array_split``'s cut, the first bands one row larger."""
    from pyspark.sql import functions as F

    size, extra = divmod(rows, bands)
    big = (size + 1) * extra
    return F.when(rank < big, F.floor(rank / (size + 1))).otherwise(extra + F.floor((rank - big) / max(size, 1))) + 1


def sample_rows(df: DataFrame, limit: int, seed: int, columns: Sequence[str], by_label: bool = False) -> tuple[pd.DataFrame, str]:
    """At most about ``limit`` rows (every row when there are no more), in file order, and how they were drawn."""
    total = df.count()
    if total <= limit:
        drawn, how = df, f"every one of the {total} held-out rows"
    else:
        fraction = limit / total
        if by_label:
            drawn = df.sampleBy(LABEL, {0: fraction, 1: fraction}, seed=seed)
            how = f"a sample stratified by the target, each class at rate {fraction:.6g}"
        else:
            drawn = df.sample(fraction=fraction, seed=seed)
            how = f"a sample at rate {fraction:.6g}"
        how += f" (Bernoulli on Spark, seed {seed}) of the {total} held-out rows"
    rows = drawn.orderBy(POSITION).select(*columns).toPandas()
    return rows, f"{len(rows)} rows: {how}"


def group_column(name: str) -> Any:
    """A protected attribute as the group names pandas gives them (missing values in a group of their own)."""
    from pyspark.sql import functions as F

    from .fairness import MISSING_GROUP

    return F.coalesce(F.col(name).cast("string"), F.lit(MISSING_GROUP))


def counts(df: DataFrame, by: Sequence[Any], values: dict[str, Any]) -> pd.DataFrame:
    """Sums of ``values`` (name -> column expression) per ``by``, sorted by ``by``."""
    from pyspark.sql import functions as F

    out = df.groupBy(*by).agg(*(F.sum(expr).alias(name) for name, expr in values.items())).toPandas()
    keys = [c for c in out.columns if c not in values]
    return out.sort_values(keys).reset_index(drop=True) if keys else out
