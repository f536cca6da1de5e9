"""MLflow set-up shared by the stages: sqlite store by default, MLFLOW_TRACKING_URI overrides.

A layer of its own just above core: training opens the run and evaluation, governance and
the release reopen it, so none of them depends on another's code (nor, in dvc.yaml, on
``training/``). The decision service never imports it (no MLflow at serving time).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACTS = Path("mlartifacts")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, or the local sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class _NoPipVersionWarning(logging.Filter):
    """Drops MLflow's "Failed to resolve installed pip version" warning, and only that one.

    A uv environment has no pip; the logged model's requirements are pinned explicitly
    (``model_requirements``), so the unpinned ``pip`` MLflow writes into conda.yaml changes nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to resolve installed pip version")


def quiet_mlflow() -> None:
    """MLflow speaks only when something is wrong (no table-creation or uv-detection chatter)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    env_logger = logging.getLogger("mlflow.utils.environment")
    if not any(isinstance(f, _NoPipVersionWarning) for f in env_logger.filters):
        env_logger.addFilter(_NoPipVersionWarning())


def experiment(name: str) -> str:
    """Set the tracking URI and experiment; returns the experiment id."""
    import mlflow

    quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    location = ARTIFACTS.resolve().as_uri() if tracking_uri().startswith("sqlite:") else None
    experiment_id = mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def file_md5(path: str | Path) -> str:
    """The same hash DVC records in dvc.lock for a single file."""
    digest = hashlib.md5(usedforsecurity=False)  # DVC identifies files by MD5; not a security use
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_state() -> dict[str, Any]:
    """The commit and whether the working tree has uncommitted changes."""

    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    sha = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if sha else None
    return {"git_sha": sha or "unknown", "git_dirty": dirty}


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested params as ``a.b.c`` keys (MLflow params are flat)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model: what loading it needs, at the versions that trained it."""
    from importlib import metadata

    return [f"{name}=={metadata.version(name)}" for name in ("scikit-learn", "skops", "numpy", "pandas", "scipy")]


def resume_run(meta):
    """The training run ``meta`` (``models/model_meta.json``) names, reopened to log more to it."""
    import mlflow

    quiet_mlflow()
    mlflow.set_tracking_uri(meta.tracking_uri)
    return mlflow.start_run(run_id=meta.run_id)
