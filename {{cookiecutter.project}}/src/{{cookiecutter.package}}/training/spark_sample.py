"""The rows a spark repository trains on: a stratified sample drawn on Spark, collected to this machine.

HistGradientBoosting fits on one machine, so past ``spark.train_sample_rows`` rows the training
split is sampled on Spark, each class at the same rate (Bernoulli, seeded), and only the sample
reaches the driver. Rows keep the split's time order (the cost-tuned threshold tunes on the
latest rows). The model card says how many rows the model trained on, of how many, and how drawn.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..core import config
from ..core.contract import Contract
from ..core.params import Params
from ..core.spark import get_session

POSITION = "__position"


def training_rows(params: Params, contract: Contract) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The training rows (all, or the stratified sample) and how they were drawn: ``rows``, ``of``, ``method``."""
    from pyspark.sql import functions as F

    spark = get_session(params)
    # Absolute: Spark resolves relative paths against the directory its JVM started in.
    df = spark.read.parquet(str(config.TRAIN.resolve())).withColumn(POSITION, F.monotonically_increasing_id())
    available = df.count()
    limit = params.spark.train_sample_rows
    if available <= limit:
        sample, method = df, f"every row of the training split (at most spark.train_sample_rows = {limit} are drawn)"
    else:
        fraction = limit / available
        label = (F.col(contract.target) == F.lit(contract.positive_label)).cast("int")
        sample = df.withColumn("__class", label).sampleBy("__class", {0: fraction, 1: fraction}, seed=params.seed)
        sample = sample.drop("__class")
        method = (
            f"stratified by {contract.target}: each class sampled at rate {fraction:.6g} "
            f"(Bernoulli on Spark, seed {params.seed}; spark.train_sample_rows = {limit})"
        )
    rows = sample.orderBy(POSITION).drop(POSITION).toPandas()
    return rows, {"rows": int(len(rows)), "of": int(available), "method": method}


def log_sample(run_id: str, sample: dict[str, Any]) -> None:
    """Record on the MLflow run how many rows were available and how the trained ones were drawn (the model card reads it)."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("train_split.rows", sample["of"])
        mlflow.set_tag("train_sample", sample["method"])
