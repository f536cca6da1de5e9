"""Hyperparameter search: on the training split only, seeded, reproducible, within its budget, as params say."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from {{ cookiecutter.package }}.core import config, model
from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.errors import ParamsError
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.reports import ModelMeta
from {{ cookiecutter.package }}.training import train, tuning

from .pipeline_run import pipeline_run


def search(params, **changes):
    """``params`` with some ``model.search`` settings changed."""
    return params.replace(model={"search": {**params.as_dict()["model"]["search"], **changes}})


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """The train stage run again on the session pipeline's data with the test split's labels permuted."""
    run = pipeline_run()
    work = tmp_path_factory.mktemp("permuted")
    for name in ("params.yaml", "contract.yaml", config.TRAIN, config.VALIDATION):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.path(str(name)), work / name)
    params, target = load_params(work / "params.yaml"), load_contract(work / "contract.yaml").target
    test = pd.read_parquet(run.path(str(config.TEST)))
    permuted = test.assign(**{target: np.random.default_rng(params.seed + 1).permutation(test[target].to_numpy())})
    assert (permuted[target] != test[target]).any(), "the permutation must change some labels"
    permuted.to_parquet(work / config.TEST, index=False)
    return run, work


def test_the_held_out_labels_do_not_change_the_chosen_hyperparameters_or_the_model(retrained, monkeypatch):
    """The same search scores and the same model, to the bit, whatever the test split's labels say."""
    run, work = retrained
    monkeypatch.chdir(work)
    # MLflow is not under test here: the run is logged by the session's pipeline run.
    monkeypatch.setattr(train, "log_run", lambda *args: ("0" * 32, {}))
{%- if cookiecutter.compute == "spark" %}
    monkeypatch.setattr(train.spark_sample, "log_sample", lambda *args: None)  # it records the sample on that run
{%- endif %}
    with threadpool_limits(limits=1, user_api="openmp"):  # as the session's run had it (small data, busy runners)
        assert train.main() == 0
    again = ModelMeta.read(work / config.MODEL_META)
    first = ModelMeta.read(run.path(str(config.MODEL_META)))
    assert first.search.method == "cross_validation" and first.search.candidates
    assert again.search == first.search
    assert again.threshold == first.threshold
    test = pd.read_parquet(run.path(str(config.TEST)))
    contract = load_contract(work / "contract.yaml")
    ours, theirs = model.load(work / config.MODEL), model.load(run.path(str(config.MODEL)))
    assert np.array_equal(model.scores(ours, test, contract), model.scores(theirs, test, contract))
    # The chosen model keeps what the contract and params fix: monotone directions, interactions, class weights.
    params = load_params(work / "params.yaml")
    classifier = ours[-1]
    assert classifier.max_iter == first.search.hyperparameters["max_iter"]
    assert list(classifier.monotonic_cst) == list(contract.monotonic_cst())
    assert classifier.interaction_cst == params.model.interaction_cst
    assert classifier.class_weight == params.model.class_weight


def test_the_model_card_says_how_the_hyperparameters_were_chosen():
    run = pipeline_run()
    meta = ModelMeta.read(run.path(str(config.MODEL_META)))
    line = next(x for x in run.path(str(config.MODEL_CARD_MD)).read_text().splitlines() if x.startswith("- **Hyperparameters:**"))
    assert f"`max_iter` {meta.search.hyperparameters['max_iter']}" in line
    assert f"{meta.search.cv_folds}-fold stratified cross-validation on {meta.search.rows} rows" in line
    assert "never the test set" in line


def test_the_search_is_seeded_and_reproducible(contract, params, prepared):
    train_split = prepared[0]
    small = search(params, sample_rows=1500, grid={"min_samples_leaf": [20, 50]})
    one, two = tuning.choose(contract, small, train_split), tuning.choose(contract, small, train_split)
    assert one.record == two.record and one.params == two.params
    assert one.record.rows == 1500 < one.record.train_rows == len(train_split)
    assert len(one.record.candidates) == one.record.grid_size and one.record.complete
    other = tuning.choose(contract, small.replace(seed=small.seed + 1), train_split)
    # Another seed draws another sample and other folds: the scores move, so the seed is what fixes them.
    assert other.record.cv_log_loss != one.record.cv_log_loss


def test_the_sample_is_stratified_and_seeded():
    y = np.r_[np.ones(100, dtype=int), np.zeros(900, dtype=int)]
    rows = tuning.sample(y, 200, seed=3)
    assert len(rows) == 200 and y[rows].sum() == 20 and (np.diff(rows) > 0).all()
    assert np.array_equal(rows, tuning.sample(y, 200, seed=3)) and not np.array_equal(rows, tuning.sample(y, 200, seed=4))
    assert np.array_equal(tuning.sample(y, 5000, seed=3), np.arange(1000))


def test_search_off_trains_the_hyperparameters_as_written(contract, params, prepared):
    off = search(params, enabled=False)
    tuned = tuning.choose(contract, off, prepared[0])
    assert tuned.params == off
    assert tuned.record.method == "fixed" and tuned.record.hyperparameters == tuning.in_effect(off)


def test_the_time_budget_stops_the_search_and_says_so(contract, params, prepared, caplog):
    tuned = tuning.choose(contract, search(params, time_budget_s=1e-9, sample_rows=500), prepared[0])
    record = tuned.record
    assert len(record.candidates) == 1 < record.grid_size and record.complete is False
    assert "time budget" in caplog.text


def test_too_few_positives_for_the_folds_is_one_clear_error(contract, params, prepared):
    train_split = prepared[0]
    y = model.target_vector(train_split, contract)
    few = pd.concat([train_split[y == 0], train_split[y == 1].head(2)])
    with pytest.raises(tuning.SearchError, match="cv_folds is 3 but the training rows searched hold only 2 of one class"):
        tuning.choose(contract, params, few)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grid": {"max_iter": [10, 20]}}, "max_iter is not a grid key: early stopping"),
        ({"grid": {"max_leaf_nodes": [1, 8]}}, "'model.search.grid.max_leaf_nodes[0]' must be at least 2"),
        ({"grid": {"learning_rate": []}}, "'model.search.grid.learning_rate'"),
        ({"cv_folds": 1}, "'model.search.cv_folds' must be at least 2"),
        ({"time_budget_s": 0}, "'model.search.time_budget_s' must be greater than 0"),
    ],
)
def test_bad_search_params_are_named(params, changes, message):
    with pytest.raises(ParamsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        search(params, **changes)


def test_the_record_is_in_model_meta_json_as_written(retrained):
    run, _ = retrained
    raw = json.loads(run.path(str(config.MODEL_META)).read_text(encoding="utf-8"))["search"]
    assert set(raw["hyperparameters"]) == set(tuning.HYPERPARAMETERS)
    assert raw["cv_log_loss"] == min(c["cv_log_loss"] for c in raw["candidates"])
