"""The report: what a reviewer reads in the pull-request comment."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package }}.ci import report
from {{ cookiecutter.package }}.core import use_case
from {{ cookiecutter.package }}.core.reports import (
    FairnessReport,
    GateId,
    GatesReport,
    GateVerdict,
    MetricsReport,
    ReportError,
    ValidationReport,
)

HEADLINE = use_case.load().headline_metric
OUTCOME = use_case.load().fairness_outcome
PARAMS = {
    "model": {"learning_rate": 0.1},
    "gates": {"metric": {"tolerance": 0.01}, "require_baseline": True},
}


def validation(success: bool, *failures: dict) -> ValidationReport:
    """A reports/validation.json as the validate stage writes it."""
    return ValidationReport(
        success=success, contract="loans v1", rows=1000, expectations=42, failed=len(failures), failures=list(failures)
    )


BENCHMARK = {
    "roc_auc": 0.77,
    "pr_auc": 0.41,
    "difference": 0.0123,
    "difference_ci_low": 0.0045,
    "difference_ci_high": 0.0201,
    "confidence": 0.95,
    "bootstrap": 200,
}


def metrics(headline: float, benchmark: dict | None = BENCHMARK) -> MetricsReport:
    """A reports/metrics.json as the evaluate stage writes it, with the headline metric at ``headline``."""
    values = {name: 0.5 for name in MetricsReport.metric_names()} | {"rows": 1000}
    return MetricsReport.model_validate(values | {HEADLINE: headline, "benchmark": benchmark})


def gate(name: str, status: str, value: float, threshold: float, reason: str) -> GateVerdict:
    return GateVerdict(id=GateId(gate=name), status=status, value=value, threshold=threshold, reason=reason)


VALIDATION_PASSED = gate("data_validation", "pass", 0, 0, "every expectation passed")
GATES_PASSED = GatesReport(
    passed=True,
    baseline="origin/main",
    stale_stages=[],
    gates=[VALIDATION_PASSED, gate("headline_metric", "pass", 0.81, 0.79, "auc = 0.8100 >= 0.7900")],
)


def inputs(**overrides) -> report.Inputs:
    values = dict(
        params=PARAMS,
        headline=HEADLINE,
        title="Credit scoring",
        baseline_rev="origin/main",
        validation=validation(True),
        metrics=metrics(0.81),
        gates=GATES_PASSED,
        metrics_diff={"brier": {"old": 0.21, "new": 0.2, "diff": -0.01}, HEADLINE: {"old": 0.8, "new": 0.81, "diff": 0.01}},
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
    assert md.index(f"| **{HEADLINE}** (headline) | 0.8000 | 0.8100 | +0.0100 |") < md.index(
        "| brier | 0.2100 | 0.2000 | -0.0100 |"
    )
    assert "| `model.learning_rate` | 0.05 | 0.1 |" in md
    assert "✅ The data met the contract (42 expectations checked)." in md
    assert "tolerance 0.01 against `origin/main`" in md


def test_benchmark_section_shows_both_models_the_difference_and_its_interval():
    md = report.render(inputs())
    section = md[md.index("### Benchmark: ") :]
    model_row = "| model | " + ("0.8100 | 0.5000 |" if HEADLINE == "roc_auc" else "0.5000 | 0.8100 |")
    assert model_row in section
    assert "| 0.7700 | 0.4100 |" in section
    assert f"Model - benchmark on **{HEADLINE}**: +0.0123 (95% interval +0.0045 to +0.0201, 200 paired bootstrap" in section
    md = report.render(inputs(metrics=metrics(0.81, benchmark=None)))
    assert "has no `benchmark` section" in md


def test_failed_gate_is_the_first_thing_said():
    failed = GATES_PASSED.model_copy(
        update={
            "passed": False,
            "gates": [VALIDATION_PASSED, gate("headline_metric", "fail", 0.7, 0.79, "auc = 0.7000 < 0.7900")],
        }
    )
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
    assert f"| {HEADLINE} | 0.8100 |" in md
    assert "- `dvc metrics diff origin/main` failed: unknown Git revision" in md


def group(n: int, outcome: float) -> dict:
    gated = {"outcome_rate": True, "tpr": True, "fpr": True}
    rates = {"tpr": 0.5, "fpr": 0.1, "positive_rate": 0.2, "ci": {}, "gated": gated}
    return {"n": n, "positives": n // 5, OUTCOME: outcome, **rates}


FAIRNESS = {
    "use_case": use_case.load().name,
    "threshold": 0.25,
    "rows": 250,
    "outcome": OUTCOME,
    "definitions": {},
    "settings": {"min_group_size": 30, "min_group_outcomes": 5, "bootstrap": 0, "confidence": 0.95, "rule": "point"},
    "bootstrap_unit": "row",
    "attributes": {
        "sex": {
            "groups": {"female": group(120, 0.74), "male": group(130, 0.76)},
            "summary": {},
            "not_gated": [],
            "bootstrap_units": 250,
        }
    },
    "gates": [
        {
            "id": {"gate": "fairness", "attribute": "sex", "metric": "demographic_parity_ratio"},
            "status": "pass",
            "value": 0.97,
            "threshold": 0.8,
            "reason": "sex: meets the gate",
        }
    ],
    "not_gated": [],
    "passed": True,
}


def test_fairness_by_group_has_its_own_table_and_no_stale_numbers():
    md = report.render(inputs(fairness=FairnessReport.model_validate(FAIRNESS)))
    section = md.split("### Fairness by group")[1].split("###")[0]
    assert f"| Group | n | {OUTCOME} |" in section
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


def test_the_validation_pack_and_each_regulatory_document_of_the_run_are_listed_with_their_titles():
    from .pipeline_run import pipeline_run

    root = pipeline_run().dir
    md = report.render(report.load_inputs(root, "main", "link", "https://ci.example/run/1", compare=False))
    section = md.split("### Documents for validators and regulators\n\n", 1)[1].split("\n\n###", 1)[0]
    assert section.startswith("Generated from this run's files, in the `reports` artifact of [this run](https://ci.example/")
    assert "| Validation pack (docs/validation.md) | `reports/validation_pack.json` |" in section
    written = sorted(p.name for p in (root / "reports/regulatory").glob("*.md"))
    assert written == ["instructions_for_use.md", "post_market_monitoring_plan.md", "technical_documentation.md"]
    for title, name in [
        ("Technical documentation (EU AI Act Art. 11, Annex IV)", "technical_documentation.md"),
        ("Instructions for use (EU AI Act Art. 13)", "instructions_for_use.md"),
        ("Post-market monitoring plan (EU AI Act Art. 72)", "post_market_monitoring_plan.md"),
    ]:
        assert f"| {title} | `reports/regulatory/{name}` |" in section, section


def test_documents_an_earlier_run_left_or_no_run_wrote_are_said_so():
    docs = [("reports/validation_pack.json", "Validation pack"), ("reports/regulatory/plan.md", "Plan")]
    stale = report.render(inputs(documents=docs, stale_files=frozenset({"reports/regulatory"})))
    assert "| Validation pack | `reports/validation_pack.json` |" in stale and "| Plan |" not in stale
    assert "(the pipeline did not finish; these are an earlier run's): `reports/regulatory/plan.md`." in stale
    missing = report.render(inputs(documents=docs[:1]))
    assert "❌ `reports/regulatory/` is missing: the regulatory stage did not run." in missing


def test_table_cells_escape_pipes():
    assert report.fmt("a|b") == "a\\|b"
    assert report.fmt(None) == "—"
    assert report.fmt_change(0.5) == "+0.5000"


def test_sections_plug_in(monkeypatch):
    """A function appended to SECTIONS is given this run's inputs, and its text takes its place in the report."""

    def champion_section(inp):
        return f"### Champion\n\n{inp.headline} {getattr(inp.metrics, inp.headline)} against `{inp.baseline_rev}`"

    def nothing_to_say(inp):
        return None

    run_inputs = inputs(metrics=metrics(0.83), baseline_rev="origin/release")
    body, footer = report.render(run_inputs).split("\n\n<sub>Run:")
    monkeypatch.setattr(report, "SECTIONS", [*report.SECTIONS, champion_section, nothing_to_say])
    # after every built-in section, before the footer; a section with nothing to say leaves no trace
    champion = f"### Champion\n\n{HEADLINE} 0.83 against `origin/release`"
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
    (tmp_path / "reports/metrics.json").write_text(metrics(0.8).model_dump_json())
    (tmp_path / "reports/fairness.json").write_text(json.dumps(FAIRNESS))
    run(tmp_path, sys.executable, "-m", "dvc", "commit", "-q", "--force")  # records dvc.lock, as a repro would
    run(tmp_path, "git", "add", "-A")
    run(tmp_path, "git", "commit", "-qm", "baseline")

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "reports/metrics.json").write_text(metrics(0.82).model_dump_json())
    (tmp_path / "reports/validation.json").write_text(validation(True).model_dump_json())
    (tmp_path / "reports/gates.json").write_text(GATES_PASSED.model_dump_json())
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


@pytest.mark.parametrize(
    ("name", "model", "change", "where"),
    [
        ("gates.json", GatesReport, lambda r: r["gates"][1].update(status="ok"), "gates.1.status"),
        ("gates.json", GatesReport, lambda r: r["gates"][0].update(id="data_validation"), "gates.0.id"),
        ("metrics.json", MetricsReport, lambda r: r.pop(HEADLINE), HEADLINE),
        ("metrics.json", MetricsReport, lambda r: r.update(rows="1000"), "rows"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_file_and_the_field(tmp_path, name, model, change, where):
    good = GATES_PASSED if model is GatesReport else metrics(0.8)
    raw = json.loads(good.model_dump_json())
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    assert model.read(path) == good
    change(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(ReportError, match=rf"^{re.escape(str(path))}: '{re.escape(where)}'"):
        model.read(path)


def test_a_gates_report_whose_verdict_contradicts_its_gates_is_refused(tmp_path):
    raw = json.loads(GATES_PASSED.model_dump_json())
    raw["gates"][1]["status"] = "fail"
    path = tmp_path / "gates.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ReportError, match=rf"^{re.escape(str(path))}: .*passed is True but the gates say otherwise"):
        GatesReport.read(path)
