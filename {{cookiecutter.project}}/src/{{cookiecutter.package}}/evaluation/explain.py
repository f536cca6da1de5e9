"""Stage ``explain``: global permutation importance on the held-out set, and reason-code checks.

Permutation importance is the drop in the headline metric when one feature's values are
shuffled among the held-out rows (seeded, repeated): what the model relies on, measured on
data it did not see. For an additive model (credit default) the stage also computes the
reason codes of every held-out decision, checks that contributions plus the base score give
back the model's raw score (fails the stage if not), and counts how often each code is the
principal reason for a decline.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pandas as pd

from ..core import config, model, reasons
from ..core.contract import Contract, load_contract

EXPLAIN = config.REPORTS / "explain.json"
IMPORTANCE_PLOT = config.PLOTS / "permutation_importance.png"
SCORING = {"credit_scoring": "roc_auc", "fraud_detection": "average_precision"}
# Contributions plus the base score must give back the raw score to this tolerance (log-odds).
ADDITIVITY_TOLERANCE = 1e-6


def permutation_importance(
    pipeline, test: pd.DataFrame, contract: Contract, use_case: str, n_repeats: int, seed: int
) -> dict[str, Any]:
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    X, y = model.model_frame(test, contract), model.target_vector(test, contract)
    result = sk_permutation_importance(pipeline, X, y, scoring=SCORING[use_case], n_repeats=n_repeats, random_state=seed)
    order = np.argsort(-result.importances_mean, kind="stable")
    return {
        "scoring": SCORING[use_case],
        "n_repeats": n_repeats,
        "rows": int(len(X)),
        "features": [
            {
                "feature": X.columns[i],
                "mean": round(float(result.importances_mean[i]), 6),
                "std": round(float(result.importances_std[i]), 6),
            }
            for i in order
        ],
    }


def reason_code_summary(pipeline, test: pd.DataFrame, contract: Contract, use_case: str, threshold: float) -> dict[str, Any]:
    try:
        reasons.check_additive(pipeline)
    except reasons.NotAdditiveError as exc:
        return {"available": False, "why": str(exc), "catalogue": contract.reason_catalogue()}
    exp = reasons.explainer(pipeline, contract)
    contrib = reasons.contributions(pipeline, contract, test)
    raw = reasons.raw_score(pipeline, contract, test)
    error = float(np.max(np.abs(exp.base_score + contrib.to_numpy().sum(axis=1) - raw))) if len(test) else 0.0
    declined = 1.0 / (1.0 + np.exp(-raw)) >= threshold
    codes = reasons.codes_from_contributions(contrib[declined], exp)
    principal = pd.Series([c[0]["code"] for c in codes if c], dtype=object).value_counts()
    return {
        "available": True,
        "base_score": round(exp.base_score, 6),
        "best_values": {k: (v if isinstance(v, str) else round(float(v), 6)) for k, v in exp.best.items()},
        "max_additivity_error": error,
        "declined": int(declined.sum()),
        "principal_reason_counts": {
            code: int(principal.get(code, 0)) for code in (c["code"] for c in contract.reason_catalogue())
        },
        "catalogue": contract.reason_catalogue(),
    }


def plot_importance(importance: dict[str, Any], path=IMPORTANCE_PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = importance["features"][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(feats) + 1.2))
    ax.barh([f["feature"] for f in feats], [f["mean"] for f in feats], xerr=[f["std"] for f in feats], color="#4c72b0")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(
        xlabel=f"Drop in {importance['scoring']} when shuffled (held-out, {importance['n_repeats']} repeats)",
        title="Permutation importance",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def mlflow_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {f"importance.{f['feature']}": f["mean"] for f in result["permutation_importance"]["features"]}
    rc = result["reason_codes"]
    if rc["available"]:
        out["reasons.max_additivity_error"] = rc["max_additivity_error"]
        out["reasons.base_score"] = rc["base_score"]
        out.update({f"reasons.principal.{code}": float(n) for code, n in rc["principal_reason_counts"].items()})
    return out


def main() -> int:
    log = config.setup_logging()
    params = config.load_params()
    contract = load_contract(config.param(params, "data.contract", str))
    meta = json.loads(config.MODEL_META.read_text(encoding="utf-8"))
    pipeline = model.load(config.MODEL)
    test = pd.read_parquet(config.TEST)
    use_case, seed = params["use_case"], config.param(params, "seed", int)
    n_repeats = config.param(params, "explain.n_repeats", int)
    result = {
        "permutation_importance": permutation_importance(pipeline, test, contract, use_case, n_repeats, seed),
        "reason_codes": reason_code_summary(pipeline, test, contract, use_case, float(meta["threshold"])),
    }
    config.write_json(EXPLAIN, result)
    plot_importance(result["permutation_importance"])

    import mlflow

    mlflow.set_tracking_uri(meta["tracking_uri"])
    with mlflow.start_run(run_id=meta["run_id"]):
        mlflow.log_metrics(mlflow_metrics(result))
        mlflow.log_artifact(str(IMPORTANCE_PLOT), artifact_path="plots")
        mlflow.log_artifact(str(EXPLAIN))
    top = result["permutation_importance"]["features"][0]
    log.info(
        "most important feature: %s (%s drop %.4f)", top["feature"], result["permutation_importance"]["scoring"], top["mean"]
    )
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
        log.info("reason codes exact on %d held-out rows (max error %.2g log-odds)", len(test), rc["max_additivity_error"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
