"""Credit scoring: probability of default, ranked by ROC-AUC, declines explained by exact reason codes."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from .metrics import ks_statistic
from .params import Params
from .use_case import Explanations, UseCase


class CreditScoring(UseCase):
    """Decline at or above the threshold; groups are compared on their approval rate."""

    # Only reason codes: adverse-action notices need exact principal reasons, and a credit
    # repository ships no Shapley explainer (no shap).
    explanations = (Explanations.REASON_CODES,)

    def metrics(self, y: np.ndarray, score: np.ndarray, threshold: float, params: Params) -> dict[str, Any]:
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

    def headline_score(self, y: np.ndarray, score: np.ndarray) -> float:
        """ROC-AUC."""
        return float(roc_auc_score(y, score))

    def outcome_rate(self, flag_rate: np.ndarray) -> np.ndarray:
        """The approval rate: the share not declined."""
        return 1.0 - flag_rate


USE_CASE = CreditScoring
