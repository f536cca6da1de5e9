"""The Spark stages against their pandas twins on the same data (one Spark session for the module).

Parity is the claim: the same pseudonyms bitwise, the same prepared rows, the same validation
verdicts and report lines, PSI/CSI equal to 1e-12. Then a contract break refused in one line
with nothing written, and no raw PII in any output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }}.core import config, model, spark
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.stage import run_stage
from {{ cookiecutter.package }}.data import prepare, spark_prepare, spark_validate, validate
from {{ cookiecutter.package }}.monitoring import batch, drift, monitor, reference, spark_drift, spark_monitor

from .conftest import ROOT, TEST_KEY
from .pipeline_run import pipeline_run


@pytest.fixture(scope="module")
def session(params):
    session = spark.get_session(
        params.replace(spark={"conf": {**params.spark.conf, "spark.sql.shuffle.partitions": 2, "spark.ui.enabled": False}})
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def ledger(raw, contract) -> set[str]:
    """One data subject asked to be erased."""
    return {prepare.pseudonym(TEST_KEY, contract.subject, raw[contract.subject].iloc[3])}


@pytest.fixture(scope="module")
def both(session, raw, contract, ledger):
    """The pandas and the Spark stage's (train, test, protected, summary) from the same raw rows."""
    pandas_out = prepare.prepare(raw, contract, TEST_KEY, ledger, test_fraction=0.25, seed=7)
    train, test, protected, summary = spark_prepare.prepare(
        session, to_spark(session, raw), contract, TEST_KEY, ledger, test_fraction=0.25, seed=7
    )
    return pandas_out, (train.toPandas(), test.toPandas(), protected.toPandas(), summary)


def to_spark(session, frame: pd.DataFrame):
    """``frame`` as a Spark DataFrame, through Spark Connect too (its Arrow path refuses pandas' Arrow-backed text)."""
    return session.createDataFrame(frame.astype({c: object for c in frame.columns if pd.api.types.is_string_dtype(frame[c])}))


def _values(s: pd.Series) -> list:
    return s.astype(object).where(s.notna(), None).tolist()


def _same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    # Spark hands timestamps back at microseconds and text as object: compare values, not storage.
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right)
    for name in left.columns:
        a, b = left[name], right[name]
        if pd.api.types.is_datetime64_any_dtype(a):
            assert (a.astype("datetime64[us]").to_numpy() == b.astype("datetime64[us]").to_numpy()).all(), name
        elif pd.api.types.is_numeric_dtype(a):
            np.testing.assert_array_equal(a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64"), err_msg=name)
        else:
            assert _values(a) == _values(b), name


def test_pseudonyms_are_bitwise_the_pandas_ones(session, contract):
    values = ["Ana María", " padded ", "", None, "名前", "Ana María", "O'Brien\x1f"]
    frame = pd.DataFrame({name: values for name in contract.pii})
    expected = prepare.pseudonymise(frame, contract, TEST_KEY)
    got = spark_prepare.pseudonymise(session.createDataFrame(frame.astype(object)), contract, TEST_KEY).toPandas()
    for name in contract.pii:
        want = [prepare.pseudonym(TEST_KEY, name, v) for v in values]
        assert _values(got[name]) == want == _values(expected[name])
        assert want[3] is None and want[0] == want[5]


def test_prepare_matches_pandas_row_for_row(both, raw, contract):
    (p_train, p_test, p_protected, p_summary), (s_train, s_test, s_protected, s_summary) = both
    assert s_summary == p_summary
    # Every row of the erased subject (a card holder has many transactions, an applicant one).
    assert p_summary["rows_erased"] == (raw[contract.subject] == raw[contract.subject].iloc[3]).sum() >= 1
    _same(p_train, s_train)
    _same(p_test, s_test)
    _same(p_protected, s_protected)


def test_no_raw_pii_in_any_spark_output(both, raw, contract):
    _, outputs = both
    for name in contract.pii:
        secrets = set(raw[name].dropna().astype(str))
        for frame in outputs[:3]:
            for column in frame.columns:
                assert not secrets & set(frame[column].dropna().astype(str)), (name, column)


def test_validation_verdict_and_lines_match_pandas(session, valid_frame, contract, params):
    broken = valid_frame.copy()
    in_range, texty = contract.numeric_features[:2]
    broken.loc[:4, in_range] = -1e12  # below any declared minimum
    broken.loc[5:9, contract.timestamp] = pd.NaT  # a required column with missing values
    broken[texty] = broken[texty].astype(object).where(broken.index > 2, "n/a").astype(str)  # text in a number
    for frame, passes in ((valid_frame, True), (broken, False)):
        expected = validate.run_validation(frame, contract, params)
        got = spark_validate.run_validation(session, to_spark(session, frame), contract, params)
        assert expected.success is passes and got.success is passes
        assert validate.format_report(got).splitlines() == validate.format_report(expected).splitlines()
    assert "values are not numeric" in validate.format_report(got)


def test_psi_and_csi_equal_pandas_to_1e_12(session, prepared, fitted, contract, params):
    train, test, _ = prepared
    threshold = 0.25
    ref = reference.build(train, model.scores(fitted, train, contract), contract, threshold, params.monitor.bins)
    batch = test.copy()
    batch[contract.numeric_features[0]] = batch[contract.numeric_features[0]] * 1.5  # drifted
    batch.loc[:20, contract.numeric_features[1]] = np.nan
    epsilon = params.monitor.epsilon
    got = spark_drift.figures(to_spark(session, batch), ref, contract, fitted, epsilon)
    frame = model.model_frame(batch, contract)
    expected = {"score": drift.compare(ref["score"], model.scores(fitted, batch, contract), epsilon)}
    expected |= {name: drift.compare(entry, frame[name], epsilon) for name, entry in ref["features"].items()}
    assert set(got) == set(expected)
    for name, figure in expected.items():
        assert abs(got[name]["value"] - figure["value"]) <= 1e-12, name
        assert got[name]["bins"] == figure["bins"], name
        np.testing.assert_allclose(got[name]["actual"], figure["actual"], rtol=0, atol=1e-15, err_msg=name)
    assert got[contract.numeric_features[0]]["value"] > 0.1  # the drift shows


def test_a_contract_break_is_refused_in_one_line_and_nothing_is_written(session, tmp_path, monkeypatch, raw, contract, caplog):
    for name in ("params.yaml", "contract.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "src").symlink_to(ROOT / "src")
    raw.drop(columns=[contract.timestamp]).to_csv(tmp_path / "input.csv", index=False)
    text = (tmp_path / "params.yaml").read_text().replace("path: data/raw/synthetic.parquet", "path: input.csv")
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(prepare.KEY_ENV, TEST_KEY.decode())
    # main([]): its arguments are the stage's, not pytest's (main() alone reads sys.argv).
    assert run_stage(lambda: spark_prepare.main([]), "prepare") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert repr(contract.timestamp) in errors[0] and "no such column" in errors[0]
    assert not (tmp_path / config.PREPARED_DIR).exists() or not any((tmp_path / config.PREPARED_DIR).iterdir())


# --- the split and `make monitor` on Spark ----------------------------------------------------


def test_the_distributed_cut_takes_exactly_the_k_lowest_rows_ties_broken_by_position(session):
    # Many rows on few values: every cut falls inside a run of ties, decided by the position.
    values = [v for v in range(7) for _ in range(1 + 3 * v)]
    frame = session.createDataFrame(
        pd.DataFrame({"t": values, spark_prepare.POSITION: np.random.default_rng(0).permutation(len(values))})
    )
    order = sorted(zip(values, frame.toPandas()[spark_prepare.POSITION].tolist(), strict=True))
    for k in (0, 1, 5, 17, len(values) - 1, len(values)):
        chosen = frame.filter(spark_prepare.lowest(frame, k, "t", spark_prepare.POSITION)).toPandas()
        assert sorted(zip(chosen["t"], chosen[spark_prepare.POSITION], strict=True)) == order[:k], k


def test_row_index_numbers_rows_in_input_order_across_partitions_without_a_window(session):
    from pyspark.sql import functions as F

    frame = session.range(0, 1000, 1, numPartitions=3).withColumn(spark_prepare.POSITION, F.monotonically_increasing_id())
    got = frame.select("id", spark_prepare.row_index(frame).alias("index")).toPandas()
    assert got["index"].tolist() == got["id"].tolist() == list(range(1000))


@pytest.fixture
def trained(session, monkeypatch):
    """The session's pipeline run (its Spark stages included) as the working directory, and its params."""
    run = pipeline_run()
    monkeypatch.chdir(run.dir)
    return load_params(run.path("params.yaml"))


def _same_report(pandas_report: dict, spark_report: dict) -> None:
    """The Spark monitor's report is the pandas one: PSI/CSI to 1e-12, every other figure equal."""
    got, want = dict(spark_report), dict(pandas_report)
    for report in (got, want):
        report.pop("generated_at")
    got_figures, want_figures = got.pop("figures"), want.pop("figures")
    assert set(got_figures) == set(want_figures)
    for name, figure in want_figures.items():
        assert abs(got_figures[name]["value"] - figure["value"]) <= 1e-12, name
        assert got_figures[name]["bins"] == figure["bins"] and got_figures[name]["verdict"] == figure["verdict"], name
        np.testing.assert_allclose(got_figures[name]["actual"], figure["actual"], rtol=0, atol=1e-15, err_msg=name)
    assert got == want


def test_make_monitor_on_spark_writes_the_pandas_report_for_a_parquet_directory(trained, contract, tmp_path):
    drifted = {contract.numeric_features[0]: 1.0, contract.categorical_features[0]: 0.5}
    df = batch.make_batch(contract, 3000, seed=11, drift=drifted)
    df.to_parquet(tmp_path / "batch.parquet", index=False)
    # The same rows as a directory of two Parquet parts, as a data lake would land them.
    (tmp_path / "lake").mkdir()
    df.iloc[:1700].to_parquet(tmp_path / "lake" / "part-0.parquet", index=False)
    df.iloc[1700:].to_parquet(tmp_path / "lake" / "part-1.parquet", index=False)
    want = monitor.run(tmp_path / "batch.parquet", None, None, trained)
    got = monitor.run(str(tmp_path / "lake"), None, None, trained, engine=spark_monitor.measure)
    assert want["status"] == "ALERT" and want["performance"]["available"]  # drift, labels and groups to compare
    assert want["performance"]["fairness"]["by_attribute"]
    got["batch"]["path"] = want["batch"]["path"]
    _same_report(want, got)


def test_a_broken_csv_batch_gets_the_pandas_verdict_on_spark(trained, contract, tmp_path):
    df = batch.make_batch(contract, 1500, seed=12, drift={}, labelled=False)
    broken = contract.numeric_features[1]
    col = contract[broken]
    df.loc[df.index[:300], broken] = (col.min - 1) if col.min is not None else (col.max + 1)
    df.to_csv(tmp_path / "batch.csv", index=False)
    want = monitor.run(tmp_path / "batch.csv", None, None, trained)
    got = monitor.run(tmp_path / "batch.csv", None, None, trained, engine=spark_monitor.measure)
    assert want["data_quality"]["success"] is False and want["status"] == "ALERT"
    assert any(f["column"] == broken for f in want["data_quality"]["failures"])
    assert want["reasons"] == [f"data quality: {want['data_quality']['failed']} contract expectation(s) failed; drift not judged"]
    _same_report(want, got)


def test_an_unreadable_batch_is_refused_in_one_line_and_nothing_is_written(trained, tmp_path, caplog):
    (tmp_path / "batch.parquet").write_text("not parquet")
    out = tmp_path / "reports"
    argv = ["--batch", str(tmp_path / "batch.parquet"), "--out", str(out)]
    assert run_stage(lambda: spark_monitor.main(argv), "monitor") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith(f"batch {tmp_path / 'batch.parquet'}: not a readable parquet file"), errors[0]
    assert not out.exists()


# --- Spark Connect ------------------------------------------------------------------------------

CONNECT_RUN = """
import sys
from {{ cookiecutter.package }}.core import spark
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.stage import run_stage
from {{ cookiecutter.package }}.data import spark_prepare, spark_validate


def prepare():
    print("session:", type(spark.get_session(load_params())).__module__)
    return spark_prepare.main([])


sys.exit(run_stage(prepare, "prepare") or run_stage(spark_validate.main, "validate"))
"""


def test_prepare_and_validate_run_over_spark_connect_from_spark_remote_alone(tmp_path, raw, contract, params):
    for name in ("params.yaml", "contract.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "src").symlink_to(ROOT / "src")
    raw.to_parquet(tmp_path / "input.parquet", index=False)
    text = (tmp_path / "params.yaml").read_text().replace("path: data/raw/synthetic.parquet", "path: input.parquet")
    (tmp_path / "params.yaml").write_text(text)
    # SPARK_REMOTE=local[2] starts a Spark Connect server in the stage's process and talks to it
    # over gRPC, as a client of sc://host:15002 would: no RDD, no SparkContext on the client.
    env = {**os.environ, "SPARK_REMOTE": "local[2]", prepare.KEY_ENV: TEST_KEY.decode()}
    done = subprocess.run([sys.executable, "-c", CONNECT_RUN], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "session: pyspark.sql.connect.session" in done.stdout
    # params' static settings went to the server it started; the client names them once, in one line.
    assert "keeps its own spark.driver.memory" in done.stderr and "CANNOT_MODIFY_CONFIG" not in done.stderr
    want = prepare.prepare(raw, contract, TEST_KEY, set(), params.split.test_fraction, params.seed)
    for name, frame in zip((config.TRAIN, config.TEST, config.PROTECTED), want[:3], strict=True):
        _same(frame.reset_index(drop=True), pd.read_parquet(tmp_path / name))
    assert json.loads((tmp_path / config.VALIDATION).read_text())["success"] is True
