"""train: fails closed without passed validation; picks the cost-minimising threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from {{ cookiecutter.package }}.core import metrics
from {{ cookiecutter.package }}.training import train


def test_training_refuses_without_a_passed_validation(tmp_path):
    path = tmp_path / "validation.json"
    with pytest.raises(train.ValidationNotPassedError, match="not found"):
        train.require_validation(path)
    report = {"contract": "loans v1", "rows": 1000, "expectations": 40, "failed": 0, "failures": []}
    path.write_text(json.dumps({**report, "success": False}))
    with pytest.raises(train.ValidationNotPassedError, match="did not pass"):
        train.require_validation(path)
    path.write_text(json.dumps({**report, "success": "yes"}))
    with pytest.raises(train.ValidationNotPassedError):
        train.require_validation(path)
    path.write_text(json.dumps({"success": True}))  # a report missing its counts is not trusted either
    with pytest.raises(train.ValidationNotPassedError, match="Field required"):
        train.require_validation(path)
    path.write_text(json.dumps({**report, "success": True}))
    train.require_validation(path)


def test_tuned_threshold_minimises_expected_cost():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.05).astype(int)
    score = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1)
    t = train.tune_threshold(y, score, cost_fn=100.0, cost_fp=5.0)
    best = metrics.expected_cost(y, score >= t, 100.0, 5.0)
    for other in np.linspace(0, 1, 101):
        assert best <= metrics.expected_cost(y, score >= other, 100.0, 5.0) + 1e-12


def test_a_stage_reports_user_errors_in_one_line_and_exits_1(caplog):
    from {{ cookiecutter.package }}.core import stage
    from {{ cookiecutter.package }}.core.errors import ParamsError

    def broken_stage() -> int:
        raise ParamsError("params.yaml: 'split.test_fraction' must be between 0.05 and 0.5, got 2")

    assert stage.run_stage(broken_stage) == 1
    assert "'split.test_fraction' must be between 0.05 and 0.5, got 2" in caplog.text
    assert stage.run_stage(lambda: 0) == 0
