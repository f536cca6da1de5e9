"""PSI / CSI on Spark: new data counted into the reference's fixed bins by Spark aggregations.

The twin of monitoring/drift.py for data that does not fit one machine. Only the counts are
computed on Spark (one ``groupBy`` per column, a few dozen rows back to the driver); the shares
and the index are drift.py's own functions on those counts, so on the same data the result is
the pandas one to the last bit (tests/test_spark.py holds it to 1e-12). Conventions are drift.py's:
bin ``i`` holds ``e_i < x <= e_{i+1}``; nulls, NaN and values that are not numbers are one more bin;
categorical levels are spelt by ``drift.level_key``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.contract import Contract
from . import drift


def _numeric(column: str):
    from pyspark.sql import functions as F

    x = F.col(column).try_cast("double")
    return x, x.isNotNull() & ~F.isnan(x)  # Spark orders NaN above every number: it is a null here


def numeric_counts(df, column: str, edges: list[float]) -> tuple[np.ndarray, int]:
    """Counts per bin (``len(edges) + 1`` bins) and the count of nulls, as ``drift.numeric_counts`` gives."""
    from pyspark.sql import functions as F

    x, valid = _numeric(column)
    # numpy's searchsorted(side="left"): the bin of x is the number of edges strictly below it.
    index = sum((x > F.lit(float(e))).cast("int") for e in edges) if edges else F.lit(0)
    rows = df.select(F.when(valid, index).otherwise(F.lit(-1)).alias("bin")).groupBy("bin").count().collect()
    counts = np.zeros(len(edges) + 1, dtype=np.int64)
    nulls = 0
    for row in rows:
        if row["bin"] < 0:
            nulls = int(row["count"])
        else:
            counts[row["bin"]] = int(row["count"])
    return counts, nulls


def level_column(df, column: str, numeric_categories: bool):
    """The column spelt as ``drift.level_key`` spells a level (whole numbers without ``.0``; True/False)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    kind = df.schema[column].dataType
    if isinstance(kind, BooleanType):
        return F.when(F.col(column), F.lit("True")).when(~F.col(column), F.lit("False"))
    if numeric_categories:
        x, valid = _numeric(column)
        whole = F.when(x == F.floor(x), x.cast("long").cast("string")).otherwise(x.cast("string"))
        return F.when(valid, whole)
    return F.col(column).cast("string")


def categorical_counts(df, column: str, numeric_categories: bool = False) -> tuple[dict[str, int], int]:
    """Counts per level and the count of nulls, as ``drift.categorical_counts`` gives."""
    rows = df.select(level_column(df, column, numeric_categories).alias("level")).groupBy("level").count().collect()
    counts = {str(r["level"]): int(r["count"]) for r in rows if r["level"] is not None}
    nulls = sum(int(r["count"]) for r in rows if r["level"] is None)
    return counts, nulls


def compare(reference: dict[str, Any], df, column: str, epsilon: float, numeric_categories: bool = False) -> dict[str, Any]:
    """``drift.compare`` for the Spark column ``df[column]``: the index, bins and aligned shares."""
    n = df.count()
    if n == 0:
        raise ValueError("no values to compare with the reference")
    # drift.compare's arithmetic on the counts, step for step (the same operations give the same bits).
    if reference["kind"] == "numeric":
        counts, nulls = numeric_counts(df, column, reference["edges"])
        labels = drift.bin_labels(reference["edges"])
        expected = list(reference["shares"])
        actual = (counts / n).tolist()
    else:
        counts_by_level, nulls = categorical_counts(df, column, numeric_categories)
        levels = list(reference["levels"])
        unseen = sorted(set(counts_by_level) - set(levels))
        labels = levels + [f"{u} (unseen)" for u in unseen]
        expected = [reference["levels"][k] for k in levels] + [0.0] * len(unseen)
        actual = [counts_by_level.get(k, 0) / n for k in levels + unseen]
    labels.append(drift.NULL)
    expected.append(reference["null"])
    actual.append(nulls / n)
    return {
        "value": drift.psi(np.array(expected), np.array(actual), epsilon),
        "bins": labels,
        "expected": expected,
        "actual": actual,
    }


def with_scores(df, pipeline, contract: Contract, column: str = "__score"):
    """``df`` with the model's score of each row, computed on the executors by ``model.scores``."""
    import pandas as pd
    from pyspark.sql.types import DoubleType, StructField, StructType

    from ..core import model

    schema = StructType([*df.schema.fields, StructField(column, DoubleType())])

    def score(batches):
        for batch in batches:
            yield (
                batch.assign(**{column: model.scores(pipeline, batch, contract)})
                if len(batch)
                else pd.DataFrame(columns=[f.name for f in schema.fields])
            )

    return df.mapInPandas(score, schema=schema)


def figures(df, reference: dict[str, Any], contract: Contract, pipeline, epsilon: float) -> dict[str, dict[str, Any]]:
    """PSI of the score and CSI of every feature of ``df`` against ``reference`` (models/reference.json as a dict)."""
    scored = with_scores(df, pipeline, contract).cache()
    try:
        return scored_figures(scored, reference, contract, epsilon)
    finally:
        scored.unpersist()


def scored_figures(scored, reference: dict[str, Any], contract: Contract, epsilon: float, score_column: str = "__score"):
    """:func:`figures` for rows ``with_scores`` has already scored (the monitor reuses the scores)."""
    out = {"score": {"kind": "psi", **compare(reference["score"], scored, score_column, epsilon)}}
    for name, entry in reference["features"].items():
        out[name] = {"kind": "csi", **compare(entry, scored, name, epsilon, bool(contract[name].numeric_categories))}
    return out


def profiles(df, contract: Contract, bins: int, score_column: str) -> dict[str, Any]:
    """The reference profile of every feature and of the score, counted on Spark.

    Edges are Spark's ``percentile_approx`` at the 1/n .. (n-1)/n quantiles (rank error at most
    one in a million, values from the data), ties merged; pandas interpolates between values, so
    the two engines' edges may differ slightly. Monitoring never re-bins: either reference, once
    written, is the yardstick, and counts into it are equal on both engines.
    """
    from pyspark.sql import functions as F

    n = max(df.count(), 1)
    numeric = [*[f for f in contract.model_input_order() if f in contract.numeric_features], score_column]
    quantiles = list(np.arange(1, bins) / bins)
    row = (
        df.select(*[F.percentile_approx(_numeric(c)[0], quantiles, 1_000_000).alias(c) for c in numeric]).first()
        if numeric
        else {}
    )
    out: dict[str, Any] = {}
    for name in [*contract.model_input_order(), score_column]:
        if name in numeric:
            edges = [float(e) for e in np.unique(np.asarray(row[name] or [], dtype="float64"))]
            counts, nulls = numeric_counts(df, name, edges)
            out[name] = {"kind": "numeric", "edges": edges, "shares": [c / n for c in counts.tolist()], "null": nulls / n}
        else:
            counts_by_level, nulls = categorical_counts(df, name, bool(contract[name].numeric_categories))
            out[name] = {
                "kind": "categorical",
                "levels": {k: counts_by_level[k] / n for k in sorted(counts_by_level)},
                "null": nulls / n,
            }
    return out
