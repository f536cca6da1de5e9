"""Per-group outcome and error rates, their between-group spreads, and bootstrap intervals.

Point estimates are per-group counts (``by_group``), tested equal to fairlearn's
``MetricFrame`` (the oracle in the tests, tests/oracles.py). The stage does not call MetricFrame
itself: fairlearn 0.15 ``np.stack``s every column element by element before each metric call,
which took most of the stage's time at a million rows. fairlearn has no subject-level
(cluster) bootstrap either, so that is kept here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..core import use_case
from ..core.params import FairnessParams
from ..core.stage import progress


def by_group(y: np.ndarray, flagged: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """One row per group (sorted by name): n, positives, outcome rate, TPR, FPR, positive rate.

    Counted with one pass per column (:func:`group_table`); tests hold it equal to fairlearn's
    ``MetricFrame``.
    """
    names, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    y, flagged = np.asarray(y), np.asarray(flagged)
    return group_table(y, flagged, codes.ravel(), pd.Index(names, name="group"))


def eligible_groups(table: pd.DataFrame, settings: FairnessParams) -> tuple[list[str], list[str], list[str]]:
    """The groups large enough to judge: for the outcome rate, for TPR and for FPR.

    A group's outcome rate is compared from ``min_group_size`` rows; its TPR (FPR) only when,
    besides, it has ``min_group_outcomes`` actual positives (negatives). The fairness stage
    and the monitor both ask here, so they judge the same groups.
    """
    rate = [g for g in table.index if table.at[g, "n"] >= settings.min_group_size]
    tpr = [g for g in rate if table.at[g, "positives"] >= settings.min_group_outcomes]
    fpr = [g for g in rate if table.at[g, "n"] - table.at[g, "positives"] >= settings.min_group_outcomes]
    return rate, tpr, fpr


def summarise(
    table: pd.DataFrame, outcome: str, rate_groups: list[str], tpr_groups: list[str], fpr_groups: list[str]
) -> dict[str, dict[str, Any]]:
    """Between-group summaries over the groups large enough to judge (None when fewer than two)."""
    out: dict[str, dict[str, Any]] = {}

    def spread(column: str, groups: list[str]) -> tuple[float, str, str] | None:
        values = table.loc[groups, column].dropna() if groups else pd.Series(dtype=float)
        if len(values) < 2:
            return None
        return float(values.max() - values.min()), str(values.idxmin()), str(values.idxmax())

    rates = table.loc[rate_groups, outcome].dropna() if rate_groups else pd.Series(dtype=float)
    if len(rates) >= 2:
        lo, hi = str(rates.idxmin()), str(rates.idxmax())
        ratio = float(rates.min() / rates.max()) if rates.max() > 0 else 1.0
        out["demographic_parity_ratio"] = {"value": ratio, "low_group": lo, "high_group": hi}
        out["demographic_parity_difference"] = {"value": float(rates.max() - rates.min()), "low_group": lo, "high_group": hi}
    tpr, fpr = spread("tpr", tpr_groups), spread("fpr", fpr_groups)
    for name, found in (("tpr_difference", tpr), ("fpr_difference", fpr)):
        if found is not None:
            out[name] = {"value": found[0], "low_group": found[1], "high_group": found[2]}
    # Equalized odds compares both error rates, so only over groups where both can be judged.
    both = [g for g in tpr_groups if g in fpr_groups]
    eo_tpr, eo_fpr = spread("tpr", both), spread("fpr", both)
    if eo_tpr is not None and eo_fpr is not None:
        component, (value, lo, hi) = max((("tpr", eo_tpr), ("fpr", eo_fpr)), key=lambda kv: kv[1][0])
        out["equalized_odds_difference"] = {"value": value, "low_group": lo, "high_group": hi, "component": component}
    return out


class _Resampler:
    """Stratified cluster bootstrap: within each group, resample whole subjects with replacement.

    Decisions about one subject (every record of one person, say) are not independent, so
    resampling rows would understate the noise. With one row per subject this is the ordinary
    row bootstrap within groups.

    Only each subject's counts matter to the statistics (rows, positives, flags, true
    positives), and subjects with the same counts in the same group are interchangeable. So
    drawing a group's N subjects with replacement is drawn exactly, in distribution, as one
    multinomial over the distinct count patterns (a handful: 4 per group with one row per
    subject), weighted by how many subjects share each. A resample then costs the number of
    patterns, not the number of rows: the interval at a million rows costs what it does at ten
    thousand, and every row still counts.
    """

    def __init__(self, patterns: np.ndarray, multiplicity: np.ndarray, k: int, n_units: int) -> None:
        """From the distinct unit patterns (group code, rows, positives, flags, true positives), sorted, and their counts."""
        self.k = k
        self.n_units = n_units
        self.groups = []
        for g in range(k):
            here = patterns[:, 0] == g
            if here.any():
                m = multiplicity[here]
                self.groups.append((g, int(m.sum()), m / m.sum(), patterns[here, 1:].astype(float)))

    @classmethod
    def of_rows(cls, codes: np.ndarray, clusters: np.ndarray | None, y: np.ndarray, flagged: np.ndarray, k: int) -> _Resampler:
        """The resampler of rows with group codes ``codes``, subjects ``clusters`` (None: each row its own), labels and flags."""
        codes = np.asarray(codes, dtype=np.int64)
        if clusters is None:
            units = np.arange(len(codes))
        else:
            cluster_codes = pd.factorize(clusters)[0].astype(np.int64)
            units = np.unique(codes * (int(cluster_codes.max(initial=0)) + 1) + cluster_codes, return_inverse=True)[1].ravel()
        n_units = int(units.max()) + 1 if len(units) else 0
        y, flagged = np.asarray(y, dtype=np.int64), np.asarray(flagged, dtype=np.int64)
        unit_group = np.zeros(n_units, dtype=np.int64)
        unit_group[units] = codes
        stats = np.column_stack(
            [
                unit_group,
                np.bincount(units, minlength=n_units),
                np.bincount(units, weights=y, minlength=n_units),
                np.bincount(units, weights=flagged, minlength=n_units),
                np.bincount(units, weights=y * flagged, minlength=n_units),
            ]
        ).astype(np.int64)
        patterns, multiplicity = np.unique(stats, axis=0, return_counts=True) if n_units else (stats, np.zeros(0, int))
        return cls(patterns, multiplicity, k, n_units)

    def sample_sums(self, rng: np.random.Generator) -> np.ndarray:
        """One resample's per-group sums: a (4, k) array of rows, positives, flags, true positives."""
        sums = np.zeros((4, self.k))
        for g, n, p, counts in self.groups:
            sums[:, g] = rng.multinomial(n, p) @ counts
        return sums


def _table_from_sums(n: np.ndarray, pos: np.ndarray, flags: np.ndarray, tp: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """The group table from per-group counts: rows, positives, flags and true positives."""
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame(
            {
                "n": n,
                "positives": pos,
                "flag_rate": flags / n,
                "tpr": tp / pos,
                "fpr": (flags - tp) / (n - pos),
                "positive_rate": pos / n,
            },
            index=index,
        )
    return _name_outcome(table)


def _name_outcome(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its ``flag_rate`` column turned into the use case's fairness outcome, in place."""
    facts = use_case.load()
    at = table.columns.get_loc("flag_rate")
    table.insert(at, facts.fairness_outcome, facts.outcome_rate(table.pop("flag_rate")))
    return table


def group_table(y: np.ndarray, flagged: np.ndarray, codes: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """The same numbers as :func:`by_group` for integer group codes ``codes`` naming rows of ``index``."""
    k = len(index)
    y, flagged = np.asarray(y, dtype=float), np.asarray(flagged, dtype=float)
    n = np.bincount(codes, minlength=k).astype(float)
    pos = np.bincount(codes, weights=y, minlength=k)
    flags = np.bincount(codes, weights=flagged, minlength=k)
    tp = np.bincount(codes, weights=y * flagged, minlength=k)
    return _table_from_sums(n, pos, flags, tp, index)


def headline_by_group(y: np.ndarray, score: np.ndarray, groups: np.ndarray) -> pd.Series:
    """The headline ranking metric within each group (a slice metric; NaN where a group has one class)."""
    fn = use_case.load().headline_score
    y, score = np.asarray(y), np.asarray(score)
    names, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    codes = codes.ravel()
    values = []
    for i in range(len(names)):
        here = codes == i
        values.append(float(fn(y[here], score[here])) if len(np.unique(y[here])) == 2 else np.nan)
    return pd.Series(values, index=pd.Index(names, name="group"))


def assess_attribute(
    y: np.ndarray,
    flagged: np.ndarray,
    groups: np.ndarray,
    settings: FairnessParams,
    seed: int,
    score: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    what: str = "fairness",
) -> dict[str, Any]:
    """Group table, between-group summaries and their bootstrap intervals for one protected attribute."""
    table = by_group(y, flagged, groups)
    if score is not None:
        table[use_case.load().headline_metric] = headline_by_group(y, score, groups).reindex(table.index)
    codes = pd.Categorical(groups, categories=table.index).codes
    resampler = _Resampler.of_rows(codes, clusters, y, flagged, len(table.index))
    return assess_table(table, resampler, settings, seed, what)


def assess_table(table: pd.DataFrame, resampler: _Resampler, settings: FairnessParams, seed: int, what: str) -> dict[str, Any]:
    """:func:`assess_attribute` from the group table and the resampler of its units (the Spark stage aggregates both)."""
    facts = use_case.load()
    outcome, headline = facts.fairness_outcome, facts.headline_metric
    min_size, min_outcomes = settings.min_group_size, settings.min_group_outcomes
    negatives = table["n"] - table["positives"]
    rate_groups, tpr_groups, fpr_groups = eligible_groups(table, settings)
    summary = summarise(table, outcome, rate_groups, tpr_groups, fpr_groups)

    # Seeded stratified (cluster) bootstrap: the same resamples for every statistic of this attribute.
    n_boot, confidence = settings.bootstrap, settings.confidence
    q = [(1.0 - confidence) / 2.0, 1.0 - (1.0 - confidence) / 2.0]
    rng = np.random.default_rng(seed)
    columns = [outcome, "tpr", "fpr"]
    boot_groups: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    boot_summary: dict[str, list[float]] = {k: [] for k in summary}
    for _ in progress(range(n_boot), n_boot, f"{what}: bootstrap resamples"):
        t = _table_from_sums(*resampler.sample_sums(rng), table.index)
        for c in columns:
            boot_groups[c].append(t[c].to_numpy(dtype=float))
        s = summarise(t, outcome, rate_groups, tpr_groups, fpr_groups)
        for k in boot_summary:
            boot_summary[k].append(s[k]["value"] if k in s else np.nan)

    def ci(samples, estimate: float) -> list[float] | None:
        # A max-minus-min over noisy group rates is biased upwards (a ratio downwards), and
        # resampling adds the same noise again, so the plain percentile interval is shifted.
        # The basic (reverse-percentile) interval reflects about the estimate and cancels the
        # shift; near zero it collapses. Reporting the union of the two keeps the bias-corrected
        # bound on the side a gate judges, and never understates how large a disparity may be.
        arr = np.asarray(samples, dtype=float)
        if arr.size == 0 or np.all(np.isnan(arr)):
            return None
        lo, hi = np.nanquantile(arr, q)
        basic = (2 * estimate - hi, 2 * estimate - lo)
        # Every summary statistic lies in [0, 1].
        return [round(float(np.clip(min(basic[0], lo), 0.0, 1.0)), 6), round(float(np.clip(max(basic[1], hi), 0.0, 1.0)), 6)]

    group_ci = {c: np.nanquantile(np.vstack(boot_groups[c]), q, axis=0) if n_boot else None for c in columns}
    groups_out: dict[str, Any] = {}
    skipped = []
    for i, g in enumerate(table.index):
        row = table.loc[g]
        entry: dict[str, Any] = {
            "n": int(row["n"]),
            "positives": int(row["positives"]),
            **{c: _r(row[c]) for c in (outcome, "tpr", "fpr", "positive_rate", headline) if c in row.index},
            "ci": {
                c: (
                    None
                    if group_ci[c] is None or np.isnan(group_ci[c][:, i]).any()
                    else [round(float(v), 6) for v in group_ci[c][:, i]]
                )
                for c in columns
            },
            "gated": {"outcome_rate": g in rate_groups, "tpr": g in tpr_groups, "fpr": g in fpr_groups},
        }
        if g not in rate_groups:
            entry["not_gated_reason"] = f"{int(row['n'])} rows < min_group_size {min_size}: reported, not gated"
        elif g not in tpr_groups or g not in fpr_groups:
            which, count, kind = (
                ("TPR", int(row["positives"]), "positives") if g not in tpr_groups else ("FPR", int(negatives[g]), "negatives")
            )
            entry["not_gated_reason"] = (
                f"{count} actual {kind} < min_group_outcomes {min_outcomes}: {which} (and equalized odds) reported, not gated"
            )
        if "not_gated_reason" in entry:
            skipped.append({"group": g, "reason": entry["not_gated_reason"]})
        groups_out[g] = entry
    summary_out = {k: {**v, "value": _r(v["value"]), "ci": ci(boot_summary[k], v["value"])} for k, v in summary.items()}
    return {"groups": groups_out, "summary": summary_out, "not_gated": skipped, "bootstrap_units": int(resampler.n_units)}


def _r(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 6)
