"""A batch of synthetic "production" data, optionally drifted in chosen features (demos and tests).

{% if cookiecutter.use_case == "credit_scoring" -%}
``--drift annual_income=-1`` moves a numeric feature by that many of its standard deviations
(clipped to the contract's bounds, integers stay integers); ``--drift employment_status=0.5``
moves that share of a categorical feature's rows to its rarest level.
{%- else -%}
``--drift amount_to_avg_ratio=1`` moves a numeric feature by that many of its standard deviations
(clipped to the contract's bounds, integers stay integers); ``--drift channel=0.5`` moves that
share of a categorical feature's rows to its rarest level.
{%- endif %} The batch still meets the contract,
so what the monitor sees is drift, not a broken feed. Labels come from the generator; pass
``--unlabelled`` for a batch whose outcomes are not yet known.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.contract import Contract, load_contract
from ..core.errors import UserError
from ..core.params import load_params
from ..core.stage import LOGGER, atomic_path, entry_point
from ..data import synthetic


def parse_drift(specs: list[str], contract: Contract) -> dict[str, float]:
    """``FEATURE=AMOUNT`` pairs (AMOUNT optional) checked against the contract's features."""
    out = {}
    for spec in specs:
        name, _, amount = spec.partition("=")
        if name not in contract.features:
            raise UserError(f"--drift {spec!r}: {name!r} is not a feature in {contract.path} (features: {contract.features})")
        default = 1.0 if name in contract.numeric_features else 0.5
        try:
            out[name] = float(amount) if amount else default
        except ValueError:
            raise UserError(f"--drift {spec!r}: amount {amount!r} is not a number") from None
        if name in contract.categorical_features and not 0 < out[name] <= 1:
            raise UserError(f"--drift {spec!r}: for a categorical feature the amount is a share in (0, 1]")
    return out


def apply_drift(df: pd.DataFrame, drift: dict[str, float], contract: Contract, seed: int) -> pd.DataFrame:
    """``df`` with each named feature shifted (numeric) or partly moved to its rarest level (categorical)."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    for name, amount in drift.items():
        col = contract[name]
        s = out[name]
        if col.is_numeric:
            shifted = s + amount * float(s.std())
            lo = -np.inf if col.min is None else col.min
            hi = np.inf if col.max is None else col.max
            shifted = shifted.clip(lo, hi)
            out[name] = shifted.round().astype(s.dtype) if col.dtype == "int" else shifted.astype(s.dtype)
        else:
            counts = s.value_counts()
            rarest = min(contract.categories(name), key=lambda level: counts.get(level, 0))
            move = s.notna().to_numpy() & (rng.random(len(s)) < amount)
            values = s.astype(object).to_numpy(copy=True)  # pandas 3 hands back a read-only view
            values[move] = rarest
            out[name] = pd.Series(values, index=s.index).astype(s.dtype)
    return out


def make_batch(contract: Contract, rows: int, seed: int, drift: dict[str, float], labelled: bool = True) -> pd.DataFrame:
    """Fresh synthetic rows (a different seed from training's), drifted as asked."""
    df = apply_drift(synthetic.generate(contract, n_rows=rows, seed=seed), drift, contract, seed)
    return df if labelled else df.drop(columns=[contract.target])


def main(argv: list[str] | None = None) -> int:
    """Write a synthetic batch, drifted in the features ``--drift`` names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=2026, help="use a seed other than params.yaml's to get unseen rows")
    parser.add_argument("--drift", action="append", default=[], metavar="FEATURE[=AMOUNT]")
    parser.add_argument("--unlabelled", action="store_true", help="drop the target column")
    parser.add_argument("--out", type=Path, required=True, help="output file (.parquet or .csv)")
    args = parser.parse_args(argv)
    log = logging.getLogger(LOGGER)
    if args.rows < 1:
        raise UserError(f"--rows must be at least 1, got {args.rows}")
    if args.out.suffix.lower() not in (".parquet", ".csv"):
        raise UserError(f"--out {args.out}: use a .parquet or .csv file name")
    contract = load_contract(load_params().data.contract)
    df = make_batch(contract, args.rows, args.seed, parse_drift(args.drift, contract), labelled=not args.unlabelled)
    with atomic_path(args.out) as tmp:
        df.to_csv(tmp, index=False) if args.out.suffix.lower() == ".csv" else df.to_parquet(tmp, index=False)
    log.info("wrote %s: %d rows, drift %s", args.out, len(df), args.drift or "none")
    return 0


if __name__ == "__main__":
    entry_point(main)
