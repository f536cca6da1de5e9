"""The first hour of a new user: what cookiecutter prints, how it asks, and what the stages say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import TEMPLATE, env

COOKIECUTTER = [sys.executable, "-m", "cookiecutter"]
CONTEXT = json.loads((TEMPLATE / "cookiecutter.json").read_text())
FIRST_LINE = "Created credit-risk-model (credit scoring). Next:"
LAST_LINE = "at it, describe its columns in contract.yaml, export PII_HMAC_KEY, then make repro."


def next_steps(stdout: str) -> str:
    return stdout[stdout.index("Created ") :].strip()


def test_a_bake_prints_what_to_do_next_and_only_that(tmp_path):
    done = subprocess.run(
        [*COOKIECUTTER, "--no-input", str(TEMPLATE)], cwd=tmp_path, capture_output=True, text=True, env=env(PWD=str(tmp_path)),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    assert out.startswith(FIRST_LINE), out  # nothing before it (no git chatter)
    assert out.endswith(LAST_LINE), out
    assert done.stderr == ""
    for must in ("cd credit-risk-model", "make setup repro test", "reports/model_card.md", "mlflow ui", "data/external/"):
        assert must in out, must
    assert (tmp_path / "credit-risk-model" / "Makefile").is_file()


def test_every_prompt_has_a_human_label_and_an_interactive_bake_prints_the_same(tmp_path):
    asked = [k for k in CONTEXT if not k.startswith("_")]
    labels = CONTEXT["__prompts__"]
    assert set(asked) <= set(labels), f"prompts without a label: {sorted(set(asked) - set(labels))}"
    # Accept every default by pressing Enter at each prompt.
    done = subprocess.run(
        [*COOKIECUTTER, "-o", str(tmp_path), str(TEMPLATE)],
        input="\n" * (len(asked) + 5),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env(PWD=str(tmp_path), COLUMNS="200"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for key in asked:
        assert labels[key] in done.stdout, f"prompt for {key!r} is not shown with its label"
        assert f"[{key}]" not in done.stdout and not any(line.strip().startswith(key) for line in done.stdout.splitlines())
    quiet = subprocess.run(
        [*COOKIECUTTER, "--no-input", "-o", str(tmp_path / "quiet"), str(TEMPLATE)],
        cwd=tmp_path, capture_output=True, text=True, env=env(PWD=str(tmp_path)), timeout=120,
    )
    assert next_steps(done.stdout).replace("credit-risk-model", "X") == next_steps(quiet.stdout).replace(
        "quiet/credit-risk-model", "X"
    )


def stage_section(log: str, stage: str) -> str:
    """The lines DVC printed while running ``stage``."""
    start = log.index(f"Running stage '{stage}'")
    end = log.find("Running stage '", start + 1)
    return log[start : end if end != -1 else len(log)]


@pytest.mark.e2e
def test_each_stage_ends_with_its_time_and_long_loops_show_progress(pipeline_repo):
    repo = pipeline_repo("credit_scoring")
    log = pipeline_repo.repro_logs["credit_scoring"]
    # every stage of the bake's pipeline, as dvc.yaml declares it: none can be left out here
    stages = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    assert "reference" in stages and len(stages) >= 9, stages
    for stage in stages:
        section = stage_section(log, stage)
        assert re.search(rf"stage {stage} finished in \d+\.\d s, peak memory \d+ MiB", section), section[-2000:]
    fairness = stage_section(log, "fairness")
    assert "bootstrap resamples: 1/200 (0%)" in fairness and "bootstrap resamples: 200/200 done in" in fairness
    assert "\r" not in log  # no carriage-return spinners in CI logs
    assert "explain: permutation repeats: 5/5 done in" in stage_section(log, "explain")


@pytest.mark.e2e
@pytest.mark.parametrize("use_case", ["credit_scoring", "fraud_detection"])
def test_train_logs_no_warning_a_user_cannot_act_on(pipeline_repo, use_case):
    pipeline_repo(use_case)
    train = stage_section(pipeline_repo.repro_logs[use_case], "train")
    assert "stage train finished in" in train
    for noise in ("integer column", "Integer columns", "pip version", "pip will be added", "WARNING mlflow", "UserWarning"):
        assert noise not in train, train
