"""A points scorecard: WoE bins per feature, points per bin, total points to probability of default.

Fitted by ``training/benchmark.py`` (optbinning's binning and a logistic regression on the
weights of evidence), then kept here as plain tables so that scoring needs numpy only: no
optbinning where the scorecard is read (evaluation, and the service). The points are exact,
not rounded: the probability of default follows from the total by the points-to-double-the-odds
scaling, so it equals the logistic regression's to floating-point precision (the benchmark stage
checks that on its training rows before it writes the file).

Scaling: ``score = offset + factor * ln(odds of good)``, ``factor = pdo / ln 2``,
``offset = base_points - factor * ln(base_odds)``: ``base_points`` at odds ``base_odds`` to 1,
and every ``pdo`` more points doubles the odds of good.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT
