"""The contract loads, derives what the pipeline needs, and refuses malformed definitions."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }}.core.contract import Column, ContractError, load_contract


def test_roles_partition_the_columns(contract):
    roles = {c.name: c.role for c in contract.columns}
    assert set(contract.features).isdisjoint(contract.pii + contract.protected + [contract.target])
    assert contract.target and roles[contract.target] == "target"
    assert set(contract.model_input_order()) == set(contract.features)


def test_monotonic_constraints_follow_model_input_order(contract):
    cst = contract.monotonic_cst()
    for name, c in zip(contract.model_input_order(), cst, strict=True):
        assert c == {"increasing": 1, "decreasing": -1, "none": 0}[contract[name].monotone]


def test_every_feature_has_a_distinct_reason_code(contract):
    codes = [r["code"] for r in contract.reason_catalogue()]
    assert len(codes) == len(contract.features) == len(set(codes))
    assert all(r["text"] for r in contract.reason_catalogue())


GOOD = """
columns:
  - {name: id, role: id, dtype: string}
  - {name: x, role: feature, dtype: float, min: 0, max: 1, reason_code: X1, reason: X is high.}
  - {name: y, role: target, dtype: int, categories: [0, 1], positive: 1}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("role: feature", "role: features"), "column 'x': role 'features' is not one of"),
        (GOOD.replace("dtype: float", "dtype: decimal"), "column 'x': dtype 'decimal'"),
        (GOOD.replace("min: 0, max: 1", "min: 2, max: 1"), "column 'x': min 2 is greater than max 1"),
        (GOOD.replace(", reason_code: X1, reason: X is high.", ""), "column 'x': every feature needs a 'reason_code'"),
        (GOOD.replace("positive: 1", "positive: 2"), "column 'y': 'positive' must be one of"),
        (
            GOOD.replace("  - {name: y, role: target, dtype: int, categories: [0, 1], positive: 1}\n", ""),
            "role 'target', found 0",
        ),
        (GOOD + "  - {name: x, role: pii, dtype: string}\n", "duplicate column name(s) ['x']"),
        (GOOD.replace("dtype: float,", "dtype: float, monotone: upward,"), "column 'x': monotone 'upward'"),
        (GOOD.replace("min: 0,", "min: 0, colour: red,"), "column 'x': unknown key(s) ['colour']"),
        ("columns: [", "not valid YAML"),
    ],
)
def test_malformed_contract_is_refused_with_the_column_named(tmp_path, text, message):
    path = tmp_path / "contract.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_contract_file_is_named(tmp_path):
    with pytest.raises(ContractError, match="file not found"):
        load_contract(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("categories", "numeric"),
    [
        ((False, True), True),  # booleans are the numbers 0 and 1 to scikit-learn's encoder
        ((0, 1), True),
        ((0.5, 1.5), True),
        (("rent", "own"), False),
        ((0, "other"), False),
        (None, False),
    ],
)
def test_numeric_categories_count_booleans_as_values(categories, numeric):
    col = Column(name="x", role="feature", dtype="category", categories=categories)
    assert col.numeric_categories is numeric


@pytest.mark.parametrize(
    ("categories", "raw", "want"),
    [
        ((False, True), [True, False, None], [1.0, 0.0, np.nan]),
        ((0.5, 1.5), ["1.5", "0.5", None], [1.5, 0.5, np.nan]),
    ],
)
def test_coerce_keeps_numeric_and_boolean_categories_as_values(contract, categories, raw, want):
    """Read as text ("True", "0.5"), no value would match its category in the model's encoder."""
    name = contract.categorical_features[0]
    changed = dataclasses.replace(contract[name], categories=categories)
    columns = tuple(changed if c.name == name else c for c in contract.columns)
    flagged = dataclasses.replace(contract, columns=columns, _by_name={})
    out = flagged.coerce(pd.DataFrame({name: pd.Series(raw, dtype=object)}))[name]
    assert pd.api.types.is_numeric_dtype(out), f"read as {out.dtype}: text would match none of {categories}"
    np.testing.assert_array_equal(out.to_numpy(dtype=float), np.asarray(want, dtype=float))
