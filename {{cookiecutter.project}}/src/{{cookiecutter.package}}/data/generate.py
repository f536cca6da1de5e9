"""Stage ``generate``: seeded synthetic data for this use case, shaped by the contract."""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.parquet as pq

from ..core import config
from . import synthetic
from ..core.contract import Contract, load_contract


def generate(contract: Contract, n_rows: int, seed: int):
    if n_rows < 100:
        raise config.ParamsError(f"params.yaml: 'generate.n_rows' must be at least 100, got {n_rows}")
    return synthetic.generate(contract, n_rows=n_rows, seed=seed)


def write_synthetic(df, path=config.SYNTHETIC_DATA) -> None:
    """Parquet with a marker saying the data is synthetic (prepare's dev key needs it)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), config.SYNTHETIC_MARKER: b"true"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def main() -> int:
    log = config.setup_logging()
    params = config.load_params()
    contract = load_contract(config.param(params, "data.contract", str))
    df = generate(contract, config.param(params, "generate.n_rows", int), config.param(params, "seed", int))
    write_synthetic(df)
    target = contract.target
    log.info(
        "wrote %s: %d rows, positive rate %.4f", config.SYNTHETIC_DATA, len(df), (df[target] == contract.positive_label).mean()
    )
    return 0


if __name__ == "__main__":
    sys.exit(config.run_stage(main))
