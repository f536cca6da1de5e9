"""The lineage record of a run: what code, data, parameters and packages produced the model.

Written by the ``model_card`` stage to ``reports/lineage.json`` (attached to releases) and to
the MLflow run as an artifact, so a decision can be traced back to the exact inputs:

- the MLflow run id and where it is stored;
- the git commit and dirty flag *at training time* (tags the train stage set on the run);
- the ``dvc.lock`` hashes of every stage's dependencies and outputs, as recorded when this
  record was written, and the md5 of the data and model files in the workspace (the card
  refuses to run if the two disagree: the lock would not describe these files);
- every parameter in ``params.yaml``;
- the version of Python and of every declared dependency, and the md5 of ``uv.lock``.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .. import tracking
from ..core import config
from ..core.config import DVC_LOCK, PYPROJECT, UV_LOCK
from ..core.errors import StageOrderError
from ..core.params import Params
from ..core.reports import ModelMeta

# The files a reviewer traces a decision to: the data in, the prepared data, the model.
TRACED_FILES = (config.TRAIN, config.TEST, config.PROTECTED, config.MODEL)


class LineageError(StageOrderError):
    """The workspace and dvc.lock disagree, so no truthful lineage can be written."""


def read_dvc_lock(path: Path = DVC_LOCK) -> dict[str, dict[str, dict[str, str]]] | None:
    """``{stage: {"deps": {path: md5}, "outs": {path: md5}}}`` from dvc.lock, or None without one."""
    if not path.exists():
        return None
    lock = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, dict[str, dict[str, str]]] = {}
    for stage, entry in (lock.get("stages") or {}).items():
        out[stage] = {
            kind: {item["path"]: item.get("md5", "") for item in entry.get(kind, []) or []} for kind in ("deps", "outs")
        }
    return out


def lock_md5(lock: dict[str, Any] | None, path: str) -> tuple[str | None, str | None]:
    """(md5, stage) of ``path`` as an output in dvc.lock (else as a dependency), or (None, None)."""
    if not lock:
        return None, None
    for kind in ("outs", "deps"):
        for stage, entry in lock.items():
            if path in entry[kind]:
                return entry[kind][path], stage
    return None, None


def traced_files(data_path: str, lock: dict[str, Any] | None) -> list[dict[str, Any]]:
    """md5 of each traced file; with dvc.lock present, fail when the lock records a different hash."""
    files = []
    for path in (Path(data_path), *TRACED_FILES):
        if not path.exists():
            continue
        md5 = tracking.file_md5(path)
        locked, stage = lock_md5(lock, path.as_posix())
        if locked is not None and locked != md5:
            raise LineageError(
                f"{path}: md5 {md5} in the workspace but {locked} in {DVC_LOCK} (stage {stage!r}); "
                "run `dvc repro` so the lock describes the files, then rerun"
            )
        files.append({"path": path.as_posix(), "md5": md5, "dvc_stage": stage})
    return files


def package_versions(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Installed version of every dependency pyproject.toml declares (plus Python itself)."""
    import re
    import tomllib

    names: list[str] = []
    if pyproject.exists():
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        names = [re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0] for dep in project.get("dependencies", [])]
    versions = {"python": platform.python_version()}
    for name in sorted(set(names)):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build(params: Params, meta: ModelMeta, run_tags: dict[str, str]) -> dict[str, Any]:
    """The lineage record of the run ``meta`` names."""
    lock = read_dvc_lock()
    return {
        "mlflow": {"run_id": meta.run_id, "tracking_uri": meta.tracking_uri},
        "git": {
            "sha": run_tags.get("git_sha", "unknown"),
            "dirty": run_tags.get("git_dirty", "unknown"),
            "note": "state of the working tree when the model was trained (train stage)",
        },
        "files": traced_files(params.data.path, lock),
        "dvc_lock": lock,
        "params": params.as_dict(),
        "packages": packages_record(),
    }


def packages_record() -> dict[str, Any]:
    """Python, package versions, the uv.lock hash and the platform."""
    return {
        "versions": package_versions(),
        "uv_lock_md5": tracking.file_md5(UV_LOCK) if UV_LOCK.exists() else None,
        "platform": platform.platform(),
        "executable": Path(sys.executable).name,
    }
