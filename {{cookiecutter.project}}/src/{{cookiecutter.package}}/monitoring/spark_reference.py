"""Stage ``reference`` on Spark: the monitoring yardstick from every training row, counted by Spark.

The twin of monitoring/reference.py: the same ``models/reference.json`` (score and feature bins,
shares, decision rate), with the score computed on the executors and every count a Spark
aggregation. Edges are approximate quantiles (monitoring/spark_drift.py ``profiles``).
"""

from __future__ import annotations

import logging

from ..core import config, model
from ..core.contract import load_contract
from ..core.params import load_params
from ..core.reports import ModelMeta, ReferenceReport
from ..core.spark import get_session
from ..core.stage import LOGGER, entry_point
from . import spark_drift
from .reference import REFERENCE, SCHEMA_VERSION, n_bins

SCORE = "__score"


def main() -> int:
    """Write ``models/reference.json`` for the model the train stage just wrote."""
    from pyspark.sql import functions as F

    log = logging.getLogger(LOGGER)
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    spark = get_session(params)
    train = spark.read.parquet(str(config.TRAIN.resolve()))  # Spark resolves relative paths against its JVM's start directory
    scored = spark_drift.with_scores(train, model.load(config.MODEL), contract, SCORE).cache()
    rows, rate = scored.agg(F.count(F.lit(1)), F.avg((F.col(SCORE) >= F.lit(meta.threshold)).cast("double"))).first()
    profiles = spark_drift.profiles(scored, contract, n_bins(params), SCORE)
    scored.unpersist()
    ref = ReferenceReport.parse(
        {
            "schema_version": SCHEMA_VERSION,
            "model": {"run_id": meta.run_id},
            "contract": {"name": contract.name, "version": contract.version},
            "rows": int(rows),
            "bins": n_bins(params),
            "score": profiles.pop(SCORE),
            "decision_rate": float(rate or 0.0),
            "threshold": meta.threshold,
            "features": profiles,
        },
        REFERENCE,
    )
    ref.write(REFERENCE)
    log.info("wrote %s on Spark: %d training rows, %d features, %d score bins", REFERENCE, rows, len(ref.features), ref.bins)
    return 0


if __name__ == "__main__":
    entry_point(main)
