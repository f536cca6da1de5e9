"""Ordinary real data: text labels, no id column, corrupt files, text in numeric columns.

Each of these once broke a stage or produced a traceback; every stage now treats the target
through the contract's ``positive`` label, keys rows itself when there is no id column, and
reports a user's mistake in one line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from {{ cookiecutter.package }}.core import metrics, model, stage, use_case
from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.data import prepare, validate

from .conftest import TEST_KEY
from .pipeline_run import ROOT, make_workdir, run_stages, stage_modules

NEGATIVE, POSITIVE = "good", "bad"


def text_label_contract(path: Path, *, drop_id: bool) -> Path:
    """The repository's contract with the target as text labels (and, optionally, no id column)."""
    raw = yaml.safe_load((ROOT / "contract.yaml").read_text(encoding="utf-8"))
    for col in raw["columns"]:
        if col["role"] == "target":
            col.update(dtype="category", categories=[NEGATIVE, POSITIVE], positive=POSITIVE)
    if drop_id:
        raw["columns"] = [c for c in raw["columns"] if c["role"] != "id"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def as_text_labels(df: pd.DataFrame, target: str, positive) -> pd.DataFrame:
    return df.assign(**{target: (df[target] == positive).map({True: POSITIVE, False: NEGATIVE})})


def test_a_target_of_text_labels_is_validated_through_positive(tmp_path, contract, params, raw):
    text = load_contract(text_label_contract(tmp_path / "contract.yaml", drop_id=False))
    data = as_text_labels(raw, contract.target, contract.positive_label)
    train, test, protected, _ = prepare.prepare(data, text, TEST_KEY, set(), 0.2, 1)
    frame = pd.concat([train, test], ignore_index=True).merge(protected, on=text.row_key)
    summary = validate.run_validation(frame, text, params)
    assert summary.success, validate.format_report(summary)
    all_positive = validate.run_validation(frame.assign(**{text.target: POSITIVE}), text, params)
    rate = [f for f in all_positive.failures if f.column == text.target]
    assert rate and all(f.error is None for f in rate), "the label-rate check must evaluate, not error"


def test_a_target_of_text_labels_trains_the_same_model(tmp_path, contract, params, prepared):
    """Labels as text or as 0/1 give the same targets, the same model and the same metrics."""
    text = load_contract(text_label_contract(tmp_path / "contract.yaml", drop_id=False))
    train, test, _ = prepared
    as_text = as_text_labels(train, contract.target, contract.positive_label)
    assert (model.target_vector(as_text, text) == model.target_vector(train, contract)).all()
    scores = []
    quick = params.replace(model={"max_iter": 30})  # the comparison, not the model's quality, is under test
    for c, frame in ((contract, train), (text, as_text)):
        pipeline = model.build_pipeline(c, quick)
        pipeline.fit(model.model_frame(frame, c), model.target_vector(frame, c))
        scores.append(model.scores(pipeline, test, c))
    assert (scores[0] == scores[1]).all()
    y = model.target_vector(as_text_labels(test, contract.target, contract.positive_label), text)
    assert metrics.compute(use_case.load(), y, scores[1], 0.5, params)["rows"] == len(test)


def test_data_without_an_id_column_keeps_its_protected_attributes_joinable(tmp_path, contract, raw):
    no_id = load_contract(text_label_contract(tmp_path / "contract.yaml", drop_id=True))
    assert no_id.id_column is None and no_id.protected
    data = as_text_labels(raw, contract.target, contract.positive_label).drop(columns=[contract.id_column])
    train, test, protected, _ = prepare.prepare(data, no_id, TEST_KEY, set(), 0.2, 1)
    key = no_id.row_key
    assert list(protected.columns) == [key, *no_id.protected]
    assert protected[key].is_unique and len(protected) == len(train) + len(test)
    joined = test[[key]].merge(protected, on=key, how="left", validate="one_to_one")
    assert joined[no_id.protected].notna().all().all()
    # the key is the row's position in the input file: it carries nothing about the person
    assert sorted(protected[key]) == list(range(len(data)))


def test_text_labels_and_no_id_column_go_through_every_stage(tmp_path, contract, raw):
    """The real stages, in order, on a CSV with text labels and no id column (as public data sets come)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    workdir = make_workdir(params)
    text_label_contract(workdir / "contract.yaml", drop_id=True)
    data = as_text_labels(raw, contract.target, contract.positive_label).drop(columns=[contract.id_column])
    data.to_csv(workdir / "data" / "own.csv", index=False)
    small = yaml.safe_load((workdir / "params.yaml").read_text(encoding="utf-8"))
    small["data"]["path"] = "data/own.csv"
    (workdir / "params.yaml").write_text(yaml.safe_dump(small, sort_keys=False), encoding="utf-8")
    stages = ["prepare", "validate", "benchmark", "train", "evaluate", "fairness", "explain"]
    done = run_stages(workdir, *stages, env={"PII_HMAC_KEY": TEST_KEY.decode()})
    assert done.returncode == 0, done.stderr[-3000:]
    fairness = json.loads((workdir / "reports/fairness.json").read_text(encoding="utf-8"))
    test_rows = len(pd.read_parquet(workdir / "data/prepared/test.parquet"))
    assert set(fairness["attributes"]) == set(contract.protected)
    for result in fairness["attributes"].values():
        assert sum(g["n"] for g in result["groups"].values()) == test_rows
    headline = use_case.load().headline_metric
    value = json.loads((workdir / "reports/metrics.json").read_text(encoding="utf-8"))[headline]
    # The model learnt the signal from text labels (the smaller data set scores a little below the full one).
    assert value >= 0.8 * small["evaluate"]["min_headline"], value


# --- one line per user error, never a traceback ----------------------------------------------
def run_module(module: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(done: subprocess.CompletedProcess, *expected: str) -> None:
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, done.stderr
    for text in expected:
        assert text in errors[0], errors[0]


@pytest.fixture(scope="module")
def broken_contract_dir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("broken-contract")
    (work / "params.yaml").write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    raw = yaml.safe_load((ROOT / "contract.yaml").read_text(encoding="utf-8"))
    raw["columns"].append(dict(raw["columns"][-1]))  # a duplicate column
    (work / "contract.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return work


@pytest.mark.parametrize("name", list(stage_modules()))
def test_every_stage_reports_a_broken_contract_in_one_line(broken_contract_dir, name):
    done = run_module(stage_modules()[name], broken_contract_dir)
    assert_one_line_error(done, "contract.yaml", "duplicate column")


@pytest.mark.parametrize("name", list(stage_modules()))
def test_every_stage_reports_a_misspelt_parameter_in_one_line(tmp_path, name):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["model"]["learning_rte"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (tmp_path / "contract.yaml").write_text((ROOT / "contract.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    assert_one_line_error(run_module(stage_modules()[name], tmp_path), "params.yaml", "'model.learning_rte'")


def test_a_corrupt_parquet_input_is_one_line_from_prepare(tmp_path, monkeypatch, caplog):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["path"] = "data/broken.parquet"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (tmp_path / "contract.yaml").write_text((ROOT / "contract.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert stage.run_stage(lambda: prepare.main([])) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "data/broken.parquet: not a readable Parquet file" in errors[0]


def test_text_in_a_numeric_column_is_named_as_non_numeric_values(valid_frame, contract, params):
    column = next(c for c in contract.columns if c.role == "feature" and c.is_numeric and c.min is not None)
    broken = valid_frame.astype({column.name: object})
    broken.loc[[4, 9], column.name] = ["n/a", "twelve"]
    summary = validate.run_validation(broken, contract, params)
    assert not summary.success
    [text] = [f for f in summary.failures if f.column == column.name and f.expectation == "values_are_numeric"]
    assert text.unexpected_count == 2 and set(text.examples) == {"n/a", "twelve"}
    assert not [f for f in summary.failures if f.column == column.name and f.error], "no 'could not be evaluated' noise"
    report = validate.format_report(summary)
    assert f"column {column.name!r}: 2 of {len(broken)} values are not numeric (e.g. 'n/a', 'twelve')" in report
