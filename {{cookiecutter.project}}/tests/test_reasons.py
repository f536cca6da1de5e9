"""Reason codes and monotone directions, on the model the real pipeline trained.

On the additive model (the pipeline's where it explains by reason codes, else the same pipeline
fitted additive): contributions plus the base score give back the model's log-odds; each
contribution is measured from the best attainable value; the top four adverse features come back
as the contract's codes and texts. On the pipeline's model: sweeping a constrained feature over
its range never moves the score against the declared direction.
"""

from __future__ import annotations

import logging
import re
import weakref
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from {{ cookiecutter.package }}.core import model, reasons, trees
from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.use_case import Explanations

from .pipeline_run import ROOT, pipeline_run
from .strategies import records

CONTRACT = load_contract(ROOT / "contract.yaml")
PARAMS = load_params(ROOT / "params.yaml")
VAGUE = re.compile(r"\b(other|others|misc\w*|various|unknown|insufficient|general|score|n/?a)\b", re.IGNORECASE)


@pytest.fixture(scope="module", autouse=True)
def single_threaded():
    """Thousands of small predictions: OpenMP threads only add overhead (and thrash a busy runner)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def trained():
    """The model the real pipeline trained, as params.yaml configures it."""
    return model.load(pipeline_run().path("models/model.skops"))


@pytest.fixture(scope="module")
def fitted(trained):
    """An additive boosted model to take reason codes from: the pipeline's, or (where it explains by feature
    contributions and so has interactions, or is the scorecard: test_scorecard_model.py) the same pipeline
    fitted with ``model.explanations: reason_codes``."""
    if PARAMS.model.kind == "gbm" and PARAMS.model.explanations is Explanations.REASON_CODES:
        return trained
    additive = PARAMS.replace(model={"kind": "gbm", "explanations": "reason_codes", "interaction_cst": "no_interactions"})
    train = pd.read_parquet(pipeline_run().path("data/prepared/train.parquet"))
    pipeline = model.build_pipeline(CONTRACT, additive)
    pipeline.fit(model.model_frame(train, CONTRACT), model.target_vector(train, CONTRACT))
    return pipeline


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    return pd.read_parquet(pipeline_run().path("data/prepared/test.parquet"))


def test_every_model_input_has_exactly_one_specific_code():
    catalogue = CONTRACT.reason_catalogue()
    features = [c["feature"] for c in catalogue]
    codes = [c["code"] for c in catalogue]
    texts = [c["text"] for c in catalogue]
    assert sorted(features) == sorted(CONTRACT.model_input_order())
    assert len(set(features)) == len(features)
    assert len(set(codes)) == len(codes)
    assert len(set(texts)) == len(texts)
    for c in catalogue:
        assert re.fullmatch(r"[A-Z]{2,4}\d{2}", c["code"]), c
        assert len(c["text"].split()) >= 4, c
        assert c["text"].endswith("."), c
        assert not VAGUE.search(c["text"]), f"vague consumer text for {c['feature']}: {c['text']!r}"


def test_contributions_plus_base_score_reproduce_the_log_odds(fitted, held_out):
    exp = reasons.explainer(fitted, CONTRACT)
    contrib = reasons.contributions(fitted, CONTRACT, held_out)
    raw = fitted.decision_function(model.model_frame(held_out, CONTRACT))
    error = np.abs(exp.base_score + contrib.to_numpy().sum(axis=1) - raw)
    assert error.max() < 1e-6
    # ... and the log-odds are the model's probabilities.
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), model.scores(fitted, held_out, CONTRACT), atol=1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_valid_record_decomposes_exactly_and_its_reasons_are_adverse(fitted, data):
    """Property: for records anywhere in the contract's domain (missing values included), the
    contributions add up to the log-odds and no reason is given for a non-adverse feature."""
    frame = pd.DataFrame(data.draw(st.lists(records(CONTRACT, roles=("feature",)), min_size=1, max_size=10)))
    exp = reasons.explainer(fitted, CONTRACT)
    contrib = reasons.contributions(fitted, CONTRACT, frame)
    raw = fitted.decision_function(model.model_frame(frame, CONTRACT))
    assert np.abs(exp.base_score + contrib.to_numpy().sum(axis=1) - raw).max() < 1e-6
    present = frame[list(exp.features)].notna().to_numpy()
    assert (contrib.to_numpy()[present] >= -1e-12).all()  # best attainable: nothing in bounds beats it
    for (_, c), codes in zip(contrib.iterrows(), reasons.codes_from_contributions(contrib, exp), strict=True):
        assert all(c[r["feature"]] > reasons.MIN_ADVERSE for r in codes)


def test_contributions_of_a_batch_equal_each_records_own(fitted, held_out):
    # A batch's distinct values are scored once and shared by the rows that hold them; a row's
    # contributions must still be exactly the ones it gets alone (repeats, categories, missing).
    rows = pd.concat([held_out.head(60), held_out.head(20)], ignore_index=True)
    together = reasons.contributions(fitted, CONTRACT, rows).to_numpy()
    alone = np.vstack([reasons.contributions(fitted, CONTRACT, rows.iloc[[i]]).to_numpy() for i in range(len(rows))])
    assert rows[CONTRACT.model_input_order()].isna().any().any()
    np.testing.assert_array_equal(together, alone)


def test_contributions_are_measured_from_the_best_attainable_value(fitted, held_out):
    exp = reasons.explainer(fitted, CONTRACT)
    assert (reasons.contributions(fitted, CONTRACT, pd.DataFrame([exp.best])).to_numpy() == 0).all()
    for feature in CONTRACT.model_input_order():
        col = CONTRACT[feature]
        if col.dtype == "category":
            values = list(col.categories)
        else:
            values = list(np.linspace(col.min, col.max, 41)) + list(held_out[feature].dropna().quantile(np.linspace(0, 1, 41)))
        rows = pd.DataFrame([{**exp.best, feature: v} for v in values])
        # No attainable value of any feature scores better than its best value.
        assert reasons.contributions(fitted, CONTRACT, rows)[feature].min() >= -1e-12, feature
    assert exp.best.keys() == set(CONTRACT.model_input_order())


def test_top_four_adverse_reasons_come_ordered_with_the_contracts_codes_and_text(fitted, held_out):
    catalogue = {c["feature"]: c for c in CONTRACT.reason_catalogue()}
    rows = held_out.head(300)
    contrib = reasons.contributions(fitted, CONTRACT, rows)
    for (_, c), codes in zip(contrib.iterrows(), reasons.reason_codes(fitted, CONTRACT, rows), strict=True):
        assert len(codes) == min(model.TOP_N, int((c > reasons.MIN_ADVERSE).sum()))
        assert [r["feature"] for r in codes] == list(c.sort_values(ascending=False, kind="stable").index[: len(codes)])
        for r in codes:
            assert r["code"] == catalogue[r["feature"]]["code"]
            assert r["text"] == catalogue[r["feature"]]["text"]
            assert r["contribution"] == pytest.approx(c[r["feature"]])


def test_worsening_one_feature_makes_it_the_first_reason(fitted):
    exp = reasons.explainer(fitted, CONTRACT)
    assert reasons.reason_codes(fitted, CONTRACT, pd.DataFrame([exp.best])) == [[]]
    monotone = [c for c in CONTRACT.columns if c.role == "feature" and c.monotone != "none"]
    checked = []
    for col in monotone:
        feature = col.name
        worst = col.max if col.monotone == "increasing" else col.min
        (codes,) = reasons.reason_codes(fitted, CONTRACT, pd.DataFrame([{**exp.best, feature: worst}]))
        contribution = reasons.contributions(fitted, CONTRACT, pd.DataFrame([{**exp.best, feature: worst}]))[feature].iloc[0]
        if contribution > reasons.MIN_ADVERSE:  # the model may have learnt no effect for a feature
            assert [r["code"] for r in codes] == [col.reason_code]
            checked.append(feature)
    # a weak feature may have no learnt effect, but most of the declared ones carry the signal
    assert len(checked) >= max(1, len(monotone) // 2), f"only {checked} of {[c.name for c in monotone]} had an adverse effect"


def test_a_model_with_interactions_is_refused():
    train = pd.read_parquet(pipeline_run().path("data/prepared/train.parquet"))
    # Built past params' own refusal (model.explanations: reason_codes needs no_interactions), as a hand-made model would be.
    pipeline = model.build_pipeline(CONTRACT, PARAMS.replace(model={"max_iter": 5}))
    pipeline[-1].set_params(interaction_cst=None)
    pipeline.fit(model.model_frame(train, CONTRACT), model.target_vector(train, CONTRACT))
    with pytest.raises(reasons.NotAdditiveError, match="interaction_cst"):
        reasons.reason_codes(pipeline, CONTRACT, train.head(2))


def test_sweeping_each_constrained_feature_never_violates_its_direction(trained, held_out):
    constrained = [c for c in CONTRACT.columns if c.role == "feature" and c.monotone != "none"]
    assert constrained or not any(c.monotone != "none" for c in CONTRACT.columns)
    rows = held_out.sample(n=min(150, len(held_out)), random_state=0).reset_index(drop=True)
    moved = 0.0
    for col in constrained:
        observed = held_out[col.name].dropna()
        grid = np.unique(np.concatenate([np.linspace(col.min, col.max, 60), observed.quantile(np.linspace(0, 1, 60)).to_numpy()]))
        swept = rows.loc[rows.index.repeat(len(grid))].reset_index(drop=True)
        swept[col.name] = np.tile(grid, len(rows))
        score = model.scores(trained, swept, CONTRACT).reshape(len(rows), len(grid))
        steps = np.diff(score, axis=1)
        sign = 1 if col.monotone == "increasing" else -1
        worst = (sign * steps).min()
        assert worst >= -1e-12, f"{col.name} is declared {col.monotone} but the score moves against it by {-worst:.3g}"
        moved = max(moved, float(np.abs(steps).max()))
    assert not constrained or moved > 0, "no sweep moved the score: the check would pass on a constant model"


def test_explains_vectorised_principal_reason_is_the_first_reason_code(fitted, held_out):
    """explain counts principal reasons with one argmax; it must name what reason_codes puts first."""
    from {{ cookiecutter.package }}.evaluation import explain

    exp = reasons.explainer(fitted, CONTRACT)
    contrib = reasons.contributions(fitted, CONTRACT, held_out)
    # Edge rows: nothing adverse, and a tie between two features (the first column wins).
    edge = contrib.iloc[:2].copy()
    edge.iloc[0] = 0.0
    edge.iloc[1] = 0.0
    edge.iloc[1, [1, 3]] = 0.5
    table = pd.concat([contrib, edge], ignore_index=True)
    expected = [c[0]["code"] for c in reasons.codes_from_contributions(table, exp) if c]
    assert explain.principal_reasons(table, exp).tolist() == expected
    assert expected[-1] == exp.catalogue[table.columns[1]]["code"]


# --- the classifier's bin thresholds (scikit-learn internals) are proved when an explainer is built
def test_the_values_tried_cover_every_split_of_the_trees(fitted):
    """Each numeric feature's values tried include every threshold its trees split at (within the contract)."""
    walk = trees.compile_trees(reasons.classifier(fitted))
    assert walk is not None
    order = CONTRACT.model_input_order()
    checked = 0
    for k, column in enumerate(walk.order):
        col = CONTRACT[order[column]]
        if col.dtype == "category":
            continue
        splits = walk.threshold[~walk.is_leaf & ~walk.node_categorical & (walk.feature == k)]
        lo, hi = (-np.inf if col.min is None else col.min), (np.inf if col.max is None else col.max)
        inside = splits[(splits >= lo) & (splits <= hi)]
        assert set(inside) <= set(reasons.candidates(fitted, CONTRACT, col.name)), col.name
        checked += len(inside)
    assert checked > 0, "no split on a numeric feature: nothing was checked"


def test_an_explainer_whose_values_tried_miss_the_best_piece_is_refused(fitted, monkeypatch):
    tried = reasons.candidates
    monkeypatch.setattr(reasons, "candidates", lambda pipeline, contract, feature: tried(pipeline, contract, feature)[:1])
    monkeypatch.setattr(reasons, "_CACHE", weakref.WeakKeyDictionary())
    with pytest.raises(reasons.UnprovedError, match="so the values tried for it missed a piece of the model"):
        reasons.explainer(fitted, CONTRACT)
    assert fitted not in reasons._CACHE  # no explainer: no reason codes rather than wrong ones


def test_a_model_that_is_not_additive_fails_the_proof_even_past_the_settings_check(monkeypatch):
    # model_copy skips validation: this model is one the settings check would refuse.
    params = PARAMS.model_copy(update={"model": PARAMS.model.model_copy(update={"interaction_cst": None, "max_iter": 20})})
    train = pd.read_parquet(pipeline_run().path("data/prepared/train.parquet"))
    pipeline = model.build_pipeline(CONTRACT, params)
    pipeline.fit(model.model_frame(train, CONTRACT), model.target_vector(train, CONTRACT))
    monkeypatch.setattr(reasons, "check_additive", lambda pipeline: None)
    with pytest.raises(reasons.UnprovedError, match="base score plus contributions differ from the model's decision_function"):
        reasons.explainer(pipeline, CONTRACT)


def test_on_another_scikit_learn_version_the_explainer_warns_and_is_still_proved(fitted, monkeypatch, caplog):
    proofs = []
    prove = reasons.prove
    monkeypatch.setattr(reasons, "prove", lambda *args: proofs.append(prove(*args)))
    monkeypatch.setattr(reasons, "PROVED_ON", ("0.0",))
    monkeypatch.setattr(reasons, "_CACHE", weakref.WeakKeyDictionary())
    with caplog.at_level(logging.WARNING, logger=reasons.__name__):
        reasons.explainer(fitted, CONTRACT)
    assert "reason codes were proved on scikit-learn ('0.0',)" in caplog.text
    assert len(proofs) == 1


def test_the_scikit_learn_versions_proved_on_include_the_locked_one():
    # When the lock moves, run these tests on the new version and add it to PROVED_ON.
    assert version("scikit-learn") in reasons.PROVED_ON
