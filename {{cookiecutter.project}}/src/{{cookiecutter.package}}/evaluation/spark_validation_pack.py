"""Stage ``validation_pack`` of a spark repository: the same pack as ``evaluation/validation_pack.py`` from Spark aggregations.

Every figure needs every row, and each is a sum here (evaluation/spark_stats.py): the ROC-AUC and
DeLong's standard error from running sums over the distinct scores; the gains/KS table from each
row's place in descending score order (a distributed sort, ties in file order as pandas' stable
sort) cut into equal bands; each grade's rows, defaults and PD sum; each value band's counts and
value sums. The tests (Jeffreys, binomial, Hosmer-Lemeshow, Herfindahl, the AUC decline) are
``evaluation/calibration.py``'s on those sums. Each row's grade, which the pull request's
migration matrix compares, is streamed to this machine in key order one partition at a time.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import operator
import zlib

from ..core import config, model
from ..core.contract import Contract, load_contract
from ..core.errors import DataError
from ..core.params import Params, load_params
from ..core.reports import GradeAssignments, ModelMeta, ValidationPackReport, ValidationReference, ValueBands
from ..core.spark import get_session
from ..core.stage import LOGGER, entry_point
from . import calibration, spark_stats
from .spark_stats import LABEL, SCORE
from .validation_pack import assemble, band_labels, grade_rows, publish, value_band_of_sums

log = logging.getLogger(LOGGER)


def _count_at_least(column, edges) -> object:
    """How many of ``edges`` are at most the column's value (``np.searchsorted(edges, v, side="right")``)."""
    from pyspark.sql import functions as F

    return functools.reduce(operator.add, [(column >= F.lit(float(e))).cast("int") for e in edges], F.lit(0))


def gains(test, rows: int, bands: int) -> list[calibration.GainsRow]:
    """The gains/KS table: rows in descending score order (ties in file order) cut into ``bands`` equal bands."""
    from pyspark.sql import functions as F

    ranked = spark_stats.row_ranks(test, SCORE)
    banded = ranked.withColumn("__band", spark_stats.band_of_rank(F.col("cum___one") - 1, rows, bands))
    table = (
        banded.groupBy("__band")
        .agg(F.count(F.lit(1)).alias("rows"), F.min(SCORE).alias("low"), F.max(SCORE).alias("high"), F.sum(LABEL).alias("pos"))
        .toPandas()
        .sort_values("__band")
    )
    return calibration.gains_rows(table["rows"].tolist(), table["low"].tolist(), table["high"].tolist(), table["pos"].tolist())


def assignments(test, key: str) -> GradeAssignments:
    """Each row's grade index in key order, packed as ``validation_pack.encode_assignments`` packs it, streamed."""
    from pyspark.sql import functions as F

    digest, grades, rows = hashlib.sha256(), bytearray(), 0
    ordered = test.select(F.col(key).cast("string").alias("__key"), "__grade").orderBy("__key")
    for row in ordered.toLocalIterator():
        digest.update((("\n" if rows else "") + row["__key"]).encode())
        grades.append(int(row["__grade"]))
        rows += 1
    packed = base64.b64encode(zlib.compress(bytes(grades), 9)).decode()
    return GradeAssignments(rows=rows, keys_sha256=digest.hexdigest(), grades=packed)


def value_bands(test, value: str, threshold: float, edges: list[float]) -> ValueBands:
    """Fraud figures per value band (``validation_pack.value_bands``) from each band's counts and value sums."""
    from pyspark.sql import functions as F

    amount = F.coalesce(F.nanvl(F.col(value).cast("double"), F.lit(0.0)), F.lit(0.0))
    band = F.greatest(_count_at_least(amount, edges) - 1, F.lit(0))
    y, flag = F.col(LABEL), (F.col(SCORE) >= F.lit(threshold)).cast("long")
    sums = {"rows": F.lit(1), "frauds": y, "flagged": flag, "caught": y * flag, "total": amount, "fraud_value": amount * y}
    per_band = spark_stats.counts(test.withColumn("__band", band), ["__band"], sums).set_index("__band")
    labels = band_labels(edges)
    out = []
    for k, label in enumerate(labels):
        high = float(edges[k + 1]) if k + 1 < len(edges) else None
        got = per_band.loc[k] if k in per_band.index else {c: 0 for c in sums}
        out.append(value_band_of_sums(label, float(edges[k]), high, *(got[c] for c in sums)))
    total = per_band.sum()
    overall = value_band_of_sums("all", float(edges[0]), None, *(total[c] for c in sums))
    return ValueBands(column=value, bands=out, overall=overall)


def build(
    params: Params, contract: Contract, meta: ModelMeta, test, ref: ValidationReference | None = None
) -> ValidationPackReport:
    """The pack for the scored test set ``test`` (columns ``LABEL``, ``SCORE``, the id and the monetary column)."""
    from pyspark.sql import functions as F

    settings = params.validation_pack
    rank = spark_stats.ranking(test, SCORE).iloc[0]
    positives, negatives = int(rank["positives"]), int(rank["negatives"])
    if positives < 2 or negatives < 2:
        raise DataError(f"the ROC-AUC interval needs at least 2 positives and 2 negatives, got {positives} and {negatives}")
    rows = positives + negatives
    if rows < settings.score_bands:
        raise DataError(f"the gains table needs both classes and at least {settings.score_bands} rows")
    auc = calibration.auc_interval(float(rank["roc_auc"]), float(rank["se"]), settings.confidence)
    graded = None
    if params.grades is not None:
        bounds = list(params.grades.values())
        calibration.grade_index([], bounds)  # the same check of the scale
        grade = F.least(_count_at_least(F.col(SCORE), bounds), F.lit(len(bounds) - 1))
        test = test.withColumn("__grade", grade)
        sums = spark_stats.counts(test, ["__grade"], {"n": F.lit(1), "d": F.col(LABEL), "pd": F.col(SCORE)}).set_index("__grade")
        n = [int(sums.at[k, "n"]) if k in sums.index else 0 for k in range(len(bounds))]
        d = [int(sums.at[k, "d"]) if k in sums.index else 0 for k in range(len(bounds))]
        means = [float(sums.at[k, "pd"]) / n[k] if n[k] else None for k in range(len(bounds))]
        grade_table, hl, concentration = grade_rows(n, d, means, params.grades, settings.significance)
        graded = (grade_table, hl, concentration, assignments(test, contract.row_key))
    bands = None
    if settings.value_bands is not None and contract.monetary is not None:
        bands = value_bands(test, contract.monetary, meta.threshold, list(settings.value_bands))
    gains_rows = gains(test, rows, settings.score_bands)
    return assemble(params, contract, meta, rows, positives, auc, gains_rows, graded, bands, ref)


def scored_test(spark, contract: Contract):
    """The test set's id, label, position and monetary column, with the model's score computed on Spark."""
    pipeline = model.load(config.MODEL)
    money = [contract.monetary] if contract.monetary else []
    keep = [contract.row_key, LABEL, spark_stats.POSITION, *money]
    test = spark_stats.read_test(spark, contract).select(*dict.fromkeys([*keep, *contract.features]))
    scored = spark_stats.with_scores(test, {SCORE: lambda frame: model.scores(pipeline, frame, contract)})
    return scored.select(*dict.fromkeys([*keep, SCORE]))


def main() -> int:
    """Write ``reports/validation_pack.json`` from Spark aggregations and log its key figures to the training run."""
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    spark = get_session(params)
    test = scored_test(spark, contract).cache()
    pack = build(params, contract, meta, test)
    test.unpersist()
    return publish(pack, meta)


if __name__ == "__main__":
    entry_point(main)
