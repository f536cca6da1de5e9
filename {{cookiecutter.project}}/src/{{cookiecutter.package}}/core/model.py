"""The scikit-learn model: built from the contract and params, saved and loaded with skops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

from . import config
from .contract import Contract
from .errors import StageOrderError, UserError
from .params import Params
{%- if cookiecutter.use_case == "credit_scoring" %}
from .scorecard import PointsScorer, ScorecardModel
{%- endif %}
from .stage import atomic_path
from .trees import compile_trees

# skops refuses to load anything it does not know to be safe; these are the only extra
# types this model is made of. Anything else in a model file is refused (fail closed).
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # ColumnTransformer's "passthrough" is stored as a partial of sklearn's check_array.
    "functools.partial",
    "sklearn.utils.validation.check_array",
{%- if cookiecutter.use_case == "credit_scoring" %}
    # model.kind: scorecard. Its state is the points table as plain JSON data (core/scorecard.py).
    f"{__package__}.scorecard.ScorecardModel",
{%- endif %}
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

    with atomic_path(path) as tmp:
        sio.dump(pipeline, tmp)


def load(path: Path = config.MODEL, trusted: list[str] = TRUSTED_TYPES) -> Pipeline:
    """Load a skops model file, refusing any type not on the allowlist (``trusted``)."""
    import skops.io as sio

    if not Path(path).exists():
        raise StageOrderError(f"{path} not found: run the stage that writes it first (dvc repro)")
    untrusted = sio.get_untrusted_types(file=path)
    unexpected = sorted(set(untrusted) - set(trusted))
    if unexpected:
        raise UntrustedModelError(f"{path}: refusing to load types not on the allowlist: {unexpected}")
    return sio.load(path, trusted=untrusted)


# Features one decision names, most important first: reason codes (credit) and feature
# contributions (fraud) alike. Four: Regulation B's commentary finds more than four reasons in
# an adverse-action notice unlikely to help the applicant.
TOP_N = 4


def scores(pipeline: Pipeline, df: pd.DataFrame, contract: Contract) -> np.ndarray:
    """Probability of the positive target class (default / fraud)."""
    return pipeline.predict_proba(model_frame(df, contract))[:, 1]


# Up to this many rows the numpy tree walk beats scikit-learn's fixed cost per call (measured: the
# crossover lies between this and twice as many rows); both give the same bits.
COMPILED_MAX_ROWS = 64
{%- if cookiecutter.use_case == "credit_scoring" %}


def record_scorer(fitted: Pipeline | ScorecardModel) -> RecordScorer | PointsScorer:
    """The scorer of records for the model ``model.kind`` trained: the boosted pipeline's, or the scorecard's points."""
    return PointsScorer(fitted) if isinstance(fitted, ScorecardModel) else RecordScorer(fitted)
{%- else %}


def record_scorer(fitted: Pipeline) -> RecordScorer:
    """The scorer of records (a fraud repository trains the boosted model only: ``model.kind: gbm``)."""
    return RecordScorer(fitted)
{%- endif %}


class RecordScorer:
    """Scores records (dicts of validated feature values) without building a DataFrame.

    The service scores small batches, where pandas and the ColumnTransformer cost more than the
    trees (measured: most of the time of a call). This encodes records with the *fitted* pipeline's
    own encoding, read from it (its column order and the categories its OrdinalEncoder learnt),
    and hands the matrix to the fitted classifier: the numbers are the ones ``scores`` computes
    for the same records, to the bit; the service's parity test checks it on held-out rows.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        features, self.classifier = pipeline.steps[0][1], pipeline.steps[-1][1]
        self.columns: list[tuple[str, dict[Any, float] | None]] = []
        for name, transformer, columns in features.transformers_:
            if name == "remainder" and (transformer == "drop" or not len(columns)):
                continue
            if _identity(transformer):
                self.columns += [(c, None) for c in columns]
            elif isinstance(transformer, OrdinalEncoder):
                for c, cats in zip(columns, transformer.categories_, strict=True):
                    self.columns.append((c, {v: float(i) for i, v in enumerate(cats) if not _missing(v)}))
            else:
                raise TypeError(f"RecordScorer does not know the feature step {name!r} ({type(transformer).__name__})")
        self.index = {c: j for j, (c, _) in enumerate(self.columns)}
        # The trees scored with numpy for small batches (see trees.py); None: scikit-learn throughout.
        self.trees = compile_trees(self.classifier)

    def matrix(self, records: list[dict[str, Any]]) -> np.ndarray:
        """The classifier's input: numeric values as floats, categories as their codes, NaN if missing."""
        x = np.empty((len(records), len(self.columns)), dtype=np.float64)
        for j, (name, codes) in enumerate(self.columns):
            if codes is None:
                x[:, j] = [np.nan if (v := r.get(name)) is None else v for r in records]
            else:
                x[:, j] = [codes.get(r.get(name), np.nan) for r in records]
        return x

    def frame_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`matrix` for a frame already cast by :func:`model_frame`, column by column."""
        x = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for j, (name, codes) in enumerate(self.columns):
            if codes is None:
                x[:, j] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                x[:, j] = frame[name].map(codes).to_numpy(dtype=np.float64, na_value=np.nan)
        return x

    def scores(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Probability of the positive target class, as :func:`scores` gives it."""
        return self.proba(self.matrix(records))

    def proba(self, x: np.ndarray) -> np.ndarray:
        """:meth:`scores` for records already encoded by :meth:`matrix`."""
        return self.trees.predict_proba(x) if self._walk(x) else self.classifier.predict_proba(x)[:, 1]

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The classifier's log-odds for its input matrix ``x`` (what ``decision_function`` gives)."""
        return self.trees.decision_function(x) if self._walk(x) else self.classifier.decision_function(x)

    def _walk(self, x: np.ndarray) -> bool:
        return self.trees is not None and len(x) <= COMPILED_MAX_ROWS


def _identity(transformer: Any) -> bool:
    # A fitted ColumnTransformer keeps "passthrough" as an identity FunctionTransformer.
    if isinstance(transformer, str):
        return transformer == "passthrough"
    return isinstance(transformer, FunctionTransformer) and transformer.func is None and not transformer.kw_args


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
