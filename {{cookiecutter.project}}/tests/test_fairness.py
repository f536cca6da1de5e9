"""Fairness: protected attributes and their proxies never reach the model; rates by group are
right; the gates fail, naming attribute, group, metric and threshold, when bias is injected."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from {{ cookiecutter.package }}.core import model, use_case
from {{ cookiecutter.package }}.core.contract import ContractError, load_contract
from {{ cookiecutter.package }}.core.errors import ParamsError
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.reports import FairnessReport, GateId, GroupStats, MetricsReport, ReportError
from {{ cookiecutter.package }}.evaluation import fairness, group_stats

from .oracles import by_group_fairlearn
from .pipeline_run import ROOT, pipeline_run

CONTRACT = load_contract(ROOT / "contract.yaml")
PARAMS = load_params(ROOT / "params.yaml")
USE_CASE = use_case.load().name
SETTINGS = PARAMS.fairness
OUTCOME = use_case.load().fairness_outcome


def scored_groups(n: int = 6000, shift: float = 0.0, seed: int = 0):
    """Labels and scores for two equal groups; ``shift`` raises group 'b' scores (bias against it)."""
    rng = np.random.default_rng(seed)
    groups = np.where(np.arange(n) % 2 == 0, "a", "b")
    base = 0.25 if USE_CASE == "credit_scoring" else 0.05
    y = (rng.random(n) < base).astype(int)
    score = np.clip(rng.beta(2, 6, n) + 0.25 * y + np.where(groups == "b", shift, 0.0), 0, 1)
    threshold = float(np.quantile(score, 0.8 if USE_CASE == "credit_scoring" else 0.95))
    return y, score, threshold, pd.DataFrame({"attribute": groups})


# --- protected attributes and proxies are never model inputs -----------------------------------
def test_no_feature_is_protected_or_a_declared_proxy():
    inputs = set(CONTRACT.model_input_order())
    assert CONTRACT.protected, "contract.yaml declares no protected attribute: fairness cannot be measured"
    assert not inputs & set(CONTRACT.protected)
    assert not inputs & set(CONTRACT.proxies)
    assert not inputs & set(CONTRACT.pii)


def test_the_trained_model_sees_no_protected_column():
    run = pipeline_run()
    pipeline = model.load(run.path("models/model.skops"))
    seen = set(pipeline.feature_names_in_)
    assert seen == set(CONTRACT.model_input_order())
    assert not seen & set(CONTRACT.protected)
    for split in ("train", "test"):
        columns = set(pd.read_parquet(run.path(f"data/prepared/{split}.parquet")).columns)
        assert not columns & set(CONTRACT.protected), f"{split}.parquet holds protected attributes"
    protected = pd.read_parquet(run.path("data/prepared/protected.parquet"))
    assert list(protected.columns) == [CONTRACT.id_column, *CONTRACT.protected]


def _contract_with(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load((ROOT / "contract.yaml").read_text(encoding="utf-8"))
    change(raw["columns"])
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def test_contract_refuses_a_feature_flagged_as_a_proxy(tmp_path):
    feature, protected = CONTRACT.features[0], CONTRACT.protected[0]

    def flag(columns):
        next(c for c in columns if c["name"] == feature)["proxy_for"] = protected

    with pytest.raises(
        ContractError, match=rf"column '{feature}'.*proxy for protected attribute.*'{protected}'.*never be a model input"
    ):
        load_contract(_contract_with(tmp_path, flag))


def test_a_proxy_kept_apart_as_protected_is_accepted_and_must_name_a_protected_column(tmp_path):
    feature, protected = CONTRACT.features[0], CONTRACT.protected[0]

    def demote(columns):
        col = next(c for c in columns if c["name"] == feature)
        for key in ("monotone", "reason_code", "reason", "min", "max"):
            col.pop(key, None)
        col.update(role="protected", proxy_for=[protected])

    contract = load_contract(_contract_with(tmp_path, demote))
    assert feature in contract.proxies
    assert feature not in contract.model_input_order()

    def wrong_target(columns):
        demote(columns)
        next(c for c in columns if c["name"] == feature)["proxy_for"] = [CONTRACT.target]

    with pytest.raises(ContractError, match="not protected columns"):
        load_contract(_contract_with(tmp_path, wrong_target))


# --- the numbers ------------------------------------------------------------------------------
def test_group_rates_match_a_direct_count():
    y, score, threshold, protected = scored_groups()
    report = fairness.assess(y, score, threshold, protected, SETTINGS, seed=1)
    flagged = score >= threshold
    for g, entry in report.attributes["attribute"].groups.items():
        m = protected["attribute"].to_numpy() == g
        assert entry.n == m.sum()
        expected_outcome = np.mean(~flagged[m]) if OUTCOME == "approval_rate" else np.mean(flagged[m])
        assert getattr(entry, OUTCOME) == pytest.approx(expected_outcome, abs=1e-6)
        assert entry.tpr == pytest.approx(np.mean(flagged[m & (y == 1)]), abs=1e-6)
        assert entry.fpr == pytest.approx(np.mean(flagged[m & (y == 0)]), abs=1e-6)
        lo, hi = entry.ci[OUTCOME]
        assert lo <= getattr(entry, OUTCOME) <= hi


def test_group_tables_equal_fairlearn_metricframe():
    y, score, threshold, protected = scored_groups(n=3000)
    groups = protected["attribute"].to_numpy()
    flagged = (score >= threshold).astype(int)
    slow = by_group_fairlearn(y, flagged, groups)
    codes = pd.Categorical(groups, categories=slow.index).codes
    fast = group_stats.group_table(y, flagged, codes, slow.index)
    pd.testing.assert_frame_equal(slow[sorted(slow.columns)], fast[sorted(fast.columns)], check_dtype=False)
    # The stage's point estimates: same groups, same order, same numbers as fairlearn.
    pd.testing.assert_frame_equal(slow, group_stats.by_group(y, flagged, groups), check_dtype=False, check_names=False)


def clustered_rows(n_subjects: int = 600, seed: int = 0):
    """Two groups of subjects with 1-8 rows each; a subject's rows share a label and mostly a decision."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(n_subjects), rng.integers(1, 9, n_subjects))
    groups = np.where(subject % 3 == 0, "a", "b")
    y = (rng.random(n_subjects) < 0.3)[subject].astype(int)
    risk = rng.random(n_subjects)[subject] + 0.3 * y + 0.05 * rng.standard_normal(len(subject))
    flagged = (risk > 0.8).astype(int)
    return y, flagged, groups, subject


def direct_resamples(y, flagged, groups, subjects, draws: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The textbook stratified cluster bootstrap: per group, draw its subjects with replacement, pool their rows."""
    rng = np.random.default_rng(seed)
    out = {}
    for g in sorted(set(groups)):
        here = groups == g
        ids, unit = np.unique(subjects[here], return_inverse=True)
        weights = (np.ones(here.sum()), y[here], flagged[here], (y * flagged)[here])
        stats = np.column_stack([np.bincount(unit, weights=w, minlength=len(ids)) for w in weights])
        sums = stats[rng.integers(0, len(ids), (draws, len(ids)))].sum(axis=1)
        out[g] = {"flag_rate": sums[:, 2] / sums[:, 0], "tpr": sums[:, 3] / sums[:, 1]}
    return out


def resampler_draws(y, flagged, groups, subjects, draws: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The stage's resampler (one multinomial over each group's count patterns), as many draws."""
    from {{ cookiecutter.package }}.evaluation.group_stats import _Resampler

    names, codes = np.unique(groups, return_inverse=True)
    resampler = _Resampler.of_rows(codes, subjects, y, flagged, len(names))
    rng = np.random.default_rng(seed)
    sums = np.stack([resampler.sample_sums(rng) for _ in range(draws)])  # (draws, 4, groups)
    return {
        str(g): {"flag_rate": sums[:, 2, i] / sums[:, 0, i], "tpr": sums[:, 3, i] / sums[:, 1, i]} for i, g in enumerate(names)
    }


def test_subject_bootstrap_agrees_with_resampling_subjects_directly():
    """The multinomial shortcut draws what resampling whole subjects one by one draws: same means, same spread."""
    y, flagged, groups, subjects = clustered_rows()
    direct = direct_resamples(y, flagged, groups, subjects, draws=4000, seed=1)
    fast = resampler_draws(y, flagged, groups, subjects, draws=4000, seed=2)
    by_row = resampler_draws(y, flagged, groups, None, draws=4000, seed=3)
    for g in direct:
        for stat in ("flag_rate", "tpr"):
            want, got = direct[g][stat], fast[g][stat]
            assert abs(got.mean() - want.mean()) < 0.1 * want.std(), (g, stat, got.mean(), want.mean())
            assert 0.9 < got.std() / want.std() < 1.1, (g, stat, got.std(), want.std())
            # this data can tell the two apart: rows of one subject move together
            assert by_row[g][stat].std() < 0.7 * want.std(), (g, stat, by_row[g][stat].std(), want.std())


def test_row_bootstrap_agrees_with_resampling_rows_directly():
    """With one row per subject the shortcut is the ordinary row bootstrap within groups."""
    y, flagged, groups, _ = clustered_rows(n_subjects=200, seed=4)
    rows = np.arange(len(y))
    direct = direct_resamples(y, flagged, groups, rows, draws=2000, seed=5)
    fast = resampler_draws(y, flagged, groups, None, draws=2000, seed=6)
    for g in direct:
        for stat in ("flag_rate", "tpr"):
            want, got = direct[g][stat], fast[g][stat]
            assert abs(got.mean() - want.mean()) < 0.1 * want.std(), (g, stat, got.mean(), want.mean())
            assert 0.9 < got.std() / want.std() < 1.1, (g, stat, got.std(), want.std())


def test_the_stage_intervals_resample_subjects_when_given_them():
    """assess(..., subjects): each group's interval is the percentile interval of the subject-level resampling."""
    y, flagged, groups, subjects = clustered_rows(seed=7)
    settings = PARAMS.replace(fairness={"bootstrap": 200, "confidence": 0.9}).fairness
    score = flagged.astype(float)  # flagged at threshold 0.5
    report = fairness.assess(y, score, 0.5, pd.DataFrame({"attribute": groups}), settings, seed=8, subjects=subjects)
    assert report.bootstrap_unit == "subject"
    assert report.attributes["attribute"].bootstrap_units == len(np.unique(subjects))
    direct = direct_resamples(y, flagged, groups, subjects, draws=4000, seed=9)
    by_row = direct_resamples(y, flagged, groups, np.arange(len(y)), draws=1000, seed=10)
    for g, samples in direct.items():
        rate = samples["flag_rate"] if OUTCOME != "approval_rate" else 1.0 - samples["flag_rate"]
        want = np.quantile(rate, [0.05, 0.95])
        lo, hi = report.attributes["attribute"].groups[g].ci[OUTCOME]
        assert abs(lo - want[0]) < 0.35 * rate.std() and abs(hi - want[1]) < 0.35 * rate.std(), (g, (lo, hi), want)
        row_lo, row_hi = np.quantile(by_row[g]["flag_rate"], [0.05, 0.95])
        assert row_hi - row_lo < 0.7 * (hi - lo), "the interval is the row bootstrap's: subjects were not resampled"


def test_bootstrap_is_seeded():
    y, score, threshold, protected = scored_groups()
    a = fairness.assess(y, score, threshold, protected, SETTINGS, seed=3)
    b = fairness.assess(y, score, threshold, protected, SETTINGS, seed=3)
    assert a == b


# --- the gates --------------------------------------------------------------------------------
def test_unbiased_scores_pass_every_gate():
    y, score, threshold, protected = scored_groups(shift=0.0)
    report = fairness.assess(y, score, threshold, protected, SETTINGS, seed=1)
    assert report.passed, [g.reason for g in report.gates]
    assert {g.id for g in report.gates} == {
        GateId(gate="fairness", attribute="attribute", metric=g.metric) for g in SETTINGS.gates
    }


def test_injected_bias_fails_the_gate_naming_attribute_group_metric_and_threshold():
    y, score, threshold, protected = scored_groups(shift=0.35)
    report = fairness.assess(y, score, threshold, protected, SETTINGS, seed=1)
    assert not report.passed
    failed = [g for g in report.gates if not g.passed]
    assert failed
    for gate in failed:
        assert (gate.id.gate, gate.id.attribute) == ("fairness", "attribute")
        assert isinstance(gate.value, float)
        assert isinstance(gate.threshold, float)
        assert "attribute" in gate.reason
        assert "'b'" in gate.reason
        assert "'a'" in gate.reason
        assert f"{gate.threshold:g}" in gate.reason
    assert any(g.id.metric == SETTINGS.gates[0].metric for g in failed)


def test_equalized_odds_gate_catches_unequal_error_rates_at_equal_outcome_rates():
    rng = np.random.default_rng(5)
    n = 8000
    groups = np.where(np.arange(n) % 2 == 0, "a", "b")
    y = (rng.random(n) < 0.3).astype(int)
    informative = np.clip(rng.beta(2, 6, n) + 0.35 * y, 0, 1)
    noise = rng.permutation(informative)  # same score distribution, no relation to the label
    score = np.where(groups == "a", informative, noise)
    settings = PARAMS.replace(fairness={"gates": [{"metric": "equalized_odds_difference", "max": 0.1}]}).fairness
    report = fairness.assess(y, score, float(np.quantile(score, 0.7)), pd.DataFrame({"sex": groups}), settings, seed=2)
    (gate,) = report.gates
    assert not gate.passed
    assert gate.status == "fail"
    assert "equalized-odds difference" in gate.reason
    assert "at most 0.1" in gate.reason


def test_point_rule_is_stricter_than_significant():
    y, score, threshold, protected = scored_groups(n=1200, shift=0.06, seed=11)
    point = fairness.assess(y, score, threshold, protected, PARAMS.replace(fairness={"rule": "point"}).fairness, seed=1)
    significant = fairness.assess(
        y, score, threshold, protected, PARAMS.replace(fairness={"rule": "significant"}).fairness, seed=1
    )
    warned = [s.id for s in significant.gates if s.status == "warn"]
    assert warned, "this data must hold a breach within sampling noise, or the test shows nothing"
    for p, s in zip(point.gates, significant.gates, strict=True):
        assert p.id == s.id
        assert p.passed <= s.passed  # whatever fails under 'significant' fails under 'point'
        if s.status == "warn":
            assert s.passed and not p.passed, (str(s.id), s.reason, p.reason)


def test_small_groups_are_reported_but_not_gated():
    y, score, threshold, protected = scored_groups()
    protected.loc[protected.index[:20], "attribute"] = "tiny"
    report = fairness.assess(y, score, threshold, protected, SETTINGS, seed=1)
    tiny = report.attributes["attribute"].groups["tiny"]
    assert tiny.n == 20
    assert tiny.gated.outcome_rate is False
    skipped = [n for n in report.not_gated if n.id.group == "tiny"]
    assert [n.status for n in skipped] == ["skip"] and "min_group_size" in skipped[0].reason
    assert all("'tiny'" not in g.reason for g in report.gates)


def test_nothing_comparable_fails_closed():
    y, score, threshold, protected = scored_groups(n=150)
    report = fairness.assess(y, score, threshold, protected, SETTINGS, seed=1)
    assert not report.passed
    assert report.gates[0].id == GateId(gate="fairness", metric="comparable_groups")


def test_bad_gate_params_are_named():
    with pytest.raises(ParamsError, match=r"fairness.gates\[0\]"):
        PARAMS.replace(fairness={"gates": [{"metric": "accuracy_parity", "min": 0.8}]})


# --- the stage --------------------------------------------------------------------------------
def test_report_covers_every_protected_group_and_is_logged_to_mlflow():
    from mlflow.tracking import MlflowClient

    run = pipeline_run()
    report = FairnessReport.read(run.path("reports/fairness.json"))
    test_rows = len(pd.read_parquet(run.path("data/prepared/test.parquet")))
    assert set(report.attributes) == set(CONTRACT.protected)
    for _attribute, result in report.attributes.items():
        assert sum(g.n for g in result.groups.values()) == test_rows
    for gate in report.gates:
        assert gate.status in ("pass", "warn", "fail")
        assert isinstance(gate.value, float) and isinstance(gate.threshold, float)
    meta = json.loads(run.path("models/model_meta.json").read_text(encoding="utf-8"))
    logged = MlflowClient(tracking_uri=run.tracking_uri).get_run(meta["run_id"]).data.metrics
    for key, value in fairness.mlflow_metrics(report).items():
        assert logged[key] == value, key


def test_stage_exits_nonzero_on_biased_data(tmp_path, monkeypatch, caplog):
    """Give one group the riskiest held-out rows: the stage (so `dvc repro`) must stop and say why."""
    run = pipeline_run()
    work = tmp_path / "biased"
    shutil.copytree(run.dir, work, ignore=shutil.ignore_patterns(".dvc", "src"))
    meta = json.loads((work / "models/model_meta.json").read_text(encoding="utf-8"))
    meta["tracking_uri"] = f"sqlite:///{work / 'mlflow.db'}"
    (work / "models/model_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    test = pd.read_parquet(work / "data/prepared/test.parquet")
    risk = model.scores(model.load(work / "models/model.skops"), test, CONTRACT)
    attribute = CONTRACT.protected[-1]
    groups = CONTRACT.categories(attribute)
    # The riskiest fifth in one group: its flag or decline rate is several times the rest's whatever the
    # threshold (a half split left a fraud model flagging ~1% of rows within the gate's noise), and the
    # group stays above min_group_size on the tests' small held-out set.
    riskiest = risk >= np.quantile(risk, 0.8)
    protected = pd.read_parquet(work / "data/prepared/protected.parquet").set_index(CONTRACT.row_key)
    protected.loc[test[CONTRACT.row_key], attribute] = np.where(riskiest, groups[0], groups[1])
    protected.reset_index().to_parquet(work / "data/prepared/protected.parquet", index=False)

    monkeypatch.chdir(work)
    with caplog.at_level(logging.INFO):
        assert fairness.main() == 1
    report = FairnessReport.read(work / "reports/fairness.json")
    failed = [g for g in report.gates if not g.passed]
    assert failed
    assert all(g.id.attribute == attribute for g in failed)
    message = caplog.text
    assert f"fairness:{attribute}:" in message
    assert f"'{groups[0]}'" in message
    assert any(f"{g.threshold:g}" in message for g in failed)


def test_headline_by_group_is_the_metric_within_each_group():
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, score, _, protected = scored_groups(n=3000)
    groups = protected["attribute"].to_numpy()
    fn = roc_auc_score if use_case.load().headline_metric == "roc_auc" else average_precision_score
    got = group_stats.headline_by_group(y, score, groups)
    for g in np.unique(groups):
        assert got[g] == pytest.approx(fn(y[groups == g], score[groups == g]))
    one_class = group_stats.headline_by_group(np.zeros(4, int), np.arange(4.0), np.array(["a", "a", "b", "b"]))
    assert one_class.isna().all()


# --- the report's shape -------------------------------------------------------------------------
def test_the_report_models_name_this_use_cases_outcome_and_headline():
    facts = use_case.load()
    assert facts.fairness_outcome in GroupStats.model_fields
    assert facts.headline_metric in GroupStats.model_fields
    assert facts.headline_metric in MetricsReport.model_fields


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda r: r["attributes"]["attribute"]["groups"]["a"].update(n="many"), "attributes.attribute.groups.a.n"),
        (lambda r: r["gates"][0]["id"].pop("gate"), "gates.0.id.gate"),
        (lambda r: r["gates"][0].update(status="ok"), "gates.0.status"),
        (lambda r: r["settings"].update(rule="lenient"), "settings.rule"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_file_and_the_field(tmp_path, change, where):
    y, score, threshold, protected = scored_groups()
    raw = fairness.assess(y, score, threshold, protected, SETTINGS, seed=1).model_dump(mode="json")
    path = tmp_path / "fairness.json"
    path.write_text(json.dumps(raw))
    assert FairnessReport.read(path).model_dump(mode="json") == raw  # what is written reads back unchanged
    change(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(ReportError, match=rf"^{re.escape(str(path))}: '{re.escape(where)}'"):
        FairnessReport.read(path)


def test_a_report_whose_verdict_contradicts_its_gates_is_refused(tmp_path):
    y, score, threshold, protected = scored_groups(shift=0.35)
    raw = fairness.assess(y, score, threshold, protected, SETTINGS, seed=1).model_dump(mode="json")
    raw["passed"] = True
    path = tmp_path / "fairness.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ReportError, match=rf"^{re.escape(str(path))}: .*passed is True but the gates say otherwise"):
        FairnessReport.read(path)
