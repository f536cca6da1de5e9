"""The scikit-learn model: built from the contract and params, saved and loaded with skops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from . import config
from .contract import Contract

# skops refuses to load anything it does not know to be safe; these are the only extra
# types this model is made of. Anything else in a model file is refused (fail closed).
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # ColumnTransformer's "passthrough" is stored as a partial of sklearn's check_array.
    "functools.partial",
    "sklearn.utils.validation.check_array",
]


class UntrustedModelError(config.UserError, RuntimeError):
    pass


def model_frame(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The model's input columns in model order, cast to the contract's dtypes."""
    cols = contract.model_input_order()
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"input is missing feature column(s) {missing} declared in {contract.path}")
    return contract.coerce(df[cols])


def target_vector(df: pd.DataFrame, contract: Contract) -> np.ndarray:
    return (df[contract.target] == contract.positive_label).astype(int).to_numpy()


def _positive(params: dict[str, Any], dotted: str, kind, minimum: float | None = None):
    value = config.param(params, dotted, kind)
    if (minimum is None and value <= 0) or (minimum is not None and value < minimum):
        bound = "greater than 0" if minimum is None else f"at least {minimum}"
        raise config.ParamsError(f"params.yaml: '{dotted}' must be {bound}, got {value!r}")
    return value


def build_pipeline(contract: Contract, params: dict[str, Any]) -> Pipeline:
    numeric = contract.numeric_features
    categorical = contract.categorical_features
    encoder = OrdinalEncoder(
        categories=[contract.categories(c) for c in categorical],
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        dtype=np.float64,
    )
    features = ColumnTransformer(
        [("numeric", "passthrough", numeric), ("categorical", encoder, categorical)],
        verbose_feature_names_out=False,
    )
    m = config.param(params, "model", dict)
    interaction = m.get("interaction_cst")
    if interaction not in (None, "no_interactions"):
        raise config.ParamsError(f"params.yaml: 'model.interaction_cst' must be no_interactions or null, got {interaction!r}")
    classifier = HistGradientBoostingClassifier(
        learning_rate=_positive(params, "model.learning_rate", (int, float)),
        max_iter=_positive(params, "model.max_iter", int),
        max_leaf_nodes=_positive(params, "model.max_leaf_nodes", int, minimum=2),
        min_samples_leaf=_positive(params, "model.min_samples_leaf", int),
        l2_regularization=_positive(params, "model.l2_regularization", (int, float), minimum=0),
        class_weight=m.get("class_weight"),
        categorical_features=[False] * len(numeric) + [True] * len(categorical),
        monotonic_cst=contract.monotonic_cst() if m.get("monotone", True) else None,
        interaction_cst=interaction,
        early_stopping=False,
        random_state=config.param(params, "seed", int),
    )
    return Pipeline([("features", features), ("classifier", classifier)])


def save(pipeline: Pipeline, path: Path = config.MODEL) -> None:
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    sio.dump(pipeline, tmp)
    tmp.replace(path)


def load(path: Path = config.MODEL) -> Pipeline:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelError(f"{path}: refusing to load types not on the allowlist: {unexpected}")
    return sio.load(path, trusted=untrusted)


def scores(pipeline: Pipeline, df: pd.DataFrame, contract: Contract) -> np.ndarray:
    """Probability of the positive target class (default / fraud)."""
    return pipeline.predict_proba(model_frame(df, contract))[:, 1]
