"""The report: what a reviewer reads in the pull-request comment."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package }}.ci import report
from {{ cookiecutter.package }}.core import use_case
from {{ cookiecutter.package }}.core.reports import FairnessReport, ValidationReport

HEADLINE = use_case.load().headline_metric
PARAMS = {
    "model": {"learning_rate": 0.1},
    "gates": {"metric": {"tolerance": 0.01}, "require_baseline": True},
}


def validation(success: bool, *failures: dict) -> ValidationReport:
    """A reports/validation.json as the validate stage writes it."""
    return ValidationReport(
        success=success, contract="loans v1", rows=1000, expectations=42, failed=len(failures), failures=list(failures)
    )


GATES_PASSED = {
    "passed": True,
    "baseline": "origin/main",
    "gates": [
        {"gate": "data_validation", "passed": True, "value": 0, "threshold": 0, "detail": "every expectation passed"},
        {"gate": "headline_metric", "passed": True, "value": 0.81, "threshold": 0.79, "detail": "auc = 0.8100 >= 0.7900"},
    ],
}


def inputs(**overrides) -> report.Inputs:
    values = dict(
        params=PARAMS,
        headline="auc",
        title="Credit scoring",
        baseline_rev="origin/main",
        validation=validation(True),
        metrics={"auc": 0.81, "brier": 0.2},
        gates=GATES_PASSED,
        metrics_diff={"brier": {"old": 0.21, "new": 0.2, "diff": -0.01}, "auc": {"old": 0.8, "new": 0.81, "diff": 0.01}},
        params_diff={"model.learning_rate": {"old": 0.05, "new": 0.1}},
        plots=["plots/roc.png"],
        run_url="https://ci.example/run/1",
    )
    values.update(overrides)
    return report.Inputs(**values)


def test_passing_run_has_verdict_metrics_diff_and_params_diff():
    md = report.render(inputs())
    assert md.startswith("## Credit scoring: model report\n\n✅ **All 2 gates passed** against `origin/main`.")
    assert "| Metric | `origin/main` | this run | Change |" in md
    # the headline metric comes first and is marked
    assert md.index("| **auc** (headline) | 0.8000 | 0.8100 | +0.0100 |") < md.index("| brier | 0.2100 | 0.2000 | -0.0100 |")
    assert "| `model.learning_rate` | 0.05 | 0.1 |" in md
    assert "✅ The data met the contract (42 expectations checked)." in md
    assert "tolerance 0.01 against `origin/main`" in md


def test_failed_gate_is_the_first_thing_said():
    failed = {
        **GATES_PASSED,
        "passed": False,
        "gates": [
            GATES_PASSED["gates"][0],
            {"gate": "headline_metric", "passed": False, "value": 0.7, "threshold": 0.79, "detail": "auc = 0.7000 < 0.7900"},
        ],
    }
    md = report.render(inputs(gates=failed))
    assert md.splitlines()[2] == "❌ **Gate failed: headline_metric**; this change must not be merged as is."
    assert "| ❌ fail | `headline_metric` | 0.7000 | 0.7900 | auc = 0.7000 < 0.7900 |" in md


def test_missing_gates_file_reads_as_not_passed():
    md = report.render(inputs(gates=None))
    assert "❌ **Gates did not run**" in md
    assert "`reports/gates.json` is missing" in md


def test_failed_validation_lists_failures_and_shows_no_metrics():
    failed = validation(False, {"column": "income", "expectation": "expect_column_values_to_be_between", "unexpected_count": 3})
    md = report.render(inputs(validation=failed, metrics_diff=None))
    assert "❌ The data broke the contract" in md
    assert "| income | `expect_column_values_to_be_between` | 3 |" in md
    assert "Not computed: the data failed validation" in md
    assert "0.8100" not in md.split("### Metrics")[1].split("###")[0]


def test_reports_of_an_unfinished_pipeline_are_not_presented_as_this_runs():
    stale_files = frozenset({"reports/validation.json", "reports/metrics.json", "reports/plots/roc.png"})
    md = report.render(inputs(stale_stages=("prepare", "validate"), stale_files=stale_files, metrics_diff=None, gates=None))
    assert "❌ Not known: the pipeline did not finish in this run (stages not reproduced: prepare, validate)" in md
    assert "Not computed: the pipeline did not finish in this run" in md
    assert "Not produced in this run (the pipeline did not finish; these are an earlier run's): `plots/roc.png`." in md
    assert "Plots are not uploaded" not in md
    assert "0.8100" not in md


def test_no_baseline_shows_current_metrics_and_the_reason():
    md = report.render(
        inputs(metrics_diff=None, params_diff=None, diff_errors=["`dvc metrics diff origin/main` failed: unknown Git revision"])
    )
    assert "No comparison with `origin/main` was available" in md
    assert "| auc | 0.8100 |" in md
    assert "- `dvc metrics diff origin/main` failed: unknown Git revision" in md


FAIRNESS = {
    "use_case": "credit_scoring",
    "threshold": 0.25,
    "rows": 250,
    "outcome": "approval_rate",
    "definitions": {},
    "settings": {},
    "bootstrap_unit": "row",
    "attributes": {
        "sex": {
            "groups": {
                "female": {"n": 120, "approval_rate": 0.74, "gated": {"tpr": True}},
                "male": {"n": 130, "approval_rate": 0.76},
            }
        }
    },
    "gates": [],
    "not_gated": [],
    "passed": True,
}


def test_fairness_by_group_has_its_own_table_and_no_stale_numbers():
    md = report.render(inputs(fairness=FairnessReport.model_validate(FAIRNESS)))
    section = md.split("### Fairness by group")[1].split("###")[0]
    assert "| Group | n | approval_rate |" in section
    assert "| female | 120 | 0.7400 |" in section
    assert "gated" not in section
    stale = report.render(
        inputs(fairness=FairnessReport.model_validate(FAIRNESS), stale_files=frozenset({"reports/fairness.json"}))
    )
    assert "Not computed in this run" in stale
    assert "0.7400" not in stale
    assert "### Fairness" not in report.render(inputs(fairness=None))


def test_unchanged_params_said_explicitly():
    assert "No parameter changed." in report.render(inputs(params_diff={}))


@pytest.mark.parametrize("mode", ["link", "embed"])
def test_plots_are_linked_or_embedded_by_option(mode):
    md = report.render(inputs(images=mode))
    if mode == "embed":
        assert "![roc](plots/roc.png)" in md
    else:
        assert "![" not in md
        assert "the `reports` artifact of [this run](https://ci.example/run/1): `plots/roc.png`" in md


def test_table_cells_escape_pipes():
    assert report.fmt("a|b") == "a\\|b"
    assert report.fmt(None) == "—"
    assert report.fmt_change(0.5) == "+0.5000"


def test_sections_plug_in(monkeypatch):
    """A function appended to SECTIONS is given this run's inputs, and its text takes its place in the report."""

    def champion_section(inp):
        return f"### Champion\n\n{inp.headline} {inp.metrics[inp.headline]} against `{inp.baseline_rev}`"

    def nothing_to_say(inp):
        return None

    run_inputs = inputs(metrics={"auc": 0.83, "brier": 0.2}, baseline_rev="origin/release")
    body, footer = report.render(run_inputs).split("\n\n<sub>Run:")
    monkeypatch.setattr(report, "SECTIONS", [*report.SECTIONS, champion_section, nothing_to_say])
    # after every built-in section, before the footer; a section with nothing to say leaves no trace
    champion = "### Champion\n\nauc 0.83 against `origin/release`"
    assert report.render(run_inputs) == f"{body}\n\n{champion}\n\n<sub>Run:{footer}"


def run(root: Path, *args: str) -> None:
    subprocess.run(list(args), cwd=root, check=True, capture_output=True)


def test_cli_compares_with_a_git_revision_through_dvc(tmp_path):
    """End to end on a real git + DVC repository: dvc metrics/params diff feed the tables."""
    run(tmp_path, "git", "init", "-q", "-b", "main")
    run(tmp_path, "git", "config", "user.email", "ci@example.com")
    run(tmp_path, "git", "config", "user.name", "ci")
    run(tmp_path, sys.executable, "-m", "dvc", "init", "-q")
    run(tmp_path, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "evaluate": {"cmd": "true", "params": ["model"], "metrics": [{"reports/metrics.json": {"cache": False}}]},
                    "fairness": {"cmd": "true", "metrics": [{"reports/fairness.json": {"cache": False}}]},
                }
            }
        )
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "model": {"learning_rate": 0.05}}))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text(json.dumps({HEADLINE: 0.8}))
    (tmp_path / "reports/fairness.json").write_text(json.dumps(FAIRNESS))
    run(tmp_path, sys.executable, "-m", "dvc", "commit", "-q", "--force")  # records dvc.lock, as a repro would
    run(tmp_path, "git", "add", "-A")
    run(tmp_path, "git", "commit", "-qm", "baseline")

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "reports/metrics.json").write_text(json.dumps({HEADLINE: 0.82}))
    (tmp_path / "reports/validation.json").write_text(validation(True).model_dump_json())
    (tmp_path / "reports/gates.json").write_text(json.dumps(GATES_PASSED))
    run(tmp_path, sys.executable, "-m", "dvc", "commit", "-q", "--force")

    assert report.main(["--root", str(tmp_path), "--baseline-rev", "main"]) == 0
    md = (tmp_path / "reports/report.md").read_text()
    assert f"| **{HEADLINE}** (headline) | 0.8000 | 0.8200 | +0.0200 |" in md
    assert "| `model.learning_rate` | 0.05 | 0.1 |" in md
    assert "attributes.sex" not in md, "only reports/metrics.json feeds the metrics table"
    assert "| female | 120 | 0.7400 |" in md

    assert report.main(["--root", str(tmp_path), "--baseline-rev", "no-such-rev"]) == 0
    md = (tmp_path / "reports/report.md").read_text()
    assert "`dvc metrics diff no-such-rev` failed" in md
    assert f"| {HEADLINE} | 0.8200 |" in md
