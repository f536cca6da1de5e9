"""Data tests: the validate stage accepts the contract's data and rejects each kind of breakage."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import yaml

from {{ cookiecutter.package }}.core import config
from {{ cookiecutter.package }}.data import validate

from .pipeline_run import ROOT, make_workdir, run_stages


def failures_for(summary, column):
    return [f for f in summary.failures if f.column == column]


@pytest.fixture(scope="module")
def numeric_feature(contract):
    return next(c for c in contract.columns if c.role == "feature" and c.is_numeric and c.min is not None and not c.nullable)


@pytest.fixture(scope="module")
def category_feature(contract):
    return contract.categorical_features[0]


def test_valid_data_passes(valid_frame, contract, params):
    summary = validate.run_validation(valid_frame, contract, params)
    assert summary.success, validate.format_report(summary)
    assert summary.expectations >= 3 * len(contract.columns)  # exists, type, nulls at least


def test_missing_column_is_rejected(valid_frame, contract, params, numeric_feature):
    summary = validate.run_validation(valid_frame.drop(columns=[numeric_feature.name]), contract, params)
    assert not summary.success
    assert any(f.expectation == "expect_column_to_exist" for f in failures_for(summary, numeric_feature.name))


def test_wrong_type_is_rejected(valid_frame, contract, params, numeric_feature):
    broken = valid_frame.assign(**{numeric_feature.name: valid_frame[numeric_feature.name].astype(str) + "k"})
    summary = validate.run_validation(broken, contract, params)
    assert not summary.success
    assert any(f.expectation == "expect_column_values_to_be_in_type_list" for f in failures_for(summary, numeric_feature.name))


def test_out_of_range_values_are_counted(valid_frame, contract, params, numeric_feature):
    broken = valid_frame.copy()
    broken.loc[[3, 17, 29], numeric_feature.name] = numeric_feature.min - 5
    summary = validate.run_validation(broken, contract, params)
    between = [f for f in failures_for(summary, numeric_feature.name) if f.expectation == "expect_column_values_to_be_between"]
    assert between and between[0].unexpected_count == 3
    report = validate.format_report(summary)
    assert f"column {numeric_feature.name!r}" in report and "3 of" in report


def test_null_burst_is_rejected(valid_frame, contract, params, numeric_feature):
    broken = valid_frame.copy()
    broken.loc[broken.sample(frac=0.1, random_state=1).index, numeric_feature.name] = np.nan
    summary = validate.run_validation(broken, contract, params)
    nulls = [f for f in failures_for(summary, numeric_feature.name) if f.expectation == "expect_column_values_to_not_be_null"]
    assert nulls and nulls[0].unexpected_count == round(0.1 * len(broken))


def test_null_burst_in_a_nullable_column_beyond_the_limit_is_rejected(valid_frame, contract, params):
    nullable = [c.name for c in contract.columns if c.nullable]
    if not nullable:
        pytest.skip("this contract declares no nullable column")
    broken = valid_frame.copy()
    broken.loc[broken.sample(frac=0.9, random_state=1).index, nullable[0]] = np.nan
    summary = validate.run_validation(broken, contract, params)
    assert any(f.expectation == "expect_column_values_to_not_be_null" for f in failures_for(summary, nullable[0]))


def test_unseen_category_is_rejected(valid_frame, contract, params, category_feature):
    broken = valid_frame.copy()
    broken.loc[[1, 2], category_feature] = "martian"
    summary = validate.run_validation(broken, contract, params)
    in_set = [f for f in failures_for(summary, category_feature) if f.expectation == "expect_column_values_to_be_in_set"]
    assert in_set and in_set[0].unexpected_count == 2 and "martian" in in_set[0].examples


def test_empty_file_is_rejected(raw):
    """A real empty input file, then a header-only one, through the stages: neither reaches training."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["path"] = "data/external/applications.csv"
    workdir = make_workdir(params)
    source = workdir / "data" / "external" / "applications.csv"
    source.parent.mkdir(parents=True)
    key = {"PII_HMAC_KEY": "k" * 40}  # the file is not synthetic data: prepare needs the key

    source.write_text("")
    done = run_stages(workdir, "prepare", "validate", env=key)
    assert done.returncode != 0
    assert "applications.csv: the file is empty (0 bytes)" in done.stderr, done.stderr[-2000:]
    assert not (workdir / config.VALIDATION).exists(), "nothing may be judged from an empty file"

    raw.head(0).to_csv(source, index=False)  # every column, no rows
    done = run_stages(workdir, "prepare", "validate", env=key)
    assert done.returncode != 0, "the validate stage passed a file without rows"
    assert "stage validate exited with 1" in done.stderr, done.stderr[-2000:]
    summary = validate.ValidationReport.read(workdir / config.VALIDATION)
    assert summary.success is False and summary.rows == 0
    assert any(f.expectation == "expect_table_row_count_to_be_between" for f in summary.failures)


def test_implausible_label_rate_is_rejected(valid_frame, contract, params):
    # The positive-class rate is checked through `positive` (a mean is undefined for text labels):
    # all-positive labels break the upper bound, all-negative ones the lower bound.
    flipped = valid_frame.assign(**{contract.target: contract.positive_label})
    summary = validate.run_validation(flipped, contract, params)
    assert any(f.expectation == "expect_column_values_to_not_be_in_set" for f in failures_for(summary, contract.target))
    negative = next(c for c in contract[contract.target].categories if c != contract.positive_label)
    summary = validate.run_validation(valid_frame.assign(**{contract.target: negative}), contract, params)
    assert any(f.expectation == "expect_column_values_to_be_in_set" for f in failures_for(summary, contract.target))


def test_stage_fails_closed_and_writes_a_report(tmp_path, root, prepared, numeric_feature, monkeypatch):
    """The stage's main(): non-zero exit on bad data, JSON report and Data Docs written."""
    train, test, protected = prepared
    for name in ("params.yaml", "contract.yaml"):
        shutil.copy(root / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    os.makedirs(config.PREPARED_DIR)
    broken = train.copy()
    broken.loc[[0, 1], numeric_feature.name] = numeric_feature.min - 1
    broken.to_parquet(config.TRAIN)
    test.to_parquet(config.TEST)
    protected.to_parquet(config.PROTECTED)
    assert validate.main() == 1
    summary = validate.ValidationReport.read(config.VALIDATION)
    assert summary.success is False
    assert failures_for(summary, numeric_feature.name)
    assert (config.DATA_DOCS / "index.html").is_file()
    train.to_parquet(config.TRAIN)
    assert validate.main() == 0
    assert json.loads(config.VALIDATION.read_text())["success"] is True


def test_a_boolean_category_column_is_validated_as_values(valid_frame, contract, params, category_feature):
    """Categories [false, true] hold booleans: a bool column passes, text in it is named as not numeric."""
    flag = dataclasses.replace(contract[category_feature], categories=(False, True), nullable=False)
    columns = tuple(flag if c.name == category_feature else c for c in contract.columns)
    flagged = dataclasses.replace(contract, columns=columns, _by_name={})
    frame = valid_frame.assign(**{category_feature: valid_frame.index % 3 == 0})
    summary = validate.run_validation(frame, flagged, params)
    assert not failures_for(summary, category_feature), validate.format_report(summary)
    broken = frame.astype({category_feature: object})
    broken.loc[[4, 9], category_feature] = "yes"
    named = [f for f in validate.non_numeric(broken, flagged) if f.column == category_feature]
    assert named and named[0].unexpected_count == 2
