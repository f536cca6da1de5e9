"""The benchmark beside the model: its fit, the paired interval of the difference, and the gate on real models."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from {{ cookiecutter.package }}.ci import gates
from {{ cookiecutter.package }}.core import model, use_case
from {{ cookiecutter.package }}.core.reports import MetricsReport
from {{ cookiecutter.package }}.evaluation import benchmark as compare
from {{ cookiecutter.package }}.training import benchmark

HEADLINE = use_case.load().headline_metric


def test_one_pass_metrics_equal_scikit_learn_with_weights_ties_included():
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.1).astype(int)
    score = np.round(rng.random(3000) + 0.3 * y, 2)  # rounded: many ties
    weight = np.bincount(rng.integers(0, 3000, 3000), minlength=3000).astype(float)
    sorted_scores = compare.SortedScores(y, score)
    assert sorted_scores.roc_auc(weight) == pytest.approx(roc_auc_score(y, score, sample_weight=weight), abs=1e-12)
    assert sorted_scores.pr_auc(weight) == pytest.approx(average_precision_score(y, score, sample_weight=weight), abs=1e-12)


@pytest.fixture(scope="module")
def scored(prepared, contract, params, fitted):
    """Held-out labels, the model's scores and those of the benchmark fitted by the stage's own code."""
    train, test, _ = prepared
    benchmark.fit_and_save(train, contract, params)
    y = model.target_vector(test, contract)
    return y, model.scores(fitted, test, contract), compare.load_scorer(contract)(test)


def gate_on(root, y, model_score, bench_score, params) -> object:
    """The benchmark gate's verdict on a metrics.json evaluated from these scores."""
    facts = use_case.load()
    section = compare.compare(y, model_score, bench_score, HEADLINE, params.benchmark, params.seed)
    values = {k: 0.5 for k in MetricsReport.metric_names()} | {"rows": len(y), HEADLINE: facts.headline_score(y, model_score)}
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports/metrics.json").write_text(json.dumps(values | {"benchmark": section}))
    ctx = gates.Context(params=params.as_dict(), root=root, baseline=None, baseline_source="main")
    [verdict] = gates.benchmark_gate(ctx)
    return verdict


@pytest.fixture(scope="module", autouse=True)
def _in_tmp(tmp_path_factory):
    """The stage writes models/ under the working directory: keep this module's in a temporary one."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("benchmark"))
    yield
    os.chdir(here)


def test_the_benchmark_ranks_the_held_out_rows(scored):
    y, _, bench_score = scored
    assert use_case.load().headline_score(y, bench_score) > (0.7 if HEADLINE == "roc_auc" else 0.2)


def test_the_trained_model_passes_the_gate_and_a_model_made_worse_fails_it(scored, params, tmp_path):
    y, model_score, bench_score = scored
    assert gate_on(tmp_path, y, model_score, bench_score, params).passed
    # The same model's scores shuffled across rows: its signal gone, worse by construction (and by
    # more than the noise of a small fraud test set, where rarer positives widen the interval).
    worse = np.random.default_rng(0).permutation(model_score)
    verdict = gate_on(tmp_path, y, worse, bench_score, params)
    assert verdict.status == "fail", verdict.reason
    assert verdict.value is not None and verdict.value < 0
    assert f"{HEADLINE}: model " in verdict.reason and "< margin +0.0000" in verdict.reason


def test_the_roc_and_pr_plots_draw_the_benchmarks_curve_beside_the_models():
    """Read from the plots the evaluate stage wrote: their legends, kept in each PNG's text chunk."""
    from PIL import Image

    from {{ cookiecutter.package }}.core import config
    from {{ cookiecutter.package }}.evaluation.plots import LEGEND_KEY

    from .pipeline_run import pipeline_run

    run = pipeline_run()
    written = json.loads(run.path("reports/metrics.json").read_text())
    for plot, metric, label in (("roc.png", "roc_auc", "AUC"), ("pr.png", "pr_auc", "AP")):
        with Image.open(run.path(f"reports/plots/{plot}")) as image:
            legend = image.text[LEGEND_KEY].splitlines()
        # Each curve's area, as its label rounds it, is the one metrics.json holds for its scores.
        assert f"model ({label} = {written[metric]:.2f})" in legend, (plot, legend)
        assert f"benchmark: {config.BENCHMARK_NAME} ({label} = {written['benchmark'][metric]:.2f})" in legend, (plot, legend)
{%- if cookiecutter.use_case == "credit_scoring" %}


def test_scorecard_points_give_its_probabilities_and_pdo_doubles_the_odds(scored, contract, prepared, params):
    from {{ cookiecutter.package }}.core import config
    from {{ cookiecutter.package }}.core.scorecard import Scorecard

    card = Scorecard.read(config.BENCHMARK)
    _, test, _ = prepared
    frame = model.model_frame(test, contract)
    points = card.points(frame)
    assert points.shape == (len(test), len(contract.model_input_order()))
    pd_ = card.probability(points.sum(axis=1))
    np.testing.assert_allclose(pd_, scored[2], rtol=0, atol=1e-12)
    s = params.benchmark
    odds = lambda total: (1 - card.probability(np.array([total]))[0]) / card.probability(np.array([total]))[0]  # noqa: E731
    assert odds(s.base_points) == pytest.approx(s.base_odds)
    assert odds(s.base_points + s.pdo) == pytest.approx(2 * s.base_odds)


def test_scorecard_bins_follow_the_contracts_monotone_directions(scored, contract):
    from {{ cookiecutter.package }}.core import config
    from {{ cookiecutter.package }}.core.scorecard import Scorecard

    card = Scorecard.read(config.BENCHMARK)
    checked = 0
    for feature in card.features:
        direction = contract[feature.name].monotone
        if feature.kind != "numeric" or direction not in ("increasing", "decreasing") or len(feature.points) < 2:
            continue
        steps = np.diff(feature.points)
        # More risk as the value grows means fewer points (points measure the odds of good).
        assert np.all(steps <= 1e-9) if direction == "increasing" else np.all(steps >= -1e-9), feature.name
        checked += 1
    assert checked > 0
{%- endif %}
