"""Fraud detection: a fraud score ranked by PR-AUC, flags explained by feature contributions on request."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .metrics import expected_cost, precision_at_k, recall_at_fpr
from .params import Params
from .use_case import Explanations, FeatureExplainer, UseCase

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from .contract import Contract


class FraudDetection(UseCase):
    """Flag at or above the (cost-tuned) threshold; groups are compared on their flag rate."""

    # Feature contributions (shap) for the default model with interactions; reason codes for an
    # additive one (model.interaction_cst: no_interactions).
    explanations = (Explanations.FEATURE_CONTRIBUTIONS, Explanations.REASON_CODES)

    def metrics(self, y: np.ndarray, score: np.ndarray, threshold: float, params: Params) -> dict[str, Any]:
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

    def check_params(self, params: Params) -> None:
        """Its metrics need the operating points ``evaluate.top_k_fraction`` and ``evaluate.max_fpr``."""
        missing = [k for k in ("top_k_fraction", "max_fpr") if getattr(params.evaluate, k) is None]
        if missing:
            raise ValueError(f"evaluate: fraud detection needs {' and '.join(missing)}")

    def headline_score(self, y: np.ndarray, score: np.ndarray) -> float:
        """PR-AUC (average precision)."""
        return float(average_precision_score(y, score))

    def outcome_rate(self, flag_rate: np.ndarray) -> np.ndarray:
        """The flag rate itself."""
        return flag_rate

    def explanation_background(self, train: pd.DataFrame, contract: Contract, seed: int) -> list[dict[str, Any]]:
        """A seeded sample of training rows (features only) for the Shapley contributions."""
        from . import attributions

        return attributions.background(train, contract, seed)

    def feature_explainer(self, pipeline: Pipeline, contract: Contract, background: Path) -> FeatureExplainer:
        """The Shapley explainer (shap's Exact, or Permutation for many features) over the stored background."""
        from . import attributions

        return attributions.FeatureExplainer.from_artifact(pipeline, contract, background)


USE_CASE = FraudDetection
