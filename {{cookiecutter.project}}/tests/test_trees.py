"""The numpy tree walk (core/trees.py) scores exactly as scikit-learn does, or is not used at all."""

from __future__ import annotations

import logging
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from {{ cookiecutter.package }}.core import model, trees

from .pipeline_run import pipeline_run
from .strategies import records

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _classifier(pipeline):
    return pipeline.steps[-1][1]


@pytest.fixture(scope="module")
def served():
    """The pipeline run's model (what the service loads) and its held-out rows."""
    run = pipeline_run()
    return model.load(run.path("models/model.skops")), pd.read_parquet(run.path("data/prepared/test.parquet"))


def test_held_out_rows_score_to_the_bit(served, contract):
    pipeline, test = served
    scorer = model.RecordScorer(pipeline)
    assert scorer.trees is not None, "the trees did not compile: the service would score through scikit-learn"
    x = scorer.frame_matrix(model.model_frame(test, contract))
    clf = _classifier(pipeline)
    np.testing.assert_array_equal(scorer.trees.decision_function(x), clf.decision_function(x))
    np.testing.assert_array_equal(scorer.trees.predict_proba(x), clf.predict_proba(x)[:, 1])


def test_every_threshold_category_unknown_code_and_missing_value_scores_to_the_bit(fitted):
    clf = _classifier(fitted)
    compiled = trees.CompiledTrees(clf)
    x = trees.probe_rows(compiled, n=3000, seed=11)
    assert np.isnan(x).any()
    np.testing.assert_array_equal(compiled.decision_function(x), clf.decision_function(x))


@FAST
@given(data=st.data())
def test_any_valid_records_score_as_scikit_learn_scores_them(fitted, contract, data):
    rows = data.draw(st.lists(records(contract, roles=("feature",)), min_size=1, max_size=40))
    scorer = model.RecordScorer(fitted)
    expected = fitted.predict_proba(model.model_frame(pd.DataFrame(rows), contract))[:, 1]
    np.testing.assert_array_equal(scorer.scores(rows), expected)


def test_small_and_large_batches_give_the_same_scores(served, contract):
    # Small batches walk the trees with numpy, large ones go through scikit-learn.
    pipeline, test = served
    scorer = model.RecordScorer(pipeline)
    rows = test[contract.features].head(3 * model.COMPILED_MAX_ROWS).astype(object).where(test.notna(), None)
    rows = rows.to_dict(orient="records")
    assert len(rows) > model.COMPILED_MAX_ROWS
    one_call = scorer.scores(rows)
    in_small_batches = np.concatenate([scorer.scores(rows[i : i + 7]) for i in range(0, len(rows), 7)])
    np.testing.assert_array_equal(one_call, in_small_batches)


def test_trees_that_disagree_with_scikit_learn_are_not_used(fitted, contract, monkeypatch, caplog):
    walk = trees.CompiledTrees.decision_function
    monkeypatch.setattr(trees.CompiledTrees, "decision_function", lambda self, x: np.nextafter(walk(self, x), np.inf))
    with caplog.at_level(logging.WARNING):
        assert trees.compile_trees(_classifier(fitted)) is None
    assert "disagree" in caplog.text
    scorer = model.RecordScorer(fitted)
    assert scorer.trees is None
    x = trees.probe_rows(trees.CompiledTrees(_classifier(fitted)), n=50)
    np.testing.assert_array_equal(scorer.raw(x), _classifier(fitted).decision_function(x))


def test_a_classifier_of_another_shape_is_left_to_scikit_learn(caplog):
    with caplog.at_level(logging.WARNING):
        assert trees.compile_trees(object()) is None
    assert "cannot compile" in caplog.text


def test_on_another_scikit_learn_version_the_walk_warns_and_is_still_proved(fitted, monkeypatch, caplog):
    monkeypatch.setattr(trees, "PROVED_ON", ("0.0",))
    with caplog.at_level(logging.WARNING):
        assert trees.compile_trees(_classifier(fitted)) is not None
    assert "the tree walk was proved on scikit-learn ('0.0',)" in caplog.text


def test_the_scikit_learn_versions_proved_on_include_the_locked_one():
    # When the lock moves, run these tests on the new version and add it to PROVED_ON.
    assert version("scikit-learn") in trees.PROVED_ON
