"""Per-decision feature contributions (core/attributions.py, shap): exact, and served on request.

Only a repository whose use case explains by feature contributions has these (fraud detection);
they run on the model the real pipeline trained, against the background it stored.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }}.core import attributions, model
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.use_case import Explanations
from {{ cookiecutter.package }}.serving import audit
from {{ cookiecutter.package }}.serving.schema import MAX_EXPLAIN

from .pipeline_run import ROOT, pipeline_run
from .test_service import AUTH, CONTRACT, Server, features, refusal, valid_record

# The service gives contributions when params.yaml says so (the default here); with
# model.explanations: reason_codes it refuses "explain" instead (test_service.py checks that).
served_contributions = pytest.mark.skipif(
    load_params(ROOT / "params.yaml").model.explanations is not Explanations.FEATURE_CONTRIBUTIONS,
    reason="params.yaml: model.explanations is reason_codes, so the service gives no contributions",
)


@pytest.fixture(scope="module")
def run():
    return pipeline_run()


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    srv = Server(run.dir, tmp_path_factory.mktemp("audit") / "decisions.jsonl")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def held_out(run) -> pd.DataFrame:
    return pd.read_parquet(run.path("data/prepared/test.parquet"))


@pytest.fixture(scope="module")
def explainer(run):
    pipeline = model.load(run.path("models/model.skops"))
    return pipeline, attributions.FeatureExplainer.from_artifact(pipeline, CONTRACT, run.path("models/explain_background.json"))


def test_contributions_add_up_to_the_raw_score_on_held_out_rows(explainer, held_out):
    pipeline, exp = explainer
    rows = held_out.head(200)
    base, values = exp.contributions(rows)
    raw = pipeline.decision_function(model.model_frame(rows, CONTRACT))
    assert list(values.columns) == CONTRACT.model_input_order()
    assert np.max(np.abs(base + values.sum(axis=1).to_numpy() - raw)) <= 1e-9
    assert (values.abs().to_numpy() > 1e-6).sum(axis=1).mean() > 2, "contributions should spread over several features"


def test_past_the_exact_limit_the_permutation_explainer_still_adds_up(explainer, held_out, run, monkeypatch):
    pipeline, exact = explainer
    monkeypatch.setattr(attributions, "EXACT_MAX_FEATURES", 3)  # as for a contract with many features
    sampled = attributions.FeatureExplainer.from_artifact(pipeline, CONTRACT, run.path("models/explain_background.json"))
    assert sampled.method == "permutation" and exact.method == "exact"
    rows = held_out.head(20)
    base, values = sampled.contributions(rows)
    raw = pipeline.decision_function(model.model_frame(rows, CONTRACT))
    assert np.max(np.abs(base + values.sum(axis=1).to_numpy() - raw)) <= 1e-9
    _, want = exact.contributions(rows)
    # Estimates of the same Shapley values: the leading feature agrees on most rows.
    assert (values.abs().idxmax(axis=1) == want.abs().idxmax(axis=1)).mean() >= 0.8


def test_shap_tree_explainer_still_misses_native_categorical_splits(explainer, held_out):
    """Why attributions.py uses the Exact explainer: if this fails, TreeExplainer became exact here; switch to it."""
    import shap

    pipeline, exp = explainer
    X = exp.matrix(held_out.head(200))
    tree = shap.TreeExplainer(pipeline[-1])
    error = np.abs(tree.expected_value + tree.shap_values(X).sum(axis=1) - pipeline[-1].decision_function(X))
    assert np.max(error) > 1e-3


@served_contributions
def test_top_features_only_when_asked_and_equal_to_the_explainers(client, server, explainer, held_out):
    _, exp = explainer
    rows = held_out.head(6)
    bodies = features(rows)
    plain = client.post("/decide", json=bodies[0]).json()
    assert "top_features" not in plain
    assert "top_features" not in client.post("/decide", json={**bodies[0], "explain": False}).json()
    asked = client.post("/decide", json={**bodies[0], "explain": True})
    assert asked.status_code == 200, asked.text
    top = asked.json()["top_features"]
    _, values = exp.contributions(rows.head(1))
    want = values.iloc[0][values.iloc[0] != 0].abs().sort_values(ascending=False).head(4)
    assert [t["feature"] for t in top] == list(want.index)
    for t in top:
        assert t["contribution"] == pytest.approx(values.iloc[0][t["feature"]], abs=1e-12)
        assert t["direction"] == ("raises" if t["contribution"] > 0 else "lowers")
        assert t["value"] == bodies[0][t["feature"]]
    batch = [{**b, "explain": i % 2 == 0} for i, b in enumerate(bodies)]
    answers = client.post("/decide_batch", json={"records": batch}).json()["decisions"]
    assert ["top_features" in a for a in answers] == [i % 2 == 0 for i in range(len(bodies))]
    logged = {json.loads(x)["decision_id"]: json.loads(x) for x in server.log.read_text(encoding="utf-8").splitlines()}
    record = logged[asked.json()["decision_id"]]
    assert record["top_features"] == [t["feature"] for t in top]  # names only, never the values
    assert "top_features" not in logged[plain["decision_id"]]
    assert record["input_hash"] == logged[plain["decision_id"]]["input_hash"]  # explain is not an input
    assert audit.verify(server.log)[1] is None


@served_contributions
def test_a_bad_explain_value_is_a_4xx_naming_the_field(client, held_out):
    good = valid_record(held_out)
    for bad in ("yes", 1, "true", None, [True]):
        text = refusal(client.post("/decide", json={**good, "explain": bad}))
        assert "explain" in text and "boolean" in text, text
    text = refusal(client.post("/decide_batch", json={"records": [good, {**good, "explain": "no"}]}))
    assert "explain" in text
    text = refusal(client.post("/decide_batch", json={"records": [{**good, "explain": True}] * (MAX_EXPLAIN + 1)}))
    assert "explain" in text and str(MAX_EXPLAIN) in text, text
