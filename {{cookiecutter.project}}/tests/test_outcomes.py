"""Outcomes on matured labels (monitoring/outcomes.py), joined to an audit log written by the service's own writer."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }}.core import config, model
from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.reports import ModelMeta, ValidationReference
from {{ cookiecutter.package }}.monitoring import outcomes
from {{ cookiecutter.package }}.serving.audit import AuditLog, KeyRing

from .pipeline_run import ROOT, pipeline_run

CHAIN_KEY = "outcomes-test-chain-key-0123456789abcdef"
HMAC_KEY = "outcomes-test-input-key-0123456789abcdef"


@pytest.fixture(scope="module")
def served():
    """The pipeline's model scoring its held-out rows, as the decision service would answer them."""
    run = pipeline_run()
    contract = load_contract(run.path("contract.yaml"))
    meta = ModelMeta.read(run.path("models/model_meta.json"))
    test = pd.read_parquet(run.path("data/prepared/test.parquet")).head(2000)
    score = model.scores(model.load(run.path("models/model.skops")), test, contract)
    identity = {
        "package_version": "0.1.0",
        "run_id": meta.run_id,
        "git_sha": meta.git_sha,
        "contract": contract.name,
        "contract_version": contract.version,
    }
    return score, identity


@pytest.fixture
def audit(served, tmp_path, monkeypatch):
    """An audit log of those decisions, chained and checkpointed by serving/audit.py's writer."""
    monkeypatch.setenv("AUDIT_CHAIN_KEY", CHAIN_KEY)
    monkeypatch.setenv("AUDIT_HMAC_KEY", HMAC_KEY)
    score, identity = served
    log, checkpoints = tmp_path / "audit/decisions.jsonl", tmp_path / "checkpoints/checkpoints.jsonl"
    writer = AuditLog(log, HMAC_KEY.encode(), KeyRing.from_env(), checkpoints)
    ids = [str(uuid.UUID(int=i)) for i in range(len(score))]
    writer.append(
        {
            "timestamp": "2026-01-05T10:00:00.000Z",
            "decision_id": i,
            "model": identity,
            "input_hash": "0" * 64,
            "score": float(s),
            "decision": "x",
            "reasons": [],
            "latency_ms": 1.0,
            "api_key_id": None,
            "request_id": "",
        }
        for i, s in zip(ids, score, strict=True)
    )
    writer.close()
    return log, checkpoints, ids, score


def labels(tmp_path: Path, ids: list[str], y: np.ndarray, extra: int = 0) -> Path:
    frame = pd.DataFrame(
        {
            "decision_id": ids + [f"unknown-{k}" for k in range(extra)],
            "outcome": np.concatenate([y, np.zeros(extra, dtype=int)]),
            "date": "2026-11-30",
        }
    )
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    return path


def reference(tmp_path: Path, auc: float) -> Path:
    path = tmp_path / "reference.json"
    ValidationReference(roc_auc=auc, se=0.01, rows=1000, run_id="0" * 32, git_sha="unknown").write(path)
    return path


def strict_params():
    # p < 0.001: a calibrated model fails one of its ~10 tests by chance about 1% of the time, not 40%.
    return load_params(ROOT / "params.yaml").replace(validation_pack={"significance": 0.001})


def test_outcomes_drawn_from_the_predicted_pds_pass_and_unknown_ids_are_counted(audit, tmp_path):
    log, checkpoints, ids, score = audit
    y = (np.random.default_rng(1).random(len(score)) < score).astype(int)
    report = outcomes.run(
        labels(tmp_path, ids, y, extra=3),
        log,
        checkpoints,
        strict_params(),
        load_contract(ROOT / "contract.yaml"),
        reference(tmp_path, 0.5),
    )
    assert report["status"] == "PASS", report["failed_tests"]
    assert (report["joined"], report["unmatched"], report["labels_read"]) == (len(ids), 3, len(ids) + 3)
    (m,) = report["models"]
    assert m["positives"] == int(y.sum()) and m["realised_rate"] == pytest.approx(y.mean(), abs=1e-6)
    assert m["roc_auc"]["ci_low"] < m["roc_auc"]["value"] < m["roc_auc"]["ci_high"]
    if "grades" in m:
        assert sum(g["rows"] for g in m["grades"]) == len(ids)
    assert "Outcomes on matured labels: ✅ PASS" in outcomes.markdown(report)


def test_a_pd_underestimated_on_purpose_fails_and_make_outcomes_exits_non_zero(audit, tmp_path, monkeypatch):
    log, checkpoints, ids, score = audit
    params = strict_params()
    rng = np.random.default_rng(2)
    if params.grades is not None:  # PDs are probabilities: outcomes at twice the predicted rate
        y = (rng.random(len(score)) < np.minimum(2 * score, 1)).astype(int)
    else:  # flags only rank: outcomes unrelated to the score, against a reference that ranked well
        y = (rng.random(len(score)) < 0.3).astype(int)
    path = labels(tmp_path, ids, y)
    report = outcomes.run(path, log, checkpoints, params, load_contract(ROOT / "contract.yaml"), reference(tmp_path, 0.9))
    assert report["status"] == "FAIL"
    failed = report["failed_tests"]
    if params.grades is not None:
        assert any(t.endswith("jeffreys:portfolio") for t in failed) and sum(":jeffreys:" in t for t in failed) >= 3, failed
    else:
        assert any(t.endswith("roc_auc_decline") for t in failed), failed

    # The command: the same verdict as the exit status, the report written for the issue.
    for name in ("params.yaml", "contract.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "models").mkdir()
    shutil.copy2(tmp_path / "reference.json", tmp_path / config.VALIDATION_REFERENCE)  # the committed reference
    monkeypatch.chdir(tmp_path)
    assert outcomes.main(["--labels", str(path), "--audit-log", str(log), "--checkpoints", str(checkpoints)]) == 1
    written = json.loads((tmp_path / "reports/outcomes.json").read_text(encoding="utf-8"))
    assert written["status"] == "FAIL" and written["joined"] == len(ids)
    assert "🚨 FAIL" in (tmp_path / "reports/outcomes.md").read_text(encoding="utf-8")


def test_a_tampered_audit_log_is_refused_before_any_join(audit, tmp_path):
    log, checkpoints, ids, score = audit
    lines = log.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[5])
    record["score"] = 0.0001
    lines[5] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(outcomes.OutcomesError, match="failed verification.*record 5"):
        outcomes.run(
            labels(tmp_path, ids, np.zeros(len(ids), dtype=int)),
            log,
            checkpoints,
            strict_params(),
            load_contract(ROOT / "contract.yaml"),
            reference(tmp_path, 0.5),
        )


def test_labels_are_checked_naming_the_row(audit, tmp_path):
    log, checkpoints, ids, _ = audit
    path = tmp_path / "labels.csv"
    pd.DataFrame({"decision_id": ids[:3], "outcome": [0, 7, 1], "date": "2026-11-30"}).to_csv(path, index=False)
    with pytest.raises(outcomes.OutcomesError, match="outcome 7 in row 3"):
        outcomes.run(path, log, checkpoints, strict_params(), load_contract(ROOT / "contract.yaml"), reference(tmp_path, 0.5))
