"""Shared fixtures: the contract, params and small seeded data sets made by the real stages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

# Importing the package switches telemetry off (core/config.py) before any tool is loaded.
from {{ cookiecutter.package }}.core import model, use_case
from {{ cookiecutter.package }}.core.contract import Contract, load_contract
from {{ cookiecutter.package }}.core.params import Params, load_params
from {{ cookiecutter.package }}.data import generate, prepare

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = b"unit-test-key-0123456789abcdef0123456789"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def contract() -> Contract:
    return load_contract(ROOT / "contract.yaml")


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def raw(contract, params) -> pd.DataFrame:
    """A small synthetic data set from the real generator."""
    n = 4000 if use_case.load().name == "credit_scoring" else 12000
    return generate.generate(contract, n_rows=n, seed=7)


@pytest.fixture(scope="session")
def prepared(raw, contract):
    train, test, protected, summary = prepare.prepare(raw, contract, TEST_KEY, set(), test_fraction=0.25, seed=7)
    return train, test, protected


@pytest.fixture(scope="session")
def valid_frame(prepared) -> pd.DataFrame:
    """Prepared rows joined back with their protected attributes, as `validate` sees them."""
    train, test, protected = prepared
    df = pd.concat([train, test], ignore_index=True)
    return df.merge(protected, on=protected.columns[0], how="left") if len(protected.columns) else df


@pytest.fixture(scope="session")
def fitted(prepared, contract, params):
    train, _, _ = prepared
    pipeline = model.build_pipeline(contract, params)
    pipeline.fit(model.model_frame(train, contract), model.target_vector(train, contract))
    return pipeline
