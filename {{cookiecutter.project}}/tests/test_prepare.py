"""prepare: no raw PII leaves it, erasures are honoured, the split is out-of-time, keys are required."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from {{ cookiecutter.package }}.data import prepare
from {{ cookiecutter.package }}.data.prepare import PrepareError

from .conftest import TEST_KEY
from .strategies import records


def _cells(*frames: pd.DataFrame) -> set[str]:
    return {str(v) for f in frames for col in f.columns for v in f[col].tolist()}


@pytest.fixture(scope="module")
def record_strategy(contract):
    return records(contract)


def test_prepare_never_emits_raw_pii(contract, raw):
    train, test, protected, _ = prepare.prepare(raw, contract, TEST_KEY, set(), test_fraction=0.2, seed=1)
    emitted = _cells(train, test, protected)
    for column in contract.pii:
        leaked = set(raw[column].astype(str)) & emitted
        assert not leaked, f"raw {column} values leaked: {sorted(leaked)[:3]}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_property_no_raw_pii_for_any_records(contract, record_strategy, data):
    rows = data.draw(st.lists(record_strategy, min_size=2, max_size=12))
    df = pd.DataFrame(rows)
    if contract.id_column:
        df[contract.id_column] = [f"id-{i}" for i in range(len(df))]
    train, test, protected, _ = prepare.prepare(df, contract, TEST_KEY, set(), test_fraction=0.25, seed=0)
    emitted = _cells(train, test, protected)
    # A PII value that also occurs in a non-PII column (say "0") may legitimately appear.
    legitimate = _cells(df.drop(columns=contract.pii))
    for column in contract.pii:
        raw_values = {str(v) for v in df[column] if v is not None}
        assert not ((raw_values - legitimate) & emitted)
        assert all(v is None or len(v) == 64 for v in list(train[column]) + list(test[column]))
    for column in contract.protected:
        assert column not in train.columns and column not in test.columns


def test_pseudonyms_are_stable_for_a_key_and_differ_across_keys():
    a1 = prepare.pseudonym(b"k" * 32, "email", "jane@example.com")
    a2 = prepare.pseudonym(b"k" * 32, "email", "jane@example.com")
    b = prepare.pseudonym(b"q" * 32, "email", "jane@example.com")
    assert a1 == a2 and a1 != b and len(a1) == 64
    assert "jane" not in a1
    assert prepare.pseudonym(b"k" * 32, "email", None) is None


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.just(float("nan")), st.sampled_from(["a@x", " a@x", "b", "b "]), st.text(max_size=8)),
        max_size=30,
    ),
    dtype=st.sampled_from([object, "string"]),
)
def test_a_columns_pseudonyms_are_each_values_own(values, dtype):
    # The column path hashes each distinct value once from a pre-keyed HMAC; it must give
    # exactly what pseudonym() gives value by value, missing values staying missing.
    column = pd.Series(values, dtype=dtype)
    expected = [prepare.pseudonym(b"k" * 32, "email", v) for v in column.to_numpy(dtype=object)]
    assert list(prepare._pseudonyms(b"k" * 32, "email", column)) == expected
    assert sum(v is None for v in expected) == int(column.isna().sum())


def test_mixed_type_pseudonyms_keep_one_and_one_point_zero_apart():
    column = pd.Series([1, 1.0, "1", None], dtype=object)
    got = list(prepare._pseudonyms(b"k" * 32, "national_id", column))
    assert got == [prepare.pseudonym(b"k" * 32, "national_id", v) for v in column]
    assert got[0] == got[2] != got[1] and got[3] is None


def test_erasure_ledger_removes_the_subject_everywhere(tmp_path, contract, raw):
    subject = contract.subject
    victim = raw[subject].iloc[5]
    ledger = tmp_path / "ledger.csv"
    token = prepare.add_to_ledger(ledger, victim, contract, TEST_KEY)
    prepare.add_to_ledger(ledger, victim, contract, TEST_KEY)  # idempotent
    assert ledger.read_text().count(token) == 1
    assert str(victim) not in ledger.read_text()
    train, test, protected, summary = prepare.prepare(raw, contract, TEST_KEY, prepare.read_ledger(ledger), 0.2, 1)
    assert summary["rows_erased"] == int((raw[subject] == victim).sum()) >= 1
    assert token not in set(train[subject]) | set(test[subject])
    victim_ids = set(raw.loc[raw[subject] == victim, contract.id_column])
    assert victim_ids.isdisjoint(
        set(train[contract.id_column]) | set(test[contract.id_column]) | set(protected[contract.id_column])
    )


def test_split_is_out_of_time(prepared, contract):
    train, test, _ = prepared
    ts = contract.timestamp
    assert pd.to_datetime(train[ts]).max() <= pd.to_datetime(test[ts]).min()


def test_undeclared_columns_are_dropped(contract, raw):
    extra = raw.assign(internal_notes="call back Tuesday")
    train, _, _, summary = prepare.prepare(extra, contract, TEST_KEY, set(), 0.2, 1)
    assert "internal_notes" not in train.columns
    assert summary["columns_dropped"] == ["internal_notes"]


def test_real_data_without_a_key_is_refused():
    with pytest.raises(PrepareError, match="PII_HMAC_KEY is not set"):
        prepare.resolve_key(synthetic=False, env={})
    with pytest.raises(PrepareError, match="at least 32 characters"):
        prepare.resolve_key(synthetic=False, env={"PII_HMAC_KEY": "short"})
    assert prepare.resolve_key(synthetic=True, env={}) == prepare.DEV_KEY.encode()
    assert prepare.resolve_key(synthetic=True, env={"PII_HMAC_KEY": "x" * 40}) == b"x" * 40


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("data.xlsx", b"PK..", "unsupported file type '.xlsx'"),
        ("broken.parquet", b"not parquet at all", "not a readable Parquet file"),
    ],
)
def test_unreadable_inputs_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PrepareError, match=message) as err:
        prepare.read_input(path)
    assert name in str(err.value)


def test_missing_input_names_the_param(tmp_path):
    with pytest.raises(PrepareError, match="data.path"):
        prepare.read_input(tmp_path / "absent.csv")
