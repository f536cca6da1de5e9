"""The statistics a model validator asks for: pure functions of labels, scores and grades.

Used by the validation pack (``evaluation/validation_pack.py``) and by outcomes on matured labels
(``monitoring/outcomes.py``); each is tested against scipy or a hand computation in
tests/test_calibration.py. References:

- ECB, *Instructions for reporting the validation results of internal models* (IRB, 2019):
  the Jeffreys test of a grade's PD, the AUC against the AUC at initial validation, the
  Herfindahl index of grade concentration.
- DeLong, DeLong & Clarke-Pearson (1988), *Biometrics* 44(3), and Sun & Xu (2014), *IEEE Signal
  Processing Letters* 21(11): the AUC's variance from midrank placement values.
- Hosmer & Lemeshow, *Applied Logistic Regression* (3rd ed., 2013), section 5.2.2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..core.errors import DataError


def jeffreys_p_value(defaults: int, n: int, pd: float) -> float:
    """One-sided Jeffreys test that a grade's PD is not underestimated.

    p = F_Beta(pd; D + 1/2, N - D + 1/2): the posterior probability, under the Jeffreys prior
    Beta(1/2, 1/2), that the true default rate is at most the predicted ``pd`` (ECB 2019,
    "Jeffreys test"). A small p says the observed defaults are too many for the PD.
    """
    _check_counts(defaults, n)
    return float(stats.beta.cdf(pd, defaults + 0.5, n - defaults + 0.5))


def binomial_p_value(defaults: int, n: int, pd: float) -> float:
    """One-sided exact binomial test: P(X >= D) for X ~ Binomial(N, pd); small when defaults exceed the PD."""
    _check_counts(defaults, n)
    return float(stats.binom.sf(defaults - 1, n, pd))


def _check_counts(defaults: int, n: int) -> None:
    if n <= 0 or not 0 <= defaults <= n:
        raise ValueError(f"need 0 <= defaults <= n and n > 0, got defaults={defaults}, n={n}")


@dataclass(frozen=True)
class HosmerLemeshow:
    """The Hosmer-Lemeshow statistic over groups (here: rating grades), its degrees of freedom and p-value."""

    statistic: float
    df: int
    p_value: float


def hosmer_lemeshow(defaults: Sequence[int], n: Sequence[int], mean_pd: Sequence[float]) -> HosmerLemeshow:
    """HL = sum over groups g of (D_g - N_g p_g)^2 / (N_g p_g (1 - p_g)), chi-squared with G degrees of freedom.

    G (not G - 2) because the PDs were not fitted on these rows: Hosmer & Lemeshow (2013), 5.2.2,
    on a validation sample. Groups with no rows are left out; a group whose mean PD is 0 or 1
    has no binomial variance and is refused (a grade holding only PD 0 means a broken model).
    """
    d, m, p = (np.asarray(x, dtype=float) for x in (defaults, n, mean_pd))
    keep = m > 0
    d, m, p = d[keep], m[keep], p[keep]
    if not len(m):
        raise ValueError("Hosmer-Lemeshow needs at least one non-empty group")
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError(f"Hosmer-Lemeshow needs mean PDs strictly between 0 and 1, got {p.tolist()}")
    statistic = float(np.sum((d - m * p) ** 2 / (m * p * (1 - p))))
    df = int(len(m))
    return HosmerLemeshow(statistic=statistic, df=df, p_value=float(stats.chi2.sf(statistic, df)))


@dataclass(frozen=True)
class AucInterval:
    """ROC-AUC with its DeLong standard error and a two-sided confidence interval."""

    auc: float
    se: float
    low: float
    high: float
    confidence: float


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    return stats.rankdata(x, method="average")


def delong_auc(y: np.ndarray, score: np.ndarray, confidence: float = 0.95) -> AucInterval:
    """ROC-AUC with DeLong's variance, by Sun & Xu's midrank algorithm (O(n log n)).

    With m positives X and n negatives Y: V10_i = (rank of X_i among all - rank among X) / n,
    V01_j = 1 - (rank of Y_j among all - rank among Y) / m, AUC = mean(V10), and
    Var(AUC) = var(V10) / m + var(V01) / n (sample variances). The interval is AUC +- z se,
    clipped to [0, 1].
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    pos, neg = score[y], score[~y]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise DataError(f"the ROC-AUC interval needs at least 2 positives and 2 negatives, got {m} and {n}")
    all_ranks = _midranks(np.concatenate([pos, neg]))
    v10 = (all_ranks[:m] - _midranks(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - _midranks(neg)) / m
    return auc_interval(float(v10.mean()), math.sqrt(float(np.var(v10, ddof=1)) / m + float(np.var(v01, ddof=1)) / n), confidence)


def auc_interval(auc: float, se: float, confidence: float = 0.95) -> AucInterval:
    """The interval AUC +- z se, clipped to [0, 1] (the Spark stage passes the AUC and se it aggregated)."""
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return AucInterval(auc=auc, se=se, low=max(0.0, auc - z * se), high=min(1.0, auc + z * se), confidence=confidence)


def auc_decline_p_value(reference_auc: float, current: AucInterval) -> float:
    """One-sided test that the AUC has fallen since initial validation (ECB 2019, "current AUC vs. AUC at initial validation").

    S = (AUC_initial - AUC_current) / se(AUC_current), p = 1 - Phi(S): a small p says the
    current AUC is significantly below the reference.
    """
    if current.se <= 0:
        raise ValueError("the current AUC's standard error must be positive")
    return float(stats.norm.sf((reference_auc - current.auc) / current.se))


def grade_index(pd: np.ndarray, upper_bounds: Sequence[float]) -> np.ndarray:
    """The master-scale grade of each PD: grade k holds [bound_{k-1}, bound_k); the last bound is 1 (inclusive)."""
    bounds = np.asarray(upper_bounds, dtype=float)
    if len(bounds) == 0 or np.any(np.diff(bounds) <= 0) or bounds[-1] != 1.0:
        raise ValueError(f"grade bounds must increase and end at 1.0, got {list(upper_bounds)}")
    # side="right": a PD equal to a bound belongs to the next grade (bounds are exclusive upper limits).
    return np.minimum(np.searchsorted(bounds, np.asarray(pd, dtype=float), side="right"), len(bounds) - 1)


def herfindahl(counts: Sequence[int]) -> tuple[float, float]:
    """Grade concentration: HHI = sum of squared shares, and the ECB's normalised index.

    ECB 2019 ("concentration in rating grades"): with K grades and CV = sqrt(K sum (s_k - 1/K)^2),
    HI = 1 + ln((CV^2 + 1) / K) / ln K, which equals 1 + ln(HHI) / ln K: 0 when every grade
    holds the same share, 1 when one grade holds all. K counts empty grades too.
    """
    c = np.asarray(counts, dtype=float)
    if len(c) < 2 or c.sum() <= 0:
        raise ValueError("the Herfindahl index needs at least 2 grades and a non-empty portfolio")
    shares = c / c.sum()
    hhi = float(np.sum(shares**2))
    k = len(c)
    cv = math.sqrt(k * float(np.sum((shares - 1 / k) ** 2)))
    return hhi, float(1 + math.log((cv**2 + 1) / k) / math.log(k))


@dataclass(frozen=True)
class GainsRow:
    """One score band of the gains table (band 1 holds the highest scores)."""

    band: int
    rows: int
    min_score: float
    max_score: float
    positives: int
    positive_rate: float
    cum_positive_share: float  # share of all positives captured in this band and those above it
    cum_negative_share: float
    ks: float  # cum_positive_share - cum_negative_share
    lift: float  # the band's positive rate over the overall rate


def gains_table(y: np.ndarray, score: np.ndarray, bands: int = 10) -> list[GainsRow]:
    """The gains/KS table by score quantile band (deciles by default), highest scores first.

    Rows are sorted by score (descending, stable) and cut into ``bands`` bands of equal size
    (the first bands take one more row when the count does not divide), so tied scores at a
    boundary may fall either side. The largest ``ks`` is the KS statistic measured at band edges.
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    total_pos, total_neg = int(y.sum()), int(len(y) - y.sum())
    if total_pos == 0 or total_neg == 0 or len(y) < bands:
        raise DataError(f"the gains table needs both classes and at least {bands} rows")
    order = np.argsort(-score, kind="stable")
    split = np.array_split(order, bands)
    return gains_rows(
        [len(idx) for idx in split],
        [float(score[idx].min()) for idx in split],
        [float(score[idx].max()) for idx in split],
        [int(y[idx].sum()) for idx in split],
    )


def gains_rows(
    rows: Sequence[int], min_score: Sequence[float], max_score: Sequence[float], positives: Sequence[int]
) -> list[GainsRow]:
    """The gains table from each band's row count, score range and positives (band 1 first)."""
    total_pos = int(sum(positives))
    total_neg = int(sum(rows)) - total_pos
    rate = total_pos / int(sum(rows))
    out, cum_pos, cum_neg = [], 0, 0
    for band, (n, low, high, pos) in enumerate(zip(rows, min_score, max_score, positives, strict=True), start=1):
        n, pos = int(n), int(pos)
        cum_pos, cum_neg = cum_pos + pos, cum_neg + n - pos
        out.append(
            GainsRow(
                band=band,
                rows=n,
                min_score=float(low),
                max_score=float(high),
                positives=pos,
                positive_rate=pos / n,
                cum_positive_share=cum_pos / total_pos,
                cum_negative_share=cum_neg / total_neg,
                ks=cum_pos / total_pos - cum_neg / total_neg,
                lift=(pos / n) / rate,
            )
        )
    return out


def migration_matrix(before: Sequence[int], after: Sequence[int], grades: int) -> np.ndarray:
    """Counts of rows moving from grade ``before`` (rows of the matrix) to grade ``after`` (columns)."""
    b, a = np.asarray(before, dtype=int), np.asarray(after, dtype=int)
    if b.shape != a.shape:
        raise ValueError(f"migration needs the same rows graded twice, got {len(b)} and {len(a)}")
    matrix = np.zeros((grades, grades), dtype=int)
    np.add.at(matrix, (b, a), 1)
    return matrix


def precision_recall(y: np.ndarray, flagged: np.ndarray) -> tuple[float | None, float | None]:
    """Precision and recall of the flags (None where undefined: nothing flagged, no positives)."""
    y, flagged = np.asarray(y).astype(bool), np.asarray(flagged).astype(bool)
    tp = int(np.sum(y & flagged))
    precision = tp / int(flagged.sum()) if flagged.any() else None
    recall = tp / int(y.sum()) if y.any() else None
    return precision, recall
