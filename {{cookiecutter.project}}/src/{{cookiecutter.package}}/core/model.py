"""The scikit-learn model: built from the contract and params, saved and loaded with skops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from . import config
from .contract import Contract
from .errors import StageOrderError, UserError
from .params import Params

# skops refuses to load anything it does not know to be safe; these are the only extra
# types this model is made of. Anything else in a model file is refused (fail closed).
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # ColumnTransformer's "passthrough" is stored as a partial of sklearn's check_array.
    "functools.partial",
    "sklearn.utils.validation.check_array",
]


class UntrustedModelError(UserError, RuntimeError):
    """The model file holds types that are not on the allowlist."""


def model_frame(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The model's input columns in model order, cast to the contract's dtypes."""
    cols = contract.model_input_order()
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"input is missing feature column(s) {missing} declared in {contract.path}")
    return contract.coerce(df[cols])


def target_vector(df: pd.DataFrame, contract: Contract) -> np.ndarray:
    """1 where the target equals the contract's ``positive`` label, whatever the target's dtype."""
    return (df[contract.target] == contract.positive_label).astype(int).to_numpy()


def build_pipeline(contract: Contract, params: Params) -> Pipeline:
    """The unfitted pipeline: contract-driven feature encoding, then the boosted classifier."""
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
    m = params.model
    classifier = HistGradientBoostingClassifier(
        learning_rate=m.learning_rate,
        max_iter=m.max_iter,
        max_leaf_nodes=m.max_leaf_nodes,
        min_samples_leaf=m.min_samples_leaf,
        l2_regularization=m.l2_regularization,
        class_weight=m.class_weight,
        categorical_features=[False] * len(numeric) + [True] * len(categorical),
        monotonic_cst=contract.monotonic_cst() if m.monotone else None,
        interaction_cst=m.interaction_cst,
        early_stopping=False,
        random_state=params.seed,
    )
    return Pipeline([("features", features), ("classifier", classifier)])


def save(pipeline: Pipeline, path: Path = config.MODEL) -> None:
    """Write the pipeline with skops, atomically."""
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    sio.dump(pipeline, tmp)
    tmp.replace(path)


def load(path: Path = config.MODEL) -> Pipeline:
    """Load a skops model file, refusing any type not on the allowlist."""
    import skops.io as sio

    if not Path(path).exists():
        raise StageOrderError(f"{path} not found: run the train stage first (dvc repro)")
    untrusted = sio.get_untrusted_types(file=path)
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelError(f"{path}: refusing to load types not on the allowlist: {unexpected}")
    return sio.load(path, trusted=untrusted)


def scores(pipeline: Pipeline, df: pd.DataFrame, contract: Contract) -> np.ndarray:
    """Probability of the positive target class (default / fraud)."""
    return pipeline.predict_proba(model_frame(df, contract))[:, 1]
