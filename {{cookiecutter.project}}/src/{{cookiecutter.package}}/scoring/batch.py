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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..core import config, model
from ..core.contract import Column, Contract
from ..core.errors import DataError
from ..serving.audit import AuditLog, KeyRing, audit_key
from ..serving.decider import Decider

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


def buckets_of(ids: pd.Series, buckets: int) -> np.ndarray:
    """Each id's bucket: the first 8 bytes of SHA-256 of its UTF-8 text, big-endian, modulo ``buckets``."""
    return np.fromiter(
        (int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") % buckets for i in ids),
        dtype=np.int32,
        count=len(ids),
    )


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


@dataclass
class Scorer:
    """The decision service's :class:`Decider` applied to frames: one answer per record, as ``/decide`` gives it."""

    decider: Decider
    model_sha256: str

    @classmethod
    def load(cls, root: Path = Path()) -> Scorer:
        """The pipeline's model, threshold and reasons, exactly as the service loads them."""
        return cls(Decider(root), file_sha256(root / config.MODEL))

    @property
    def identity(self) -> dict[str, Any]:
        """The model identity of the service's decisions, and the model file's SHA-256."""
        return {**self.decider.identity.as_dict(), "model_sha256": self.model_sha256}

    def score(self, df: pd.DataFrame, buckets: int) -> pd.DataFrame:
        """id, score, decision, reasons (reason-code models), the model's run and hash, and the bucket."""
        d = self.decider
        frame = df.reindex(columns=list(dict.fromkeys([d.contract.row_key, *d.features])))
        x = d.scorer.frame_matrix(model.model_frame(frame, d.contract))
        scores, decisions, why = d.outcomes(x)
        ids = frame[d.contract.row_key].astype(str).to_numpy()
        out = pd.DataFrame({d.contract.row_key: ids, "score": scores, "decision": decisions})
        if why is not None:
            out["reasons"] = why
        out["model_run_id"] = d.identity.run_id
        out["model_sha256"] = self.model_sha256
        out[BUCKET] = buckets_of(out[d.contract.row_key], buckets)
        return out

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
