"""train: fails closed without passed validation; picks the cost-minimising threshold; a bad param is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from {{ cookiecutter.package }}.core import metrics
from {{ cookiecutter.package }}.training import train

ROOT = Path(__file__).resolve().parents[1]


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


def test_a_stage_reports_user_errors_in_one_line_and_exits_1(tmp_path):
    """A real stage, run as DVC runs it, on a params.yaml with one bad value."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"]["test_fraction"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(ROOT / "contract.yaml", tmp_path / "contract.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package }}.training.train"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LOG_LEVEL": "INFO", "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    # the message comes from the params check, not from this test
    assert errors == ["ERROR {{ cookiecutter.package }}: params.yaml: 'split.test_fraction' must be at most 0.5, got 2"], proc.stderr
    assert "stage train FAILED" in proc.stderr
