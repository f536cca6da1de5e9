"""`make score ENGINE=spark` against the pandas engine: the same rows, the same values, the same refusals.

One Spark session (local mode) for the module; the input is the session pipeline run's raw data.
"""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as ds
import pytest

from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.errors import UserError
from {{ cookiecutter.package }}.scoring import batch, score

from .pipeline_run import ROOT, pipeline_run

# A spark bake (compute=spark) ships pyspark and this module; a pandas bake has neither.
pytest.importorskip("pyspark")

CONTRACT = load_contract(ROOT / "contract.yaml")
ID = CONTRACT.row_key


@pytest.fixture(scope="module")
def run():
    return pipeline_run()


@pytest.fixture(scope="module")
def scorer(run) -> batch.Scorer:
    return batch.Scorer.load(run.dir)


@pytest.fixture(scope="module")
def both(run, scorer, tmp_path_factory):
    """The run's raw input (as CSV: the engines' readers must agree too) scored by each engine."""
    base = tmp_path_factory.mktemp("score-spark")
    source = base / "portfolio.csv"
    run.raw.to_csv(source, index=False)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_LOG_PATH", str(base / "audit.jsonl"))
        mp.setenv("AUDIT_CHECKPOINT_PATH", str(base / "checkpoints.jsonl"))
        for engine in ("pandas", "spark"):
            entry = score.run(source, base / engine, engine=engine, root=run.dir, batch_rows=1000, scorer=scorer)
            table = ds.dataset(base / engine, format="parquet", partitioning="hive").to_table().to_pandas()
            out[engine] = (entry, table.sort_values(ID, ignore_index=True))
    return source, out


def test_spark_scores_every_record_as_the_pandas_engine_does(run, both):
    _, out = both
    (pandas_entry, p), (spark_entry, s) = out["pandas"], out["spark"]
    assert len(s) == len(p) == len(run.raw)
    assert list(s.columns) == list(p.columns)
    assert s["score"].to_numpy().tobytes() == p["score"].to_numpy().tobytes()
    for column in p.columns.drop("score"):
        left, right = s[column], p[column]
        if column == "reasons":  # lists of structs: compared as lists of dicts
            left, right = (c.map(lambda v: [dict(r) for r in v]) for c in (left, right))
        pd.testing.assert_series_equal(left, right, check_dtype=False, obj=column)
    assert spark_entry["decisions"] == pandas_entry["decisions"]
    assert spark_entry["input"]["sha256"] == pandas_entry["input"]["sha256"]
    assert spark_entry["model"] == pandas_entry["model"] and spark_entry["engine"] == "spark"


def test_spark_refuses_a_contract_break_in_the_pandas_engines_words(run, scorer, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_LOG_PATH", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("AUDIT_CHECKPOINT_PATH", str(tmp_path / "checkpoints.jsonl"))
    category = CONTRACT.categorical_features[0]
    bad = run.raw.copy()
    bad[category] = bad[category].astype(object)
    bad.loc[bad.index[-1], category] = "no-such-level"
    source = tmp_path / "bad.parquet"
    bad.to_parquet(source, index=False)
    messages = []
    for engine in ("pandas", "spark"):
        with pytest.raises(UserError) as err:
            score.run(source, tmp_path / engine, engine=engine, root=run.dir, batch_rows=1000, scorer=scorer)
        messages.append(str(err.value))
        assert not (tmp_path / engine).exists()
    assert messages[0] == messages[1] and "\n" not in messages[1] and repr(category) in messages[1]
    assert not (tmp_path / "audit.jsonl").exists()
