"""Bring your own data: a CSV or Parquet file that is not the synthetic set goes through prepare and validate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }}.data import generate, prepare, validate

from .conftest import TEST_KEY


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_own_data_file_is_prepared_and_validated(tmp_path, contract, params, fmt):
    own = generate.generate(contract, n_rows=1500, seed=99)
    own["branch_code"] = np.arange(len(own)) % 7  # a column the contract does not declare
    path = tmp_path / f"own_data.{fmt}"
    if fmt == "csv":
        own.to_csv(path, index=False)  # dates become text, categories plain strings
    else:
        own.to_parquet(path, index=False)  # a plain Parquet file: no synthetic marker
    assert not prepare.is_synthetic(path)
    df = prepare.read_input(path)
    train, test, protected, summary = prepare.prepare(df, contract, TEST_KEY, set(), 0.2, 1)
    assert summary["columns_dropped"] == ["branch_code"]
    merged = pd.concat([train, test], ignore_index=True).merge(protected, on=contract.row_key)
    summary = validate.run_validation(merged, contract, params)
    assert summary.success, validate.format_report(summary)
