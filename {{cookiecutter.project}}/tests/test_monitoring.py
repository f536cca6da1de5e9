"""Monitoring: PSI/CSI on fixed reference bins, verdicts on drifted, undrifted and broken batches.

The fixture numbers are worked out by hand from the definition in ``monitoring/drift.py``; the
batch tests score real synthetic batches with the model and reference the session's pipeline
run trained (``pipeline_run``), and read the outputs back as a dashboard would.
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package }}.core import config, model
from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.errors import ParamsError, UserError
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.monitoring import batch, drift, monitor, outputs, reference

from .pipeline_run import ROOT, pipeline_run

CONTRACT = load_contract(ROOT / "contract.yaml")
EPS = 1e-4
ROWS = 5000


# --- the arithmetic, against a hand-computed fixture ---------------------------------------


def test_numeric_psi_matches_the_hand_computed_fixture_with_empty_bins_and_nulls():
    ref = {"kind": "numeric", "edges": [1.0, 2.0, 3.0], "shares": [0.25, 0.25, 0.5, 0.0], "null": 0.0}
    values = np.array([0.5, 1.0, 1.5, 2.5, 2.5, 2.5, 3.0, 3.5, np.nan, np.nan])
    # bins: x<=1: {0.5, 1.0}; (1,2]: {1.5}; (2,3]: {2.5 x3, 3.0}; >3: {3.5} (empty in the reference); nulls: 2
    expected = (
        (0.2 - 0.25) * math.log(0.2 / 0.25)
        + (0.1 - 0.25) * math.log(0.1 / 0.25)
        + (0.4 - 0.5) * math.log(0.4 / 0.5)
        + (0.1 - EPS) * math.log(0.1 / EPS)
        + (0.2 - EPS) * math.log(0.2 / EPS)
    )
    got = drift.compare(ref, values, EPS)
    assert got["actual"] == pytest.approx([0.2, 0.1, 0.4, 0.1, 0.2], abs=1e-12)
    assert got["value"] == pytest.approx(expected, abs=1e-9)
    assert got["value"] == pytest.approx(2.3804202965, abs=1e-9)


def test_categorical_csi_matches_the_fixture_with_unseen_levels_and_nulls():
    ref = {"kind": "categorical", "levels": {"a": 0.5, "b": 0.3, "c": 0.2}, "null": 0.0}
    values = pd.Series(["a", "a", "a", "b", "d", "d", "e", None, "a", "b"], dtype=object)
    # a 0.4, b 0.2, c 0 (empty now), d 0.2 and e 0.1 (each unseen level its own bin), null 0.1
    expected = (
        (0.4 - 0.5) * math.log(0.4 / 0.5)
        + (0.2 - 0.3) * math.log(0.2 / 0.3)
        + (EPS - 0.2) * math.log(EPS / 0.2)
        + (0.2 - EPS) * math.log(0.2 / EPS)
        + (0.1 - EPS) * math.log(0.1 / EPS)
        + (0.1 - EPS) * math.log(0.1 / EPS)
    )
    got = drift.compare(ref, values, EPS)
    assert got["bins"] == ["a", "b", "c", "d (unseen)", "e (unseen)", drift.NULL]
    assert got["value"] == pytest.approx(expected, abs=1e-9)
    assert got["value"] == pytest.approx(4.4818711740, abs=1e-9)


def test_reference_bins_are_fixed_and_identical_data_has_zero_psi():
    rng = np.random.default_rng(0)
    train = rng.normal(size=10_000)
    profile = drift.numeric_profile(train, 10)
    assert len(profile["edges"]) == 9 and profile["shares"] == pytest.approx([0.1] * 10)
    assert drift.compare(profile, train, EPS)["value"] == pytest.approx(0.0, abs=1e-12)
    # New data beyond the training range falls in the end bins; the edges do not move.
    shifted = drift.compare(profile, train + 100, EPS)
    assert shifted["actual"][-2] == 1.0 and shifted["value"] > 5
    assert profile["edges"] == drift.numeric_profile(train, 10)["edges"]


def test_integer_levels_are_the_same_level_whatever_the_file_format():
    profile = drift.categorical_profile(pd.Series([0, 1, 1, 0]))
    assert drift.compare(profile, pd.Series([0.0, 1.0, 1.0, 0.0]), EPS)["value"] == pytest.approx(0.0, abs=1e-12)
    assert drift.compare(profile, pd.Series(["0", "1", "1", "0"]), EPS)["value"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("value", "want"), [(0.0999, "pass"), (0.1, "warn"), (0.2499, "warn"), (0.25, "fail"), (3.0, "fail")])
def test_verdict_thresholds(value, want):
    assert drift.verdict(value, 0.1, 0.25).status == want


# --- real batches through the real monitor ---------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """The session's pipeline run (model and reference fixed at training), as the working directory."""
    run = pipeline_run()
    params = load_params(run.path("params.yaml"))
    return run, params


@pytest.fixture
def in_run(trained, monkeypatch):
    run, params = trained
    monkeypatch.chdir(run.dir)
    return params


@functools.cache
def _movers(run_dir: str) -> tuple[tuple[str, float], ...]:
    """The two numeric features whose one-sd shift (in their riskier direction) moves the score most."""
    pipeline = model.load(config.MODEL)
    base = batch.make_batch(CONTRACT, 2000, seed=1, drift={})
    before = model.scores(pipeline, base, CONTRACT).mean()
    moves = {}
    for name in CONTRACT.numeric_features:
        for sign in (1.0, -1.0):
            after = model.scores(pipeline, batch.apply_drift(base, {name: sign}, CONTRACT, seed=1), CONTRACT).mean()
            if after - before > moves.get(name, (0.0, 0.0))[1]:
                moves[name] = (sign, after - before)
    top = sorted(moves, key=lambda k: -moves[k][1])[:2]
    return tuple((name, moves[name][0]) for name in top)


def movers(params) -> dict[str, float]:
    """``_movers`` for the model in the working directory (computed once per session)."""
    return dict(_movers(str(Path.cwd())))


def monitor_batch(tmp_path, df: pd.DataFrame, params, audit_log=None) -> dict:
    path = tmp_path / "batch.parquet"
    df.to_parquet(path, index=False)
    return monitor.run(path, audit_log, None, params)


def test_batch_drifted_in_two_features_alerts_on_exactly_those_and_on_the_score(in_run, tmp_path):
    chosen = movers(in_run)
    report = monitor_batch(tmp_path, batch.make_batch(CONTRACT, ROWS, seed=11, drift=chosen), in_run)
    csi = {k: f for k, f in report["figures"].items() if f["kind"] == "csi"}
    assert set(csi) == set(CONTRACT.features)
    assert {k for k, f in csi.items() if f["verdict"]["status"] == "fail"} == set(chosen), {
        k: round(f["value"], 3) for k, f in csi.items()
    }
    assert {k for k, f in csi.items() if f["verdict"]["status"] != "pass"} == set(chosen)
    assert report["figures"]["score"]["verdict"]["status"] == "fail"
    assert report["data_quality"]["success"] is True
    assert report["status"] == "ALERT"
    assert report["decision_rate"]["batch"] > report["decision_rate"]["reference"]


def test_undrifted_batch_of_the_same_size_stays_ok(in_run, tmp_path):
    report = monitor_batch(tmp_path, batch.make_batch(CONTRACT, ROWS, seed=11, drift={}), in_run)
    values = {k: round(f["value"], 4) for k, f in report["figures"].items()}
    assert all(f["verdict"]["status"] == "pass" for f in report["figures"].values()), values
    assert max(values.values()) < 0.05, values
    assert report["status"] == "OK", report["reasons"]
    perf = report["performance"]
    assert perf["available"] and perf["verdict"]["status"] == "pass"
    assert perf["fairness"]["by_attribute"], "protected attributes in the batch are measured by group"


def test_batch_breaking_the_contract_is_a_data_quality_failure_not_drift(in_run, tmp_path):
    df = batch.make_batch(CONTRACT, ROWS, seed=11, drift={})
    broken = CONTRACT.numeric_features[0]
    col = CONTRACT[broken]
    bad = (col.min - 1) if col.min is not None else (col.max + 1)
    df.loc[df.index[: ROWS // 5], broken] = bad  # a fifth of the rows out of the contract's bounds
    report = monitor_batch(tmp_path, df, in_run)
    quality = report["data_quality"]
    assert quality["success"] is False
    assert any(f["column"] == broken and f["expectation"] == "expect_column_values_to_be_between" for f in quality["failures"])
    assert {f["verdict"]["status"] for f in report["figures"].values()} == {"skip"}
    assert report["status"] == "ALERT"
    assert report["reasons"] == [f"data quality: {quality['failed']} contract expectation(s) failed; drift not judged"]
    prom = parse_prometheus(outputs.prometheus(report))
    assert prom["model_data_quality_ok"] == {(): 0.0}
    assert prom.get("model_drift_status", {}) == {}


def test_a_csv_batch_meets_the_contract_as_its_parquet_twin_does(in_run, tmp_path):
    # CSV carries dates as text: read as prepare reads them, not failed as the wrong type.
    df = batch.make_batch(CONTRACT, 800, seed=13, drift={}, labelled=False)
    df.to_csv(tmp_path / "batch.csv", index=False)
    report = monitor.run(tmp_path / "batch.csv", None, None, in_run)
    assert report["data_quality"]["success"] is True, report["data_quality"]["failures"]
    assert report["status"] == monitor_batch(tmp_path, df, in_run)["status"]


def test_unlabelled_batch_has_drift_but_no_performance(in_run, tmp_path):
    df = batch.make_batch(CONTRACT, ROWS, seed=11, drift={}, labelled=False)
    assert CONTRACT.target not in df.columns
    report = monitor_batch(tmp_path, df, in_run)
    assert report["data_quality"]["success"] is True and "performance" not in report
    assert report["batch"]["labelled"] is False and report["status"] == "OK"


def audit_record(seq: int, score: float, run_id: str, when: datetime) -> dict:
    """One line of the decision service's audit log, in its documented shape."""
    return {
        "seq": seq,
        "timestamp": when.isoformat(),
        "decision_id": f"d-{seq}",
        "model": {
            "package_version": "0.1.0",
            "run_id": run_id,
            "git_sha": "0" * 40,
            "contract": CONTRACT.name,
            "contract_version": 1,
        },
        "input_hash": "0" * 64,
        "score": score,
        "decision": "decline",
        "reasons": [],
        "latency_ms": 1.0,
        "prev_hash": "0" * 64,
        "hash": "0" * 64,
    }


def test_served_scores_from_the_audit_log_of_this_model_only(in_run, tmp_path):
    run_id = json.loads(config.MODEL_META.read_text())["run_id"]
    pipeline = model.load(config.MODEL)
    drifted = model.scores(pipeline, batch.make_batch(CONTRACT, 3000, seed=5, drift=movers(in_run)), CONTRACT)
    log = tmp_path / "decisions.jsonl"
    now = datetime.now(UTC)
    lines = [audit_record(i, float(s), run_id, now) for i, s in enumerate(drifted)]
    lines += [audit_record(len(lines) + i, 0.99, "another-model", now) for i in range(500)]
    log.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    report = monitor_batch(tmp_path, batch.make_batch(CONTRACT, ROWS, seed=11, drift={}), in_run, audit_log=log)
    assert report["audit_log"]["this_model"] == 3000 and report["audit_log"]["other_models"] == 500
    assert report["figures"]["served_score"]["verdict"]["status"] == "fail"
    assert report["figures"]["score"]["verdict"]["status"] == "pass"
    assert report["decision_rate"]["served"] == pytest.approx(float(np.mean(drifted >= report["model"]["threshold"])))
    # Naive timestamps are the service's UTC; --since keeps only what came after.
    old = audit_record(len(lines), 0.01, run_id, (now - timedelta(days=365)).replace(tzinfo=None))
    log.write_text(log.read_text() + json.dumps(old) + "\n")
    path = tmp_path / "batch.parquet"
    recent = monitor.run(path, log, now.replace(hour=0, minute=0, second=0, microsecond=0), in_run)
    assert recent["audit_log"]["this_model"] == 3000
    assert monitor.run(path, log, None, in_run)["audit_log"]["this_model"] == 3001
    log.write_text(log.read_text() + "not json\n")
    with pytest.raises(monitor.MonitorError, match=r"line 3502 is not a decision record"):
        monitor_batch(tmp_path, batch.make_batch(CONTRACT, 600, seed=11, drift={}), in_run, audit_log=log)


def parse_prometheus(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_outputs_json_markdown_plots_and_prometheus_names(in_run, tmp_path):
    chosen = movers(in_run)
    report = monitor_batch(tmp_path, batch.make_batch(CONTRACT, ROWS, seed=11, drift=chosen), in_run)
    written = outputs.write(report, tmp_path / "out", tmp_path / "textfile" / "monitor.prom")
    date = report["generated_at"][:10]
    names = {p.name for p in written}
    assert {f"{date}.json", f"{date}.md", f"{date}-score.png", f"{date}-csi.png", "monitor.prom"} == names
    assert json.loads((tmp_path / "out" / "latest.json").read_text())["status"] == "ALERT"
    md = (tmp_path / "out" / f"{date}.md").read_text()
    assert md.startswith("## Model monitoring: 🚨 ALERT") and f"![{date}-csi.png]({date}-csi.png)" in md
    for name in chosen:
        assert f"| {name} | CSI " in md
    for png in (p for p in written if p.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prom = parse_prometheus((tmp_path / "textfile" / "monitor.prom").read_text())
    assert prom["model_psi"][(("figure", "score"),)] == pytest.approx(report["figures"]["score"]["value"])
    assert set(prom["model_csi"]) == {(("feature", f),) for f in CONTRACT.features}
    assert prom["model_drift_status"][(("figure", "score"),)] == 2.0
    assert {labels[0][1] for labels, v in prom["model_drift_status"].items() if v == 2.0} == {"score", *chosen}
    assert prom["model_data_quality_ok"] == {(): 1.0}
    assert prom["model_decision_rate"][()] == pytest.approx(report["decision_rate"]["batch"])
    assert abs(prom["model_monitor_last_run_timestamp_seconds"][()] - datetime.now(UTC).timestamp()) < 600


def test_reference_is_versioned_with_the_model_and_refused_for_another(in_run, tmp_path):
    ref = reference.load(reference.REFERENCE)
    assert set(ref.features) == set(CONTRACT.model_input_order())
    assert ref.model.run_id == json.loads(config.MODEL_META.read_text())["run_id"]
    with pytest.raises(reference.ReferenceError, match="was written for model run"):
        reference.load(reference.REFERENCE, run_id="some-other-run")
    with pytest.raises(reference.ReferenceError, match="not found: run `make repro`"):
        reference.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda r: r["score"].update(kind="categorical"), "score.kind"),
        (lambda r: r["score"]["shares"].pop(), "score"),  # one share per bin, and one more
        (lambda r: next(iter(r["features"].values())).update(kind="ordinal"), "features.{first}"),
        (lambda r: r["model"].pop("run_id"), "model.run_id"),
        (lambda r: r.update(schema_version=2), "schema_version"),
    ],
)
def test_a_malformed_reference_is_refused_naming_the_file_and_the_field(in_run, tmp_path, change, where):
    raw = json.loads(reference.REFERENCE.read_text())
    where = where.format(first=next(iter(raw["features"])))
    path = tmp_path / "reference.json"
    change(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(reference.ReferenceError, match=rf"^{re.escape(str(path))}: '{re.escape(where)}'"):
        reference.load(path)


def test_monitor_before_the_pipeline_ran_says_what_to_run(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contract.yaml").write_text((ROOT / "contract.yaml").read_text())
    with pytest.raises(reference.ReferenceError, match="not found: run `make repro`"):
        monitor.run(tmp_path / "batch.parquet", None, None, params)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.parquet", None, "file not found"),
        ("batch.txt", "a,b\n", "unsupported file type '.txt'"),
        ("batch.parquet", "not parquet", "not a readable parquet file"),
        ("batch.csv", "", "not a readable csv file"),
    ],
)
def test_unreadable_batches_fail_with_one_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(monitor.MonitorError, match=message) as info:
        monitor.read_batch(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_monitor_params_are_named(params):
    with pytest.raises(ParamsError, match="'monitor' psi_warn \\(0.3\\) must be above 0 and below psi_alert"):
        params.replace(monitor={"psi_warn": 0.3})


def test_drift_spec_errors_name_the_feature(contract):
    with pytest.raises(UserError, match="'nope' is not a feature"):
        batch.parse_drift(["nope=1"], contract)
    with pytest.raises(UserError, match="amount 'x' is not a number"):
        batch.parse_drift([f"{contract.features[0]}=x"], contract)
