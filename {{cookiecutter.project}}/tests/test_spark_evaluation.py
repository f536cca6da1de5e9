"""The Spark evaluation stages against their pandas twins on the same held-out rows (one Spark session for the module).

Counts are equal exactly, and so are the bootstrap intervals (the same draws from the same count
patterns). Ranking figures (ROC-AUC, average precision, KS, DeLong's standard error) are sums in
another order than scikit-learn's or numpy's, so they agree to 1e-9; figures the reports round
to 6 decimals agree to one unit in the last place (a sum in another order can round either side).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from {{ cookiecutter.package }}.core import metrics, model, spark, use_case
from {{ cookiecutter.package }}.core.reports import AttributeFairness, ValidationReference
from {{ cookiecutter.package }}.evaluation import (
    calibration,
    explain,
    group_stats,
    spark_explain,
    spark_fairness,
    spark_stats,
    spark_validation_pack,
    validation_pack,
)
from {{ cookiecutter.package }}.evaluation.spark_evaluate import figures
from {{ cookiecutter.package }}.evaluation.spark_stats import LABEL, POSITION, SCORE

ROUNDED = 1.01e-6  # one unit in the 6th decimal
TIED = "__tied"


@pytest.fixture(scope="module")
def session(params):
    session = spark.get_session(
        params.replace(spark={"conf": {**params.spark.conf, "spark.sql.shuffle.partitions": 2, "spark.ui.enabled": False}})
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def held_out(session, prepared, fitted, contract):
    """The pandas test rows, their pandas scores, and the same rows scored on Spark (with a coarse, tied score too)."""
    _, test, _ = prepared
    score = model.scores(fitted, test, contract)
    tied = np.floor(score * 40) / 40  # many ties, computed here so both engines rank the same values
    frame = test.assign(**{POSITION: np.arange(len(test)), LABEL: model.target_vector(test, contract), TIED: tied})
    scored = spark_stats.with_scores(session.createDataFrame(frame), {SCORE: lambda f: model.scores(fitted, f, contract)})
    return test, score, tied, scored.cache()


def test_the_test_set_scored_on_spark_has_the_pandas_scores(held_out):
    test, score, _, scored = held_out
    got = scored.orderBy(POSITION).select(SCORE).toPandas()[SCORE].to_numpy()
    np.testing.assert_array_equal(got, score)


@pytest.mark.parametrize("column", [SCORE, TIED])
def test_ranking_figures_equal_scikit_learn_and_delong_with_and_without_ties(held_out, contract, column):
    test, score, tied, scored = held_out
    s = score if column == SCORE else tied
    y = model.target_vector(test, contract)
    got = spark_stats.ranking(scored, column, max_fpr=0.05).iloc[0]
    delong = calibration.delong_auc(y, s)
    assert (got["positives"], got["negatives"]) == (y.sum(), len(y) - y.sum())
    assert abs(got["roc_auc"] - roc_auc_score(y, s)) <= 1e-9
    assert abs(got["pr_auc"] - average_precision_score(y, s)) <= 1e-9
    assert abs(got["ks"] - metrics.ks_statistic(y, s)) <= 1e-9
    assert abs(got["se"] - delong.se) <= 1e-9
    assert abs(got["recall_at_fpr"] - metrics.recall_at_fpr(y, s, 0.05)) <= 1e-9
    # With ties the edge of the top k falls inside a tie: file order decides which tied rows make it, as in pandas.
    k = max(int(round(len(y) * 0.1)), 1)
    if column == TIED:
        assert np.sort(s)[::-1][k - 1] == np.sort(s)[::-1][k]  # the case this checks: the edge splits a tie
    assert spark_stats.top_fraction_positives(scored, column, k) / k == metrics.precision_at_k(y, s, 0.1)


def test_evaluate_metrics_equal_the_pandas_stage(held_out, contract, params):
    test, score, _, scored = held_out
    y = model.target_vector(test, contract)
    threshold = float(np.quantile(score, 0.8))
    expected = use_case.load().metrics(y, score, threshold, params)
    got = figures(scored, threshold, params)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert abs(got[name] - value) <= 1e-9, name


def test_fairness_equals_the_pandas_stage_interval_for_interval(session, held_out, prepared, fitted, contract, params):
    test, score, _, _ = held_out
    _, _, protected = prepared
    threshold = float(np.quantile(score, 0.7))
    frame = test.assign(**{POSITION: np.arange(len(test)), LABEL: model.target_vector(test, contract)})
    df, attrs = spark_fairness.scored(
        session.createDataFrame(frame), session.createDataFrame(protected), contract, fitted, threshold
    )
    df = df.cache()
    joined = test[[contract.row_key]].merge(protected, on=contract.row_key, how="left")
    subjects = test[contract.subject].to_numpy(dtype=object) if contract.subject in test.columns else None
    subject = contract.subject if subjects is not None else None
    headline = use_case.load().headline_metric
    assert attrs
    for i, name in enumerate(attrs):
        groups = joined[name].astype(object).where(joined[name].notna(), "(missing)").astype(str).to_numpy()
        expected = group_stats.assess_attribute(
            model.target_vector(test, contract),
            (score >= threshold).astype(int),
            groups,
            params.fairness,
            params.seed + i,
            score=score,
            clusters=subjects,
        )
        expected = AttributeFairness.model_validate(expected).model_dump()  # as the report holds it
        got = spark_fairness.attribute(df, name, subject, params.fairness, params.seed + i).model_dump()
        assert got["bootstrap_units"] == expected["bootstrap_units"]
        assert got["summary"] == expected["summary"], name  # counts, rates and every interval: the same draws
        assert set(got["groups"]) == set(expected["groups"])
        for group, entry in expected["groups"].items():
            mine = dict(got["groups"][group])
            theirs = dict(entry)
            a, b = mine.pop(headline), theirs.pop(headline)
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= ROUNDED), (name, group)
            assert {k: v for k, v in mine.items() if k in theirs} == theirs, (name, group)
    df.unpersist()


def test_validation_pack_equals_the_pandas_stage(held_out, contract, params):
    test, score, _, scored = held_out
    meta = SimpleNamespace(threshold=float(np.quantile(score, 0.8)), run_id="run")
    ref = ValidationReference(roc_auc=0.7, se=0.01, rows=len(test), run_id="reference", git_sha="0" * 40)
    expected = validation_pack.build(params, contract, meta, test, score, ref).model_dump()
    got = spark_validation_pack.build(params, contract, meta, scored, ref).model_dump()
    _close(got, expected, "pack")
    if expected["grades"] is not None:
        assert got["grades"]["assignments"] == expected["grades"]["assignments"]  # each row's grade, in key order
        assert [r["rows"] for r in got["grades"]["rows"]] == [r["rows"] for r in expected["grades"]["rows"]]
    assert got["gains"]["bands"] == expected["gains"]["bands"]  # band edges by rank, ties in file order


def test_explain_on_spark_equals_pandas_when_the_sample_is_every_row(held_out, fitted, contract, params):
    test, score, _, scored = held_out
    threshold = float(np.quantile(score, 0.8))
    columns = list(dict.fromkeys([*contract.features, contract.target]))
    assert spark_explain.reason_codes(scored.select(*columns), fitted, contract, threshold) == explain.reason_code_summary(
        fitted, test, contract, threshold
    )
    sample, how = spark_stats.sample_rows(scored, len(test), params.seed, columns, by_label=True)
    assert how.startswith(f"{len(test)} rows: every one")
    pd.testing.assert_frame_equal(sample, test[columns].reset_index(drop=True), check_dtype=False, check_categorical=False)
    drawn, how = spark_stats.sample_rows(scored, len(test) // 4, params.seed, columns, by_label=True)
    assert "stratified" in how and f"seed {params.seed}" in how and 0 < len(drawn) < len(test) // 2


def _close(got, expected, where: str) -> None:
    """Equal, floats to one unit in the 6th decimal (the reports' rounding)."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), where
        for k in expected:
            _close(got[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            _close(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(got, float) and abs(got - expected) <= ROUNDED, (where, got, expected)
    else:
        assert got == expected, where
