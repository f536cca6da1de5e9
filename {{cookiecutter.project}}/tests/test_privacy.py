"""Privacy across the whole pipeline: pseudonyms are keyed, erasure reaches every output, and
no artefact the pipeline writes (prepared data, model, reports, MLflow store and artifacts)
holds a raw PII value of the input."""

from __future__ import annotations

import re
import sqlite3
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.data import prepare

from .pipeline_run import ROOT, pipeline_run

CONTRACT = load_contract(ROOT / "contract.yaml")
KEY_A = b"privacy-test-key-A-0123456789abcdef0123"
KEY_B = b"privacy-test-key-B-0123456789abcdef0123"
TOKEN = re.compile(r"[A-Za-z0-9@._+\-]{4,}")
# The pipeline's input and DVC's own cache of it are the only places raw PII may be.
INPUT_PARTS = {"raw", ".dvc"}


def texts_of(path: Path) -> list[str]:
    """Everything a reader could get out of a file: its bytes, and decoded contents of containers."""
    data = path.read_bytes()
    out = [data.decode("latin-1")]
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        out.append("\n".join(map(str, df.columns)))
        out.extend("\n".join(map(str, df[c].tolist())) for c in df.columns)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            out.extend(zf.read(name).decode("latin-1") for name in zf.namelist())
    elif data.startswith(b"SQLite format 3"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
            for table in tables:
                out.extend(" ".join(map(str, row)) for row in db.execute(f'select * from "{table}"'))  # noqa: S608
    return out


def artefacts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not INPUT_PARTS & set(p.relative_to(root).parts)]


def find(values: set[str], root: Path) -> dict[str, list[str]]:
    """Which of ``values`` occur in which artefact (token match, substring match for values with spaces)."""
    spaced = {v for v in values if not TOKEN.fullmatch(v)}
    plain = values - spaced
    hits: dict[str, list[str]] = {}
    for path in artefacts(root):
        found: set[str] = set()
        for text in texts_of(path):
            found |= (set(TOKEN.findall(text)) & plain) | {v for v in spaced if v in text}
        if found:
            hits[str(path.relative_to(root))] = sorted(found)
    return hits


def test_pseudonyms_are_stable_for_a_key_and_differ_across_keys():
    raw = pipeline_run().raw.head(300)
    a1 = prepare.pseudonymise(raw, CONTRACT, KEY_A)
    a2 = prepare.pseudonymise(raw, CONTRACT, KEY_A)
    b = prepare.pseudonymise(raw, CONTRACT, KEY_B)
    for column in CONTRACT.pii:
        assert a1[column].tolist() == a2[column].tolist()
        assert not set(a1[column]) & set(b[column]), f"{column}: pseudonyms shared across keys"
        assert not set(a1[column]) & set(raw[column].astype(str))
        # Same person, same pseudonym: joins across files and runs still work.
        assert a1.groupby(raw[column].to_numpy())[column].nunique().max() == 1
    # Different columns are different domains: a value repeated in two columns gets two pseudonyms.
    assert prepare.pseudonym(KEY_A, "a", "x") != prepare.pseudonym(KEY_A, "b", "x")


def test_the_scan_finds_the_pii_in_the_pipeline_input():
    """Guard for the scans below: the input does hold PII, and the scan sees it in Parquet."""
    run = pipeline_run()
    sample = {str(run.raw[c].iloc[0]) for c in CONTRACT.pii}
    hits = find(sample, run.path("data/raw"))
    assert hits == {"synthetic.parquet": sorted(sample)}


def test_no_artefact_holds_a_raw_pii_value():
    run = pipeline_run()
    values = {str(v) for c in CONTRACT.pii for v in run.raw[c].dropna()}
    scanned = {str(p.relative_to(run.dir)) for p in artefacts(run.dir)}
    for expected in (
        "data/prepared/train.parquet",
        "data/prepared/protected.parquet",
        "models/model.skops",
        "reports/model_card.json",
        "reports/lineage.json",
        "mlflow.db",
    ):
        assert expected in scanned, f"{expected} was not written, so it was not scanned"
    assert any(s.startswith("mlartifacts/") for s in scanned)
    assert find(values, run.dir) == {}


def test_the_scan_finds_pii_when_it_is_there(tmp_path):
    run = pipeline_run()
    email = str(run.raw[CONTRACT.pii[-1]].iloc[0])
    leak = tmp_path / "reports"
    leak.mkdir()
    pd.DataFrame({"note": [f"contact {email}"]}).to_parquet(leak / "leak.parquet")
    assert find({email}, tmp_path) == {"reports/leak.parquet": [email]}


def test_an_erased_subject_is_gone_from_every_output():
    run = pipeline_run()
    ledger = prepare.read_ledger(run.path("data/erasure_ledger.csv"))
    token = prepare.pseudonym(prepare.DEV_KEY.encode(), CONTRACT.subject, run.subject)
    assert ledger == {token}, "the ledger must hold the subject's pseudonym, never the raw value"
    assert run.subject not in run.path("data/erasure_ledger.csv").read_text(encoding="utf-8")
    assert run.erased_ids, "the chosen subject has no rows"
    hits = find({run.subject, token, *run.erased_ids}, run.dir)
    hits.pop("data/erasure_ledger.csv", None)  # the ledger itself holds the pseudonym, by design
    assert hits == {}
    for name in ("train", "test"):
        df = pd.read_parquet(run.path(f"data/prepared/{name}.parquet"))
        assert token not in set(df[CONTRACT.subject])
        assert not set(df[CONTRACT.id_column]) & set(run.erased_ids)


@pytest.mark.parametrize("column", CONTRACT.pii)
def test_pii_columns_are_pseudonyms_in_the_prepared_data(column):
    df = pd.read_parquet(pipeline_run().path("data/prepared/train.parquet"))
    assert df[column].dropna().str.fullmatch(r"[0-9a-f]{64}").all()
