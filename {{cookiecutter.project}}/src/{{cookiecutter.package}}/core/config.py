"""Every path the pipeline reads or writes, in one place (``dvc.yaml`` declares the same ones).

Also switches telemetry off before any tool that reports usage is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

for _var, _val in (
    ("DO_NOT_TRACK", "1"),
    ("GX_ANALYTICS_ENABLED", "false"),
    ("ITERATIVE_DO_NOT_TRACK", "1"),
    ("BENTOML_DO_NOT_TRACK", "true"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
):
    os.environ.setdefault(_var, _val)

PARAMS_FILE = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")
PYPROJECT = Path("pyproject.toml")
UV_LOCK = Path("uv.lock")

SYNTHETIC_DATA = Path("data/raw/synthetic.parquet")
PREPARED_DIR = Path("data/prepared")
TRAIN = PREPARED_DIR / "train.parquet"
TEST = PREPARED_DIR / "test.parquet"
PROTECTED = PREPARED_DIR / "protected.parquet"  # protected attributes, kept apart from features
PREPARE_SUMMARY = PREPARED_DIR / "summary.json"
MODEL_DIR = Path("models")
MODEL = MODEL_DIR / "model.skops"
MODEL_META = MODEL_DIR / "model_meta.json"
# Training rows the fraud model's per-decision contributions are measured against (core/attributions.py).
EXPLAIN_BACKGROUND = MODEL_DIR / "explain_background.json"

REPORTS = Path("reports")
VALIDATION = REPORTS / "validation.json"
DATA_DOCS = REPORTS / "data_docs"
METRICS = REPORTS / "metrics.json"
FAIRNESS = REPORTS / "fairness.json"
EXPLAIN = REPORTS / "explain.json"
MODEL_CARD_MD = REPORTS / "model_card.md"
MODEL_CARD_JSON = REPORTS / "model_card.json"
LINEAGE = REPORTS / "lineage.json"
GATES = REPORTS / "gates.json"
REPORT_MD = REPORTS / "report.md"
PLOTS = REPORTS / "plots"
IMPORTANCE_PLOT = PLOTS / "permutation_importance.png"

SYNTHETIC_MARKER = b"fintech_mlops.synthetic"
# Rows are keyed by the contract's id column; data without one gets this key from `prepare`
# (the row's position in the input file), so protected attributes can still be joined back.
ROW_KEY = "_row_key"
