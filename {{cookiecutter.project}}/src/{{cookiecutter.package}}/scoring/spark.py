"""The Spark engine of ``make score`` (``ENGINE=spark``): the service's scorer on each Arrow batch of a Spark job.

The same :class:`~.batch.Scorer` the pandas engine uses is shipped to the executors and applied
with ``mapInArrow`` to batches of ``score.batch_rows`` records; each batch passes the same
contract checks (``check_values``) first. The output is written with ``partitionBy("bucket")``
in the layout scoring/batch.py describes, so a consumer reads either engine's output alike and
the two hold the same rows with the same values. Imported only when the Spark engine is asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..core.contract import Contract
from ..core.params import Params
from ..core.spark import get_session
from .batch import BUCKET, ScoreInputError, Scorer, check_schema, check_values, csv_types, input_format

# The last line of an executor's traceback when a batch breaks the contract.
_REFUSED = re.compile(r"ScoreInputError: (.+)")


# The scorer each Python worker uses, by model file: Spark unpickles a task's function, and with it a
# fresh copy of the model, for every task, and the reason codes' explainer (proved on probe rows
# at a few seconds' cost) is cached per model object. A reused worker keeps the first copy.
_WORKER_SCORERS: dict[str, Scorer] = {}


def _worker_scorer(scorer: Scorer) -> Scorer:
    return _WORKER_SCORERS.setdefault(scorer.model_sha256, scorer)


def _read(spark: Any, source: Path, contract: Contract) -> Any:
    """The input as a Spark DataFrame; CSV columns cast as the pandas engine reads them."""
    from pyspark.sql import functions as F

    if input_format(source) == "parquet":
        return spark.read.parquet(str(source))
    df = spark.read.csv(str(source), header=True, inferSchema=False)
    casts = {name: "double" for name, kind in csv_types(contract).items() if pa.types.is_floating(kind) and name in df.columns}
    # try_cast: text where a number belongs becomes empty, and the check names the column.
    return df.withColumns({name: F.col(name).try_cast(kind) for name, kind in casts.items()})


def _arrow_schema(df: Any) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_type

    return pa.schema([(f.name, to_arrow_type(f.dataType)) for f in df.schema.fields])


def _output_schema(scorer: Scorer) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(scorer.schema().append(pa.field(BUCKET, pa.int32())))


def score_spark(source: Path, tmp: Path, scorer: Scorer, contract: Contract, params: Params, batch_rows: int) -> dict[str, Any]:
    """Score ``source`` on Spark into ``tmp`` (partitioned by bucket); the rows and decision counts."""
    from pyspark.errors import PySparkException

    spark = get_session(params)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    where, buckets = f"INPUT {source}", params.score.buckets
    df = _read(spark, source, contract)
    columns = check_schema(_arrow_schema(df), contract, where)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # Arrow in and out (mapInArrow): the input converted to pandas as the pandas engine converts
        # it, the output columns built by the scorer in Arrow, with no pandas round trip for them.
        local = _worker_scorer(scorer)
        for batch in batches:
            frame = batch.to_pandas()
            check_values(frame, contract, where)
            yield from local.score(frame, buckets).to_batches()

    try:
        scored = df.select(*columns).mapInArrow(score_batches, _output_schema(scorer))
        scored.write.mode("overwrite").partitionBy(BUCKET).parquet(str(tmp))
    except PySparkException as exc:
        refused = _REFUSED.findall(str(exc))
        if refused:
            raise ScoreInputError(refused[-1].strip()) from None
        raise
    counts = spark.read.parquet(str(tmp)).groupBy("decision").count().collect()
    decisions = {row["decision"]: int(row["count"]) for row in sorted(counts, key=lambda r: r["decision"])}
    return {"rows": sum(decisions.values()), "decisions": decisions}
