"""Every path the pipeline reads or writes, in one place (``dvc.yaml`` declares the same ones).

Also switches telemetry off before any tool that reports usage is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

# Telemetry off for every tool that reports usage: the one list. The Makefile, the workflows'
# `env:` and the service's environments (bentofile.yaml, deploy/) cannot import it, so
# tests/test_config.py holds each of them to it.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",  # DVC and CML
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
for _var, _val in TELEMETRY_OFF.items():
    os.environ.setdefault(_var, _val)

PARAMS_FILE = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")
PYPROJECT = Path("pyproject.toml")
UV_LOCK = Path("uv.lock")
PACKAGE_INIT = Path("src/{{ cookiecutter.package }}/__init__.py")  # its __version__, if any, must equal pyproject's
RELEASE_DIR = Path("release")  # what the release workflow builds: notes, lineage, smoke request, the bento

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
# The benchmark fitted beside the model on the same split (training/benchmark.py): credit, a points
# scorecard (core/scorecard.py); fraud, a class-weighted logistic regression (skops).
BENCHMARK = MODEL_DIR / "{{ 'scorecard.json' if cookiecutter.use_case == 'credit_scoring' else 'benchmark.skops' }}"
BENCHMARK_NAME = "{{ 'WoE logistic scorecard' if cookiecutter.use_case == 'credit_scoring' else 'class-weighted logistic regression' }}"

REPORTS = Path("reports")
VALIDATION = REPORTS / "validation.json"
DATA_DOCS = REPORTS / "data_docs"
METRICS = REPORTS / "metrics.json"
FAIRNESS = REPORTS / "fairness.json"
EXPLAIN = REPORTS / "explain.json"
MODEL_CARD_MD = REPORTS / "model_card.md"
MODEL_CARD_JSON = REPORTS / "model_card.json"
LINEAGE = REPORTS / "lineage.json"
REGULATORY_DIR = REPORTS / "regulatory"  # the regulator's documents (governance/regulatory.py)
GATES = REPORTS / "gates.json"
REPORT_MD = REPORTS / "report.md"
VALIDATION_PACK = REPORTS / "validation_pack.json"
# The first validated model's ROC-AUC, the validation pack's reference: committed, kept across retraining.
VALIDATION_REFERENCE = MODEL_DIR / "validation_reference.json"
PLOTS = REPORTS / "plots"
IMPORTANCE_PLOT = PLOTS / "permutation_importance.png"

# The decision audit log the service appends to and the monitor reads; AUDIT_LOG_ENV moves it.
AUDIT_LOG = Path("logs/audit/decisions.jsonl")
AUDIT_LOG_ENV = "AUDIT_LOG_PATH"
# Signed checkpoints of the log's chain (head hash, record count): an anchor kept apart from the
# log, on another volume in a deployment, so a rewritten or shortened log shows.
AUDIT_CHECKPOINTS = Path("logs/audit-checkpoints/checkpoints.jsonl")
AUDIT_CHECKPOINTS_ENV = "AUDIT_CHECKPOINT_PATH"

SYNTHETIC_MARKER = b"fintech_mlops.synthetic"
# Rows are keyed by the contract's id column; data without one gets this key from `prepare`
# (the row's position in the input file), so protected attributes can still be joined back.
ROW_KEY = "_row_key"


def audit_log() -> Path:
    """The decision audit log: ``$AUDIT_LOG_PATH``, else ``logs/audit/decisions.jsonl`` under the working directory."""
    return Path(os.environ.get(AUDIT_LOG_ENV) or AUDIT_LOG)


def audit_checkpoints() -> Path:
    """The audit chain's checkpoints: ``$AUDIT_CHECKPOINT_PATH``, else ``logs/audit-checkpoints/checkpoints.jsonl``."""
    return Path(os.environ.get(AUDIT_CHECKPOINTS_ENV) or AUDIT_CHECKPOINTS)
