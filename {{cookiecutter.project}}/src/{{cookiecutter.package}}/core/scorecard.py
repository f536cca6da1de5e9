"""A points scorecard: WoE bins per feature, points per bin, total points to probability of default.

Fitted by ``training/benchmark.py`` (optbinning's binning and a logistic regression on the
weights of evidence), then kept here as plain tables so that scoring needs numpy only: no
optbinning where the scorecard is read (evaluation, and the service). The points are exact,
not rounded: the probability of default follows from the total by the points-to-double-the-odds
scaling, so it equals the logistic regression's to floating-point precision (the benchmark stage
checks that on its training rows before it writes the file).

With ``model.kind: scorecard`` in params.yaml the scorecard is also THE model: :class:`ScorecardModel`
wraps the same table in scikit-learn's classifier interface (saved as ``models/model.skops``, so
every stage that scores the model scores it), and :class:`PointsScorer` gives the service its
records' points per feature, from which the reason codes follow exactly (points below each
feature's best attainable points).

Scaling: ``score = offset + factor * ln(odds of good)``, ``factor = pdo / ln 2``,
``offset = base_points - factor * ln(base_odds)``: ``base_points`` at odds ``base_odds`` to 1,
and every ``pdo`` more points doubles the odds of good.
"""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.base import BaseEstimator, ClassifierMixin

from .errors import StageOrderError
from .stage import write_json


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Scaling(_Frozen):
    """Points-to-double-the-odds scaling (``benchmark`` in params.yaml)."""

    pdo: Annotated[float, Field(gt=0)]
    base_points: float
    base_odds: Annotated[float, Field(gt=0)]

    @property
    def factor(self) -> float:
        """Points per unit of log-odds."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """Points at even odds."""
        return self.base_points - self.factor * math.log(self.base_odds)


class FeaturePoints(_Frozen):
    """One feature's bins and their points.

    Numeric: bin ``i`` holds ``splits[i-1] <= x < splits[i]`` (optbinning's convention), so there
    are ``len(splits) + 1`` bins. Categorical: bin ``i`` holds the categories ``groups[i]``.
    A missing value scores ``missing_points``; a category no bin holds scores ``other_points``.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    splits: list[float] = []
    groups: list[list[str]] = []
    woe: list[float]
    points: list[float]
    missing_points: float
    other_points: float

    @model_validator(mode="after")
    def _shape(self) -> FeaturePoints:
        bins = len(self.splits) + 1 if self.kind == "numeric" else len(self.groups)
        if len(self.points) != bins or len(self.woe) != bins:
            raise ValueError(f"feature {self.name!r}: {bins} bins need {bins} points and WoE values")
        return self

    def bin_index(self, values: pd.Series) -> np.ndarray:
        """Each value's bin; -1 for missing, -2 for a category no bin holds."""
        if self.kind == "numeric":
            x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            index = np.searchsorted(np.asarray(self.splits, dtype=np.float64), x, side="right")
            return np.where(np.isnan(x), -1, index)
        lookup = {category: i for i, group in enumerate(self.groups) for category in group}
        codes = values.astype(object).map(lambda v: -1 if _missing(v) else lookup.get(str(v), -2))
        return codes.to_numpy(dtype=np.int64)

    def points_of(self, values: pd.Series) -> np.ndarray:
        """Each value's points."""
        table = np.asarray([*self.points, self.other_points, self.missing_points], dtype=np.float64)
        return table[self.bin_index(values)]  # -1 and -2 index the last two entries

    @property
    def best_points(self) -> float:
        """The most points this feature can give (its best bin, missing and unseen included)."""
        return max(*self.points, self.missing_points, self.other_points)


class Scorecard(_Frozen):
    """The whole scorecard, as ``models/scorecard.json`` holds it."""

    schema_version: Literal[1] = 1
    scaling: Scaling
    features: list[FeaturePoints]

    def points(self, frame: pd.DataFrame) -> np.ndarray:
        """Points per row (rows) and feature (columns, in :attr:`features` order)."""
        missing = [f.name for f in self.features if f.name not in frame.columns]
        if missing:
            raise KeyError(f"scorecard: input is missing feature column(s) {missing}")
        return np.column_stack([f.points_of(frame[f.name]) for f in self.features])

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Total points per row (higher: lower risk)."""
        return self.points(frame).sum(axis=1)

    def probability(self, total: np.ndarray) -> np.ndarray:
        """Probability of the positive class (default) from total points."""
        s = self.scaling
        return 1.0 / (1.0 + np.exp((np.asarray(total, dtype=np.float64) - s.offset) / s.factor))

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of default per row, as ``model.scores`` gives it for the boosted model."""
        return self.probability(self.score(frame))

    def write(self, path: Path) -> None:
        """Write the scorecard atomically."""
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: Path) -> Scorecard:
        """Read a scorecard file; a missing one names the stage that writes it."""
        if not Path(path).exists():
            raise StageOrderError(f"{path} not found: run the benchmark stage first (dvc repro)")
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


class ScorecardModel(ClassifierMixin, BaseEstimator):
    """The scorecard as the pipeline's model (``model.kind: scorecard``), in scikit-learn's classifier interface.

    Holds the scorecard as plain JSON data (``card``), so skops stores it without code and loads it
    through the allowlist (core/model.py ``TRUSTED_TYPES``); the evaluation, fairness, explain,
    validation-pack and reference stages score it with ``predict_proba`` as they score the boosted
    model. Nothing is fitted here: the benchmark stage fitted the table (training/benchmark.py).
    """

    def __init__(self, card: dict[str, Any] | None = None) -> None:
        self.card = card

    def fit(self, X: Any = None, y: Any = None) -> ScorecardModel:
        """Check the table and mark the model fitted (its classes are the target's 0 and 1)."""
        Scorecard.model_validate(self.card)
        self.classes_ = np.array([0, 1])
        return self

    @property
    def scorecard(self) -> Scorecard:
        """The table, parsed once per model object (not stored: skops keeps only ``card``)."""
        parsed = _PARSED.get(self)
        if parsed is None:
            parsed = _PARSED[self] = Scorecard.model_validate(self.card)
        return parsed

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Log-odds of default from the total points: ``(offset - points) / factor``."""
        s = self.scorecard.scaling
        return (s.offset - self.scorecard.score(X)) / s.factor

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities of repayment and default, the default's exactly as :meth:`Scorecard.scores` gives it."""
        p = self.scorecard.scores(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The likelier class (the decision threshold is the service's, not this)."""
        return (self.scorecard.scores(X) >= 0.5).astype(int)


_PARSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class PointsScorer:
    """The service's scorer for a :class:`ScorecardModel` (core/model.py ``RecordScorer``'s interface).

    Its encoded matrix is each record's points per feature, in the contract's model order: the
    probability follows from the row's total, and each feature's points lost against its best
    attainable points are the reason codes' measure, so one encoding serves both.
    """

    def __init__(self, fitted: ScorecardModel) -> None:
        self.card = fitted.scorecard
        self.features = [f.name for f in self.card.features]
        self.index = {name: j for j, name in enumerate(self.features)}
        self.best = np.asarray([f.best_points for f in self.card.features], dtype=np.float64)

    def matrix(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Points per record (rows) and feature (columns); a missing or absent value scores its missing points."""
        return self.card.points(pd.DataFrame.from_records(records, columns=self.features))

    def frame_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`matrix` for a frame (core/model.py ``model_frame``)."""
        return self.card.points(frame)

    def scores(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Probability of default per record."""
        return self.proba(self.matrix(records))

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of default from the rows' total points."""
        return self.card.probability(x.sum(axis=1))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of default from the rows' total points."""
        s = self.card.scaling
        return (s.offset - x.sum(axis=1)) / s.factor

    def points_lost(self, x: np.ndarray) -> np.ndarray:
        """Per row and feature, the points below that feature's best attainable points (>= 0)."""
        return self.best - x

    def best_bins(self) -> dict[str, str]:
        """Each feature's best bin, described (the reason codes' reference, as the boosted model's best values)."""
        return {f.name: _best_bin(f) for f in self.card.features}


def _best_bin(feature: FeaturePoints) -> str:
    best = feature.best_points
    if feature.missing_points == best and best not in feature.points:
        return "missing"
    if feature.other_points == best and best not in feature.points:
        return "a category not seen in training"
    i = feature.points.index(best)
    if feature.kind == "categorical":
        return ", ".join(feature.groups[i])
    low = "-inf" if i == 0 else f"{feature.splits[i - 1]:g}"
    high = "inf" if i == len(feature.splits) else f"{feature.splits[i]:g}"
    return f"[{low}, {high})"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT
