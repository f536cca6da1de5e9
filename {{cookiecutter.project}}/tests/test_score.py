"""Portfolio scoring (`make score`): the service's answers for every record, recorded once in the audit chain.

Runs in the session's pipeline run (tests/pipeline_run.py), on its raw input (PII, target and all),
so the scores are those of the model the real stages produced.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from {{ cookiecutter.package }}.core import model
from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.errors import UserError
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.scoring import batch, score
from {{ cookiecutter.package }}.serving import audit

from .pipeline_run import ROOT, pipeline_run

CONTRACT = load_contract(ROOT / "contract.yaml")
ID = CONTRACT.row_key


@pytest.fixture(scope="module")
def run():
    return pipeline_run()


@pytest.fixture
def audit_env(tmp_path, monkeypatch):
    log, checkpoints = tmp_path / "audit" / "decisions.jsonl", tmp_path / "checkpoints" / "checkpoints.jsonl"
    monkeypatch.setenv("AUDIT_LOG_PATH", str(log))
    monkeypatch.setenv("AUDIT_CHECKPOINT_PATH", str(checkpoints))
    return log, checkpoints


@pytest.fixture(scope="module")
def scorer(run) -> batch.Scorer:
    """The model loaded once for the module, as `make score` loads it."""
    return batch.Scorer.load(run.dir)


@pytest.fixture(scope="module")
def scored(run, scorer, tmp_path_factory):
    """The run's raw input scored in batches of 1,500 records, split over two input files."""
    base = tmp_path_factory.mktemp("score")
    source = base / "portfolio"
    source.mkdir()
    half = len(run.raw) // 2
    run.raw.iloc[:half].to_parquet(source / "part-a.parquet", index=False)
    run.raw.iloc[half:].to_parquet(source / "part-b.parquet", index=False)
    log, checkpoints = base / "audit.jsonl", base / "checkpoints.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_LOG_PATH", str(log))
        mp.setenv("AUDIT_CHECKPOINT_PATH", str(checkpoints))
        entry = score.run(source, base / "out", root=run.dir, batch_rows=1500, scorer=scorer)
    table = ds.dataset(base / "out", format="parquet", partitioning="hive").to_table().to_pandas()
    return source, base / "out", entry, table.set_index(ID).loc[run.raw[ID].astype(str)], log, checkpoints


def test_every_record_gets_the_services_score_decision_and_reasons_to_the_bit(run, scored, scorer):
    _, _, entry, out, _, _ = scored
    assert len(out) == len(run.raw) == entry["input"]["rows"] == entry["output"]["rows"]
    decider = scorer.decider  # the service's Decider, loaded from the run as the service loads it
    band = load_params(run.path("params.yaml")).serving.refer_band  # the service's refer band (serving/service.py)
    assert decider.rule.band == (None if band is None else (band.lower, band.upper))
    records = json.loads(run.raw[CONTRACT.features].to_json(orient="records"))  # as a client sends them
    answers = [a for i in range(0, len(records), 50) for a in decider.decide(records[i : i + 50])]
    assert out["score"].to_numpy().tobytes() == np.array([a["score"] for a in answers]).tobytes()
    assert out["decision"].tolist() == [a["decision"] for a in answers]
    pipeline_scores = model.scores(model.load(run.path("models/model.skops")), run.raw, CONTRACT)
    assert out["score"].to_numpy().tobytes() == pipeline_scores.tobytes()
    if decider.explains:
        got = [[dict(r) for r in rs] for rs in out["reasons"]]
        assert got == [a["reasons"] for a in answers]
        assert any(got), "no adverse decision in the sample: the reasons were not exercised"
    assert set(out["model_run_id"]) == {decider.identity.run_id}
    assert set(out["model_sha256"]) == {batch.file_sha256(run.path("models/model.skops"))}


def test_a_record_is_found_in_the_bucket_its_id_hashes_to(run, scored):
    _, output, entry, out, _, _ = scored
    some = run.raw[ID].astype(str).iloc[[0, len(run.raw) // 2, -1]]
    for rid, bucket in zip(some, batch.buckets_of(some, entry["output"]["buckets"]), strict=True):
        part = pd.read_parquet(output / f"bucket={bucket}")
        assert part.loc[part[ID] == rid, "score"].tolist() == [out.loc[rid, "score"]]


def test_buckets_are_the_documented_hash_and_keep_each_buckets_records_in_input_order():
    ids = ["a", "ä-1", "", "0042", "x" * 300]
    expected = [int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") % 7 for i in ids]
    assert batch.buckets_of(ids, 7).tolist() == expected
    table = pa.table({"n": list(range(6)), batch.BUCKET: pa.array([2, 0, 2, 1, 0, 2], pa.int32())})
    parts = [(b, part["n"].to_pylist(), part.column_names) for b, part in score.by_bucket(table)]
    assert parts == [(0, [1, 4], ["n"]), (1, [3], ["n"]), (2, [0, 2, 5], ["n"])]
    assert list(score.by_bucket(table.slice(0, 0))) == []  # an empty input batch writes nothing


def test_the_batch_size_changes_no_byte_of_any_bucket(run, scored, scorer, tmp_path, audit_env):
    # One batch against the fixture's 1,500-record batches: each bucket's records, their order
    # and every value (scores to the bit, decisions, reasons) are the same.
    source, output, _, _, _, _ = scored
    whole = tmp_path / "whole"
    score.run(source, whole, root=run.dir, batch_rows=len(run.raw), scorer=scorer)
    buckets = sorted(p.name for p in output.iterdir())
    assert buckets == sorted(p.name for p in whole.iterdir())
    for bucket in buckets:
        assert pq.read_table(whole / bucket).equals(pq.read_table(output / bucket)), bucket


def test_the_run_is_one_batch_score_record_in_the_verified_chain(run, scored):
    source, output, entry, _, log, checkpoints = scored
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["batch_score"]
    record = records[0]
    assert record["input"]["sha256"] == batch.digest(source)["sha256"] and record["input"]["files"] == 2
    assert record["output"]["sha256"] == batch.digest(output)["sha256"]
    assert record["input"]["rows"] == record["output"]["rows"] == len(run.raw)
    meta = json.loads(run.path("models/model_meta.json").read_text(encoding="utf-8"))
    assert (record["model"]["run_id"], record["model"]["git_sha"]) == (meta["run_id"], meta["git_sha"])
    assert record["model"]["model_sha256"] == batch.file_sha256(run.path("models/model.skops"))
    assert sum(record["decisions"].values()) == len(run.raw)
    assert audit.main(["verify", str(log), "--checkpoints", str(checkpoints)]) == 0
    # The digest covers every byte: one changed output byte no longer matches the record.
    victim = batch.data_files(output)[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    assert batch.digest(output)["sha256"] != record["output"]["sha256"]


def bad_inputs(raw: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One broken copy of ``raw`` per kind of contract break, with the column each must name."""
    numeric = CONTRACT.numeric_features[0]
    category = CONTRACT.categorical_features[0]
    out = [(numeric, raw.drop(columns=[numeric]))]
    wrong_type = raw.copy()
    wrong_type[numeric] = wrong_type[numeric].astype(str)
    out.append((numeric, wrong_type))
    unknown = raw.copy()
    unknown[category] = unknown[category].astype(object)
    unknown.loc[unknown.index[-3], category] = "no-such-level"
    out.append((category, unknown))
    bounded = next(c for c in CONTRACT.numeric_features if CONTRACT[c].min is not None)
    below = raw.copy()
    below.loc[below.index[-2], bounded] = CONTRACT[bounded].min - 1
    out.append((bounded, below))
    return out


def test_input_breaking_the_contract_is_refused_in_one_line_naming_the_column_and_nothing_is_written(
    run, scorer, tmp_path, audit_env
):
    log, _ = audit_env
    # Three batches: a break in the last one is found after two were written, and nothing stays.
    batch_rows = len(run.raw) // 3 + 1
    for column, frame in bad_inputs(run.raw):
        source = tmp_path / f"bad-{column}.parquet"
        frame.to_parquet(source, index=False)
        output = tmp_path / "out"
        with pytest.raises(UserError) as err:
            score.run(source, output, root=run.dir, batch_rows=batch_rows, scorer=scorer)
        message = str(err.value)
        assert "\n" not in message and repr(column) in message, message
        assert not output.exists() and list(tmp_path.glob(".out.tmp-*")) == []
    assert not log.exists() or log.read_text() == ""
