"""Gates: decide whether this run's model may replace the champion on the baseline branch.

Run after `dvc repro`:

    python -m {{ cookiecutter.package }}.ci.gates --baseline-rev origin/main

Every gate is a function ``gate(ctx) -> list[GateVerdict]`` listed in ``GATES``. A gate
returns one result per thing it checked (a fairness gate returns one per group and metric),
so a new gate plugs in by appending a function to ``GATES``; nothing else changes. All
results go to ``reports/gates.json`` (read by ``report.py``) and the exit status is 1 when
any result failed, so CI blocks the pull request.

Gates fail closed: a missing or unreadable input is a failed gate, never a pass, and so is
a report that is not this run's (``dvc status`` shows a stage not reproduced: after a failed
``dvc repro`` the git-tracked reports still hold the last committed results). The
champion's metrics are ``reports/metrics.json`` as committed on the baseline revision (a
git-tracked DVC metric), so merging a pull request with its ``dvc.lock`` and metrics is
what records the new baseline. When the baseline revision has no metrics file, the
headline gate fails unless ``gates.require_baseline`` is false in ``params.yaml`` (set it
to false for the first pull request of a new repository, then back to true).

The gates are not a DVC stage on purpose: their verdict depends on another git revision,
which DVC does not track, so a cached verdict could be stale.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core import config, use_case
from ..core.errors import ParamsError
from ..core.params import BenchmarkGateParams, GatesParams
from ..core.reports import (
    FairnessReport,
    GateId,
    GatesReport,
    GateVerdict,
    MetricsReport,
    Report,
    ReportError,
    ValidationReport,
)

# Paths relative to the repository root the gates judge (which may not be the cwd).
METRICS_FILE = config.METRICS.as_posix()
VALIDATION_FILE = config.VALIDATION.as_posix()
FAIRNESS_FILE = config.FAIRNESS.as_posix()
GATES_FILE = config.GATES.as_posix()
STATUS_FAILED = "`dvc status` failed"


@dataclass(frozen=True)
class Context:
    """What every gate may look at."""

    params: dict[str, Any]
    root: Path
    baseline: dict[str, Any] | None
    baseline_source: str
    headline: str = field(default_factory=lambda: use_case.load().headline_metric)
    # Stages whose outputs are not the result of the current code, data and params
    # (`dvc status`). reports/*.json are git-tracked, so after a failed `dvc repro` they
    # still hold an earlier run's results: nothing may be judged from them then.
    stale_stages: tuple[str, ...] = ()

    def path(self, relative: str) -> Path:
        """``relative`` under the repository root."""
        return self.root / relative

    def producer(self, relative: str) -> str | None:
        """The dvc.yaml stage that writes ``relative`` (an out, metric or plot), if any."""
        return producers(self.root).get(relative)

    def fresh(self, relative: str) -> bool:
        """``relative`` was written by this run's pipeline, not left over from an earlier one.

        A stage that is up to date had all its inputs reproduced too (DVC deletes a stage's
        outputs before it runs, so a failed upstream stage leaves its dependants changed).
        """
        if not self.stale_stages:
            return True
        if any(s.startswith(STATUS_FAILED) for s in self.stale_stages):
            return False
        stage = self.producer(relative)
        return stage is not None and stage not in self.stale_stages

    def read_json(self, relative: str) -> dict[str, Any] | None:
        """The JSON object in ``relative``, or None if the file does not exist.

        A file that exists but is not a JSON object raises ValueError naming it: a
        corrupt report must not look like a missing one.
        """
        path = self.path(relative)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{relative}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{relative}: expected a JSON object, got {type(data).__name__}")
        return data

    def read_report(self, relative: str, model: type[Report]) -> Any:
        """The typed report in ``relative`` (None if absent); a wrong shape raises ValueError naming the key."""
        data = self.read_json(relative)
        if data is None:
            return None
        try:
            return model.parse(data, relative)
        except ReportError as err:
            raise ValueError(str(err)) from None


Gate = Callable[[Context], list[GateVerdict]]


def producers(root: Path) -> dict[str, str]:
    """Every output path declared in dvc.yaml, mapped to the stage that writes it."""
    path = root / "dvc.yaml"
    if not path.exists():
        return {}
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    found = {}
    for stage, spec in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for entry in (spec or {}).get(kind) or []:
                for out in entry if isinstance(entry, dict) else [entry]:
                    found[str(out)] = stage
    return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def result(gate: str | GateId, passed: bool, value: Any, threshold: Any, detail: str) -> GateVerdict:
    """A pass or fail :class:`GateVerdict`; a value or threshold that is not a number is left to the detail."""
    return GateVerdict(
        id=gate if isinstance(gate, GateId) else GateId(gate=gate),
        status="pass" if passed else "fail",
        value=_number(value),
        threshold=_number(threshold),
        reason=detail,
    )


def gate_settings(params: dict[str, Any]) -> GatesParams:
    """The ``gates`` section of params.yaml, checked, with its defaults filled in."""
    section = params.get("gates")
    if not isinstance(section, dict):
        raise ParamsError("params.yaml: missing section 'gates' (see the template's params.yaml)")
    from ..core.params import parse_section

    return parse_section(GatesParams, section, "gates")


def not_this_run(ctx: Context) -> str:
    """Why a report cannot be judged: the stages that were not reproduced."""
    return f"the pipeline did not finish in this run (stages not reproduced: {', '.join(ctx.stale_stages)})"


def pipeline_gate(ctx: Context) -> list[GateVerdict]:
    """Every stage is reproduced: the reports are this code's, data's and params' results."""
    if ctx.stale_stages:
        return [
            result("pipeline", False, len(ctx.stale_stages), 0, f"{not_this_run(ctx)}; see the `make repro` log, then rerun it")
        ]
    return [result("pipeline", True, 0, 0, "every stage is up to date (dvc status)")]


def data_validation_gate(ctx: Context) -> list[GateVerdict]:
    """The data passed every expectation of the contract's suite."""
    name = "data_validation"
    try:
        summary = ctx.read_report(VALIDATION_FILE, ValidationReport)
    except ValueError as err:
        return [result(name, False, None, "success", str(err))]
    if summary is None:
        return [
            result(
                name, False, None, "success", f"{VALIDATION_FILE} is missing: the validate stage did not run; run `make repro`"
            )
        ]
    failures = summary.failures
    if summary.success is not True:
        shown = "; ".join(
            f"column {f.column!r}: {f.expectation} ({'?' if f.unexpected_count is None else f.unexpected_count} unexpected)"
            for f in failures[:5]
        )
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        detail = (
            f"{len(failures)} expectation(s) failed: {shown}{more}"
            if failures
            else f"{VALIDATION_FILE} reports success={summary.success!r}"
        )
        return [result(name, False, len(failures), 0, detail + f"; see {VALIDATION_FILE}")]
    if not ctx.fresh(VALIDATION_FILE):
        # a failure report is always worth showing; a success may be an earlier run's
        return [result(name, False, None, 0, f"not evaluated: {not_this_run(ctx)}")]
    return [result(name, True, 0, 0, f"all {summary.expectations} expectations passed")]


def headline_metric_gate(ctx: Context) -> list[GateVerdict]:
    """The headline metric is no worse than the baseline's, give or take the tolerance."""
    settings = gate_settings(ctx.params)
    metric, tolerance = ctx.headline, settings.metric.tolerance
    higher = settings.metric.direction == "higher"
    name = "headline_metric"
    try:
        validation = ctx.read_report(VALIDATION_FILE, ValidationReport)
        current = ctx.read_report(METRICS_FILE, MetricsReport)
    except ValueError as err:
        return [result(name, False, None, None, f"{metric}: {err}")]
    if validation is None or validation.success is not True:
        # reports/metrics.json is git-tracked: after a failed validation it is the
        # committed file from an earlier run, not a result of this one.
        return [result(name, False, None, None, f"{metric}: not evaluated because data validation did not pass in this run")]
    if not ctx.fresh(METRICS_FILE):
        return [result(name, False, None, None, f"{metric}: not evaluated: {not_this_run(ctx)}")]
    if current is None:
        return [result(name, False, None, None, f"{metric}: {METRICS_FILE} is missing; run `make repro`")]
    try:
        value = current.headline(metric)
    except ReportError as err:
        return [result(name, False, None, None, f"{METRICS_FILE}: {err}")]
    if not math.isfinite(value):
        return [result(name, False, value, None, f"{metric}: {METRICS_FILE} has no finite value for it ({value})")]
    base = (ctx.baseline or {}).get(metric)
    if not isinstance(base, int | float) or isinstance(base, bool) or not math.isfinite(base):
        where = f"{METRICS_FILE} on {ctx.baseline_source}"
        if settings.require_baseline:
            return [
                result(
                    name,
                    False,
                    value,
                    None,
                    f"{metric}: no baseline value in {where}; commit the champion's metrics "
                    "there, or set gates.require_baseline: false in params.yaml for a first run",
                )
            ]
        return [
            result(name, True, value, None, f"{metric}: no baseline in {where}; passed because gates.require_baseline is false")
        ]
    threshold = base - tolerance if higher else base + tolerance
    passed = value >= threshold if higher else value <= threshold
    relation = (">=" if passed else "<") if higher else ("<=" if passed else ">")
    sign = "-" if higher else "+"
    detail = (
        f"{metric} = {value:.4f} {relation} {threshold:.4f} "
        f"(baseline {base:.4f} on {ctx.baseline_source} {sign} tolerance {tolerance:g})"
    )
    return [result(name, passed, value, threshold, detail)]


def fairness_gate(ctx: Context) -> list[GateVerdict]:
    """The fairness stage's verdicts (``reports/fairness.json``), one result per attribute and metric.

    Thresholds live in ``params.yaml: fairness.gates``; the stage computes the verdicts and
    this gate makes them block the pull request. A pipeline without a fairness stage has no
    fairness gate; one that declares it but left no report fails.
    """
    name = "fairness"
    if ctx.producer(FAIRNESS_FILE) is None and not ctx.path(FAIRNESS_FILE).exists():
        return []
    try:
        report = ctx.read_report(FAIRNESS_FILE, FairnessReport)
    except ValueError as err:
        return [result(name, False, None, None, str(err))]
    if report is None:
        return [result(name, False, None, None, f"{FAIRNESS_FILE} is missing: the fairness stage did not run")]
    if not report.gates:
        return [result(name, False, None, None, f"{FAIRNESS_FILE} holds no gate verdicts")]
    if report.passed and not ctx.fresh(FAIRNESS_FILE):
        return [result(name, False, None, None, f"not evaluated: {not_this_run(ctx)}")]
    # The stage's own verdicts (a warning stays a warning), without its bootstrap details.
    return [GateVerdict.model_validate(g.model_dump(include=set(GateVerdict.model_fields))) for g in report.gates]


def benchmark_settings(params: dict[str, Any]) -> BenchmarkGateParams:
    """``benchmark.gate`` of params.yaml, checked, with its defaults filled in (on when absent)."""
    from ..core.params import parse_section

    section = (params.get("benchmark") or {}).get("gate", {})
    return parse_section(BenchmarkGateParams, section, "benchmark.gate")


def benchmark_gate(ctx: Context) -> list[GateVerdict]:
    """The model beats the benchmark fitted on the same split by ``benchmark.gate.margin`` on the headline metric."""
    settings = benchmark_settings(ctx.params)
    metric, margin, name = ctx.headline, settings.margin, "benchmark"
    if not settings.enabled:
        return [GateVerdict(id=GateId(gate=name), status="warn", reason="switched off (benchmark.gate.enabled: false)")]
    try:
        current = ctx.read_report(METRICS_FILE, MetricsReport)
    except ValueError as err:
        return [result(name, False, None, margin, str(err))]
    if current is None:
        return [result(name, False, None, margin, f"{METRICS_FILE} is missing; run `make repro`")]
    if not ctx.fresh(METRICS_FILE):
        return [result(name, False, None, margin, f"not evaluated: {not_this_run(ctx)}")]
    bench = current.benchmark
    if bench is None:
        return [result(name, False, None, margin, f"{METRICS_FILE} has no benchmark section; run `make repro`")]
    if bench.model_is_benchmark:
        # model.kind: scorecard: a zero difference is no evidence, so no pass: a warning naming why.
        reason = (
            f"not applicable: the model is the benchmark itself ({config.BENCHMARK_NAME}, model.kind: scorecard), "
            "nothing to beat; validate the scorecard on its own metrics"
        )
        return [GateVerdict(id=GateId(gate=name), status="warn", reason=reason)]
    model_value = current.headline(metric)
    bench_value = getattr(bench, metric)
    diff, low, high = bench.difference, bench.difference_ci_low, bench.difference_ci_high
    beats = diff >= margin
    # significant: only an interval wholly below the margin fails; point: the difference itself.
    passed = beats or (settings.rule == "significant" and high >= margin)
    detail = (
        f"{metric}: model {model_value:.4f} vs benchmark ({config.BENCHMARK_NAME}) {bench_value:.4f}: "
        f"difference {diff:+.4f} ({bench.confidence:.0%} interval {low:+.4f} to {high:+.4f}) "
        f"{'>=' if beats else '<'} margin {margin:+.4f} (rule {settings.rule})"
    )
    verdict = result(name, passed, diff, margin, detail)
    if passed and not beats:
        verdict = verdict.model_copy(update={"status": "warn", "reason": detail + "; below the margin within noise"})
    return [verdict]


# Order matters only for reading: every gate runs, so the report shows all verdicts.
GATES: list[Gate] = [pipeline_gate, data_validation_gate, headline_metric_gate, benchmark_gate, fairness_gate]


def run_gates(ctx: Context, gates: list[Gate] | None = None) -> list[GateVerdict]:
    """Every gate's results; a gate that crashes is a failed gate, named."""
    results: list[GateVerdict] = []
    for gate in GATES if gates is None else gates:
        try:
            results.extend(gate(ctx))
        except Exception as err:  # noqa: BLE001 - a crashing gate is a failed gate, named
            results.append(
                result(gate.__name__.removesuffix("_gate"), False, None, None, f"gate crashed: {type(err).__name__}: {err}")
            )
    return results


class BaselineError(RuntimeError):
    """The baseline revision cannot be read."""

    pass


def baseline_from_rev(root: Path, rev: str) -> dict[str, Any] | None:
    """``reports/metrics.json`` as committed at git revision ``rev``; None if not there."""
    check = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", rev + "^{commit}"], check=False, cwd=root, capture_output=True, text=True
    )
    if check.returncode != 0:
        raise BaselineError(
            f"baseline revision {rev!r} not found in the git repository at {root}; "
            "fetch it (CI checks out with fetch-depth: 0) or pass another --baseline-rev"
        )
    show = subprocess.run(["git", "show", f"{rev}:{METRICS_FILE}"], check=False, cwd=root, capture_output=True, text=True)
    if show.returncode != 0:
        return None
    data = json.loads(show.stdout)
    if not isinstance(data, dict):
        raise BaselineError(f"{METRICS_FILE} on {rev}: expected a JSON object")
    return data


def stale_stages(root: Path) -> tuple[str, ...]:
    """Stages `dvc status` reports as changed; a failing `dvc status` is itself reported as one."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], check=False, cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return (f"{STATUS_FAILED}: {lines[-1] if lines else proc.returncode}",)
    return tuple(json.loads(proc.stdout or "{}"))  # in pipeline order, as dvc reports them


def format_results(results: list[GateVerdict]) -> str:
    """One line per result, PASS, WARN or FAIL first."""
    return "\n".join(f"{r.status.upper()} {r.id}: {r.reason}" for r in results)


def main(argv: list[str] | None = None) -> int:
    """``make gates``: judge this run, write reports/gates.json, exit 1 if any gate failed (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="gates", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--baseline-rev", default="main", help="git revision whose committed reports/metrics.json is the champion (default: main)"
    )
    source.add_argument("--baseline", type=Path, help="a metrics JSON file to use as the champion instead")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to the root")
    args = parser.parse_args(argv)

    root: Path = args.root
    params = yaml.safe_load((root / args.params).read_text()) or {}
    try:
        gate_settings(params)
        benchmark_settings(params)
        if args.baseline is not None:
            baseline = json.loads(args.baseline.read_text()) if args.baseline.exists() else None
            source_name = str(args.baseline)
        else:
            baseline = baseline_from_rev(root, args.baseline_rev)
            source_name = args.baseline_rev
    except (ValueError, BaselineError) as err:
        print(f"gates: {err}", file=sys.stderr)
        return 2

    stale = stale_stages(root)
    ctx = Context(params=params, root=root, baseline=baseline, baseline_source=source_name, stale_stages=stale)
    results = run_gates(ctx)
    passed = bool(results) and all(r.passed for r in results)
    GatesReport(passed=passed, baseline=source_name, stale_stages=list(stale), gates=results).write(root / GATES_FILE)
    print(format_results(results))
    if not passed:
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for r in results:
                if not r.passed:  # an annotation on the run's summary page
                    print(f"::error title=Gate {r.id} failed::{r.reason}")
        failed = ", ".join(dict.fromkeys(str(r.id) for r in results if not r.passed))
        print(f"gates: FAILED ({failed}); details in {GATES_FILE}", file=sys.stderr)
        return 1
    print(f"gates: all {len(results)} passed (baseline: {source_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
