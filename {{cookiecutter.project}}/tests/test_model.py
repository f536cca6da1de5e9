"""The model: scores are probabilities, declared monotone directions hold, the signal is learnt,
and the skops model file round-trips and refuses anything off the allowlist."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from {{ cookiecutter.package }}.core import model

from .strategies import records

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# A feature with no learnt effect on a row leaves its sweep flat; measured: all 100 sweeps move
# the score (credit and fraud), so 70 leaves room while a model that ignores them fails.
SWEEP = settings(max_examples=100, deadline=None)
MIN_MOVED = 70


@FAST
@given(data=st.data())
def test_scores_are_probabilities_for_any_valid_record(fitted, contract, data):
    rows = data.draw(st.lists(records(contract, roles=("feature",)), min_size=1, max_size=20))
    score = model.scores(fitted, pd.DataFrame(rows), contract)
    assert score.shape == (len(rows),)
    assert np.all((score >= 0) & (score <= 1))


def test_declared_monotone_features_move_the_score_the_declared_way(fitted, contract):
    monotone = [c for c in contract.columns if c.role == "feature" and c.monotone != "none"]
    assert monotone, "the contract declares no monotone feature: nothing to check"
    moved = []  # examples where the score changed: a flat pair cannot break a direction

    @SWEEP
    @given(data=st.data())
    def check(data):
        col = data.draw(st.sampled_from(monotone))
        row = data.draw(records(contract, roles=("feature",)))
        lo_bound = col.min if col.min is not None else -1e6
        hi_bound = col.max if col.max is not None else 1e6
        drawn = data.draw(st.lists(st.floats(lo_bound, hi_bound, allow_nan=False), min_size=2, max_size=2))
        # the drawn values within a sweep of the whole range, so the score has room to move
        values = np.unique(np.concatenate([drawn, np.linspace(lo_bound, hi_bound, 25)]))
        if col.dtype == "int":
            values = np.unique(np.floor(values))
        frame = pd.DataFrame([{**row, col.name: v} for v in values])
        score = model.scores(fitted, frame, contract)
        sign = 1 if col.monotone == "increasing" else -1
        worst = (sign * np.diff(score)).min()
        assert worst >= -1e-12, f"{col.name} declared {col.monotone} but the score moves against it by {-worst:.3g}"
        if np.ptp(score) > 1e-12:
            moved.append(col.name)

    check()
    assert len(moved) >= MIN_MOVED, f"only {len(moved)} examples moved the score ({sorted(set(moved))}): the check barely ran"


def test_working_model_learns_the_signal_and_a_broken_one_does_not(prepared, contract, params, fitted):
    train, test, _ = prepared
    y_test = model.target_vector(test, contract)
    good = roc_auc_score(y_test, model.scores(fitted, test, contract))
    # Monotone constraints alone carry prior knowledge of direction, so the broken model is
    # unconstrained: what it learns from shuffled labels is noise.
    shuffled = model.build_pipeline(contract, params.replace(model={"monotone": False}))
    y_shuffled = np.random.default_rng(0).permutation(model.target_vector(train, contract))
    shuffled.fit(model.model_frame(train, contract), y_shuffled)
    broken = roc_auc_score(y_test, model.scores(shuffled, test, contract))
    assert good >= 0.75, f"working model ROC-AUC {good:.3f}"
    assert broken < 0.65, f"model trained on shuffled labels reached ROC-AUC {broken:.3f}"


def test_training_is_deterministic(prepared, contract, params, fitted):
    train, test, _ = prepared
    again = model.build_pipeline(contract, params)
    again.fit(model.model_frame(train, contract), model.target_vector(train, contract))
    np.testing.assert_array_equal(model.scores(again, test, contract), model.scores(fitted, test, contract))


def test_protected_and_pii_columns_are_never_model_inputs(contract, fitted):
    used = set(fitted.named_steps["features"].get_feature_names_out())
    assert used == set(contract.features)
    assert used.isdisjoint(contract.protected + contract.pii)


def test_skops_round_trip_gives_identical_scores(tmp_path, fitted, prepared, contract):
    _, test, _ = prepared
    path = tmp_path / "model.skops"
    model.save(fitted, path)
    loaded = model.load(path)
    np.testing.assert_array_equal(model.scores(loaded, test, contract), model.scores(fitted, test, contract))


def _not_allowed(x):
    return x


def test_model_file_with_untrusted_types_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    sio.dump(FunctionTransformer(func=_not_allowed), path)
    with pytest.raises(model.UntrustedModelError, match="not on the allowlist"):
        model.load(path)


def test_missing_feature_is_named(contract, fitted):
    with pytest.raises(KeyError, match=contract.features[0]):
        model.model_frame(pd.DataFrame({"unrelated": [1]}), contract)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("learning_rate", "fast", "'model.learning_rate' must be int/float"),
        ("learning_rate", 0, "'model.learning_rate' must be greater than 0"),
        ("max_leaf_nodes", 1, "'model.max_leaf_nodes' must be at least 2"),
        ("max_iter", 2.5, "'model.max_iter' must be int"),
        ("interaction_cst", "pairs", "'model.interaction_cst' must be no_interactions or null"),
    ],
)
def test_bad_model_params_are_named(contract, params, key, value, message):
    from {{ cookiecutter.package }}.core.errors import ParamsError

    with pytest.raises(ParamsError, match=message.replace("(", r"\(")):
        model.build_pipeline(contract, params.replace(model={key: value}))
