"""`make monitor`: drift, data quality, decision rate and (with labels) decay of one batch of recent data.

Compares a batch (CSV or Parquet with the contract's columns; labels optional) and, where the
decision service has run, the scores in its audit log, with the reference fixed at training
time (``models/reference.json``). Writes ``reports/monitoring/<date>.json`` and ``.md`` with
plots, and the figures as Prometheus textfile metrics. Exit status 0 whatever the verdict (the
verdict is in the report); 1 for input the monitor cannot read. Reading and measuring the batch
is an engine's part (``measure`` here, with pandas; a compute=spark bake's spark_monitor.py on
Spark); the audit log, the verdicts and the report are shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import config, metrics, model, use_case
from ..core.contract import Contract, load_contract
from ..core.decision import Outcome
from ..core.errors import DataError
from ..core.params import Params, load_params
from ..core.reports import MetricsReport, ModelMeta, ReferenceReport, Status, Verdict
from ..core.stage import LOGGER, entry_point
from ..data.validate import run_validation
from ..evaluation import fairness
from ..evaluation.group_stats import eligible_groups, group_table, summarise
from . import drift, outputs, reference

OUT_DIR = config.REPORTS / "monitoring"


class MonitorError(DataError):
    """The batch or the audit log cannot be read."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The monitor's thresholds (``monitor`` in params.yaml)."""

    warn: float
    alert: float
    epsilon: float
    performance_tolerance: float

    @classmethod
    def from_params(cls, params: Params) -> Settings:
        """The ``monitor`` section (checked when params.yaml is loaded)."""
        m = params.monitor
        return cls(m.psi_warn, m.psi_alert, m.epsilon, m.performance_tolerance)


def read_batch(path: Path, contract: Contract | None = None) -> pd.DataFrame:
    """The batch file (CSV or Parquet), with a one-line error for anything unreadable.

    CSV carries no types: the contract's text and category columns are read as text, so digits (a card
    number, an id with leading zeros) stay the strings they are, not numbers of the wrong type.
    """
    if not path.is_file():
        raise MonitorError(f"batch {path}: file not found (pass BATCH=<csv or parquet file>)")
    suffix = path.suffix.lower()
    text = {c.name: str for c in contract.columns if c.dtype in ("string", "category")} if contract else None
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype=text)  # columns the file lacks are ignored
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise MonitorError(f"batch {path}: unsupported file type {suffix!r}; use .csv or .parquet")
    except MonitorError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many unrelated types for a corrupt file
        raise MonitorError(f"batch {path}: not a readable {suffix[1:]} file: {str(exc).splitlines()[0]}") from None
    if df.empty:
        raise MonitorError(f"batch {path}: no rows")
    return df


def has_labels(df: pd.DataFrame, contract: Contract) -> bool:
    """Labels have arrived when the target column is present and not entirely empty."""
    return contract.target in df.columns and bool(df[contract.target].notna().any())


def data_quality(df: pd.DataFrame, contract: Contract, params: Params) -> dict[str, Any]:
    """The contract's Great Expectations suite on the batch.

    Every feature must be present; other declared columns (ids, PII, protected attributes,
    the target) are checked when the batch carries them, since production batches often come
    without labels or with PII already stripped.
    """
    return run_validation(df, batch_contract(contract, list(df.columns), has_labels(df, contract)), params).model_dump()


def batch_contract(contract: Contract, columns: list[str], labelled: bool) -> Contract:
    """The contract a batch is held to: every feature, and the other declared columns it carries (the target if labelled)."""
    keep = tuple(c for c in contract.columns if c.role == "feature" or (c.name in columns and (c.role != "target" or labelled)))
    return dataclasses.replace(contract, columns=keep, _by_name={})


def read_audit_scores(path: Path, run_id: str, since: datetime | None) -> dict[str, Any]:
    """Scores the service logged for this model (``model.run_id``) since ``since``, and the reviews made since then."""
    scores, other_models, lines, reviews = [], 0, 0, []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == "review":
                    # A review counts in the window it was made in (the same --since as the decisions).
                    if since is None or _stamp(record) >= since:
                        reviews.append((str(record["original_decision"]), str(record["final_decision"])))
                    continue
                if isinstance(record, dict) and "event" in record:
                    continue  # a chain event (a file replaced, the stop switch, a batch run), not a decision
                lines += 1
                stamp = _stamp(record)
                score = float(record["score"])
                record_run = record["model"]["run_id"]
            except (ValueError, KeyError, TypeError) as exc:
                raise MonitorError(
                    f"audit log {path}: line {number} is not a decision record ({type(exc).__name__}: {exc})"
                ) from None
            if record_run != run_id:
                other_models += 1
            elif since is None or stamp >= since:
                scores.append(score)
    return {
        "path": str(path),
        "records": lines,
        "other_models": other_models,
        "scores": np.asarray(scores, dtype="float64"),
        "oversight": oversight(reviews),
    }


def _stamp(record: dict[str, Any]) -> datetime:
    """A record's ``timestamp`` as an aware datetime (the service writes UTC)."""
    stamp = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def oversight(reviews: list[tuple[str, str]]) -> dict[str, Any]:
    """Reviews by (service's decision -> final decision), and the override rate.

    An override is a review that reversed an automated decision; a referred case has no automated
    decision to reverse, so the rate is over reviews of automated decisions only (null: none yet).
    """
    refer = use_case.load().word(Outcome.REFER)
    outcomes = Counter(f"{a} -> {b}" for a, b in reviews)
    automated = [(a, b) for a, b in reviews if a != refer]
    overrides = sum(a != b for a, b in automated)
    return {
        "reviews": len(reviews),
        "referred_reviewed": len(reviews) - len(automated),
        "overrides": overrides,
        "override_rate": overrides / len(automated) if automated else None,
        "outcomes": dict(sorted(outcomes.items())),
    }


def performance(
    df: pd.DataFrame, score: np.ndarray, contract: Contract, params: Params, threshold: float, ref: ReferenceReport, tol: float
) -> dict[str, Any]:
    """Headline metrics, calibration by reference score bin and fairness by group, on labelled rows."""
    facts = use_case.load()
    y = model.target_vector(df, contract)
    if len(np.unique(y)) < 2:
        return {"available": False, "why": "the labelled rows hold only one target class"}
    result = metrics.compute(facts, y, score, threshold, params)
    headline = facts.headline_metric
    out: dict[str, Any] = {"available": True, "rows": int(len(y)), "metrics": result, "headline": headline}
    committed = _committed_metrics()
    baseline = None if committed is None else committed.headline(headline)
    out["baseline"] = baseline
    out["verdict"] = Verdict(status="skip", reason=f"no {headline} at training to compare with").model_dump()
    if baseline is not None:
        # A fall past the tolerance is an alert only when sampling noise cannot explain it: a
        # few hundred positives move PR-AUC by several points from one batch to the next.
        low, high = _bootstrap_interval(facts, y, score, threshold, params, headline)
        out["interval_95"] = [low, high]
        fell = high < baseline - tol
        how = "below" if fell else "within"
        reason = f"95% interval {low:.4f}-{high:.4f} {how} {baseline:.4f} at training - tolerance {tol:g}"
        out["verdict"] = Verdict(status="fail" if fell else "pass", reason=reason).model_dump()
    edges = ref.score.edges
    idx = np.searchsorted(np.asarray(edges), score, side="left")
    out["calibration"] = [
        {
            "bin": int(b),
            "rows": int((idx == b).sum()),
            "mean_score": float(score[idx == b].mean()),
            "observed_rate": float(y[idx == b].mean()),
        }
        for b in range(len(edges) + 1)
        if (idx == b).any()
    ]
    out["calibration_in_the_large"] = {"mean_score": float(score.mean()), "observed_rate": float(y.mean())}
    out["fairness"] = _fairness(df, y, score >= threshold, contract, params)
    return out


def _bootstrap_interval(use_case, y, score, threshold, params, headline, n_boot=100, max_rows=20_000) -> tuple[float, float]:
    """Seeded 95% bootstrap interval of the headline metric (on a subsample of at most ``max_rows``)."""
    rng = np.random.default_rng(0)
    if len(y) > max_rows:
        keep = rng.choice(len(y), max_rows, replace=False)
        y, score = y[keep], score[keep]
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            values.append(metrics.compute(use_case, y[idx], score[idx], threshold, params)[headline])
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def _committed_metrics() -> MetricsReport | None:
    """The training run's metrics; None before the pipeline has run (a malformed file is an error naming it)."""
    return MetricsReport.read(config.METRICS) if config.METRICS.exists() else None


def _fairness(df, y, flagged, contract: Contract, params: Params) -> dict[str, Any]:
    outcome = use_case.load().fairness_outcome
    result = {}
    for attr in contract.protected:
        if attr not in df.columns:
            continue
        groups = df[attr].astype(object).where(df[attr].notna(), fairness.MISSING_GROUP).astype(str).to_numpy()
        # The per-group table of group_stats.by_group (tested equal to fairlearn there): MetricFrame's
        # per-group Python calls took half the monitor's time on a million rows.
        codes, levels = pd.factorize(groups, sort=True)
        table = group_table(y.astype(float), flagged.astype(float), codes, pd.Index(levels))
        rate, tpr, fpr = eligible_groups(table, params.fairness)
        result[attr] = {
            "groups": {g: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for g, row in table.iterrows()},
            "summary": summarise(table, outcome, rate, tpr, fpr),
        }
    # Point estimates on one batch, set beside the pipeline's gates for the reader. Not turned
    # into verdicts: the fairness gates judge with bootstrap intervals on the held-out set at
    # retraining, and a point estimate on a few thousand rows would cry wolf.
    gates = []
    for gate in params.fairness.gates:
        for attr, found in result.items():
            value = found["summary"].get(gate.metric, {}).get("value")
            if value is not None:
                beyond = value < gate.threshold if gate.bound == "min" else value > gate.threshold
                spec = {"metric": gate.metric, gate.bound: gate.threshold}
                gates.append({"attribute": attr, **spec, "value": value, "beyond_gate": bool(beyond)})
    return {"by_attribute": result, "gates": gates}


@dataclasses.dataclass
class Measured:
    """What an engine measured of one batch: the pandas one here, Spark's in monitoring/spark_monitor.py."""

    rows: int
    labelled: bool
    data_quality: dict[str, Any]
    figures: dict[str, dict[str, Any]]  # PSI of the score, CSI of each feature (no verdicts yet); empty if a feature is missing
    decision_rate: float | None  # share of the batch at or above the threshold; None when it could not be scored
    # The labelled rows' frame (target and protected attributes) and scores, in batch order, for `performance`.
    labelled_rows: Callable[[], tuple[pd.DataFrame, np.ndarray]] | None


def as_dates(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The timestamp read as prepare reads it: CSV carries dates as text, and text that is no date is missing."""
    ts = contract.timestamp
    if ts in df.columns and not pd.api.types.is_datetime64_any_dtype(df[ts]):
        df[ts] = pd.to_datetime(df[ts], errors="coerce", format="mixed")
    return df


def measure(batch_path: Path | str, contract: Contract, params: Params, ref: ReferenceReport, epsilon: float) -> Measured:
    """Read the batch with pandas and measure it: data quality, then (every feature present) score and drift."""
    df = as_dates(read_batch(Path(batch_path), contract), contract)
    quality = data_quality(df, contract, params)
    missing = [f for f in contract.features if f not in df.columns]
    figures: dict[str, dict[str, Any]] = {}
    score = None
    if not missing:
        score = model.scores(model.load(config.MODEL), df, contract)
        figures["score"] = {"kind": "psi", **drift.compare(ref.score.model_dump(), score, epsilon)}
        frame = model.model_frame(df, contract)
        for name, entry in ref.features.items():
            figures[name] = {"kind": "csi", **drift.compare(entry.model_dump(), frame[name], epsilon)}
    return Measured(
        rows=int(len(df)),
        labelled=has_labels(df, contract),
        data_quality=quality,
        figures=figures,
        decision_rate=None if score is None else float(np.mean(score >= ref.threshold)),
        labelled_rows=None if score is None else lambda: (df, score),
    )


def run(batch_path: Path | str, audit_log: Path | None, since: datetime | None, params: Params, engine=measure) -> dict[str, Any]:
    """Every figure of the monitor for one batch; pure computation, no files written.

    ``engine`` reads and measures the batch (:func:`measure` with pandas, ``spark_monitor.measure``
    on Spark); everything else (the audit log, verdicts, performance, the report) is shared.
    """
    settings = Settings.from_params(params)
    contract = load_contract(params.data.contract)
    if not config.MODEL_META.exists() or not config.MODEL.exists():
        raise reference.ReferenceError(f"{config.MODEL} / {config.MODEL_META} not found: run `make repro` (or `dvc pull`) first")
    meta = ModelMeta.read(config.MODEL_META)
    ref = reference.load(reference.REFERENCE, run_id=meta.run_id)
    threshold = ref.threshold
    measured = engine(batch_path, contract, params, ref, settings.epsilon)
    quality = measured.data_quality
    figures = measured.figures
    served = None
    if audit_log is not None and audit_log.exists():
        served = read_audit_scores(audit_log, meta.run_id, since)
        if served["scores"].size:
            figures["served_score"] = {"kind": "psi", **drift.compare(ref.score.model_dump(), served["scores"], settings.epsilon)}
    # Drift is judged only on data that meets the contract: a broken feed is a data-quality
    # failure to fix at the source, not a change in the population. Served scores are judged
    # regardless: the service refuses requests that break the contract.
    for name, fig in figures.items():
        judged = quality["success"] or name == "served_score"
        found = drift.verdict(fig["value"], settings.warn, settings.alert)
        fig["verdict"] = (found if judged else Verdict(status="skip", reason="the batch broke the data contract")).model_dump()
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "batch": {"path": str(batch_path), "rows": measured.rows, "labelled": measured.labelled},
        "model": {"run_id": meta.run_id, "threshold": threshold, "contract": f"{contract.name} v{contract.version}"},
        "thresholds": {"warn": settings.warn, "alert": settings.alert, "epsilon": settings.epsilon},
        "data_quality": quality,
        "figures": figures,
        "decision_rate": {"reference": ref.decision_rate, "batch": measured.decision_rate},
    }
    if served is not None:
        report["audit_log"] = {
            "path": served["path"],
            "records": served["records"],
            "this_model": int(served["scores"].size),
            "other_models": served["other_models"],
            "since": since.isoformat() if since else None,
        }
        report["oversight"] = served["oversight"]
        if served["scores"].size:
            report["decision_rate"]["served"] = float(np.mean(served["scores"] >= threshold))
    if measured.labelled_rows is not None and measured.labelled and quality["success"]:
        df, score = measured.labelled_rows()
        report["performance"] = performance(df, score, contract, params, threshold, ref, settings.performance_tolerance)
    report["status"], report["reasons"] = status(report)
    return report


def status(report: dict[str, Any]) -> tuple[str, list[str]]:
    """The overall verdict's label (OK, WARN or ALERT: the most severe) and one line per figure that is not OK."""
    reasons: list[str] = []
    statuses: list[Status] = []
    if not report["data_quality"]["success"]:
        failed = report["data_quality"]["failed"]
        reasons.append(f"data quality: {failed} contract expectation(s) failed; drift not judged")
        statuses.append("fail")
    for name, fig in report["figures"].items():
        found = Verdict.model_validate(fig["verdict"])
        if found.status in ("warn", "fail"):
            reasons.append(f"{name}: {fig['kind'].upper()} {fig['value']:.3f} ({drift.LABELS[found.status]})")
            statuses.append(found.status)
    perf = report.get("performance") or {}
    if "verdict" in perf and Verdict.model_validate(perf["verdict"]).status == "fail":
        h = perf["headline"]
        low, high = perf["interval_95"]
        reasons.append(
            f"performance: {h} {perf['metrics'][h]:.4f} (95% interval {low:.4f}-{high:.4f}) vs {perf['baseline']:.4f} at training"
        )
        statuses.append("fail")
    return drift.LABELS[drift.worst(statuses)], reasons


def parse_since(text: str | None) -> datetime | None:
    """``--since`` as an aware datetime (UTC when no zone is given)."""
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitorError(f"--since {text!r}: expected an ISO-8601 date or time, e.g. 2026-01-31") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def main(argv: list[str] | None = None, engine=measure) -> int:
    """``make monitor``: write the reports and the Prometheus textfile for one batch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A string, not a Path: Path would fold Spark's s3a://bucket/... into s3a:/bucket/...
    parser.add_argument("--batch", required=True, help="CSV or Parquet file of recent data (Spark: a Parquet directory too)")
    parser.add_argument(
        "--audit-log", type=Path, default=None, help=f"decision audit log (default ${config.AUDIT_LOG_ENV} or {config.AUDIT_LOG})"
    )
    parser.add_argument("--since", default=None, help="only audit-log decisions at or after this ISO-8601 time")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="report directory")
    parser.add_argument("--textfile", type=Path, default=None, help="Prometheus textfile (default <out>/monitor.prom)")
    args = parser.parse_args(argv)
    log = logging.getLogger(LOGGER)
    params = load_params()
    audit = args.audit_log or config.audit_log()
    report = run(args.batch, audit, parse_since(args.since), params, engine)
    written = outputs.write(report, args.out, args.textfile or args.out / "monitor.prom")
    log.info("monitor: %s (%s)", report["status"], "; ".join(report["reasons"]) or "every figure within thresholds")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    entry_point(main)
