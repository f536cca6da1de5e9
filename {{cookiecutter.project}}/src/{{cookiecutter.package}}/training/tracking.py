"""MLflow set-up shared by the stages: sqlite store by default, MLFLOW_TRACKING_URI overrides."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACTS = Path("mlartifacts")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def experiment(name: str) -> str:
    """Set the tracking URI and experiment; returns the experiment id."""
    import mlflow

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
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    sha = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if sha else None
    return {"git_sha": sha or "unknown", "git_dirty": dirty}


def flatten(prefix: str, value: Any) -> dict[str, Any]:
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
