"""Per-decision feature contributions of a model with feature interactions (the fraud model; needs shap).

The credit model is additive, so its reason codes are exact by construction (``reasons.py``).
The fraud model has interactions, so its contributions come from a maintained method: SHAP's
model-agnostic ``Exact`` explainer on the raw score (log-odds) of the fitted classifier.

Why not SHAP's ``TreeExplainer``: shap 0.51 converts a HistGradientBoosting tree through its
numeric thresholds only and ignores native categorical splits (bitsets), which this model
uses for merchant category and channel; measured on held-out rows, ``base + sum(contributions)``
then missed the raw score by many log-odds. The ``Exact`` explainer evaluates the model
itself on every coalition of the features, so local accuracy holds to floating point:
``base_value + sum(contributions) == decision_function(x)``.

With more than ``EXACT_MAX_FEATURES`` features (your own contract may have them) the 2^p
coalitions are too many, and shap's ``Permutation`` explainer estimates the same values from
seeded, sampled feature orders; local accuracy still holds exactly.

The one approximation for the default model: these are interventional Shapley values against a fixed background,
``BACKGROUND_ROWS`` training rows drawn with the pipeline's seed at train time and stored
beside the model (features only; the contract keeps PII and protected attributes out). A
feature "absent" from a coalition takes the background's values, and ``base_value`` is the
mean raw score over the background. A different background gives somewhat different
contributions; the cost per record grows linearly with its size (docs/serving.md, "Cost of explanations").
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from . import model
from .contract import Contract
from .errors import StageOrderError

# 2^p coalitions x this many rows are scored per record: the cost per explained record grows with
# it, and this many keeps that within a request's budget on a small CPU while covering the main
# modes of the training data.
BACKGROUND_ROWS = 20
# Exact scores every one of the 2^p coalitions; past this many features that explodes, and the
# Permutation explainer (sampled feature orders, antithetic, seeded) takes over. Its values are
# estimates, but each sampled order telescopes, so local accuracy still holds exactly.
EXACT_MAX_FEATURES = 10
PERMUTATION_EVALS_PER_FEATURE = 20


def background(train: pd.DataFrame, contract: Contract, seed: int, rows: int = BACKGROUND_ROWS) -> list[dict[str, Any]]:
    """A seeded sample of training rows, features only, JSON-ready (NaN as None)."""
    sample = train[contract.model_input_order()].sample(n=min(rows, len(train)), random_state=seed)
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in sample.to_dict(orient="records")]


class FeatureExplainer:
    """Exact Shapley contributions (log-odds) of each feature to each record's raw score."""

    def __init__(self, pipeline: Pipeline, contract: Contract, background_rows: list[dict[str, Any]], seed: int = 0) -> None:
        import shap  # heavy (numba): imported only where a use case explains by features

        self.contract = contract
        self.features = contract.model_input_order()
        self._prepare = pipeline[:-1]
        classifier = pipeline[-1]
        # The classifier sees the encoded columns in the ColumnTransformer's order; map back by name.
        self.names = [str(n) for n in self._prepare.get_feature_names_out()]
        data = self.matrix(pd.DataFrame.from_records(background_rows, columns=self.features))
        masker = shap.maskers.Independent(data, max_samples=len(data))
        if len(self.features) <= EXACT_MAX_FEATURES:
            self.method = "exact"
            self._explainer = shap.explainers.Exact(classifier.decision_function, masker)
            self._options: dict[str, Any] = {}
        else:
            self.method = "permutation"
            self._explainer = shap.explainers.Permutation(classifier.decision_function, masker, seed=seed)
            self._options = {"max_evals": PERMUTATION_EVALS_PER_FEATURE * (2 * len(self.features) + 1)}
        # shap's maskers keep per-call buffers, so concurrent calls would interfere.
        self._lock = threading.Lock()
        self.contributions(pd.DataFrame.from_records(background_rows[:1], columns=self.features))  # compile numba now

    @classmethod
    def from_artifact(cls, pipeline: Pipeline, contract: Contract, path: Path) -> FeatureExplainer:
        """The explainer over the background the train stage stored at ``path``."""
        if not path.exists():
            raise StageOrderError(f"{path} not found: run the train stage first (dvc repro)")
        return cls(pipeline, contract, json.loads(path.read_text(encoding="utf-8")))

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The classifier's input matrix for records (features encoded as the pipeline does)."""
        return np.asarray(self._prepare.transform(model.model_frame(frame, self.contract)), dtype=np.float64)

    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        """Base value per record and each feature's contribution (log-odds), columns in model input order."""
        # One OpenMP thread: the explainer scores thousands of small batches, where a thread pool per
        # call costs far more than it saves (measured: far slower on a busy 2-core host).
        with self._lock, threadpool_limits(limits=1, user_api="openmp"):
            explained = self._explainer(self.matrix(frame), silent=True, **self._options)
        values = pd.DataFrame(explained.values, columns=self.names, index=frame.index)[self.features]
        return np.asarray(explained.base_values, dtype=np.float64), values

    def top_features(self, frame: pd.DataFrame, top_n: int = model.TOP_N) -> list[list[dict[str, Any]]]:
        """Per record, up to ``top_n`` features by absolute contribution: feature, value, contribution, direction."""
        _, values = self.contributions(frame)
        out = []
        for i, (_, row) in enumerate(values.iterrows()):
            ranked = row[row != 0].abs().sort_values(ascending=False, kind="stable").head(top_n).index
            out.append(
                [
                    {
                        "feature": f,
                        "value": _plain(frame.iloc[i][f]),
                        "contribution": float(row[f]),
                        "direction": "raises" if row[f] > 0 else "lowers",
                    }
                    for f in ranked
                ]
            )
        return out


def _plain(value: Any) -> Any:
    """A JSON-ready copy of one input value (NaN as None, numpy scalars as Python)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
