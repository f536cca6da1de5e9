"""Stage ``reference``: the yardstick for monitoring, fixed at training time and versioned with the model.

Writes ``models/reference.json`` from the training data: the score's quantile bins and, for
every feature, its quantile edges (numeric) or level shares (categorical), each with its share
of nulls, plus the decision rate at the production threshold. Monitoring only counts new data
into these bins; it never re-bins the reference.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import config, model
from ..core.contract import Contract, load_contract
from ..core.errors import StageOrderError
from ..core.params import Params, load_params
from ..core.reports import ModelMeta, ReferenceReport, ReportError
from ..core.stage import LOGGER, entry_point
from . import drift

REFERENCE = config.MODEL_DIR / "reference.json"
SCHEMA_VERSION = 1


class ReferenceError(StageOrderError):
    """The reference is missing or does not belong to the model being monitored."""


def n_bins(params: Params) -> int:
    """Quantile bins per numeric feature and for the score (``monitor.bins``)."""
    return params.monitor.bins


def build(df: pd.DataFrame, score: np.ndarray, contract: Contract, threshold: float, bins: int) -> dict[str, Any]:
    """The reference profile of ``df`` (training rows) and its model scores."""
    frame = model.model_frame(df, contract)
    features = {}
    for name in contract.model_input_order():
        if name in contract.numeric_features:
            features[name] = drift.numeric_profile(frame[name].to_numpy(dtype="float64"), bins)
        else:
            features[name] = drift.categorical_profile(frame[name])
    return {
        "rows": int(len(df)),
        "bins": bins,
        "score": drift.numeric_profile(score, bins),
        "decision_rate": float(np.mean(score >= threshold)),
        "threshold": threshold,
        "features": features,
    }


def load(path: Path = REFERENCE, run_id: str | None = None) -> ReferenceReport:
    """Read the reference; with ``run_id``, refuse one written for a different model."""
    if not Path(path).exists():
        raise ReferenceError(f"{path} not found: run `make repro` (stage reference) to write it next to the model")
    try:
        ref = ReferenceReport.read(path)
    except ReportError as exc:
        raise ReferenceError(f"{exc}; run `dvc repro reference` to rewrite it") from None
    if run_id is not None and ref.model.run_id != run_id:
        raise ReferenceError(
            f"{path} was written for model run {ref.model.run_id!r} but models/model_meta.json is run "
            f"{run_id!r}: run `dvc repro` so the reference matches the model"
        )
    return ref


def main() -> int:
    """Write ``models/reference.json`` for the model the train stage just wrote."""
    log = logging.getLogger(LOGGER)
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    train = pd.read_parquet(config.TRAIN)
    score = model.scores(model.load(config.MODEL), train, contract)
    ref = ReferenceReport.parse(
        {
            "schema_version": SCHEMA_VERSION,
            "model": {"run_id": meta.run_id},
            "contract": {"name": contract.name, "version": contract.version},
            **build(train, score, contract, meta.threshold, n_bins(params)),
        },
        REFERENCE,
    )
    ref.write(REFERENCE)
    log.info("wrote %s: %d training rows, %d features, %d score bins", REFERENCE, len(train), len(ref.features), ref.bins)
    return 0


if __name__ == "__main__":
    entry_point(main)
