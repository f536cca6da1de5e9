"""Stage ``validate``: run the Great Expectations suite derived from the contract.

Fails closed: any failed expectation (or one that could not be evaluated) makes the stage
exit non-zero, so `dvc repro` stops and nothing downstream runs on bad data. The stage
always writes ``reports/validation.json`` and GX Data Docs (HTML) a person can open.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import config
from ..core.contract import Contract, load_contract
from ..core.params import Params, load_params
from ..core.reports import ExpectationFailure, ValidationReport
from ..core.stage import LOGGER, entry_point

log = logging.getLogger(LOGGER)

NUMERIC_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "float32",
    "float64",
    "Float32",
    "Float64",
]
BOOLEAN_TYPES = ["bool", "boolean"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]


def build_suite(contract: Contract, params: Params, columns: list[str] | None = None):
    """The expectation suite for ``contract``; ``columns`` limits it to those present in a file."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    settings = params.validate_
    min_rows, max_null = settings.min_rows, settings.max_null_fraction
    rate_lo, rate_hi = settings.target_rate
    suite = gx.ExpectationSuite(name=f"{contract.name}_v{contract.version}")
    add = suite.add_expectation
    add(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    for col in contract.columns:
        if columns is not None and col.name not in columns:
            continue
        name = col.name
        add(gxe.ExpectColumnToExist(column=name))
        if col.is_numeric:
            add(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES))
        elif col.numeric_categories:  # the value set below judges the values; a boolean column holds 0 and 1
            add(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES + BOOLEAN_TYPES))
        elif col.dtype == "datetime":
            add(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=DATETIME_TYPES))
        else:
            add(gxe.ExpectColumnValuesToBeOfType(column=name, type_="str"))
        if col.nullable:
            add(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=round(1.0 - max_null, 6)))
        else:
            add(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if col.min is not None or col.max is not None:
            add(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=col.min, max_value=col.max))
        if col.categories:
            add(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(col.categories)))
        if col.unique:
            add(gxe.ExpectColumnValuesToBeUnique(column=name))
        if col.role == "target":
            # Rate of the positive class, whatever the target's dtype (a mean of "bad"/"good" is
            # undefined): at least rate_lo of the labels are `positive`, at most rate_hi.
            # A guard against broken or leaked labels.
            positive = [col.positive]
            add(
                gxe.ExpectColumnValuesToBeInSet(
                    column=name, value_set=positive, mostly=rate_lo, description=f"positive-class rate >= {rate_lo}"
                )
            )
            add(
                gxe.ExpectColumnValuesToNotBeInSet(
                    column=name, value_set=positive, mostly=round(1.0 - rate_hi, 6), description=f"positive-class rate <= {rate_hi}"
                )
            )
    return suite


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding only text become pandas' string dtype, so type checks are exact."""
    out = df.copy()
    for name in out.columns:
        s = out[name]
        if s.dtype == object and s.map(lambda v: v is None or isinstance(v, str) or v != v).all():
            out[name] = s.astype("str")
    return out


def _describe(result) -> ExpectationFailure:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "column")}
    res = result.result or {}
    exc = result.exception_info or {}
    raised = (
        exc.get("raised_exception")
        if "raised_exception" in exc
        else any(isinstance(v, dict) and v.get("raised_exception") for v in exc.values())
    )
    message = exc.get("exception_message") or next(
        (v.get("exception_message") for v in exc.values() if isinstance(v, dict) and v.get("exception_message")), None
    )
    examples = [None if v != v else v for v in (res.get("partial_unexpected_list") or [])[:5]]
    return ExpectationFailure(
        column=cfg.kwargs.get("column", "<table>"),
        expectation=cfg.type,
        kwargs={k: (list(v) if isinstance(v, (list, tuple, set)) else v) for k, v in kwargs.items()},
        unexpected_count=res.get("unexpected_count"),
        element_count=res.get("element_count"),
        observed_value=res.get("observed_value"),
        examples=examples,
        error=message if raised else None,
    )


def non_numeric(df: pd.DataFrame, contract: Contract) -> list[ExpectationFailure]:
    """Numeric columns holding text: named here, because GX only says its checks could not run."""
    found = []
    for col in contract.columns:
        if col.name not in df.columns or not (col.is_numeric or col.numeric_categories):
            continue
        s = df[col.name]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        bad = s.notna() & pd.to_numeric(s, errors="coerce").isna()
        if bad.any():
            found.append(
                ExpectationFailure(
                    column=col.name,
                    expectation="values_are_numeric",
                    kwargs={"dtype": col.dtype},
                    unexpected_count=int(bad.sum()),
                    element_count=int(len(s)),
                    examples=[str(v) for v in s[bad].head(5)],
                )
            )
    return found


def contract_checkpoint(make_suite, engine: str = "pandas", docs_dir: Path | None = None):
    """A GX checkpoint running the suite ``make_suite()`` builds (GX builds one only in an active context) on a whole-dataframe batch of an ``engine`` ("pandas" or "spark")
    datasource in an ephemeral context, writing Data Docs to ``docs_dir`` when given.

    Both stages' (this one and data/spark_validate.py) run through it: one set-up, one result format.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # no set-up chatter at INFO
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="reports",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    source = getattr(context.data_sources, f"add_{engine}")("prepared")
    batch = source.add_dataframe_asset("dataset").add_batch_definition_whole_dataframe("all")
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="contract", data=batch, suite=context.suites.add(make_suite())))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if docs_dir is not None else []
    # BASIC gives what a failure report needs (counts and the first unexpected values); SUMMARY
    # also lists the unexpected rows' index, which GX finds by filtering *every* column of the
    # frame once per expectation with any unexpected value: a third of the stage at 1M rows.
    return context.checkpoints.add(
        gx.Checkpoint(name="validate", validation_definitions=[definition], actions=actions, result_format={"result_format": "BASIC"})
    )


def run_validation(df: pd.DataFrame, contract: Contract, params: Params, docs_dir: Path | None = None) -> ValidationReport:
    """Validate ``df`` and return a summary: success flag and one entry per failed expectation."""
    checkpoint = contract_checkpoint(lambda: build_suite(contract, params), "pandas", docs_dir)
    outcome = checkpoint.run(batch_parameters={"dataframe": _normalise(df)})
    results = [r for run in outcome.run_results.values() for r in run.results]
    text_in_numbers = non_numeric(df, contract)
    # Where a numeric column holds text, its range checks cannot run ("could not be evaluated"):
    # report the cause (which values are not numbers) instead of that symptom.
    texty = {f.column for f in text_in_numbers}
    failures = text_in_numbers + [
        f for f in (_describe(r) for r in results if not r.success) if not (f.column in texty and f.error)
    ]
    return ValidationReport(
        success=bool(outcome.success) and not failures,
        contract=f"{contract.name} v{contract.version}",
        rows=int(len(df)),
        expectations=len(results),
        failed=len(failures),
        failures=failures,
    )


def format_report(summary: ValidationReport) -> str:
    """The validation result as lines a person reads: one per failure, naming column and rule."""
    head = "PASSED" if summary.success else "FAILED"
    lines = [
        f"Data validation {head}: {summary.rows} rows, {summary.expectations} expectations, "
        f"{summary.failed} failed (contract {summary.contract})"
    ]
    for f in summary.failures:
        examples = f" (e.g. {', '.join(map(repr, f.examples[:3]))})" if f.examples else ""
        if f.expectation == "values_are_numeric":
            lines.append(
                f"  - column {f.column!r}: {f.unexpected_count} of {f.element_count} values are not numeric{examples}; "
                f"the contract declares dtype {f.kwargs.get('dtype')!r}"
            )
            continue
        if f.error:
            what = f"could not be evaluated: {f.error}"
        elif f.unexpected_count is not None:
            what = f"{f.unexpected_count} of {f.element_count} rows unexpected{examples}"
        else:
            what = f"observed {f.observed_value!r}"
        args = ", ".join(f"{k}={v!r}" for k, v in f.kwargs.items() if k not in ("result_format",))
        lines.append(f"  - column {f.column!r}: {f.expectation}({args}) {what}")
    return "\n".join(lines)


def load_prepared() -> pd.DataFrame:
    """Train and test rows with their protected attributes joined back, as the suite checks them."""
    frames = [pd.read_parquet(config.TRAIN), pd.read_parquet(config.TEST)]
    df = pd.concat(frames, ignore_index=True)
    protected = pd.read_parquet(config.PROTECTED)
    if len(protected.columns):
        id_col = protected.columns[0]
        df = df.merge(protected, on=id_col, how="left", validate="one_to_one") if df[id_col].is_unique else df
    return df


def main() -> int:
    """Validate the prepared data; exit 1 (stopping ``dvc repro``) when any expectation fails."""
    params = load_params()
    contract = load_contract(params.data.contract)
    df = load_prepared()
    if config.DATA_DOCS.exists():
        shutil.rmtree(config.DATA_DOCS)
    summary = run_validation(df, contract, params, docs_dir=config.DATA_DOCS)
    summary.write(config.VALIDATION)
    print(format_report(summary))
    print(f"Data Docs: {config.DATA_DOCS / 'index.html'}")
    if not summary.success:
        log.error("validation failed: the pipeline stops here; see %s", config.VALIDATION)
        return 1
    return 0


if __name__ == "__main__":
    entry_point(main)
