"""Metric functions on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from {{ cookiecutter.package }}.core import metrics, use_case

Y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 1])
S = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.35, 0.4, 0.05, 0.6, 0.7])


def test_ks_is_the_largest_cdf_gap():
    assert metrics.ks_statistic(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert 0 < metrics.ks_statistic(Y, S) < 1


def test_precision_at_k_counts_the_top_scores():
    assert metrics.precision_at_k(Y, S, 0.2) == 1.0  # top two (0.9, 0.8) are positive
    assert metrics.precision_at_k(Y, S, 0.5) == pytest.approx(3 / 5)


def test_recall_at_fpr():
    assert metrics.recall_at_fpr(Y, S, 0.0) == pytest.approx(0.75)  # 0.9, 0.8, 0.7 before the first negative
    assert metrics.recall_at_fpr(Y, S, 1.0) == 1.0


def test_expected_cost_weighs_misses_and_false_alarms():
    flagged = S >= 0.5
    # misses: the positive at 0.35 -> 1 * 100; false alarms: 0.6 -> 1 * 5; per case over 10
    assert metrics.expected_cost(Y, flagged, 100.0, 5.0) == pytest.approx(10.5)


def test_compute_rounds_and_refuses_a_single_class(params):
    out = metrics.compute(use_case.load(), Y, S, 0.5, params)
    assert out["rows"] == 10
    assert all(round(v, 6) == v for v in out.values())
    assert use_case.load().headline_metric in out
    with pytest.raises(ValueError, match="only one target class"):
        metrics.compute(use_case.load(), np.zeros(5), np.linspace(0, 1, 5), 0.5, params)


def test_the_use_cases_headline_scorer_and_fairness_outcome_agree_with_its_metrics(params):
    facts = use_case.load()
    out = metrics.compute(facts, Y, S, 0.5, params)
    assert out[facts.headline_metric] == round(facts.headline_score(Y, S), 6)
    assert out[facts.fairness_outcome] == round(float(facts.outcome_rate(np.mean(S >= 0.5))), 6)
