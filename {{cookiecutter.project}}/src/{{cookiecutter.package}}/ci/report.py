"""Report: write reports/report.md, the pull-request comment and the CI step summary.

Run after `dvc repro` and the gates:

    python -m {{ cookiecutter.package }}.ci.report --baseline-rev origin/main

It reads only files of the run (``reports/validation.json``, ``reports/metrics.json``,
``reports/gates.json``, ``reports/validation_pack.json``, ``reports/plots/``, the titles of
``reports/regulatory/*.md``) plus ``dvc metrics
diff`` and ``dvc params diff`` against the baseline revision, and the validation pack committed
there (``git show``), whose grades the migration matrix compares with this run's. A section is a
function ``section(inputs) -> str | None`` listed in ``SECTIONS``; a new section (fairness by group, say) plugs in by adding a
function there. Anything missing is said in the report, never silently left out.

Images: with ``--images link`` (the default) plots are named and linked to the run's
artifacts, so nothing leaves the CI provider; with ``--images embed`` they are referenced as
local images for ``cml comment`` to publish.

Sections stay Python functions rather than a Jinja template: each is a few branches on what
the run left behind (missing, stale, failed) and a table; a template would keep every branch
and lose the unit tests' direct calls.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core import config, use_case
from ..core.reports import FairnessReport, GatesReport, MetricsReport, ReportError, ValidationPackReport, ValidationReport
from ..core.stage import write_text
from ..evaluation import calibration
from ..evaluation.validation_pack import decode_assignments
from . import gates as gates_module

REPORT_FILE = config.REPORT_MD.as_posix()
VALIDATION_PACK_FILE = config.VALIDATION_PACK.as_posix()
PLOTS_DIR = config.PLOTS.as_posix()
REGULATORY_DIR = config.REGULATORY_DIR.as_posix()


@dataclass
class Inputs:
    """Everything a section may render, loaded once."""

    params: dict[str, Any]
    baseline_rev: str
    validation: ValidationReport | None = None
    metrics: MetricsReport | None = None
    gates: GatesReport | None = None
    metrics_diff: dict[str, dict[str, Any]] | None = None  # metric -> {"old", "new", "diff"}
    params_diff: dict[str, dict[str, Any]] | None = None  # param -> {"old", "new"}
    diff_errors: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # paths relative to reports/
    # The validator's and the regulator's documents of the run: (path from the root, title)
    documents: list[tuple[str, str]] = field(default_factory=list)
    images: str = "link"
    run_url: str | None = None
    stale_stages: tuple[str, ...] = ()  # from `dvc status`: stages not reproduced in this run
    stale_files: frozenset[str] = frozenset()  # files (from the root) an earlier run left behind
    fairness: FairnessReport | None = None  # reports/fairness.json, when the pipeline has that stage
    validation_pack: ValidationPackReport | None = None  # reports/validation_pack.json
    baseline_pack: ValidationPackReport | None = None  # the champion's, as committed on the baseline revision
    headline: str = field(default_factory=lambda: use_case.load().headline_metric)
    title: str = field(default_factory=lambda: use_case.load().title)


def fmt(value: Any) -> str:
    """A table cell: floats to 4 decimals, missing values as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|")


def fmt_plain(value: Any) -> str:
    """A cell shown as written in params.yaml."""
    return "—" if value is None else str(value).replace("|", "\\|")


def fmt_change(value: Any) -> str:
    """A signed change, 4 decimals."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:+.4f}"
    return fmt(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def header_section(inputs: Inputs) -> str:
    """Title and the one-line verdict."""
    title = f"## {inputs.title}: model report"
    gates = inputs.gates
    if gates is None:
        verdict = (
            "❌ **Gates did not run**: the pipeline stopped before them; "
            "this change cannot be merged until they pass (see the job log)."
        )
    elif gates.passed:
        verdict = f"✅ **All {len(gates.gates)} gates passed** against `{inputs.baseline_rev}`."
    else:
        failed = list(dict.fromkeys(str(g.id) for g in gates.gates if not g.passed))
        verdict = f"❌ **Gate failed: {', '.join(failed) or 'unknown'}**; this change must not be merged as is."
    return f"{title}\n\n{verdict}"


def gates_section(inputs: Inputs) -> str:
    """Every gate's result, with where its threshold comes from."""
    if inputs.gates is None:
        return "### Gates\n\n`reports/gates.json` is missing: the gates did not run."
    icons = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "skip": "➖ skip"}
    rows = [[icons[g.status], f"`{g.id}`", fmt(g.value), fmt(g.threshold), fmt(g.reason)] for g in inputs.gates.gates]
    settings = (inputs.params.get("gates") or {}).get("metric") or {}
    fairness = any(g.id.gate == "fairness" for g in inputs.gates.gates)
    note = (
        f"Thresholds come from `params.yaml` (`gates`): headline metric `{inputs.headline}`, "
        f"tolerance {fmt_plain(settings.get('tolerance'))} against `{inputs.gates.baseline}`"
        + ("; benchmark margin in `benchmark.gate`" if any(g.id.gate == "benchmark" for g in inputs.gates.gates) else "")
        + ("; fairness thresholds in `fairness.gates`." if fairness else ".")
    )
    return "### Gates\n\n" + table(["Result", "Gate", "Value", "Threshold", "Detail"], rows) + "\n\n" + note


def validation_section(inputs: Inputs) -> str:
    """Whether the data met the contract, and what broke it if not."""
    v = inputs.validation
    if v is None:
        return "### Data validation\n\n❌ `reports/validation.json` is missing: the validate stage did not run."
    if v.success is True and gates_module.VALIDATION_FILE in inputs.stale_files:
        return (
            "### Data validation\n\n❌ Not known: the pipeline did not finish in this run "
            f"(stages not reproduced: {', '.join(inputs.stale_stages)}), so `reports/validation.json` is an earlier run's."
        )
    if v.success is True:
        return f"### Data validation\n\n✅ The data met the contract ({v.expectations} expectations checked)."
    rows = [[fmt(f.column), f"`{f.expectation}`", fmt(f.unexpected_count)] for f in v.failures]
    body = table(["Column", "Expectation", "Unexpected rows"], rows) if rows else "No failure details recorded."
    return (
        "### Data validation\n\n❌ The data broke the contract (`contract.yaml`); "
        "nothing downstream was trained on it.\n\n" + body
    )


def metrics_section(inputs: Inputs) -> str:
    """This run's metrics against the baseline's (headline first)."""
    base = inputs.baseline_rev
    out = [f"### Metrics: this run vs `{base}`"]
    if inputs.metrics_diff:
        rows = []
        for name in sorted(inputs.metrics_diff, key=lambda n: (n != inputs.headline, n)):
            d = inputs.metrics_diff[name]
            label = f"**{name}** (headline)" if name == inputs.headline else name
            rows.append([label, fmt(d.get("old")), fmt(d.get("new")), fmt_change(d.get("diff"))])
        out.append(table(["Metric", f"`{base}`", "this run", "Change"], rows))
    elif inputs.validation is not None and inputs.validation.success is False:
        out.append("Not computed: the data failed validation, so no model was trained in this run.")
    elif gates_module.METRICS_FILE in inputs.stale_files:
        out.append(
            f"Not computed: the pipeline did not finish in this run (stages not reproduced: {', '.join(inputs.stale_stages)})."
        )
    elif inputs.validation is None:
        out.append("Not computed: `reports/validation.json` is missing, so the data was not checked.")
    elif inputs.metrics is not None:
        rows = [[name, fmt(getattr(inputs.metrics, name))] for name in inputs.metrics.metric_names()]
        out.append(f"No comparison with `{base}` was available; this run's metrics:")
        out.append(table(["Metric", "this run"], rows))
    else:
        out.append("❌ `reports/metrics.json` is missing: the pipeline did not finish.")
    return "\n\n".join(out)


def benchmark_section(inputs: Inputs) -> str | None:
    """The model against the benchmark fitted on the same split (metrics.json ``benchmark``); the verdict is in the gates."""
    m = inputs.metrics
    if m is None or gates_module.METRICS_FILE in inputs.stale_files:
        return None  # the metrics section says why there are no metrics
    out = [f"### Benchmark: {config.BENCHMARK_NAME}"]
    b = m.benchmark
    if b is None:
        out.append("❌ `reports/metrics.json` has no `benchmark` section: the benchmark was not evaluated in this run.")
        return "\n\n".join(out)
    if b.model_is_benchmark:
        out.append(
            f"The model **is** the benchmark (`model.kind: scorecard`): the {config.BENCHMARK_NAME} fitted by the "
            "benchmark stage is what this run trains, evaluates and serves, so there is no comparison to show "
            "and the benchmark gate does not apply."
        )
        return "\n\n".join(out)
    rows = [["model", fmt(m.roc_auc), fmt(m.pr_auc)], [config.BENCHMARK_NAME, fmt(b.roc_auc), fmt(b.pr_auc)]]
    out.append(table(["", "roc_auc", "pr_auc"], rows))
    out.append(
        f"Model - benchmark on **{inputs.headline}**: {fmt_change(b.difference)} "
        f"({b.confidence:.0%} interval {fmt_change(b.difference_ci_low)} to {fmt_change(b.difference_ci_high)}, "
        f"{b.bootstrap} paired bootstrap resamples of the held-out rows)."
    )
    return "\n\n".join(out)


def fairness_section(inputs: Inputs) -> str | None:
    """Outcomes by protected group, from reports/fairness.json; the verdicts are in the gates table."""
    if inputs.fairness is None:
        return None
    out = ["### Fairness by group"]
    if gates_module.FAIRNESS_FILE in inputs.stale_files:
        out.append("Not computed in this run: the pipeline did not finish before the fairness stage.")
        return "\n\n".join(out)
    for attribute, result in inputs.fairness.attributes.items():
        groups = {group: stats.model_dump() for group, stats in result.groups.items()}
        columns: list[str] = []
        for stats in groups.values():
            for key, value in stats.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and key not in columns:
                    columns.append(key)
        columns.sort(key=lambda c: (c != "n", c))
        rows = [[fmt(group), *(fmt(stats.get(c)) for c in columns)] for group, stats in groups.items()]
        out.append(f"**{attribute}**\n\n" + table(["Group", *columns], rows))
    return "\n\n".join(out)


def migration_section(pack: ValidationPackReport, base: ValidationPackReport | None, base_rev: str) -> str:
    """Grades of the same held-out rows under the champion (rows) and this run's model (columns)."""
    title = f"**Grade migration: champion (`{base_rev}`) to this run**"
    if base is None:
        return f"{title}\n\nNo validation pack is committed on `{base_rev}`: nothing to compare with."
    if base.grades is None or pack.grades is None:
        return f"{title}\n\nOne of the two runs has no master scale (params.yaml `grades`)."
    old, new = base.grades.assignments, pack.grades.assignments
    if old.keys_sha256 != new.keys_sha256:
        return (
            f"{title}\n\nNot comparable: the held-out rows differ from `{base_rev}`'s ({old.rows} vs {new.rows} rows, "
            "different keys), so no row was graded by both models."
        )
    old_names, new_names = list(base.grades.scale), list(pack.grades.scale)
    matrix = calibration.migration_matrix(decode_assignments(old), decode_assignments(new), max(len(old_names), len(new_names)))
    matrix = matrix[: len(old_names), : len(new_names)]
    rows = [[f"**{name}**", *(str(int(c)) for c in matrix[i])] for i, name in enumerate(old_names)]
    out = [title, table(["champion \\ this run", *new_names], rows)]
    if old_names == new_names:
        total = int(matrix.sum())
        stay = int(np.trace(matrix))
        better = int(np.tril(matrix, -1).sum())  # a column left of the diagonal: a better grade (lower PD)
        out.append(
            f"{stay} of {total} rows keep their grade ({stay / total:.1%}); {better} move to a better grade, "
            f"{total - stay - better} to a worse one."
        )
    else:
        out.append("The master scale changed between the two runs; rows are the champion's grades, columns this run's.")
    return "\n\n".join(out)


def validation_pack_section(inputs: Inputs) -> str | None:
    """The validation pack: AUC with its interval and reference, grades with their tests, migration, value bands."""
    pack = inputs.validation_pack
    out = ["### Validation pack"]
    if pack is None:
        return None
    if VALIDATION_PACK_FILE in inputs.stale_files:
        out.append("Not computed in this run: the pipeline did not finish before the validation_pack stage.")
        return "\n\n".join(out)
    d = pack.discrimination
    ref = "this model" if d.reference_is_this_model else f"run `{d.reference.run_id[:8]}`"
    rows = [
        ["ROC-AUC", f"{fmt(d.roc_auc)} [{fmt(d.ci_low)}, {fmt(d.ci_high)}] ({d.confidence:.0%} DeLong)"],
        ["Reference ROC-AUC (first validated model)", f"{fmt(d.reference.roc_auc)} ({ref}); change {fmt_change(d.change)}"],
        ["Decline from the reference", f"p = {fmt(d.decline.p_value)}: {d.decline.status}"],
        ["KS (score bands)", fmt(pack.gains.ks)],
    ]
    if pack.grades is not None:
        hl, conc = pack.grades.hosmer_lemeshow, pack.grades.concentration
        rows.append(["Hosmer-Lemeshow over grades", f"{fmt(hl.statistic)} (df {hl.df}, p = {fmt(hl.p_value)}): {hl.status}"])
        rows.append(["Grade concentration (Herfindahl; normalised)", f"{fmt(conc.hhi)}; {fmt(conc.normalised)}"])
    out.append(table(["Figure", "This run"], rows))
    if pack.grades is not None:
        grade_rows = [
            [
                f"**{r.grade}**",
                f"{r.pd_low:g}-{r.pd_high:g}",
                str(r.rows),
                str(r.defaults),
                fmt(r.observed_rate),
                fmt(r.mean_pd),
                fmt(r.jeffreys.p_value if r.jeffreys else None),
                fmt(r.binomial.p_value if r.binomial else None),
            ]
            for r in pack.grades.rows
        ]
        header = ["Grade", "PD range", "Rows", "Defaults", "Observed", "Mean PD", "Jeffreys p", "Binomial p"]
        out.append(table(header, grade_rows))
        out.append(migration_section(pack, inputs.baseline_pack, inputs.baseline_rev))
    if pack.value_bands is not None:
        vb = pack.value_bands
        band_rows = [
            [f"**{b.band}**", str(b.rows), str(b.frauds), fmt(b.precision), fmt(b.recall), fmt(b.fraud_rate_by_value)]
            for b in [*vb.bands, vb.overall]
        ]
        out.append(
            f"By `{vb.column}` band, at threshold {fmt(pack.threshold)}:\n\n"
            + table(["Band", "Rows", "Frauds", "Precision", "Recall", "Fraud rate by value"], band_rows)
        )
    failed = ", ".join(f"`{t}`" for t in pack.failed_tests)
    out.append(
        (f"⚠️ Failed at p < {pack.significance:g}: {failed}." if failed else f"✅ No test failed at p < {pack.significance:g}.")
        + " Details: `reports/validation_pack.json` (docs/validation.md)."
    )
    return "\n\n".join(out)


def params_section(inputs: Inputs) -> str:
    """Parameters changed against the baseline."""
    out = [f"### Parameters changed vs `{inputs.baseline_rev}`"]
    if inputs.params_diff is None:
        out.append("Not compared (see notes below).")
    elif not inputs.params_diff:
        out.append("No parameter changed.")
    else:
        rows = [[f"`{name}`", fmt_plain(d.get("old")), fmt_plain(d.get("new"))] for name, d in sorted(inputs.params_diff.items())]
        out.append(table(["Parameter", f"`{inputs.baseline_rev}`", "this run"], rows))
    return "\n\n".join(out)


def plots_section(inputs: Inputs) -> str | None:
    """The run's plots, linked or embedded."""
    if not inputs.plots:
        return None
    out = ["### Plots"]
    reports = config.REPORTS.as_posix()
    plots = [p for p in inputs.plots if f"{reports}/{p}" not in inputs.stale_files]
    left_over = [p for p in inputs.plots if f"{reports}/{p}" in inputs.stale_files]
    if plots and inputs.images == "embed":
        out += [f"![{Path(p).stem}]({p})" for p in plots]
    elif plots:
        names = ", ".join(f"`{p}`" for p in plots)
        where = f"the `reports` artifact of [this run]({inputs.run_url})" if inputs.run_url else "`reports/`"
        out.append(f"Plots are not uploaded anywhere; they are in {where}: {names}.")
    if left_over:
        names = ", ".join(f"`{p}`" for p in left_over)
        out.append(f"Not produced in this run (the pipeline did not finish; these are an earlier run's): {names}.")
    return "\n\n".join(out)


def documents_section(inputs: Inputs) -> str:
    """Where the validation pack and the regulatory documents of this run are."""
    out = ["### Documents for validators and regulators"]
    produced = [(p, t) for p, t in inputs.documents if not is_stale(inputs, p)]
    left_over = [p for p, _ in inputs.documents if is_stale(inputs, p)]
    if produced:
        where = f"the `reports` artifact of [this run]({inputs.run_url})" if inputs.run_url else "`reports/`"
        out.append(
            f"Generated from this run's files, in {where}; a release attaches them to its GitHub release:\n\n"
            + table(["Document", "File"], [[title, f"`{path}`"] for path, title in produced])
        )
    if left_over:
        names = ", ".join(f"`{p}`" for p in left_over)
        out.append(f"Not produced in this run (the pipeline did not finish; these are an earlier run's): {names}.")
    if not any(p.startswith(f"{REGULATORY_DIR}/") for p, _ in inputs.documents):
        out.append(f"❌ `{REGULATORY_DIR}/` is missing: the regulatory stage did not run.")
    return "\n\n".join(out)


def is_stale(inputs: Inputs, path: str) -> bool:
    """``path`` (or the directory output holding it) was left behind by an earlier run."""
    return path in inputs.stale_files or path.rsplit("/", 1)[0] in inputs.stale_files


def notes_section(inputs: Inputs) -> str | None:
    """What could not be compared, and why."""
    if not inputs.diff_errors:
        return None
    return "### Notes\n\n" + "\n".join(f"- {e}" for e in inputs.diff_errors)


SECTIONS: list[Callable[[Inputs], str | None]] = [
    header_section,
    gates_section,
    validation_section,
    metrics_section,
    benchmark_section,
    fairness_section,
    validation_pack_section,
    params_section,
    plots_section,
    documents_section,
    notes_section,
]


def render(inputs: Inputs) -> str:
    """The whole report."""
    parts = [part for section in SECTIONS if (part := section(inputs))]
    footer = f"<sub>Run: {inputs.run_url}</sub>" if inputs.run_url else None
    return "\n\n".join(parts + ([footer] if footer else [])) + "\n"


def flatten_dvc_diff(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``dvc metrics/params diff --json`` output, keyed by file, flattened to name -> change.

    Names stay unqualified unless two files define the same one.
    """
    flat: dict[str, dict[str, Any]] = {}
    for path, changes in (raw or {}).items():
        for name, change in (changes or {}).items():
            key = name if name not in flat else f"{path}:{name}"
            flat[key] = change
    return flat


def dvc_diff(root: Path, kind: str, rev: str, show_all: bool, only: str | None = None) -> dict[str, dict[str, Any]]:
    """Run ``dvc <kind> diff --json <rev>`` in ``root`` (for one file with ``only``); RuntimeError names the failure."""
    cmd = [sys.executable, "-m", "dvc", kind, "diff", "--json", rev] + (["--all"] if show_all else [])
    proc = subprocess.run(cmd, check=False, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"`dvc {kind} diff {rev}` failed: {message[-1] if message else proc.returncode}")
    raw = json.loads(proc.stdout or "{}")
    return flatten_dvc_diff({path: changes for path, changes in raw.items() if only is None or path == only})


def baseline_pack(root: Path, rev: str) -> ValidationPackReport | None:
    """The validation pack committed on ``rev`` (None if there is none); a malformed one raises ValueError naming it."""
    show = subprocess.run(["git", "show", f"{rev}:{VALIDATION_PACK_FILE}"], check=False, cwd=root, capture_output=True, text=True)
    if show.returncode != 0:
        return None
    try:
        return ValidationPackReport.parse(json.loads(show.stdout), f"{VALIDATION_PACK_FILE} on {rev}")
    except (json.JSONDecodeError, ReportError) as err:
        raise ValueError(f"{VALIDATION_PACK_FILE} on {rev}: {err}") from None


def documents(root: Path) -> list[tuple[str, str]]:
    """The validation pack and each regulatory document that exists, titled by its first heading."""
    found = [(VALIDATION_PACK_FILE, "Validation pack (docs/validation.md)")] if (root / VALIDATION_PACK_FILE).exists() else []
    for path in sorted((root / REGULATORY_DIR).glob("*.md")):
        first = path.read_text(encoding="utf-8").lstrip().split("\n", 1)[0]
        # "# Instructions for use (EU AI Act Art. 13): <model title>" -> the part before the title
        title = first.removeprefix("# ").split(": ", 1)[0] if first.startswith("# ") else path.stem
        found.append((path.relative_to(root).as_posix(), title))
    return found


def load_inputs(root: Path, baseline_rev: str, images: str, run_url: str | None, compare: bool = True) -> Inputs:
    """Read everything the sections need from the repository at ``root``."""
    ctx = gates_module.Context(params={}, root=root, baseline=None, baseline_source=baseline_rev)
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    inputs = Inputs(params=params, baseline_rev=baseline_rev, images=images, run_url=run_url)
    for attr, relative, model in (
        ("validation", gates_module.VALIDATION_FILE, ValidationReport),
        ("metrics", gates_module.METRICS_FILE, MetricsReport),
        ("gates", gates_module.GATES_FILE, GatesReport),
        ("fairness", gates_module.FAIRNESS_FILE, FairnessReport),
        ("validation_pack", VALIDATION_PACK_FILE, ValidationPackReport),
    ):
        try:
            setattr(inputs, attr, ctx.read_report(relative, model))
        except ValueError as err:
            inputs.diff_errors.append(str(err))
    plots = root / PLOTS_DIR
    if plots.is_dir():
        inputs.plots = sorted(str(p.relative_to(root / "reports")) for p in plots.rglob("*.png"))
    inputs.documents = documents(root)
    if compare:
        inputs.stale_stages = gates_module.stale_stages(root)
        fresh = gates_module.Context(
            params=params, root=root, baseline=None, baseline_source=baseline_rev, stale_stages=inputs.stale_stages
        ).fresh
        candidates = [
            gates_module.VALIDATION_FILE,
            gates_module.METRICS_FILE,
            gates_module.FAIRNESS_FILE,
            VALIDATION_PACK_FILE,
            REGULATORY_DIR,
            *(f"{config.REPORTS.as_posix()}/{p}" for p in inputs.plots),
        ]
        inputs.stale_files = frozenset(f for f in candidates if not fresh(f))
        # Metrics are compared only when this run produced them; otherwise the diff
        # would show the committed (stale) file as if it were this run's result.
        if (
            gates_module.METRICS_FILE not in inputs.stale_files
            and inputs.validation is not None
            and inputs.validation.success is True
        ):
            try:
                # the model's metrics; other DVC metrics files (fairness) have their own section
                inputs.metrics_diff = dvc_diff(root, "metrics", baseline_rev, show_all=True, only=gates_module.METRICS_FILE)
            except RuntimeError as err:
                inputs.diff_errors.append(str(err))
        try:
            inputs.baseline_pack = baseline_pack(root, baseline_rev)
        except ValueError as err:
            inputs.diff_errors.append(str(err))
        try:
            inputs.params_diff = dvc_diff(root, "params", baseline_rev, show_all=False)
        except RuntimeError as err:
            inputs.diff_errors.append(str(err))
    return inputs


def main(argv: list[str] | None = None) -> int:
    """``make report``: write reports/report.md (always exits 0: the gates decide)."""
    parser = argparse.ArgumentParser(prog="report", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-rev", default="main", help="git revision to compare with (default: main)")
    parser.add_argument(
        "--images",
        choices=["link", "embed"],
        default="link",
        help="link plots to the run's artifacts (default) or embed them for cml to publish",
    )
    parser.add_argument("--run-url", default=None, help="URL of the CI run, linked from the report")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    parser.add_argument("--output", type=Path, default=None, help=f"where to write (default: {REPORT_FILE})")
    args = parser.parse_args(argv)

    inputs = load_inputs(args.root, args.baseline_rev, args.images, args.run_url or None)
    out = args.output or args.root / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render(inputs))
    print(f"report: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
