"""Model metrics (pure functions, unit-tested); each use case picks its set (``UseCase.metrics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import roc_curve

from .errors import DataError

if TYPE_CHECKING:
    from .params import Params
    from .use_case import UseCase


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


def compute(use_case: UseCase, y: np.ndarray, score: np.ndarray, threshold: float, params: Params) -> dict[str, float]:
    """The use case's metrics on held-out labels ``y`` and scores, rounded for byte-identical reruns."""
    if len(np.unique(y)) < 2:
        raise DataError("the evaluation set holds only one target class; metrics are undefined")
    return rounded(use_case.metrics(y, score, threshold, params), len(y))


def rounded(raw: dict[str, float], rows: int) -> dict[str, float]:
    """Metrics rounded so that the same data, params and code give byte-identical metrics.json, with the row count."""
    return {k: round(float(v), 6) for k, v in raw.items()} | {"rows": int(rows)}
