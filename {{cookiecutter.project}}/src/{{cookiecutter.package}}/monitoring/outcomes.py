"""``make outcomes LABELS=<file>``: the decisions the service made, against the outcomes that have since matured.

The labels file (CSV or Parquet) has one row per matured decision: ``decision_id`` (as the
service answered it), ``outcome`` (a value of the contract's target, e.g. 1 for a default) and
``date`` (when the outcome was known). The audit log's chain (and its signed checkpoints, when
present) is verified first, by the same check as ``make audit-verify``: outcomes are never joined
to a log that may have been altered. Each label is joined to its decision by id; per model version
(the MLflow run that answered) the report gives the realised default rate against the predicted PD
per grade of the master scale (Jeffreys and binomial tests), Hosmer-Lemeshow over the grades, the
portfolio's calibration in the large, and ROC-AUC on the matured decisions with its DeLong interval
against the validation pack's reference. The statistics are ``evaluation/calibration.py``'s.

Writes ``reports/outcomes.json`` and ``reports/outcomes.md``. Exit status 0 when every test
passes, 1 when one fails (the report says which) or the input cannot be read (no report then).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import config, use_case
from ..core.contract import Contract, load_contract
from ..core.errors import DataError
from ..core.params import Params, load_params
from ..core.reports import ValidationReference
from ..core.stage import LOGGER, run_stage, write_json, write_text
from ..evaluation import calibration
from ..evaluation.validation_pack import grade_table, verdict

OUT_JSON = config.REPORTS / "outcomes.json"
OUT_MD = config.REPORTS / "outcomes.md"
LABEL_COLUMNS = ("decision_id", "outcome", "date")
PACKAGE = __package__.rsplit(".", 1)[0]
log = logging.getLogger(LOGGER)


class OutcomesError(DataError):
    """The labels or the audit log cannot be used."""


def read_labels(path: Path, contract: Contract) -> pd.DataFrame:
    """The labels file, checked: the three columns, unique decision ids, outcomes from the target's categories."""
    if not path.exists():
        raise OutcomesError(f"{path}: labels file not found (make outcomes LABELS=<csv or parquet: {', '.join(LABEL_COLUMNS)}>)")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"decision_id": str})
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise OutcomesError(f"{path}: missing column(s) {missing}; expected {list(LABEL_COLUMNS)}")
    df = df.assign(decision_id=df["decision_id"].astype(str))
    dupes = df["decision_id"][df["decision_id"].duplicated()]
    if len(dupes):
        raise OutcomesError(f"{path}: decision_id {dupes.iloc[0]!r} has more than one outcome ({len(dupes)} duplicates)")
    allowed = contract.categories(contract.target)
    as_text = df["outcome"].astype(str)
    bad = ~as_text.isin([str(c) for c in allowed])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise OutcomesError(
            f"{path}: outcome {as_text.iloc[row]} in row {row + 2} is not one of the target's categories {allowed} "
            f"({int(bad.sum())} such rows)"
        )
    dates = pd.to_datetime(df["date"], errors="coerce", utc=True)
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise OutcomesError(f"{path}: date {df['date'].iloc[row]} in row {row + 2} is not a date")
    return df.assign(y=(as_text == str(contract.positive_label)).astype(int), date=dates)


def verify_audit_log(audit_log: Path, checkpoints: Path | None) -> None:
    """Run ``make audit-verify``'s check (serving/audit.py, its own process: monitoring does not import serving)."""
    cmd = [sys.executable, "-m", f"{PACKAGE}.serving.audit", "verify", str(audit_log)]
    if checkpoints is not None:
        cmd += ["--checkpoints", str(checkpoints)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise OutcomesError(f"audit log {audit_log} failed verification, so no outcome is joined to it: {why[-1] if why else ''}")


def read_decisions(audit_log: Path) -> pd.DataFrame:
    """Decision records of the (verified) audit log: id, model run and version, score, decision, time."""
    rows = []
    with audit_log.open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if "event" in record:
                continue  # chain events and human reviews are not model decisions
            m = record["model"]
            rows.append(
                {
                    "decision_id": str(record["decision_id"]),
                    "run_id": m["run_id"],
                    "model_version": f"{m['package_version']}+{m['run_id'][:8]}",
                    "score": float(record["score"]),
                    "decision": record["decision"],
                    "decided_at": record["timestamp"],
                }
            )
    return pd.DataFrame(rows, columns=["decision_id", "run_id", "model_version", "score", "decision", "decided_at"])


def model_report(df: pd.DataFrame, params: Params, reference: ValidationReference | None) -> dict[str, Any]:
    """One model version's matured decisions: rates, grade tests, calibration in the large, ROC-AUC."""
    alpha = params.validation_pack.significance
    y, score = df["y"].to_numpy(), df["score"].to_numpy()
    n, d = len(y), int(y.sum())
    mean_pd = float(score.mean())
    out: dict[str, Any] = {
        "model_version": df["model_version"].iloc[0],
        "run_id": df["run_id"].iloc[0],
        "decisions": n,
        "outcomes_from": df["date"].min().date().isoformat(),
        "outcomes_to": df["date"].max().date().isoformat(),
        "positives": d,
        "realised_rate": round(d / n, 6),
        "mean_score": round(mean_pd, 6),
        "failed_tests": [],
    }
    if params.grades is not None:  # scores are PDs: test them
        rows, _, hl, concentration = grade_table(y, score, params.grades, alpha)
        out["grades"] = [r.model_dump() for r in rows]
        out["hosmer_lemeshow"] = hl.model_dump()
        out["calibration_in_the_large"] = {
            "jeffreys": verdict(calibration.jeffreys_p_value(d, n, mean_pd), alpha).model_dump(),
            "binomial": verdict(calibration.binomial_p_value(d, n, mean_pd), alpha).model_dump(),
        }
        out["failed_tests"] += [f"jeffreys:{r.grade}" for r in rows if r.jeffreys and r.jeffreys.status == "fail"]
        out["failed_tests"] += ["hosmer_lemeshow"] if hl.status == "fail" else []
        if out["calibration_in_the_large"]["jeffreys"]["status"] == "fail":
            out["failed_tests"].append("jeffreys:portfolio")
    if 2 <= d <= n - 2:
        auc = calibration.delong_auc(y, score, params.validation_pack.confidence)
        out["roc_auc"] = {
            "value": round(auc.auc, 6),
            "ci_low": round(auc.low, 6),
            "ci_high": round(auc.high, 6),
            "se": round(auc.se, 6),
        }
        if reference is not None:
            decline = verdict(calibration.auc_decline_p_value(reference.roc_auc, auc), alpha)
            out["roc_auc"]["reference"] = reference.roc_auc
            out["roc_auc"]["decline"] = decline.model_dump()
            out["failed_tests"] += ["roc_auc_decline"] if decline.status == "fail" else []
    else:
        out["roc_auc"] = None
        out["roc_auc_why_not"] = f"needs at least 2 matured positives and 2 negatives, has {d} and {n - d}"
    return out


def run(
    labels_path: Path,
    audit_log: Path,
    checkpoints: Path | None,
    params: Params,
    contract: Contract,
    reference_path: Path = config.VALIDATION_REFERENCE,
) -> dict[str, Any]:
    """Verify the log, join the labels to its decisions, and report per model version against the validation reference."""
    if not audit_log.exists():
        raise OutcomesError(f"{audit_log}: no audit log here (AUDIT_LOG=<jsonl> or ${config.AUDIT_LOG_ENV})")
    labels = read_labels(labels_path, contract)
    verify_audit_log(audit_log, checkpoints if checkpoints is not None and checkpoints.exists() else None)
    decisions = read_decisions(audit_log)
    joined = labels.merge(decisions, on="decision_id", how="inner")
    unknown = labels.loc[~labels["decision_id"].isin(decisions["decision_id"]), "decision_id"]
    if joined.empty:
        raise OutcomesError(f"{labels_path}: none of its {len(labels)} decision ids is in the audit log {audit_log}")
    reference = ValidationReference.read(reference_path) if reference_path.exists() else None
    models = [model_report(g, params, reference) for _, g in joined.groupby("run_id", sort=False)]
    failed = [f"{m['model_version']}:{t}" for m in models for t in m["failed_tests"]]
    return {
        "schema_version": 1,
        "use_case": use_case.load().name,
        "status": "FAIL" if failed else "PASS",
        "failed_tests": failed,
        "significance": params.validation_pack.significance,
        "labels": str(labels_path),
        "audit_log": str(audit_log),
        "labels_read": len(labels),
        "joined": len(joined),
        "unmatched": len(unknown),
        "unmatched_examples": unknown.head(5).tolist(),
        "reference": None if reference is None else reference.model_dump(),
        "models": models,
    }


def _f(x: Any) -> str:
    return "—" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def markdown(report: dict[str, Any]) -> str:
    """The report for a person (and the monitoring issue): verdict first, then one section per model version."""
    icon = "✅ PASS" if report["status"] == "PASS" else "🚨 FAIL"
    lines = [
        f"## Outcomes on matured labels: {icon}",
        "",
        f"{report['joined']} of {report['labels_read']} labels joined to decisions in `{report['audit_log']}` "
        f"(chain verified); {report['unmatched']} had no decision there. Tests fail below p = {report['significance']:g}.",
    ]
    if report["failed_tests"]:
        lines += ["", "Failed: " + ", ".join(f"`{t}`" for t in report["failed_tests"])]
    for m in report["models"]:
        lines += ["", f"### Model {m['model_version']} (run `{m['run_id'][:8]}`)", ""]
        lines += [
            f"{m['decisions']} matured decisions, outcomes {m['outcomes_from']} to {m['outcomes_to']}: "
            f"realised rate {_f(m['realised_rate'])} against mean predicted {_f(m['mean_score'])}."
        ]
        auc = m.get("roc_auc")
        if auc:
            ref = f"; reference {_f(auc['reference'])}, decline p = {_f(auc['decline']['p_value'])}" if "reference" in auc else ""
            lines += ["", f"ROC-AUC {_f(auc['value'])} [{_f(auc['ci_low'])}, {_f(auc['ci_high'])}]{ref}."]
        else:
            lines += ["", f"ROC-AUC not computed: {m['roc_auc_why_not']}."]
        if "grades" in m:
            cil = m["calibration_in_the_large"]["jeffreys"]
            hl = m["hosmer_lemeshow"]
            lines += [
                "",
                f"Calibration in the large: Jeffreys p = {_f(cil['p_value'])} ({cil['status']}); "
                f"Hosmer-Lemeshow {_f(hl['statistic'])}, df {hl['df']}, p = {_f(hl['p_value'])} ({hl['status']}).",
                "",
                "| Grade | Decisions | Defaults | Realised | Mean PD | Jeffreys p | Binomial p |",
                "|---|---|---|---|---|---|---|",
            ]
            for g in m["grades"]:
                j, b = g["jeffreys"], g["binomial"]
                lines.append(
                    f"| {g['grade']} | {g['rows']} | {g['defaults']} | {_f(g['observed_rate'])} | {_f(g['mean_pd'])} "
                    f"| {_f(j['p_value'] if j else None)} | {_f(b['p_value'] if b else None)} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``make outcomes``: write reports/outcomes.json and .md; exit 1 when a test fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, type=Path, help=f"CSV or Parquet: {', '.join(LABEL_COLUMNS)}")
    parser.add_argument(
        "--audit-log", type=Path, default=None, help=f"decision audit log (default ${config.AUDIT_LOG_ENV} or {config.AUDIT_LOG})"
    )
    parser.add_argument(
        "--checkpoints", type=Path, default=None, help=f"its checkpoints (default ${config.AUDIT_CHECKPOINTS_ENV} or theirs)"
    )
    args = parser.parse_args(argv)

    def stage() -> int:
        params = load_params()
        contract = load_contract(params.data.contract)
        report = run(
            args.labels, args.audit_log or config.audit_log(), args.checkpoints or config.audit_checkpoints(), params, contract
        )
        write_json(OUT_JSON, report)
        write_text(OUT_MD, markdown(report))
        log.info("outcomes: %s (%s); %s", report["status"], ", ".join(report["failed_tests"]) or "every test passed", OUT_MD)
        return 0 if report["status"] == "PASS" else 1

    return run_stage(stage, "outcomes")


if __name__ == "__main__":
    sys.exit(main())
