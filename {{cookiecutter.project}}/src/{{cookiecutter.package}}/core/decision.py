"""Scores to decisions: the one rule the service, its tests and the pipeline's reports share.

The model's threshold is its automated cut-off: at or above it the decision is adverse. An
optional refer band (``serving.refer_band`` in params.yaml) around the threshold sends the
scores nearest it to a person instead (EU AI Act Art. 14, GDPR Art. 22)::

    score < lower            favourable (approve / pass)
    lower <= score < upper   refer      (refer / review)
    score >= upper           adverse    (decline / flag)

with ``lower <= threshold <= upper``, so the band only ever takes decisions away from the
automated rule, never reverses one. Without a band the rule is the threshold alone. The
evaluation's metrics stay at the threshold: they measure the model, whose every referred case
still gets a final decision from a reviewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .errors import ParamsError

BAND_KEY = "serving.refer_band"


class Outcome(IntEnum):
    """A decision's kind; its word is the use case's (``use_case.yaml``: ``decisions``)."""

    FAVOURABLE = 0
    REFER = 1
    ADVERSE = 2

    @property
    def key(self) -> str:
        """The key of its word in ``use_case.yaml``'s ``decisions``."""
        return self.name.lower()


def band_problem(lower: float, upper: float, threshold: float, where: str = "the decision threshold") -> str | None:
    """Why a band cannot be used with ``threshold`` (one line naming the key), or None."""
    if not lower <= threshold <= upper:
        return (
            f"'{BAND_KEY}' [{lower:g}, {upper:g}] must contain {where} {threshold:g} "
            "(lower <= threshold <= upper): widen the band, or set it to null"
        )
    return None


@dataclass(frozen=True)
class DecisionRule:
    """The threshold and, if any, the refer band; :meth:`outcomes` applies them."""

    threshold: float
    band: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        problem = None if self.band is None else band_problem(*self.band, self.threshold)
        if problem:
            raise ParamsError(f"params.yaml: {problem}")

    def adverse(self, scores: np.ndarray) -> np.ndarray:
        """Where the automated rule alone decides adversely (score at or above the threshold)."""
        return np.asarray(scores) >= self.threshold

    def outcomes(self, scores: np.ndarray) -> np.ndarray:
        """One :class:`Outcome` value per score."""
        scores = np.asarray(scores, dtype="float64")
        if self.band is None:
            return np.where(scores >= self.threshold, Outcome.ADVERSE, Outcome.FAVOURABLE).astype("int8")
        lower, upper = self.band
        out = np.full(scores.shape, Outcome.REFER, dtype="int8")
        out[scores < lower] = Outcome.FAVOURABLE
        out[scores >= upper] = Outcome.ADVERSE
        return out

    def refer_rate(self, scores: np.ndarray) -> float:
        """Share of the scores a person would decide."""
        return float(np.mean(self.outcomes(scores) == Outcome.REFER)) if len(scores) else 0.0
