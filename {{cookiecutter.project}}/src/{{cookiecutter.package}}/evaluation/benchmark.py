"""The model against its benchmark on the held-out set: the ``benchmark`` section of ``reports/metrics.json``.

The difference is the headline metric (core/use_case.yaml) of the model minus the benchmark's,
with a seeded paired bootstrap interval: each resample draws held-out rows with replacement and
scores both models on the same rows, so what the two share (the rows' difficulty) cancels out.
A resample is a weighting of the rows (how often each was drawn), so the rows are sorted once
and each resample costs a pass over them (hand-written because scikit-learn's scorers sort
again on every call: 200 resamples of 200,000 rows took most of the stage).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ..core import config, model
from ..core.contract import Contract
from ..core.params import BenchmarkParams
{% if cookiecutter.use_case == "fraud_detection" %}
# The logistic regression's one-hot encoder stores its output dtype: the one type beyond the model's.
BENCHMARK_TRUSTED_TYPES = [*model.TRUSTED_TYPES, "numpy.dtype"]
{% endif %}

def load_scorer(contract: Contract) -> Callable[[pd.DataFrame], np.ndarray]:
    """The fitted benchmark (``models/``) as a function from prepared rows to probabilities."""
{%- if cookiecutter.use_case == "credit_scoring" %}
    from ..core.scorecard import Scorecard

    card = Scorecard.read(config.BENCHMARK)
    return lambda frame: card.scores(model.model_frame(frame, contract))
{%- else %}
    pipeline = model.load(config.BENCHMARK, trusted=BENCHMARK_TRUSTED_TYPES)
    return lambda frame: model.scores(pipeline, frame, contract)
{%- endif %}


class SortedScores:
    """One model's held-out scores sorted once, with their groups of tied values."""

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(score, kind="stable")
        s = np.asarray(score)[self.order]
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        self.y = np.asarray(y, dtype=np.float64)[self.order]

    def _by_group(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = weight[self.order]
        return np.add.reduceat(w * self.y, self.starts), np.add.reduceat(w * (1.0 - self.y), self.starts)

    def roc_auc(self, weight: np.ndarray) -> float:
        """Weighted ROC-AUC (ties count half), as ``roc_auc_score(..., sample_weight=weight)``."""
        pos, neg = self._by_group(weight)
        below = np.cumsum(neg) - neg
        return float(np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum()))

    def pr_auc(self, weight: np.ndarray) -> float:
        """Weighted average precision, as ``average_precision_score(..., sample_weight=weight)``."""
        pos, neg = self._by_group(weight)
        tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])  # flagging from the highest score down
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        recall_gain = pos[::-1] / tp[-1]
        return float(np.sum(recall_gain * precision))


def paired_interval(
    y: np.ndarray, model_score: np.ndarray, benchmark_score: np.ndarray, metric: str, settings: BenchmarkParams, seed: int
) -> tuple[float, float]:
    """The bootstrap interval of ``metric(model) - metric(benchmark)``, resampling rows in pairs."""
    model_sorted, bench_sorted = SortedScores(y, model_score), SortedScores(y, benchmark_score)
    rng = np.random.default_rng(seed)
    n, differences = len(y), []
    for _ in range(settings.bootstrap):
        weight = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        if 0 < weight[y == 1].sum() < n:  # both classes drawn
            differences.append(getattr(model_sorted, metric)(weight) - getattr(bench_sorted, metric)(weight))
    tail = (1.0 - settings.confidence) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return float(low), float(high)


def compare(
    y: np.ndarray, model_score: np.ndarray, benchmark_score: np.ndarray, headline: str, settings: BenchmarkParams, seed: int
) -> dict[str, float | int]:
    """The benchmark's ranking metrics and the model's lead on the headline metric, with its interval."""
    values = {"roc_auc": roc_auc_score(y, benchmark_score), "pr_auc": average_precision_score(y, benchmark_score)}
    ours = {"roc_auc": roc_auc_score(y, model_score), "pr_auc": average_precision_score(y, model_score)}
    low, high = paired_interval(y, model_score, benchmark_score, headline, settings, seed)
    return section(values, ours[headline], headline, low, high, settings)


def section(
    values: dict[str, float], model_headline: float, headline: str, low: float, high: float, settings: BenchmarkParams
) -> dict[str, float | int]:
    """The ``benchmark`` section from the benchmark's metrics, the model's headline and the interval."""
    out = {
        **values,
        "difference": model_headline - values[headline],
        "difference_ci_low": low,
        "difference_ci_high": high,
        "confidence": settings.confidence,
    }
    # Rounded, as the model's metrics are, so that reruns give byte-identical metrics.json.
    return {k: round(float(v), 6) for k, v in out.items()} | {"bootstrap": settings.bootstrap}
