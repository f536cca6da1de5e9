"""The Spark stages against their pandas twins on the same data (one Spark session for the module).

Parity is the claim: the same pseudonyms bitwise, the same prepared rows, the same validation
verdicts and report lines, PSI/CSI equal to 1e-12. Then a contract break refused in one line
with nothing written, and no raw PII in any output.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }}.core import config, model, spark
from {{ cookiecutter.package }}.core.stage import run_stage
from {{ cookiecutter.package }}.data import prepare, spark_prepare, spark_validate, validate
from {{ cookiecutter.package }}.monitoring import drift, reference, spark_drift

from .conftest import ROOT, TEST_KEY


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
        session, session.createDataFrame(raw), contract, TEST_KEY, ledger, test_fraction=0.25, seed=7
    )
    return pandas_out, (train.toPandas(), test.toPandas(), protected.toPandas(), summary)


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


def test_prepare_matches_pandas_row_for_row(both, contract):
    (p_train, p_test, p_protected, p_summary), (s_train, s_test, s_protected, s_summary) = both
    assert s_summary == p_summary
    assert p_summary["rows_erased"] == 1
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
        got = spark_validate.run_validation(session, session.createDataFrame(frame), contract, params)
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
    got = spark_drift.figures(session.createDataFrame(batch), ref, contract, fitted, epsilon)
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
