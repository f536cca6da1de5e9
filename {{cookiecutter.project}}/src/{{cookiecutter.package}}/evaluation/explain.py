"""Stage ``explain``: global permutation importance on the held-out set, and reason-code checks.

Permutation importance is the drop in the headline metric when one feature's values are
shuffled among the held-out rows (seeded, repeated): what the model relies on, measured on
data it did not see. For an additive model (credit default) the stage also computes the
reason codes of every held-out decision, checks that contributions plus the base score give
back the model's raw score (fails the stage if not), and counts how often each code is the
principal reason for a decline.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from .. import tracking
from ..core import config, model, reasons, use_case
from ..core.contract import Contract, load_contract
from ..core.params import load_params
from ..core.reports import ExplainReport, ModelMeta
from ..core.stage import LOGGER, entry_point, progress
from .plots import figure

log = logging.getLogger(LOGGER)
# Contributions plus the base score must give back the raw score to this tolerance (log-odds).
ADDITIVITY_TOLERANCE = 1e-6
# Held-out rows per reason-code pass (bounds the stage's memory; every row is still checked).
REASON_CHUNK = 20_000


def permutation_importance(
    pipeline, test: pd.DataFrame, contract: Contract, scoring: str, n_repeats: int, seed: int, max_rows: int | None = None
) -> dict[str, Any]:
    """scikit-learn's permutation importance on the held-out rows, one seeded repeat at a time (for progress).

    Above ``max_rows`` held-out rows it runs on a seeded sample stratified by the target: the
    importance is an estimate whose noise stops shrinking long before a million rows (the
    spread over repeats is reported), while its cost (features x repeats full scorings) grows
    with every row. Checks that judge rows (the reason codes) still see every row.
    """
    from sklearn.inspection import permutation_importance as sk_permutation_importance
    from threadpoolctl import threadpool_limits

    rows_total = len(test)
    if max_rows is not None and rows_total > max_rows:
        from sklearn.model_selection import train_test_split

        y_all = model.target_vector(test, contract)
        test, _ = train_test_split(test, train_size=max_rows, stratify=y_all, random_state=seed)
    X, y = model.model_frame(test, contract), model.target_vector(test, contract)
    # One OpenMP thread: the trees are scored one parallel region each, thousands of times
    # here, and on a busy host the threads' start-up and spinning cost more than they save.
    with threadpool_limits(limits=1, user_api="openmp"):
        drops = np.column_stack(
            [
                sk_permutation_importance(pipeline, X, y, scoring=scoring, n_repeats=1, random_state=seed + r).importances[:, 0]
                for r in progress(range(n_repeats), n_repeats, "explain: permutation repeats")
            ]
        )
    mean, std = drops.mean(axis=1), drops.std(axis=1)
    order = np.argsort(-mean, kind="stable")
    return {
        "scoring": scoring,
        "n_repeats": n_repeats,
        "rows": int(len(X)),
        "held_out_rows": int(rows_total),
        "features": [{"feature": X.columns[i], "mean": round(float(mean[i]), 6), "std": round(float(std[i]), 6)} for i in order],
    }


def reason_code_summary(pipeline, test: pd.DataFrame, contract: Contract, threshold: float) -> dict[str, Any]:
    """Exactness check and principal-reason counts of the held-out declines (additive models only)."""
    try:
        reasons.check_additive(pipeline)
    except reasons.NotAdditiveError as exc:
        return {"available": False, "why": str(exc), "catalogue": contract.reason_catalogue()}
    exp = reasons.explainer(pipeline, contract)
    # Every held-out row is checked, in chunks: contributions score one profile per row and
    # feature, so one pass over 200k rows would hold millions of rows in memory at once.
    error, n_declined, principal = 0.0, 0, pd.Series(dtype="int64")
    chunks = range(0, len(test), REASON_CHUNK)
    for start in progress(chunks, len(chunks), "explain: reason-code checks (chunks)"):
        part = test.iloc[start : start + REASON_CHUNK]
        contrib = reasons.contributions(pipeline, contract, part)
        raw = reasons.raw_score(pipeline, contract, part)
        error = max(error, float(np.max(np.abs(exp.base_score + contrib.to_numpy().sum(axis=1) - raw))))
        declined = 1.0 / (1.0 + np.exp(-raw)) >= threshold
        n_declined += int(declined.sum())
        principal = principal.add(principal_reasons(contrib[declined], exp).value_counts(), fill_value=0)
    return {
        "available": True,
        "base_score": round(exp.base_score, 6),
        "best_values": {k: (v if isinstance(v, str) else round(float(v), 6)) for k, v in exp.best.items()},
        "max_additivity_error": error,
        "declined": n_declined,
        "principal_reason_counts": {
            code: int(principal.get(code, 0)) for code in (c["code"] for c in contract.reason_catalogue())
        },
        "catalogue": contract.reason_catalogue(),
    }


def principal_reasons(contrib: pd.DataFrame, exp: reasons.Explainer) -> pd.Series:
    """Each row's principal reason code: the first of ``reasons.codes_from_contributions`` per row.

    The most adverse contribution above ``reasons.MIN_ADVERSE``, ties to the first column (the
    stable sort there); rows with no adverse contribution have none. Vectorised: one argmax over
    the table instead of a sort per declined row.
    """
    values = contrib.to_numpy(dtype=float)
    adverse = values > reasons.MIN_ADVERSE
    best = np.argmax(np.where(adverse, values, -np.inf), axis=1)
    codes = np.array([exp.catalogue[f]["code"] for f in contrib.columns], dtype=object)
    return pd.Series(codes[best][adverse.any(axis=1)], dtype=object)


def plot_importance(importance: dict[str, Any], path=config.IMPORTANCE_PLOT) -> None:
    """Horizontal bars of the mean drop, with the spread over repeats."""
    feats = importance["features"][::-1]
    with figure(path, size=(6, 0.35 * len(feats) + 1.2)) as ax:
        ax.barh([f["feature"] for f in feats], [f["mean"] for f in feats], xerr=[f["std"] for f in feats], color="#4c72b0")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(
            xlabel=f"Drop in {importance['scoring']} when shuffled (held-out, {importance['n_repeats']} repeats)",
            title="Permutation importance",
        )


def mlflow_metrics(report: ExplainReport) -> dict[str, float]:
    """The report's numbers as MLflow metrics (the model card reads them back)."""
    out = {f"importance.{f.feature}": f.mean for f in report.permutation_importance.features}
    rc = report.reason_codes
    if rc.available:
        out["reasons.max_additivity_error"] = rc.max_additivity_error
        out["reasons.base_score"] = rc.base_score
        out.update({f"reasons.principal.{code}": float(n) for code, n in (rc.principal_reason_counts or {}).items()})
    return out


def main() -> int:
    """Write ``reports/explain.json`` and the importance plot; fail if reason codes are not exact."""
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    pipeline = model.load(config.MODEL)
    test = pd.read_parquet(config.TEST)
    scoring = use_case.load().explain_scoring
    report = ExplainReport(
        permutation_importance=permutation_importance(
            pipeline, test, contract, scoring, params.explain.n_repeats, params.seed, params.explain.max_rows
        ),
        reason_codes=reason_code_summary(pipeline, test, contract, meta.threshold),
    )
    return publish(report, meta, len(test))


def publish(report: ExplainReport, meta: ModelMeta, rows: int) -> int:
    """Write the report and the plot, log both to the training run; 1 when reason codes are not exact."""
    scoring = report.permutation_importance.scoring
    report.write(config.EXPLAIN)
    result = report.model_dump()
    plot_importance(result["permutation_importance"])

    import mlflow

    with tracking.resume_run(meta):
        mlflow.log_metrics(mlflow_metrics(report))
        mlflow.log_artifact(str(config.IMPORTANCE_PLOT), artifact_path="plots")
        mlflow.log_artifact(str(config.EXPLAIN))
    top = result["permutation_importance"]["features"][0]
    log.info("most important feature: %s (%s drop %.4f)", top["feature"], scoring, top["mean"])
    rc = result["reason_codes"]
    if rc["available"]:
        if rc["max_additivity_error"] > ADDITIVITY_TOLERANCE:
            log.error(
                "reason codes are not exact: contributions + base score differ from the model's raw score by up to %.3g "
                "(tolerance %g); the model is not additive",
                rc["max_additivity_error"],
                ADDITIVITY_TOLERANCE,
            )
            return 1
        log.info("reason codes exact on %d held-out rows (max error %.2g log-odds)", rows, rc["max_additivity_error"])
    return 0


if __name__ == "__main__":
    entry_point(main)
