"""Population and characteristic stability (PSI / CSI) on bins fixed at training time.

Hand-written on purpose: drift libraries here either do not import with pandas 3 or re-bin
the reference together with the new data, which moves the yardstick with the thing measured.
Here the reference bins are frozen in ``models/reference.json`` and new data is only counted
into them. Conventions (tested against a hand-computed fixture):

- numeric: quantile edges ``e_1 < ... < e_k``; bin ``i`` holds ``e_i < x <= e_{i+1}``, with
  ``-inf`` and ``+inf`` at the ends, so values beyond the training range land in the end bins;
- categorical: one bin per training level; every level never seen in training gets its own
  bin (reference share 0);
- nulls (and values that cannot be read as the column's type) are one more bin;
- empty bins: a share of 0 on either side is floored at ``epsilon`` before the logarithm;
- PSI = sum over bins of (actual - expected) * ln(actual / expected).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..core.reports import Status, Verdict

NULL = "(null)"
# The shared verdict statuses from least to most severe, and the words monitoring shows for
# them (the workflow, the issue and the dashboard speak of an ALERT).
SEVERITY: tuple[Status, ...] = ("skip", "pass", "warn", "fail")
LABELS: dict[Status, str] = {"skip": "NOT_JUDGED", "pass": "OK", "warn": "WARN", "fail": "ALERT"}


def quantile_edges(values: np.ndarray, n_bins: int) -> list[float]:
    """Interior edges at the 1/n .. (n-1)/n quantiles of the non-null values, ties merged."""
    values = np.asarray(values, dtype="float64")
    values = values[~np.isnan(values)]
    if values.size == 0:
        return []
    qs = np.quantile(values, np.arange(1, n_bins) / n_bins)
    return [float(e) for e in np.unique(qs)]


def numeric_counts(values: np.ndarray, edges: list[float]) -> tuple[np.ndarray, int]:
    """Counts per bin (``len(edges) + 1`` bins) and the count of nulls."""
    values = np.asarray(values, dtype="float64")
    null = np.isnan(values)
    idx = np.searchsorted(np.asarray(edges, dtype="float64"), values[~null], side="left")
    return np.bincount(idx, minlength=len(edges) + 1), int(null.sum())


def level_key(value: Any) -> str:
    """One spelling per level, so 1, 1.0 and "1" from CSV and Parquet count as the same level."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def categorical_counts(values: pd.Series) -> tuple[dict[str, int], int]:
    """Counts per level and the count of nulls."""
    s = pd.Series(values)
    null = s.isna()
    counts = s[~null].map(level_key).value_counts()
    return {str(k): int(v) for k, v in counts.items()}, int(null.sum())


def bin_labels(edges: list[float]) -> list[str]:
    """The numeric bins' labels for reports, from the reference's edges (right-closed, as numeric_counts counts)."""
    labels = [f"<= {edges[0]:.4g}" if edges else "all"]
    labels += [f"({lo:.4g}, {hi:.4g}]" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return labels + ([f"> {edges[-1]:.4g}"] if edges else [])


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float) -> float:
    """PSI of two aligned vectors of shares; shares of 0 are floored at ``epsilon``."""
    e = np.maximum(np.asarray(expected, dtype="float64"), epsilon)
    a = np.maximum(np.asarray(actual, dtype="float64"), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_profile(values: np.ndarray, n_bins: int) -> dict[str, Any]:
    """Reference entry for a numeric column: edges and the shares of each bin and of nulls."""
    values = np.asarray(values, dtype="float64")
    edges = quantile_edges(values, n_bins)
    counts, nulls = numeric_counts(values, edges)
    n = max(len(values), 1)
    return {"kind": "numeric", "edges": edges, "shares": [c / n for c in counts.tolist()], "null": nulls / n}


def categorical_profile(values: pd.Series) -> dict[str, Any]:
    """Reference entry for a categorical column: the share of each level and of nulls."""
    counts, nulls = categorical_counts(values)
    n = max(len(values), 1)
    return {"kind": "categorical", "levels": {k: counts[k] / n for k in sorted(counts)}, "null": nulls / n}


def compare(reference: dict[str, Any], values, epsilon: float) -> dict[str, Any]:
    """Bin ``values`` on the reference's bins; the stability index and the aligned shares per bin."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to compare with the reference")
    if reference["kind"] == "numeric":
        counts, nulls = numeric_counts(
            np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype="float64"), reference["edges"]
        )
        labels = bin_labels(reference["edges"])
        expected = list(reference["shares"])
        actual = (counts / n).tolist()
    else:
        counts_by_level, nulls = categorical_counts(values)
        levels = list(reference["levels"])
        unseen = sorted(set(counts_by_level) - set(levels))
        labels = levels + [f"{u} (unseen)" for u in unseen]
        expected = [reference["levels"][k] for k in levels] + [0.0] * len(unseen)
        actual = [counts_by_level.get(k, 0) / n for k in levels + unseen]
    labels.append(NULL)
    expected.append(reference["null"])
    actual.append(nulls / n)
    return {
        "value": psi(np.array(expected), np.array(actual), epsilon),
        "bins": labels,
        "expected": expected,
        "actual": actual,
    }


def verdict(value: float, warn: float, alert: float) -> Verdict:
    """``pass`` (OK) below ``warn``, ``warn`` from ``warn``, ``fail`` (ALERT) from ``alert``."""
    if value >= alert:
        return Verdict(status="fail", reason=f"{value:.3f} at or above the alert threshold {alert:g}")
    if value >= warn:
        return Verdict(status="warn", reason=f"{value:.3f} at or above the warning threshold {warn:g}")
    return Verdict(status="pass", reason=f"{value:.3f} below the warning threshold {warn:g}")


def worst(statuses: list[Status]) -> Status:
    """The most severe of several statuses (``pass`` when there are none)."""
    return max(statuses, key=SEVERITY.index, default="pass")
