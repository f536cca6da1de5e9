"""Human oversight, served for real: the refer band, ``POST /review`` in the audit chain, the stop switch.

One `bentoml serve` for the module (tests/test_service.py's ``Server``), with two keys: the
tests' key, which has the operator role, and a reviewer's key, which has not.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package }}.core.decision import DecisionRule, Outcome
from {{ cookiecutter.package }}.core.errors import ParamsError
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.serving import audit, auth, oversight

from .pipeline_run import ROOT, pipeline_run
from .test_service import API_KEY, API_KEY_ID, AUTH, FACTS, REASON_CODES, Server, features, rule_of

REVIEWER_KEY = auth.new_key()
REFER, FAVOURABLE, ADVERSE = (FACTS.word(o) for o in (Outcome.REFER, Outcome.FAVOURABLE, Outcome.ADVERSE))


@pytest.fixture(scope="module")
def run():
    return pipeline_run()


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    base = tmp_path_factory.mktemp("oversight")
    keys = base / "keys"
    keys.write_text(f"{API_KEY_ID}:{auth.digest(API_KEY).hex()}\nreviewer:{auth.digest(REVIEWER_KEY).hex()}\n")
    srv = Server(
        run.dir,
        base / "audit" / "decisions.jsonl",
        env={"API_KEYS_FILE": str(keys), oversight.OPERATORS_ENV: API_KEY_ID},
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def rows(run):
    return features(pd.read_parquet(run.path("data/prepared/test.parquet")).head(300))


@pytest.fixture(scope="module")
def answers(client, rows):
    r = client.post("/decide_batch", json={"records": rows})
    assert r.status_code == 200, r.text
    return r.json()["decisions"]


def records(server) -> list[dict]:
    return [json.loads(line) for line in server.log.read_text().splitlines()]


def metric(client, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels on /metrics."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    samples = [s for f in families for s in f.samples if s.name == name]
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


# --- the refer band ------------------------------------------------------------------------
def test_scores_in_the_band_are_referred_with_reasons_and_the_rest_decided(answers):
    band = load_params(ROOT / "params.yaml").serving.refer_band
    assert band is not None, "the default params.yaml has a refer band"
    words = [a["decision"] for a in answers]
    assert {REFER, FAVOURABLE} <= set(words), words
    for a in answers:
        inside = band.lower <= a["score"] < band.upper
        assert (a["decision"] == REFER) == inside, a
        if a["score"] >= band.upper:
            assert a["decision"] == ADVERSE
        if REASON_CODES and inside:
            assert a["reasons"], "a referred decision carries its reason codes for the reviewer"


def test_the_band_is_checked_at_load_naming_the_key():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ParamsError, match=r"'serving\.refer_band' lower \(0\.4\) must not be above upper \(0\.3\)"):
        params.replace(serving={"refer_band": {"lower": 0.4, "upper": 0.3}})
    with pytest.raises(ParamsError, match=r"'serving\.refer_band' \[0\.6, 0\.7\] must contain"):
        DecisionRule(0.5, (0.6, 0.7))
    if params.decision.threshold is not None:  # a fixed threshold is checked with the params themselves
        with pytest.raises(ParamsError, match=r"'serving\.refer_band'.*decision\.threshold"):
            params.replace(serving={"refer_band": {"lower": 0.01, "upper": params.decision.threshold / 2}})
    rule = DecisionRule(0.5, (0.4, 0.6))
    assert rule.outcomes(np.array([0.39, 0.4, 0.5, 0.59, 0.6])).tolist() == [0, 1, 1, 1, 2]
    assert DecisionRule(0.5).outcomes(np.array([0.49, 0.5])).tolist() == [0, 2]


# --- reviews -------------------------------------------------------------------------------
def test_a_review_is_chained_counted_and_verify_names_it_when_tampered(client, server, answers, tmp_path):
    decided = next(a for a in answers if a["decision"] != REFER)
    final = ADVERSE if decided["decision"] == FAVOURABLE else FAVOURABLE
    before = metric(client, "overrides_total", original=decided["decision"], final=final)
    body = {"decision_id": decided["decision_id"], "decision": final, "reason_code": "UW_OVERRIDE", "reviewer": "uw-0042"}
    r = client.post("/review", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "decision_id": decided["decision_id"],
        "original_decision": decided["decision"],
        "final_decision": final,
        "overridden": True,
    }
    log = records(server)
    review = next(x for x in log if x.get("event") == "review" and x["decision_id"] == decided["decision_id"])
    made = next(x for x in log if "event" not in x and x["decision_id"] == decided["decision_id"])
    assert review["decision_seq"] == made["seq"] and review["reviewer"] == "uw-0042"
    assert review["api_key_id"] == API_KEY_ID and review["reason_code"] == "UW_OVERRIDE"
    assert metric(client, "overrides_total", original=decided["decision"], final=final) == before + 1
    assert metric(client, "reviews_total", original=decided["decision"], final=final) >= 1

    copy = tmp_path / "decisions.jsonl"
    copy.write_text(server.log.read_text())
    assert audit.verify(copy, audit.KeyRing.from_env()) == (len(log), None)
    tampered = [dict(x, final_decision=decided["decision"]) if x is review else x for x in log]
    copy.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in tampered))
    seq, problem = audit.verify(copy, audit.KeyRing.from_env())
    assert seq == review["seq"]
    assert f"a review record on decision {decided['decision_id']}" in problem and "edited or forged" in problem


def test_an_unknown_decision_id_is_404_a_missing_key_401_and_a_name_400(client, server, answers):
    body = {"decision_id": str(uuid.uuid4()), "decision": FAVOURABLE, "reason_code": "UW_CONFIRM", "reviewer": "uw-0042"}
    r = client.post("/review", json=body)
    assert r.status_code == 404 and body["decision_id"] in r.json()["error"]
    known = {**body, "decision_id": answers[0]["decision_id"]}
    assert httpx.post(f"{server.url}/review", json=known).status_code == 401
    named = client.post("/review", json={**known, "reviewer": "Jane Doe"})
    assert named.status_code == 400 and "reviewer" in named.json()["error"]
    assert not [x for x in records(server) if x.get("event") == "review" and x["decision_id"] == body["decision_id"]]


def test_the_decision_index_survives_a_restart_and_follows_a_replaced_log(tmp_path):
    log, path = tmp_path / "decisions.jsonl", tmp_path / "index.sqlite"
    writer = audit.AuditLog(log, audit.DEV_KEY)
    writer.append([{"decision_id": "a", "decision": "x"}, {"event": "review", "decision_id": "a"}])
    index = oversight.DecisionIndex(log, path)
    assert index.lookup("a") == (0, "x") and index.lookup("b") is None
    writer.append([{"decision_id": "b", "decision": "y"}])
    index.close()
    again = oversight.DecisionIndex(log, path)  # a restart: only the tail since the last catch-up is read
    assert again.catch_up() == 1 and again.lookup("b") == (2, "y")
    log.rename(tmp_path / "old.jsonl")
    audit.AuditLog(log, audit.DEV_KEY).append([{"decision_id": "c", "decision": "z"}])
    assert again.lookup("c") == (0, "z") and again.lookup("a") == (0, "x")


# --- the stop switch -----------------------------------------------------------------------
def test_the_stop_switch_refers_everything_is_recorded_shown_and_lifted(client, server, rows):
    reviewer = client.post("/stop", json={"reason": "drill"}, headers={"Authorization": f"Bearer {REVIEWER_KEY}"})
    assert reviewer.status_code == 403 and "operator" in reviewer.json()["error"]
    assert client.get("/readyz").headers["x-stop-switch"] == "off"
    r = client.post("/stop", json={"reason": "incident 42: score drift"})
    assert r.status_code == 200 and r.json()["stop_switch"] == "on", r.text
    try:
        stopped = client.post("/decide_batch", json={"records": rows[:20]}).json()["decisions"]
        assert {d["decision"] for d in stopped} == {REFER}
        assert all(d["reasons"][0]["code"] == oversight.STOPPED for d in stopped)
        assert metric(client, "stop_switch") == 1
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.headers["x-stop-switch"] == "on" and ready.json()["stop_switch"] == "on"
        switched = [x for x in records(server) if x.get("event") == "stop_switch"]
        assert switched[-1]["stopped"] is True and switched[-1]["reason"] == "incident 42: score drift"
        assert switched[-1]["api_key_id"] == API_KEY_ID
        assert oversight.StopSwitch(oversight.stop_path(server.log)).stopped()  # what a restarted worker reads
    finally:
        lifted = client.post("/resume", json={"reason": "incident 42 resolved"})
    assert lifted.status_code == 200 and lifted.json()["stop_switch"] == "off"
    again = client.post("/decide_batch", json={"records": rows[:20]}).json()["decisions"]
    assert not any(d.get("reasons") and d["reasons"][0]["code"] == oversight.STOPPED for d in again)
    assert [d["decision"] for d in again] == [
        FACTS.word(Outcome(int(o))) for o in rule_of(again[0]["threshold"]).outcomes([d["score"] for d in again])
    ]
    assert metric(client, "stop_switch") == 0 and client.get("/readyz").headers["x-stop-switch"] == "off"
    assert [x["stopped"] for x in records(server) if x.get("event") == "stop_switch"][-2:] == [True, False]
    assert audit.verify(server.log, audit.KeyRing.from_env(), server.checkpoints)[1] is None


def test_monitoring_reports_the_override_rate_from_the_audit_log(tmp_path):
    from {{ cookiecutter.package }}.monitoring import monitor

    log = tmp_path / "decisions.jsonl"
    writer = audit.AuditLog(log, audit.DEV_KEY)
    model = {"run_id": "r"}
    made = [(FAVOURABLE, 0.1), (ADVERSE, 0.9), (REFER, 0.5), (FAVOURABLE, 0.2)]
    writer.append(
        {"timestamp": "2026-01-01T00:00:00Z", "decision_id": str(i), "decision": d, "score": s, "model": model}
        for i, (d, s) in enumerate(made)
    )
    reviews = [(FAVOURABLE, ADVERSE), (ADVERSE, ADVERSE), (REFER, FAVOURABLE)]  # one override of two automated decisions
    writer.append(
        {
            "timestamp": "2026-01-02T00:00:00Z",
            "event": "review",
            "decision_id": str(i),
            "original_decision": a,
            "final_decision": b,
        }
        for i, (a, b) in enumerate(reviews)
    )
    # An override made before the window: counted with no --since, left out with one after it.
    writer.append(
        [
            {
                "timestamp": "2025-12-01T00:00:00Z",
                "event": "review",
                "decision_id": "3",
                "original_decision": FAVOURABLE,
                "final_decision": ADVERSE,
            }
        ]
    )
    writer.append([{"event": "stop_switch", "stopped": True, "reason": "drill"}])
    assert monitor.read_audit_scores(log, "r", None)["oversight"]["overrides"] == 2
    served = monitor.read_audit_scores(log, "r", datetime(2026, 1, 1, tzinfo=UTC))
    assert served["records"] == 4 and served["scores"].tolist() == [0.1, 0.9, 0.5, 0.2]
    assert served["oversight"] == {
        "reviews": 3,
        "referred_reviewed": 1,
        "overrides": 1,
        "override_rate": 0.5,
        "outcomes": dict(sorted({f"{a} -> {b}": 1 for a, b in reviews}.items())),
    }
