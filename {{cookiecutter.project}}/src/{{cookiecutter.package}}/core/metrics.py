"""Model metrics for credit scoring and fraud detection (pure functions, unit-tested)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from .errors import DataError
from .params import Params


def ks_statistic(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score CDFs of goods and bads."""
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(tpr - fpr))


def precision_at_k(y: np.ndarray, score: np.ndarray, fraction: float) -> float:
    """Share of positives among the ``fraction`` highest scores."""
    k = max(int(round(len(score) * fraction)), 1)
    top = np.argsort(-score, kind="stable")[:k]
    return float(np.mean(y[top]))


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float) -> float:
    """The highest recall reachable with a false positive rate at most ``max_fpr``."""
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(tpr[fpr <= max_fpr])) if np.any(fpr <= max_fpr) else 0.0


def expected_cost(y: np.ndarray, flagged: np.ndarray, cost_fn: float, cost_fp: float) -> float:
    """Average cost per case: missed positives cost ``cost_fn``, false alarms ``cost_fp``."""
    y = np.asarray(y).astype(bool)
    flagged = np.asarray(flagged).astype(bool)
    fn = np.sum(y & ~flagged)
    fp = np.sum(~y & flagged)
    return float((fn * cost_fn + fp * cost_fp) / max(len(y), 1))


def credit_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """Ranking (ROC-AUC, Gini, KS), calibration (Brier) and the approval figures at the threshold."""
    auc = roc_auc_score(y, score)
    approved = score < threshold
    return {
        "roc_auc": auc,
        "gini": 2 * auc - 1,
        "ks": ks_statistic(y, score),
        "pr_auc": average_precision_score(y, score),
        "brier": brier_score_loss(y, score),
        "approval_rate": float(np.mean(approved)),
        "bad_rate_approved": float(np.mean(y[approved])) if approved.any() else 0.0,
        "default_rate": float(np.mean(y)),
        "threshold": threshold,
    }


def fraud_metrics(y: np.ndarray, score: np.ndarray, threshold: float, params: Params) -> dict[str, Any]:
    """PR-AUC first (fraud is rare), then the operating figures at the threshold."""
    ev, dec = params.evaluate, params.decision
    flagged = score >= threshold
    return {
        "pr_auc": average_precision_score(y, score),
        "roc_auc": roc_auc_score(y, score),
        "precision_at_k": precision_at_k(y, score, float(ev.top_k_fraction)),
        "recall_at_fpr": recall_at_fpr(y, score, float(ev.max_fpr)),
        "expected_cost": expected_cost(y, flagged, float(dec.cost_false_negative), float(dec.cost_false_positive)),
        "flag_rate": float(np.mean(flagged)),
        "fraud_rate": float(np.mean(y)),
        "threshold": threshold,
    }


def compute(use_case: str, y: np.ndarray, score: np.ndarray, threshold: float, params: Params) -> dict[str, float]:
    """The use case's metrics on held-out labels ``y`` and scores, rounded for byte-identical reruns."""
    if len(np.unique(y)) < 2:
        raise DataError("the evaluation set holds only one target class; metrics are undefined")
    raw = credit_metrics(y, score, threshold) if use_case == "credit_scoring" else fraud_metrics(y, score, threshold, params)
    # Rounded so that the same data, params and code give byte-identical metrics.json.
    return {k: round(float(v), 6) for k, v in raw.items()} | {"rows": int(len(y))}
