"""Parameters, paths and process-wide settings shared by every stage."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

# Telemetry off before any tool that reports usage is imported.
for _var, _val in (
    ("DO_NOT_TRACK", "1"),
    ("GX_ANALYTICS_ENABLED", "false"),
    ("ITERATIVE_DO_NOT_TRACK", "1"),
    ("BENTOML_DO_NOT_TRACK", "true"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
):
    os.environ.setdefault(_var, _val)

PARAMS_FILE = Path("params.yaml")

# Where each stage reads and writes; dvc.yaml declares the same paths.
SYNTHETIC_DATA = Path("data/raw/synthetic.parquet")
PREPARED_DIR = Path("data/prepared")
TRAIN = PREPARED_DIR / "train.parquet"
TEST = PREPARED_DIR / "test.parquet"
PROTECTED = PREPARED_DIR / "protected.parquet"  # protected attributes, kept apart from features
MODEL_DIR = Path("models")
MODEL = MODEL_DIR / "model.skops"
MODEL_META = MODEL_DIR / "model_meta.json"
REPORTS = Path("reports")
VALIDATION = REPORTS / "validation.json"
DATA_DOCS = REPORTS / "data_docs"
METRICS = REPORTS / "metrics.json"
PLOTS = REPORTS / "plots"

SYNTHETIC_MARKER = b"fintech_mlops.synthetic"


class UserError(Exception):
    """Something the user can fix (data, contract, params, keys): reported without a traceback."""


class ParamsError(UserError, ValueError):
    """params.yaml is missing a value or holds a wrong one."""


def run_stage(main) -> int:
    """Run a stage's main(); a UserError becomes one clear line on stderr and exit status 1."""
    try:
        return main()
    except UserError as exc:
        logging.getLogger("{{ cookiecutter.package }}").error("%s", exc)
        return 1


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run stages from the repository root") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return params


def param(params: dict[str, Any], dotted: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """Fetch ``a.b.c`` from params, with an error naming the key when it is missing or mistyped."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml: missing '{dotted}'")
        node = node[part]
    if kind is not None and (not isinstance(node, kind) or isinstance(node, bool) and bool not in _as_tuple(kind)):
        names = "/".join(k.__name__ for k in _as_tuple(kind))
        raise ParamsError(f"params.yaml: '{dotted}' must be {names}, got {node!r}")
    return node


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically so a failed stage never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def setup_logging() -> logging.Logger:
    # Third-party libraries speak only when something is wrong; the stages say what they did.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("{{ cookiecutter.package }}")
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    return logger
