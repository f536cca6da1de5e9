"""The synthetic data follows the contract, is seeded, and carries the known signal."""

from __future__ import annotations

import pandas as pd

from {{ cookiecutter.package }}.core import use_case
from {{ cookiecutter.package }}.data import generate


def test_same_seed_same_data_other_seed_other_data(contract):
    a = generate.generate(contract, n_rows=500, seed=1)
    b = generate.generate(contract, n_rows=500, seed=1)
    c = generate.generate(contract, n_rows=500, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_columns_and_values_follow_the_contract(raw, contract):
    assert list(raw.columns) == contract.column_names
    for col in contract.columns:
        values = raw[col.name].dropna()
        if col.categories:
            assert set(values.unique()) <= set(col.categories), col.name
        if col.min is not None:
            assert values.min() >= col.min, col.name
        if col.max is not None:
            assert values.max() <= col.max, col.name
        if not col.nullable:
            assert raw[col.name].notna().all(), col.name
    if contract.id_column:
        assert raw[contract.id_column].is_unique


def test_positive_rate_is_realistic(raw, contract, params):
    lo, hi = params.validate_.target_rate
    rate = (raw[contract.target] == contract.positive_label).mean()
    assert lo <= rate <= hi
    if use_case.load().name == "credit_scoring":
        assert 0.10 <= rate <= 0.22
    else:
        assert 0.005 <= rate <= 0.02


def test_synthetic_file_is_marked_as_synthetic(tmp_path, contract):
    from {{ cookiecutter.package }}.data import prepare

    path = tmp_path / "synthetic.parquet"
    generate.write_synthetic(generate.generate(contract, n_rows=200, seed=3), path)
    assert prepare.is_synthetic(path)
    plain = tmp_path / "plain.parquet"
    pd.read_parquet(path).to_parquet(plain)
    assert not prepare.is_synthetic(plain)
