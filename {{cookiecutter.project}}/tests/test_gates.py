"""The gates: every verdict, including the ones that must fail closed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package }}.ci import gates
from {{ cookiecutter.package }}.core import use_case
from {{ cookiecutter.package }}.core.reports import GateId, GatesReport, GateVerdict, MetricsReport

AUC = use_case.load().headline_metric  # the headline metric the gate compares
PARAMS = {"gates": {"metric": {"tolerance": 0.01}, "require_baseline": True}}


def validation(success: bool, *failures: dict) -> dict:
    """A reports/validation.json as the validate stage writes it."""
    return {
        "success": success,
        "contract": "loans v1",
        "rows": 1000,
        "expectations": 40,
        "failed": len(failures),
        "failures": list(failures),
    }


PASSING_VALIDATION = validation(True)


def benchmark(headline: float, difference: float, interval: tuple[float, float]) -> dict:
    """A metrics.json ``benchmark`` section: the benchmark's headline metric and the model's lead."""
    low, high = interval
    section = {"roc_auc": 0.5, "pr_auc": 0.5, "confidence": 0.95, "bootstrap": 200}
    return section | {AUC: headline, "difference": difference, "difference_ci_low": low, "difference_ci_high": high}


def metrics(headline: float, bench: dict | None = None) -> dict:
    """A reports/metrics.json as the evaluate stage writes it, with the headline metric at ``headline``.

    Its benchmark trails the model by 0.05 (well within every gate) unless ``bench`` says otherwise.
    """
    values = {name: 0.5 for name in MetricsReport.metric_names()} | {"rows": 1000}
    bench = benchmark(headline - 0.05, 0.05, (0.03, 0.07)) if bench is None else bench
    return values | {AUC: headline, "benchmark": bench}


def write_run(root: Path, validation=PASSING_VALIDATION, metrics=None) -> None:
    (root / "reports").mkdir(parents=True, exist_ok=True)
    if validation is not None:
        (root / "reports/validation.json").write_text(json.dumps(validation))
    if metrics is not None:
        (root / "reports/metrics.json").write_text(json.dumps(metrics))


def verdicts(root: Path, baseline, params=PARAMS, stale=(), headline=AUC) -> dict[str, GateVerdict]:
    ctx = gates.Context(
        params=params, root=root, baseline=baseline, baseline_source="main", stale_stages=stale, headline=headline
    )
    return {str(r.id): r for r in gates.run_gates(ctx)}


def test_all_pass_within_tolerance(tmp_path):
    write_run(tmp_path, metrics=metrics(0.795))
    results = verdicts(tmp_path, {AUC: 0.80})
    assert list(results) == ["pipeline", "data_validation", "headline_metric", "benchmark"]
    assert results["pipeline"].passed is True
    assert results["data_validation"].passed is True
    metric = results["headline_metric"]
    assert metric.passed is True
    assert metric.value == 0.795
    assert metric.threshold == pytest.approx(0.79)


def test_metric_drop_past_tolerance_fails_naming_metric_value_and_threshold(tmp_path):
    write_run(tmp_path, metrics=metrics(0.70))
    metric = verdicts(tmp_path, {AUC: 0.80})["headline_metric"]
    assert metric.passed is False
    assert metric.threshold == pytest.approx(0.79)
    assert f"{AUC} = 0.7000 < 0.7900" in metric.reason
    assert "baseline 0.8000 on main" in metric.reason


def test_lower_is_better_direction(tmp_path):
    params = {"gates": {"metric": {"tolerance": 0.05, "direction": "lower"}}}
    write_run(tmp_path, metrics=metrics(0.14))
    assert verdicts(tmp_path, {AUC: 0.10}, params)["headline_metric"].passed is True
    write_run(tmp_path, metrics=metrics(0.16))
    assert verdicts(tmp_path, {AUC: 0.10}, params)["headline_metric"].passed is False


def test_failed_validation_fails_both_gates_even_with_good_stale_metrics(tmp_path):
    validation_report = validation(
        False, {"column": "income", "expectation": "expect_column_values_to_be_between", "unexpected_count": 3}
    )
    write_run(tmp_path, validation=validation_report, metrics=metrics(0.99))
    results = verdicts(tmp_path, {AUC: 0.80})
    assert results["data_validation"].passed is False
    assert "column 'income': expect_column_values_to_be_between (3 unexpected)" in results["data_validation"].reason
    assert results["headline_metric"].passed is False
    assert "data validation did not pass" in results["headline_metric"].reason


def test_benchmark_gate_fails_a_model_that_trails_its_benchmark_naming_both_and_the_margin(tmp_path):
    write_run(tmp_path, metrics=metrics(0.70, benchmark(0.76, -0.06, (-0.08, -0.04))))
    gate = verdicts(tmp_path, {AUC: 0.70})["benchmark"]
    assert gate.status == "fail"
    assert gate.value == pytest.approx(-0.06)
    assert gate.threshold == 0.0
    assert f"{AUC}: model 0.7000 vs benchmark" in gate.reason
    assert "0.7600: difference -0.0600 (95% interval -0.0800 to -0.0400) < margin +0.0000" in gate.reason
    assert "\n" not in gate.reason


@pytest.mark.parametrize(
    ("difference", "interval", "rule", "status"),
    [
        (0.02, (0.01, 0.03), "significant", "pass"),
        (-0.01, (-0.03, 0.01), "significant", "warn"),  # behind within noise: shown, not blocking
        (-0.01, (-0.03, 0.01), "point", "fail"),
        (0.01, (-0.01, 0.03), "point", "fail"),  # ahead, but not by the margin of 0.02 below
    ],
)
def test_benchmark_gate_rules_and_margin(tmp_path, difference, interval, rule, status):
    margin = 0.02 if difference == 0.01 else 0.0
    params = PARAMS | {"benchmark": {"gate": {"margin": margin, "rule": rule}}}
    write_run(tmp_path, metrics=metrics(0.80, benchmark(0.80 - difference, difference, interval)))
    assert verdicts(tmp_path, {AUC: 0.80}, params)["benchmark"].status == status


def test_benchmark_gate_fails_closed_without_a_benchmark_and_warns_when_switched_off(tmp_path):
    write_run(tmp_path, metrics={k: v for k, v in metrics(0.80).items() if k != "benchmark"})
    gate = verdicts(tmp_path, {AUC: 0.80})["benchmark"]
    assert gate.status == "fail"
    assert "no benchmark section" in gate.reason
    off = PARAMS | {"benchmark": {"gate": {"enabled": False}}}
    assert verdicts(tmp_path, {AUC: 0.80}, off)["benchmark"].status == "warn"


@pytest.mark.parametrize("missing", ["validation", "metrics"])
def test_missing_inputs_fail(tmp_path, missing):
    write_run(
        tmp_path,
        validation=None if missing == "validation" else PASSING_VALIDATION,
        metrics=None if missing == "metrics" else metrics(0.9),
    )
    results = verdicts(tmp_path, {AUC: 0.80})
    assert results["headline_metric"].passed is False
    if missing == "validation":
        assert "validation.json is missing" in results["data_validation"].reason
    else:
        assert "metrics.json is missing" in results["headline_metric"].reason


DVC_YAML = {
    "stages": {
        "validate": {"cmd": "v", "outs": [{"reports/validation.json": {"cache": False}}]},
        "evaluate": {"cmd": "e", "metrics": [{"reports/metrics.json": {"cache": False}}]},
        "fairness": {"cmd": "f", "metrics": [{"reports/fairness.json": {"cache": False}}]},
    }
}


def fairness_report(passed: bool, gates: list | None = None) -> dict:
    """A reports/fairness.json as the fairness stage writes it."""

    def gate(attribute: str, status: str, value: float, reason: str) -> dict:
        metric = "demographic_parity_difference"
        gate_id = {"gate": "fairness", "attribute": attribute, "metric": metric}
        return {"id": gate_id, "status": status, "value": value, "threshold": 0.05, "bound": "max", "ci": None, "reason": reason}

    settings = {"min_group_size": 30, "min_group_outcomes": 5, "bootstrap": 0, "confidence": 0.95, "rule": "point"}
    return {
        "use_case": "credit_scoring",
        "threshold": 0.25,
        "rows": 1000,
        "outcome": "approval_rate",
        "definitions": {},
        "settings": settings,
        "bootstrap_unit": "row",
        "attributes": {},
        "not_gated": [],
        "passed": passed,
        "gates": [gate("sex", "pass", 0.01, "sex: meets"), gate("age", "pass" if passed else "fail", 0.09, "age: breaches")]
        if gates is None
        else gates,
    }


SEX_GATE = "fairness:sex:demographic_parity_difference"
AGE_GATE = "fairness:age:demographic_parity_difference"


def test_reports_of_an_unfinished_pipeline_are_not_judged(tmp_path):
    """After a failed `dvc repro` the git-tracked reports are an earlier run's: nothing passes on them."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    write_run(tmp_path, metrics=metrics(0.99))
    results = verdicts(tmp_path, {AUC: 0.80}, stale=("validate", "evaluate", "fairness"))
    assert results["pipeline"].passed is False
    assert "stages not reproduced: validate, evaluate, fairness" in results["pipeline"].reason
    assert results["data_validation"].passed is False
    assert results["data_validation"].reason.startswith("not evaluated: the pipeline did not finish")
    assert results["headline_metric"].passed is False
    assert "not evaluated" in results["headline_metric"].reason
    assert results["fairness"].passed is False


def test_reports_of_stages_that_did_finish_are_judged(tmp_path):
    """The fairness stage failed (and stopped repro); validation and metrics are this run's."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    write_run(tmp_path, metrics=metrics(0.81))
    (tmp_path / "reports/fairness.json").write_text(json.dumps(fairness_report(passed=False)))
    results = verdicts(tmp_path, {AUC: 0.80}, stale=("fairness",))
    assert results["pipeline"].passed is False
    assert results["data_validation"].passed is True
    assert results["headline_metric"].passed is True
    assert results[SEX_GATE].passed is True
    assert results[AGE_GATE] == GateVerdict(
        id=GateId(gate="fairness", attribute="age", metric="demographic_parity_difference"),
        status="fail",
        value=0.09,
        threshold=0.05,
        reason="age: breaches",
    )


def test_a_validation_failure_is_shown_even_when_later_stages_did_not_run(tmp_path):
    write_run(tmp_path, validation=validation(False, {"column": "age", "expectation": "expect_x", "unexpected_count": 1}))
    result = verdicts(tmp_path, {AUC: 0.80}, stale=("validate", "train"))["data_validation"]
    assert result.passed is False
    assert "column 'age': expect_x (1 unexpected)" in result.reason


def test_fairness_gate_follows_the_pipeline(tmp_path):
    write_run(tmp_path, metrics=metrics(0.81))
    assert "fairness" not in verdicts(tmp_path, {AUC: 0.80}), "no fairness stage, no fairness gate"
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    missing = verdicts(tmp_path, {AUC: 0.80})["fairness"]
    assert missing.passed is False
    assert "reports/fairness.json is missing" in missing.reason
    (tmp_path / "reports/fairness.json").write_text(json.dumps(fairness_report(passed=True)))
    results = verdicts(tmp_path, {AUC: 0.80})
    assert results[AGE_GATE].passed is True
    (tmp_path / "reports/fairness.json").write_text(json.dumps(fairness_report(passed=False, gates=[])))
    assert "holds no gate verdicts" in verdicts(tmp_path, {AUC: 0.80})["fairness"].reason


def test_corrupt_report_fails_with_its_name(tmp_path):
    write_run(tmp_path, metrics=metrics(0.9))
    (tmp_path / "reports/validation.json").write_text("{not json")
    result = verdicts(tmp_path, {AUC: 0.8})["data_validation"]
    assert result.passed is False
    assert "reports/validation.json: not valid JSON" in result.reason


def test_headline_metric_absent_or_nan_fails(tmp_path):
    absent = metrics(0.9)
    del absent[AUC]
    write_run(tmp_path, metrics=absent)
    result = verdicts(tmp_path, {AUC: 0.8})["headline_metric"]
    assert result.passed is False
    assert f"reports/metrics.json: '{AUC}': Field required" in result.reason
    # json.dumps writes NaN and Infinity, and json.loads reads them back: a valid file whose
    # value is not a number to compare. Infinity would pass a plain `>=` comparison.
    for value in (float("nan"), float("inf")):
        write_run(tmp_path, metrics=metrics(value))
        result = verdicts(tmp_path, {AUC: 0.8})["headline_metric"]
        assert result.passed is False, value
        assert "has no finite value for it" in result.reason, result.reason


def test_missing_baseline_fails_unless_explicitly_allowed(tmp_path):
    write_run(tmp_path, metrics=metrics(0.9))
    result = verdicts(tmp_path, None)["headline_metric"]
    assert result.passed is False
    assert "require_baseline" in result.reason
    lenient = {"gates": {**PARAMS["gates"], "require_baseline": False}}
    assert verdicts(tmp_path, None, lenient)["headline_metric"].passed is True


def test_a_crashing_gate_is_a_failed_gate(tmp_path):
    def exploding_gate(ctx):
        raise KeyError("boom")

    ctx = gates.Context(params=PARAMS, root=tmp_path, baseline=None, baseline_source="main")
    [result] = gates.run_gates(ctx, [exploding_gate])
    assert result == GateVerdict(id=GateId(gate="exploding"), status="fail", reason="gate crashed: KeyError: 'boom'")


def test_new_gates_plug_in_through_the_list(repo, monkeypatch, capsys):
    """A gate appended to GATES is judged by `make gates` itself: its verdict lands in gates.json and decides the exit."""
    signed_off = {"value": True}

    def sign_off_gate(ctx):
        return [gates.result("sign_off", signed_off["value"], float(signed_off["value"]), 1.0, "model risk sign-off")]

    monkeypatch.setattr(gates, "GATES", [*gates.GATES, sign_off_gate])
    write_run(repo, metrics=metrics(0.81))  # every built-in gate passes
    assert gates.main(["--root", str(repo), "--baseline-rev", "main"]) == 0
    written = GatesReport.read(repo / "reports/gates.json")
    assert [str(g.id) for g in written.gates] == ["pipeline", "data_validation", "headline_metric", "benchmark", "sign_off"]
    assert written.passed is True

    signed_off["value"] = False
    assert gates.main(["--root", str(repo), "--baseline-rev", "main"]) == 1
    assert "sign_off" in capsys.readouterr().err
    written = GatesReport.read(repo / "reports/gates.json")
    assert written.passed is False
    assert str(written.gates[-1].id) == "sign_off" and written.gates[-1].passed is False


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({}, "missing section 'gates'"),
        ({"gates": {"metric": {"tolerance": -1}}}, "'gates.metric.tolerance' must be at least 0"),
        ({"gates": {"metric": {"direction": "up"}}}, "'gates.metric.direction' must be 'higher' or 'lower'"),
    ],
)
def test_bad_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        gates.gate_settings(bad)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A git repository whose main branch has committed baseline metrics."""
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "ci@example.com")
    git(tmp_path, "config", "user.name", "ci")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    write_run(tmp_path, metrics=metrics(0.80))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    return tmp_path


def test_cli_exit_status_output_and_gates_json(repo, capsys):
    write_run(repo, metrics=metrics(0.75))
    assert gates.main(["--root", str(repo), "--baseline-rev", "main"]) == 1
    captured = capsys.readouterr()
    assert f"FAIL headline_metric: {AUC} = 0.7500 < 0.7900" in captured.out
    assert "gates: FAILED (headline_metric)" in captured.err
    written = GatesReport.read(repo / "reports/gates.json")
    assert written.passed is False
    assert written.baseline == "main"
    assert written.stale_stages == []
    assert [g.id.gate for g in written.gates] == ["pipeline", "data_validation", "headline_metric", "benchmark"]
    assert [g.status for g in written.gates] == ["pass", "pass", "fail", "pass"]

    write_run(repo, metrics=metrics(0.81))
    assert gates.main(["--root", str(repo), "--baseline-rev", "main"]) == 0
    assert GatesReport.read(repo / "reports/gates.json").passed is True


def test_cli_fails_when_a_stage_was_not_reproduced(repo, capsys):
    stage = {"stages": {"evaluate": {"cmd": "true", "metrics": [{"reports/metrics.json": {"cache": False}}]}}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stage))
    write_run(repo, metrics=metrics(0.95))
    assert gates.main(["--root", str(repo), "--baseline-rev", "main"]) == 1
    out = capsys.readouterr().out
    assert "FAIL pipeline: the pipeline did not finish in this run (stages not reproduced: evaluate)" in out
    assert GatesReport.read(repo / "reports/gates.json").stale_stages == ["evaluate"]


def test_cli_unknown_baseline_revision_is_an_error(repo, capsys):
    assert gates.main(["--root", str(repo), "--baseline-rev", "no-such-branch"]) == 2
    assert "baseline revision 'no-such-branch' not found" in capsys.readouterr().err


def test_cli_revision_without_metrics_is_a_missing_baseline(repo):
    git(repo, "rm", "-q", "--cached", "reports/metrics.json")
    git(repo, "commit", "-qm", "drop metrics")
    assert gates.baseline_from_rev(repo, "HEAD") is None
    assert gates.baseline_from_rev(repo, "HEAD~1") == metrics(0.80)
    assert gates.main(["--root", str(repo), "--baseline-rev", "HEAD"]) == 1
