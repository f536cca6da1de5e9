"""Hyperparameters chosen by cross-validation on the training split (params.yaml ``model.search``).

Only the training split comes in: the held-out test set is never read here, so it cannot take
part in the choice. Each candidate of the grid is fitted once per fold with ``model.max_iter``
trees; the validation fold's log-loss after every tree is read from the staged predictions, so
early stopping chooses the number of trees without a fit per tree count. The candidate and tree
count with the lowest mean validation log-loss win (log-loss: the loss the model is fitted on,
weighted alike when ``class_weight`` is balanced; it ranks more steadily on small folds than a
ranking metric does). Everything is seeded: the same data and params give the same choice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.model_selection import ParameterGrid, StratifiedKFold, train_test_split
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from ..core import model, use_case
from ..core.contract import Contract
from ..core.errors import DataError
from ..core.params import Params
from ..core.reports import CandidateScore, SearchRecord
from ..core.stage import LOGGER

log = logging.getLogger(LOGGER)

# The HistGradientBoosting settings a search may choose (the grid's keys) or report as in effect.
HYPERPARAMETERS = ("learning_rate", "max_iter", "max_leaf_nodes", "min_samples_leaf", "l2_regularization")


class SearchError(DataError):
    """The training split cannot be cross-validated as params.yaml asks."""


@dataclass(frozen=True)
class Tuned:
    """The params to train with (the chosen hyperparameters in ``model``) and how they were chosen."""

    params: Params
    record: SearchRecord


def in_effect(params: Params) -> dict[str, float | int]:
    """The hyperparameters ``params`` trains with."""
    return {k: getattr(params.model, k) for k in HYPERPARAMETERS}


def choose(contract: Contract, params: Params, train: pd.DataFrame) -> Tuned:
    """The hyperparameters to train on ``train`` with: searched when ``model.search.enabled``, else as written."""
    search = params.model.search
    if not search.enabled:
        return Tuned(params, SearchRecord(method="fixed", hyperparameters=in_effect(params)))
    started = time.perf_counter()
    X, y = model.model_frame(train, contract), model.target_vector(train, contract)
    rows = sample(y, search.sample_rows, params.seed)
    X, y = X.iloc[rows], y[rows]
    folds = _folds(y, search.cv_folds, params.seed)
    grid = list(ParameterGrid(search.grid.candidates()))
    scored: list[CandidateScore] = []
    # One OpenMP thread: the search's small fits and per-tree staged predictions open thousands of short
    # parallel regions, which cost more than they save (measured on 2 busy cores: 22 s with one thread,
    # 458 s with two, at 16,000 rows) and leave the result unchanged.
    with threadpool_limits(limits=1, user_api="openmp"):
        for i, values in enumerate(grid):
            if i and time.perf_counter() - started > search.time_budget_s:
                log.warning(
                    "model.search: the time budget of %g s was spent after %d of %d candidates; the rest were not "
                    "tried (raise model.search.time_budget_s or lower model.search.sample_rows)",
                    search.time_budget_s, i, len(grid),
                )  # fmt: skip
                break
            scored.append(_cross_validate(contract, params.replace(model=values), X, y, folds))
    best = min(scored, key=lambda c: c.cv_log_loss)  # ties: the earlier candidate in grid order
    chosen = params.replace(model={**best.values, "max_iter": best.trees})
    record = SearchRecord(
        method="cross_validation",
        hyperparameters=in_effect(chosen),
        cv_folds=search.cv_folds,
        rows=len(y),
        train_rows=len(train),
        metric=use_case.load().headline_metric,
        cv_log_loss=best.cv_log_loss,
        cv_score=best.cv_score,
        grid_size=len(grid),
        candidates=scored,
        complete=len(scored) == len(grid),
        time_budget_s=search.time_budget_s,
    )
    log.info(
        "model.search: %s from %d of %d candidates on %d rows in %.1f s (CV log-loss %.4f, CV %s %.4f)",
        record.hyperparameters, len(scored), len(grid), len(y), time.perf_counter() - started,
        best.cv_log_loss, record.metric, best.cv_score,
    )  # fmt: skip
    return Tuned(chosen, record)


def sample(y: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Row positions of a seeded sample of at most ``max_rows``, stratified by ``y``, in their original order."""
    if len(y) <= max_rows:
        return np.arange(len(y))
    rows, _ = train_test_split(np.arange(len(y)), train_size=max_rows, stratify=y, random_state=seed)
    return np.sort(rows)


def _folds(y: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    fewest = int(min(y.sum(), len(y) - y.sum()))
    if fewest < n_folds:
        raise SearchError(
            f"params.yaml: model.search.cv_folds is {n_folds} but the training rows searched hold only {fewest} of one "
            "class; lower cv_folds, raise model.search.sample_rows, or set model.search.enabled: false"
        )
    return list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _cross_validate(contract: Contract, params: Params, X: pd.DataFrame, y: np.ndarray, folds) -> CandidateScore:
    """One candidate: mean validation log-loss after each tree over the folds, and the best tree count's scores."""
    fitted, losses = [], []
    for fit_rows, val_rows in folds:
        pipeline = model.build_pipeline(contract, params)
        pipeline.fit(X.iloc[fit_rows], y[fit_rows])
        x_val = pipeline[:-1].transform(X.iloc[val_rows])
        y_val = y[val_rows]
        weight = compute_sample_weight(params.model.class_weight, y_val)
        staged = pipeline[-1].staged_decision_function(x_val)
        losses.append([_log_loss(y_val, raw, weight) for raw in staged])
        fitted.append((pipeline[-1], x_val, y_val))
    curve = np.mean(losses, axis=0)
    trees = int(np.argmin(curve)) + 1  # ties: the fewest trees
    facts = use_case.load()
    scores = [facts.headline_score(y_val, expit(_raw_after(clf, x_val, trees))) for clf, x_val, y_val in fitted]
    return CandidateScore(
        values=_values(params), trees=trees, cv_log_loss=float(curve[trees - 1]), cv_score=float(np.mean(scores))
    )


def _values(params: Params) -> dict[str, Any]:
    return {k: getattr(params.model, k) for k in params.model.search.grid.candidates()}


def _log_loss(y: np.ndarray, raw: np.ndarray, weight: np.ndarray) -> float:
    # Binary log-loss from log-odds, stable for any raw value: log(1 + e^raw) - y * raw.
    return float(np.average(np.logaddexp(0.0, raw) - y * raw, weights=weight))


def _raw_after(classifier, x: np.ndarray, trees: int) -> np.ndarray:
    for i, raw in enumerate(classifier.staged_decision_function(x), start=1):
        if i == trees:
            return raw
    raise ValueError(f"the classifier has fewer than {trees} trees")
