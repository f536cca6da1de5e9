"""Stage ``benchmark``: fit the benchmark the model must beat, on the same training split.
{% if cookiecutter.use_case == "credit_scoring" %}
Credit: the validator's classic, a WoE-binned logistic scorecard. optbinning bins each feature
(monotone in the direction contract.yaml declares), a logistic regression is fitted on the bins'
weights of evidence, and the result is written as a points table (``models/scorecard.json``,
core/scorecard.py) scaled by points-to-double-the-odds (``benchmark.pdo``, ``base_points``,
``base_odds`` in params.yaml).
{%- else %}
Fraud: a class-weighted logistic regression (median-imputed, standardised numeric features with
missing-value indicators, one-hot categories), written with skops (``models/benchmark.skops``).
{%- endif %}

A stage of its own, not part of ``train``: a change of the model's hyperparameters does not
refit the benchmark, so ``dvc repro`` stays incremental.
{%- if cookiecutter.use_case == "credit_scoring" %} With ``model.kind: scorecard`` this scorecard
is the model (``train`` takes it as it is), so ``train`` depends on ``models/scorecard.json``.
{%- else %} A change of the benchmark does not refit the model.
{%- endif %}
It is fitted on a seeded sample of at most ``benchmark.max_rows`` training rows: binning cost
grows with rows while a benchmark's ranking stops improving long before a million.
The comparison on the held-out set is the ``evaluate`` stage's (evaluation/benchmark.py).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..core import config, model
from ..core.contract import Contract, load_contract
from ..core.params import Params, load_params
from ..core.stage import LOGGER, entry_point
from .train import require_validation

log = logging.getLogger(LOGGER)


def sample(train: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` training rows, drawn with ``seed`` (all of them, in order, when fewer)."""
    if max_rows is None or len(train) <= max_rows:
        return train
    keep = np.sort(np.random.default_rng(seed).choice(len(train), max_rows, replace=False))
    return train.iloc[keep]
{%- if cookiecutter.use_case == "credit_scoring" %}


# optbinning's monotone trend of the event (default) rate for each direction contract.yaml declares.
TRENDS = {"increasing": "ascending", "decreasing": "descending"}
# Largest disagreement tolerated between the points table and the regression it was read from.
EXPORT_TOLERANCE = 1e-9


def fit_scorecard(train: pd.DataFrame, contract: Contract, params: Params):
    """The scorecard fitted on ``train``, as a :class:`~..core.scorecard.Scorecard`."""
    from optbinning import BinningProcess
    from sklearn.linear_model import LogisticRegression

    from ..core.scorecard import FeaturePoints, Scaling, Scorecard

    X = _binning_frame(model.model_frame(train, contract), contract)
    y = model.target_vector(train, contract)
    names = contract.model_input_order()
    categorical = contract.categorical_features
    fit_params = {n: {"monotonic_trend": TRENDS[contract[n].monotone]} for n in names if contract[n].monotone in TRENDS}
    binning = BinningProcess(names, categorical_variables=categorical, binning_fit_params=fit_params)
    binning.fit(X, y)
    # A missing value gets its own bin's WoE (optbinning's default would be 0, "no evidence").
    woe = binning.transform(X, metric="woe", metric_missing="empirical")
    regression = LogisticRegression(max_iter=1000).fit(woe.to_numpy(), y)
    # Points from the fitted regression exactly, whatever sign convention the WoE has:
    # logit = a + sum_j b_j woe_j, score = offset - factor * logit, shared out as
    # points_jb = -factor * b_j * woe_jb + (offset - factor * a) / n_features.
    scaling = Scaling(
        pdo=float(params.benchmark.pdo),
        base_points=float(params.benchmark.base_points),
        base_odds=float(params.benchmark.base_odds),
    )
    share = (scaling.offset - scaling.factor * float(regression.intercept_[0])) / len(names)
    features = []
    for name, coef in zip(names, regression.coef_[0], strict=True):
        optb = binning.get_binned_variable(name)
        table = optb.binning_table.build()
        n_bins = len(optb.splits) + 1 if name not in categorical else len(optb.splits)
        bin_woe = [float(w) for w in table["WoE"].iloc[:n_bins]]
        # After the bins come "Special" and "Missing" (categorical bins hold arrays, so match by type).
        after = table.iloc[n_bins:]
        missing_row = next(i for i, label in enumerate(after["Bin"]) if isinstance(label, str) and label == "Missing")
        missing_woe = float(after["WoE"].iloc[missing_row])

        def points(w: float, coef: float = float(coef)) -> float:
            return -scaling.factor * coef * w + share

        kind = "categorical" if name in categorical else "numeric"
        features.append(
            FeaturePoints(
                name=name,
                kind=kind,
                splits=[float(s) for s in optb.splits] if kind == "numeric" else [],
                groups=[[str(c) for c in group] for group in optb.splits] if kind == "categorical" else [],
                woe=bin_woe,
                points=[points(w) for w in bin_woe],
                missing_points=points(missing_woe),
                other_points=points(0.0),  # optbinning's WoE for a category it never saw
            )
        )
    card = Scorecard(scaling=scaling, features=features)
    # The points table must give the regression's probabilities: checked on the rows it was fitted on.
    gap = float(np.max(np.abs(card.scores(X) - regression.predict_proba(woe.to_numpy())[:, 1])))
    if gap > EXPORT_TOLERANCE:
        raise RuntimeError(f"scorecard export disagrees with its regression by {gap:.2e} (> {EXPORT_TOLERANCE:g})")
    return card


def _binning_frame(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    # optbinning wants categories as plain objects (strings), missing as NaN.
    out = frame.copy()
    for name in contract.categorical_features:
        out[name] = out[name].astype(object).map(lambda v: np.nan if pd.isna(v) else str(v))
    return out


def fit_and_save(train: pd.DataFrame, contract: Contract, params: Params) -> None:
    """Fit the scorecard and write ``models/scorecard.json``."""
    card = fit_scorecard(train, contract, params)
    card.write(config.BENCHMARK)
    bins = sum(len(f.points) for f in card.features)
    log.info("benchmark: scorecard with %d bins over %d features -> %s", bins, len(card.features), config.BENCHMARK)
{%- else %}


def build_logistic(contract: Contract, seed: int):
    """The unfitted class-weighted logistic regression with the preprocessing it needs."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = contract.categorical_features
    features = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
                contract.numeric_features,
            ),
            (
                "categorical",
                OneHotEncoder(categories=[contract.categories(c) for c in categorical], handle_unknown="ignore"),
                categorical,
            ),
        ]
    )
    classifier = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=seed)
    return Pipeline([("features", features), ("classifier", classifier)])


def fit_and_save(train: pd.DataFrame, contract: Contract, params: Params) -> None:
    """Fit the logistic regression and write ``models/benchmark.skops``."""
    pipeline = build_logistic(contract, params.seed)
    pipeline.fit(model.model_frame(train, contract), model.target_vector(train, contract))
    model.save(pipeline, config.BENCHMARK)
    log.info("benchmark: class-weighted logistic regression -> %s", config.BENCHMARK)
{%- endif %}


def main() -> int:
    """Fit the benchmark on (a sample of) the validated training split and write it to ``models/``."""
    params = load_params()
    contract = load_contract(params.data.contract)
    require_validation()
    train = pd.read_parquet(config.TRAIN)
    rows = sample(train, params.benchmark.max_rows, params.seed)
    fit_and_save(rows, contract, params)
    log.info("benchmark fitted on %d of %d training rows", len(rows), len(train))
    return 0


if __name__ == "__main__":
    entry_point(main)
