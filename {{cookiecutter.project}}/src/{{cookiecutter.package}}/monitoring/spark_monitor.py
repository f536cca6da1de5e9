"""`make monitor` on Spark: the pandas monitor's report, with the batch read, checked, scored and counted by Spark.

The twin of monitoring/monitor.py's ``measure`` for batches past one machine; a spark bake's
`make monitor` runs it. The batch is a Parquet file or directory or a CSV file, local or remote
as prepare reads it (``s3a://``, ``abfss://``, ``gs://``). Data quality is the contract's Great
Expectations suite on a Spark datasource (data/spark_validate.py); the score is computed on the
executors and PSI/CSI are Spark counts into the reference's fixed bins (spark_drift.py), equal
to the pandas figures on the same data. The rest (audit log, verdicts, report files, exit status)
is monitor.py's own. Only a labelled batch's performance section needs every labelled row: its
target, score and protected attributes alone are collected, in batch order (a few bytes a row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core import config, model
from ..core.contract import Contract
from ..core.params import Params
from ..core.reports import ReferenceReport
from ..core.spark import get_session
from ..core.stage import entry_point
from ..data import spark_validate
from ..data.spark_prepare import POSITION, REMOTE, missing_as_null, with_timestamp
from . import monitor, spark_drift
from .monitor import MonitorError

SCORE = "__score"


def read_batch(spark, path: str):
    """The batch as a Spark DataFrame and its row count; a one-line error naming it when it cannot be read."""
    remote = path.startswith(REMOTE)
    local = Path(path)
    if not remote and not local.exists():
        raise MonitorError(f"batch {path}: file not found (pass BATCH=<csv or parquet file, or a Parquet directory>)")
    name = path.lower().rstrip("/")
    if name.endswith(".csv"):
        kind = "csv"
    elif name.endswith((".parquet", ".pq")) or remote or local.is_dir():
        kind = "parquet"
    else:
        raise MonitorError(f"batch {path}: unsupported file type {local.suffix.lower()!r}; use .csv or .parquet")
    if not remote and local.is_file() and local.stat().st_size == 0:
        raise MonitorError(f"batch {path}: not a readable {kind} file: the file is empty (0 bytes)")
    where = path if remote else str(local.resolve())  # Spark resolves relative paths against its JVM's start directory
    try:
        if kind == "csv":  # types inferred as pandas infers them
            df = spark.read.option("header", True).option("inferSchema", True).csv(where)
        else:
            df = spark.read.parquet(where)
        rows = df.count()
    except Exception as exc:  # Spark raises AnalysisException, Py4J and Connect errors for unreadable input
        raise MonitorError(f"batch {path}: not a readable {kind} file: {str(exc).strip().splitlines()[0]}") from None
    if rows == 0:
        raise MonitorError(f"batch {path}: no rows")
    return df, rows


def has_labels(df, contract: Contract) -> bool:
    """Labels have arrived when the target column is present and not entirely empty (monitor.has_labels)."""
    from pyspark.sql import functions as F

    return contract.target in df.columns and df.filter(F.col(contract.target).isNotNull()).limit(1).count() > 0


def measure(batch_path: Path | str, contract: Contract, params: Params, ref: ReferenceReport, epsilon: float) -> monitor.Measured:
    """monitor.measure on Spark: data quality, then (every feature present) score, drift and decision rate."""
    from pyspark.sql import functions as F

    spark = get_session(params)
    raw, rows = read_batch(spark, str(batch_path))
    # As the pandas monitor reads it: NaN is missing, and CSV's text dates are dates (text that is none, missing).
    df = with_timestamp(missing_as_null(raw), contract)
    labelled = has_labels(df, contract)
    quality = spark_validate.run_validation(spark, df, monitor.batch_contract(contract, df.columns, labelled), params)
    missing = [f for f in contract.features if f not in df.columns]
    if missing:
        return monitor.Measured(rows, labelled, quality.model_dump(), {}, None, None)
    pipeline = model.load(config.MODEL)
    scored = spark_drift.with_scores(df.withColumn(POSITION, F.monotonically_increasing_id()), pipeline, contract, SCORE)
    scored = scored.persist()  # every figure below is one more pass over the scores
    try:
        figures = spark_drift.scored_figures(scored, _reference(ref), contract, epsilon, SCORE)
        rate = scored.agg(F.avg((F.col(SCORE) >= F.lit(ref.threshold)).cast("double"))).first()[0]
        rows_for_performance = _labelled_rows(scored, contract) if labelled and quality.success else None
    finally:
        scored.unpersist()
    return monitor.Measured(
        rows=rows,
        labelled=labelled,
        data_quality=quality.model_dump(),
        figures=figures,
        decision_rate=float(rate),
        labelled_rows=None if rows_for_performance is None else lambda: rows_for_performance,
    )


def _reference(ref: ReferenceReport) -> dict[str, Any]:
    return {"score": ref.score.model_dump(), "features": {k: v.model_dump() for k, v in ref.features.items()}}


def _labelled_rows(scored, contract: Contract):
    """The target, protected attributes and score of every row, in batch order: what `performance` reads."""
    columns = [contract.target, *[c for c in contract.protected if c in scored.columns]]
    frame = scored.orderBy(POSITION).select(*columns, SCORE).toPandas()
    return frame[columns], frame[SCORE].to_numpy(dtype="float64")


def main(argv: list[str] | None = None) -> int:
    """``make monitor`` in a spark bake: monitor.main with the batch measured on Spark."""
    return monitor.main(argv, engine=measure)


if __name__ == "__main__":
    entry_point(main)
