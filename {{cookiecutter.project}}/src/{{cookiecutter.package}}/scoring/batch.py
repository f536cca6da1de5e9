"""What both scoring engines share: the input check, the scorer, the bucket layout, digests and the audit record.

The layout of an output directory (``make score OUTPUT=...``) is Hive-style partitions of Parquet,
``bucket=<b>/...parquet``, where ``b`` is the first 8 bytes of ``sha256(id as UTF-8)`` read as a
big-endian unsigned integer, modulo ``score.buckets`` (params.yaml). Any consumer finds a record
by computing its bucket and reading that one directory.

Digests (``input.sha256``, ``output.sha256`` in the audit record): SHA-256 over the data files of a
directory in sorted order of their relative POSIX paths, each fed as ``path NUL size NUL bytes``;
names starting with ``.`` or ``_`` are not data (``_SUCCESS``, ``.crc`` files), as for pyarrow and Spark.
A single input file is digested the same way, its path being its name.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from threadpoolctl import ThreadpoolController

from ..core import config, model, reasons
from ..core.contract import Column, Contract
from ..core.errors import DataError
from ..core.params import load_params
from ..serving.audit import AuditLog, KeyRing, audit_key
from ..serving.decider import Decider, Verdicts

EVENT = "batch_score"
BUCKET = "bucket"
REASONS = pa.list_(pa.struct([("code", pa.string()), ("text", pa.string()), ("feature", pa.string())]))


class ScoreInputError(DataError):
    """The input does not meet the contract: nothing is written."""


def input_format(path: Path) -> str:
    """``parquet`` or ``csv``, from the file names; a mix, none or anything else is refused."""
    if not path.exists():
        raise ScoreInputError(f"INPUT {path} does not exist")
    kinds = {p.suffix.lower() for p in data_files(path)}
    formats = {"parquet" if k in (".parquet", ".pq") else "csv" if k == ".csv" else k or "(no suffix)" for k in kinds}
    if len(formats) != 1 or not formats <= {"parquet", "csv"}:
        found = ", ".join(sorted(formats)) or "no data files"
        raise ScoreInputError(f"INPUT {path}: expected .parquet or .csv files of one kind, found {found}")
    return formats.pop()


def csv_types(contract: Contract) -> dict[str, pa.DataType]:
    """Column types for reading CSV as the contract declares it (ids and text categories stay text)."""
    types: dict[str, pa.DataType] = {contract.row_key: pa.string()}
    for name in contract.features:
        col = contract[name]
        types[name] = pa.float64() if col.is_numeric or col.numeric_categories else pa.string()
    return types


def data_files(root: Path) -> list[Path]:
    """The data files of ``root`` (itself if a file), in sorted relative-path order; hidden and ``_`` names skipped."""
    if root.is_file():
        return [root]
    return sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def digest(root: Path) -> dict[str, Any]:
    """``{"sha256", "files", "bytes"}`` of ``root``'s data files (the scheme in this module's docstring)."""
    h, size = hashlib.sha256(), 0
    files = data_files(root)
    for path in files:
        name = path.name if root.is_file() else path.relative_to(root).as_posix()
        n = path.stat().st_size
        h.update(f"{name}\0{n}\0".encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023 (fh is the loop's own file)
                h.update(block)
        size += n
    return {"sha256": h.hexdigest(), "files": len(files), "bytes": size}


def file_sha256(path: Path) -> str:
    """SHA-256 of one file's bytes (the model file's identity)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def buckets_of(ids: Iterable[Any], buckets: int) -> np.ndarray:
    """Each id's bucket: the first 8 bytes of SHA-256 of its UTF-8 text, big-endian, modulo ``buckets``."""
    sha256 = hashlib.sha256
    # One hash per id is the floor; the 8-byte prefixes are joined and read as big-endian
    # integers by numpy, not converted one by one (a third of the cost at a million rows).
    prefixes = b"".join([sha256(str(i).encode()).digest()[:8] for i in ids])
    return (np.frombuffer(prefixes, dtype=">u8") % np.uint64(buckets)).astype(np.int32)


def _type_ok(col: Column, kind: pa.DataType) -> bool:
    if pa.types.is_null(kind):
        return col.nullable
    if col.is_numeric or (col.dtype == "category" and col.numeric_categories):
        return pa.types.is_integer(kind) or pa.types.is_floating(kind)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)


def check_schema(schema: pa.Schema, contract: Contract, where: str) -> list[str]:
    """The columns to read (id, then features present); a missing or mistyped column is a one-line error."""
    names = set(schema.names)
    id_col = contract.row_key
    if id_col not in names:
        raise ScoreInputError(
            f"{where}: column {id_col!r} (the contract's id, {contract.path}) is missing: every scored record needs it"
        )
    read = [id_col]
    for name in contract.features:
        col = contract[name]
        if name not in names:
            if col.nullable:
                continue  # an optional feature, missing in every record: as the service takes it
            raise ScoreInputError(f"{where}: feature column {name!r} declared in {contract.path} is missing")
        kind = schema.field(name).type
        if not _type_ok(col, kind):
            want = "numbers" if col.is_numeric or col.numeric_categories else "text"
            raise ScoreInputError(f"{where}: column {name!r} has type {kind}, but {contract.path} declares {col.dtype} ({want})")
        read.append(name)
    return read


def _first(df: pd.DataFrame, bad: pd.Series, id_col: str, name: str) -> str:
    i = int(np.flatnonzero(bad.to_numpy())[0])
    return f"{int(bad.sum())} record(s) (first: {id_col} {df[id_col].iloc[i]!r}, value {df[name].iloc[i]!r})"


def check_values(df: pd.DataFrame, contract: Contract, where: str) -> None:
    """Refuse, in one line naming the column, values the service would refuse: bounds, types, categories, nulls."""
    id_col = contract.row_key
    if df[id_col].isna().any():
        raise ScoreInputError(f"{where}: column {id_col!r} (the id) is empty in {int(df[id_col].isna().sum())} record(s)")
    dupes = df[id_col].duplicated()
    if dupes.any():
        raise ScoreInputError(f"{where}: column {id_col!r} is declared unique but repeats {_first(df, dupes, id_col, id_col)}")
    for name in contract.features:
        if name not in df.columns:
            continue
        col, s = contract[name], df[name]
        missing = s.isna()
        if not col.nullable and missing.any():
            raise ScoreInputError(
                f"{where}: column {name!r} is not nullable in {contract.path} but is empty in {_first(df, missing, id_col, name)}"
            )
        if col.categories:
            bad = ~missing & ~s.isin(list(col.categories))
            if bad.any():
                allowed = list(col.categories)
                raise ScoreInputError(
                    f"{where}: column {name!r} holds values outside its categories {allowed} in {_first(df, bad, id_col, name)}"
                )
            continue
        v = s.astype("float64")
        checks = [(~missing & ~np.isfinite(v), "non-finite values")]
        if col.dtype == "int":
            checks.append((~missing & (v != np.floor(v)), "non-integer values"))
        if col.min is not None:
            checks.append((~missing & (v < col.min), f"values below min {col.min}"))
        if col.max is not None:
            checks.append((~missing & (v > col.max), f"values above max {col.max}"))
        for bad, what in checks:
            if bad.any():
                raise ScoreInputError(f"{where}: column {name!r} has {what} in {_first(df, bad, id_col, name)}")


_THREADS: list[ThreadpoolController] = []


def one_thread() -> Any:
    """A context in which OpenMP (scikit-learn's tree prediction) runs on one thread.

    Measured on 50,000 records on the 2-core machine shared with other jobs: predict_proba took
    4.8 s with OpenMP's default threads and 0.7 s with one. Its threads spin-wait for each other
    on a busy machine, and the Spark engine already runs one Python worker per core.
    """
    if not _THREADS:  # inspecting the loaded libraries reads /proc/self/maps: once per process
        _THREADS.append(ThreadpoolController())
    return _THREADS[0].limit(limits=1, user_api="openmp")


@dataclass
class Scorer:
    """The decision service's :class:`Decider` applied to frames: one answer per record, as ``/decide`` gives it."""

    decider: Decider
    model_sha256: str

    @classmethod
    def load(cls, root: Path = Path()) -> Scorer:
        """The pipeline's model, threshold, refer band and reasons, exactly as the service loads them."""
        band = load_params(root / "params.yaml").serving.refer_band  # a band-less Decider declines what the service refers
        return cls(Decider(root, None if band is None else (band.lower, band.upper)), file_sha256(root / config.MODEL))

    @property
    def identity(self) -> dict[str, Any]:
        """The model identity of the service's decisions, and the model file's SHA-256."""
        return {**self.decider.identity.as_dict(), "model_sha256": self.model_sha256}

    def score(self, df: pd.DataFrame, buckets: int) -> pa.Table:
        """id, score, decision, reasons (reason-code models), the model's run and hash, and the bucket.

        Built as Arrow columns from :meth:`Decider.verdicts`'s arrays, with no Python object per
        record or reason: the same values as the service's :meth:`Decider.outcomes` (the parity
        tests compare them), at a fraction of the time for a portfolio.
        """
        d = self.decider
        id_col = d.contract.row_key
        frame = df.reindex(columns=list(dict.fromkeys([id_col, *d.features])))
        x = d.scorer.frame_matrix(model.model_frame(frame, d.contract))
        with one_thread():
            v = d.verdicts(x)
        n = len(frame)
        ids = frame[id_col].astype(str).to_numpy(dtype=object)
        words = d.words()
        decision = pa.DictionaryArray.from_arrays(
            pa.array(v.outcomes.astype(np.int32)), pa.array([words[k] for k in range(len(words))])
        ).dictionary_decode()
        columns = {id_col: pa.array(ids, pa.string()), "score": pa.array(v.scores), "decision": decision}
        if d.explains:
            columns["reasons"] = self._reasons(v, n)
        columns["model_run_id"] = pa.repeat(pa.scalar(d.identity.run_id, pa.string()), n)
        columns["model_sha256"] = pa.repeat(pa.scalar(self.model_sha256, pa.string()), n)
        columns[BUCKET] = pa.array(buckets_of(ids, buckets))
        return pa.Table.from_pydict(columns, schema=self.schema().append(pa.field(BUCKET, pa.int32())))

    def _reasons(self, v: Verdicts, n: int) -> pa.Array:
        """The reasons column: for each record the adverse features ``reasons.ranked`` keeps, in its order."""
        counts = np.zeros(n, dtype=np.int32)
        if v.contributions is None:
            picked = np.empty(0, dtype=np.intp)
            features: list[str] = []
        else:
            features = list(v.contributions.columns)
            order, adverse = reasons.ranked(v.contributions.to_numpy(dtype=float))
            counts[v.explained] = adverse.sum(axis=1)
            picked = order[adverse]  # row by row, most adverse first: the records' reasons, flattened
        catalogue = reasons.explainer(self.decider.pipeline, self.decider.contract).catalogue
        idx = pa.array(picked.astype(np.int32), pa.int32())
        fields = [pa.array([catalogue[f][key] for f in features], pa.string()).take(idx) for key in ("code", "text")]
        fields.append(pa.array(features, pa.string()).take(idx))
        items = pa.StructArray.from_arrays(fields, fields=list(REASONS.value_type))
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int32)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), items, type=REASONS)

    def schema(self) -> pa.Schema:
        """The Arrow schema of :meth:`score`'s frames (without the bucket, which is the directory)."""
        fields = [(self.decider.contract.row_key, pa.string()), ("score", pa.float64()), ("decision", pa.string())]
        if self.decider.explains:
            fields.append(("reasons", REASONS))
        return pa.schema([*fields, ("model_run_id", pa.string()), ("model_sha256", pa.string())])


def now() -> str:
    """UTC, to the millisecond, as the audit log writes its timestamps."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def record_run(entry: dict[str, Any]) -> None:
    """Append one ``batch_score`` record to the audit log, in its keyed chain (``make audit-verify`` checks it)."""
    log = AuditLog(config.audit_log(), audit_key(), KeyRing.from_env(), config.audit_checkpoints())
    try:
        log.append([{"timestamp": now(), "event": EVENT, **entry}])
    finally:
        log.close()
