"""Stage ``generate``: seeded synthetic data for this use case, shaped by the contract."""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..core import config
from ..core.contract import Contract, load_contract
from ..core.params import load_params
from ..core.stage import LOGGER, atomic_path, entry_point
from . import synthetic

log = logging.getLogger(LOGGER)


def generate(contract: Contract, n_rows: int, seed: int, bias: float = 0.0) -> pd.DataFrame:
    """``n_rows`` synthetic records with the use case's signal, PII and protected columns.

    ``bias`` > 0 links a protected attribute to risk more strongly (demos of a failing fairness gate).
    """
    return synthetic.generate(contract, n_rows=n_rows, seed=seed, bias=bias)


def write_synthetic(df: pd.DataFrame, path=config.SYNTHETIC_DATA) -> None:
    """Parquet with a marker saying the data is synthetic (prepare's dev key needs it)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), config.SYNTHETIC_MARKER: b"true"})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def main() -> int:
    """Write ``data/raw/synthetic.parquet``."""
    params = load_params()
    contract = load_contract(params.data.contract)
    df = generate(contract, params.generate.n_rows, params.seed, params.generate.bias)
    write_synthetic(df)
    rate = (df[contract.target] == contract.positive_label).mean()
    log.info("wrote %s: %d rows, positive rate %.4f", config.SYNTHETIC_DATA, len(df), rate)
    return 0


if __name__ == "__main__":
    entry_point(main)
