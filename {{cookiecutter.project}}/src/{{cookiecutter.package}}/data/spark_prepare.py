"""Stage ``prepare`` on Spark: the pandas stage's twin (data/prepare.py), for data past one machine.

Reads a Parquet file or directory, or a CSV file, wherever Spark can (local paths, ``s3a://``,
``abfss://``, ``gs://``). Pseudonyms come from the pandas stage's own function, run inside
Spark (a pandas UDF per PII column), so a value gets the same pseudonym bitwise on either engine.
Writes the same files as the pandas stage (one Parquet file each, rows in the same order), so
every later stage reads them unchanged; Spark writes them one task each, never through the driver.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from ..core import config
from ..core.contract import Contract, load_contract
from ..core.params import load_params
from ..core.reports import PrepareSummary
from ..core.spark import get_session
from ..core.stage import LOGGER, entry_point
from . import prepare as pandas_prepare
from .prepare import KEY_ENV, PrepareError, _pseudonyms, is_synthetic, read_ledger, resolve_key

log = logging.getLogger(LOGGER)
# A row's position in the input: keeps the pandas stage's order (a stable sort on the timestamp).
POSITION = "__position"
REMOTE = ("s3a://", "s3://", "abfss://", "abfs://", "wasbs://", "gs://", "hdfs://", "dbfs:/")


def read_input(spark, path: str):
    """The input as a Spark DataFrame: Parquet (file or directory) or CSV with a header."""
    remote = path.startswith(REMOTE)
    if not remote and not Path(path).exists():
        raise PrepareError(f"params.yaml: data.path points at {path}, which does not exist")
    # Spark resolves a relative path against the directory its JVM started in, not this process's.
    where = path if remote else str(Path(path).resolve())
    kind = "csv" if path.lower().rstrip("/").endswith(".csv") else "parquet"
    if not remote and Path(path).is_file() and Path(path).stat().st_size == 0:
        raise PrepareError(f"{path}: the file is empty (0 bytes)")
    try:
        if kind == "csv":
            # Types inferred as pandas infers them (whole numbers, decimals, text).
            return spark.read.option("header", True).option("inferSchema", True).csv(where)
        return spark.read.parquet(where)
    except Exception as exc:  # Spark raises AnalysisException and several Py4J types for unreadable input
        raise PrepareError(f"{path}: not a readable {kind} input: {str(exc).splitlines()[0]}") from None


def missing_as_null(df):
    """NaN in floating columns as null: pandas' missing value, which Parquet from pandas stores as null."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    floats = {f.name for f in df.schema.fields if isinstance(f.dataType, (DoubleType, FloatType))}
    return df.select(*[F.when(~F.isnan(c), F.col(c)).alias(c) if c in floats else F.col(c) for c in df.columns])


def pseudonymise(df, contract: Contract, key: bytes):
    """Every PII column replaced by the pandas stage's pseudonym, computed on the executors."""
    from pyspark.sql.functions import pandas_udf

    for column in contract.pii:
        if column in df.columns:
            df = df.withColumn(column, pandas_udf(_digests(key, column), "string")(df[column]))
    return df


def _digests(key: bytes, column: str):
    # A closure per column: pandas_udf reads the function's signature, so the column cannot be a default argument.
    def digests(values: pd.Series) -> pd.Series:
        return pd.Series(_pseudonyms(key, column, values), index=values.index, dtype=object)

    return digests


def with_timestamp(df, contract: Contract):
    """The timestamp as a timezone-less timestamp (pandas' datetime64), text that is not a date as null."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    ts = contract.timestamp
    if ts is None or ts not in df.columns:
        return df
    column = F.try_to_timestamp(F.col(ts)) if isinstance(df.schema[ts].dataType, StringType) else F.col(ts)
    return df.withColumn(ts, column.cast("timestamp_ntz"))


# Rank error of the approximate quantile that brackets a cut (Spark's percentile_approx accuracy).
# It sets only how many rows are counted exactly around the cut (a few per 1e5 of the data);
# the cut itself is always exact (see ``lowest``).
CUT_ACCURACY = 100_000


def lowest(df, k: int, order: str, tie: str | None = None, rows: int | None = None):
    """A condition true for exactly the ``k`` lowest rows of ``df`` by (``order``, then ``tie``): a distributed cut.

    No window, no sort of the whole data: ``percentile_approx`` brackets the value at rank ``k``
    (its rank error is at most ``rows / CUT_ACCURACY``), one aggregation checks the bracket holds
    that rank (widened until it does), and only the counts of the distinct values inside the
    bracket reach the driver. Rows tied on the cut value are cut the same way on ``tie`` (whose
    values are distinct). ``order`` has no nulls here; the caller orders its nulls.
    """
    from pyspark.sql import functions as F

    rows = df.count() if rows is None else rows
    if k <= 0:
        return F.lit(False)
    if k >= rows:
        return F.lit(True)
    col = F.col(order)
    width = 2.0 / CUT_ACCURACY
    while True:
        p = (k + 0.5) / rows
        bounds = [max(0.0, p - width), min(1.0, p + width)]
        lo, hi = df.select(F.percentile_approx(col, bounds, CUT_ACCURACY).alias("b")).first()["b"]
        below, inside = df.agg(
            F.count(F.when(col < F.lit(lo), 1)), F.count(F.when((col >= F.lit(lo)) & (col <= F.lit(hi)), 1))
        ).first()
        if below <= k < below + inside or width >= 1.0:
            break
        width *= 8  # the estimate missed (it cannot, by Spark's bound, but the cut must not depend on it)
    counts = df.filter((col >= F.lit(lo)) & (col <= F.lit(hi))).groupBy(order).count().orderBy(order).collect()
    for row in counts:
        if below + row["count"] > k:
            cut, ties = row[order], k - below  # the k-th row has value ``cut``; ``ties`` of its equals come first
            break
        below += row["count"]
    strictly = col < F.lit(cut)
    if not ties:
        return strictly
    if tie is None:
        raise ValueError(f"{order}: {row['count']} rows share the value at the cut and there is no column to order them")
    equal = df.filter(col == F.lit(cut))
    return strictly | ((col == F.lit(cut)) & lowest(equal, ties, tie, rows=row["count"]))


def split(df, contract: Contract, test_fraction: float, seed: int, rows: int):
    """Out-of-time split as the pandas stage makes it: the latest ``round(rows * test_fraction)`` rows are the test set.

    The pandas stage sorts stably by time, missing times last, so the order is (time, input
    position); the training rows are the first ``rows - n_test`` of it, found by ``lowest`` with
    aggregations only (the test set is the rest). Each part is then sorted (a distributed sort)
    to be written in that order.
    """
    from pyspark.sql import functions as F

    n_test = int(round(rows * test_fraction))
    n_train = rows - n_test
    ts = contract.timestamp
    if ts is not None:
        if ts not in df.columns:
            raise PrepareError(f"{contract.path} declares timestamp column {ts!r}, but the data has no such column")
        # Microseconds since 1970 counted on the wall clock (timestamp_ntz, no time zone): an
        # integer key, so the cut is compared as a number, never as a Python datetime literal.
        when = "__when"
        keyed = df.withColumn(when, F.expr(f"timestampdiff(MICROSECOND, TIMESTAMP_NTZ'1970-01-01 00:00:00', `{ts}`)"))
        dated = keyed.filter(F.col(when).isNotNull()).count() if rows else 0
        if rows and dated == 0:
            raise PrepareError(f"column {ts!r}: no value could be read as a date/time")
        if n_train <= dated:  # the cut falls among the dated rows; every undated row is in the test set
            cut = lowest(keyed.filter(F.col(when).isNotNull()), n_train, when, POSITION, dated)
            in_train = F.col(when).isNotNull() & cut
        else:  # every dated row trains, and the first undated ones by position
            undated = keyed.filter(F.col(when).isNull())
            in_train = F.col(when).isNotNull() | lowest(undated, n_train - dated, POSITION, rows=rows - dated)
        order = [F.col(ts).asc_nulls_last(), F.col(POSITION).asc()]
        return (
            keyed.filter(in_train).drop(when).orderBy(*order),
            keyed.filter(~in_train).drop(when).orderBy(*order),
        )
    # No timestamp: stratified at random by the target (seeded; not the pandas stage's rows). Each
    # class's test rows are its round(n * test_fraction) lowest seeded uniform draws.
    target = contract.target
    draw = "__draw"
    drawn = df.withColumn(draw, F.rand(seed))
    in_test = F.lit(False)
    for row in drawn.groupBy(target).count().collect():
        same = F.col(target).eqNullSafe(F.lit(row[target]))
        cls = drawn.filter(same)
        in_test = in_test | (same & lowest(cls, int(round(row["count"] * test_fraction)), draw, POSITION, row["count"]))
    return (
        drawn.filter(~in_test).drop(draw).orderBy(POSITION),
        drawn.filter(in_test).drop(draw).orderBy(POSITION),
    )


def write_one_file(df, path: Path) -> None:
    """``df`` as one Parquet file at ``path``, replacing it in one step (written by one task, in order)."""
    path = Path(path).resolve()  # Spark resolves relative paths against its JVM's start directory
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.spark.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        df.coalesce(1).write.mode("overwrite").parquet(str(staging))
        (part,) = staging.glob("part-*.parquet")
        os.replace(part, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare(spark, raw, contract: Contract, key: bytes, ledger: set[str], test_fraction: float, seed: int):
    """Return (train, test, protected, summary) as Spark DataFrames with no raw PII in any of them."""
    from pyspark.sql import functions as F

    rows_in = raw.count()
    declared = set(contract.column_names)
    dropped = [c for c in raw.columns if c not in declared]
    df = missing_as_null(raw.drop(*dropped)).withColumn(POSITION, F.monotonically_increasing_id())
    if contract.id_column is None:
        # No id column: key each row by its position in the input, as the pandas stage does.
        df = df.withColumn(contract.row_key, row_index(df))
        df = df.select(contract.row_key, *[c for c in df.columns if c != contract.row_key])
    # Every later step reads the pseudonymised rows: hash once, keep them (memory, then disk).
    df = with_timestamp(pseudonymise(df, contract, key), contract).persist()
    erased = 0
    if contract.subject is not None and ledger and contract.subject in df.columns:
        erased = df.filter(F.col(contract.subject).isin(sorted(ledger))).count()
        df = df.filter(~F.col(contract.subject).isin(sorted(ledger)) | F.col(contract.subject).isNull())
    protected_cols = [c for c in contract.protected if c in df.columns]
    key_col = contract.row_key
    if protected_cols and key_col not in df.columns:
        raise PrepareError(f"{contract.path} declares id column {key_col!r}, but the data has no such column")
    if protected_cols:
        duplicates = df.groupBy(key_col).count().filter("count > 1").agg(F.sum(F.col("count") - 1)).first()[0] or 0
        if duplicates:
            raise PrepareError(
                f"column {key_col!r}: protected attributes are joined back on it, but it has "
                f"{int(duplicates)} duplicate value(s); make it unique or remove role 'id'"
            )
    protected = df.orderBy(POSITION).select(key_col, *protected_cols) if protected_cols else None
    df = df.drop(*protected_cols)
    rows = rows_in - erased
    train, test = split(df, contract, test_fraction, seed, rows)
    train, test = train.drop(POSITION), test.drop(POSITION)
    summary = {
        "rows_in": int(rows_in),
        "rows_erased": int(erased),
        "columns_dropped": dropped,
        "rows_train": int(rows - int(round(rows * test_fraction))),
        "rows_test": int(round(rows * test_fraction)),
    }
    return train, test, protected, summary


def row_index(df):
    """Each row's index in the input (0, 1, ...) from ``POSITION``, with no window over the whole data.

    ``monotonically_increasing_id`` puts the partition in the upper 31 bits and the row within
    it in the lower 33: one aggregation counts the rows of each partition (a row per partition
    reaches the driver) and the index is the rows before its partition plus its place in it.
    """
    from pyspark.sql import functions as F

    partition = F.shiftrightunsigned(F.col(POSITION), 33)
    sizes = sorted((int(r["p"]), int(r["count"])) for r in df.groupBy(partition.alias("p")).count().collect())
    offsets, before = [], 0
    for part, size in sizes:
        offsets += [F.lit(part), F.lit(before)]
        before += size
    start = F.create_map(*offsets)[partition] if offsets else F.lit(0)
    return (start + F.col(POSITION).bitwiseAND(F.lit((1 << 33) - 1))).cast("long")


def main(argv: list[str] | None = None) -> int:
    """Prepare the data on Spark; ``--erase SUBJECT`` is the pandas stage's (it appends one pseudonym to the ledger)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        return pandas_prepare.main(argv)
    params = load_params()
    contract = load_contract(params.data.contract)
    data_path = params.data.path
    synthetic = Path(data_path).is_file() and is_synthetic(data_path)  # a directory or remote path is never the generated file
    key = resolve_key(synthetic)
    if not os.environ.get(KEY_ENV):
        log.warning("%s is not set: using the DEVELOPMENT key, allowed only because %s is synthetic", KEY_ENV, data_path)
    spark = get_session(params)
    raw = read_input(spark, data_path)
    train, test, protected, summary = prepare(
        spark, raw, contract, key, read_ledger(params.prepare.erasure_ledger), params.split.test_fraction, params.seed
    )
    write_one_file(train, config.TRAIN)
    write_one_file(test, config.TEST)
    if protected is not None:
        write_one_file(protected, config.PROTECTED)
    else:
        pd.DataFrame().to_parquet(config.PROTECTED, index=False)
    PrepareSummary(**summary).write(config.PREPARE_SUMMARY)
    log.info("prepared on Spark %s", summary)
    return 0


if __name__ == "__main__":
    entry_point(main)
