"""``model.kind`` in params.yaml: the boosted model (gbm) or{% if cookiecutter.use_case == "credit_scoring" %} the benchmark's points scorecard as THE model.

With ``scorecard`` the train stage takes the benchmark stage's table as it is and saves it as the
model; the service (serving/decider.py) and ``make score`` (scoring/batch.py) then score it.
These tests fit the scorecard with the benchmark stage's own code on the shared seeded split,
train it the way the train stage does, load it the way the service does, and check the service's
probabilities and reason codes against numbers computed here from ``models/scorecard.json`` alone
(plain Python, not core/scorecard.py).
{%- else %} a scorecard, which a fraud repository refuses.

The scorecard is fitted by optbinning, a credit-only dependency, and its points-based adverse-action
reasons are a credit convention: a fraud repository refuses ``model.kind: scorecard`` in one line.
{%- endif %}
"""

from __future__ import annotations
{%- if cookiecutter.use_case == "credit_scoring" %}

import bisect
import json
import math
import os
import shutil
from pathlib import Path
{%- endif %}

import pytest
import yaml
{% if cookiecutter.use_case == "credit_scoring" %}
from {{ cookiecutter.package }}.ci import gates
from {{ cookiecutter.package }}.core import config, model
from {{ cookiecutter.package }}.core.decision import Outcome
{%- endif %}
from {{ cookiecutter.package }}.core.errors import ParamsError
from {{ cookiecutter.package }}.core.params import parse
{%- if cookiecutter.use_case == "credit_scoring" %}
from {{ cookiecutter.package }}.core.reports import MetricsReport, ModelMeta
from {{ cookiecutter.package }}.core.scorecard import ScorecardModel
from {{ cookiecutter.package }}.core.use_case import Explanations
from {{ cookiecutter.package }}.scoring.batch import Scorer
from {{ cookiecutter.package }}.serving.decider import Decider
from {{ cookiecutter.package }}.training import benchmark, train
{%- endif %}

from .conftest import ROOT

RAW = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def with_model(**changes) -> dict:
    return {**RAW, "model": {**RAW["model"], **changes}}


def test_the_default_kind_is_gbm_and_an_unknown_kind_is_refused_naming_it():
    assert parse({**RAW, "model": {k: v for k, v in RAW["model"].items() if k != "kind"}}).model.kind == "gbm"
    with pytest.raises(ParamsError) as caught:
        parse(with_model(kind="xgboost"))
    assert str(caught.value) == "params.yaml: 'model.kind' must be 'gbm' or 'scorecard', got 'xgboost'"
{%- if cookiecutter.use_case == "fraud_detection" %}


def test_a_scorecard_is_refused_in_a_fraud_repository():
    with pytest.raises(ParamsError) as caught:
        parse(with_model(kind="scorecard"))
    assert str(caught.value) == (
        "params.yaml: model.kind: scorecard is for credit scoring; a fraud detection repository trains gbm"
    )
{%- else %}


def test_a_scorecard_needs_a_fixed_threshold():
    assert parse(with_model(kind="scorecard")).model.kind == "scorecard"
    costs = {"tuning_fraction": 0.25, "cost_false_negative": 5.0, "cost_false_positive": 1.0}
    cost_tuned = {**with_model(kind="scorecard"), "decision": {**RAW["decision"], "threshold": None, **costs}}
    with pytest.raises(ParamsError, match="model.kind: scorecard needs a fixed decision.threshold"):
        parse(cost_tuned)


@pytest.fixture(scope="module")
def served(tmp_path_factory, prepared, contract, params):
    """A repository root whose model is the scorecard, trained as the train stage does with model.kind: scorecard."""
    root = tmp_path_factory.mktemp("scorecard_model")
    shutil.copy(ROOT / "contract.yaml", root / "contract.yaml")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")  # the refer band, read by the service and make score
    train_rows, _, _ = prepared
    here = os.getcwd()
    os.chdir(root)  # the stages write models/ under the working directory
    try:
        benchmark.fit_and_save(train_rows, contract, params)  # the benchmark stage: models/scorecard.json
        fitted, record = train.scorecard_model()  # the train stage's path for model.kind: scorecard
        model.save(fitted)
    finally:
        os.chdir(here)
    ModelMeta(
        run_id="0" * 32,
        tracking_uri="sqlite:///unused.db",
        threshold=params.decision.threshold,
        threshold_source="params",
        search=record,
        kind="scorecard",
        explanations=Explanations.REASON_CODES,
        features=contract.model_input_order(),
        data={},
    ).write(root / config.MODEL_META)
    card = json.loads((root / config.BENCHMARK).read_text(encoding="utf-8"))
    band = params.serving.refer_band
    return root, Decider(root, None if band is None else (band.lower, band.upper)), card  # as the service loads it


def points_table(card: dict, record: dict) -> dict[str, float]:
    """Each feature's points for one record, read from scorecard.json's bins directly."""
    out = {}
    for f in card["features"]:
        value = record.get(f["name"])
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out[f["name"]] = f["missing_points"]
        elif f["kind"] == "numeric":
            out[f["name"]] = f["points"][bisect.bisect_right(f["splits"], float(value))]  # splits[i-1] <= x < splits[i]
        else:
            group = next((i for i, g in enumerate(f["groups"]) if str(value) in g), None)
            out[f["name"]] = f["other_points"] if group is None else f["points"][group]
    return out


def pd_from_points(card: dict, total: float) -> float:
    """Probability of default from total points: score = offset + factor ln(odds of good)."""
    s = card["scaling"]
    factor = s["pdo"] / math.log(2.0)
    offset = s["base_points"] - factor * math.log(s["base_odds"])
    return 1.0 / (1.0 + math.exp((total - offset) / factor))


def expected_codes(card: dict, record: dict, catalogue: dict[str, str], top_n: int = model.TOP_N) -> list[str]:
    """The features that lost the most points against their best attainable points, most first, as codes."""
    points = points_table(card, record)
    lost = []
    for f in card["features"]:
        best = max([*f["points"], f["missing_points"], f["other_points"]])
        lost.append((best - points[f["name"]], f["name"]))
    ranked = sorted((x for x in lost if x[0] > 1e-9), key=lambda x: -x[0])  # stable: contract order among ties
    return [catalogue[name] for _, name in ranked[:top_n]]


@pytest.fixture(scope="module")
def records(prepared, contract) -> list[dict]:
    """Held-out records as the service receives them (None for a missing value)."""
    _, test, _ = prepared
    frame = test[contract.model_input_order()].head(300)
    return [
        {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()}
        for r in frame.astype(object).to_dict("records")
    ]


def test_the_service_loads_the_scorecard_and_its_probabilities_are_the_points(served, records):
    root, decider, card = served
    assert isinstance(decider.pipeline, ScorecardModel)
    answers = decider.decide(records)
    expected = [pd_from_points(card, sum(points_table(card, r).values())) for r in records]
    assert [a["score"] for a in answers] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # The response shape is the boosted model's: no field added or lost.
    assert {tuple(sorted(a)) for a in answers} == {("decision", "decision_id", "model", "reasons", "score", "threshold")}


def test_reason_codes_are_the_features_that_lost_the_most_points(served, records, contract):
    _, decider, card = served
    catalogue = {c["feature"]: c["code"] for c in contract.reason_catalogue()}
    answers = decider.decide(records)
    favourable = decider.facts.word(Outcome.FAVOURABLE)
    # Reasons for every decision that is not favourable (declined or referred), as for the boosted model.
    adverse = [(r, a) for r, a in zip(records, answers, strict=True) if a["decision"] != favourable]
    assert len(adverse) >= 10, "too few adverse decisions on the held-out records to test reasons"
    for record, answer in adverse:
        assert [x["code"] for x in answer["reasons"]] == expected_codes(card, record, catalogue), record
    approved = [a for a in answers if a["decision"] == favourable]
    assert approved and all(a["reasons"] == [] for a in approved)


def test_portfolio_scoring_gives_the_services_answers(served, prepared, records):
    root, decider, _ = served
    _, test, _ = prepared
    scored = Scorer.load(root).score(test.head(len(records)), buckets=4).to_pandas()
    answers = decider.decide(records)  # the Decider as the service loads it, refer band included
    assert scored["score"].tolist() == [a["score"] for a in answers]
    assert scored["decision"].tolist() == [a["decision"] for a in answers]
    assert [[x["code"] for x in r] for r in scored["reasons"]] == [[x["code"] for x in a["reasons"]] for a in answers]


def test_the_gate_says_the_model_is_the_benchmark_instead_of_passing(tmp_path, params):
    section = {"roc_auc": 0.8, "pr_auc": 0.5, "difference": 0.0, "difference_ci_low": 0.0, "difference_ci_high": 0.0}
    section |= {"confidence": 0.95, "bootstrap": 200, "model_is_benchmark": True}
    values = {k: 0.5 for k in MetricsReport.metric_names()} | {"rows": 100}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text(json.dumps(values | {"benchmark": section}))
    ctx = gates.Context(params=params.as_dict(), root=tmp_path, baseline=None, baseline_source="main")
    [verdict] = gates.benchmark_gate(ctx)
    assert verdict.status == "warn"
    assert verdict.reason.startswith("not applicable: the model is the benchmark itself")


def test_the_saved_scorecard_loads_only_through_the_allowlist(served):
    root, _, _ = served
    with pytest.raises(model.UntrustedModelError, match="ScorecardModel"):
        model.load(Path(root) / config.MODEL, trusted=[t for t in model.TRUSTED_TYPES if not t.endswith("ScorecardModel")])
{%- endif %}
