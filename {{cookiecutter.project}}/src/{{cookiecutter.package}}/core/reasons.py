"""Per-decision reason codes: exact feature contributions of an additive model.

With ``interaction_cst="no_interactions"`` every tree of the boosted model splits on a single
feature, so the raw score (log-odds of the positive class) is a sum of one function per
feature: ``f(x) = c + g_1(x_1) + ... + g_p(x_p)``. For each feature the *best attainable value*
is the value, within the contract's bounds and categories, with the lowest ``g_j``. With
``b`` the profile of best values, each record's contribution of feature ``j`` is

    contribution_j(x) = f(b with x_j in place of b_j) - f(b) = g_j(x_j) - g_j(b_j)

and ``f(b) + sum_j contribution_j(x) == f(x)`` exactly (up to floating point). The adverse
reasons are the features with the largest positive contributions, reported with the code and
consumer text the contract declares for them.

The values to try for each numeric feature come from the classifier's bin thresholds
(``_bin_mapper``: scikit-learn has no public route to them; every split is at one). So an
explainer is proved before it is used, on every version (``PROVED_ON`` names those it was proved
on): on probe rows of attainable values, taken from the proved tree walk's split thresholds
(trees.py) and drawn at random within the contract, the contributions must add up to the model's
own ``decision_function`` and none may fall below the best attainable value. If either fails,
:func:`explainer` raises :class:`UnprovedError`: no reason codes rather than wrong ones.

{%- if cookiecutter.use_case == "credit_scoring" %}
A points scorecard (``model.kind: scorecard``, core/scorecard.py) is additive by construction: its
log-odds are ``(offset - total points) / factor``, so a feature's contribution is the points it
lost against its best attainable points (its best bin, missing and unseen included) divided by
``factor``, and the base score is the log-odds of the best points on every feature. Exact by
definition: nothing to prove, and the same ranking as the points lost. (Recognised by what it
has, its ``scorecard`` table and its scorer's ``points_lost``: a fraud repository has no scorecard module.)
{%- endif %}

Everything here is a function of a fitted pipeline, the contract and a DataFrame of records,
so the evaluation and the service share it.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import ThreadpoolController

from . import model, trees
from .contract import Contract

log = logging.getLogger(__name__)

# A contribution at or below this (in log-odds) is not a reason: it does not worsen the score.
MIN_ADVERSE = 1e-9
# scikit-learn versions the use of ``_bin_mapper`` was proved on; on others the load-time proof decides.
PROVED_ON = ("1.9.1",)
# How far base score plus contributions may stray from decision_function (float sums in another order).
ADDITIVITY_TOLERANCE = 1e-6


class NotAdditiveError(ValueError):
    """The model has feature interactions, so per-feature contributions are not exact."""


class UnprovedError(ValueError):
    """The reason codes of probe rows disagree with the model: they would be wrong, so none are given."""


@dataclass(frozen=True)
class Explainer:
    """What reason codes of one fitted pipeline are computed from."""

    features: tuple[str, ...]  # model input order
    best: dict[str, Any]  # best attainable value per feature
    base_score: float  # raw score (log-odds) of the best-value profile
    catalogue: dict[str, dict[str, str]]  # feature -> {"code", "text"}


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def classifier(pipeline: Pipeline):
    """The pipeline's final estimator."""
    return pipeline.steps[-1][1]


def check_additive(pipeline: Pipeline) -> None:
    """Raise :class:`NotAdditiveError` unless the model has no feature interactions."""
    if _is_scorecard(pipeline):
        return  # a sum of points per feature
    clf = classifier(pipeline)
    if getattr(clf, "interaction_cst", None) != "no_interactions":
        raise NotAdditiveError(
            f"reason codes need an additive model (model.interaction_cst: no_interactions in params.yaml); "
            f"this model has interaction_cst={getattr(clf, 'interaction_cst', None)!r}, so per-feature contributions are "
            "not exact"
        )


def candidates(pipeline: Pipeline, contract: Contract, feature: str) -> list[Any]:
    """Values covering every piece of the model's step function for ``feature``, within the contract."""
    col = contract[feature]
    if col.dtype == "category":
        return list(col.categories or ())
    clf = classifier(pipeline)
    index = contract.model_input_order().index(feature)
    # The bin mapper sees the columns in the classifier's internal order (categorical ones first).
    position = int(np.flatnonzero(trees.internal_order(clf) == index)[0])
    thresholds = np.asarray(clf._bin_mapper.bin_thresholds_[position], dtype=float)
    # A split sends x <= t left: each threshold stands for the piece ending at it, and one
    # value past the last threshold for the final piece.
    values = list(thresholds) + ([np.nextafter(thresholds[-1], np.inf)] if len(thresholds) else [])
    lo = col.min if col.min is not None else -np.inf
    hi = col.max if col.max is not None else np.inf
    values = [float(np.clip(v, lo, hi)) for v in values]
    values += [float(v) for v in (col.min, col.max) if v is not None]
    if not values:  # a constant feature in training: any in-bounds value is as good as another
        values = [0.0 if col.min is None else float(col.min)]
    return sorted(set(values))


_CONTROLLER: list[ThreadpoolController] = []


def _threadpools() -> ThreadpoolController:
    # Inspecting the loaded libraries reads /proc/self/maps, which costs more than a decision;
    # once per process is enough, not once per call on the service's hot path.
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def raw_score(pipeline: Pipeline, contract: Contract, frame: pd.DataFrame) -> np.ndarray:
    """Log-odds of the positive class (what the trees add up to)."""
    # Single-threaded: these are many small batches, where OpenMP start-up costs more than it
    # saves (and on a busy host, many times more); the service scores a record at a time anyway.
    with _threadpools().limit(limits=1, user_api="openmp"):
        return pipeline.decision_function(model.model_frame(frame, contract))


def explainer(pipeline: Pipeline, contract: Contract) -> Explainer:
    """Best attainable values and base score of a fitted additive pipeline (cached per pipeline)."""
    cached = _CACHE.get(pipeline)
    if cached is not None and cached[0] is contract:
        return cached[1]
    if _is_scorecard(pipeline):
        result = _scorecard_explainer(_scorer(pipeline), contract)
        _CACHE[pipeline] = (contract, result)
        return result
    check_additive(pipeline)
    features = contract.model_input_order()
    options = {f: candidates(pipeline, contract, f) for f in features}
    anchor = {f: vals[0] for f, vals in options.items()}
    best: dict[str, Any] = {}
    for f in features:
        # Additive: the argmin over feature f does not depend on the other features' values.
        grid = pd.DataFrame([{**anchor, f: v} for v in options[f]])
        scores = raw_score(pipeline, contract, grid)
        best[f] = options[f][int(np.argmin(scores))]
    base = float(raw_score(pipeline, contract, pd.DataFrame([best]))[0])
    catalogue = {c["feature"]: {"code": c["code"], "text": c["text"]} for c in contract.reason_catalogue()}
    result = Explainer(features=tuple(features), best=best, base_score=base, catalogue=catalogue)
    prove(pipeline, contract, result, options)
    _CACHE[pipeline] = (contract, result)
    return result


def _is_scorecard(fitted: Any) -> bool:
    # model.kind: scorecard (core/scorecard.py ScorecardModel): a points table, not a boosted pipeline.
    return hasattr(fitted, "scorecard")


def _scorecard_explainer(scorer: Any, contract: Contract) -> Explainer:
    """The reference of a scorecard's reason codes: each feature's best bin and the log-odds of the best points."""
    features = contract.model_input_order()
    if scorer.features != features:
        raise ValueError(
            f"the scorecard's features {scorer.features} are not the model inputs of {contract.path} ({features}): "
            "refit it (dvc repro benchmark train)"
        )
    s = scorer.card.scaling
    catalogue = {c["feature"]: {"code": c["code"], "text": c["text"]} for c in contract.reason_catalogue()}
    return Explainer(
        features=tuple(features),
        best=scorer.best_bins(),
        base_score=float((s.offset - scorer.best.sum()) / s.factor),
        catalogue=catalogue,
    )


def probe_frame(
    pipeline: Pipeline, contract: Contract, options: dict[str, list[Any]], n_random: int = 64, seed: int = 0
) -> pd.DataFrame:
    """Attainable records holding, for every feature, each value tried and others it was not derived from.

    Numeric features: the values tried, the proved tree walk's split thresholds and the value just
    above each (every piece of the step function), and ``n_random`` uniform draws within the
    contract's bounds (or the values' range); categorical ones: every category.
    """
    rng = np.random.default_rng(seed)
    walk = _scorer(pipeline).trees  # None when the walk did not prove itself: the random draws remain
    order = contract.model_input_order()
    values: dict[str, np.ndarray] = {}
    for feature, tried in options.items():
        col = contract[feature]
        if col.dtype == "category":
            values[feature] = np.asarray(tried, dtype=object)
            continue
        points = [np.asarray(tried, dtype=float)]
        if walk is not None:
            k = int(np.flatnonzero(walk.order == order.index(feature))[0])
            ts = walk.threshold[~walk.is_leaf & ~walk.node_categorical & (walk.feature == k)]
            points += [ts, np.nextafter(ts, np.inf)]
        seen = np.concatenate(points)
        lo = col.min if col.min is not None else float(seen.min())
        hi = col.max if col.max is not None else float(seen.max())
        points.append(rng.uniform(lo, hi, n_random))
        values[feature] = np.unique(np.clip(np.concatenate(points), lo, hi))
    n = max(len(v) for v in values.values())
    # Every value of every feature appears at least once, beside random values of the others.
    return pd.DataFrame({f: rng.permutation(np.resize(v, n)) for f, v in values.items()})


def prove(pipeline: Pipeline, contract: Contract, exp: Explainer, options: dict[str, list[Any]]) -> None:
    """Raise :class:`UnprovedError` unless the reason codes of probe rows agree with the model.

    On :func:`probe_frame`'s rows, base score plus contributions must give ``decision_function``
    (scikit-learn's public scoring), and no contribution may be negative: no attainable value
    scores better than the one called best.
    """
    if (running := version("scikit-learn")) not in PROVED_ON:
        log.warning("reason codes were proved on scikit-learn %s, this is %s: proving them here", PROVED_ON, running)
    unproved = (
        f"scikit-learn {running} (proved on {', '.join(PROVED_ON)}): no reason codes are given; "
        "use a proved scikit-learn (uv.lock) or fix core/reasons.py for this one"
    )
    rows = probe_frame(pipeline, contract, options)
    scorer = _scorer(pipeline)
    contrib = _contributions(scorer, exp, scorer.frame_matrix(model.model_frame(rows, contract)))
    error = np.abs(exp.base_score + contrib.sum(axis=1) - raw_score(pipeline, contract, rows))
    if not error.max() <= ADDITIVITY_TOLERANCE:
        i = int(np.nanargmax(error)) if not np.isnan(error).all() else 0
        raise UnprovedError(
            f"reason codes: on {len(rows)} probe rows, base score plus contributions differ from the model's "
            f"decision_function by up to {error[i]:.3g} (row {rows.iloc[i].to_dict()}); {unproved}"
        )
    i, j = np.unravel_index(int(np.argmin(contrib)), contrib.shape)
    if contrib[i, j] < -MIN_ADVERSE:
        feature = exp.features[j]
        raise UnprovedError(
            f"reason codes: {feature}={rows[feature].iloc[i]!r} scores {-contrib[i, j]:.3g} log-odds better than its "
            f"'best attainable' value {exp.best[feature]!r}, so the values tried for it missed a piece of the model; "
            f"{unproved}"
        )


def contributions(pipeline: Pipeline, contract: Contract, records: pd.DataFrame) -> pd.DataFrame:
    """Per record and feature, the rise in log-odds over the best attainable value (>= 0 means adverse)."""
    exp = explainer(pipeline, contract)
    features = list(exp.features)
    missing = [f for f in features if f not in records.columns]
    if missing:
        raise KeyError(f"records are missing feature column(s) {missing} declared in {contract.path}")
    if len(records) == 0:
        return pd.DataFrame(columns=features, dtype=float)
    scorer = _scorer(pipeline)
    x = scorer.frame_matrix(model.model_frame(records, contract))
    return pd.DataFrame(_contributions(scorer, exp, x), columns=features, index=records.index)


def reason_codes(
    pipeline: Pipeline, contract: Contract, records: pd.DataFrame, top_n: int = model.TOP_N
) -> list[list[dict[str, Any]]]:
    """For each record, up to ``top_n`` adverse reasons, most adverse first: code, feature, text, contribution."""
    return codes_from_contributions(contributions(pipeline, contract, records), explainer(pipeline, contract), top_n)


def record_contributions(scorer: Any, exp: Explainer, x: np.ndarray) -> pd.DataFrame:
    """:func:`contributions` for records encoded by ``scorer.matrix`` (the service's path; same numbers)."""
    return pd.DataFrame(_contributions(scorer, exp, x), columns=list(exp.features))


def _contributions(scorer: Any, exp: Explainer, x: np.ndarray) -> np.ndarray:
    """Contributions of the encoded records ``x`` (n x features, the scorer's column order).

    ``scorer``: a :class:`model.RecordScorer`, or a scorecard's points scorer (``model.record_scorer``).
    """
    if hasattr(scorer, "points_lost"):  # a scorecard's: points lost, in log-odds: (best - points) / factor
        return scorer.points_lost(x) / scorer.card.scaling.factor
    best = scorer.matrix([exp.best])[0]
    # Per feature, the best-value profile with that feature taken from the record: its score
    # depends on that one value, so each distinct value is scored once and shared by the rows
    # holding it (the same number to the bit: trees score every row on its own). On held-out
    # data that is several times fewer rows than one profile per record and feature; a category has a
    # handful of values, an amount at most one per row.
    blocks, inverses = [], []
    for feature in exp.features:
        j = scorer.index[feature]
        values, inverse = np.unique(x[:, j], return_inverse=True)  # NaN (missing) is one value
        block = np.tile(best, (len(values), 1))
        block[:, j] = values
        blocks.append(block)
        inverses.append(inverse.reshape(-1))
    with _threadpools().limit(limits=1, user_api="openmp"):
        raw = scorer.raw(np.vstack(blocks))
    out = np.empty((len(x), len(blocks)))
    start = 0
    for k, (block, inverse) in enumerate(zip(blocks, inverses, strict=True)):
        out[:, k] = raw[start : start + len(block)][inverse] - exp.base_score
        start += len(block)
    return out


_SCORERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _scorer(pipeline: Any) -> Any:
    if pipeline not in _SCORERS:
        _SCORERS[pipeline] = model.record_scorer(pipeline)
    return _SCORERS[pipeline]


def record_reason_codes(
    pipeline: Pipeline, contract: Contract, scorer: Any, x: np.ndarray, top_n: int = model.TOP_N
) -> list[list[dict[str, Any]]]:
    """:func:`reason_codes` for records encoded by ``scorer.matrix`` (the service's path; equal results)."""
    exp = explainer(pipeline, contract)
    return codes_from_contributions(record_contributions(scorer, exp, x), exp, top_n)


def codes_from_contributions(contrib: pd.DataFrame, exp: Explainer, top_n: int = model.TOP_N) -> list[list[dict[str, Any]]]:
    """Up to ``top_n`` adverse reasons per row of a contributions table, most adverse first."""
    values = contrib.to_numpy(dtype=float)
    features = list(contrib.columns)
    order, adverse = ranked(values, top_n)
    out = []
    for row, ranks, keep in zip(values, order, adverse, strict=True):
        out.append(
            [
                {
                    "code": exp.catalogue[features[j]]["code"],
                    "feature": features[j],
                    "text": exp.catalogue[features[j]]["text"],
                    "contribution": float(row[j]),
                }
                for j, k in zip(ranks, keep, strict=True)
                if k
            ]
        )
    return out


def ranked(values: np.ndarray, top_n: int = model.TOP_N) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a contributions matrix, the columns of its top ``top_n`` and which of them are adverse.

    The one ranking rule of reason codes: :func:`codes_from_contributions` builds records from it,
    and portfolio scoring (scoring/batch.py) builds Arrow columns from it without a dict per reason.
    """
    # Most adverse first; the stable sort keeps the contract's feature order among equal values.
    order = np.argsort(-values, axis=1, kind="stable")[:, :top_n]
    return order, np.take_along_axis(values, order, axis=1) > MIN_ADVERSE
