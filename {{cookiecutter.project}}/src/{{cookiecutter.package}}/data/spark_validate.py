"""Stage ``validate`` on Spark: the contract's Great Expectations suite on a Spark datasource.

The suite is the pandas stage's (data/validate.py ``build_suite``) with its type names spoken in
Spark's words; the report, its lines and the exit status are the pandas stage's, so the same
data gets the same verdict and the same one-line errors on either engine. GX computes every
expectation as a Spark aggregation: no row reaches the driver beyond the few examples shown.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..core import config
from ..core.contract import Contract, load_contract
from ..core.params import Params, load_params
from ..core.reports import ExpectationFailure, ValidationReport
from ..core.spark import get_session
from ..core.stage import LOGGER, entry_point
from .spark_prepare import missing_as_null
from .validate import BOOLEAN_TYPES, DATETIME_TYPES, NUMERIC_TYPES, _describe, build_suite, contract_checkpoint, format_report

log = logging.getLogger(LOGGER)

# The pandas dtype names of data/validate.py, as the Spark types GX compares against.
SPARK_TYPES = {
    "numeric": ["ByteType", "ShortType", "IntegerType", "LongType", "FloatType", "DoubleType", "DecimalType"],
    "boolean": ["BooleanType"],
    "datetime": ["TimestampNTZType", "TimestampType", "DateType"],
    "str": "StringType",
}

# A failed type check observes a Spark type; the pandas stage names the dtype pandas reads from the same Parquet.
PANDAS_DTYPES = {
    "StringType": "str",
    "LongType": "int64",
    "IntegerType": "int32",
    "ShortType": "int16",
    "ByteType": "int8",
    "DoubleType": "float64",
    "FloatType": "float32",
    "BooleanType": "bool",
    "TimestampNTZType": "datetime64[us]",
}


def spark_suite(contract: Contract, params: Params):
    """``build_suite``'s expectations, with each type check's pandas names replaced by Spark's."""
    suite = build_suite(contract, params)
    for expectation in suite.expectations:
        if expectation.expectation_type == "expect_column_values_to_be_in_type_list":
            names = list(expectation.type_list)
            spark_names = SPARK_TYPES["numeric"] if any(n in NUMERIC_TYPES for n in names) else []
            spark_names += SPARK_TYPES["boolean"] if any(n in BOOLEAN_TYPES for n in names) else []
            spark_names += SPARK_TYPES["datetime"] if any(n in DATETIME_TYPES for n in names) else []
            expectation.type_list = spark_names
        elif expectation.expectation_type == "expect_column_values_to_be_of_type":
            expectation.type_ = SPARK_TYPES["str"]
    return suite


def non_numeric(df, contract: Contract) -> list[ExpectationFailure]:
    """Numeric columns holding text (Spark reads them as strings), named as the pandas stage names them."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType

    found = []
    for col in contract.columns:
        if col.name not in df.columns or not (col.is_numeric or col.numeric_categories):
            continue
        if isinstance(df.schema[col.name].dataType, NumericType) or df.schema[col.name].simpleString() == "boolean":
            continue
        bad = F.col(col.name).isNotNull() & F.col(col.name).try_cast("double").isNull()
        count, total = df.agg(F.sum(bad.cast("long")), F.count(F.lit(1))).first()
        if count:
            examples = [r[0] for r in df.filter(bad).select(col.name).limit(5).collect()]
            found.append(
                ExpectationFailure(
                    column=col.name,
                    expectation="values_are_numeric",
                    kwargs={"dtype": col.dtype},
                    unexpected_count=int(count),
                    element_count=int(total),
                    examples=[str(v) for v in examples],
                )
            )
    return found


def load_prepared(spark):
    """Train and test rows with their protected attributes joined back, in the pandas stage's row order."""
    from pyspark.sql import functions as F

    order = "__order"
    # Absolute paths: Spark resolves relative ones against the directory its JVM started in.
    train = spark.read.parquet(str(config.TRAIN.resolve())).withColumn(order, F.monotonically_increasing_id())
    test = spark.read.parquet(str(config.TEST.resolve())).withColumn(order, F.monotonically_increasing_id() + F.lit(1 << 62))
    df = train.unionByName(test)
    protected = spark.read.parquet(str(config.PROTECTED.resolve()))
    if len(protected.columns):
        id_col = protected.columns[0]
        unique = df.groupBy(id_col).count().filter("count > 1").limit(1).count() == 0
        if unique:
            df = df.join(protected, on=id_col, how="left")
    return df.orderBy(order).drop(order)


def run_validation(spark, df, contract: Contract, params: Params, docs_dir: Path | None = None) -> ValidationReport:
    """Validate the Spark DataFrame ``df``; the same summary the pandas stage returns for the same rows."""
    checkpoint = contract_checkpoint(lambda: spark_suite(contract, params), "spark", docs_dir)
    df = missing_as_null(df).cache()  # every expectation is a pass over the data: read it once
    try:
        outcome = checkpoint.run(batch_parameters={"dataframe": df})
        results = [r for run in outcome.run_results.values() for r in run.results]
        text_in_numbers = non_numeric(df, contract)
        rows = df.count()
    finally:
        df.unpersist()
    texty = {f.column for f in text_in_numbers}
    failures = text_in_numbers + [
        _pandas_names(f) for f in (_describe(r) for r in results if not r.success) if not (f.column in texty and f.error)
    ]
    return ValidationReport(
        success=bool(outcome.success) and not failures,
        contract=f"{contract.name} v{contract.version}",
        rows=int(rows),
        expectations=len(results),
        failed=len(failures),
        failures=failures,
    )


def _pandas_names(failure: ExpectationFailure) -> ExpectationFailure:
    """A failed type check reported with the pandas stage's type names, so the line reads the same."""
    kwargs = dict(failure.kwargs)
    if "type_list" in kwargs:
        spark = set(kwargs["type_list"])
        names = list(NUMERIC_TYPES) if spark & set(SPARK_TYPES["numeric"]) else []
        names += BOOLEAN_TYPES if spark & set(SPARK_TYPES["boolean"]) else []
        names += DATETIME_TYPES if spark & set(SPARK_TYPES["datetime"]) else []
        kwargs["type_list"] = names
    if kwargs.get("type_") == SPARK_TYPES["str"]:
        kwargs["type_"] = "str"
    observed = (
        PANDAS_DTYPES.get(failure.observed_value, failure.observed_value)
        if "type_list" in kwargs or "type_" in kwargs
        else failure.observed_value
    )
    return failure.model_copy(update={"kwargs": kwargs, "observed_value": observed})


def main() -> int:
    """Validate the prepared data on Spark; exit 1 (stopping ``dvc repro``) when any expectation fails."""
    params = load_params()
    contract = load_contract(params.data.contract)
    spark = get_session(params)
    df = load_prepared(spark)
    if config.DATA_DOCS.exists():
        shutil.rmtree(config.DATA_DOCS)
    summary = run_validation(spark, df, contract, params, docs_dir=config.DATA_DOCS)
    summary.write(config.VALIDATION)
    print(format_report(summary))
    print(f"Data Docs: {config.DATA_DOCS / 'index.html'}")
    if not summary.success:
        log.error("validation failed: the pipeline stops here; see %s", config.VALIDATION)
        return 1
    return 0


if __name__ == "__main__":
    entry_point(main)
