"""What `make monitor` writes: the JSON report, a Markdown summary with plots, Prometheus metrics.

Metric names are shared with the service's dashboard and alert rules (deploy/): ``model_psi``,
``model_csi``, ``model_drift_status`` (0 OK, 1 WARN, 2 ALERT), ``model_data_quality_ok``,
``model_decision_rate`` and ``model_monitor_last_run_timestamp_seconds``.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..core.stage import atomic_path, write_json, write_text
from .drift import LABELS

STATUS_CODE = {"pass": 0, "warn": 1, "fail": 2}  # a skipped figure (data quality failed) has no sample


def write(report: dict[str, Any], out_dir: Path, textfile: Path) -> list[Path]:
    """Write every output for ``report``; ``latest.*`` copies are what the workflow reads."""
    date = report["generated_at"][:10]
    out_dir.mkdir(parents=True, exist_ok=True)
    score_png, csi_png = out_dir / f"{date}-score.png", out_dir / f"{date}-csi.png"
    images = plots(report, score_png, csi_png)
    json_path, md_path = out_dir / f"{date}.json", out_dir / f"{date}.md"
    write_json(json_path, report)
    write_text(md_path, markdown(report, [p.name for p in images]))
    for src in (json_path, md_path):
        shutil.copyfile(src, out_dir / f"latest{src.suffix}")
    write_text(textfile, prometheus(report))
    return [json_path, md_path, *images, textfile]


def _labels(name: str, value: str) -> str:
    """``{name="value"}`` with the value escaped as the exposition format requires."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + f'{name}="{escaped}"' + "}"


def prometheus(report: dict[str, Any]) -> str:
    """The figures in the Prometheus text exposition format (for node_exporter's textfile collector)."""
    lines: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge"])
        lines.extend(f"{name}{labels} {value:.10g}" for labels, value in samples)

    figures = report["figures"]
    psi = [(_labels("figure", k), f["value"]) for k, f in figures.items() if f["kind"] == "psi"]
    csi = [(_labels("feature", k), f["value"]) for k, f in figures.items() if f["kind"] == "csi"]
    judged = {k: f["verdict"]["status"] for k, f in figures.items() if f["verdict"]["status"] in STATUS_CODE}
    status = [(_labels("figure", k), STATUS_CODE[s]) for k, s in judged.items()]
    family("model_psi", "Population stability index of the model score against the training reference.", psi)
    family("model_csi", "Characteristic stability index of a feature against the training reference.", csi)
    family("model_drift_status", "Drift verdict per figure: 0 OK, 1 WARN, 2 ALERT (absent when data quality failed).", status)
    family(
        "model_data_quality_ok",
        "1 when the batch met every expectation of the data contract.",
        [("", float(report["data_quality"]["success"]))],
    )
    rate = report["decision_rate"]["batch"]
    family(
        "model_decision_rate",
        "Share of the batch at or above the decision threshold ({{ "declined" if cookiecutter.use_case == "credit_scoring" else "flagged" }}).",
        [("", rate)] if rate is not None else [],
    )
    stamp = datetime.fromisoformat(report["generated_at"]).timestamp()
    family("model_monitor_last_run_timestamp_seconds", "When make monitor last ran (Unix time).", [("", stamp)])
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], score_png: Path, csi_png: Path) -> list[Path]:
    """Score distribution (reference vs batch, per reference bin) and CSI by feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    thresholds = report["thresholds"]
    score_figs = [(k, f) for k, f in report["figures"].items() if f["kind"] == "psi"]
    if score_figs:
        fig, axes = plt.subplots(1, len(score_figs), figsize=(6.5 * len(score_figs), 4), squeeze=False)
        for ax, (name, f) in zip(axes[0], score_figs, strict=True):
            x = np.arange(len(f["bins"]))
            ax.bar(x - 0.2, f["expected"], width=0.4, label="reference (training)", color="#8c8c8c")
            ax.bar(
                x + 0.2,
                f["actual"],
                width=0.4,
                label="current batch" if name == "score" else "served (audit log)",
                color="#1f77b4",
            )
            ax.set_xticks(x, [str(i + 1) for i in range(len(x) - 1)] + ["null"])
            ax.set(
                xlabel="Reference score bin (deciles of training scores)",
                ylabel="Share of rows",
                title=f"{name}: PSI {f['value']:.3f} ({LABELS[f['verdict']['status']]})",
            )
            ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(score_png) as tmp:
            fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(score_png)
    features = sorted(((k, f) for k, f in report["figures"].items() if f["kind"] == "csi"), key=lambda kv: kv[1]["value"])
    if features:
        fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(features) + 1.5))
        colours = {"pass": "#2ca02c", "warn": "#ff7f0e", "fail": "#d62728"}
        ax.barh(
            [k for k, _ in features],
            [f["value"] for _, f in features],
            color=[colours.get(f["verdict"]["status"], "#8c8c8c") for _, f in features],
        )
        ax.axvline(thresholds["warn"], ls="--", color="#ff7f0e", label=f"WARN {thresholds['warn']}")
        ax.axvline(thresholds["alert"], ls="--", color="#d62728", label=f"ALERT {thresholds['alert']}")
        ax.set(xlabel="CSI against the training reference", title="Feature drift (CSI)")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        with atomic_path(csi_png) as tmp:
            fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(csi_png)
    return written


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown(report: dict[str, Any], images: list[str]) -> str:
    """The human summary: verdict first, then every figure; also the step summary and the issue body."""
    b, q, rate = report["batch"], report["data_quality"], report["decision_rate"]
    icon = {"OK": "✅", "WARN": "⚠️", "ALERT": "🚨"}[report["status"]]
    lines = [
        f"## Model monitoring: {icon} {report['status']}",
        "",
        f"Batch `{b['path']}`: {b['rows']} rows ({'labelled' if b['labelled'] else 'no labels yet'}); model run "
        f"`{report['model']['run_id']}`, contract {report['model']['contract']}; {report['generated_at']}.",
        "",
    ]
    lines += [f"- {r}" for r in report["reasons"]] or ["Every figure is within its thresholds."]
    lines += ["", "### Data quality (contract expectations)", ""]
    if q["success"]:
        lines.append(f"Passed: {q['expectations']} expectations on {q['rows']} rows.")
    else:
        lines.append(
            f"**Failed**: {q['failed']} of {q['expectations']} expectations. Drift is not judged on data breaking the contract."
        )
        lines += ["", "| column | expectation | unexpected |", "|---|---|---|"]
        for f in q["failures"]:
            unexpected = f["unexpected_count"] if f["unexpected_count"] is not None else f["observed_value"]
            lines.append(f"| {f['column']} | {f['expectation']} | {unexpected} |")
    t = report["thresholds"]
    lines += ["", f"### Drift (WARN at {t['warn']}, ALERT at {t['alert']})", "", "| figure | index | verdict |", "|---|---|---|"]
    for name, f in sorted(report["figures"].items(), key=lambda kv: (kv[1]["kind"] != "psi", -kv[1]["value"])):
        lines.append(f"| {name} | {f['kind'].upper()} {f['value']:.4f} | {LABELS[f['verdict']['status']]} |")
    lines += [
        "",
        f"Decision rate (at or above threshold {report['model']['threshold']:.4g}): batch {_pct(rate['batch'])}, "
        f"training {_pct(rate['reference'])}" + (f", served {_pct(rate['served'])}" if "served" in rate else "") + ".",
    ]
    if "audit_log" in report:
        a = report["audit_log"]
        lines.append(f"Audit log `{a['path']}`: {a['this_model']} decisions by this model, {a['other_models']} by others.")
    if "oversight" in report:
        o = report["oversight"]
        rate = "n/a" if o["override_rate"] is None else _pct(o["override_rate"])
        outcomes = ", ".join(f"{k}: {v}" for k, v in o["outcomes"].items()) or "none"
        lines.append(
            f"Human review: {o['reviews']} reviews ({o['referred_reviewed']} of referred cases); override rate of "
            f"automated decisions {rate}; outcomes {outcomes}."
        )
    perf = report.get("performance")
    if perf and perf.get("available"):
        h = perf["headline"]
        base = "n/a" if perf["baseline"] is None else f"{perf['baseline']:.4f}"
        ci = perf.get("interval_95")
        interval = f", 95% interval {ci[0]:.4f}-{ci[1]:.4f}" if ci else ""
        lines += [
            "",
            "### Performance on labelled rows",
            "",
            f"{h}: {perf['metrics'][h]:.4f}{interval} (at training: {base}); {LABELS[perf['verdict']['status']]}.",
            "",
        ]
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in perf["metrics"].items()]
        cal = perf["calibration_in_the_large"]
        lines += ["", f"Calibration in the large: mean score {cal['mean_score']:.4f}, observed rate {cal['observed_rate']:.4f}."]
        if perf["fairness"]["gates"]:
            lines += [
                "",
                "Fairness on this batch (point estimates beside the pipeline's gates, which judge with confidence intervals):",
                "",
            ]
        for gate in perf["fairness"]["gates"]:
            bound = f"min {gate['min']}" if "min" in gate else f"max {gate['max']}"
            mark = " (beyond the gate's bound)" if gate["beyond_gate"] else ""
            lines.append(f"- {gate['metric']} by {gate['attribute']}: {gate['value']:.3f}, gate {bound}{mark}")
    if images:
        lines += [""] + [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"
